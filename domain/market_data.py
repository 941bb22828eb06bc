"""Market-data sanity: the one rule that decides whether a tick may reach the engine.

``tick_rejection(tick, instrument, previous)`` returns ``None`` for a usable tick, or the
``TickRejection`` code that says why it is not. It is pure (no clock, no I/O) and it never
raises, whatever the tick holds: a feed that delivers garbage must cost a counter increment,
not an actor.

Why the order of the checks matters: ``Decimal`` comparisons with a NaN raise
``InvalidOperation`` (a signalling NaN raises even on ``==``), and arithmetic on a finite but
huge value such as ``1E+999999`` overflows. So types are checked first, then NaN and infinity
with ``is_nan()``/``is_infinite()`` (which never raise), then size and precision, and only
then does anything compare prices.

What counts as absurd: a price more than ``ABSURD_PRICE_MULTIPLE`` times above or below the
instrument's ``reference_price``, or written with more than ``MAX_PRICE_DIGITS`` significant
digits. The circuit band itself (``Instrument.band()``) is deliberately not the limit: the
configured reference price is a previous close that can be days old, and rejecting every tick
of an instrument that has since moved past it would blind the engine. The multiple only has to
catch values no market prints (a decimal point lost, an exponent gone wild).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from domain.messages.market import Tick

if TYPE_CHECKING:
    from domain.instruments import Instrument

__all__ = [
    "ABSURD_PRICE_MULTIPLE",
    "MAX_PRICE_DIGITS",
    "MAX_PRICE_EXPONENT",
    "MAX_TIMESTAMP_NS",
    "TickRejection",
    "quote_rejection",
    "tick_rejection",
]

ABSURD_PRICE_MULTIPLE = Decimal(10)
"""A price above ``reference * 10`` or below ``reference / 10`` is not a market price."""

MAX_PRICE_DIGITS = 20
"""More significant digits than any exchange's tick grid needs (and below the default
28-digit context, so arithmetic on an accepted price never rounds silently)."""

MAX_PRICE_EXPONENT = 12
"""A price of 1E+13 or more, or below 1E-12, is no quote on any market (and its arithmetic
could overflow or underflow the decimal context)."""

MAX_TIMESTAMP_NS = 2**63 - 1
"""Epoch nanoseconds must fit a signed 64-bit integer (storage, metrics, msgspec)."""

_PRICE_FIELDS = ("bid", "ask", "last")
_SIZE_FIELDS = ("bid_size", "ask_size", "volume")


class TickRejection(StrEnum):
    """Why a tick was dropped; the value is the ``reason`` label of
    ``trader_ticks_rejected_total``."""

    NOT_A_TICK = "NOT_A_TICK"
    """The feed delivered something that is not a ``Tick`` at all."""
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    """The symbol is not configured (or is not a string)."""
    BAD_PRICE_TYPE = "BAD_PRICE_TYPE"
    """A price is not a ``Decimal`` (a float, a string, None...)."""
    NOT_A_NUMBER = "NOT_A_NUMBER"
    """A price is NaN or sNaN."""
    INFINITE = "INFINITE"
    """A price is +/-Infinity."""
    NON_POSITIVE_PRICE = "NON_POSITIVE_PRICE"
    """A price is zero or negative."""
    ABSURD_PRICE = "ABSURD_PRICE"
    """A price is finite and positive but no market prints it (see the module docstring)."""
    CROSSED_QUOTE = "CROSSED_QUOTE"
    """``bid > ask`` (a locked quote, ``bid == ask``, is accepted)."""
    BAD_SIZE = "BAD_SIZE"
    """A size or the volume is not a non-negative whole number."""
    BAD_TIMESTAMP = "BAD_TIMESTAMP"
    """``ts_event``/``ts_init`` is not a positive 64-bit count of epoch nanoseconds."""
    OUT_OF_ORDER = "OUT_OF_ORDER"
    """``ts_event`` is earlier than the previous accepted tick's for the same instrument."""
    BAD_ROW = "BAD_ROW"
    """A row of a replayed file could not be read as a tick at all (counted by the replay)."""
    INVALID = "INVALID"
    """The checks themselves failed on this tick; a safety net that should never count."""


def tick_rejection(
    tick: Any, instrument: Instrument | None, previous: Tick | None
) -> TickRejection | None:
    """Decide whether ``tick`` may be passed on to strategies, risk, orders and the venue.

    Args:
        tick: what the feed delivered; anything at all is handled.
        instrument: the configured instrument for ``tick.instrument``, or None if unknown.
        previous: the last tick accepted for this instrument, if any.

    Returns:
        None if the tick is usable, else the first reason it is not (checks run in the order
        of ``TickRejection``'s members that apply: identity, price type, NaN, infinity,
        sign, magnitude, crossed, sizes, timestamps, order). Never raises.
    """
    try:
        return _first_rejection(tick, instrument, previous)
    except Exception:
        # Every check above is written not to raise; this keeps the promise if one ever does.
        return TickRejection.INVALID


def quote_rejection(tick: Any, instrument: Instrument | None) -> TickRejection | None:
    """The price part of ``tick_rejection`` alone: whether a consumer that fills money on this
    quote (the paper venue) may use it. Sizes, timestamps and ordering are the feed's business.
    Never raises."""
    try:
        if not isinstance(tick, Tick):
            return TickRejection.NOT_A_TICK
        if instrument is None or instrument.symbol != tick.instrument:
            return TickRejection.UNKNOWN_INSTRUMENT
        prices = [getattr(tick, field) for field in _PRICE_FIELDS]
        # No reference-price bound here: how far from the reference a price may be is the
        # feed's policy; the venue needs numbers it can do arithmetic with.
        reason = _price_rejection(prices, None)
        if reason is None and tick.bid > tick.ask:
            return TickRejection.CROSSED_QUOTE
        return reason
    except Exception:
        return TickRejection.INVALID


def _first_rejection(
    tick: Any, instrument: Instrument | None, previous: Tick | None
) -> TickRejection | None:
    if _plainly_usable(tick, instrument, previous):
        return None
    if not isinstance(tick, Tick):
        return TickRejection.NOT_A_TICK
    if instrument is None or not isinstance(tick.instrument, str):
        return TickRejection.UNKNOWN_INSTRUMENT
    if instrument.symbol != tick.instrument:
        return TickRejection.UNKNOWN_INSTRUMENT
    prices = [getattr(tick, field) for field in _PRICE_FIELDS]
    price_reason = _price_rejection(prices, instrument.reference_price)
    if price_reason is not None:
        return price_reason
    if tick.bid > tick.ask:
        return TickRejection.CROSSED_QUOTE
    for field in _SIZE_FIELDS:
        size = getattr(tick, field)
        if not _is_whole_number(size) or size < 0:
            return TickRejection.BAD_SIZE
    for timestamp in (tick.ts_event, tick.ts_init):
        if not _is_whole_number(timestamp) or not 0 < timestamp <= MAX_TIMESTAMP_NS:
            return TickRejection.BAD_TIMESTAMP
    if previous is not None and tick.ts_event < previous.ts_event:
        return TickRejection.OUT_OF_ORDER
    return None


def _plainly_usable(tick: Any, instrument: Instrument | None, previous: Tick | None) -> bool:
    """True when every check of ``_first_rejection`` passes: the common case, in one pass of
    plain comparisons (this runs for every tick, at the edge of the engine). False sends the
    tick through the ordered checks, which name the first reason; so does anything unusual
    (a subclass, a NaN, a price near the digit or exponent limits)."""
    if type(tick) is not Tick or instrument is None:
        return False
    symbol = tick.instrument
    bid = tick.bid
    ask = tick.ask
    last = tick.last
    if (
        type(symbol) is not str
        or symbol != instrument.symbol
        or type(bid) is not Decimal
        or type(ask) is not Decimal
        or type(last) is not Decimal
    ):
        return False
    bounds = _fast_bounds(instrument.reference_price)
    if bounds is None:
        return False
    lower, upper = bounds
    try:
        # Ordered comparisons of a NaN raise (caught: the ordered checks name it); infinities
        # and non-positive prices fall outside the bounds, which are positive and finite and
        # lie within the exponent limit (so every price between them does too).
        if not (lower <= bid <= ask <= upper and lower <= last <= upper):
            return False
    except ArithmeticError:
        return False
    # A price between the bounds can still be written with too many digits; its text is at
    # least as long as its digits, so a short text settles it without building the tuple.
    if len(str(bid)) > MAX_PRICE_DIGITS or len(str(ask)) > MAX_PRICE_DIGITS:
        return False
    if len(str(last)) > MAX_PRICE_DIGITS:
        return False
    bid_size = tick.bid_size
    ask_size = tick.ask_size
    volume = tick.volume
    if type(bid_size) is not int or type(ask_size) is not int or type(volume) is not int:
        return False
    if bid_size < 0 or ask_size < 0 or volume < 0:
        return False
    ts_event = tick.ts_event
    ts_init = tick.ts_init
    if type(ts_event) is not int or type(ts_init) is not int:
        return False
    if not (0 < ts_event <= MAX_TIMESTAMP_NS and 0 < ts_init <= MAX_TIMESTAMP_NS):
        return False
    return previous is None or ts_event >= previous.ts_event


_FAST_BOUNDS: dict[Decimal, tuple[Decimal, Decimal] | None] = {}


def _fast_bounds(reference: Any) -> tuple[Decimal, Decimal] | None:
    """The absurd-price bounds of a reference price when every price between them passes the
    sign and exponent checks too; None when they do not (then the ordered checks decide)."""
    try:
        return _FAST_BOUNDS[reference]
    except KeyError:
        pass
    except TypeError:  # an unhashable reference: no memo
        return None
    bounds: tuple[Decimal, Decimal] | None = None
    if type(reference) is Decimal and reference.is_finite() and reference > 0:
        lower = reference / ABSURD_PRICE_MULTIPLE
        upper = reference * ABSURD_PRICE_MULTIPLE
        if lower.adjusted() >= -MAX_PRICE_EXPONENT and upper.adjusted() <= MAX_PRICE_EXPONENT:
            bounds = (lower, upper)
    if len(_FAST_BOUNDS) < 1024:  # one entry per configured reference price in practice
        _FAST_BOUNDS[reference] = bounds
    return bounds


def _price_rejection(prices: list[Any], reference: Decimal | None) -> TickRejection | None:
    if _plainly_valid(prices, reference):
        return None
    # One pass per check over all three prices, so a NaN anywhere is reported as NaN before
    # another field's sign or size is looked at (which would have to compare the NaN).
    if not all(isinstance(price, Decimal) for price in prices):
        return TickRejection.BAD_PRICE_TYPE
    if any(price.is_nan() for price in prices):  # is_nan() covers sNaN and never raises
        return TickRejection.NOT_A_NUMBER
    if any(price.is_infinite() for price in prices):
        return TickRejection.INFINITE
    if any(price.is_zero() or price.is_signed() for price in prices):
        return TickRejection.NON_POSITIVE_PRICE
    for price in prices:
        if (
            len(price.as_tuple().digits) > MAX_PRICE_DIGITS
            or abs(price.adjusted()) > MAX_PRICE_EXPONENT
        ):
            return TickRejection.ABSURD_PRICE
    if reference is None:
        return None
    upper = reference * ABSURD_PRICE_MULTIPLE
    lower = reference / ABSURD_PRICE_MULTIPLE
    for price in prices:
        # Comparisons of finite decimals are exact and cannot overflow, even for 1E+999999.
        if price > upper or price < lower:
            return TickRejection.ABSURD_PRICE
    return None


def _plainly_valid(prices: list[Any], reference: Decimal | None) -> bool:
    """True when every check below passes for every price: the common case, decided in one
    pass (a tick is validated by the feed and again by the venue, every tick). False sends the
    prices through the ordered checks, which name the first reason; a Decimal subclass always
    goes that way."""
    bounds = None if reference is None else _reference_bounds(reference)
    for price in prices:
        if type(price) is not Decimal:
            return False
        if not price.is_finite() or price.is_zero() or price.is_signed():
            return False
        adjusted = price.adjusted()
        if adjusted > MAX_PRICE_EXPONENT or adjusted < -MAX_PRICE_EXPONENT:
            return False
        if len(price.as_tuple().digits) > MAX_PRICE_DIGITS:
            return False
        if bounds is not None and (price > bounds[1] or price < bounds[0]):
            return False
    return True


@lru_cache(maxsize=256)
def _reference_bounds(reference: Decimal) -> tuple[Decimal, Decimal]:
    # Equal references (100 and 100.0) give equal bounds; comparisons are by value.
    return reference / ABSURD_PRICE_MULTIPLE, reference * ABSURD_PRICE_MULTIPLE


def _is_whole_number(value: Any) -> bool:
    # bool is an int subclass; True as a size or a timestamp is a bug, not a number.
    return isinstance(value, int) and not isinstance(value, bool)
