"""The trading-day schedule: which phase an instant is in and what is due next. Pure.

The day of an exchange (NSE by default, in its own time zone) has four marks: the session
opens (09:15), entries stop and every stop is tightened (15:20), everything is flattened
(15:25), the session closes (15:30). Between them lie the phases:

- ``OPEN``: from the open to the tighten time, on a session day. The only phase in which
  entries may go out.
- ``TIGHTEN``: from the tighten time to the flat time. No entries; stops tightened once.
- ``FLAT``: from the flat time to the close. No entries; the book is flattened once.
- ``CLOSED``: every other instant (before the open, after the close, weekends, holidays).

The scheduler actor acts on the phase, not on the crossing of a mark: an engine started (or a
clock that jumps) at 15:22 still tightens, one started at 15:27 flattens without tightening
first, and one started on a Saturday only holds entries back. Each action is done once per
trading day (the actor remembers which), so a timer every 100 ms does not repeat it.

Which days are sessions: ``SessionDays`` holds the session dates a maintained calendar library
gave for a window (``adapters.calendars`` asks ``pandas-market-calendars``), and the
configuration's extra holidays and extra sessions override it. Outside the library's window
a weekday is a session and a weekend is not (the library cannot know holidays not yet
published; the configuration adds them).

How far the holiday list reaches (``SessionDays.holidays_known_through``): to the end of the
last year in which the library lists a holiday, or of the last year ``extra_holidays`` names a
day in (entering a year's published list in the configuration covers that year). Past it
every weekday counts as a session, so ``holiday_list_warning`` says so, naming the key to set,
from 30 days before the end; the scheduler logs it, ``/status`` shows it, and a day past the
end fails the pre-live safety check (``domain.live_gates.holiday_list_blocker``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import msgspec

from domain.clock import NANOS_PER_SECOND

__all__ = [
    "CARRIED_OVER_FLATTEN_DETAIL",
    "EOD_FLATTEN_DETAIL",
    "HOLIDAYS_CONFIG_KEY",
    "HOLIDAY_WARNING_DAYS",
    "Phase",
    "ScheduledAction",
    "ScheduledEvent",
    "SessionDays",
    "TradingSchedule",
]

EOD_FLATTEN_DETAIL = "eod_hard_flat"
"""The detail of the FLATTEN pause the schedule sets at the flat time: the scheduler clears a
FLATTEN pause at the next open only when it carries this detail (an operator's stays)."""

CARRIED_OVER_FLATTEN_DETAIL = "carried_over_flat"
"""The detail of the FLATTEN pause the scheduler sets at a session open for positions found open
outside the session (the engine was down across the day's hard flat): cleared by the scheduler
once the book is flat, so entries resume only after those positions are closed."""

# How far ahead ``next_event`` looks for a session (a long holiday run is a few days).
_SEARCH_DAYS = 30
# How far ahead a missing holiday list is warned of (time to enter the exchange's list).
HOLIDAY_WARNING_DAYS = 30
HOLIDAYS_CONFIG_KEY = "scheduler.extra_holidays"


class Phase(StrEnum):
    OPEN = "OPEN"
    TIGHTEN = "TIGHTEN"
    FLAT = "FLAT"
    CLOSED = "CLOSED"

    @property
    def entries_allowed(self) -> bool:
        return self is Phase.OPEN


class ScheduledAction(StrEnum):
    """What the scheduler does at a mark (also the ``action`` label of its metric)."""

    SESSION_OPEN = "SESSION_OPEN"  # resume entries, clear the previous day's EOD flatten
    TIGHTEN_STOPS = "TIGHTEN_STOPS"  # stop entries, tighten every stop
    HARD_FLAT = "HARD_FLAT"  # flatten everything
    SESSION_CLOSE = "SESSION_CLOSE"  # the session is over (entries stay paused)
    # Not a mark of the day: positions found open outside the session are flattened at the
    # open, before any entry (the FLATTEN pause with detail "carried_over_flat").
    CARRIED_OVER_FLAT = "CARRIED_OVER_FLAT"


_PHASE_ACTION = {
    Phase.OPEN: ScheduledAction.SESSION_OPEN,
    Phase.TIGHTEN: ScheduledAction.TIGHTEN_STOPS,
    Phase.FLAT: ScheduledAction.HARD_FLAT,
}


class ScheduledEvent(msgspec.Struct, frozen=True, kw_only=True):
    action: ScheduledAction
    at_ns: int
    trading_day: date
    tz: str

    def describe(self) -> str:
        """e.g. ``TIGHTEN_STOPS at 2026-01-02T15:20:00+05:30``."""
        return f"{self.action.value} at {_to_local(self.at_ns, self.tz).isoformat()}"


class SessionDays(msgspec.Struct, frozen=True, kw_only=True):
    """Session dates known for ``[first, last]`` plus the configuration's overrides."""

    known: frozenset[date] = frozenset()
    first: date | None = None
    last: date | None = None
    extra_holidays: frozenset[date] = frozenset()
    extra_sessions: frozenset[date] = frozenset()
    # The end of the last year the library lists a holiday in; None: it lists none (a calendar
    # without holidays) or could not say, and the holiday list's reach is not judged.
    library_holidays_through: date | None = None

    @classmethod
    def build(
        cls,
        known: Iterable[date],
        first: date | None,
        last: date | None,
        *,
        extra_holidays: Iterable[date] = (),
        extra_sessions: Iterable[date] = (),
        library_holidays_through: date | None = None,
    ) -> SessionDays:
        return cls(
            known=frozenset(known),
            first=first,
            last=last,
            extra_holidays=frozenset(extra_holidays),
            extra_sessions=frozenset(extra_sessions),
            library_holidays_through=library_holidays_through,
        )

    @property
    def config_holidays_through(self) -> date | None:
        """The end of the last year ``extra_holidays`` names a day in (None: it names none)."""
        if not self.extra_holidays:
            return None
        return date(max(day.year for day in self.extra_holidays), 12, 31)

    @property
    def holidays_known_through(self) -> date | None:
        """The last day the library and the configuration together have a holiday list for;
        None when the library lists no holidays (nothing to judge)."""
        if self.library_holidays_through is None:
            return None
        configured = self.config_holidays_through
        if configured is None:
            return self.library_holidays_through
        return max(self.library_holidays_through, configured)

    def covers(self, day: date) -> bool:
        return self.first is not None and self.last is not None and self.first <= day <= self.last

    def is_session(self, day: date) -> bool:
        if day in self.extra_holidays:
            return False
        if day in self.extra_sessions:
            return True
        if self.covers(day):
            return day in self.known
        return day.weekday() < 5


class TradingSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """The marks of a trading day in ``tz`` and the session days they apply to."""

    tz: str
    session_open: time
    tighten_at: time
    flat_at: time
    session_close: time
    days: SessionDays

    def __post_init__(self) -> None:
        if not self.session_open < self.tighten_at <= self.flat_at < self.session_close:
            raise ValueError(
                "SCHEDULE_TIMES: session_open < tighten_at <= flat_at < session_close required "
                f"(got {self.session_open}, {self.tighten_at}, {self.flat_at}, "
                f"{self.session_close})"
            )

    # ------------------------------------------------------------------ QUERIES
    def local_date(self, now_ns: int) -> date:
        return self._local(now_ns).date()

    def phase_at(self, now_ns: int) -> tuple[Phase, date]:
        """The phase ``now_ns`` is in and the exchange-local date it belongs to."""
        local = self._local(now_ns)
        day = local.date()
        if not self.days.is_session(day):
            return Phase.CLOSED, day
        clock = local.time()
        if clock < self.session_open or clock >= self.session_close:
            return Phase.CLOSED, day
        if clock < self.tighten_at:
            return Phase.OPEN, day
        if clock < self.flat_at:
            return Phase.TIGHTEN, day
        return Phase.FLAT, day

    def due_action(self, now_ns: int) -> tuple[ScheduledAction, date] | None:
        """The once-per-day action of the phase ``now_ns`` is in, with its day; None when
        CLOSED (nothing to do but keep entries paused)."""
        phase, day = self.phase_at(now_ns)
        action = _PHASE_ACTION.get(phase)
        return None if action is None else (action, day)

    def events_of(self, day: date) -> list[ScheduledEvent]:
        """The four marks of ``day`` in time order; [] if it is not a session day."""
        if not self.days.is_session(day):
            return []
        return [
            self._event(ScheduledAction.SESSION_OPEN, day, self.session_open),
            self._event(ScheduledAction.TIGHTEN_STOPS, day, self.tighten_at),
            self._event(ScheduledAction.HARD_FLAT, day, self.flat_at),
            self._event(ScheduledAction.SESSION_CLOSE, day, self.session_close),
        ]

    def next_event(self, now_ns: int) -> ScheduledEvent | None:
        """The first mark strictly after ``now_ns`` (None if no session in 30 days)."""
        day = self.local_date(now_ns)
        for offset in range(_SEARCH_DAYS + 1):
            for event in self.events_of(day + timedelta(days=offset)):
                if event.at_ns > now_ns:
                    return event
        return None

    def holiday_list_warning(self, now_ns: int, *, calendar: str) -> str | None:
        """A sentence when the holiday list ends within ``HOLIDAY_WARNING_DAYS`` of today (or
        has ended), naming the key to set; None while it reaches far enough."""
        through = self.days.holidays_known_through
        if through is None:
            return None
        today = self.local_date(now_ns)
        if today + timedelta(days=HOLIDAY_WARNING_DAYS) <= through:
            return None
        library = self.days.library_holidays_through
        configured = self.days.config_holidays_through
        source = f"pandas-market-calendars lists {calendar} holidays up to {library}, " + (
            f"{HOLIDAYS_CONFIG_KEY} up to {configured}"
            if configured is not None
            else f"{HOLIDAYS_CONFIG_KEY} names none"
        )
        year = (through + timedelta(days=1)).year
        if today > through:
            return (
                f"HOLIDAYS_UNKNOWN: no exchange holiday list for today {today} ({source}): every "
                f"weekday counts as a session; set {HOLIDAYS_CONFIG_KEY} to the exchange's "
                f"published holidays for {today.year}"
            )
        return (
            f"HOLIDAYS_UNKNOWN_SOON: the exchange holiday list ends {through} "
            f"({(through - today).days} days; {source}): from {through + timedelta(days=1)} "
            f"every weekday counts as a session; set {HOLIDAYS_CONFIG_KEY} to the exchange's "
            f"published holidays for {year}"
        )

    # ------------------------------------------------------------------ HELPERS
    def _local(self, now_ns: int) -> datetime:
        return _to_local(now_ns, self.tz)

    def _event(self, action: ScheduledAction, day: date, at: time) -> ScheduledEvent:
        local = datetime.combine(day, at, tzinfo=ZoneInfo(self.tz))
        delta = local.astimezone(UTC) - _EPOCH
        # Integer arithmetic: a float timestamp could round a mark by a microsecond.
        at_ns = (delta.days * 86_400 + delta.seconds) * NANOS_PER_SECOND + delta.microseconds * 1000
        return ScheduledEvent(action=action, at_ns=at_ns, trading_day=day, tz=self.tz)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_local(now_ns: int, tz: str) -> datetime:
    # Integer seconds and microseconds (truncated): one nanosecond before a mark is before it.
    seconds, nanos = divmod(now_ns, NANOS_PER_SECOND)
    utc = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    return utc.astimezone(ZoneInfo(tz))
