"""When an entry order may no longer go to the broker: its trading day and its time to live.

An entry is a bet on the market as it was when the strategy saw it. Minutes later (a restart,
a lost answer settled late) or on another trading day it is a different bet that nobody made,
so an expired entry is never sent or resent, and a working one is cancelled.

Every entry carries its trading day: the exchange-local date of ``ts_created``, the instant its
write-ahead row was stored (``domain.calendar.trading_day``). Pure: time comes in as ``now_ns``.
Exits and protective legs never expire: they only reduce exposure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.calendar import trading_day
from domain.clock import NANOS_PER_SECOND
from domain.enums import LegKind

if TYPE_CHECKING:
    from domain.orders import Order

__all__ = ["EXPIRED", "entry_expiry", "entry_trading_day"]

EXPIRED = "EXPIRED"


def entry_trading_day(order: Order) -> str:
    """The trading day (``YYYY-MM-DD``, exchange-local) the order was created on."""
    return trading_day(order.ts_created)


def entry_expiry(order: Order, *, now_ns: int, ttl_s: float) -> str | None:
    """Why ``order`` may no longer be sent or kept working, or None while it may.

    Only entries expire. An entry created on an earlier trading day expires at once, whatever
    its age; otherwise it expires ``ttl_s`` seconds after its creation.

    Returns:
        A reason opening with ``EXPIRED:``, e.g. ``EXPIRED: trading day 2026-11-27 is over``
        or ``EXPIRED: entry_ttl_s=120 age_s=840.0``, or None.
    """
    if order.leg is not LegKind.ENTRY:
        return None
    created_day = entry_trading_day(order)
    if created_day < trading_day(now_ns):  # ISO dates sort as strings
        return f"{EXPIRED}: trading day {created_day} is over"
    age_ns = now_ns - order.ts_created
    if age_ns >= ttl_s * NANOS_PER_SECOND:
        return f"{EXPIRED}: entry_ttl_s={ttl_s:g} age_s={age_ns / NANOS_PER_SECOND:.1f}"
    return None
