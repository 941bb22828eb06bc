"""The SOLAT kill-switch routes on the real engine, operator text redaction in what the API
shows, and a quiet start (no spurious AUTO_PAUSE while the first lease is taken)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from adapters.storage.repositories import UnitOfWork
from domain.enums import PauseCause, TradingState
from domain.messages import QueryTradingState
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config, wait_until

TOKEN = "s3cret-admin-token-for-tests"
LIVE_TOKEN = "live-enable-9f8e7d6c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_desk(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(
        run_http=True,
        http={"port": 0, "token": TOKEN},
        live={"live_enable_token": LIVE_TOKEN},
    )
    desk.ready_to_trade()
    return desk


@pytest.fixture
def client(api_desk: Desk) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{api_desk.engine.http_port}", timeout=10) as c:
        yield c


def test_the_runbooks_kill_switch_halts_flattens_and_only_a_reset_clears_it(
    api_desk: Desk, client: httpx.Client
) -> None:
    desk = api_desk
    open_position(desk, quantity=10, stop="95", target="110")

    activated = client.post("/execution/kill-switch/activate", headers=AUTH)
    assert activated.status_code == 200, activated.text
    body = activated.json()
    assert body["active"] and body["reason"] == "MANUAL" and body["detail"] == "manual"
    assert body["flatten_pause"] is True  # close_on_kill_switch defaults to true
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flattened")

    for path in ("/resume", "/execution/resume"):
        refused = client.post(path, headers=AUTH)
        assert refused.status_code == 409
        assert refused.json()["error"] == "HALTED"
        assert "MANUAL" in refused.json()["message"]
        assert "POST /execution/kill-switch/reset" in refused.json()["message"]
    assert client.get("/status", headers=AUTH).json()["trading_state"] == "HALTED"

    reset = client.post(
        "/execution/kill-switch/reset",
        json={"reason": "drill over", "operator": "asha"},
        headers=AUTH,
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["active"] is False and reset.json()["armed"] is False
    assert client.get("/execution/kill-switch", headers=AUTH).json()["active"] is False
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        [latest, *_] = uow.events.list_recent(10, event="KILL_SWITCH")
    assert latest.payload["operator"] == "asha"
    assert latest.payload["reset_reason"] == "drill over"

    # Not re-armed: the FLATTEN pause is resumed, then an explicit arm lets entries flow.
    assert client.post("/resume", headers=AUTH).status_code == 200
    status = client.get("/status", headers=AUTH).json()
    assert status["trading_state"] == "ACTIVE" and status["armed"] is False
    armed = client.post("/execution/arm", json={"confirm": True}, headers=AUTH)
    assert armed.status_code == 200 and armed.json()["armed"] is True
    open_position(desk, instrument="BBB", entry="200.10", stop="199", target="202")


def test_activate_without_close_on_kill_switch_halts_but_keeps_positions(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(run_http=True, http={"port": 0}, close_on_kill_switch=False)
    desk.ready_to_trade()
    open_position(desk, quantity=10, stop="95", target="110")
    with httpx.Client(base_url=f"http://127.0.0.1:{desk.engine.http_port}", timeout=10) as c:
        body = c.post("/execution/kill-switch/activate", json={"reason": "drill"}).json()
    assert body["active"] and body["detail"] == "drill" and body["flatten_pause"] is False
    desk.step(1.0)
    assert [p.quantity for p in desk.portfolio().portfolio.positions] == [10]


@pytest.mark.parametrize(
    "secret_text",
    [TOKEN, LIVE_TOKEN, "token=abc123xyz"],
    ids=["admin_token", "live_enable_token", "token_pattern"],
)
def test_operator_text_with_a_secret_is_redacted_in_status_and_debug_actors(
    api_desk: Desk, client: httpx.Client, secret_text: str
) -> None:
    response = client.post(
        "/pause", json={"reason": f"pasted by mistake {secret_text} oops"}, headers=AUTH
    )
    assert response.status_code == 200
    secret = secret_text.removeprefix("token=")
    for text in (
        response.text,
        client.get("/status", headers=AUTH).text,
        client.get("/debug/actors", headers=AUTH).text,
        client.get("/execution/kill-switch", headers=AUTH).text,
    ):
        assert secret not in text
    [cause] = client.get("/status", headers=AUTH).json()["pause_causes"]
    assert cause["cause"] == "OPERATOR" and "[REDACTED]" in cause["detail"]
    assert api_desk.engine.database is not None
    with UnitOfWork(api_desk.engine.database) as uow:
        trail = [str(row.payload) for row in uow.events.list_recent(20)]
    assert not any(secret in line for line in trail)  # stored redacted too


class TestQuietStart:
    def test_a_start_that_takes_the_lease_logs_no_auto_pause(
        self, desk_factory: Callable[..., Desk], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        desk = desk_factory()
        desk.ready_to_trade()

        events = [(getattr(r, "event", None), r.levelno, r.getMessage()) for r in caplog.records]
        assert not [e for e in events if e[0] == "AUTO_PAUSE"], events
        assert not [e for e in events if e[0] == "PAUSE" and e[1] >= logging.WARNING], events
        assert [e[0] for e in events].count("AWAITING_LEADER") == 1
        assert "LEADER" in [e[0] for e in events]

    def test_entries_still_wait_for_the_lease(
        self, tmp_path: Path, engine_factory: Callable[..., Engine]
    ) -> None:
        config = make_config(tmp_path, strategies=[])
        first = engine_factory(config)
        second = engine_factory(config)  # same instance_id: stands by behind the first
        for engine in (first, second):
            engine.fire_timer()
        state = second.directory.ask("kill_switch", QueryTradingState(), timeout_s=5).state
        assert state.state is TradingState.REDUCING
        assert PauseCause.LEADER_LOST in state.pause_causes

    def test_a_refused_lease_is_an_auto_pause(
        self,
        tmp_path: Path,
        engine_factory: Callable[..., Engine],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        config = make_config(tmp_path, strategies=[])
        engine_factory(config)
        caplog.set_level(logging.INFO)
        caplog.clear()
        standby = engine_factory(config)  # same instance_id: stands by

        def auto_pauses() -> list[logging.LogRecord]:
            standby.fire_timer()  # the refusal arrives as a message: wait for it, do not race
            return [
                record
                for record in caplog.records
                if getattr(record, "event", None) == "AUTO_PAUSE"
                and getattr(record, "cause", "") == PauseCause.LEADER_LOST.value
            ]

        [first, *_] = wait_until(auto_pauses, message="AUTO_PAUSE LEADER_LOST logged")
        assert first.levelno == logging.WARNING
