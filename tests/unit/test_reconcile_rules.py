"""The reconciliation rules (``domain.reconcile``): examples and properties.

Properties, over random books and broker facts:
- when the broker's facts are consistent (its net position per instrument is the sum of its
  fills), applying the actions makes our net quantities equal the broker's, and no position
  drift is left;
- a broker position that our books do not hold is always drift, and marked unprotected;
- a second run over the books after the actions proposes nothing new;
- a light run (open orders and recent fills only) never settles or resends an order on its
  absence, and when it finds nothing to ask the whole lists about, a full run over the same
  world would add nothing but the statuses of orders still in transit.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.orders import FillReport, OrderStatusReport, PositionReport
from domain.orders import Order, apply_fill, apply_status_report
from domain.reconcile import (
    ApplyFill,
    ApplyStatus,
    BrokerFacts,
    DriftKind,
    LocalBooks,
    ReconcileAction,
    Reconciliation,
    ResendCancel,
    SettleInFlight,
    reconcile,
    signed_quantity,
)

__all__: list[str] = []

SECOND = 1_000_000_000
NOW = 1_767_225_600 * SECOND
SETTLE = 3 * SECOND
INSTRUMENTS = ("AAA", "BBB")


def order(
    order_id: str = "P1E",
    *,
    instrument: str = "AAA",
    side: Side = Side.BUY,
    leg: LegKind = LegKind.ENTRY,
    quantity: int = 10,
    status: OrderStatus = OrderStatus.ACCEPTED,
    ts_updated: int = NOW - 10 * SECOND,
) -> Order:
    return Order(
        client_order_id=order_id,
        plan_client_id=order_id[:-1],
        strategy="orb_1",
        instrument=instrument,
        leg=leg,
        side=side,
        order_type=OrderType.MARKET if leg is LegKind.ENTRY else OrderType.STOP,
        quantity=quantity,
        status=status,
        broker_order_id=f"B-{order_id}",
        ts_created=ts_updated,
        ts_updated=ts_updated,
    )


def status_line(
    source: Order, status: OrderStatus, filled: int = 0, reason: str = ""
) -> OrderStatusReport:
    return OrderStatusReport(
        client_order_id=source.client_order_id,
        broker_order_id=f"B-{source.client_order_id}",
        instrument=source.instrument,
        status=status,
        quantity=source.quantity,
        filled_quantity=filled,
        reason=reason,
        ts_event=NOW,
    )


def fill(source: Order, trade_id: str, quantity: int, ts: int = NOW) -> FillReport:
    return FillReport(
        trade_id=trade_id,
        client_order_id=source.client_order_id,
        broker_order_id=f"B-{source.client_order_id}",
        instrument=source.instrument,
        side=source.side,
        quantity=quantity,
        price=Decimal("100"),
        ts_event=ts,
    )


def position(instrument: str, quantity: int) -> PositionReport:
    return PositionReport(
        instrument=instrument, quantity=quantity, average_price=Decimal("100"), ts_event=NOW
    )


def run(books: LocalBooks, facts: BrokerFacts, *, in_flight_only: bool = False) -> Reconciliation:
    return reconcile(
        books, facts, now_ns=NOW, in_flight_settle_ns=SETTLE, in_flight_only=in_flight_only
    )


def apply(books: LocalBooks, actions: tuple[ReconcileAction, ...]) -> LocalBooks:
    """Apply the actions the way the order actor does (settling = the order ends locally)."""
    orders = {key: msgspec.structs.replace(value) for key, value in books.orders.items()}
    trade_ids = set(books.trade_ids)
    positions = dict(books.positions)
    for action in actions:
        if isinstance(action, ApplyFill):
            target = orders[action.fill.client_order_id]
            apply_fill(target, action.fill, NOW)
            trade_ids.add(action.fill.trade_id)
            instrument = action.fill.instrument
            positions[instrument] = positions.get(instrument, 0) + signed_quantity(
                action.fill.side, action.fill.quantity
            )
        elif isinstance(action, ApplyStatus):
            apply_status_report(orders[action.report.client_order_id], action.report, NOW)
        elif isinstance(action, SettleInFlight):
            orders[action.client_order_id].status = OrderStatus.CANCELLED
        elif isinstance(action, ResendCancel):
            orders[action.client_order_id].ts_updated = NOW
    return msgspec.structs.replace(
        books, orders=orders, trade_ids=frozenset(trade_ids), positions=positions
    )


class TestLevels:
    """A broker that reports a working order's price or trigger (IG's stop and limit levels on
    a position, Kite's order list) is compared with ours: a level moved behind our back is
    drift; a broker that says nothing (None) is not."""

    def stop(self, trigger: str = "99") -> Order:
        leg = order("P1S", leg=LegKind.STOP, side=Side.SELL)
        leg.trigger_price = Decimal(trigger)
        return leg

    def test_a_stop_moved_at_the_broker_is_drift(self) -> None:
        stop = self.stop("99")
        line = msgspec.structs.replace(
            status_line(stop, OrderStatus.ACCEPTED), trigger_price=Decimal("95")
        )
        outcome = run(LocalBooks(orders={"P1S": stop}), BrokerFacts(orders=[line]))
        [drift] = outcome.drift
        assert drift.key == "order:P1S:level" and drift.kind is DriftKind.ORDERS
        assert "trigger ours 99, the broker's 95" in drift.sentence
        assert outcome.actions == ()

    def test_the_same_level_written_differently_or_not_reported_is_not_drift(self) -> None:
        stop = self.stop("99")
        for trigger in (Decimal("99.00"), None):
            line = msgspec.structs.replace(
                status_line(stop, OrderStatus.ACCEPTED), trigger_price=trigger
            )
            outcome = run(LocalBooks(orders={"P1S": stop}), BrokerFacts(orders=[line]))
            assert outcome.drift == (), trigger

    def test_a_target_price_moved_is_drift_and_a_finished_order_is_not_compared(self) -> None:
        target = order("P1T", leg=LegKind.TARGET, side=Side.SELL)
        target.order_type, target.price = OrderType.LIMIT, Decimal("110")
        moved = msgspec.structs.replace(
            status_line(target, OrderStatus.ACCEPTED), price=Decimal("112")
        )
        outcome = run(LocalBooks(orders={"P1T": target}), BrokerFacts(orders=[moved]))
        assert [d.key for d in outcome.drift] == ["order:P1T:level"]
        cancelled = msgspec.structs.replace(
            status_line(target, OrderStatus.CANCELLED), price=Decimal("112")
        )
        outcome = run(LocalBooks(orders={"P1T": target}), BrokerFacts(orders=[cancelled]))
        assert [d.key for d in outcome.drift] == []

    def test_a_light_run_sees_it_too(self) -> None:
        stop = self.stop("99")
        line = msgspec.structs.replace(
            status_line(stop, OrderStatus.ACCEPTED), trigger_price=Decimal("98")
        )
        facts = BrokerFacts(orders=[line], fills=[], orders_open_only=True)
        outcome = run(LocalBooks(orders={"P1S": stop}), facts)
        assert [d.key for d in outcome.drift] == ["order:P1S:level"]


class TestOrders:
    def test_a_missed_fill_of_a_known_order_is_applied(self) -> None:
        entry = order(status=OrderStatus.ACCEPTED)
        facts = BrokerFacts(
            orders=[status_line(entry, OrderStatus.FILLED, 10)], fills=[fill(entry, "T1", 10)]
        )
        outcome = run(LocalBooks(orders={entry.client_order_id: entry}), facts)
        # The fill completes the order, so the FILLED line has nothing left to say.
        assert outcome.actions == (ApplyFill(fill=fill(entry, "T1", 10)),)
        assert not outcome.drift

    def test_an_accepted_stop_the_broker_cancelled_is_settled(self) -> None:
        stop = order("P1S1", leg=LegKind.STOP, side=Side.SELL)
        facts = BrokerFacts(orders=[status_line(stop, OrderStatus.CANCELLED)], fills=[])
        outcome = run(LocalBooks(orders={stop.client_order_id: stop}), facts)
        assert outcome.actions == (ApplyStatus(report=status_line(stop, OrderStatus.CANCELLED)),)

    def test_an_order_in_flight_the_broker_does_not_know_is_settled_after_the_threshold(
        self,
    ) -> None:
        young = order("P1E", status=OrderStatus.SUBMITTED, ts_updated=NOW - SECOND)
        old = order("P2E", status=OrderStatus.SUBMITTED, ts_updated=NOW - 4 * SECOND)
        books = LocalBooks(orders={"P1E": young, "P2E": old})
        outcome = run(books, BrokerFacts(orders=[], fills=[]), in_flight_only=True)
        assert outcome.actions == (
            SettleInFlight(client_order_id="P2E", status=OrderStatus.SUBMITTED, age_ns=4 * SECOND),
        )

    def test_a_resend_restarts_the_settle_wait(self) -> None:
        entry = order(status=OrderStatus.SUBMITTED, ts_updated=NOW - 10 * SECOND)
        books = LocalBooks(orders={"P1E": entry}, last_request_ns={"P1E": NOW - SECOND})
        assert not run(books, BrokerFacts(orders=[], fills=[])).actions

    def test_an_order_the_broker_refused_as_duplicate_but_does_not_list_is_drift(self) -> None:
        entry = order(status=OrderStatus.SUBMITTED)
        books = LocalBooks(orders={"P1E": entry}, broker_has=frozenset({"P1E"}))
        outcome = run(books, BrokerFacts(orders=[], fills=[]))
        assert not outcome.actions  # never a reason to resend again
        [drift] = outcome.drift
        assert "duplicate" in drift.sentence and drift.kind is DriftKind.ORDERS

    def test_a_cancel_still_working_at_the_broker_is_sent_again(self) -> None:
        target = order(
            "P1T1", leg=LegKind.TARGET, side=Side.SELL, status=OrderStatus.PENDING_CANCEL
        )
        facts = BrokerFacts(orders=[status_line(target, OrderStatus.ACCEPTED)], fills=[])
        outcome = run(LocalBooks(orders={"P1T1": target}), facts)
        assert outcome.actions == (
            ResendCancel(client_order_id="P1T1", broker_status=OrderStatus.ACCEPTED),
        )

    def test_a_working_broker_order_we_do_not_know_is_reported_and_drift(self) -> None:
        stranger = order("MANUAL-1")
        facts = BrokerFacts(orders=[status_line(stranger, OrderStatus.ACCEPTED)], fills=[])
        outcome = run(LocalBooks(orders={}), facts)
        assert outcome.unknown_broker_orders == ("MANUAL-1",)
        assert [d.key for d in outcome.drift] == ["order:MANUAL-1:unknown"]
        assert not outcome.actions

    def test_a_finished_order_of_ours_is_not_unknown(self) -> None:
        done = order("P9E")
        facts = BrokerFacts(orders=[status_line(done, OrderStatus.FILLED, 10)], fills=[])
        books = LocalBooks(orders={}, finished_order_ids=frozenset({"P9E"}))
        outcome = run(books, facts)
        assert not outcome.unknown_broker_orders and not outcome.drift

    def test_our_working_order_missing_at_the_broker_is_drift(self) -> None:
        stop = order("P1S1", leg=LegKind.STOP, side=Side.SELL)
        outcome = run(LocalBooks(orders={"P1S1": stop}), BrokerFacts(orders=[], fills=[]))
        assert outcome.missing_at_broker == ("P1S1",)
        assert [d.key for d in outcome.drift] == ["order:P1S1:missing"]

    def test_an_earlier_days_order_that_filled_today_is_neither_missing_nor_resent(
        self,
    ) -> None:
        # Its fill is in today's list, the order itself (received yesterday) is not.
        stop = order("P1S1", leg=LegKind.STOP, side=Side.SELL, status=OrderStatus.ACCEPTED)
        entry = order("P2E", status=OrderStatus.SUBMITTED, quantity=10)
        facts = BrokerFacts(orders=[], fills=[fill(stop, "T1", 10), fill(entry, "T2", 4)])
        outcome = run(LocalBooks(orders={"P1S1": stop, "P2E": entry}), facts)
        assert [type(a) for a in outcome.actions] == [ApplyFill, ApplyFill]
        assert not outcome.drift and not outcome.missing_at_broker

    def test_a_filled_quantity_without_its_fills_is_drift(self) -> None:
        entry = order()
        facts = BrokerFacts(orders=[status_line(entry, OrderStatus.FILLED, 10)], fills=[])
        outcome = run(LocalBooks(orders={"P1E": entry}), facts)
        assert [d.key for d in outcome.drift] == ["order:P1E:fill_gap"]

    def test_the_in_flight_loop_says_nothing_about_orders_not_in_flight(self) -> None:
        stop = order("P1S1", leg=LegKind.STOP, side=Side.SELL)
        stranger = order("MANUAL-1")
        facts = BrokerFacts(orders=[status_line(stranger, OrderStatus.ACCEPTED)], fills=[])
        outcome = run(LocalBooks(orders={"P1S1": stop}), facts, in_flight_only=True)
        assert not outcome.drift and not outcome.unknown_broker_orders
        assert DriftKind.ORDERS not in outcome.kinds_checked


class TestPositions:
    def test_a_broker_position_with_no_bracket_of_ours_is_unprotected_drift(self) -> None:
        outcome = run(LocalBooks(orders={}), BrokerFacts(positions=[position("BBB", 20)]))
        [drift] = outcome.drift
        assert drift.unprotected and drift.instrument == "BBB"
        assert "not traded against" in drift.sentence
        [view] = outcome.instruments
        assert (view.local_quantity, view.broker_quantity, view.difference) == (0, 20, 20)

    def test_the_difference_names_our_in_flight_order_that_would_explain_it(self) -> None:
        entry = order(status=OrderStatus.SUBMITTED)
        outcome = run(
            LocalBooks(orders={"P1E": entry}), BrokerFacts(positions=[position("AAA", 10)])
        )
        [drift] = outcome.drift
        assert "P1E" in drift.sentence

    def test_equal_positions_are_clean(self) -> None:
        books = LocalBooks(orders={}, positions={"AAA": -5})
        outcome = run(books, BrokerFacts(orders=[], fills=[], positions=[position("AAA", -5)]))
        assert not outcome.drift and not outcome.actions
        assert outcome.kinds_checked == frozenset({DriftKind.ORDERS, DriftKind.POSITIONS})


# ---------------------------------------------------------------------------- properties
@st.composite
def consistent_world(draw: st.DrawFn) -> tuple[LocalBooks, BrokerFacts]:
    """Our orders, some of their fills booked, the broker's full fill list, and positions that
    are the sum of the broker's fills (plus exposure we hold that is already booked)."""
    orders: dict[str, Order] = {}
    fills: list[FillReport] = []
    booked: set[str] = set()
    local: dict[str, int] = {}
    broker: dict[str, int] = {}
    count = draw(st.integers(min_value=0, max_value=5))
    for index in range(count):
        instrument = draw(st.sampled_from(INSTRUMENTS))
        side = draw(st.sampled_from((Side.BUY, Side.SELL)))
        quantity = draw(st.integers(min_value=1, max_value=20))
        source = order(f"P{index}E", instrument=instrument, side=side, quantity=quantity)
        parts = draw(st.lists(st.integers(min_value=1, max_value=5), max_size=3))
        filled = 0
        for number, part in enumerate(parts):
            if filled + part > quantity:
                break
            filled += part
            trade = fill(source, f"T{index}-{number}", part, ts=NOW - 5 * SECOND + number)
            fills.append(trade)
            delta = signed_quantity(side, part)
            broker[instrument] = broker.get(instrument, 0) + delta
            if draw(st.booleans()):  # we got this one's report
                apply_fill(source, trade, NOW - SECOND)
                booked.add(trade.trade_id)
                local[instrument] = local.get(instrument, 0) + delta
        orders[source.client_order_id] = source
    books = LocalBooks(orders=orders, trade_ids=frozenset(booked), positions=local)
    reported = [
        status_line(
            o,
            OrderStatus.FILLED
            if o.quantity
            == sum(f.quantity for f in fills if f.client_order_id == o.client_order_id)
            else OrderStatus.ACCEPTED,
            sum(f.quantity for f in fills if f.client_order_id == o.client_order_id),
        )
        for o in orders.values()
    ]
    facts = BrokerFacts(
        orders=reported,
        fills=draw(st.permutations(fills)),
        positions=[position(i, q) for i, q in broker.items() if q != 0],
    )
    return books, facts


@settings(max_examples=200, deadline=None)
@given(consistent_world())
def test_applying_the_actions_makes_our_positions_equal_the_brokers(
    world: tuple[LocalBooks, BrokerFacts],
) -> None:
    books, facts = world
    outcome = run(books, facts)
    assert not [d for d in outcome.drift if d.kind is DriftKind.POSITIONS]
    after = apply(books, outcome.actions)
    assert facts.positions is not None
    broker = {p.instrument: p.quantity for p in facts.positions}
    ours = {i: q for i, q in after.positions.items() if q != 0}
    assert ours == broker


@settings(max_examples=200, deadline=None)
@given(consistent_world())
def test_a_second_run_after_the_actions_proposes_nothing_new(
    world: tuple[LocalBooks, BrokerFacts],
) -> None:
    books, facts = world
    first = run(books, facts)
    second = run(apply(books, first.actions), facts)
    assert not second.actions
    assert {d.key for d in second.drift} <= {d.key for d in first.drift}


@settings(max_examples=200, deadline=None)
@given(
    consistent_world(),
    st.sampled_from(INSTRUMENTS),
    st.integers(min_value=-50, max_value=50).filter(lambda q: q != 0),
)
def test_exposure_we_do_not_hold_is_always_drift(
    world: tuple[LocalBooks, BrokerFacts], instrument: str, extra: int
) -> None:
    books, facts = world
    assert facts.positions is not None
    broker = {p.instrument: p.quantity for p in facts.positions}
    broker[instrument] = broker.get(instrument, 0) + extra
    skewed = msgspec.structs.replace(
        facts, positions=[position(i, q) for i, q in broker.items() if q != 0]
    )
    outcome = run(books, skewed)
    [drift] = [d for d in outcome.drift if d.kind is DriftKind.POSITIONS]
    assert drift.instrument == instrument
    if not any(o.instrument == instrument for o in books.orders.values()):
        assert drift.unprotected


# ---------------------------------------------------------------------------- light runs
def light(
    books: LocalBooks,
    orders: list[OrderStatusReport],
    fills: list[FillReport],
    *,
    in_flight_only: bool = False,
    positions: list[PositionReport] | None = None,
) -> Reconciliation:
    facts = BrokerFacts(orders=orders, fills=fills, positions=positions, orders_open_only=True)
    return run(books, facts, in_flight_only=in_flight_only)


class TestLightRuns:
    """A light run has only the broker's open orders and its recent fills: an order's absence
    is never evidence, it asks for the whole lists instead."""

    def test_an_order_filled_at_the_broker_whose_fill_is_older_than_the_window_needs_the_full_lists(
        self,
    ) -> None:
        entry = order()
        outcome = light(LocalBooks(orders={"P1E": entry}), orders=[], fills=[])
        assert not outcome.actions and not outcome.drift and not outcome.missing_at_broker
        [reason] = outcome.needs_full
        assert "P1E" in reason and "open orders" in reason
        assert outcome.kinds_checked == frozenset()

    def test_an_order_in_flight_missing_from_the_open_orders_is_never_settled(self) -> None:
        old = order("P2E", status=OrderStatus.SUBMITTED, ts_updated=NOW - 4 * SECOND)
        cancel = order("P3S1", leg=LegKind.STOP, status=OrderStatus.PENDING_CANCEL)
        books = LocalBooks(orders={"P2E": old, "P3S1": cancel})
        for in_flight_only in (True, False):
            outcome = light(books, orders=[], fills=[], in_flight_only=in_flight_only)
            assert not outcome.actions and not outcome.drift
            assert len(outcome.needs_full) == 2

    def test_an_order_in_transit_needs_nothing(self) -> None:
        young = order("P1E", status=OrderStatus.SUBMITTED, ts_updated=NOW - SECOND)
        unsent = order("P2E", status=OrderStatus.PENDING_SUBMIT)
        outcome = light(LocalBooks(orders={"P1E": young, "P2E": unsent}), orders=[], fills=[])
        assert not outcome.actions and not outcome.drift and not outcome.needs_full

    def test_a_recent_fill_settles_an_order_gone_from_the_open_orders(self) -> None:
        entry = order()
        outcome = light(LocalBooks(orders={"P1E": entry}), orders=[], fills=[fill(entry, "T1", 10)])
        assert outcome.actions == (ApplyFill(fill=fill(entry, "T1", 10)),)
        assert not outcome.needs_full and not outcome.drift

    def test_a_fill_gap_needs_the_full_lists_rather_than_being_drift(self) -> None:
        entry = order(quantity=20)
        working = status_line(entry, OrderStatus.PARTIALLY_FILLED, 10)
        outcome = light(LocalBooks(orders={"P1E": entry}), orders=[working], fills=[])
        assert not outcome.drift and len(outcome.needs_full) == 1

    def test_a_fill_of_an_order_nobody_knows_needs_the_full_lists_once(self) -> None:
        stranger = order("MANUAL-1")
        outcome = light(LocalBooks(orders={}), orders=[], fills=[fill(stranger, "T9", 10)])
        assert outcome.needs_full and not outcome.actions
        reported = LocalBooks(orders={}, reported_unknown=frozenset({"MANUAL-1"}))
        assert not light(reported, orders=[], fills=[fill(stranger, "T9", 10)]).needs_full

    def test_a_working_order_nobody_knows_is_drift_in_a_light_run_too(self) -> None:
        stranger = order("MANUAL-1")
        outcome = light(LocalBooks(orders={}), [status_line(stranger, OrderStatus.ACCEPTED)], [])
        assert [d.key for d in outcome.drift] == ["order:MANUAL-1:unknown"]


@st.composite
def light_world(draw: st.DrawFn) -> tuple[LocalBooks, BrokerFacts, BrokerFacts]:
    """A consistent world, some orders of ours in flight (young or old, known to the broker or
    not), and the light facts of it: the broker's working orders, its fills from a cut."""
    books, full = draw(consistent_world())
    assert full.orders is not None and full.fills is not None
    orders = dict(books.orders)
    reports = list(full.orders)
    for index in range(draw(st.integers(min_value=0, max_value=3))):
        status = draw(st.sampled_from((OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL)))
        age = draw(st.sampled_from((SECOND, 10 * SECOND)))
        flying = order(f"F{index}E", status=status, ts_updated=NOW - age)
        orders[flying.client_order_id] = flying
        broker_status = draw(st.sampled_from((None, OrderStatus.ACCEPTED, OrderStatus.CANCELLED)))
        if broker_status is not None:
            reports.append(status_line(flying, broker_status))
    books = msgspec.structs.replace(books, orders=orders)
    full = msgspec.structs.replace(full, orders=reports)
    times = sorted({f.ts_event for f in full.fills})
    cut = draw(st.sampled_from([*times, NOW])) if times else NOW
    light_facts = BrokerFacts(
        orders=[r for r in reports if r.status.is_working],
        fills=[f for f in full.fills if f.ts_event >= cut],
        positions=full.positions,
        orders_open_only=True,
    )
    return books, full, light_facts


@settings(max_examples=300, deadline=None)
@given(light_world(), st.booleans())
def test_a_light_run_never_settles_on_absence_and_when_clean_misses_nothing(
    world: tuple[LocalBooks, BrokerFacts, BrokerFacts], in_flight_only: bool
) -> None:
    books, full_facts, light_facts = world
    light_outcome = run(books, light_facts, in_flight_only=in_flight_only)
    assert not [a for a in light_outcome.actions if isinstance(a, SettleInFlight)]
    assert not light_outcome.missing_at_broker and light_outcome.kinds_checked == frozenset()
    if light_outcome.needs_full or light_outcome.drift or in_flight_only:
        # The caller asks for the whole lists; the in-flight loop looks only at orders in
        # flight (the open-orders loop, seconds later, at the rest).
        return
    full_outcome = run(books, full_facts, in_flight_only=in_flight_only)
    assert not full_outcome.drift
    assert not [a for a in full_outcome.actions if isinstance(a, SettleInFlight)]
    in_transit = {
        order_id
        for order_id, o in books.orders.items()
        if o.status in (OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL)
        and NOW - o.ts_updated < SETTLE
    }
    # What the full lists would add concerns only orders still in transit (their reports
    # are on the way), never something the light run should have seen.
    extra = [a for a in full_outcome.actions if a not in light_outcome.actions]
    assert all(
        isinstance(a, ApplyStatus) and a.report.client_order_id in in_transit for a in extra
    ), extra
    assert all(a in full_outcome.actions for a in light_outcome.actions)
