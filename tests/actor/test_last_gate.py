"""One authoritative gate: a bracket queued in the order actor's inbox before the kill switch
acknowledged a HALT, a pause or a disarm never reaches the broker.

Deterministic, no sleeps: the order actor is parked inside a broker call (the first plan's
submit, held by ``FaultyBroker.hold_next``), the second plan is approved by risk and queued
behind it, the kill switch acknowledges the stop (an ``ask``: it has decided the new state when
it answers), and only then is the broker call released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain.enums import PauseCause
from domain.messages import DisarmTrading, PauseEntries, QuerySnapshot, TripKillSwitch
from tests.actor.conftest import Desk


@pytest.fixture
def faulty(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(broker_faults=True)
    desk.ready_to_trade()
    return desk


def order_snapshot(desk: Desk) -> dict[str, Any]:
    return desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=10)


@pytest.mark.parametrize(
    ("stop", "code"),
    [
        (TripKillSwitch(reason="OPERATOR_DRILL", detail="queued bracket"), "KILL_SWITCH_ACTIVE"),
        (PauseEntries(cause=PauseCause.OPERATOR, detail="queued bracket"), "TRADING_PAUSED"),
        (DisarmTrading(reason="queued bracket"), "NOT_ARMED"),
    ],
    ids=["halt", "operator-pause", "disarm"],
)
def test_a_bracket_queued_before_the_kill_switch_acknowledged_a_stop_is_denied(
    faulty: Desk, stop: object, code: str
) -> None:
    faults = faulty.engine.faults
    assert faults is not None and faulty.engine.broker is not None
    held = faults.hold_next("submit_order")
    first = faulty.send_plan(instrument="AAA")
    assert held.entered.wait(10), "the first entry never reached the broker"
    # The order actor is inside the broker call; the second plan is approved and queued.
    second = faulty.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    faulty.engine.directory.ask("risk", QuerySnapshot(), timeout_s=10)  # risk has handled it
    faulty.engine.directory.ask("kill_switch", stop, timeout_s=10)  # acknowledged
    held.release()

    snapshot = faulty.settle(
        lambda: (s := order_snapshot(faulty))["recent_denials"] and s,
        what="the queued bracket denied",
    )
    [denial] = snapshot["recent_denials"]
    assert denial["client_order_id"] == second.plan_client_id + "E"
    assert denial["code"] == code
    sent = faulty.engine.broker.submission_counts()
    assert second.plan_client_id + "E" not in sent
    assert first.plan_client_id + "E" in sent  # it was past the gate before the stop
