"""Every risk limit blocks the order that would breach it (issue 7, acceptance 3).

A real engine on a manual clock (tests/actor/conftest.py Desk). For each limit the engine is
driven to its edge: the plan that would breach it is blocked before the venue, with exactly one
``trader_risk_blocks_total{reason}`` increment and a reason that names the limit and the
figures; the plan just under the limit becomes orders at the venue.

LIVE: the kill switch cannot enter mode LIVE yet in this branch (its gates are built in
parallel), so the LIVE tests tell the risk actor the state the kill switch publishes once it
has: the kill switch's own current state with ``mode=LIVE``. The manual clock stands still, so
the kill switch's once-a-second re-publication cannot overwrite it during a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from domain.enums import DenialCode, Mode
from domain.messages import QueryRisk, QuerySnapshot, RiskBlocked, TradePlan
from domain.messages.api import RiskView
from tests.actor.conftest import Desk

SendPlan = Callable[[], TradePlan]


# ---------------------------------------------------------------------------------------------
# HELPERS
# ---------------------------------------------------------------------------------------------


def risk_view(desk: Desk) -> RiskView:
    return desk.engine.directory.ask("risk", QueryRisk(), timeout_s=5)


def blocks_metric(desk: Desk, code: DenialCode) -> float:
    value = desk.engine.metrics.registry.get_sample_value(
        "trader_risk_blocks_total", {"reason": code.value}
    )
    return value or 0.0


def all_blocks_metric(desk: Desk) -> float:
    return sum(blocks_metric(desk, code) for code in DenialCode)


def venue_submissions(desk: Desk) -> dict[str, int]:
    assert desk.engine.broker is not None
    return desk.engine.broker.submission_counts()


def block_of(desk: Desk, plan: TradePlan) -> RiskBlocked | None:
    for blocked in risk_view(desk).last_blocks:
        if blocked.plan_client_id == plan.plan_client_id:
            return blocked
    return None


def expect_blocked(
    desk: Desk,
    send: SendPlan,
    code: DenialCode,
    figures: tuple[str, ...],
) -> RiskBlocked:
    """Send a plan that must be blocked with ``code``; check the metric moved by exactly one
    (that label, and in all), the reason names the figures, and nothing reached the venue."""
    metric_before = blocks_metric(desk, code)
    all_before = all_blocks_metric(desk)

    plan = send()
    blocked = desk.settle(lambda: block_of(desk, plan), what=f"{code.value} block")

    assert blocked.code is code, blocked
    assert blocks_metric(desk, code) == metric_before + 1
    assert all_blocks_metric(desk) == all_before + 1
    for figure in figures:
        assert figure in blocked.detail, (figure, blocked.detail)
    # Anything the risk actor had told the order actor is handled before this answer.
    desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
    assert desk.orders_for(plan.plan_client_id) == []
    # Client order ids are the plan id and a leg letter: none of this plan's reached the venue.
    assert not [cid for cid in venue_submissions(desk) if cid.startswith(plan.plan_client_id)]
    return blocked


def expect_sent(desk: Desk, send: SendPlan) -> list[Any]:
    """Send a plan that must pass: its entry reaches the venue and it is never blocked."""
    all_before = all_blocks_metric(desk)
    plan = send()
    orders = desk.settle(
        lambda: desk.orders_for(plan.plan_client_id), what="the plan became orders"
    )
    entry_ids = {order.client_order_id for order in orders}
    desk.settle(
        lambda: entry_ids & set(venue_submissions(desk)), what="the entry reached the venue"
    )
    assert block_of(desk, plan) is None
    assert all_blocks_metric(desk) == all_before
    return orders


def enter_live(desk: Desk) -> None:
    """Tell the risk actor what the kill switch publishes once it is in mode LIVE, armed."""
    state = desk.trading().state
    assert state.armed
    live = msgspec.structs.replace(state, mode=Mode.LIVE)
    assert desk.engine.directory.tell("risk", live)


# ---------------------------------------------------------------------------------------------
# THE RUNBOOK'S MANDATORY LIMITS
# ---------------------------------------------------------------------------------------------


def test_max_concurrent_positions(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(risk={"max_concurrent_positions": 2})
    desk.ready_to_trade()

    expect_sent(desk, lambda: desk.send_plan(instrument="AAA", strategy="orb_1"))
    # The second slot: just under the limit.
    expect_sent(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", strategy="orb_1", entry="200.10", stop="199.00", target="202.00"
        ),
    )
    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", strategy="ema_1"),
        DenialCode.MAX_CONCURRENT_POSITIONS,
        ("max=2",),
    )
    blocked = risk_view(desk).last_blocks[-1]
    in_use = blocked.detail.split()
    open_positions = int(next(f for f in in_use if f.startswith("open_positions="))[15:])
    working = int(next(f for f in in_use if f.startswith("working_entries="))[16:])
    assert open_positions + working == 2


def test_max_trades_per_hour(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(risk={"max_trades_per_hour": 2})
    desk.ready_to_trade()

    expect_sent(desk, lambda: desk.send_plan(instrument="AAA", strategy="orb_1"))
    expect_sent(  # the second entry of the hour: just under the limit
        desk,
        lambda: desk.send_plan(
            instrument="BBB", strategy="orb_1", entry="200.10", stop="199.00", target="202.00"
        ),
    )
    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", strategy="ema_1"),
        DenialCode.TRADES_PER_HOUR,
        ("entries_last_hour=2", "max=2"),
    )


def test_per_symbol_exposure_cap(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(risk={"per_symbol_exposure_cap_rupees": "2000"})
    desk.ready_to_trade()

    # 20 x 100.10 = 2002.00 would exceed 2000.00; 19 x 100.10 = 1901.90 fits.
    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", quantity=20),
        DenialCode.PER_SYMBOL_EXPOSURE,
        ("instrument=AAA", "exposure_after=2002.00", "cap=2000.00"),
    )
    expect_sent(desk, lambda: desk.send_plan(instrument="AAA", quantity=19))
    # Now 1901.90 is in AAA: one more share (100.10) would breach the cap again.
    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", strategy="ema_1", quantity=1),
        DenialCode.PER_SYMBOL_EXPOSURE,
        ("exposure=1901.90", "exposure_after=2002.00", "cap=2000.00"),
    )


def test_max_daily_loss_pct(desk_factory: Callable[..., Desk]) -> None:
    # 0.01 % of 1,000,000 = 100.00 rupees of loss allowed today.
    desk = desk_factory(risk={"max_daily_loss_pct": "0.01"})
    desk.ready_to_trade()

    # 100 AAA bought at the ask (100.10); the stop at 95.00 stays out of the way.
    expect_sent(
        desk, lambda: desk.send_plan(instrument="AAA", quantity=100, stop="95.00", target="105")
    )
    desk.settle(lambda: risk_view(desk).open_positions == 1, what="the position is open")

    # Marked at the mid, 99.15: -95.00, just under the limit: an entry still passes.
    desk.quote("AAA", "99.10", "99.20")
    # A mark-only change reaches risk with the order actor's once-a-second refresh.
    desk.step(1.0)
    desk.settle(lambda: risk_view(desk).daily_pnl == -95, what="PnL -95 seen by risk")
    expect_sent(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", strategy="ema_1", entry="200.10", stop="195.00", target="205.00"
        ),
    )

    # Marked at 99.05: -105.00, and -0.50 on BBB (bought at 200.10, marked at 200.05): the
    # limit is breached; the next entry is blocked, and the kill switch flattens.
    desk.quote("AAA", "99.00", "99.10")
    desk.step(1.0)
    desk.settle(lambda: risk_view(desk).daily_pnl == -105.5, what="PnL past the limit")
    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", strategy="ema_1"),
        DenialCode.DAILY_LOSS_LIMIT,
        ("pnl_today=-105.50", "limit=-100.00"),
    )
    # Once the kill switch has the HALT in force, the reason still names the limit.
    desk.settle(lambda: desk.trading().state.halt_reason == "DAILY_LOSS_LIMIT", what="HALT")
    expect_blocked(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", strategy="orb_1", entry="200.10", stop="195.00", target="205.00"
        ),
        DenialCode.DAILY_LOSS_LIMIT,
        ("pnl_today=-10", "limit=-100.00"),
    )


# ---------------------------------------------------------------------------------------------
# LIVE_MAX_ORDER_SIZE
# ---------------------------------------------------------------------------------------------


def test_live_max_order_size_blocks_a_larger_live_entry(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(live={"live_max_order_size": "20"})
    desk.ready_to_trade()
    enter_live(desk)

    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", quantity=21),
        DenialCode.LIVE_MAX_ORDER_SIZE,
        ("quantity=21", "live_max_order_size=20"),
    )
    expect_sent(desk, lambda: desk.send_plan(instrument="AAA", quantity=20))


def test_live_max_order_size_is_measured_after_sizing(desk_factory: Callable[..., Desk]) -> None:
    # BBB trades in lots of 10: 25 is sized down to 20, which the LIVE limit of 20 allows;
    # 30 stays 30 and is blocked.
    desk = desk_factory(live={"live_max_order_size": "20"})
    desk.ready_to_trade()
    enter_live(desk)

    bbb = {"instrument": "BBB", "entry": "200.10", "stop": "199.00", "target": "202.00"}
    expect_blocked(
        desk,
        lambda: desk.send_plan(quantity=30, **bbb),
        DenialCode.LIVE_MAX_ORDER_SIZE,
        ("quantity=30", "live_max_order_size=20"),
    )
    orders = expect_sent(desk, lambda: desk.send_plan(quantity=25, **bbb))
    assert {order.quantity for order in orders} == {20}


def test_live_entries_are_blocked_while_live_max_order_size_is_unset(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory()
    desk.ready_to_trade()
    enter_live(desk)

    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", quantity=1),
        DenialCode.LIVE_MAX_ORDER_SIZE,
        ("quantity=1", "live_max_order_size=unset"),
    )


def test_live_max_order_size_does_not_apply_outside_live(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(live={"live_max_order_size": "20"})
    desk.ready_to_trade()  # PAPER

    orders = expect_sent(desk, lambda: desk.send_plan(instrument="AAA", quantity=21))
    assert {order.quantity for order in orders} == {21}


# ---------------------------------------------------------------------------------------------
# THE OTHER LIMITS: MAX ORDER SIZE, PER-TRADE RISK, HEAT CAP
# ---------------------------------------------------------------------------------------------


def test_max_order_size_caps_an_entry(
    desk_factory: Callable[..., Desk],
) -> None:
    # max_order_size reduces rather than denies (domain/risk.py): 80 AAA go out as 50.
    desk = desk_factory(risk={"max_order_size": 50})
    desk.ready_to_trade()

    orders = expect_sent(desk, lambda: desk.send_plan(instrument="AAA", quantity=50))
    assert {order.quantity for order in orders} == {50}
    orders = expect_sent(
        desk, lambda: desk.send_plan(instrument="AAA", strategy="ema_1", quantity=80)
    )
    assert {order.quantity for order in orders} == {50}


def test_max_order_size_below_one_lot_blocks(desk_factory: Callable[..., Desk]) -> None:
    desk = desk_factory(risk={"max_order_size": 5})
    desk.ready_to_trade()
    expect_blocked(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", quantity=10, entry="200.10", stop="199.00", target="202.00"
        ),
        # BBB trades in lots of 10: a cap of 5 leaves nothing, and the plan is blocked.
        DenialCode.QUANTITY_ZERO_AFTER_ROUNDING,
        ("requested=10", "lot_size=10", "max_order_size=5"),
    )


def test_per_trade_risk(desk_factory: Callable[..., Desk]) -> None:
    # 0.01 % of 1,000,000 = 100.00 rupees to the stop per plan. One BBB lot (10) with a stop
    # 20.00 away risks 200.00: blocked. 10.00 away risks exactly 100.00: sent.
    desk = desk_factory(risk={"per_trade_risk_pct": "0.01"})
    desk.ready_to_trade()

    expect_blocked(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", quantity=10, entry="200.10", stop="180.10", target="210.00"
        ),
        DenialCode.PER_TRADE_RISK,
        ("risk=200.00", "limit=100.00", "lot_size=10"),
    )
    expect_sent(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", quantity=10, entry="200.10", stop="190.10", target="210.00"
        ),
    )


def test_heat_cap(desk_factory: Callable[..., Desk]) -> None:
    # 0.01 % of 1,000,000 = 100.00 rupees of summed risk to the stop. 91 AAA with a stop
    # 1.10 away add 100.10: blocked. 90 add 99.00: sent.
    desk = desk_factory(risk={"portfolio_heat_cap_pct": "0.01"})
    desk.ready_to_trade()

    expect_blocked(
        desk,
        lambda: desk.send_plan(instrument="AAA", quantity=91),
        DenialCode.HEAT_CAP,
        ("new_risk=100.10", "heat_after=100.10", "cap=100.00"),
    )
    expect_sent(desk, lambda: desk.send_plan(instrument="AAA", quantity=90))
    # 99.00 in use: a single share more of BBB's risk (1.10 x 10) would breach it.
    expect_blocked(
        desk,
        lambda: desk.send_plan(
            instrument="BBB", quantity=10, entry="200.10", stop="199.00", target="202.00"
        ),
        DenialCode.HEAT_CAP,
        ("heat=99.00", "heat_after=110.00", "cap=100.00"),
    )
