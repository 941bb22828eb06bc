"""The exchange calendar: which trading day an instant belongs to, in the exchange's time zone.

One definition for everything that is "per trading day": realized PnL today and the daily
counters (``actors.order_portfolio``), the day figures (``domain.day_figures``,
``adapters.storage.day_figures``) and the post-close report (``tools.post_close``). A trading
day is the exchange-local calendar date; it starts at local midnight in the configured exchange
zone (``scheduler.timezone``, Asia/Kolkata by default: ``EXCHANGE_TZ``). Callers pass the zone
they were configured with (``exchange_zone``); the default exists for tools and tests that have
no configuration. Pure: time comes in as epoch nanoseconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain.clock import NANOS_PER_SECOND

__all__ = [
    "EXCHANGE_TZ",
    "day_bounds_ns",
    "exchange_zone",
    "start_of_trading_day_ns",
    "trading_day",
]

EXCHANGE_TZ = ZoneInfo("Asia/Kolkata")


def exchange_zone(name: str | None) -> ZoneInfo:
    """The zone called ``name`` (an IANA name such as ``Asia/Kolkata``); ``EXCHANGE_TZ`` for None.

    Raises:
        zoneinfo.ZoneInfoNotFoundError: ``name`` is not a known time zone.
    """
    return EXCHANGE_TZ if name is None else ZoneInfo(name)


def trading_day(now_ns: int, tz: ZoneInfo = EXCHANGE_TZ) -> str:
    """The exchange-local calendar date of ``now_ns`` (UTC epoch ns), as ``YYYY-MM-DD``."""
    return _local(now_ns, tz).date().isoformat()


def start_of_trading_day_ns(now_ns: int, tz: ZoneInfo = EXCHANGE_TZ) -> int:
    """Epoch ns of local midnight starting the trading day that contains ``now_ns``."""
    return _midnight_ns(_local(now_ns, tz).date(), tz)


def day_bounds_ns(day: str, tz: ZoneInfo = EXCHANGE_TZ) -> tuple[int, int]:
    """``[start, end)`` in epoch ns of the trading day ``day`` (``YYYY-MM-DD``) in ``tz``: from
    its local midnight to the next one (not always 24 h: a zone with DST has 23 and 25 h days).

    Raises:
        ValueError: ``day`` is not a ``YYYY-MM-DD`` date.
    """
    parsed = date.fromisoformat(day)
    return _midnight_ns(parsed, tz), _midnight_ns(parsed + timedelta(days=1), tz)


def _midnight_ns(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tzinfo=tz).timestamp()) * NANOS_PER_SECOND


def _local(now_ns: int, tz: ZoneInfo) -> datetime:
    # Whole seconds, floored in integers: a day starts on a whole second, and a float division
    # of epoch ns rounds an instant a few hundred ns before midnight into the next day.
    return datetime.fromtimestamp(now_ns // NANOS_PER_SECOND, tz=UTC).astimezone(tz)
