"""WatchdogActor: the runbook's tripwires, each fired once per episode and made visible.

Owns the tripwire episodes (``domain.tripwires.EpisodeBook``) and the sliding windows of the
rules it judges itself (``domain.tripwires``; thresholds in ``domain.config.WatchdogConfig``):

| rule (``TripwireRule``) | input | action (by the watchdog) |
|---|---|---|
| ORDER_ACK_LATENCY | ``OrderAckObserved`` | pause (TRIPWIRE_LATENCY), then FLATTEN "latency" |
| MARKET_QUALITY | ``MarketQualityRejected`` (risk) | pause, then FLATTEN "market_quality" |
| RATE_LIMIT_BACKLOG | ``queue_depth()`` each timer | pause entries (RATE_LIMIT_BACKLOG) |

The other rows are detected and acted on where they always were, and reported here with
``TripwireConditionChanged``, so that every row has the same episode, TRIPWIRE event, audit row,
metric and ``/status`` cause: LEADER_LOST (the supervisor pauses at once and steps down after
``leader.grace_s``), MARKETDATA_STALE and ORDER_STREAM_STALE (the supervisor pauses entries),
RISK_CAP (the risk actor flattens with reason ``risk_cap``, and on the daily loss also trips
the kill switch).

Accepts: ``TimerFired`` (evaluates the windows, samples the queue depth, retries),
``OrderAckObserved``, ``MarketQualityRejected``, ``TripwireConditionChanged``,
``TradingStateChanged`` (from the kill switch); answers ``QueryTripwires`` (one sentence per
active episode, for ``/status``).
Publishes: ``PauseEntries``/``ResumeEntries`` with its own causes to the kill switch; a FLATTEN
pause (the kill switch stores it, then tells ``FlattenAll``) through a ``SafetyOutbox``, re-sent
until the kill switch's state shows it stored. Its condition pauses are re-told whenever the
kill switch's published state lacks them (a restarted kill switch keeps only operator pauses).
Every firing: a ``TRIPWIRE`` log event, an ``audit_log`` row (who ``watchdog``; a clearing too),
``trader_tripwire_total{rule}``. Entry pauses never block exits: stops, targets and flatten
exits go on (``actors.order_execution`` gates only entries on the trading state).

Windows are judged on ``TimerFired`` only (every ``heartbeats.timer_interval_ms``), so a replay,
which gives the supervisor no timers, is not paused by the wall-clock tripwires and stays
deterministic; the risk actor's caps act there as before.

Failures: a crash in a handler is reported to the supervisor, which restarts the actor; its
windows start empty again (a latency episode must then be sustained anew), and the supervisor
tells it the conditions it still holds. Market-quality reports are not lost to a restart: the
directory keeps the last ones told to this name (``ActorDirectory.retain_recent``, delivered or
not), and a new incarnation rebuilds its window from them at start, skipping any that also
reach its inbox, so the fourth rejection in the minute still fires. An audit row that cannot
be stored is kept (at most 500) and retried every timer; the action never waits for it. A
``queue_depth`` callable that raises is logged once per minute and judged as no sample.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from actors.base import VigilActor
from actors.safety_outbox import SafetyOutbox
from adapters.logs import ErrorRepeats, log_event
from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import PauseCause, TripwireRule
from domain.messages import (
    AuditEntry,
    MarketQualityRejected,
    OrderAckObserved,
    PauseEntries,
    QueryTripwires,
    ResumeEntries,
    TimerFired,
    TradingStateChanged,
    TripwireConditionChanged,
)
from domain.tripwires import (
    EpisodeBook,
    EpisodeChange,
    EventCountRule,
    LatencyRule,
    RisingDepthRule,
    Transition,
    Verdict,
)

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.config import WatchdogConfig

__all__ = ["WATCHDOG", "RuleAction", "WatchdogActor"]

logger = logging.getLogger(__name__)

WATCHDOG = "watchdog"
_WHO = "watchdog"
_RETELL_NS = NANOS_PER_SECOND
_MAX_PENDING_AUDITS = 500
# Market-quality reports the directory keeps for a restarted watchdog: far more than a window's
# threshold (a flood past it fires anyway).
_RETAINED_REPORTS = 256


class RuleAction(msgspec.Struct, frozen=True, kw_only=True):
    """What a firing of a rule does. ``pause``/``flatten_reason``: done by the watchdog;
    ``described``: the words for the log, the audit row and ``/status``."""

    described: str
    pause: PauseCause | None = None
    flatten_reason: str | None = None


_ACTIONS: dict[TripwireRule, RuleAction] = {
    TripwireRule.ORDER_ACK_LATENCY: RuleAction(
        described='pause, then flatten(reason="latency")',
        pause=PauseCause.TRIPWIRE_LATENCY,
        flatten_reason="latency",
    ),
    TripwireRule.MARKET_QUALITY: RuleAction(
        described='pause, then flatten(reason="market_quality")',
        pause=PauseCause.TRIPWIRE_MARKET_QUALITY,
        flatten_reason="market_quality",
    ),
    TripwireRule.RATE_LIMIT_BACKLOG: RuleAction(
        described="pause entries only; exits complete",
        pause=PauseCause.RATE_LIMIT_BACKLOG,
    ),
    TripwireRule.LEADER_LOST: RuleAction(
        described="paused and stepped down by the supervisor: no new orders"
    ),
    TripwireRule.MARKETDATA_STALE: RuleAction(
        described="entries paused by the supervisor; exits still managed"
    ),
    TripwireRule.ORDER_STREAM_STALE: RuleAction(
        described="entries paused by the supervisor; exits still managed"
    ),
    TripwireRule.RISK_CAP: RuleAction(
        described='flatten(reason="risk_cap") by the risk actor; HALT on the daily loss'
    ),
}


class WatchdogActor(VigilActor):
    # Its inputs are few (acks are bounded by the broker's rate) and come from the hot path
    # and the supervisor: a full inbox here must never stall them.
    unbounded_messages: ClassVar[tuple[type, ...]] = (
        *VigilActor.unbounded_messages,
        OrderAckObserved,
        MarketQualityRejected,
        TripwireConditionChanged,
        TradingStateChanged,
    )

    def __init__(
        self,
        *,
        config: WatchdogConfig,
        database: Database,
        metrics: EngineMetrics,
        instance_id: str,
        queue_depth: Callable[[], int],
        kill_switch_actor: str = "kill_switch",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._config = config
        self._database = database
        self._metrics = metrics
        self._instance_id = instance_id
        self._queue_depth = queue_depth
        self._kill_switch_actor = kill_switch_actor
        self._latency = LatencyRule(
            limit_ms=config.latency_p95_limit_ms,
            window_s=config.latency_window_s,
            sustained_s=config.latency_sustained_s,
            min_samples=config.latency_min_samples,
        )
        self._market_quality = EventCountRule(
            max_events=config.market_quality_max_events,
            window_s=config.market_quality_window_s,
        )
        self._queue = RisingDepthRule(
            window_s=config.queue_rising_s, min_depth=config.queue_min_depth
        )
        self._episodes = EpisodeBook()
        self._trading: TradingStateChanged | None = None
        # Condition pauses this actor holds: cause -> (detail, last told).
        self._asserted: dict[PauseCause, tuple[str, int]] = {}
        self._flatten_due_ns: dict[TripwireRule, int] = {}
        self._outbox = SafetyOutbox(
            directory=self.directory, owner=self.name, target=kill_switch_actor
        )
        self._pending_audits: deque[AuditEntry] = deque(maxlen=_MAX_PENDING_AUDITS)
        self._repeats = ErrorRepeats(logger, window_ns=60 * NANOS_PER_SECOND)
        # Kept from before this incarnation registers, so nothing told meanwhile is missed.
        self.directory.retain_recent(self.name, (MarketQualityRejected,), limit=_RETAINED_REPORTS)
        # Reports read back at start, by identity (the object kept is the one told): one that
        # also reaches the inbox is not counted twice. Held (so no id is reused) for a window.
        self._replayed: dict[int, MarketQualityRejected] = {}
        self._replayed_until_ns = 0

    def on_start(self) -> None:
        now = self.clock.now_ns()
        for report in self.directory.recent(self.name):
            if isinstance(report, MarketQualityRejected):
                self._replayed[id(report)] = report
                self._market_quality.observe(report.ts_event, report.code.value)
        self._replayed_until_ns = now + self._market_quality.window_ns
        if self._replayed:
            logger.info(
                "watchdog: %d recent market-quality reports read back at start",
                len(self._replayed),
            )

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            TimerFired: self.on_timer_fired,
            OrderAckObserved: self.on_order_ack_observed,
            MarketQualityRejected: self.on_market_quality_rejected,
            TripwireConditionChanged: self.on_tripwire_condition_changed,
            TradingStateChanged: self.on_trading_state_changed,
            QueryTripwires: lambda _query: self.active_tripwires(),
        }

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        if self._replayed and now >= self._replayed_until_ns:
            self._replayed.clear()  # anything still in the inbox then has long been handled
        self._sample_queue_depth(now)
        self._judge(TripwireRule.ORDER_ACK_LATENCY, self._latency.evaluate(now), now)
        self._judge(TripwireRule.MARKET_QUALITY, self._market_quality.evaluate(now), now)
        self._judge(TripwireRule.RATE_LIMIT_BACKLOG, self._queue.evaluate(now), now)
        self._flatten_when_due(now)
        self._retell_pauses(now)
        self._outbox.retry(now)
        self._store_audits(now)
        self._repeats.flush(now)

    def on_order_ack_observed(self, observed: OrderAckObserved) -> None:
        self._latency.observe(observed.latency_ms, observed.ts_event)

    def on_market_quality_rejected(self, rejected: MarketQualityRejected) -> None:
        # Judged on the next timer, like every window: a replay (which gives the supervisor,
        # and so this actor, no timers) stays deterministic.
        if self._replayed.pop(id(rejected), None) is rejected:
            return  # already counted when read back at start
        self._market_quality.observe(rejected.ts_event, rejected.code.value)

    def on_tripwire_condition_changed(self, changed: TripwireConditionChanged) -> None:
        now = self.clock.now_ns()
        self._judge(changed.rule, Verdict(active=changed.active, detail=changed.detail), now)

    def on_trading_state_changed(self, state: TradingStateChanged) -> None:
        self._trading = state
        self._outbox.acknowledge(state)
        self._retell_pauses(self.clock.now_ns())

    # ------------------------------------------------------------------ QUERIES
    def active_tripwires(self) -> list[str]:
        """One sentence per active episode, oldest first: rule, figures, action."""
        return [
            f"{episode.rule.value}: {episode.detail} ({_ACTIONS[episode.rule].described})"
            for episode in self._episodes.active()
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "episodes": msgspec.to_builtins(self._episodes.active()),
            "latency_samples": self._latency.sample_count,
            "asserted_pauses": {cause.value: held[0] for cause, held in self._asserted.items()},
            "flatten_due_ns": {rule.value: due for rule, due in self._flatten_due_ns.items()},
            "pending_safety_commands": self._outbox.snapshot(),
            "pending_audit_rows": len(self._pending_audits),
        }

    # ------------------------------------------------------------------ CHECKS
    def _sample_queue_depth(self, now: int) -> None:
        try:
            depth = int(self._queue_depth())
        except Exception as error:
            self._repeats.error(
                "queue_depth",
                f"broker queue depth could not be read: {error!r}",
                now_ns=now,
                event="TRIPWIRE_INPUT",
            )
            return
        self._queue.observe(depth, now)

    def _judge(self, rule: TripwireRule, verdict: Verdict, now: int) -> None:
        change = self._episodes.update(rule, verdict, now)
        if change is None:
            return
        if change.transition is Transition.FIRED:
            self._fired(change, now)
        else:
            self._cleared(change, now)

    # ------------------------------------------------------------------ EGRESS
    def _fired(self, change: EpisodeChange, now: int) -> None:
        rule, detail = change.episode.rule, change.episode.detail
        action = _ACTIONS[rule]
        self._metrics.tripwire_total.labels(rule=rule.value).inc()
        log_event(
            logger,
            "TRIPWIRE",
            f"tripwire {rule.value}: {detail}; {action.described}",
            level=logging.CRITICAL if action.flatten_reason else logging.WARNING,
            rule=rule.value,
            detail=detail,
            action=action.described,
        )
        self._audit(rule, "FIRED", f"{rule.value} {detail}; {action.described}", now)
        if action.pause is not None:
            self._asserted[action.pause] = (f"{rule.value} {detail}", now)
            self.directory.tell(
                self._kill_switch_actor,
                PauseEntries(cause=action.pause, detail=f"{rule.value} {detail}"),
            )
        if action.flatten_reason is not None:
            self._flatten_due_ns[rule] = now + int(self._config.flatten_delay_s * NANOS_PER_SECOND)
            self._flatten_when_due(now)
        self._store_audits(now)

    def _cleared(self, change: EpisodeChange, now: int) -> None:
        rule = change.episode.rule
        action = _ACTIONS[rule]
        log_event(
            logger,
            "TRIPWIRE_CLEARED",
            f"tripwire {rule.value} cleared: {change.episode.detail}",
            rule=rule.value,
            detail=change.episode.detail,
        )
        self._audit(rule, "CLEARED", f"{rule.value} {change.episode.detail}", now)
        self._flatten_due_ns.pop(rule, None)
        if action.pause is not None and self._asserted.pop(action.pause, None) is not None:
            self.directory.tell(self._kill_switch_actor, ResumeEntries(cause=action.pause))
        self._store_audits(now)

    def _flatten_when_due(self, now: int) -> None:
        for rule, due in list(self._flatten_due_ns.items()):
            if due > now or not self._episodes.is_active(rule):
                continue
            del self._flatten_due_ns[rule]
            reason = _ACTIONS[rule].flatten_reason
            assert reason is not None
            log_event(
                logger,
                "TRIPWIRE",
                f"tripwire {rule.value}: flattening (reason {reason})",
                level=logging.CRITICAL,
                rule=rule.value,
                reason=reason,
            )
            # Intent before action: the kill switch stores the FLATTEN pause, then flattens.
            self._outbox.send(
                f"flatten:{rule.value}",
                PauseEntries(cause=PauseCause.FLATTEN, detail=reason),
                now_ns=now,
            )

    def _retell_pauses(self, now: int) -> None:
        # A kill switch restarted (or a tell dropped) does not hold our condition pauses.
        trading = self._trading
        if trading is None:
            return
        for cause, (detail, told_ns) in list(self._asserted.items()):
            if cause in trading.pause_causes or now - told_ns < _RETELL_NS:
                continue
            self._asserted[cause] = (detail, now)
            self.directory.tell(self._kill_switch_actor, PauseEntries(cause=cause, detail=detail))

    def _audit(self, rule: TripwireRule, outcome: str, detail: str, now: int) -> None:
        mode = "" if self._trading is None else self._trading.mode.value
        self._pending_audits.append(
            AuditEntry(
                ts_ns=now,
                who=_WHO,
                address="in-process",
                action="TRIPWIRE",
                outcome=outcome,
                detail=detail,
                mode=mode,
            )
        )
        self._metrics.audit_events_total.labels(action="TRIPWIRE", outcome=outcome).inc()

    def _store_audits(self, now: int) -> None:
        if not self._pending_audits:
            return
        try:
            with UnitOfWork(self._database) as uow:
                for entry in self._pending_audits:
                    uow.audit.append(entry, instance_id=self._instance_id)
        except Exception as error:
            self._repeats.error(
                "audit",
                f"tripwire audit rows could not be stored ({len(self._pending_audits)} kept, "
                f"retried every timer): {error!r}",
                now_ns=now,
                event="STORAGE",
            )
            return
        self._pending_audits.clear()
        self._repeats.resolved("audit", now)
