"""Both runbooks' LIVE procedures against ``python -m launcher`` in REHEARSAL.

The paper venue presents a LIVE account (configs/rehearsal.yaml), so the SOLAT runbook's
"Enabling LIVE Mode" steps 1-6, its "Incident Response" and "Rollback Procedures", and the
AITRAPP runbook's flip to LIVE and "Emergency Rollback" run end to end with the HTTP calls
shaped like the runbooks' curl commands (plus the admin bearer token: LIVE cannot be armed on
an API without one). Every response field the runbooks show is checked, and so is what they
promise around it: orders flow once armed, the kill switch closes positions, the audit trail
has every step without the token, and everything says REHEARSAL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO_ROOT, Launcher, free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ADMIN_TOKEN = "admin-token-for-the-rehearsal-0123456789"
LIVE_TOKEN = "live-enable-token-for-the-rehearsal-9876543210"
ACCOUNT_ID = "REHEARSAL-LIVE-0001"
PRELIVE_CHECKS = [
    "Config validation",
    "Risk settings",
    "Broker connectivity",
    "Account verification",
    "Account lock",
    "Safety guard",
    "Kill switch",
]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def rehearsal_config(workdir: Path) -> Path:
    """configs/rehearsal.yaml, sped up so that entries come within seconds."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "rehearsal.yaml").read_text())
    config["instance_id"] = "vigil-rehearsal-e2e"
    # Where the harness looks (data/vigil.db, logs/vigil.log), not the profile's own folders.
    config["database_url"] = "sqlite:///data/vigil.db"
    config["data_dir"] = "data"
    config["logs_dir"] = "logs"
    config["feed"]["tick_interval_ms"] = 50
    config["feed"]["volatility_bps"] = 1.0
    for strategy in config["strategies"]:
        strategy["bar_interval_s"] = 1
    path = workdir / "rehearsal-e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def live_environment(**overrides: str) -> dict[str, str]:
    """The runbook's .env for LIVE (Configuration Requirements), plus the admin token."""
    environment = {
        "LIVE_TRADING_ENABLED": "true",
        "LIVE_ENABLE_TOKEN": LIVE_TOKEN,
        "LIVE_ACCOUNT_ID": ACCOUNT_ID,
        "LIVE_MAX_ORDER_SIZE": "500",
        "MAX_DAILY_LOSS_PCT": "2.0",
        "MAX_CONCURRENT_POSITIONS": "3",
        "PER_SYMBOL_EXPOSURE_CAP": "2000000",
        "MAX_TRADES_PER_HOUR": "10",
        "LIVE_CONFIRMATION_TTL_S": "600",
        "LIVE_PRELIVE_MAX_AGE_S": "300",
        "VIGIL_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    environment.update(overrides)
    return environment


@pytest.fixture
def rehearsal(tmp_path: Path) -> Any:
    engine = Launcher(tmp_path, rehearsal_config(tmp_path), free_port())
    yield engine
    engine.close()


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers.get("X-Vigil-Rehearsal") == "REHEARSAL"
    body: dict[str, Any] = response.json()
    return body


def get(launcher: Launcher, path: str) -> dict[str, Any]:
    return ok(launcher.get(path, headers=AUTH))


def post(launcher: Launcher, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return ok(launcher.post(path, json=body, headers=AUTH))


def answered(launcher: Launcher, path: str) -> dict[str, Any] | None:
    """The body of ``GET path`` once the engine answers it, else None."""
    try:
        response = launcher.get(path, headers=AUTH)
    except httpx.TransportError:
        return None
    return ok(response) if response.status_code == 200 else None


def go_live_prerequisites(launcher: Launcher) -> None:
    """SOLAT steps 2, 4 and 5: connect, pre-live check, confirmation."""
    assert post(launcher, "/execution/connect")["ok"] is True
    assert post(launcher, "/execution/prelive/run")["passed"] is True
    confirm = post(
        launcher,
        "/execution/live/confirm",
        {"phrase": "ENABLE LIVE TRADING", "token": LIVE_TOKEN, "account_id": ACCOUNT_ID},
    )
    assert 0 < confirm["expires_in_seconds"] <= 600


def audit_actions(launcher: Launcher, *outcomes: str) -> list[str]:
    """The audit trail's actions with one of ``outcomes`` (default: what took effect), oldest
    first."""
    wanted = set(outcomes or ("ACCEPTED", "TRIPPED"))
    entries = get(launcher, "/execution/audit?limit=200")["entries"]
    return [entry["action"] for entry in reversed(entries) if entry["outcome"] in wanted]


def assert_no_token_anywhere(launcher: Launcher) -> None:
    # Neither secret in the log, the database or the journal, in any form the engine wrote.
    files = [launcher.log_file, *sorted((launcher.workdir / "data").glob("*"))]
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            assert LIVE_TOKEN.encode() not in data, path
            assert ADMIN_TOKEN.encode() not in data, path


def test_solat_enabling_live_incident_response_and_rollback(rehearsal: Launcher) -> None:
    launcher = rehearsal
    # 1. Start the engine; startup logs show no errors.
    launcher.start(live_environment())
    launcher.wait_ready(timeout_s=20)
    assert launcher.log_lines('"level": "ERROR"') == []

    # 2. Connect to broker.
    connect = post(launcher, "/execution/connect")
    assert connect["ok"] is True
    assert connect["account_id"] == ACCOUNT_ID
    assert isinstance(connect["balance"], int | float) and connect["balance"] > 0
    assert connect["mode"] == "PAPER"  # not LIVE until armed (the runbook's "DEMO")

    # 3. Gate status: the runbook's common blockers, as plain sentences.
    gates = get(launcher, "/execution/gates")
    assert gates["allowed"] is False
    assert gates["mode"] == "PAPER"
    assert "Pre-live check has never passed" in gates["blockers"]
    assert "UI LIVE confirmation not completed" in gates["blockers"]
    assert isinstance(gates["warnings"], list)

    # Arming now is refused with those blockers.
    refused = launcher.post(
        "/execution/arm", json={"confirm": True, "live_mode": True}, headers=AUTH
    )
    assert refused.status_code == 409
    assert "UI LIVE confirmation not completed" in refused.json()["blockers"]

    # 4. Pre-live check: all seven pass.
    prelive = post(launcher, "/execution/prelive/run")
    assert prelive["passed"] is True
    assert [check["name"] for check in prelive["checks"]] == PRELIVE_CHECKS
    assert all(check["passed"] is True for check in prelive["checks"])

    # 5. Confirm LIVE mode (API), with a wrong token first: refused, nothing changes.
    wrong = launcher.post(
        "/execution/live/confirm",
        json={"phrase": "ENABLE LIVE TRADING", "token": "not-the-token", "account_id": ACCOUNT_ID},
        headers=AUTH,
    )
    assert wrong.status_code == 403
    assert "not-the-token" not in wrong.text
    confirm = post(
        launcher,
        "/execution/live/confirm",
        {"phrase": "ENABLE LIVE TRADING", "token": LIVE_TOKEN, "account_id": ACCOUNT_ID},
    )
    assert 590 <= confirm["expires_in_seconds"] <= 600
    assert LIVE_TOKEN not in str(confirm)
    assert get(launcher, "/execution/gates")["blockers"] == []

    # 6. Arm for LIVE trading.
    armed = post(launcher, "/execution/arm", {"confirm": True, "live_mode": True})
    assert {k: armed[k] for k in ("ok", "armed", "mode", "live")} == {
        "ok": True,
        "armed": True,
        "mode": "LIVE",
        "live": True,
    }
    assert wait_until(lambda: get(launcher, "/orders")["count"] > 0, timeout_s=60)

    # Monitoring endpoints answer.
    status = get(launcher, "/execution/status")
    assert status["mode"] == "LIVE" and status["armed"] is True and status["rehearsal"] is True
    assert status["circuit_breaker"] == "OK"
    get(launcher, "/execution/reconcile/report")
    get(launcher, "/execution/positions")
    assert launcher.log_lines("LIVE") and any(
        "confirm" in line.lower() for line in launcher.log_lines("LIVE")
    )

    # Incident response: 1. kill switch first; 2. positions closed (close_on_kill_switch).
    killed = post(launcher, "/execution/kill-switch/activate", {"reason": "incident response"})
    assert killed["active"] is True
    assert wait_until(lambda: get(launcher, "/execution/positions")["count"] == 0, timeout_s=10)
    #    Category 1: revoke the LIVE confirmation.
    revoked = post(launcher, "/execution/live/revoke")
    assert revoked["armed"] is False and revoked["mode"] != "LIVE"

    # Rollback (LIVE to DEMO): disarm, revoke, verify the mode.
    post(launcher, "/execution/disarm")
    post(launcher, "/execution/live/revoke")
    gates = get(launcher, "/execution/gates")
    assert gates["mode"] == "PAPER" and gates["armed"] is False

    # The audit trail has every step, in order, without a token.
    actions = audit_actions(launcher)
    for expected in ("CONNECT", "PRELIVE", "LIVE_CONFIRM", "ARM", "KILL_SWITCH", "LIVE_REVOKE"):
        assert expected in actions, actions
    assert actions.index("LIVE_CONFIRM") < actions.index("ARM") < actions.index("KILL_SWITCH")
    # The refusals are there too: the early arm and the wrong token.
    assert {"ARM", "LIVE_CONFIRM"} <= set(audit_actions(launcher, "REFUSED"))

    # Full system rollback: stop, restart with LIVE_TRADING_ENABLED=false: never LIVE.
    assert launcher.terminate() == 0
    launcher.start(live_environment(LIVE_TRADING_ENABLED="false"))
    # Not /ready: the HALT is sticky across the restart, and a HALTED engine is not ready.
    gates = wait_until(lambda: answered(launcher, "/execution/gates"), timeout_s=20)
    assert gates["mode"] == "PAPER" and gates["armed"] is False
    assert "LIVE_TRADING_ENABLED is not set to true" in gates["blockers"]
    assert any(blocker.startswith("Kill switch is active") for blocker in gates["blockers"])
    assert launcher.get("/ready").json()["ready"] is False

    # Everything said REHEARSAL, and no secret was written anywhere.
    lines = launcher.log_file.read_text().splitlines()
    assert lines and all("REHEARSAL" in line for line in lines)
    assert_no_token_anywhere(launcher)


def test_aitrapp_flip_to_live_and_emergency_rollback(rehearsal: Launcher) -> None:
    launcher = rehearsal
    launcher.start(live_environment())
    launcher.wait_ready(timeout_s=20)

    # Before the gates are cleared the flip is refused, naming what is missing.
    refused = launcher.post(
        "/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"}, headers=AUTH
    )
    assert refused.status_code == 403
    assert "UI LIVE confirmation not completed" in refused.json()["blockers"]
    go_live_prerequisites(launcher)

    # 4. Flip to LIVE.
    flipped = post(launcher, "/mode", {"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"})
    assert flipped["status"] == "LIVE"
    assert wait_until(lambda: launcher.log_lines("Mode switched to LIVE"), timeout_s=5)
    metrics = launcher.get("/metrics").text
    assert 'trader_is_leader{instance_id="vigil-rehearsal-e2e"} 1.0' in metrics
    assert wait_until(lambda: get(launcher, "/orders")["count"] > 0, timeout_s=60)

    # Emergency rollback, as the runbook's curl commands send it (-d without a content type).
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    assert ok(launcher.post("/pause", headers=AUTH))["trading_state"] == "REDUCING"
    flattened = ok(launcher.post("/flatten", content='{"reason":"rollback"}', headers=form))
    assert flattened["remaining_positions"] == 0
    paper = ok(launcher.post("/mode", content='{"mode":"PAPER"}', headers=form))
    assert paper["status"] == "PAPER"
    status = get(launcher, "/status")
    assert status["mode"] == "PAPER" and status["armed"] is False
    assert get(launcher, "/positions")["count"] == 0
    assert "MODE_SWITCH" in audit_actions(launcher)
    assert_no_token_anywhere(launcher)
