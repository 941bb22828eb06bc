"""The order entity and its state machine.

Owns how one ``Order`` moves through its statuses when we act on it (submit, cancel, resize,
reject) and when the broker tells us something (status reports, fills). Pure: time comes in as
``now_ns``.

Who owns which field:

- ``filled_quantity`` and ``average_fill_price`` are owned by fills (``apply_fill``) and only
  by fills. A status report's ``filled_quantity`` is never copied onto the order: if it were,
  the fill that follows would be counted twice. So ``filled_quantity`` always equals the sum of
  the fills applied, which is what positions are built from. A report that is ahead of the fills
  only moves the status (see ``apply_status_report``); ``fill_gap`` tells the caller how much
  the broker says is filled that no fill has been booked for yet.
- ``quantity`` is ours: set at creation and by ``resize``. A report never changes it, with one
  exception: a FILLED report whose filled quantity equals the fills booked means the broker's
  order is complete at that size (a resize that never reached it), so the order is FILLED at
  ``quantity = filled_quantity``.
- ``status`` only moves forward: PENDING_SUBMIT < SUBMITTED < ACCEPTED < PARTIALLY_FILLED <
  PENDING_CANCEL among the working statuses, and a terminal status (FILLED, CANCELLED,
  REJECTED) is never left through a report. Only a fill can complete a CANCELLED or REJECTED
  order (a late fill that leaves nothing remaining makes it FILLED), because fills are facts.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING

import msgspec

from domain.enums import LegKind, OrderStatus, OrderType, Side

if TYPE_CHECKING:
    from domain.messages.orders import FillReport, OrderStatusReport

__all__ = [
    "InvalidTransition",
    "Order",
    "Overfill",
    "apply_fill",
    "apply_status_report",
    "fill_gap",
    "mark_cancel_rejected",
    "mark_cancel_requested",
    "mark_rejected",
    "mark_submitted",
    "move_trigger",
    "resize",
    "turn_to_market",
]


class Order(msgspec.Struct, kw_only=True):
    """One broker order as the engine tracks it. An entity: mutable, identified by
    ``client_order_id``."""

    client_order_id: str
    plan_client_id: str
    strategy: str
    instrument: str
    leg: LegKind
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    status: OrderStatus = OrderStatus.PENDING_SUBMIT
    filled_quantity: int = 0
    average_fill_price: Decimal | None = None
    broker_order_id: str | None = None
    epoch: int = 0
    reason: str = ""
    ts_created: int = 0
    ts_updated: int = 0

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity


class InvalidTransition(Exception):
    """An operation that the order's current status does not allow."""

    def __init__(self, order: Order, to_status: OrderStatus | str, detail: str = "") -> None:
        self.client_order_id = order.client_order_id
        self.from_status = order.status
        self.to_status = to_status
        target = to_status.value if isinstance(to_status, OrderStatus) else to_status
        message = (
            f"INVALID_TRANSITION: order={order.client_order_id} "
            f"from={order.status.value} to={target}"
        )
        super().__init__(f"{message} {detail}" if detail else message)


class Overfill(Exception):
    """A fill that would take an order's filled quantity past its quantity."""

    def __init__(self, order: Order, fill_quantity: int) -> None:
        self.client_order_id = order.client_order_id
        self.quantity = order.quantity
        self.filled_quantity = order.filled_quantity
        self.fill_quantity = fill_quantity
        super().__init__(
            f"OVERFILL: order={order.client_order_id} quantity={order.quantity} "
            f"filled={order.filled_quantity} fill_quantity={fill_quantity}"
        )


# Working statuses in the order they are reached; a report can only move an order up this list.
_WORKING_RANK = {
    OrderStatus.PENDING_SUBMIT: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.PENDING_CANCEL: 4,
}
_RESIZABLE = frozenset(
    {
        OrderStatus.PENDING_SUBMIT,
        OrderStatus.SUBMITTED,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    }
)
# Enough digits that recovering an order's notional from its average is exact (see apply_fill).
_WIDE = Context(prec=60, rounding=ROUND_HALF_EVEN)
_PRICE_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
_NOTIONAL_QUANTUM = Decimal("1e-12")


def apply_status_report(order: Order, report: OrderStatusReport, now_ns: int) -> bool:
    """Merge a broker status report into the order, in place.

    Reports may arrive duplicated and out of order, so the merge is monotonic:

    - a terminal order keeps its status (REJECTED/CANCELLED after FILLED is ignored, and so is
      anything after CANCELLED or REJECTED);
    - a working order moves to the higher of its status and the reported one (an ACCEPTED
      report after PARTIALLY_FILLED is stale and ignored; PENDING_CANCEL, our request, is not
      undone by a stale ACCEPTED: use ``mark_cancel_rejected`` for a refused cancel);
    - CANCELLED or REJECTED from the broker ends a working order, filled part included;
    - FILLED ends the order only when the fills booked equal the broker's filled quantity; the
      order is then FILLED at ``quantity = filled_quantity``. Otherwise fills are still on the
      way and the order is PARTIALLY_FILLED until they arrive (PENDING_CANCEL stays as it is);
    - PARTIALLY_FILLED is taken as reported, even before the fill itself arrives;
    - ``filled_quantity`` is never taken from a report (fills own it; see the module doc).

    Also sets ``broker_order_id`` when the order has none (an existing one is kept), the
    report's ``reason`` when the report is not stale, and ``ts_updated`` when anything changed.

    Args:
        order: the order, mutated in place.
        report: the broker's view of this order.
        now_ns: epoch nanoseconds of the merge.

    Returns:
        True if any field changed.

    Raises:
        ValueError: the report is for another order.
    """
    if report.client_order_id != order.client_order_id:
        raise ValueError(
            f"REPORT_FOR_OTHER_ORDER: order={order.client_order_id} "
            f"report_client_order_id={report.client_order_id}"
        )
    changed = False
    if order.broker_order_id is None and report.broker_order_id:
        order.broker_order_id = report.broker_order_id
        changed = True

    new_status, new_quantity, stale = _merge_status(order, report)
    if new_status is not order.status:
        order.status = new_status
        changed = True
    if new_quantity != order.quantity:
        order.quantity = new_quantity
        changed = True
    if not stale and report.reason and report.reason != order.reason:
        order.reason = report.reason
        changed = True
    if changed:
        order.ts_updated = now_ns
    return changed


def fill_gap(order: Order, report: OrderStatusReport) -> int:
    """How much the broker reports as filled that no fill has been booked for yet (never < 0).

    A positive gap that persists means fills were missed: the caller should fetch the broker's
    trades for this order.
    """
    return max(0, report.filled_quantity - order.filled_quantity)


def apply_fill(order: Order, fill: FillReport, now_ns: int) -> None:
    """Add one execution to the order, in place.

    Idempotency by ``trade_id`` is the caller's job. A fill is accepted in any status that has
    quantity remaining: before the ack (SUBMITTED), while a cancel is pending (the status stays
    PENDING_CANCEL), and after CANCELLED or REJECTED (a late report of an execution that
    happened first; the status stays unless nothing remains, then it is FILLED).

    The average is exact: the notional of earlier fills is recovered from the stored average
    and rounded back to 1e-12, which is exact for prices with at most 12 decimal places and
    notionals below 1e14, so the stored average is always the correctly rounded true average
    and no error accumulates over many fills.

    Raises:
        ValueError: the fill is for another order, has another side or instrument, or a
            quantity that is not positive.
        Overfill: the fill would take ``filled_quantity`` past ``quantity``; the order is
            unchanged.
    """
    if fill.client_order_id != order.client_order_id:
        raise ValueError(
            f"FILL_FOR_OTHER_ORDER: order={order.client_order_id} "
            f"fill_client_order_id={fill.client_order_id} trade_id={fill.trade_id}"
        )
    if fill.side is not order.side or fill.instrument != order.instrument:
        raise ValueError(
            f"FILL_MISMATCH: order={order.client_order_id} side={order.side.value} "
            f"instrument={order.instrument} fill_side={fill.side.value} "
            f"fill_instrument={fill.instrument} trade_id={fill.trade_id}"
        )
    if fill.quantity <= 0:
        raise ValueError(
            f"FILL_QUANTITY_NOT_POSITIVE: order={order.client_order_id} "
            f"fill_quantity={fill.quantity} trade_id={fill.trade_id}"
        )
    if order.filled_quantity + fill.quantity > order.quantity:
        raise Overfill(order, fill.quantity)

    new_filled = order.filled_quantity + fill.quantity
    if order.average_fill_price is None or order.filled_quantity == 0:
        order.average_fill_price = fill.price
    else:
        earlier = _WIDE.multiply(order.average_fill_price, Decimal(order.filled_quantity))
        earlier = earlier.quantize(_NOTIONAL_QUANTUM, context=_WIDE)
        notional = _WIDE.add(earlier, _WIDE.multiply(fill.price, Decimal(fill.quantity)))
        order.average_fill_price = _tidy(_PRICE_CONTEXT.divide(notional, Decimal(new_filled)))
    order.filled_quantity = new_filled
    if new_filled == order.quantity:
        order.status = OrderStatus.FILLED
    elif order.status in _RESIZABLE:
        order.status = OrderStatus.PARTIALLY_FILLED
    if order.broker_order_id is None and fill.broker_order_id:
        order.broker_order_id = fill.broker_order_id
    order.ts_updated = now_ns


def mark_submitted(order: Order, now_ns: int) -> None:
    """PENDING_SUBMIT -> SUBMITTED: the broker was called (the outcome may still be unknown).

    A no-op when the order is already past PENDING_SUBMIT: a report or fill that got there
    first is newer than this.
    """
    if order.status is OrderStatus.PENDING_SUBMIT:
        order.status = OrderStatus.SUBMITTED
        order.ts_updated = now_ns


def mark_rejected(order: Order, reason: str, now_ns: int) -> None:
    """The broker definitively refused the order (never use this for a timeout or a 5xx).

    Allowed while the order is working with nothing filled; a repeat on a REJECTED order is a
    no-op.

    Raises:
        InvalidTransition: the order has fills or is FILLED or CANCELLED.
    """
    if order.status is OrderStatus.REJECTED:
        return
    if order.status.is_terminal or order.filled_quantity > 0:
        raise InvalidTransition(
            order,
            OrderStatus.REJECTED,
            f"filled={order.filled_quantity} reason={reason!r}",
        )
    order.status = OrderStatus.REJECTED
    order.reason = reason
    order.ts_updated = now_ns


def mark_cancel_requested(order: Order, now_ns: int) -> None:
    """A working order -> PENDING_CANCEL. A no-op if terminal or already PENDING_CANCEL."""
    if order.status.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
        return
    order.status = OrderStatus.PENDING_CANCEL
    order.ts_updated = now_ns


def mark_cancel_rejected(order: Order, reason: str, now_ns: int) -> None:
    """The broker refused our cancel: PENDING_CANCEL -> ACCEPTED or PARTIALLY_FILLED.

    The order is working again, so the bracket rules will ask for the cancel again if it is
    still wanted. A no-op in any other status (the order may have filled meanwhile).
    """
    if order.status is not OrderStatus.PENDING_CANCEL:
        return
    order.status = (
        OrderStatus.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderStatus.ACCEPTED
    )
    order.reason = reason
    order.ts_updated = now_ns


def resize(order: Order, new_quantity: int, now_ns: int) -> None:
    """Set the order's new total quantity (its filled part included).

    Resizing to exactly ``filled_quantity`` leaves nothing to work, so the order is FILLED.

    Raises:
        ValueError: ``new_quantity`` is not positive or below ``filled_quantity``.
        InvalidTransition: the order is terminal or a cancel is pending.
    """
    if order.status not in _RESIZABLE:
        raise InvalidTransition(
            order, "RESIZED", f"quantity={order.quantity} new_quantity={new_quantity}"
        )
    if new_quantity <= 0 or new_quantity < order.filled_quantity:
        raise ValueError(
            f"RESIZE_BELOW_FILLED: order={order.client_order_id} quantity={order.quantity} "
            f"filled={order.filled_quantity} new_quantity={new_quantity}"
        )
    if new_quantity == order.quantity:
        return
    order.quantity = new_quantity
    if new_quantity == order.filled_quantity:
        order.status = OrderStatus.FILLED
    order.ts_updated = now_ns


def turn_to_market(order: Order, new_quantity: int, now_ns: int) -> None:
    """Make a working stop a market order for ``new_quantity`` (its total, filled part
    included), as the broker holds it once it took the change (``oco.MarketLeg``).

    Raises:
        ValueError: ``new_quantity`` does not exceed ``filled_quantity``.
        InvalidTransition: the order is not an accepted stop.
    """
    if order.order_type is not OrderType.STOP or order.status not in (
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    ):
        raise InvalidTransition(
            order,
            "TURNED_TO_MARKET",
            f"order_type={order.order_type.value} quantity={new_quantity}",
        )
    if new_quantity <= order.filled_quantity:
        raise ValueError(
            f"MARKET_BELOW_FILLED: order={order.client_order_id} filled={order.filled_quantity} "
            f"new_quantity={new_quantity}"
        )
    order.order_type = OrderType.MARKET
    order.trigger_price = None
    order.quantity = new_quantity
    order.ts_updated = now_ns


def move_trigger(order: Order, trigger_price: Decimal, now_ns: int) -> None:
    """Set a working stop's new trigger, as the broker holds it once it took the move
    (``oco.MoveStop``).

    Raises:
        InvalidTransition: the order is not a working stop (a fill or cancel crossed the move).
    """
    if order.order_type is not OrderType.STOP or order.status not in _RESIZABLE:
        raise InvalidTransition(order, "STOP_MOVED", f"trigger_price={trigger_price}")
    order.trigger_price = trigger_price
    order.ts_updated = now_ns


def _merge_status(order: Order, report: OrderStatusReport) -> tuple[OrderStatus, int, bool]:
    """Return (status, quantity, stale) after the report; stale means the report was ignored."""
    current = order.status
    incoming = report.status
    if current.is_terminal:
        return current, order.quantity, incoming is not current
    if incoming in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        return incoming, order.quantity, False
    if incoming is OrderStatus.FILLED:
        if order.filled_quantity > 0 and order.filled_quantity == report.filled_quantity:
            return OrderStatus.FILLED, order.filled_quantity, False
        if current is OrderStatus.PENDING_CANCEL:
            return current, order.quantity, False
        return OrderStatus.PARTIALLY_FILLED, order.quantity, False
    if _WORKING_RANK[incoming] > _WORKING_RANK[current]:
        return incoming, order.quantity, False
    return current, order.quantity, incoming is not current


def _tidy(value: Decimal) -> Decimal:
    # Drop trailing zeros so 100.50000 prints as 100.5, without turning 1000 into 1E+3.
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize(_PRICE_CONTEXT)
