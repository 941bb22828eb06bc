"""The kill switch: sticky across restarts, tripped by the daily loss limit, heat cap flattens."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from domain.clock import ManualClock
from domain.enums import PauseCause, Side, TradingState
from domain.messages import (
    ArmTrading,
    DisarmTrading,
    FillReport,
    PauseEntries,
    ResetKillSwitch,
    ResumeEntries,
    TripKillSwitch,
)
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config


def test_a_halt_survives_a_restart_and_only_a_reset_clears_it(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    config = make_config(tmp_path, strategies=[])
    first = Desk(engine_factory(config), clock)
    first.ready_to_trade()
    first.engine.directory.tell("kill_switch", TripKillSwitch(reason="OPERATOR_DRILL"))
    first.settle(lambda: first.trading().state.state is TradingState.HALTED, what="HALTED")
    first.engine.stop()

    second = Desk(engine_factory(config), clock)
    second.quote("AAA", "100.00", "100.10")
    state = second.settle(
        lambda: second.trading().state.halt_reason == "OPERATOR_DRILL" and second.trading(),
        what="HALT reloaded",
    )
    assert state.state.state is TradingState.HALTED
    plan = second.send_plan()
    second.settle(
        lambda: second.engine.control.risk().blocks.get("KILL_SWITCH_ACTIVE", 0) >= 1,  # type: ignore[union-attr]
        what="entry blocked by the kill switch",
    )
    assert second.orders_for(plan.plan_client_id) == []
    assert second.engine.directory.ask("kill_switch", ResetKillSwitch(), timeout_s=5)
    second.settle(
        lambda: second.trading().state.state is TradingState.ACTIVE, what="ACTIVE after reset"
    )


def test_the_daily_loss_limit_trips_the_kill_switch_and_flattens(
    desk_factory: Callable[..., Desk],
) -> None:
    # 0.001 % of 1,000,000 = 10 rupees: a 1.5-rupee move on 10 shares breaches it.
    desk = desk_factory(risk={"max_daily_loss_pct": "0.001"})
    desk.ready_to_trade()
    plan_id = open_position(desk, quantity=10, stop="95", target="110")
    desk.quote("AAA", "98.50", "98.60")  # unrealized about -15, stop not reached
    desk.step(1.0)  # the order actor re-publishes the portfolio with fresh marks
    state = desk.settle(
        lambda: desk.trading().state.state is TradingState.HALTED and desk.trading(),
        what="HALTED by the daily loss limit",
    )
    assert state.state.halt_reason == "DAILY_LOSS_LIMIT"
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flattened")
    assert desk.working_legs(plan_id) == {}
    registry = desk.engine.metrics.registry
    assert (
        registry.get_sample_value("trader_kill_switch_total", {"reason": "DAILY_LOSS_LIMIT"}) == 1
    )


def test_heat_above_the_cap_halts_and_flattens_with_reason_risk_cap(
    desk_factory: Callable[..., Desk],
) -> None:
    # The plan's own risk (10 x 1.10 = 11) fits the 12-rupee cap; slippage of 10 ticks on the
    # entry makes the real risk 10 x 1.60 = 16, above it.
    desk = desk_factory(
        risk={"portfolio_heat_cap_pct": "0.0012"},
        paper_broker={"latency_ms": 0, "slippage_ticks": 10},
    )
    desk.ready_to_trade()
    desk.send_plan(quantity=10, entry="100.10", stop="99.00", target="103")
    state = desk.settle(
        lambda: PauseCause.FLATTEN in desk.trading().state.pause_causes and desk.trading(),
        what="risk-cap pause",
    )
    assert [p.detail for p in state.pauses] == ["risk_cap"]
    assert state.state.state is TradingState.HALTED
    assert state.state.halt_reason == "HEAT_CAP"
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flattened")


def test_a_broker_fill_beyond_the_order_halts_trading_and_changes_nothing(desk: Desk) -> None:
    plan_id = open_position(desk, quantity=10)
    [entry] = [o for o in desk.orders_for(plan_id) if o.leg.value == "ENTRY"]
    # A venue that reports more than the order's quantity: our books and its books disagree.
    desk.engine.directory.tell(
        "order",
        FillReport(
            trade_id="VENUE-BUG-1",
            client_order_id=entry.client_order_id,
            broker_order_id=entry.broker_order_id or "",
            instrument="AAA",
            side=Side.BUY,
            quantity=5,
            price=Decimal("100.10"),
            ts_event=desk.clock.now_ns(),
        ),
    )
    state = desk.settle(
        lambda: desk.trading().state.state is TradingState.HALTED and desk.trading(),
        what="HALTED on the overfill",
    )
    assert state.state.halt_reason == "OVERFILL"
    [entry_after] = [o for o in desk.orders_for(plan_id) if o.leg.value == "ENTRY"]
    assert entry_after.filled_quantity == 10
    assert [p.quantity for p in desk.portfolio().portfolio.positions] == [10]
    assert set(desk.working_legs(plan_id)) == {"STOP", "TARGET"}  # still protected


def test_a_disarmed_engine_refuses_entries_until_armed_again(desk: Desk) -> None:
    desk.engine.directory.ask("kill_switch", DisarmTrading(reason="drill"), timeout_s=5)
    blocked = desk.send_plan()
    desk.settle(
        lambda: desk.engine.control.risk().blocks.get("NOT_ARMED", 0) >= 1,  # type: ignore[union-attr]
        what="entry refused while disarmed",
    )
    assert desk.orders_for(blocked.plan_client_id) == []
    assert desk.engine.directory.ask("kill_switch", ArmTrading(), timeout_s=5).state.armed
    open_position(desk, instrument="BBB", entry="200.10", stop="199", target="202")


def test_a_resume_for_one_detail_leaves_a_flatten_with_another_detail_in_force(desk: Desk) -> None:
    # The scheduler clears its own EOD flatten at the open; an operator's flatten set over it
    # must survive, and the check and the clear happen in one kill-switch turn.
    desk.ready_to_trade()
    ask = desk.engine.directory.ask
    ask("kill_switch", PauseEntries(cause=PauseCause.FLATTEN, detail="operator"), timeout_s=5)
    view = ask(
        "kill_switch",
        ResumeEntries(cause=PauseCause.FLATTEN, only_if_detail="eod_hard_flat"),
        timeout_s=5,
    )
    assert [(p.cause, p.detail) for p in view.pauses] == [(PauseCause.FLATTEN, "operator")]
    view = ask(
        "kill_switch",
        ResumeEntries(cause=PauseCause.FLATTEN, only_if_detail="operator"),
        timeout_s=5,
    )
    assert view.pauses == ()
