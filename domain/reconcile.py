"""Reconciliation: our books checked against the broker's orders, fills and positions.

A pure function of two sets of facts. ``reconcile`` takes our local books (the orders of our
active brackets, the trade ids we have booked, our net position per instrument) and whatever
the broker was asked for (its order list, its fill list, its net positions; ``None`` for a list
not fetched in this run) and returns:

- **actions** that bring our books to the broker's where the broker's facts explain the
  difference: a fill we missed (``ApplyFill``), a status we missed (``ApplyStatus``: e.g. our
  ACCEPTED stop is CANCELLED there), an order in flight the broker does not know after the
  settle threshold (``SettleInFlight``: the caller resends it under the same id or drops it),
  a cancel still working there after the threshold (``ResendCancel``);
- a **report**: per instrument our quantity, the broker's and the difference; broker orders we
  do not know; our working orders the broker does not list; and **drift**, one sentence per
  difference no action can explain (a broker position no bracket of ours holds, a quantity
  that still differs after every known fill, a fill the broker's list lacks, an order the
  broker refused as a duplicate yet does not list, a working order whose price or stop
  trigger the broker reports differently: IG's stop and limit levels on a position).

The rules follow the three loops of a live execution engine (as in NautilusTrader's): an
in-flight check (only orders in flight past the threshold), an open-orders check (every working
order against the broker's list) and a positions check (net quantities). The caller decides
which lists to fetch; this module only compares.

Light and full facts. A **full** comparison has the broker's whole session order list and fill
list: an order of ours it does not list never reached the broker (or is drift). A **light** one
(``BrokerFacts.orders_open_only``) has only the broker's working orders and its fills since a
time: what it cannot see is not evidence. A working or in-flight order of ours missing from an
open-orders list may have filled or been cancelled there, so a light comparison never settles,
resends or reports drift on that absence; it names it in ``Reconciliation.needs_full`` (as it
does a fill gap its recent fills do not explain, and a fill of an order it does not know), and
the caller asks for the whole lists. Its ``kinds_checked`` is empty: a light run cannot say
that a standing difference went away. Its actions (fills and statuses the broker listed) are
the broker's facts and as good as a full run's.

Properties (tests/unit/test_reconcile_rules.py): when the broker's facts are consistent
(positions equal the sum of its fills), applying the actions makes our net quantities equal
the broker's; a broker position our books do not hold is always drift; and a second run over
the books after the actions proposes nothing new.

No I/O, no clock: time comes in as ``now_ns``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec

from domain.enums import OrderStatus, Side
from domain.messages.api import InstrumentReconcileView
from domain.orders import Overfill, apply_fill, apply_status_report, fill_gap

if TYPE_CHECKING:
    from domain.messages.orders import FillReport, OrderStatusReport, PositionReport
    from domain.orders import Order

__all__ = [
    "IN_FLIGHT",
    "ApplyFill",
    "ApplyStatus",
    "BrokerFacts",
    "Drift",
    "DriftKind",
    "LocalBooks",
    "ReconcileAction",
    "Reconciliation",
    "ResendCancel",
    "SettleInFlight",
    "describe_action",
    "reconcile",
    "signed_quantity",
]

# Sent to the broker, outcome not yet known: the broker's order list settles these.
IN_FLIGHT = frozenset({OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL})


class DriftKind(StrEnum):
    ORDERS = "ORDERS"  # found by comparing orders and fills
    POSITIONS = "POSITIONS"  # found by comparing net positions


class LocalBooks(msgspec.Struct, frozen=True, kw_only=True):
    """Our side of the comparison.

    Attributes:
        orders: the orders of our active brackets (working and recently finished), by id.
        finished_order_ids: ids of orders we stored for brackets already finished (a broker
            line for one of these is ours, not unknown).
        trade_ids: every broker trade id we have booked (read, never copied or changed: the
            caller's set, which grows all session, is passed as it is).
        positions: our net signed quantity per instrument, from our active brackets.
        broker_has: ids the broker refused as ``DUPLICATE_CLIENT_ORDER_ID``: it holds them.
        last_request_ns: when we last sent each order (a resend restarts the settle wait).
        reported_unknown: broker order ids already reported as not ours (logged, their
            exposure left to the positions check): a light run need not ask for the whole
            lists again when it meets their fills.
    """

    orders: Mapping[str, Order]
    finished_order_ids: frozenset[str] = frozenset()
    trade_ids: AbstractSet[str] = frozenset()
    positions: Mapping[str, int] = msgspec.field(default_factory=dict)
    broker_has: frozenset[str] = frozenset()
    last_request_ns: Mapping[str, int] = msgspec.field(default_factory=dict)
    reported_unknown: AbstractSet[str] = frozenset()


class BrokerFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker said in this run; ``None`` means that list was not asked for.

    Attributes:
        orders: its orders: the whole session's, or with ``orders_open_only`` only the
            working ones.
        fills: its fills: the whole session's, or those since a time (a light run).
        positions: its net positions.
        orders_open_only: ``orders`` leaves out finished orders, so an order missing from it
            proves nothing (a light run: see the module docstring).
    """

    orders: Sequence[OrderStatusReport] | None = None
    fills: Sequence[FillReport] | None = None
    positions: Sequence[PositionReport] | None = None
    orders_open_only: bool = False


class ApplyFill(msgspec.Struct, frozen=True, kw_only=True):
    """Book a fill the broker lists for a known order that we have not booked."""

    fill: FillReport


class ApplyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Merge the broker's status of a known order into ours (it changes something)."""

    report: OrderStatusReport


class SettleInFlight(msgspec.Struct, frozen=True, kw_only=True):
    """Our order in flight past the threshold that the broker does not know: it never got
    there. A pending cancel ends locally; a submit is resent under the same id or dropped."""

    client_order_id: str
    status: OrderStatus
    age_ns: int


class ResendCancel(msgspec.Struct, frozen=True, kw_only=True):
    """Our cancel is pending past the threshold and the order still works at the broker."""

    client_order_id: str
    broker_status: OrderStatus


ReconcileAction = ApplyFill | ApplyStatus | SettleInFlight | ResendCancel


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """A difference no action explains. ``key`` identifies it across runs; ``unprotected``
    marks broker exposure that no stop of ours covers."""

    key: str
    kind: DriftKind
    sentence: str
    instrument: str | None = None
    unprotected: bool = False


class Reconciliation(msgspec.Struct, frozen=True, kw_only=True):
    actions: tuple[ReconcileAction, ...]
    instruments: tuple[InstrumentReconcileView, ...]  # empty unless positions were compared
    unknown_broker_orders: tuple[str, ...]
    missing_at_broker: tuple[str, ...]
    drift: tuple[Drift, ...]
    # The kinds of drift this run could see: a run that did not compare positions cannot say
    # that a position difference went away.
    kinds_checked: frozenset[DriftKind]
    # A light run: what it could not settle from open orders and recent fills alone (one
    # sentence each); the caller asks for the whole lists. Always empty for a full run.
    needs_full: tuple[str, ...] = ()


def signed_quantity(side: Side, quantity: int) -> int:
    return quantity if side is Side.BUY else -quantity


def reconcile(
    books: LocalBooks,
    facts: BrokerFacts,
    *,
    now_ns: int,
    in_flight_settle_ns: int,
    in_flight_only: bool = False,
) -> Reconciliation:
    """Compare our books with the broker's facts and say what to do and what is unexplained.

    Args:
        books: our side; not mutated.
        facts: the broker's lists fetched for this run (``None``: not fetched).
        now_ns: epoch nanoseconds of the run.
        in_flight_settle_ns: how long an order may be in flight (or a cancel pending) before
            the broker's order list is taken as the answer.
        in_flight_only: the in-flight loop: only orders in flight past the threshold are
            compared (fills are still applied to any known order); nothing is said about
            other orders or unknown broker orders.

    Returns:
        The actions (fills first, in execution order, then statuses, then settlements) and the
        report. Applying the actions and running again proposes nothing new. With
        ``facts.orders_open_only`` (a light run) no ``SettleInFlight`` and no drift comes from
        an order's absence, ``kinds_checked`` is empty and ``needs_full`` says what only the
        whole lists can settle.
    """
    projected = {
        order_id: msgspec.structs.replace(order) for order_id, order in books.orders.items()
    }
    actions: list[ReconcileAction] = []
    drift: list[Drift] = []
    fill_deltas: dict[str, int] = {}
    kinds: set[DriftKind] = set()
    light = facts.orders_open_only
    needs_full: list[str] = []

    if facts.fills is not None:
        _compare_fills(
            books,
            facts.fills,
            projected,
            now_ns,
            actions,
            drift,
            fill_deltas,
            needs_full if light else None,
        )

    unknown: list[str] = []
    missing: list[str] = []
    if facts.orders is not None:
        if not in_flight_only and not light:
            kinds.add(DriftKind.ORDERS)
        _compare_orders(
            books,
            facts,
            projected,
            now_ns=now_ns,
            in_flight_settle_ns=in_flight_settle_ns,
            in_flight_only=in_flight_only,
            actions=actions,
            drift=drift,
            unknown=unknown,
            missing=missing,
            needs_full=needs_full,
        )

    instruments: list[InstrumentReconcileView] = []
    if facts.positions is not None and not in_flight_only:
        if not light:
            kinds.add(DriftKind.POSITIONS)
        instruments = _compare_positions(books, facts.positions, projected, fill_deltas, drift)

    return Reconciliation(
        actions=tuple(actions),
        instruments=tuple(instruments),
        unknown_broker_orders=tuple(unknown),
        missing_at_broker=tuple(missing),
        drift=tuple(drift),
        kinds_checked=frozenset(kinds),
        needs_full=tuple(needs_full),
    )


def describe_action(action: ReconcileAction) -> str:
    """One sentence for the report and the log."""
    if isinstance(action, ApplyFill):
        fill = action.fill
        return (
            f"applied missed fill {fill.trade_id} to {fill.client_order_id}: "
            f"{fill.side.value} {fill.quantity} {fill.instrument} @ {fill.price}"
        )
    if isinstance(action, ApplyStatus):
        report = action.report
        detail = f" ({report.reason})" if report.reason else ""
        return (
            f"applied broker status {report.status.value} to {report.client_order_id} "
            f"(filled {report.filled_quantity}/{report.quantity}){detail}"
        )
    if isinstance(action, SettleInFlight):
        return (
            f"settled {action.client_order_id} ({action.status.value} for "
            f"{action.age_ns / 1e9:.1f} s): the broker does not know it"
        )
    return (
        f"resent the cancel of {action.client_order_id}: still {action.broker_status.value} "
        "at the broker"
    )


# ---------------------------------------------------------------------------------- internals
def _compare_fills(
    books: LocalBooks,
    fills: Sequence[FillReport],
    projected: dict[str, Order],
    now_ns: int,
    actions: list[ReconcileAction],
    drift: list[Drift],
    fill_deltas: dict[str, int],
    needs_full: list[str] | None,
) -> None:
    seen: set[str] = set()
    # Execution order: a partial fill before the next, so averages and overfill checks match
    # what the stream would have delivered. ``sorted`` is stable for equal timestamps.
    for fill in sorted(fills, key=lambda f: f.ts_event):
        if fill.trade_id in books.trade_ids or fill.trade_id in seen:
            continue
        seen.add(fill.trade_id)
        order = projected.get(fill.client_order_id)
        if order is None:
            if fill.client_order_id in books.finished_order_ids:
                # Ours, for a bracket already over: the caller books it (and halts on the
                # exposure nothing protects); it is not ours to project here.
                actions.append(ApplyFill(fill=fill))
            elif needs_full is not None and fill.client_order_id not in books.reported_unknown:
                # A light run does not list the finished order this fill belongs to: the
                # whole order list says whose it is (and reports it if it is nobody's).
                needs_full.append(
                    f"fill {fill.trade_id} of {fill.client_order_id}, an order that is neither "
                    "ours in memory nor among the broker's open orders"
                )
            # A fill of an order we do not know shows up as a position difference.
            continue
        try:
            apply_fill(order, fill, now_ns)
        except (Overfill, ValueError) as error:
            drift.append(
                Drift(
                    key=f"fill:{fill.trade_id}",
                    kind=DriftKind.ORDERS,
                    instrument=fill.instrument,
                    sentence=f"fill {fill.trade_id} does not fit our order: {error}",
                )
            )
            continue
        actions.append(ApplyFill(fill=fill))
        fill_deltas[fill.instrument] = fill_deltas.get(fill.instrument, 0) + signed_quantity(
            fill.side, fill.quantity
        )


def _compare_orders(
    books: LocalBooks,
    facts: BrokerFacts,
    projected: dict[str, Order],
    *,
    now_ns: int,
    in_flight_settle_ns: int,
    in_flight_only: bool,
    actions: list[ReconcileAction],
    drift: list[Drift],
    unknown: list[str],
    missing: list[str],
    needs_full: list[str],
) -> None:
    assert facts.orders is not None
    light = facts.orders_open_only
    reports: dict[str, OrderStatusReport] = {}
    for report in facts.orders:
        reports[report.client_order_id] = report  # the latest line for an id wins

    def age(order: Order) -> int:
        sent = books.last_request_ns.get(order.client_order_id, order.ts_updated)
        return now_ns - max(order.ts_updated, sent)

    def in_scope(order: Order) -> bool:
        original = books.orders[order.client_order_id]
        return not in_flight_only or (
            original.status in IN_FLIGHT and age(original) >= in_flight_settle_ns
        )

    for order_id, report in reports.items():
        order = projected.get(order_id)
        if order is None:
            if in_flight_only:
                continue
            if order_id in books.finished_order_ids:
                if report.status.is_working:
                    drift.append(
                        Drift(
                            key=f"order:{order_id}:finished",
                            kind=DriftKind.ORDERS,
                            instrument=report.instrument,
                            sentence=(
                                f"{order_id} is finished in our books but "
                                f"{report.status.value} at the broker"
                            ),
                        )
                    )
                continue
            unknown.append(order_id)
            if report.status.is_working:
                drift.append(
                    Drift(
                        key=f"order:{order_id}:unknown",
                        kind=DriftKind.ORDERS,
                        instrument=report.instrument,
                        sentence=(
                            f"the broker has {order_id} ({report.instrument}, "
                            f"{report.status.value}, {report.filled_quantity}/{report.quantity} "
                            "filled), an order we did not place; not touched, an operator decides"
                        ),
                    )
                )
            continue
        if not in_scope(order):
            continue
        original_status = order.status
        trial = msgspec.structs.replace(order)
        if apply_status_report(trial, report, now_ns):
            actions.append(ApplyStatus(report=report))
            projected[order_id] = trial
            order = trial
        if (
            original_status is OrderStatus.PENDING_CANCEL
            and report.status.is_working
            and age(books.orders[order_id]) >= in_flight_settle_ns
        ):
            actions.append(ResendCancel(client_order_id=order_id, broker_status=report.status))
        level_drift = _level_drift(order, report)
        if level_drift is not None:
            drift.append(level_drift)
        gap = fill_gap(order, report)
        if gap > 0 and facts.fills is not None and light:
            # Its missing fills may predate the recent fills a light run was given.
            needs_full.append(
                f"the broker reports {report.filled_quantity} of {order_id} filled, we booked "
                f"{order.filled_quantity} and its recent fills do not explain the rest"
            )
        elif gap > 0 and facts.fills is not None:
            drift.append(
                Drift(
                    key=f"order:{order_id}:fill_gap",
                    kind=DriftKind.ORDERS,
                    instrument=order.instrument,
                    sentence=(
                        f"the broker reports {report.filled_quantity} of {order_id} filled, we "
                        f"booked {order.filled_quantity}: fills for {gap} are missing from its "
                        "fill list"
                    ),
                )
            )

    for order_id, order in books.orders.items():
        now_order = projected[order_id]
        if order_id in reports or not now_order.status.is_working:
            continue
        if light:
            _absent_from_open_orders(
                order,
                age(order),
                in_flight_settle_ns=in_flight_settle_ns,
                in_flight_only=in_flight_only,
                needs_full=needs_full,
            )
            continue
        if now_order.filled_quantity > order.filled_quantity:
            # The broker lists fills of it, so it has it, even if its order list (today's
            # orders only, at some brokers) leaves it out.
            continue
        if order.status is OrderStatus.PENDING_SUBMIT:
            continue  # never sent: the leadership hook sends it, nothing to settle
        waited = age(order)
        if order.status in IN_FLIGHT:
            if waited < in_flight_settle_ns:
                continue  # in transit: the broker may not list it yet
            missing.append(order_id)
            if order_id in books.broker_has:
                drift.append(
                    Drift(
                        key=f"order:{order_id}:duplicate_unlisted",
                        kind=DriftKind.ORDERS,
                        instrument=order.instrument,
                        sentence=(
                            f"{order_id} ({order.leg.value} {order.side.value} {order.quantity} "
                            f"{order.instrument}) was refused as a duplicate, so the broker has "
                            "it, but its order list does not show it (an earlier day's order?); "
                            "not resent again"
                        ),
                    )
                )
            else:
                actions.append(
                    SettleInFlight(client_order_id=order_id, status=order.status, age_ns=waited)
                )
            continue
        if in_flight_only:
            continue
        missing.append(order_id)
        drift.append(
            Drift(
                key=f"order:{order_id}:missing",
                kind=DriftKind.ORDERS,
                instrument=order.instrument,
                sentence=(
                    f"our {order.status.value} {order.leg.value} {order_id} ({order.side.value} "
                    f"{order.remaining_quantity} {order.instrument}) is not in the broker's "
                    "order list"
                ),
            )
        )


def _level_drift(order: Order, report: OrderStatusReport) -> Drift | None:
    """Our working order's price or trigger differs from the broker's (moved behind our back,
    e.g. a stop dragged in the broker's own platform): risk is then reckoned from a stop the
    broker does not hold. Drift, so an operator decides which is right."""
    if not (order.status.is_working and report.status.is_working):
        return None
    differences = [
        f"{name} ours {ours}, the broker's {theirs}"
        for name, ours, theirs in (
            ("trigger", order.trigger_price, report.trigger_price),
            ("price", order.price, report.price),
        )
        if ours is not None and theirs is not None and ours != theirs
    ]
    if not differences:
        return None
    return Drift(
        key=f"order:{order.client_order_id}:level",
        kind=DriftKind.ORDERS,
        instrument=order.instrument,
        sentence=(
            f"our {order.leg.value} {order.client_order_id} ({order.side.value} "
            f"{order.remaining_quantity} {order.instrument}) differs at the broker: "
            f"{'; '.join(differences)}"
        ),
    )


def _absent_from_open_orders(
    order: Order,
    waited: int,
    *,
    in_flight_settle_ns: int,
    in_flight_only: bool,
    needs_full: list[str],
) -> None:
    # Our working order is not among the broker's open orders. It may have filled, been
    # cancelled or refused there (an open list leaves those out), or never arrived: only the
    # whole order list tells, so nothing is settled, resent or called drift here.
    if order.status is OrderStatus.PENDING_SUBMIT:
        return  # never sent: the leadership hook sends it, nothing to settle
    in_flight = order.status in IN_FLIGHT
    if in_flight and waited < in_flight_settle_ns:
        return  # in transit: the broker may not list it yet
    if in_flight_only and not in_flight:
        return  # the in-flight loop says nothing about other orders
    needs_full.append(
        f"our {order.status.value} {order.leg.value} {order.client_order_id} "
        f"({order.side.value} {order.remaining_quantity} {order.instrument}) is not among the "
        "broker's open orders"
    )


def _compare_positions(
    books: LocalBooks,
    positions: Sequence[PositionReport],
    projected: Mapping[str, Order],
    fill_deltas: Mapping[str, int],
    drift: list[Drift],
) -> list[InstrumentReconcileView]:
    broker: dict[str, int] = {}
    for position in positions:
        broker[position.instrument] = broker.get(position.instrument, 0) + position.quantity
    local = dict(books.positions)
    for instrument, delta in fill_deltas.items():
        local[instrument] = local.get(instrument, 0) + delta
    views: list[InstrumentReconcileView] = []
    for instrument in sorted(set(broker) | set(local)):
        ours = local.get(instrument, 0)
        theirs = broker.get(instrument, 0)
        difference = theirs - ours
        if ours == 0 and theirs == 0:
            continue
        views.append(
            InstrumentReconcileView(
                instrument=instrument,
                local_quantity=ours,
                broker_quantity=theirs,
                difference=difference,
            )
        )
        if difference == 0:
            continue
        # Exposure beyond ours (or the other way round) is exposure no stop of ours covers.
        unprotected = abs(theirs) > abs(ours) or (ours * theirs < 0)
        if ours == 0:
            sentence = (
                f"{instrument}: the broker holds {theirs:+d} that no bracket of ours explains; "
                "no stop or target of ours protects it; not traded against, an operator decides"
            )
        else:
            sentence = (
                f"{instrument}: ours {ours:+d}, broker {theirs:+d} (difference {difference:+d}) "
                "after every fill the broker lists"
            )
        hint = _matching_in_flight(projected, instrument, difference)
        if hint is not None:
            sentence += (
                f"; it matches {hint}, which the broker no longer lists (filled on an earlier day?)"
            )
        drift.append(
            Drift(
                key=f"position:{instrument}",
                kind=DriftKind.POSITIONS,
                instrument=instrument,
                sentence=sentence,
                unprotected=unprotected,
            )
        )
    return views


def _matching_in_flight(
    orders: Mapping[str, Order], instrument: str, difference: int
) -> str | None:
    # A hint for the operator, never an action: our order in flight whose unfilled part would
    # explain the difference exactly.
    for order_id, order in orders.items():
        if (
            order.instrument == instrument
            and order.status in IN_FLIGHT
            and signed_quantity(order.side, order.remaining_quantity) == difference
        ):
            return (
                f"our {order.leg.value} {order_id} ({order.side.value} {order.remaining_quantity})"
            )
    return None
