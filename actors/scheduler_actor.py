"""SchedulerActor: the trading day on the exchange's calendar (NSE, Asia/Kolkata by default).

Owns: which phase of the trading day it is (``domain.schedule``: OPEN 09:15-15:20, TIGHTEN
15:20-15:25, FLAT 15:25-15:30, CLOSED otherwise, weekends and holidays included) and which of
the day's actions it has carried out. Session days come from ``pandas-market-calendars``
(``adapters.calendars``), overridden by the configuration's extra holidays and sessions.
Accepts: ``TimerFired`` (the engine's heartbeat, from the supervisor or, in a replay, from the
replay's clock), ``TradingStateChanged`` (from the kill switch); answers ``QuerySchedule``.
Publishes, all through the kill switch except the tighten:

- outside OPEN: ``PauseEntries(OUTSIDE_SESSION, routine=True)``. Entries stop; exits,
  protective legs and flattens go on (a pause never blocks them). Re-sent whenever the kill
  switch's published state lacks it (a condition pause does not survive the kill switch's
  restart; the supervisor's causes are re-asserted the same way).
- at the session open: ``ResumeEntries(OUTSIDE_SESSION)``, and ``ResumeEntries(FLATTEN)`` when
  the FLATTEN pause in force is the schedule's own (detail ``eod_hard_flat``): an operator's
  flatten (any other detail, including one set over ours) stays until the operator resumes.
  Daily figures roll by themselves at the IST day boundary: the order actor's realized PnL
  today (``PortfolioProjection.roll_trading_day``), and with it the risk actor's daily loss
  check; trades per hour is a rolling hour.
- at the tighten time, once per day: ``TightenStops`` to the order actor (break-even or a
  trail, ``scheduler.tighten_mode``).
- at the flat time, once per day: ``PauseEntries(FLATTEN, detail="eod_hard_flat")`` through a
  ``SafetyOutbox`` (re-sent until the kill switch shows it stored). Intent before action: the
  kill switch stores the FLATTEN pause, then tells the order actor ``FlattenAll``, exactly as
  ``POST /flatten`` does; the stored pause keeps the book flat across a crash.

Each action is logged (SCHEDULE) and counted (``trader_schedule_actions_total{action}``). The
actor acts on the phase, not on crossing a mark: a start at 15:22 still tightens, one at 15:27
flattens. A restart forgets which actions it did; doing one again is harmless (a tighten finds
the stops already tight, a flatten pause already in force changes nothing).

Also (``PortfolioUpdated`` from the order actor, which publishes at least once a second):

- *Positions carried past the hard flat.* An engine down across 15:25 and started after the
  close does not flatten (the exchange is closed). Positions this actor sees open while the
  phase is CLOSED were not flattened by their day's hard flat: a CRITICAL ``CARRIED_OVER``
  line (again whenever the set changes), one sentence each in ``QuerySchedule`` (``/status``
  ``schedule_warnings``), and at the next session open, before entries resume, the FLATTEN
  pause with detail ``carried_over_flat`` (through the outbox, intent before action). Once the
  book is flat the scheduler resumes that pause if it still carries its detail (asked of the
  kill switch; an operator's flatten set over it stays): entries resume only then.
- *The holiday list running out.* ``TradingSchedule.holiday_list_warning``: a WARNING
  ``HOLIDAYS_UNKNOWN`` once per exchange-local day from 30 days before the end of the holiday
  list the library and ``scheduler.extra_holidays`` give, naming the key to set; shown in
  ``QuerySchedule`` too.
- ``trader_session_open`` (1 while OPEN, TIGHTEN or FLAT) and ``trader_schedule_phase{phase}``
  for the alert rules (ops/prometheus/alerts.yml gates the heartbeat alerts on it).

Failure: an exception stops it and the supervisor restarts it; while it is down, the pause it
asserted stays in force at the kill switch (it clears only when this actor says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from actors.base import VigilActor
from actors.safety_outbox import SafetyOutbox
from adapters.logs import log_event
from domain.clock import NANOS_PER_SECOND
from domain.enums import PauseCause
from domain.messages import (
    PauseEntries,
    PortfolioUpdated,
    PositionView,
    QuerySchedule,
    QueryTradingState,
    RepublishState,
    ResumeEntries,
    TightenStops,
    TimerFired,
    TradingStateChanged,
)
from domain.schedule import (
    CARRIED_OVER_FLATTEN_DETAIL,
    EOD_FLATTEN_DETAIL,
    Phase,
    ScheduledAction,
    TradingSchedule,
)

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from domain.config import SchedulerConfig

__all__ = ["SCHEDULER", "ScheduleView", "SchedulerActor"]

SCHEDULER = "scheduler"

logger = logging.getLogger(__name__)

_EOD_FLATTEN_KEY = "eod_hard_flat"
_CARRIED_FLATTEN_KEY = "carried_over_flat"
_ASK_TIMEOUT_S = 5.0


class ScheduleView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``QuerySchedule`` answers (and ``/status`` shows as the next action)."""

    calendar: str
    timezone: str
    phase: str
    trading_day: str
    entries_allowed: bool
    next_action: str | None
    next_action_ns: int | None
    done_today: list[str]
    # The last day the exchange holiday list reaches (library + scheduler.extra_holidays).
    holidays_known_through: str | None = None
    # What an operator must act on: the holiday list running out, positions carried past the
    # hard flat (one sentence each).
    warnings: list[str] = msgspec.field(default_factory=list)


class SchedulerActor(VigilActor):
    def __init__(
        self,
        *,
        config: SchedulerConfig,
        metrics: EngineMetrics,
        load_schedule: Callable[[date], TradingSchedule],
        kill_switch_actor: str = "kill_switch",
        order_actor: str = "order",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._config = config
        self._metrics = metrics
        self._load_schedule = load_schedule
        self._kill_switch = kill_switch_actor
        self._order = order_actor
        self._schedule: TradingSchedule | None = None
        # The trading day each action was last carried out for (once per day).
        self._done: dict[ScheduledAction, date] = {}
        self._phase: Phase | None = None
        self._day: date | None = None
        self._trading: TradingStateChanged | None = None
        self._outbox = SafetyOutbox(directory=self.directory, owner=self.name)
        self._reload_failed_on: date | None = None
        self._portfolio: PortfolioUpdated | None = None
        # Positions seen open while CLOSED: not flattened by their day's hard flat.
        self._carried: tuple[PositionView, ...] = ()
        # The day the carried-over FLATTEN pause was set for, until it is resumed.
        self._carried_flatten_day: date | None = None
        self._holidays_warned_on: date | None = None
        self._portfolio_asked_ns = -NANOS_PER_SECOND

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            TimerFired: self.on_timer_fired,
            TradingStateChanged: self.on_trading_state_changed,
            PortfolioUpdated: self.on_portfolio_updated,
            QuerySchedule: lambda _query: self.view(),
        }

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        now = self.clock.now_ns()
        self._schedule = self._load_schedule(_utc_date(now))
        self._evaluate(now)

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        self._reload_if_stale(now)
        self._ask_for_portfolio(now)
        self._evaluate(now)
        self._resume_after_carried_flat()
        self._warn_of_holidays(now)
        self._outbox.retry(now)

    def _ask_for_portfolio(self, now: int) -> None:
        # The order actor's publish at its takeover can come before this actor is registered
        # (and a restarted order actor's too); an unchanged portfolio is re-sent once a second
        # only while time moves. Asked for once a second until one arrives.
        if self._portfolio is None and now - self._portfolio_asked_ns >= NANOS_PER_SECOND:
            self._portfolio_asked_ns = now
            self.directory.tell(self._order, RepublishState())

    def on_portfolio_updated(self, portfolio: PortfolioUpdated) -> None:
        # Judged on the next timer (the phase is known there); kept, not acted on.
        self._portfolio = portfolio

    def on_trading_state_changed(self, state: TradingStateChanged) -> None:
        self._trading = state
        self._outbox.acknowledge(state)
        # A condition pause does not survive the kill switch's restart, and a tell can be
        # lost: what this actor asserts must be what is in force there.
        paused = PauseCause.OUTSIDE_SESSION in state.pause_causes
        if self._phase is None:
            return
        if not self._phase.entries_allowed and not paused:
            self._tell_pause(self._phase)
        elif self._phase.entries_allowed and paused:
            self.directory.tell(
                self._kill_switch, ResumeEntries(cause=PauseCause.OUTSIDE_SESSION, routine=True)
            )

    # ------------------------------------------------------------------ QUERIES
    def view(self) -> ScheduleView:
        schedule = self._require_schedule()
        now = self.clock.now_ns()
        phase, day = schedule.phase_at(now)
        upcoming = schedule.next_event(now)
        return ScheduleView(
            calendar=self._config.calendar,
            timezone=self._config.timezone,
            phase=phase.value,
            trading_day=day.isoformat(),
            entries_allowed=phase.entries_allowed,
            next_action=upcoming.describe() if upcoming is not None else None,
            next_action_ns=upcoming.at_ns if upcoming is not None else None,
            done_today=sorted(action.value for action, done in self._done.items() if done == day),
            holidays_known_through=_iso(schedule.days.holidays_known_through),
            warnings=self._warnings(now),
        )

    def _warnings(self, now: int) -> list[str]:
        schedule = self._require_schedule()
        warnings: list[str] = []
        holidays = schedule.holiday_list_warning(now, calendar=self._config.calendar)
        if holidays is not None:
            warnings.append(holidays)
        upcoming = schedule.next_event(now)
        when = (
            f"at the next open ({upcoming.describe()})"
            if upcoming is not None and upcoming.action is ScheduledAction.SESSION_OPEN
            else "at the next open"
        )
        warnings.extend(
            f"CARRIED_OVER: {_describe(position)} open outside the session, not flattened by "
            f"its day's hard flat; flattened {when} before any entry"
            for position in self._carried
        )
        if self._carried_flatten_day is not None:
            warnings.append(
                "CARRIED_OVER: flattening positions carried past the hard flat "
                f"(FLATTEN {CARRIED_OVER_FLATTEN_DETAIL}); entries resume once the book is flat"
            )
        return warnings

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": None if self._phase is None else self._phase.value,
            "trading_day": None if self._day is None else self._day.isoformat(),
            "done": {action.value: day.isoformat() for action, day in self._done.items()},
            "outbox": self._outbox.snapshot(),
            "carried_over": [position.position_id for position in self._carried],
            "carried_flatten_day": _iso(self._carried_flatten_day),
        }

    # ------------------------------------------------------------------ THE RULES
    def _evaluate(self, now: int) -> None:
        schedule = self._require_schedule()
        phase, day = schedule.phase_at(now)
        changed = phase is not self._phase or day != self._day
        self._phase, self._day = phase, day
        if changed:
            # Alerts on stale heartbeats are gated on this (ops/prometheus/alerts.yml): a feed
            # is silent every night.
            self._metrics.set_schedule_phase(phase.value, session_open=phase is not Phase.CLOSED)
        if phase is Phase.CLOSED:
            self._find_carried_positions(day)
        if phase is Phase.OPEN:
            if self._done.get(ScheduledAction.SESSION_OPEN) != day:
                self._open_session(day, now)
            return
        if changed:
            self._tell_pause(phase)
            if phase is Phase.CLOSED and self._done.get(ScheduledAction.SESSION_OPEN) == day:
                self._record(ScheduledAction.SESSION_CLOSE, day, "session closed")
        if phase is Phase.TIGHTEN and self._done.get(ScheduledAction.TIGHTEN_STOPS) != day:
            self._tighten(day, now)
        elif phase is Phase.FLAT and self._done.get(ScheduledAction.HARD_FLAT) != day:
            self._hard_flat(day, now)

    def _open_session(self, day: date, now: int) -> None:
        # The previous day's EOD flatten is cleared only if it is still ours: asked, not
        # remembered, because the kill switch stores it across restarts and an operator may
        # have flattened over it (which replaces the detail).
        try:
            control = self.directory.ask(
                self._kill_switch, QueryTradingState(), timeout_s=_ASK_TIMEOUT_S
            )
        except Exception as error:
            logger.warning("session open: kill switch not answering (%r); retried", error)
            return
        flatten_details = {
            pause.detail for pause in control.pauses if pause.cause is PauseCause.FLATTEN
        }
        eod_flatten = EOD_FLATTEN_DETAIL in flatten_details
        if eod_flatten:
            # Cleared by the kill switch only if the detail is still ours in its own turn: an
            # operator's flatten landing after the ask stays.
            self.directory.tell(
                self._kill_switch,
                ResumeEntries(cause=PauseCause.FLATTEN, only_if_detail=EOD_FLATTEN_DETAIL),
            )
        if CARRIED_OVER_FLATTEN_DETAIL in flatten_details:
            # Set before a restart of this actor: still to be resumed once the book is flat.
            self._carried_flatten_day = day
        if self._carried and self._portfolio is not None and self._portfolio.positions:
            self._flatten_carried(day, now)
        self.directory.tell(
            self._kill_switch, ResumeEntries(cause=PauseCause.OUTSIDE_SESSION, routine=True)
        )
        self._record(
            ScheduledAction.SESSION_OPEN,
            day,
            "session open: entries resume"
            + ("; the schedule's EOD flatten pause cleared" if eod_flatten else ""),
        )

    def _tighten(self, day: date, now: int) -> None:
        command = TightenStops(
            reason="eod_tighten",
            mode=self._config.tighten_mode,
            trail_ticks=self._config.trail_ticks,
            ts_init=now,
        )
        if not self.directory.tell(self._order, command):
            logger.warning("TightenStops not delivered to %s; retried next timer", self._order)
            return
        self._record(
            ScheduledAction.TIGHTEN_STOPS,
            day,
            f"entries stopped; every stop tightened ({self._config.tighten_mode})",
        )

    def _hard_flat(self, day: date, now: int) -> None:
        # Intent before action: the kill switch stores the FLATTEN pause, then tells the order
        # actor FlattenAll; kept in the outbox until the published state shows it stored.
        self._outbox.send(
            _EOD_FLATTEN_KEY,
            PauseEntries(cause=PauseCause.FLATTEN, detail=EOD_FLATTEN_DETAIL),
            now_ns=now,
        )
        self._record(ScheduledAction.HARD_FLAT, day, "hard flat: closing every position")

    # ------------------------------------------------------------------ CARRIED OVER
    def _find_carried_positions(self, day: date) -> None:
        portfolio = self._portfolio
        if portfolio is None:
            return
        carried = portfolio.positions
        if {p.position_id for p in carried} == {p.position_id for p in self._carried}:
            self._carried = carried
            return
        self._carried = carried
        if not carried:
            logger.info("carried-over positions closed outside the session")
            return
        log_event(
            logger,
            "CARRIED_OVER",
            f"{len(carried)} position(s) open outside the session on {day.isoformat()}, not "
            "flattened by their day's hard flat (was the engine down across it?): "
            + "; ".join(_describe(position) for position in carried)
            + f"; they are flattened at the next session open (FLATTEN "
            f"{CARRIED_OVER_FLATTEN_DETAIL}) before any entry",
            level=logging.CRITICAL,
            positions=[position.position_id for position in carried],
        )

    def _flatten_carried(self, day: date, now: int) -> None:
        # Told before OUTSIDE_SESSION is resumed (same inbox, in order): entries never open
        # between the two. Intent before action: stored by the kill switch, then FlattenAll.
        self._outbox.send(
            _CARRIED_FLATTEN_KEY,
            PauseEntries(cause=PauseCause.FLATTEN, detail=CARRIED_OVER_FLATTEN_DETAIL),
            now_ns=now,
        )
        self._carried_flatten_day = day
        self._record(
            ScheduledAction.CARRIED_OVER_FLAT,
            day,
            f"flattening {len(self._carried)} position(s) carried past the hard flat "
            "before any entry: " + ", ".join(position.position_id for position in self._carried),
            level=logging.CRITICAL,
        )
        self._carried = ()

    def _resume_after_carried_flat(self) -> None:
        portfolio = self._portfolio
        if (
            self._carried_flatten_day is None
            or self._outbox.is_pending(_CARRIED_FLATTEN_KEY)
            or portfolio is None
            or portfolio.positions
            or portfolio.working_entry_count
        ):
            return
        # Asked, not remembered: an operator may have flattened over ours (which replaces the
        # detail). The resume is conditional in the kill switch's own turn (only_if_detail), so
        # an operator's flatten landing between the ask and the resume stays.
        try:
            control = self.directory.ask(
                self._kill_switch, QueryTradingState(), timeout_s=_ASK_TIMEOUT_S
            )
        except Exception as error:
            logger.warning("carried-over flat: kill switch not answering (%r); retried", error)
            return
        day = self._carried_flatten_day
        self._carried_flatten_day = None
        ours = any(
            pause.cause is PauseCause.FLATTEN and pause.detail == CARRIED_OVER_FLATTEN_DETAIL
            for pause in control.pauses
        )
        if ours:
            self.directory.tell(
                self._kill_switch,
                ResumeEntries(cause=PauseCause.FLATTEN, only_if_detail=CARRIED_OVER_FLATTEN_DETAIL),
            )
        log_event(
            logger,
            "SCHEDULE",
            f"carried-over positions closed ({day.isoformat()}): "
            + ("entries resume" if ours else "the FLATTEN pause is no longer ours; it stays"),
            action=ScheduledAction.CARRIED_OVER_FLAT.value,
            trading_day=day.isoformat(),
        )

    # ------------------------------------------------------------------ HOLIDAYS
    def _warn_of_holidays(self, now: int) -> None:
        schedule = self._require_schedule()
        today = schedule.local_date(now)
        if self._holidays_warned_on == today:
            return
        self._holidays_warned_on = today  # once per exchange-local day
        warning = schedule.holiday_list_warning(now, calendar=self._config.calendar)
        if warning is not None:
            log_event(logger, "HOLIDAYS_UNKNOWN", warning, level=logging.WARNING)

    # ------------------------------------------------------------------ EGRESS
    def _tell_pause(self, phase: Phase) -> None:
        schedule = self._require_schedule()
        upcoming = schedule.next_event(self.clock.now_ns())
        detail = f"{phase.value}; next {upcoming.describe()}" if upcoming is not None else phase
        self.directory.tell(
            self._kill_switch,
            PauseEntries(cause=PauseCause.OUTSIDE_SESSION, detail=str(detail), routine=True),
        )

    def _record(
        self, action: ScheduledAction, day: date, message: str, *, level: int = logging.INFO
    ) -> None:
        self._done[action] = day
        self._metrics.schedule_actions_total.labels(action=action.value).inc()
        log_event(
            logger,
            "SCHEDULE",
            f"{action.value} {day.isoformat()}: {message}",
            level=level,
            action=action.value,
            trading_day=day.isoformat(),
        )

    def _reload_if_stale(self, now: int) -> None:
        schedule = self._require_schedule()
        last = schedule.days.last
        today = schedule.local_date(now)
        if last is not None and today > last and self._reload_failed_on != today:
            # Past the window asked of the library (over a year of running): ask again.
            try:
                self._schedule = self._load_schedule(_utc_date(now))
            except Exception:
                self._reload_failed_on = today  # once a day, not on every timer
                logger.exception("exchange calendar reload failed; weekdays count as sessions")

    def _require_schedule(self) -> TradingSchedule:
        if self._schedule is None:
            raise RuntimeError("scheduler used before on_start loaded its calendar")
        return self._schedule


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _describe(position: PositionView) -> str:
    return (
        f"{position.position_id} ({position.strategy} {position.instrument} "
        f"{position.side.value} {position.quantity} @ {position.average_price})"
    )


def _utc_date(now_ns: int) -> date:
    return datetime.fromtimestamp(now_ns // NANOS_PER_SECOND, tz=UTC).date()
