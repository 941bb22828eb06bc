"""An engine restarted with IG deals open (and deals closed while it was down) comes back
clean, end to end against the fake IG over real sockets.

IG keeps a bracket's stop and limit ON the deal; after a restart the adapter's memory is
empty and IG's positions name only the entry (its dealReference). The engine's books still
hold the working STOP and TARGET legs: the adapter learns them from the order actor after
recovery (``adopt_working_orders``), so reconciliation finds them working at the levels the
deal holds (no drift, no pause, no second placement), and a level hit later still fills the
engine's own leg. A deal IG closed while the engine was down is read from IG's activity
history: its closing fill is booked once, on the leg whose level closed it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.storage import UnitOfWork
from domain.enums import LegKind, OrderStatus, PauseCause
from domain.messages import QueryOrders, QueryTradingState, TightenStops
from domain.plans import client_order_id
from launcher.engine import Engine
from tests.e2e.test_ig_demo import (
    EPICS,
    engine_positions,
    ig_deals,
    send_plan,
    start_ig_engine,
)
from tests.helpers import wait_until
from tools.fake_ig import FakeIG

pytestmark = pytest.mark.timeout(180)

# Every loop often enough that a wrong answer shows within the test's waits.
FAST_RECONCILIATION = {"positions_interval_s": 1.0, "open_orders_interval_s": 1.0}


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(step_interval_s=0.1, probe_interval_s=0.5, volatility_bps=0.5) as server:
        yield server


@pytest.fixture
def start_engine(fake: FakeIG, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start an engine on the fake; every engine of one test shares one database."""
    engines: list[Engine] = []
    yield functools.partial(
        start_ig_engine, fake, tmp_path, engines, reconciliation=FAST_RECONCILIATION
    )
    for running in engines:
        running.stop()


def orders_of(engine: Engine) -> dict[str, Any]:
    orders = engine.directory.ask("order", QueryOrders(), timeout_s=10)
    return {o.client_order_id: o for o in orders}


def pause_causes(engine: Engine) -> set[PauseCause]:
    control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
    return {p.cause for p in control.pauses}


def positions_reads(fake: FakeIG) -> int:
    """IG's positions read so far: every reconciliation run (light or full) reads them."""
    return sum(1 for r in fake.request_log() if r.method == "GET" and r.path == "/positions")


def wait_for_reconciliation(fake: FakeIG, runs: int) -> None:
    """``runs`` more reads of IG's positions: longer than the drift grace (3 s) at one a
    second, so a difference found would have become drift."""
    start = positions_reads(fake)
    wait_until(
        lambda: positions_reads(fake) >= start + runs,
        timeout_s=60,
        message=f"{runs} more reconciliation reads of IG's positions",
    )


def level_puts(fake: FakeIG) -> list[Any]:
    return [r for r in fake.request_log() if r.method == "PUT" and "/otc/" in r.path]


def open_protected_bracket(engine: Engine, fake: FakeIG) -> tuple[str, str, str, dict[str, Any]]:
    entry, stop, target = send_plan(engine, fake, "FTSE")
    wait_until(
        lambda: [d["limitLevel"] is not None for d in ig_deals(fake)] == [True],
        timeout_s=30,
        message="the deal open and protected at IG",
    )
    wait_until(lambda: engine_positions(engine) == [("FTSE", 2)], timeout_s=20)
    wait_until(
        lambda: {orders_of(engine)[c].status for c in (stop, target)} == {OrderStatus.ACCEPTED},
        timeout_s=20,
        message="the stop and target legs working",
    )
    [deal] = ig_deals(fake)
    return entry, stop, target, deal


def test_a_restart_with_a_deal_open_keeps_its_legs_on_the_deals_levels(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    first = start_engine()
    _, stop, target, deal = open_protected_bracket(first, fake)
    first.stop()

    engine = start_engine()
    # The start's full run, then long enough for any difference to become drift.
    wait_for_reconciliation(fake, 6)
    orders = orders_of(engine)
    assert orders[stop].status is OrderStatus.ACCEPTED
    assert orders[target].status is OrderStatus.ACCEPTED
    assert orders[stop].trigger_price == Decimal(str(deal["stopLevel"]))
    assert orders[target].price == Decimal(str(deal["limitLevel"]))
    # Nothing placed again: the legs are the engine's only STOP and TARGET of the plan.
    legs = [o for o in orders.values() if o.leg in (LegKind.STOP, LegKind.TARGET)]
    assert sorted(o.client_order_id for o in legs) == sorted([stop, target])
    assert PauseCause.RECONCILE_DRIFT not in pause_causes(engine)
    assert engine.gate.entry_denial(engine.clock.now_ns()) is None
    assert [d["dealId"] for d in ig_deals(fake)] == [deal["dealId"]]
    assert level_puts(fake) == []

    # IG stops the deal out later: the engine's own stop leg fills, the target is cancelled.
    fake.set_quote(EPICS["FTSE"], Decimal(str(deal["stopLevel"])) - 5)
    wait_until(lambda: ig_deals(fake) == [], timeout_s=20, message="closed at IG")
    wait_until(lambda: engine_positions(engine) == [], timeout_s=30, message="the engine is flat")
    wait_until(
        lambda: (
            (orders_of(engine)[stop].status, orders_of(engine)[target].status)
            == (OrderStatus.FILLED, OrderStatus.CANCELLED)
        ),
        timeout_s=20,
        message="the stop leg filled, the target cancelled",
    )
    # IG closed it, not an order of ours; one deal in all, and never a level sent again.
    deals = [r for r in fake.request_log() if r.path == "/positions/otc" and r.status == 200]
    assert [r.method for r in deals] == ["POST"]
    assert level_puts(fake) == []


def stored_fills(engine: Engine, plan_id: str) -> list[Any]:
    assert engine.database is not None
    with UnitOfWork(engine.database) as uow:
        return uow.fills.list_for_plan(plan_id)


def history_reads(fake: FakeIG) -> list[Any]:
    return [r for r in fake.request_log() if r.path == "/history/activity"]


@pytest.mark.parametrize("level", ["stop", "limit"])
def test_a_deal_closed_at_ig_while_the_engine_was_down_is_booked_once_on_its_leg(
    fake: FakeIG, start_engine: Callable[..., Engine], level: str
) -> None:
    first = start_engine()
    entry, stop, target, deal = open_protected_bracket(first, fake)
    plan_id = entry[:-1]
    first.stop()
    # While the engine is down, IG closes the deal at one of its levels.
    if level == "stop":
        fake.set_quote(EPICS["FTSE"], Decimal(str(deal["stopLevel"])) - 5)
    else:
        fake.set_quote(EPICS["FTSE"], Decimal(str(deal["limitLevel"])) + 5)
    assert ig_deals(fake) == []
    [closed] = [
        a
        for a in fake.market.activity
        if a["dealId"] == deal["dealId"] and "closed" in a["description"]
    ]
    closing_level = Decimal(str(closed["details"]["level"]))
    hit, sibling = (stop, target) if level == "stop" else (target, stop)

    engine = start_engine()
    wait_until(lambda: engine_positions(engine) == [], timeout_s=30, message="the engine is flat")
    wait_until(
        lambda: (
            (orders_of(engine)[hit].status, orders_of(engine)[sibling].status)
            == (OrderStatus.FILLED, OrderStatus.CANCELLED)
        ),
        timeout_s=20,
        message="the leg whose level closed the deal filled, its sibling cancelled",
    )
    wait_for_reconciliation(fake, 6)
    assert orders_of(engine)[hit].average_fill_price == closing_level
    fills = [f for f in stored_fills(engine, plan_id) if f.client_order_id == hit]
    # Once, at IG's closing level, under the trade id a live session gives a level hit.
    assert [(f.trade_id, f.quantity, f.price) for f in fills] == [
        (f"{deal['dealId']}:{hit}", 2, closing_level)
    ]
    assert PauseCause.RECONCILE_DRIFT not in pause_causes(engine)
    assert engine.gate.entry_denial(engine.clock.now_ns()) is None
    # IG's history read once, at the start; nothing sent to IG for the closed deal.
    assert len(history_reads(fake)) == 1
    deals = [r for r in fake.request_log() if r.path == "/positions/otc" and r.status == 200]
    assert [r.method for r in deals] == ["POST"]
    assert level_puts(fake) == []

    # A second restart books nothing again.
    engine.stop()
    again = start_engine()
    wait_for_reconciliation(fake, 3)
    assert len([f for f in stored_fills(again, plan_id) if f.client_order_id == hit]) == 1
    assert engine_positions(again) == []


def test_a_restart_after_a_tightened_stop_keeps_the_moved_stop_leg_on_the_deal(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    """The 15:20 tighten moved the stop (leg ``...S1``) before the restart: after it, ``S1`` is
    the deal's stop, nothing is placed again, and a hit at IG fills ``S1``."""
    first = start_engine()
    _, stop, target, deal = open_protected_bracket(first, fake)
    fake.set_quote(EPICS["FTSE"], Decimal(str(deal["level"])) + 20)  # in profit: break-even
    wait_until(
        lambda: (
            first.directory.ask(
                "order", TightenStops(reason="e2e", mode="break_even"), timeout_s=10
            )
            > 0
        ),
        timeout_s=20,
        message="a stop to tighten once the quote has reached the engine",
    )
    moved = client_order_id(stop[:-1], LegKind.STOP, 1)
    wait_until(
        lambda: (
            orders_of(first).get(moved) is not None
            and orders_of(first)[moved].status is OrderStatus.ACCEPTED
        ),
        timeout_s=20,
        message="the moved stop working",
    )
    [deal] = ig_deals(fake)
    puts = len(level_puts(fake))
    first.stop()

    engine = start_engine()
    wait_for_reconciliation(fake, 6)
    orders = orders_of(engine)
    assert orders[moved].status is OrderStatus.ACCEPTED
    assert orders[moved].trigger_price == Decimal(str(deal["stopLevel"]))
    assert orders[target].status is OrderStatus.ACCEPTED
    legs = [o for o in orders.values() if o.leg is LegKind.STOP and o.status.is_working]
    assert [o.client_order_id for o in legs] == [moved]
    assert PauseCause.RECONCILE_DRIFT not in pause_causes(engine)
    assert len(level_puts(fake)) == puts

    fake.set_quote(EPICS["FTSE"], Decimal(str(deal["stopLevel"])) - 5)
    wait_until(lambda: engine_positions(engine) == [], timeout_s=30, message="the engine is flat")
    wait_until(
        lambda: orders_of(engine)[moved].status is OrderStatus.FILLED,
        timeout_s=20,
        message="the moved stop leg filled",
    )
