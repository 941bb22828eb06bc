"""Matching rules of the paper venue: pure functions over its books. No I/O, no locks, no clock.

``PaperBroker`` (``broker.py``) owns the lock, the storage and the report sink; this module
decides what a request does to the books and what happens when time passes or a quote arrives.
Every function here takes the current ``VenueBooks`` and returns new ones; the input is never
mutated. ``step`` is the reference pass (it scans every working order); the venue runs the same
per-pass rules (``MatchingPass``) over its indexed live books (``matching.IndexedBooks``),
which must give exactly the same result.

Rules a caller can rely on:

- Latency. An order is received at submit time (status ``SUBMITTED``) and ACCEPTED at
  ``ts_received + latency``. A cancel or a modify takes effect at its request time + latency.
  Nothing happens between passes: ``step`` applies every action due by ``now_ns`` in due order
  (ack before modify before cancel on a tie), then matches. Report ``ts_event`` is the pass time.
- Matching starts at the ack. An order is matched right after its ack against the quote known
  at that moment (for a tick-driven pass: the quote *before* that tick), so a marketable order
  fills at its ack and beats a cancel that falls due later. Then the pass's tick, if any,
  replaces the instrument's quote and every working order gets one matching chance.
  Whichever is due first wins; a cancel of an order that has filled is a no-op.
- MARKET: buy at ask + slippage, sell at bid - slippage. Without a quote (or with that side of
  the book empty, price <= 0) it waits, accepted, until one arrives: a venue before the open.
- LIMIT: buy when ask <= limit, sell when bid >= limit. Marketable in the pass that acked it
  (taker): fills at the touch, never worse than the limit. Resting and touched later (maker):
  fills at the limit price. No slippage on limits.
- STOP (stop-market): sell triggers when bid <= trigger, buy when ask >= trigger. Once
  triggered it stays triggered and fills like a market order (touching side, with slippage),
  so a gap through the trigger fills at the gapped price.
- Quantity: the whole remaining quantity per pass, or at most ``partial_fill_max`` per order
  per pass when that knob is set.
- Fill prices are whole ticks: market/stop fills are rounded to the nearest tick; limit fills
  are rounded towards the order's advantage so they never cross the limit.
- Positions are net per instrument: signed quantity, average price of the open quantity, and
  realized PnL on the reducing part of a fill (a flip reopens at the fill price).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import msgspec

from domain.enums import OrderStatus, OrderType, Side
from domain.instruments import Instrument
from domain.messages import (
    FillReport,
    OrderRequest,
    OrderStatusReport,
    PositionReport,
    Tick,
)

__all__ = [
    "ACK",
    "ACTION_RANK",
    "CANCEL",
    "MODIFY",
    "DueAction",
    "MatchingPass",
    "PassChanges",
    "StepResult",
    "VenueBooks",
    "VenueFill",
    "VenueOrder",
    "VenuePosition",
    "VenueRejection",
    "VenueRules",
    "cancel_requested",
    "due_actions_of",
    "fill_price",
    "format_order_id",
    "format_trade_id",
    "modify_requested",
    "new_order",
    "receive_order",
    "request_cancel",
    "request_modify",
    "step",
    "stop_touched",
    "update_position",
]

AVERAGE_PRICE_QUANTUM = Decimal("0.00000001")
MAX_CLIENT_ORDER_ID_LENGTH = 128
_ZERO = Decimal(0)


class VenueRejection(Exception):
    """The venue refused a request. ``code`` is UPPER_SNAKE, ``detail`` has the figures."""

    def __init__(self, code: str, detail: str, *, client_order_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.client_order_id = client_order_id


class VenueRules(msgspec.Struct, frozen=True, kw_only=True):
    """How the simulated venue behaves.

    Attributes:
        latency_ns: delay between a request and its effect (ack, cancel, modify).
        slippage_ticks: ticks against the taker on MARKET and triggered STOP fills.
        partial_fill_max: cap on one fill's quantity per pass; ``None`` fills in full.
    """

    latency_ns: int = 0
    slippage_ticks: int = 0
    partial_fill_max: int | None = None


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order on the venue's book, as stored in ``venue_orders``."""

    seq: int
    venue_order_id: str
    client_order_id: str
    instrument: str
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    status: OrderStatus = OrderStatus.SUBMITTED
    filled_quantity: int = 0
    average_fill_price: Decimal | None = None
    reason: str = ""
    is_accepted: bool = False
    is_triggered: bool = False
    ts_received: int
    ack_due_ns: int
    cancel_due_ns: int | None = None
    modify_quantity: int | None = None
    modify_due_ns: int | None = None
    submit_count: int = 1
    ts_updated: int

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity

    def status_report(self, ts_event: int) -> OrderStatusReport:
        """Return the order as the port reports it."""
        return OrderStatusReport(
            client_order_id=self.client_order_id,
            broker_order_id=self.venue_order_id,
            instrument=self.instrument,
            status=self.status,
            quantity=self.quantity,
            filled_quantity=self.filled_quantity,
            reason=self.reason,
            ts_event=ts_event,
        )


class VenueFill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution, as stored in ``venue_fills``."""

    seq: int
    trade_id: str
    venue_order_id: str
    client_order_id: str
    instrument: str
    side: Side
    quantity: int
    price: Decimal
    ts_event: int

    def report(self) -> FillReport:
        """Return the fill as the port reports it."""
        return FillReport(
            trade_id=self.trade_id,
            client_order_id=self.client_order_id,
            broker_order_id=self.venue_order_id,
            instrument=self.instrument,
            side=self.side,
            quantity=self.quantity,
            price=self.price,
            ts_event=self.ts_event,
        )


class VenuePosition(msgspec.Struct, frozen=True, kw_only=True):
    """Net position in one instrument, as stored in ``venue_positions``."""

    instrument: str
    quantity: int = 0  # signed: long > 0, short < 0
    average_price: Decimal = _ZERO  # of the open quantity; 0 when flat
    realized_pnl: Decimal = _ZERO
    ts_updated: int = 0

    def report(self, ts_event: int) -> PositionReport:
        """Return the position as the port reports it."""
        return PositionReport(
            instrument=self.instrument,
            quantity=self.quantity,
            average_price=self.average_price,
            ts_event=ts_event,
        )


class VenueBooks(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the venue matches against. Treat the mappings as read-only.

    Attributes:
        working: non-terminal orders by client order id.
        positions: net positions by instrument (flat ones included once they existed).
        quotes: latest quote by instrument.
        next_order_seq: sequence of the next venue order id.
        next_trade_seq: sequence of the next trade id (never reused, also across restarts).
    """

    working: Mapping[str, VenueOrder] = msgspec.field(default_factory=dict)
    positions: Mapping[str, VenuePosition] = msgspec.field(default_factory=dict)
    quotes: Mapping[str, Tick] = msgspec.field(default_factory=dict)
    next_order_seq: int = 1
    next_trade_seq: int = 1


class PassChanges(msgspec.Struct, frozen=True, kw_only=True):
    """What one pass changed, in the order it happened.

    ``orders`` holds the final version of each changed order (to store), ``fills`` and
    ``positions`` the new fills and changed positions, ``reports`` the events to emit.
    """

    orders: tuple[VenueOrder, ...] = ()
    fills: tuple[VenueFill, ...] = ()
    positions: tuple[VenuePosition, ...] = ()
    reports: tuple[OrderStatusReport | FillReport, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.orders or self.fills or self.positions)


class StepResult(PassChanges, frozen=True, kw_only=True):
    """``PassChanges`` plus the books after the pass (the reference ``step``'s answer)."""

    books: VenueBooks


def format_order_id(seq: int) -> str:
    """Return the venue order id for a sequence number (zero-padded, so ids sort as text)."""
    return f"PO{seq:08d}"


def format_trade_id(seq: int) -> str:
    """Return the trade id for a sequence number (zero-padded, so ids sort as text)."""
    return f"PT{seq:08d}"


# ---------------------------------------------------------------------------------------------
# REQUESTS
# ---------------------------------------------------------------------------------------------


def receive_order(
    books: VenueBooks,
    request: OrderRequest,
    *,
    instruments: Mapping[str, Instrument],
    rules: VenueRules,
    now_ns: int,
) -> tuple[VenueBooks, VenueOrder]:
    """Validate a new order and put it on the book as received (not yet acknowledged).

    Raises:
        VenueRejection: a bad request; the books are unchanged. Duplicates are checked
            against working orders only: the caller also checks its stored terminal orders.
    """
    client_order_id = request.client_order_id
    if client_order_id in books.working:
        existing = books.working[client_order_id]
        raise VenueRejection(
            "DUPLICATE_CLIENT_ORDER_ID",
            f"client_order_id={client_order_id} venue_order_id={existing.venue_order_id} "
            f"status={existing.status.value}",
            client_order_id=client_order_id,
        )
    seq = books.next_order_seq
    order = new_order(request, seq=seq, instruments=instruments, rules=rules, now_ns=now_ns)
    working = dict(books.working)
    working[client_order_id] = order
    return msgspec.structs.replace(books, working=working, next_order_seq=seq + 1), order


def new_order(
    request: OrderRequest,
    *,
    seq: int,
    instruments: Mapping[str, Instrument],
    rules: VenueRules,
    now_ns: int,
) -> VenueOrder:
    """Validate ``request`` and return it as a received order with sequence ``seq``.

    Raises:
        VenueRejection: a bad request. Duplicates are the caller's to check.
    """
    _validate_request(request, instruments)
    return VenueOrder(
        seq=seq,
        venue_order_id=format_order_id(seq),
        client_order_id=request.client_order_id,
        instrument=request.instrument,
        side=request.side,
        order_type=request.order_type,
        quantity=request.quantity,
        price=request.price if request.order_type is OrderType.LIMIT else None,
        trigger_price=request.trigger_price if request.order_type is OrderType.STOP else None,
        ts_received=now_ns,
        ack_due_ns=now_ns + rules.latency_ns,
        ts_updated=now_ns,
    )


def request_cancel(
    books: VenueBooks, client_order_id: str, *, rules: VenueRules, now_ns: int
) -> tuple[VenueBooks, VenueOrder | None]:
    """Schedule a cancel at ``now_ns + latency``.

    Returns the updated order, or ``None`` when there is nothing to do: the order is not
    working (filled, cancelled, unknown) or a cancel is already pending. Never raises.
    """
    updated = cancel_requested(books.working.get(client_order_id), rules=rules, now_ns=now_ns)
    if updated is None:
        return books, None
    return _with_order(books, updated), updated


def cancel_requested(
    order: VenueOrder | None, *, rules: VenueRules, now_ns: int
) -> VenueOrder | None:
    """Return the working ``order`` with a cancel due at ``now_ns + latency``, or ``None``
    when there is nothing to do (no such working order, or a cancel already pending)."""
    if order is None or order.cancel_due_ns is not None:
        return None
    return msgspec.structs.replace(
        order, cancel_due_ns=now_ns + rules.latency_ns, ts_updated=now_ns
    )


def request_modify(
    books: VenueBooks,
    client_order_id: str,
    quantity: int,
    *,
    instruments: Mapping[str, Instrument],
    rules: VenueRules,
    now_ns: int,
) -> tuple[VenueBooks, VenueOrder]:
    """Schedule a change of the order's total quantity at ``now_ns + latency``.

    A later modify replaces a pending one.

    Raises:
        VenueRejection: ``ORDER_NOT_WORKING`` (unknown or terminal), ``ORDER_PENDING_CANCEL``,
            a bad quantity, or ``MODIFY_BELOW_FILLED`` (not above what has already filled).
    """
    updated = modify_requested(
        books.working.get(client_order_id),
        client_order_id,
        quantity,
        instruments=instruments,
        rules=rules,
        now_ns=now_ns,
    )
    return _with_order(books, updated), updated


def modify_requested(
    order: VenueOrder | None,
    client_order_id: str,
    quantity: int,
    *,
    instruments: Mapping[str, Instrument],
    rules: VenueRules,
    now_ns: int,
) -> VenueOrder:
    """Return the working ``order`` with a change to ``quantity`` due at ``now_ns + latency``.

    Raises:
        VenueRejection: as ``request_modify``.
    """
    if order is None:
        raise VenueRejection(
            "ORDER_NOT_WORKING",
            f"client_order_id={client_order_id} is not a working order of this venue",
            client_order_id=client_order_id,
        )
    if order.cancel_due_ns is not None:
        raise VenueRejection(
            "ORDER_PENDING_CANCEL",
            f"client_order_id={client_order_id} cancel_due_ns={order.cancel_due_ns}",
            client_order_id=client_order_id,
        )
    _validate_quantity(client_order_id, quantity, instruments[order.instrument])
    if quantity <= order.filled_quantity:
        raise VenueRejection(
            "MODIFY_BELOW_FILLED",
            f"client_order_id={client_order_id} quantity={quantity} "
            f"filled_quantity={order.filled_quantity}",
            client_order_id=client_order_id,
        )
    return msgspec.structs.replace(
        order,
        modify_quantity=quantity,
        modify_due_ns=now_ns + rules.latency_ns,
        ts_updated=now_ns,
    )


def _validate_request(request: OrderRequest, instruments: Mapping[str, Instrument]) -> None:
    client_order_id = request.client_order_id
    if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
        raise VenueRejection(
            "INVALID_CLIENT_ORDER_ID",
            f"client_order_id={client_order_id!r} length={len(client_order_id)} "
            f"must be 1..{MAX_CLIENT_ORDER_ID_LENGTH} characters",
            client_order_id=client_order_id,
        )
    instrument = instruments.get(request.instrument)
    if instrument is None:
        raise VenueRejection(
            "UNKNOWN_INSTRUMENT",
            f"client_order_id={client_order_id} instrument={request.instrument} "
            f"known={sorted(instruments)}",
            client_order_id=client_order_id,
        )
    _validate_quantity(client_order_id, request.quantity, instrument)
    if request.order_type is OrderType.LIMIT:
        _validate_price(client_order_id, "MISSING_LIMIT_PRICE", "price", request.price)
    elif request.order_type is OrderType.STOP:
        _validate_price(
            client_order_id, "MISSING_TRIGGER_PRICE", "trigger_price", request.trigger_price
        )


def _validate_quantity(client_order_id: str, quantity: int, instrument: Instrument) -> None:
    if quantity <= 0:
        raise VenueRejection(
            "INVALID_QUANTITY",
            f"client_order_id={client_order_id} quantity={quantity} must be > 0",
            client_order_id=client_order_id,
        )
    if quantity % instrument.lot_size != 0:
        raise VenueRejection(
            "NOT_LOT_MULTIPLE",
            f"client_order_id={client_order_id} quantity={quantity} lot_size={instrument.lot_size}",
            client_order_id=client_order_id,
        )
    if quantity > instrument.freeze_quantity:
        raise VenueRejection(
            "FREEZE_QUANTITY",
            f"client_order_id={client_order_id} quantity={quantity} "
            f"freeze_quantity={instrument.freeze_quantity}",
            client_order_id=client_order_id,
        )


def _validate_price(
    client_order_id: str, missing_code: str, field: str, price: Decimal | None
) -> None:
    if price is None:
        raise VenueRejection(
            missing_code,
            f"client_order_id={client_order_id} {field}=None",
            client_order_id=client_order_id,
        )
    if not price.is_finite() or price <= 0:
        raise VenueRejection(
            "INVALID_PRICE",
            f"client_order_id={client_order_id} {field}={price} must be > 0",
            client_order_id=client_order_id,
        )


def _with_order(books: VenueBooks, order: VenueOrder) -> VenueBooks:
    working = dict(books.working)
    if order.status.is_terminal:
        working.pop(order.client_order_id, None)
    else:
        working[order.client_order_id] = order
    return msgspec.structs.replace(books, working=working)


# ---------------------------------------------------------------------------------------------
# MATCHING
# ---------------------------------------------------------------------------------------------


def step(
    books: VenueBooks,
    *,
    now_ns: int,
    instruments: Mapping[str, Instrument],
    rules: VenueRules,
    tick: Tick | None = None,
) -> StepResult:
    """Run one pass at ``now_ns``: apply due acks, modifies and cancels, then match.

    ``tick`` (optional) is a new quote; it is applied after the due actions, which therefore
    see the quote before it. Ticks for instruments the venue does not list are ignored.

    This is the reference: it scans every working order. ``matching.IndexedBooks`` runs the
    same ``MatchingPass`` over only the orders a pass can touch, and must give the same result
    (tests/adapter/test_paper_matching_index.py).
    """
    run = MatchingPass(
        working=dict(books.working),
        positions=dict(books.positions),
        quotes=dict(books.quotes),
        next_trade_seq=books.next_trade_seq,
        now_ns=now_ns,
        instruments=instruments,
        rules=rules,
    )
    run.apply_due(_due_actions(books, now_ns))
    if tick is not None and tick.instrument in instruments:
        run.quotes[tick.instrument] = tick
    run.match_all(sorted(run.working.values(), key=lambda item: item.seq))
    changes = run.changes()
    return StepResult(
        books=msgspec.structs.replace(
            books,
            working=run.working,
            positions=run.positions,
            quotes=run.quotes,
            next_trade_seq=run.next_trade_seq,
        ),
        orders=changes.orders,
        fills=changes.fills,
        positions=changes.positions,
        reports=changes.reports,
    )


ACK, MODIFY, CANCEL = "ack", "modify", "cancel"
ACTION_RANK = {ACK: 0, MODIFY: 1, CANCEL: 2}
DueAction = tuple[int, int, int, str, str]  # (due_ns, rank, seq, kind, client_order_id)


def due_actions_of(order: VenueOrder, now_ns: int) -> list[DueAction]:
    """The actions of ``order`` due by ``now_ns``, as ``step`` orders them (due time, then ack
    before modify before cancel, then order sequence)."""
    actions: list[DueAction] = []
    if not order.is_accepted and order.ack_due_ns <= now_ns:
        actions.append((order.ack_due_ns, ACTION_RANK[ACK], order.seq, ACK, order.client_order_id))
    if order.modify_due_ns is not None and order.modify_due_ns <= now_ns:
        actions.append(
            (order.modify_due_ns, ACTION_RANK[MODIFY], order.seq, MODIFY, order.client_order_id)
        )
    if order.cancel_due_ns is not None and order.cancel_due_ns <= now_ns:
        actions.append(
            (order.cancel_due_ns, ACTION_RANK[CANCEL], order.seq, CANCEL, order.client_order_id)
        )
    return actions


def _due_actions(books: VenueBooks, now_ns: int) -> list[DueAction]:
    actions: list[DueAction] = []
    for order in books.working.values():
        actions.extend(due_actions_of(order, now_ns))
    actions.sort()
    return actions


class MatchingPass:
    """The mutable scratch state of one pass, over mappings the caller owns and lets it change
    (``step`` hands it copies; ``IndexedBooks`` its own live mappings). ``on_store`` is told
    every order the pass changes, after the change."""

    def __init__(
        self,
        *,
        working: dict[str, VenueOrder],
        positions: dict[str, VenuePosition],
        quotes: dict[str, Tick],
        next_trade_seq: int,
        now_ns: int,
        instruments: Mapping[str, Instrument],
        rules: VenueRules,
        on_store: Callable[[VenueOrder], None] | None = None,
    ) -> None:
        self.now_ns = now_ns
        self.instruments = instruments
        self.rules = rules
        self.working = working
        self.positions = positions
        self.quotes = quotes
        self.next_trade_seq = next_trade_seq
        self.on_store = on_store
        self.changed_orders: dict[str, VenueOrder] = {}
        self.changed_positions: dict[str, VenuePosition] = {}
        self.fills: list[VenueFill] = []
        self.reports: list[OrderStatusReport | FillReport] = []
        self.filled_this_pass: set[str] = set()
        self.acked_this_pass: set[str] = set()

    def apply_due(self, actions: Iterable[DueAction]) -> None:
        """Apply due actions in the order given (sorted as ``step`` sorts them)."""
        for _due, _rank, _seq, kind, client_order_id in actions:
            order = self.working.get(client_order_id)
            if order is None:  # an earlier action this pass ended it
                continue
            if kind == ACK:
                self.acknowledge(order)
            elif kind == MODIFY:
                self.apply_modify(order)
            else:
                self.apply_cancel(order)

    def match_all(self, orders: Iterable[VenueOrder]) -> None:
        """Give each order (in sequence order) its one matching chance of the pass."""
        for order in orders:
            if order.is_accepted and order.client_order_id not in self.filled_this_pass:
                self.match(order)

    def changes(self) -> PassChanges:
        return PassChanges(
            orders=tuple(self.changed_orders.values()),
            fills=tuple(self.fills),
            positions=tuple(self.changed_positions.values()),
            reports=tuple(self.reports),
        )

    def store(self, order: VenueOrder) -> VenueOrder:
        self.changed_orders[order.client_order_id] = order
        if order.status.is_terminal:
            self.working.pop(order.client_order_id, None)
        else:
            self.working[order.client_order_id] = order
        if self.on_store is not None:
            self.on_store(order)
        return order

    def acknowledge(self, order: VenueOrder) -> None:
        accepted = self.store(
            msgspec.structs.replace(
                order, is_accepted=True, status=OrderStatus.ACCEPTED, ts_updated=self.now_ns
            )
        )
        self.acked_this_pass.add(order.client_order_id)
        self.reports.append(accepted.status_report(self.now_ns))
        self.match(accepted)

    def apply_modify(self, order: VenueOrder) -> None:
        quantity = order.modify_quantity
        if quantity is None:
            return
        if quantity <= order.filled_quantity:
            # A fill landed between the request and its effect: refuse, keep the order as is.
            updated = msgspec.structs.replace(
                order,
                modify_quantity=None,
                modify_due_ns=None,
                reason=(
                    f"MODIFY_REJECTED: quantity={quantity} filled_quantity={order.filled_quantity}"
                ),
                ts_updated=self.now_ns,
            )
        else:
            updated = msgspec.structs.replace(
                order,
                quantity=quantity,
                modify_quantity=None,
                modify_due_ns=None,
                reason="",
                ts_updated=self.now_ns,
            )
        self.reports.append(self.store(updated).status_report(self.now_ns))

    def apply_cancel(self, order: VenueOrder) -> None:
        cancelled = msgspec.structs.replace(
            order,
            status=OrderStatus.CANCELLED,
            cancel_due_ns=None,
            modify_quantity=None,
            modify_due_ns=None,
            reason="CANCELLED_BY_CLIENT",
            ts_updated=self.now_ns,
        )
        self.reports.append(self.store(cancelled).status_report(self.now_ns))

    def match(self, order: VenueOrder) -> None:
        quote = self.quotes.get(order.instrument)
        if quote is None:
            return
        instrument = self.instruments[order.instrument]
        is_triggered = order.is_triggered or stop_touched(order, quote)
        if order.order_type is OrderType.STOP and not is_triggered:
            return
        price = fill_price(
            order,
            quote,
            instrument,
            slippage_ticks=self.rules.slippage_ticks,
            is_taker=order.client_order_id in self.acked_this_pass,
        )
        if price is None:
            if is_triggered != order.is_triggered:  # triggered, but that side is empty
                self.store(msgspec.structs.replace(order, is_triggered=True))
            return
        quantity = order.remaining_quantity
        if self.rules.partial_fill_max is not None:
            quantity = min(quantity, self.rules.partial_fill_max)
        self.execute(msgspec.structs.replace(order, is_triggered=is_triggered), quantity, price)

    def execute(self, order: VenueOrder, quantity: int, price: Decimal) -> None:
        seq = self.next_trade_seq
        self.next_trade_seq += 1
        fill = VenueFill(
            seq=seq,
            trade_id=format_trade_id(seq),
            venue_order_id=order.venue_order_id,
            client_order_id=order.client_order_id,
            instrument=order.instrument,
            side=order.side,
            quantity=quantity,
            price=price,
            ts_event=self.now_ns,
        )
        filled = order.filled_quantity + quantity
        previous_notional = (order.average_fill_price or _ZERO) * order.filled_quantity
        average = ((previous_notional + price * quantity) / filled).quantize(
            AVERAGE_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
        )
        updated = self.store(
            msgspec.structs.replace(
                order,
                filled_quantity=filled,
                average_fill_price=average,
                status=(
                    OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED
                ),
                # A filled order has nothing left to cancel or resize.
                cancel_due_ns=None if filled >= order.quantity else order.cancel_due_ns,
                modify_quantity=None if filled >= order.quantity else order.modify_quantity,
                modify_due_ns=None if filled >= order.quantity else order.modify_due_ns,
                reason="",  # a reason describes the last change only
                ts_updated=self.now_ns,
            )
        )
        position = self.positions.get(order.instrument) or VenuePosition(
            instrument=order.instrument
        )
        position = update_position(position, order.side, quantity, price, now_ns=self.now_ns)
        self.positions[order.instrument] = position
        self.changed_positions[order.instrument] = position
        self.fills.append(fill)
        self.filled_this_pass.add(order.client_order_id)
        self.reports.append(fill.report())
        self.reports.append(updated.status_report(self.now_ns))


def stop_touched(order: VenueOrder, quote: Tick) -> bool:
    if order.order_type is not OrderType.STOP or order.trigger_price is None:
        return False
    if order.side is Side.SELL:
        return quote.bid > 0 and quote.bid <= order.trigger_price
    return quote.ask > 0 and quote.ask >= order.trigger_price


def fill_price(
    order: VenueOrder,
    quote: Tick,
    instrument: Instrument,
    *,
    slippage_ticks: int,
    is_taker: bool,
) -> Decimal | None:
    """Return the price ``order`` fills at against ``quote`` now, or ``None`` if it cannot.

    ``is_taker`` is true in the pass that acknowledged the order: a marketable limit then
    fills at the touch, while a resting limit touched later fills at its limit price. A STOP
    is priced as a market order (the caller decides whether it has triggered).
    """
    touch = quote.ask if order.side is Side.BUY else quote.bid
    if touch <= 0:  # that side of the book is empty
        return None
    if order.order_type is OrderType.LIMIT:
        limit = order.price
        assert limit is not None
        if order.side is Side.BUY:
            if touch > limit:
                return None
            bound = _round_to_tick(limit, instrument.tick_size, ROUND_FLOOR)
            return min(instrument.round_price(touch), bound) if is_taker else bound
        if touch < limit:
            return None
        bound = _round_to_tick(limit, instrument.tick_size, ROUND_CEILING)
        return max(instrument.round_price(touch), bound) if is_taker else bound
    slippage = instrument.tick_size * slippage_ticks * order.side.sign
    price = instrument.round_price(touch + slippage)
    # Slippage never pushes a sell to zero or below: the venue would not print that.
    return price if price > 0 else None


def _round_to_tick(price: Decimal, tick_size: Decimal, rounding: str) -> Decimal:
    return (price / tick_size).to_integral_value(rounding) * tick_size


def update_position(
    position: VenuePosition, side: Side, quantity: int, price: Decimal, *, now_ns: int
) -> VenuePosition:
    """Return ``position`` after a fill of ``quantity`` at ``price`` on ``side``.

    Adding keeps a quantity-weighted average; reducing realizes PnL against the average and
    keeps it; crossing through flat realizes the closed part and reopens the rest at ``price``.
    """
    signed = side.sign * quantity
    held = position.quantity
    average = position.average_price
    realized = position.realized_pnl
    if held == 0 or (held > 0) == (signed > 0):
        new_quantity = held + signed
        average = ((average * abs(held) + price * quantity) / abs(new_quantity)).quantize(
            AVERAGE_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
        )
    else:
        closed = min(abs(held), quantity)
        direction = 1 if held > 0 else -1
        realized += (price - average) * closed * direction
        new_quantity = held + signed
        if new_quantity == 0:
            average = _ZERO
        elif (new_quantity > 0) != (held > 0):
            average = price
    return VenuePosition(
        instrument=position.instrument,
        quantity=new_quantity,
        average_price=average,
        realized_pnl=realized,
        ts_updated=now_ns,
    )
