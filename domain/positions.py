"""Net position in one instrument and its PnL, built from fills by the average-cost method.

Owns the arithmetic only: increases, reductions, closes and flips through zero. Pure and exact
in ``Decimal``: the position carries ``cost_basis``, the exact cost of its open quantity, so
``realized_pnl + unrealized_pnl(mark)`` always equals the cash flow of the fills plus the open
quantity valued at ``mark``, to the last digit, however many fills were applied.

The one rounding that average cost cannot avoid: a partial reduction relieves
``cost_basis * closed / open`` of cost, which may not be a finite decimal (100.05 + 2 x 100.10,
then sell 1). Only then is the relieved cost rounded, to 1e-10; the remainder stays in
``cost_basis``, so nothing is lost and a full close realises it exactly.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

import msgspec

from domain.enums import Side

__all__ = ["Position", "apply_fill", "flat", "unrealized_pnl"]

_ZERO = Decimal(0)
_COST_QUANTUM = Decimal("1e-10")
_PRICE_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
_WIDE = Context(prec=60, rounding=ROUND_HALF_EVEN)


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """A net position: a value object, replaced by ``apply_fill``.

    Attributes:
        instrument: the instrument's symbol.
        quantity: signed, + long / - short, 0 flat.
        average_price: ``cost_basis / abs(quantity)`` (0 when flat), for display and risk.
        realized_pnl: PnL booked by reductions, cumulative over the life of this value.
        cost_basis: the exact cost of the open quantity (price x quantity summed, unsigned).
            ``None`` means ``average_price * abs(quantity)``, for a position built from a
            broker report; every position ``apply_fill`` returns has it set.
    """

    instrument: str
    quantity: int
    average_price: Decimal
    realized_pnl: Decimal
    cost_basis: Decimal | None = None


def flat(instrument: str) -> Position:
    """A flat position with nothing realized."""
    return Position(
        instrument=instrument,
        quantity=0,
        average_price=_ZERO,
        realized_pnl=_ZERO,
        cost_basis=_ZERO,
    )


def apply_fill(position: Position, side: Side, quantity: int, price: Decimal) -> Position:
    """Return the position after one fill of ``quantity`` at ``price`` on ``side``.

    A fill on the side of the position (or on a flat one) increases it and re-averages; a fill
    on the other side reduces it and realises ``(price - average) x closed`` (sign-adjusted
    for shorts); a fill larger than the position closes it and opens the rest the other way
    at ``price``.

    Raises:
        ValueError: ``quantity`` is not positive.
    """
    if quantity <= 0:
        raise ValueError(
            f"FILL_QUANTITY_NOT_POSITIVE: instrument={position.instrument} quantity={quantity}"
        )
    held = position.quantity
    cost = _cost_basis(position)
    direction = side.sign
    if held == 0 or (held > 0) == (direction > 0):
        new_cost = _WIDE.add(cost, _WIDE.multiply(price, Decimal(quantity)))
        return _position(position, held + direction * quantity, new_cost, position.realized_pnl)

    size = abs(held)
    closed = min(quantity, size)
    relieved = cost if closed == size else _relieved_cost(cost, closed, size)
    proceeds = _WIDE.multiply(price, Decimal(closed))
    # A long realises sale proceeds minus cost; a short realises cost minus what buying back paid.
    gain = _WIDE.subtract(proceeds, relieved) if held > 0 else _WIDE.subtract(relieved, proceeds)
    realized = _WIDE.add(position.realized_pnl, gain)
    left_over = quantity - closed
    if left_over == 0:
        remaining = held + direction * closed
        return _position(position, remaining, _WIDE.subtract(cost, relieved), realized)
    flipped_cost = _WIDE.multiply(price, Decimal(left_over))
    return _position(position, direction * left_over, flipped_cost, realized)


def unrealized_pnl(position: Position, mark_price: Decimal) -> Decimal:
    """The open quantity's PnL if it were closed at ``mark_price`` (0 when flat)."""
    if position.quantity == 0:
        return _ZERO
    value = _WIDE.multiply(mark_price, Decimal(abs(position.quantity)))
    cost = _cost_basis(position)
    return _WIDE.subtract(value, cost) if position.quantity > 0 else _WIDE.subtract(cost, value)


def _cost_basis(position: Position) -> Decimal:
    if position.cost_basis is not None:
        return position.cost_basis
    return _WIDE.multiply(position.average_price, Decimal(abs(position.quantity)))


def _relieved_cost(cost: Decimal, closed: int, size: int) -> Decimal:
    numerator = _WIDE.multiply(cost, Decimal(closed))
    share = _PRICE_CONTEXT.divide(numerator, Decimal(size))
    if _WIDE.multiply(share, Decimal(size)) == numerator:
        return share
    return share.quantize(_COST_QUANTUM, context=_WIDE)


def _position(previous: Position, quantity: int, cost: Decimal, realized: Decimal) -> Position:
    if quantity == 0:
        return Position(
            instrument=previous.instrument,
            quantity=0,
            average_price=_ZERO,
            realized_pnl=realized,
            cost_basis=_ZERO,
        )
    average = _tidy(_PRICE_CONTEXT.divide(cost, Decimal(abs(quantity))))
    return Position(
        instrument=previous.instrument,
        quantity=quantity,
        average_price=average,
        realized_pnl=realized,
        cost_basis=cost,
    )


def _tidy(value: Decimal) -> Decimal:
    # Drop trailing zeros so 100.50000 prints as 100.5, without turning 1000 into 1E+3.
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize(_PRICE_CONTEXT)
