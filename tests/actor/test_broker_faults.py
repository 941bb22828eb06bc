"""Lost requests and lost answers between the order actor and the broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.enums import OrderStatus, PauseCause, TradingState
from domain.messages import InjectFault, QuerySnapshot, TripKillSwitch
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_supervision import restarts, wait_for_restart


def settle_delay_s(desk: Desk) -> float:
    """Manual-clock seconds that put an in-flight order past the order actor's settle delay."""
    return desk.engine.config.orders.in_flight_settle_s + 0.5


@pytest.fixture
def faulty(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(broker_faults=True)
    desk.ready_to_trade()
    return desk


def wait_for_loss(desk: Desk, what: str) -> None:
    """Wait until the armed fault has struck AND the order actor has finished handling it.

    ``faults.lost`` fills in while the order actor is still inside the failed call; it dates
    the request (the in-flight settle delay runs from it) only after the call raises. A clock
    moved in between would date it after the jump, and the settle pass would then wait for a
    clock that no longer moves. An ask returns only once that handler is done.
    """
    assert desk.engine.faults is not None
    desk.settle(lambda: desk.engine.faults.lost, what=what)  # type: ignore[union-attr]
    desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=10)


def statuses(desk: Desk, plan_id: str) -> dict[str, OrderStatus]:
    return {o.leg.value: o.status for o in desk.orders_for(plan_id)}


def venue_statuses(desk: Desk, plan_id: str) -> dict[str, str]:
    assert desk.engine.broker is not None
    return {
        r.client_order_id[len(plan_id)]: r.status.value
        for r in desk.engine.broker.list_orders()
        if r.client_order_id.startswith(plan_id)
    }


def test_a_lost_cancel_is_sent_again_so_no_sibling_outlives_its_position(faulty: Desk) -> None:
    plan_id = open_position(faulty, quantity=10)
    assert faulty.engine.faults is not None
    faulty.engine.faults.lose_next("cancel_order", loss="request")
    faulty.quote("AAA", "98.90", "99.00")  # the stop fills; the target's cancel is lost
    faulty.settle(lambda: statuses(faulty, plan_id)["STOP"] is OrderStatus.FILLED, what="stop")
    wait_for_loss(faulty, "the target's cancel lost")
    faulty.step(settle_delay_s(faulty))
    faulty.settle(lambda: venue_statuses(faulty, plan_id).get("T") == "CANCELLED", what="resent")
    # The target price comes later: nothing is left there to fill, no short is opened.
    faulty.quote("AAA", "102.50", "102.60")
    faulty.step(1.0)
    faulty.settle(lambda: not faulty.working_legs(plan_id), what="bracket done")
    assert statuses(faulty, plan_id)["TARGET"] is OrderStatus.CANCELLED
    assert not faulty.portfolio().portfolio.positions
    registry = faulty.engine.metrics.registry
    assert registry.get_sample_value("trader_retries_total", {"type": "cancel_unknown"}) == 1
    assert registry.get_sample_value("trader_retries_total", {"type": "cancel_resend"}) == 1


def test_an_entry_lost_on_the_way_is_not_resent_once_trading_halted(faulty: Desk) -> None:
    assert faulty.engine.faults is not None
    faulty.engine.faults.lose_next("submit_order", loss="request")
    plan = faulty.send_plan()
    wait_for_loss(faulty, "entry lost")
    faulty.engine.directory.tell("kill_switch", TripKillSwitch(reason="OPERATOR_DRILL"))
    faulty.settle(lambda: faulty.trading().state.state is TradingState.HALTED, what="HALTED")
    faulty.step(settle_delay_s(faulty))
    [entry] = faulty.settle(
        lambda: [
            o for o in faulty.orders_for(plan.plan_client_id) if o.status is OrderStatus.CANCELLED
        ],
        what="entry settled as never sent",
    )
    assert entry.reason.startswith("NEVER_REACHED_BROKER")
    assert venue_statuses(faulty, plan.plan_client_id) == {}  # the venue never saw it


def test_an_entry_whose_answer_was_lost_is_settled_from_the_broker_list(faulty: Desk) -> None:
    assert faulty.engine.faults is not None
    faulty.engine.faults.lose_next("submit_order", loss="response")
    plan = faulty.send_plan()
    wait_for_loss(faulty, "answer lost")
    faulty.step(settle_delay_s(faulty))
    faulty.settle(
        lambda: set(faulty.working_legs(plan.plan_client_id)) == {"STOP", "TARGET"},
        what="bracket formed from the broker's word",
    )
    assert faulty.engine.broker is not None
    assert faulty.engine.broker.submission_counts()[plan.plan_client_id + "E"] == 1


def test_a_restarted_kill_switch_gets_the_standing_auto_pauses_back(desk: Desk) -> None:
    desk.step(desk.engine.config.heartbeats.marketdata_stale_s + 1)  # no ticks: stale feed
    desk.settle(
        lambda: PauseCause.MARKETDATA_STALE in desk.trading().state.pause_causes,
        what="stale pause",
    )
    desk.engine.directory.tell("kill_switch", InjectFault(detail="kill switch drill"))
    desk.settle(lambda: restarts(desk, "kill_switch") == 1, what="kill switch restarted")
    desk.settle(
        lambda: PauseCause.MARKETDATA_STALE in desk.trading().state.pause_causes,
        what="stale pause restored after the restart",
    )


def test_a_stopped_out_loss_counts_today_while_its_sibling_cancel_is_pending(
    faulty: Desk,
) -> None:
    plan_id = open_position(faulty, quantity=10, stop="99.00")
    assert faulty.engine.faults is not None
    faulty.engine.faults.lose_next("cancel_order", loss="request")
    faulty.quote("AAA", "98.90", "99.00")
    faulty.settle(lambda: statuses(faulty, plan_id)["STOP"] is OrderStatus.FILLED, what="stop")
    realized = faulty.settle(
        lambda: faulty.portfolio().portfolio.realized_pnl_today, what="loss counted"
    )
    assert realized < 0
    faulty.engine.directory.tell("order", InjectFault(detail="order drill"))
    # The clock moves only once the new incarnation has recovered: recovering after the jump,
    # it would date the pending cancel from then, and the settle pass would wait for a clock
    # that no longer moves.
    wait_for_restart(faulty, "order", 1)
    faulty.step(settle_delay_s(faulty))
    faulty.settle(lambda: not faulty.working_legs(plan_id), what="bracket done")
    faulty.step(1.0)
    faulty.settle(
        lambda: faulty.portfolio().portfolio.realized_pnl_today == realized,
        what="the same loss, counted once",
    )
