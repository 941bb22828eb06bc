"""Calm failure: after a HALT on a dead disk, restarts back off, a repeating error is logged once
with a count, and /status and /ready still answer from memory.

Storage fails at the process edge (SQLAlchemy's ``connect`` raises, as on a full or dead disk);
time is a manual clock stepped one simulated second at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from domain.enums import TradingState
from domain.messages import InjectFault, TripKillSwitch
from tests.actor.conftest import Desk
from tests.actor.test_kill_switch_intent import StorageOutage, restarts


def _health(desk: Desk) -> dict[str, dict[str, Any]]:
    supervisor = desk.engine.directory.get("supervisor")
    assert supervisor is not None
    # An ask queued behind the timer: answered once the supervisor has handled it.
    return supervisor.proxy().actor_health().get(timeout=5)


@pytest.fixture
def halted_on_a_dead_disk(
    desk_factory: Callable[..., Desk],
) -> Iterator[tuple[Desk, StorageOutage]]:
    # The shipped backoff (0.1 s doubling to 5 s), not the tests' zero.
    desk = desk_factory(run_http=True, supervision={"backoff_initial_s": 0.1})
    desk.ready_to_trade()
    desk.engine.directory.ask("kill_switch", TripKillSwitch(reason="DRILL"), timeout_s=5)
    assert desk.engine.database is not None
    outage = StorageOutage(desk.engine.database).start()
    # The order actor cannot start without storage: from its first crash on, it crash-loops.
    desk.engine.directory.tell("order", InjectFault(detail="disk full"))
    desk.settle(lambda: _health(desk)["order"]["restarts"] >= 1, what="order crashed")
    yield desk, outage
    outage.end()


def _simulate(desk: Desk, seconds: int) -> None:
    for _ in range(seconds):
        desk.step(1.0)
        _health(desk)


def test_restarts_back_off_after_a_halt_instead_of_storming(
    halted_on_a_dead_disk: tuple[Desk, StorageOutage],
) -> None:
    desk, _outage = halted_on_a_dead_disk
    before = {name: info["restarts"] for name, info in _health(desk).items()}
    _simulate(desk, 60)
    after = {name: info["restarts"] for name, info in _health(desk).items()}
    crashes_in_the_minute = {name: after[name] - before[name] for name in after}
    # Backoff 5, 10, 20, 40 s: at most 4 restarts of the order actor in a minute (the 5 s
    # backoff of normal trading allowed 12 and more, and every one logged a traceback).
    assert crashes_in_the_minute["order"] <= 4, crashes_in_the_minute
    assert sum(crashes_in_the_minute.values()) <= 8, crashes_in_the_minute


def test_a_repeating_crash_is_logged_once_then_counted(
    halted_on_a_dead_disk: tuple[Desk, StorageOutage], caplog: pytest.LogCaptureFixture
) -> None:
    desk, _outage = halted_on_a_dead_disk
    caplog.set_level(logging.INFO, logger="actors.supervisor")
    caplog.clear()
    _simulate(desk, 130)
    crash_lines = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "ACTOR_CRASH" and getattr(r, "actor", None) == "order"
    ]
    summaries = [r for r in crash_lines if getattr(r, "repeats", 0)]
    full = [r for r in crash_lines if not getattr(r, "repeats", 0)]
    assert summaries, [r.getMessage() for r in crash_lines]
    assert all("same error x" in r.getMessage() for r in summaries)
    # One full line per distinct error, not one per restart.
    assert len(full) <= 2, [r.getMessage() for r in full]


def test_status_and_ready_answer_from_memory_while_storage_is_down(
    halted_on_a_dead_disk: tuple[Desk, StorageOutage],
) -> None:
    desk, _outage = halted_on_a_dead_disk
    _simulate(desk, 10)
    assert restarts(desk.engine, "order") == -1 or _health(desk)["order"]["restart_due_ns"]
    base_url = f"http://127.0.0.1:{desk.engine.http_port}"
    with httpx.Client(base_url=base_url, timeout=10) as client:
        status = client.get("/status")
        ready = client.get("/ready")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["trading_state"] == TradingState.HALTED.value
    assert body["halt_reason"] == "DRILL" and body["halt_persisted"] is True
    assert any(note.startswith("order:") for note in body["degraded"]), body["degraded"]
    assert ready.status_code == 503
    assert any("kill switch active" in blocker for blocker in ready.json()["blockers"])
