"""The incremental portfolio projection equals the full recompute, and what risk is sent when.

Hypothesis drives random sequences of what changes the order actor's books (brackets opened,
entries filled in parts, exits, marks, cancelled entries, moved stops, finished brackets);
after each step the cached portfolio must equal ``full_portfolio`` to the last digit (the
same encoded bytes), and so must the position views. Then the publish rules: a fill's exposure
change goes to risk at once, marks alone are coalesced into one publish per inbox pass, an
unchanged portfolio is not re-sent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.order_book import OrderBook
from actors.order_portfolio import PortfolioProjection
from adapters.metrics import EngineMetrics
from domain import oco
from domain.clock import ManualClock
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages import PortfolioUpdated
from domain.orders import Order
from domain.positions import apply_fill, flat
from tests.helpers import make_tick

INSTRUMENTS = ("AAA", "BBB")
TICK = Decimal("0.05")


class Books:
    """An order book changed the way the order actor changes it, and its projection."""

    def __init__(self, *, wake: Any = None) -> None:
        self.clock = ManualClock()
        self.book = OrderBook()
        self.sent: list[tuple[str, PortfolioUpdated]] = []
        self.projection = PortfolioProjection(
            self.book,
            database=None,  # type: ignore[arg-type]  # only the trading-day roll reads it
            metrics=EngineMetrics(instance_id="test", strategies=["s1", "s2"], feeds=[]),
            clock=self.clock,
            tell=lambda name, message: self.sent.append((name, message)) or True,
            subscribers=("risk",),
            wake=wake,
        )

    def open(self, plan: str, instrument: str, side: Side, quantity: int, entry: Decimal) -> None:
        if plan in self.book.brackets:
            return
        stop, target = (entry - 20 * TICK, entry + 40 * TICK)
        if side is Side.SELL:
            stop, target = target, stop
        bracket = oco.Bracket(
            plan_client_id=plan,
            strategy="s1" if len(self.book.brackets) % 2 else "s2",
            instrument=instrument,
            side=side,
            planned_quantity=quantity,
            entry_price=entry,
            stop_price=stop,
            target_price=target,
            entry_order_id=plan + "E",
        )
        self.book.brackets[plan] = bracket
        self.book.orders[plan + "E"] = Order(
            client_order_id=plan + "E",
            plan_client_id=plan,
            strategy=bracket.strategy,
            instrument=instrument,
            leg=LegKind.ENTRY,
            side=side,
            order_type=OrderType.LIMIT,
            quantity=quantity,
            price=entry,
            status=OrderStatus.ACCEPTED,
        )

    def fill_entry(self, plan: str, quantity: int, price: Decimal) -> None:
        bracket = self.book.brackets.get(plan)
        entry = self.book.orders.get(plan + "E")
        if bracket is None or entry is None or not entry.status.is_working:
            return
        quantity = min(quantity, entry.remaining_quantity)
        if quantity <= 0:
            return
        entry.filled_quantity += quantity
        entry.status = (
            OrderStatus.FILLED if entry.remaining_quantity == 0 else OrderStatus.PARTIALLY_FILLED
        )
        bracket.entry_filled += quantity
        bracket.status = oco.BracketStatus.OPEN
        position = self.book.positions.get(plan) or flat(bracket.instrument)
        self.book.positions[plan] = apply_fill(position, bracket.side, quantity, price)

    def exit(self, plan: str, quantity: int, price: Decimal) -> None:
        bracket = self.book.brackets.get(plan)
        if bracket is None:
            return
        quantity = min(quantity, bracket.open_quantity)
        if quantity <= 0:
            return
        bracket.exit_filled += quantity
        position = self.book.positions[plan]
        self.book.positions[plan] = apply_fill(position, bracket.side.opposite, quantity, price)

    def cancel_entry(self, plan: str) -> None:
        entry = self.book.orders.get(plan + "E")
        if entry is not None and entry.status.is_working:
            entry.status = OrderStatus.CANCELLED
            bracket = self.book.brackets[plan]
            if bracket.entry_filled == 0:
                bracket.status = oco.BracketStatus.CANCELLED

    def move_stop(self, plan: str, ticks: int) -> None:
        bracket = self.book.brackets.get(plan)
        if bracket is not None:
            bracket.stop_price += ticks * TICK

    def finish(self, plan: str) -> None:
        if self.book.brackets.pop(plan, None) is None:
            return
        position = self.book.positions.pop(plan, None)
        if position is not None:
            self.projection.book_closed(position)
        self.book.orders.pop(plan + "E", None)

    def mark(self, instrument: str, bid: Decimal) -> None:
        self.projection.on_ticks([make_tick(instrument, bid, bid + TICK, ts=self.clock.now_ns())])


prices = st.integers(min_value=1800, max_value=2200).map(lambda n: n * TICK)
plans = st.sampled_from(["P0", "P1", "P2"])
steps = st.one_of(
    st.tuples(
        st.just("open"),
        plans,
        st.sampled_from(INSTRUMENTS),
        st.sampled_from(list(Side)),
        st.integers(1, 50),
        prices,
    ),
    st.tuples(st.just("fill_entry"), plans, st.integers(1, 50), prices),
    st.tuples(st.just("exit"), plans, st.integers(1, 50), prices),
    st.tuples(st.just("cancel_entry"), plans),
    st.tuples(st.just("move_stop"), plans, st.integers(-5, 5)),
    st.tuples(st.just("finish"), plans),
    st.tuples(st.just("mark"), st.sampled_from(INSTRUMENTS), prices),
    st.tuples(st.just("refresh")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(steps, min_size=5, max_size=80))
def test_the_incremental_portfolio_equals_the_full_recompute_after_every_change(
    sequence: list[tuple[Any, ...]],
) -> None:
    books = Books()
    projection = books.projection
    for step in sequence:
        name, *arguments = step
        if name == "refresh":
            projection.refresh()
        else:
            getattr(books, name)(*arguments)
        books.clock.advance(0.001)
        incremental = projection.portfolio()
        full = projection.full_portfolio()
        assert msgspec.json.encode(incremental) == msgspec.json.encode(full), step
        assert projection.position_views() == projection.full_position_views()


def test_a_fill_goes_to_risk_at_once_marks_alone_once_per_inbox_pass() -> None:
    wakes: list[int] = []
    books = Books(wake=lambda: wakes.append(1) or True)
    projection = books.projection
    books.open("P1", "AAA", Side.BUY, 10, Decimal("100.00"))
    assert projection.refresh()  # the first portfolio always goes
    books.mark("AAA", Decimal("100.00"))
    books.fill_entry("P1", 4, Decimal("100.00"))
    assert projection.refresh(), "a fill's exposure change must not wait"
    assert books.sent[-1][1].positions[0].quantity == 4

    # Marks alone: the first change asks for one publish after the queued messages.
    books.mark("AAA", Decimal("99.00"))
    assert not projection.refresh()
    books.mark("AAA", Decimal("98.00"))
    assert not projection.refresh()
    assert wakes == [1]
    published = len(books.sent)
    projection.publish()  # the actor handles its RepublishState
    assert len(books.sent) == published + 1
    # Long 4 at 100.00, marked at the mid of 98.00 / 98.05.
    assert books.sent[-1][1].unrealized_pnl == Decimal("-7.9")

    # A fill while a mark publish is pending still goes at once.
    books.mark("AAA", Decimal("97.00"))
    assert not projection.refresh()
    books.fill_entry("P1", 6, Decimal("97.00"))
    assert projection.refresh()

    # Nothing changed: not re-sent within a second of clock time, re-sent after one.
    before = len(books.sent)
    assert not projection.refresh()
    books.clock.advance(1.0)
    assert projection.refresh()
    assert len(books.sent) == before + 1


def test_without_a_wake_marks_are_published_at_once() -> None:
    books = Books()
    books.open("P1", "AAA", Side.BUY, 10, Decimal("100.00"))
    books.fill_entry("P1", 10, Decimal("100.00"))
    assert books.projection.refresh()
    books.mark("AAA", Decimal("99.00"))
    assert books.projection.refresh()


def test_a_recovered_bracket_whose_fills_are_not_booked_yet_counts_its_plan_risk() -> None:
    # After a SIGKILL the journal brings back a bracket's filled quantity before reconciliation
    # re-applies the broker's missed fills: open quantity, no booked position. Its heat is its
    # risk at the entry's price, not |0 - stop| x quantity (its whole notional), which tripped
    # the heat cap on such a recovery.
    books = Books()
    books.open("P0", "AAA", Side.BUY, 10, Decimal("100"))
    entry = books.book.orders["P0E"]
    entry.filled_quantity = 10
    entry.status = OrderStatus.FILLED
    bracket = books.book.brackets["P0"]
    bracket.entry_filled = 10
    bracket.status = oco.BracketStatus.OPEN
    assert "P0" not in books.book.positions
    [view] = books.projection.full_position_views()
    assert view.average_price == Decimal("100")
    assert view.risk_amount == 10 * 20 * TICK
    assert books.projection.portfolio().heat == 10 * 20 * TICK
    # Once the entry's average fill price is known it is the better estimate.
    entry.average_fill_price = Decimal("100.5")
    [view] = books.projection.full_position_views()
    assert view.risk_amount == 10 * (Decimal("100.5") - bracket.stop_price)
    assert books.projection.portfolio().heat == view.risk_amount
