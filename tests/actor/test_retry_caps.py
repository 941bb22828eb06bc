"""Every retry loop has a cap and escalates: a cancel the broker never carries out."""

from __future__ import annotations

from collections.abc import Callable

from domain.enums import OrderStatus, TradingState
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_reconciliation import advance_until


def test_a_cancel_the_broker_never_carries_out_is_resent_at_most_max_attempts_then_halts(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(broker_faults=True, orders={"max_attempts": 3})
    desk.ready_to_trade()
    plan_id = open_position(desk, quantity=10)
    faults = desk.engine.faults
    assert faults is not None
    faults.lose_next("cancel_order", loss="request", times=1_000)
    desk.quote("AAA", "98.90", "99.00")  # the stop fills; every cancel of the target is lost
    desk.settle(
        lambda: any(
            o.leg.value == "STOP" and o.status is OrderStatus.FILLED
            for o in desk.orders_for(plan_id)
        ),
        what="stop filled",
    )
    advance_until(
        desk,
        lambda: desk.trading().state.state is TradingState.HALTED,
        max_s=60,
        what="HALTED once the cancel resends are used up",
    )
    assert desk.trading().state.halt_reason == "CANCEL_GAVE_UP"
    registry = desk.engine.metrics.registry
    resends = registry.get_sample_value("trader_retries_total", {"type": "cancel_resend"})
    assert resends == 3, resends
