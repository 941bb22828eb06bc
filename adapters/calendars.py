"""Exchange session days from a maintained calendar library (``pandas-market-calendars``).

The library brings pandas and does real work at import and on each query, so it lives here,
not in ``domain/``: ``load_schedule`` asks it once for the session dates of a window around
today and hands ``domain.schedule`` a plain ``TradingSchedule``. The NSE calendar ("XNSE",
alias "NSE") carries the exchange's published holidays; past the last published year the
library answers every weekday, and the configuration's ``extra_holidays`` close the days it
does not know yet. How far the library's holiday list reaches is handed on too
(``SessionDays.library_holidays_through``), so the scheduler can say when it runs out.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING

from domain.schedule import SessionDays, TradingSchedule

if TYPE_CHECKING:
    from domain.config import SchedulerConfig

__all__ = ["CalendarUnavailable", "load_schedule"]

logger = logging.getLogger(__name__)

# The window asked of the library: a week back (a restart on a Monday morning still knows
# Friday) and a little over a year ahead. Past it, weekdays are sessions (see domain.schedule).
_BACK_DAYS = 7
_AHEAD_DAYS = 400


class CalendarUnavailable(Exception):
    """The calendar library is missing or does not know the configured calendar."""


def load_schedule(config: SchedulerConfig, today: date) -> TradingSchedule:
    """The schedule of ``config`` with the library's session days around ``today``.

    Raises:
        CalendarUnavailable: the library is not installed, or ``config.calendar`` is not one
            of its calendars (the message lists a few it has).
    """
    try:
        import pandas_market_calendars as mcal
    except ImportError as error:  # pragma: no cover - a dependency of the project
        raise CalendarUnavailable(
            "pandas-market-calendars is not installed (pip install -e .): the scheduler needs "
            "it for exchange holidays"
        ) from error
    try:
        calendar = mcal.get_calendar(config.calendar)
    except (RuntimeError, KeyError, ValueError) as error:
        names = sorted(name for name in mcal.get_calendar_names() if "NSE" in name or "BOM" in name)
        raise CalendarUnavailable(
            f"scheduler.calendar {config.calendar!r} is not a pandas-market-calendars calendar "
            f"(Indian ones: {names})"
        ) from error
    first = today - timedelta(days=_BACK_DAYS)
    last = today + timedelta(days=_AHEAD_DAYS)
    valid = calendar.valid_days(start_date=first.isoformat(), end_date=last.isoformat())
    known = {stamp.date() for stamp in valid}
    library_through = _library_holidays_through(calendar)
    return TradingSchedule(
        tz=config.timezone,
        session_open=config.session_open,
        tighten_at=config.tighten_at,
        flat_at=config.flat_at,
        session_close=config.session_close,
        days=SessionDays.build(
            known,
            first,
            last,
            extra_holidays=config.extra_holidays,
            extra_sessions=config.extra_sessions,
            library_holidays_through=library_through,
        ),
    )


def _library_holidays_through(calendar: object) -> date | None:
    """The end of the last year the library lists a holiday in for ``calendar``: its holiday
    list is published a year at a time (pandas-market-calendars 5.5 has XNSE through 2026).
    None when it lists none or cannot say (logged: the reach is then not judged)."""
    try:
        holidays = calendar.holidays().holidays  # type: ignore[attr-defined]
    except Exception as error:
        logger.warning("exchange calendar: its holiday list could not be read (%r)", error)
        return None
    if len(holidays) == 0:
        return None
    last = max(holidays)
    return date(int(str(last)[:4]), 12, 31)
