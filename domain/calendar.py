"""The exchange calendar: which trading day an instant belongs to (NSE: Asia/Kolkata)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from domain.clock import NANOS_PER_SECOND

__all__ = ["EXCHANGE_TZ", "start_of_trading_day_ns", "trading_day"]

EXCHANGE_TZ = ZoneInfo("Asia/Kolkata")


def trading_day(now_ns: int, tz: ZoneInfo = EXCHANGE_TZ) -> str:
    """The exchange-local calendar date of ``now_ns`` (UTC epoch ns), as ``YYYY-MM-DD``."""
    return _local(now_ns, tz).date().isoformat()


def start_of_trading_day_ns(now_ns: int, tz: ZoneInfo = EXCHANGE_TZ) -> int:
    """Epoch ns of local midnight starting the trading day that contains ``now_ns``."""
    local_midnight = datetime.combine(_local(now_ns, tz).date(), time(0), tzinfo=tz)
    return int(local_midnight.timestamp()) * NANOS_PER_SECOND


def _local(now_ns: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(now_ns / NANOS_PER_SECOND, tz=UTC).astimezone(tz)
