"""The trading-day schedule rules (domain/schedule.py): phases, marks, session days."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.clock import NANOS_PER_SECOND
from domain.config import SchedulerConfig
from domain.schedule import Phase, ScheduledAction, SessionDays, TradingSchedule

IST = ZoneInfo("Asia/Kolkata")
# The library's answer for the first weeks of 2026 (XNSE): weekdays minus Jan 15 and Jan 26.
KNOWN_FIRST, KNOWN_LAST = date(2026, 1, 1), date(2026, 1, 31)
KNOWN = {
    KNOWN_FIRST + timedelta(days=n)
    for n in range(31)
    if (KNOWN_FIRST + timedelta(days=n)).weekday() < 5
} - {date(2026, 1, 15), date(2026, 1, 26)}


def schedule(
    extra_holidays: tuple[date, ...] = (), extra_sessions: tuple[date, ...] = ()
) -> TradingSchedule:
    return TradingSchedule(
        tz="Asia/Kolkata",
        session_open=time(9, 15),
        tighten_at=time(15, 20),
        flat_at=time(15, 25),
        session_close=time(15, 30),
        days=SessionDays.build(
            KNOWN,
            KNOWN_FIRST,
            KNOWN_LAST,
            extra_holidays=extra_holidays,
            extra_sessions=extra_sessions,
        ),
    )


def ist_ns(day: date, clock: time, nanos: int = 0) -> int:
    local = datetime.combine(day, clock, tzinfo=IST)
    return int(local.timestamp()) * NANOS_PER_SECOND + nanos


MONDAY = date(2026, 1, 5)


@pytest.mark.parametrize(
    ("clock", "nanos", "phase"),
    [
        (time(9, 14, 59), 999_999_999, Phase.CLOSED),
        (time(9, 15), 0, Phase.OPEN),
        (time(15, 19, 59), 999_999_999, Phase.OPEN),
        (time(15, 20), 0, Phase.TIGHTEN),
        (time(15, 24, 59), 0, Phase.TIGHTEN),
        (time(15, 25), 0, Phase.FLAT),
        (time(15, 29, 59), 0, Phase.FLAT),
        (time(15, 30), 0, Phase.CLOSED),
        (time(0, 0), 0, Phase.CLOSED),
    ],
)
def test_the_phases_of_a_session_day(clock: time, nanos: int, phase: Phase) -> None:
    assert schedule().phase_at(ist_ns(MONDAY, clock, nanos)) == (phase, MONDAY)


def test_weekends_library_holidays_and_configured_days() -> None:
    noon = time(12, 0)
    assert schedule().phase_at(ist_ns(date(2026, 1, 10), noon))[0] is Phase.CLOSED  # Saturday
    assert schedule().phase_at(ist_ns(date(2026, 1, 26), noon))[0] is Phase.CLOSED  # library
    closed = schedule(extra_holidays=(MONDAY,))
    assert closed.phase_at(ist_ns(MONDAY, noon))[0] is Phase.CLOSED
    special = schedule(extra_sessions=(date(2026, 1, 10),))
    assert special.phase_at(ist_ns(date(2026, 1, 10), noon))[0] is Phase.OPEN
    # Past the library's window: weekdays trade, weekends do not, the config still closes.
    assert schedule().phase_at(ist_ns(date(2026, 3, 2), noon))[0] is Phase.OPEN
    assert schedule().phase_at(ist_ns(date(2026, 3, 7), noon))[0] is Phase.CLOSED
    later = schedule(extra_holidays=(date(2026, 3, 2),))
    assert later.phase_at(ist_ns(date(2026, 3, 2), noon))[0] is Phase.CLOSED


def test_the_next_event_skips_a_weekend_and_a_holiday() -> None:
    friday_close = ist_ns(date(2026, 1, 23), time(15, 30))
    upcoming = schedule().next_event(friday_close)
    assert upcoming is not None
    # Saturday, Sunday, Monday 26 January (Republic Day): Tuesday's open.
    assert upcoming.describe() == "SESSION_OPEN at 2026-01-27T09:15:00+05:30"
    assert upcoming.action is ScheduledAction.SESSION_OPEN


def test_times_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="SCHEDULE_TIMES"):
        TradingSchedule(
            tz="Asia/Kolkata",
            session_open=time(9, 15),
            tighten_at=time(15, 26),
            flat_at=time(15, 25),
            session_close=time(15, 30),
            days=SessionDays(),
        )


_INSTANTS = st.integers(
    min_value=ist_ns(date(2025, 12, 20), time(0)), max_value=ist_ns(date(2026, 3, 20), time(0))
)
_DAYS = st.dates(min_value=date(2025, 12, 20), max_value=date(2026, 3, 20))


@settings(max_examples=300, deadline=None)
@given(now=_INSTANTS, holidays=st.frozensets(_DAYS, max_size=5))
def test_entries_are_allowed_exactly_inside_a_session_before_the_tighten(
    now: int, holidays: frozenset[date]
) -> None:
    rules = schedule(extra_holidays=tuple(holidays))
    phase, day = rules.phase_at(now)
    local = datetime.fromtimestamp(now // NANOS_PER_SECOND, tz=IST)
    assert day == local.date()
    session = local.date() not in holidays and (
        local.date() in KNOWN if KNOWN_FIRST <= local.date() <= KNOWN_LAST else local.weekday() < 5
    )
    assert phase.entries_allowed == (session and time(9, 15) <= local.time() < time(15, 20))
    if phase is Phase.FLAT:
        assert rules.due_action(now) == (ScheduledAction.HARD_FLAT, day)


@settings(max_examples=300, deadline=None)
@given(now=_INSTANTS)
def test_the_next_event_is_the_first_mark_after_now_and_starts_its_phase(now: int) -> None:
    rules = schedule()
    upcoming = rules.next_event(now)
    assert upcoming is not None
    assert upcoming.at_ns > now
    # The phase changes only at a mark: just before it, still the phase of now; at the mark,
    # the action's.
    assert rules.phase_at(upcoming.at_ns - 1)[0] is rules.phase_at(now)[0]
    expected = {
        ScheduledAction.SESSION_OPEN: Phase.OPEN,
        ScheduledAction.TIGHTEN_STOPS: Phase.TIGHTEN,
        ScheduledAction.HARD_FLAT: Phase.FLAT,
        ScheduledAction.SESSION_CLOSE: Phase.CLOSED,
    }[upcoming.action]
    assert rules.phase_at(upcoming.at_ns) == (expected, upcoming.trading_day)


def test_the_scheduler_config_refuses_times_out_of_order_and_unknown_zones() -> None:
    with pytest.raises(ValidationError, match="session_open < tighten_at"):
        SchedulerConfig(tighten_at=time(15, 26))
    with pytest.raises(ValidationError, match="unknown time zone"):
        SchedulerConfig(timezone="Asia/Nowhere")
    with pytest.raises(ValidationError, match="both holiday and session"):
        SchedulerConfig(extra_holidays=(MONDAY,), extra_sessions=(MONDAY,))
    # Existing profiles load: off by default, NSE hours.
    default = SchedulerConfig()
    assert not default.enabled and default.calendar == "XNSE"
    assert (default.tighten_at, default.flat_at) == (time(15, 20), time(15, 25))


def test_the_holiday_list_reaches_the_later_of_the_library_and_the_configured_years() -> None:
    library = date(2026, 12, 31)
    assert SessionDays.build((), None, None).holidays_known_through is None
    assert (
        SessionDays.build(
            (), None, None, extra_holidays=(date(2027, 1, 26),)
        ).holidays_known_through
        is None
    )
    days = SessionDays.build((), None, None, library_holidays_through=library)
    assert days.holidays_known_through == library and days.config_holidays_through is None
    configured = SessionDays.build(
        (), None, None, library_holidays_through=library, extra_holidays=(date(2027, 1, 26),)
    )
    assert configured.holidays_known_through == date(2027, 12, 31)
    older = SessionDays.build(
        (), None, None, library_holidays_through=library, extra_holidays=(date(2025, 3, 1),)
    )
    assert older.holidays_known_through == library


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2026, 12, 1), None),  # 30 days before the end: the list still reaches
        (date(2026, 12, 2), "HOLIDAYS_UNKNOWN_SOON: the exchange holiday list ends 2026-12-31"),
        (date(2026, 12, 31), "HOLIDAYS_UNKNOWN_SOON: the exchange holiday list ends 2026-12-31"),
        (date(2027, 1, 1), "HOLIDAYS_UNKNOWN: no exchange holiday list for today 2027-01-01"),
    ],
)
def test_the_holiday_list_warning_starts_30_days_before_its_end(
    today: date, expected: str | None
) -> None:
    rules = TradingSchedule(
        tz="Asia/Kolkata",
        session_open=time(9, 15),
        tighten_at=time(15, 20),
        flat_at=time(15, 25),
        session_close=time(15, 30),
        days=SessionDays.build((), None, None, library_holidays_through=date(2026, 12, 31)),
    )
    now = int(datetime.combine(today, time(10, 0), tzinfo=IST).timestamp()) * NANOS_PER_SECOND
    warning = rules.holiday_list_warning(now, calendar="XNSE")
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and warning.startswith(expected)
        assert "scheduler.extra_holidays" in warning
