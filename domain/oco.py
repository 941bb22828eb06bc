"""The OCO bracket: entry, stop and target kept consistent with the position.

Owns the bracket rules. Each rule is a pure function that takes the bracket and the current
state of its legs, mutates the bracket and returns the actions (place, resize, cancel) the
order layer must execute; it never reads a clock or calls a broker.

The rules, restated from the order layer's point of view:

- ``open_quantity = entry_filled - exit_filled``, both recomputed from the legs on every
  update; ``exit_filled`` counts the fills of every stop, target and EXIT leg ever used
  (an EXIT on the entry side, which only exists to undo an over-exit, counts negative).
- While the bracket is OPEN and not winding down, the position has exactly one working STOP
  and one working TARGET, each with ``remaining == open_quantity``: they are alternatives,
  not additive. Entry fills resize them up, a sibling's partial fill resizes the other down,
  a sibling that dies without us asking is replaced under the next sequence number.
- Winding down: a flatten request, or the trade being over (a sibling FILLED, or the
  position back to zero after an entry fill, or below zero), puts the bracket in FLATTENING
  for good. Then the working entry and every working sibling are cancelled first; only when
  no leg is working is ONE EXIT market order placed for what is open, and another (next
  sequence) if that one dies with something left. The bracket is CLOSED when nothing is open
  and every leg is dead, or CANCELLED if no entry fill ever happened. ``flatten_reason`` is
  the caller's reason, or ``STOP_FILLED``, ``TARGET_FILLED``, ``POSITION_CLOSED`` or
  ``OVER_EXIT`` when the trade ended by itself. Where the broker keeps stop and target ON
  the position (``levels_on_position``: IG), closing the position ends them with it: the
  EXIT goes at once and the siblings, still protecting until then, are not cancelled first.
  Where the broker changes a working stop in place (``stop_in_place``: Kite), the stop itself
  is the exit: the target (and a working entry) are cancelled first, then ``MarketLeg`` turns
  the stop into a market order for what is open. Two requests per position
  instead of three, and the position keeps its stop until the moment it is closed. A stop that
  is not accepted yet, or an EXIT already working, takes the usual path.
- Tightening (``tighten_stop``, the schedule's 15:20): the bracket's ``stop_price`` moves to
  the tighter price and the working stop is cancelled; once the venue confirms it dead, the
  keep-protected rule above replaces it under the next sequence number at the new price. Two
  stops never work at once (the replacement waits for the cancel), and no sibling is orphaned
  (the target keeps working throughout). ``tightened_stop_price`` decides the price. With
  ``levels_on_position`` the stop is the position's one level: the replacement is placed
  first and moves it (one request, never unprotected); the venue ends the old leg. With
  ``stop_in_place`` the working stop's trigger is moved (``MoveStop``, one request, never
  unprotected); a stop whose trigger is not the bracket's ``stop_price`` is moved again by
  the keep-protected rule until it is (a refused move leaves the old, looser stop working).
- A stopped-out trade is not re-entered: an entry still working when the trade ends is
  cancelled, and any late entry fill is closed by an EXIT rather than protected again.

Idempotency: an action already requested is visible in ``orders`` (a placed leg exists, a
resize shows as the order's quantity, a cancel as PENDING_CANCEL), so a second call returns
nothing new. A leg id the bracket names but ``orders`` lacks is taken as "requested, not
created" (for example denied at the last gate): if still wanted, the same ``PlaceLeg`` (same
client id) is returned again; if not, it is treated as dead.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec

from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.orders import Order
from domain.plans import client_order_id

if TYPE_CHECKING:
    from domain.messages.orders import TradePlan

__all__ = [
    "Bracket",
    "BracketAction",
    "BracketStatus",
    "CancelLeg",
    "MarketLeg",
    "MoveStop",
    "PlaceLeg",
    "ResizeLeg",
    "bracket_orders",
    "is_protected",
    "new_leg_order",
    "on_order_update",
    "open_bracket",
    "request_flatten",
    "tighten_stop",
    "tightened_stop_price",
    "working_leg_ids",
]

REASON_STOP_FILLED = "STOP_FILLED"
REASON_TARGET_FILLED = "TARGET_FILLED"
REASON_POSITION_CLOSED = "POSITION_CLOSED"
REASON_OVER_EXIT = "OVER_EXIT"
__all__ += [
    "REASON_OVER_EXIT",
    "REASON_POSITION_CLOSED",
    "REASON_STOP_FILLED",
    "REASON_TARGET_FILLED",
]


class BracketStatus(StrEnum):
    PENDING_ENTRY = "PENDING_ENTRY"  # entry working, nothing filled yet
    OPEN = "OPEN"  # some position open, siblings working
    FLATTENING = "FLATTENING"  # cancelling siblings, then exiting at market
    CLOSED = "CLOSED"  # flat and every leg dead
    CANCELLED = "CANCELLED"  # entry died unfilled


class Bracket(msgspec.Struct, kw_only=True):
    """An entity keyed by ``plan_client_id``.

    ``stop_sequence``/``target_sequence`` are the sequence numbers of the current stop and
    target legs (0 for the first, +1 for each replacement), so every leg id ever used can be
    derived (``bracket_orders``) and its fills counted.
    """

    plan_client_id: str
    strategy: str
    instrument: str
    side: Side  # the entry side; stop and target are the opposite side
    planned_quantity: int
    entry_price: Decimal
    stop_price: Decimal
    target_price: Decimal
    status: BracketStatus = BracketStatus.PENDING_ENTRY
    entry_order_id: str = ""
    stop_order_id: str | None = None
    target_order_id: str | None = None
    exit_order_ids: tuple[str, ...] = ()
    entry_filled: int = 0
    exit_filled: int = 0
    flatten_reason: str | None = None
    ts_opened: int = 0
    ts_updated: int = 0
    stop_sequence: int = 0
    target_sequence: int = 0

    @property
    def open_quantity(self) -> int:
        return self.entry_filled - self.exit_filled


class PlaceLeg(msgspec.Struct, frozen=True, kw_only=True):
    leg: LegKind
    client_order_id: str
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None


class ResizeLeg(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    quantity: int  # the new total quantity of the order (filled part included)


class CancelLeg(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str


class MarketLeg(msgspec.Struct, frozen=True, kw_only=True):
    """Turn a working stop into a market order: the stop closes the position itself."""

    client_order_id: str
    quantity: int  # the new total quantity of the order (filled part included)


class MoveStop(msgspec.Struct, frozen=True, kw_only=True):
    """Move a working stop's trigger in place: it protects at the old level until then."""

    client_order_id: str
    trigger_price: Decimal


BracketAction = PlaceLeg | ResizeLeg | CancelLeg | MarketLeg | MoveStop

_ENDED = (BracketStatus.CLOSED, BracketStatus.CANCELLED)


# ---------------------------------------------------------------------------------------------
# RULES
# ---------------------------------------------------------------------------------------------


def open_bracket(plan: TradePlan, quantity: int, now_ns: int) -> tuple[Bracket, PlaceLeg]:
    """Start a bracket for an approved plan and return it with its entry leg to place.

    The entry is ``plan.entry_type`` on ``plan.side``: MARKET, or LIMIT at ``plan.entry_price``.
    Its client id is ``client_order_id(plan.plan_client_id, LegKind.ENTRY)``.

    Raises:
        ValueError: ``quantity`` is not positive, the entry type is neither MARKET nor LIMIT,
            or the stop is not on the losing side of the target.
    """
    if quantity <= 0:
        raise ValueError(
            f"BRACKET_QUANTITY_NOT_POSITIVE: plan={plan.plan_client_id} quantity={quantity}"
        )
    if plan.entry_type not in (OrderType.MARKET, OrderType.LIMIT):
        raise ValueError(
            f"BRACKET_ENTRY_TYPE: plan={plan.plan_client_id} entry_type={plan.entry_type.value}"
        )
    stop_below = plan.stop_price < plan.target_price
    if stop_below != (plan.side is Side.BUY):
        raise ValueError(
            f"BRACKET_STOP_TARGET_ORDER: plan={plan.plan_client_id} side={plan.side.value} "
            f"stop={plan.stop_price} target={plan.target_price}"
        )
    entry_id = client_order_id(plan.plan_client_id, LegKind.ENTRY)
    bracket = Bracket(
        plan_client_id=plan.plan_client_id,
        strategy=plan.strategy,
        instrument=plan.instrument,
        side=plan.side,
        planned_quantity=quantity,
        entry_price=plan.entry_price,
        stop_price=plan.stop_price,
        target_price=plan.target_price,
        entry_order_id=entry_id,
        ts_opened=now_ns,
        ts_updated=now_ns,
    )
    entry = PlaceLeg(
        leg=LegKind.ENTRY,
        client_order_id=entry_id,
        side=plan.side,
        order_type=plan.entry_type,
        quantity=quantity,
        price=plan.entry_price if plan.entry_type is OrderType.LIMIT else None,
    )
    return bracket, entry


def on_order_update(
    bracket: Bracket,
    orders: Mapping[str, Order],
    now_ns: int,
    *,
    levels_on_position: bool = False,
    stop_in_place: bool = False,
) -> list[BracketAction]:
    """Reconcile the bracket with its legs after any change to any of them.

    Call it after every fill, status report, cancel or reject on a leg of this bracket, with
    ``orders`` holding the current state of every leg by client order id (other orders may be
    in the mapping too; they are ignored). Mutates the bracket (``entry_filled``,
    ``exit_filled``, ``status``, leg ids, sequences, ``flatten_reason`` when the trade ends by
    itself, ``ts_updated`` when anything changed) and returns the actions, cancels first, then
    resizes, then placements.

    Idempotent: once the returned actions are applied to ``orders``, a second call returns
    ``[]``; if they were not applied, it returns the same requests again (same client ids).

    ``levels_on_position``: the broker keeps the stop and target ON the position (IG), so
    closing it ends them with it and the venue itself makes them one-cancels-other. A wind
    down then places its EXIT at once, without cancelling the siblings first: the position
    stays protected until it is closed, and it costs one request instead of three. Siblings
    still working once nothing is open are cancelled as usual.

    ``stop_in_place``: the broker changes a working stop in place (Kite). A wind down then
    cancels the target and any working entry, and once they are dead returns a ``MarketLeg``
    for the accepted stop: it closes the position, still protected until then, in two
    requests instead of three. While open, an accepted stop whose trigger is not the bracket's
    ``stop_price`` (a tighten) gets a ``MoveStop``.
    """
    before = msgspec.structs.astuple(bracket)
    entry = orders.get(bracket.entry_order_id)
    entry_filled = entry.filled_quantity if entry is not None else 0
    exit_filled = _exit_filled(bracket, orders)
    bracket.entry_filled = entry_filled
    bracket.exit_filled = exit_filled
    open_quantity = entry_filled - exit_filled

    if bracket.flatten_reason is None:
        bracket.flatten_reason = _trade_over_reason(bracket, orders, open_quantity)
    if bracket.flatten_reason is None:
        actions = _keep_protected(
            bracket, orders, entry, open_quantity, stop_in_place=stop_in_place
        )
    else:
        actions = _wind_down(
            bracket,
            orders,
            entry,
            open_quantity,
            levels_on_position=levels_on_position,
            stop_in_place=stop_in_place,
        )
    if actions or msgspec.structs.astuple(bracket) != before:
        bracket.ts_updated = now_ns
    return actions


def request_flatten(
    bracket: Bracket,
    orders: Mapping[str, Order],
    reason: str,
    now_ns: int,
    *,
    levels_on_position: bool = False,
    stop_in_place: bool = False,
) -> list[BracketAction]:
    """Close the bracket's position: cancel the working entry and siblings first, then EXIT.

    Sets ``flatten_reason`` (a bracket already winding down keeps its first reason) and status
    FLATTENING, and returns the cancels. Later ``on_order_update`` calls place one EXIT market
    order (opposite side) for the open quantity once no entry or sibling is working, another
    for what is left if that one dies partly filled, and end CLOSED (or CANCELLED when the
    entry never filled). A bracket already CLOSED or CANCELLED with nothing open and nothing
    working is left untouched and ``[]`` is returned. ``levels_on_position`` and
    ``stop_in_place``: see ``on_order_update``.
    """
    if bracket.status in _ENDED and not working_leg_ids(bracket, orders):
        entry = orders.get(bracket.entry_order_id)
        entry_filled = entry.filled_quantity if entry is not None else 0
        if entry_filled == _exit_filled(bracket, orders):
            return []
    if bracket.flatten_reason is None:
        bracket.flatten_reason = reason
        bracket.ts_updated = now_ns
    return on_order_update(
        bracket,
        orders,
        now_ns,
        levels_on_position=levels_on_position,
        stop_in_place=stop_in_place,
    )


def tightened_stop_price(
    *,
    side: Side,
    current_stop: Decimal,
    average_entry: Decimal,
    bid: Decimal,
    ask: Decimal,
    tick_size: Decimal,
    mode: str,
    trail_ticks: int = 20,
) -> Decimal | None:
    """The tighter stop for a position entered on ``side``, or None to leave it as it is.

    ``mode="break_even"``: the average entry price, rounded to a whole tick on the profit side
    (up for a long, down for a short). ``mode="trail"``: ``trail_ticks`` ticks behind the
    price the stop watches (the bid for a long, the ask for a short), rounded away from it.
    None when the candidate is not tighter than ``current_stop`` (a stop never loosens), or is
    not strictly on the protective side of that price (a long's sell stop at or above the bid
    would trigger at once: that is an exit, which is the 15:25 flatten's job, not a stop's).

    Raises:
        ValueError: ``mode`` is neither "break_even" nor "trail", or ``tick_size`` is not
            positive.
    """
    if tick_size <= 0:
        raise ValueError(f"TIGHTEN_TICK_SIZE: tick_size={tick_size} must be positive")
    long = side is Side.BUY
    if mode == "break_even":
        rounding = ROUND_CEILING if long else ROUND_FLOOR
        candidate = (average_entry / tick_size).to_integral_value(rounding) * tick_size
    elif mode == "trail":
        watched = bid if long else ask
        raw = watched - trail_ticks * tick_size if long else watched + trail_ticks * tick_size
        rounding = ROUND_FLOOR if long else ROUND_CEILING
        candidate = (raw / tick_size).to_integral_value(rounding) * tick_size
    else:
        raise ValueError(f"TIGHTEN_MODE: {mode!r} is not 'break_even' or 'trail'")
    if long:
        if candidate <= current_stop or bid <= 0 or candidate >= bid:
            return None
    elif candidate >= current_stop or ask <= 0 or candidate <= ask:
        return None
    return candidate


def tighten_stop(
    bracket: Bracket,
    orders: Mapping[str, Order],
    new_stop: Decimal,
    now_ns: int,
    *,
    levels_on_position: bool = False,
    stop_in_place: bool = False,
) -> list[BracketAction]:
    """Move an OPEN bracket's stop to ``new_stop``: set ``stop_price`` and cancel the working
    stop; ``on_order_update`` places its replacement at ``new_stop`` once it is dead.

    ``stop_in_place`` (Kite): the working stop's trigger is moved instead (``MoveStop``, one
    request, never unprotected), once the broker has accepted it.

    ``levels_on_position`` (IG: the stop is the position's one level): the replacement is
    placed at once and moves that level in one request; the venue reports the old leg ended
    (superseded) when the new one is accepted, and if the new one is refused the old level
    still protects. Cancelling first would leave the position without a stop for a round trip.

    Returns [] (and changes nothing) when the bracket is not OPEN, is winding down, has no
    working stop, or its stop is already being cancelled or replaced (a tighten or
    replacement in progress: asked again later, it finds the new stop working).
    """
    if bracket.status is not BracketStatus.OPEN or bracket.flatten_reason is not None:
        return []
    stop_id = bracket.stop_order_id
    stop = orders.get(stop_id) if stop_id is not None else None
    if stop is None or stop.status is OrderStatus.PENDING_CANCEL or not stop.status.is_working:
        return []
    if (levels_on_position or stop_in_place) and stop.status in (
        OrderStatus.PENDING_SUBMIT,
        OrderStatus.SUBMITTED,
    ):
        return []  # the previous move (or the stop's placing) is not answered yet
    bracket.stop_price = new_stop
    bracket.ts_updated = now_ns
    if stop.trigger_price == new_stop:
        return []
    assert stop_id is not None
    if stop_in_place and not levels_on_position:
        return [MoveStop(client_order_id=stop_id, trigger_price=new_stop)]
    if levels_on_position:
        quantity = stop.remaining_quantity
        return [
            _place_sibling(bracket, LegKind.STOP, _advance_sibling(bracket, LegKind.STOP), quantity)
        ]
    return [CancelLeg(client_order_id=stop_id)]


# ---------------------------------------------------------------------------------------------
# QUERIES
# ---------------------------------------------------------------------------------------------


def bracket_orders(bracket: Bracket) -> tuple[str, ...]:
    """Every leg id the bracket has used: entry, each stop and target, each EXIT."""
    ids: list[str] = [bracket.entry_order_id] if bracket.entry_order_id else []
    ids.extend(_sibling_ids(bracket))
    ids.extend(bracket.exit_order_ids)
    return tuple(ids)


def working_leg_ids(bracket: Bracket, orders: Mapping[str, Order]) -> tuple[str, ...]:
    """The bracket's legs that are working in ``orders`` (PENDING_CANCEL included)."""
    return tuple(
        leg_id
        for leg_id in bracket_orders(bracket)
        if (order := orders.get(leg_id)) is not None and order.status.is_working
    )


def is_protected(bracket: Bracket, orders: Mapping[str, Order]) -> bool:
    """True when nothing is open, or the open position has exactly one working STOP and one
    working TARGET (neither with a cancel pending), each with ``remaining == open``.

    The open quantity is computed from ``orders``, not taken from the bracket. An over-exited
    bracket (open < 0) is not protected.
    """
    entry = orders.get(bracket.entry_order_id)
    entry_filled = entry.filled_quantity if entry is not None else 0
    open_quantity = entry_filled - _exit_filled(bracket, orders)
    if open_quantity == 0:
        return True
    if open_quantity < 0:
        return False
    for kind in (LegKind.STOP, LegKind.TARGET):
        working = [
            order
            for leg_id in _sibling_ids(bracket, kind)
            if (order := orders.get(leg_id)) is not None and order.status.is_working
        ]
        if len(working) != 1:
            return False
        (leg,) = working
        if leg.status is OrderStatus.PENDING_CANCEL or leg.remaining_quantity != open_quantity:
            return False
    return True


def new_leg_order(bracket: Bracket, action: PlaceLeg, now_ns: int, epoch: int = 0) -> Order:
    """The ``Order`` (PENDING_SUBMIT) that executing ``action`` for ``bracket`` creates."""
    return Order(
        client_order_id=action.client_order_id,
        plan_client_id=bracket.plan_client_id,
        strategy=bracket.strategy,
        instrument=bracket.instrument,
        leg=action.leg,
        side=action.side,
        order_type=action.order_type,
        quantity=action.quantity,
        price=action.price,
        trigger_price=action.trigger_price,
        epoch=epoch,
        ts_created=now_ns,
        ts_updated=now_ns,
    )


# ---------------------------------------------------------------------------------------------
# HELPERS
# ---------------------------------------------------------------------------------------------


def _sibling_ids(bracket: Bracket, kind: LegKind | None = None) -> list[str]:
    ids: list[str] = []
    if kind in (None, LegKind.STOP) and bracket.stop_order_id is not None:
        ids.extend(
            client_order_id(bracket.plan_client_id, LegKind.STOP, sequence)
            for sequence in range(bracket.stop_sequence + 1)
        )
    if kind in (None, LegKind.TARGET) and bracket.target_order_id is not None:
        ids.extend(
            client_order_id(bracket.plan_client_id, LegKind.TARGET, sequence)
            for sequence in range(bracket.target_sequence + 1)
        )
    return ids


def _exit_filled(bracket: Bracket, orders: Mapping[str, Order]) -> int:
    total = 0
    for leg_id in (*_sibling_ids(bracket), *bracket.exit_order_ids):
        order = orders.get(leg_id)
        if order is None:
            continue
        # An exit-side fill reduces the position; an entry-side EXIT (undoing an over-exit)
        # adds back to it.
        sign = 1 if order.side is bracket.side.opposite else -1
        total += sign * order.filled_quantity
    return total


def _trade_over_reason(
    bracket: Bracket, orders: Mapping[str, Order], open_quantity: int
) -> str | None:
    for leg_id, reason in (
        (bracket.stop_order_id, REASON_STOP_FILLED),
        (bracket.target_order_id, REASON_TARGET_FILLED),
    ):
        order = orders.get(leg_id) if leg_id is not None else None
        if order is not None and order.status is OrderStatus.FILLED:
            return reason
    if open_quantity < 0:
        return REASON_OVER_EXIT
    if open_quantity == 0 and bracket.entry_filled > 0:
        return REASON_POSITION_CLOSED
    return None


def _keep_protected(
    bracket: Bracket,
    orders: Mapping[str, Order],
    entry: Order | None,
    open_quantity: int,
    *,
    stop_in_place: bool = False,
) -> list[BracketAction]:
    cancels: list[BracketAction] = []
    resizes: list[BracketAction] = []
    places: list[BracketAction] = []
    if open_quantity > 0:
        bracket.status = BracketStatus.OPEN
        for kind in (LegKind.STOP, LegKind.TARGET):
            current_id = _current_sibling(bracket, kind)
            order = orders.get(current_id) if current_id is not None else None
            if current_id is None:
                places.append(
                    _place_sibling(bracket, kind, _advance_sibling(bracket, kind), open_quantity)
                )
            elif order is None:
                places.append(_place_sibling(bracket, kind, current_id, open_quantity))
            elif order.status is OrderStatus.PENDING_CANCEL:
                # Someone else asked to cancel it; it is replaced once it is dead, not before,
                # so two legs of one kind never work at once.
                continue
            elif order.status.is_working:
                wanted = order.filled_quantity + open_quantity
                if order.quantity != wanted:
                    resizes.append(ResizeLeg(client_order_id=current_id, quantity=wanted))
                if (
                    stop_in_place
                    and kind is LegKind.STOP
                    and order.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
                    and order.trigger_price != bracket.stop_price
                ):
                    # A tighten whose move has not reached our books yet (or was refused).
                    resizes.append(
                        MoveStop(client_order_id=current_id, trigger_price=bracket.stop_price)
                    )
            elif order.status is not OrderStatus.FILLED:
                # Died without us asking (rejected, cancelled by the broker): replace it.
                places.append(
                    _place_sibling(bracket, kind, _advance_sibling(bracket, kind), open_quantity)
                )
        return cancels + resizes + places

    # Nothing is open and nothing ever filled (otherwise the trade would be over): no sibling
    # should work. They cannot exist in this state; cancel defensively rather than orphan one.
    for leg_id in _sibling_ids(bracket):
        order = orders.get(leg_id)
        if (
            order is not None
            and order.status.is_working
            and order.status is not OrderStatus.PENDING_CANCEL
        ):
            cancels.append(CancelLeg(client_order_id=leg_id))
    entry_working = entry is None or entry.status.is_working
    bracket.status = BracketStatus.PENDING_ENTRY if entry_working else BracketStatus.CANCELLED
    return cancels


def _wind_down(
    bracket: Bracket,
    orders: Mapping[str, Order],
    entry: Order | None,
    open_quantity: int,
    *,
    levels_on_position: bool = False,
    stop_in_place: bool = False,
) -> list[BracketAction]:
    cancels: list[BracketAction] = []
    resizes: list[BracketAction] = []
    places: list[BracketAction] = []
    anything_working = False

    closing_side = bracket.side.opposite if open_quantity > 0 else bracket.side
    latest_exit_id = bracket.exit_order_ids[-1] if bracket.exit_order_ids else None
    latest_exit = orders.get(latest_exit_id) if latest_exit_id is not None else None
    # Levels on the position: the exit closes it with its stop and target (see
    # on_order_update), so they neither wait for nor block it while something is open.
    siblings_ride_the_exit = levels_on_position and open_quantity > 0
    closing_stop = (
        _closing_stop(bracket, orders, open_quantity, latest_exit)
        if stop_in_place and not siblings_ride_the_exit
        else None
    )
    candidates = [bracket.entry_order_id] if bracket.entry_order_id else []
    if not siblings_ride_the_exit:
        candidates.extend(
            leg_id
            for leg_id in _sibling_ids(bracket)
            if closing_stop is None or leg_id != closing_stop.client_order_id
        )
    for leg_id in candidates:
        order = orders.get(leg_id)
        if order is None or not order.status.is_working:
            continue
        anything_working = True
        if order.status is not OrderStatus.PENDING_CANCEL:
            cancels.append(CancelLeg(client_order_id=leg_id))
    if closing_stop is not None:
        # Turned into a market order once nothing else can fill (the entry) or close part of
        # the position too (the target): its size is then what is open.
        if closing_stop.order_type is not OrderType.MARKET and not anything_working:
            resizes.append(
                MarketLeg(
                    client_order_id=closing_stop.client_order_id,
                    quantity=closing_stop.filled_quantity + open_quantity,
                )
            )
        anything_working = True
    if latest_exit_id is not None and latest_exit is not None and latest_exit.status.is_working:
        anything_working = True
        if latest_exit.status is not OrderStatus.PENDING_CANCEL:
            if open_quantity == 0 or latest_exit.side is not closing_side:
                cancels.append(CancelLeg(client_order_id=latest_exit_id))
            elif latest_exit.remaining_quantity > abs(open_quantity):
                # A late fill elsewhere shrank the position: never exit more than is open.
                wanted = latest_exit.filled_quantity + abs(open_quantity)
                resizes.append(ResizeLeg(client_order_id=latest_exit_id, quantity=wanted))

    if anything_working:
        bracket.status = BracketStatus.FLATTENING
    elif open_quantity != 0:
        bracket.status = BracketStatus.FLATTENING
        if latest_exit_id is not None and latest_exit is None:
            exit_id = latest_exit_id  # requested but never created: ask again under its id
        else:
            exit_id = client_order_id(
                bracket.plan_client_id, LegKind.EXIT, len(bracket.exit_order_ids) + 1
            )
            bracket.exit_order_ids = (*bracket.exit_order_ids, exit_id)
        places.append(
            PlaceLeg(
                leg=LegKind.EXIT,
                client_order_id=exit_id,
                side=closing_side,
                order_type=OrderType.MARKET,
                quantity=abs(open_quantity),
            )
        )
    else:
        bracket.status = (
            BracketStatus.CLOSED if bracket.entry_filled > 0 else BracketStatus.CANCELLED
        )
    return cancels + resizes + places


def _closing_stop(
    bracket: Bracket, orders: Mapping[str, Order], open_quantity: int, latest_exit: Order | None
) -> Order | None:
    """The stop a ``stop_in_place`` wind down turns into the exit (or already has), or None
    for the usual path: nothing open to close, an EXIT already working, or no current stop the
    broker has accepted and nobody is cancelling."""
    if open_quantity <= 0 or (latest_exit is not None and latest_exit.status.is_working):
        return None
    stop_id = bracket.stop_order_id
    stop = orders.get(stop_id) if stop_id is not None else None
    if stop is None or stop.status not in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
        return None
    return stop


def _current_sibling(bracket: Bracket, kind: LegKind) -> str | None:
    return bracket.stop_order_id if kind is LegKind.STOP else bracket.target_order_id


def _advance_sibling(bracket: Bracket, kind: LegKind) -> str:
    # The first leg of a kind takes sequence 0; each replacement the next number.
    if kind is LegKind.STOP:
        if bracket.stop_order_id is not None:
            bracket.stop_sequence += 1
        bracket.stop_order_id = client_order_id(
            bracket.plan_client_id, LegKind.STOP, bracket.stop_sequence
        )
        return bracket.stop_order_id
    if bracket.target_order_id is not None:
        bracket.target_sequence += 1
    bracket.target_order_id = client_order_id(
        bracket.plan_client_id, LegKind.TARGET, bracket.target_sequence
    )
    return bracket.target_order_id


def _place_sibling(bracket: Bracket, kind: LegKind, leg_id: str, quantity: int) -> PlaceLeg:
    if kind is LegKind.STOP:
        return PlaceLeg(
            leg=LegKind.STOP,
            client_order_id=leg_id,
            side=bracket.side.opposite,
            order_type=OrderType.STOP,
            quantity=quantity,
            trigger_price=bracket.stop_price,
        )
    return PlaceLeg(
        leg=LegKind.TARGET,
        client_order_id=leg_id,
        side=bracket.side.opposite,
        order_type=OrderType.LIMIT,
        quantity=quantity,
        price=bracket.target_price,
    )
