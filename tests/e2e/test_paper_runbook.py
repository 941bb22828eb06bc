"""The AITRAPP runbook's PAPER steps (sections 2 and 3, burn-in checks) against a real process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import REPO_ROOT, Launcher
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def gauges(launcher: Launcher) -> dict[str, float]:
    text = launcher.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("trader_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def reconcile(launcher: Launcher) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.reconcile", "--database-url", launcher.database_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_runbook_paper_steps_pass(launcher: Launcher) -> None:
    launcher.start()
    assert launcher.wait_ready(timeout_s=15) <= 15

    # 2. Pre-flight gauges.
    values = gauges(launcher)
    assert values['trader_is_leader{instance_id="vigil-e2e"}'] == 1
    assert values['trader_marketdata_heartbeat_seconds{bucket="synthetic"}'] < 5
    assert values["trader_order_stream_heartbeat_seconds"] < 5
    assert 'trader_positions_open{strategy="orb_1"}' in values
    assert 'trader_positions_open{strategy="ema_1"}' in values
    assert "trader_portfolio_heat_rupees" in values

    # 3. Warm safety and recovery.
    response = launcher.post("/mode", json={"mode": "PAPER"})
    assert response.status_code == 200
    assert response.json()["status"] == "PAPER"
    assert wait_until(lambda: launcher.log_lines("Recovering 0 open positions"), timeout_s=5)

    # Orders flow on the synthetic market.
    orders = wait_until(
        lambda: launcher.get("/orders").json()["count"] > 0 and launcher.get("/orders").json(),
        timeout_s=60,
        message="orders in /orders",
    )
    assert {order["leg"] for order in orders["orders"]} >= {"ENTRY"}
    # Let brackets form so that the flatten has siblings to cancel.
    wait_until(
        lambda: launcher.get("/positions").json()["count"] > 0, timeout_s=60, message="a position"
    )

    started = time.monotonic()
    response = launcher.post("/flatten", json={"reason": "prelive_sanity"})
    duration_s = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["remaining_positions"] == 0 and body["remaining_working_orders"] == 0
    assert duration_s <= 2.0
    assert launcher.get("/positions").json()["count"] == 0
    status = launcher.get("/status").json()
    assert status["trading_state"] == "REDUCING"
    assert [c["cause"] for c in status["pause_causes"]] == ["FLATTEN"]

    # SOLAT: the books are checked against the venue's, and the report says so.
    report = wait_until(
        lambda: (
            (answer := launcher.get("/execution/reconcile/report")).status_code == 200
            and answer.json()["runs"] > 0
            and answer.json()
        ),
        timeout_s=30,
        message="a reconciliation report",
    )
    assert report["error"] is None and report["last_run_ns"] is not None, report

    # LIVE is refused with what blocks it.
    response = launcher.post("/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"})
    assert response.status_code == 403
    assert response.json()["error"] == "MODE_BLOCKED"
    assert "LIVE_TRADING_ENABLED is not set to true" in response.json()["blockers"]

    # Bad input: a clear 4xx, never a traceback.
    response = launcher.post(
        "/mode", content=b'{"mode": "LIV"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "Traceback" not in response.text

    # Debugging: the state dump over HTTP, readable through the tool, and on SIGUSR1.
    dump = launcher.get("/debug/actors").json()
    assert {"order", "risk", "kill_switch", "leader", "supervisor"} <= set(dump["actors"])
    printed = subprocess.run(
        [sys.executable, "-m", "tools.dump_state", "--url", f"http://127.0.0.1:{launcher.port}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0 and "=== order ===" in printed.stdout
    assert launcher.process is not None
    launcher.process.send_signal(signal.SIGUSR1)
    wait_until(
        lambda: list((launcher.workdir / "logs").glob("state-dump-sigusr1-*.json")),
        timeout_s=10,
        message="SIGUSR1 dump file",
    )

    assert launcher.terminate() == 0

    # Burn-in: no duplicate client_order_id, no orphan OCO sibling.
    result = reconcile(launcher)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"duplicate", result.stdout, re.IGNORECASE)
