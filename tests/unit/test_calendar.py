from __future__ import annotations

from datetime import UTC, datetime

from domain.calendar import start_of_trading_day_ns, trading_day
from domain.clock import NANOS_PER_SECOND


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp()) * NANOS_PER_SECOND


def test_the_trading_day_follows_india_time_not_utc() -> None:
    assert trading_day(ns("2026-11-25T18:29:59+00:00")) == "2026-11-25"
    assert trading_day(ns("2026-11-25T18:30:00+00:00")) == "2026-11-26"  # IST midnight


def test_the_day_starts_at_local_midnight() -> None:
    assert start_of_trading_day_ns(ns("2026-11-25T10:00:00+05:30")) == ns(
        "2026-11-25T00:00:00+05:30"
    )
