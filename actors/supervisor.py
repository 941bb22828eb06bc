"""Supervisor: starts, watches and restarts the children; auto-pauses on lost safety signals.

Accepts: ``ChildFailed`` (a child crashed in a tell handler), ``TimerFired`` (the engine's
heartbeat, fanned out to the time-driven children), ``FeedHeartbeat``,
``OrderStreamHeartbeat``, ``LeadershipChanged``, ``TradingStateChanged``, ``Pong``.
Publishes: ``PauseEntries``/``ResumeEntries`` and ``TripKillSwitch`` to the kill switch;
``TimerFired`` to its timer subscribers; ``Ping`` to every child.

Restarts: a crashed child is restarted from persisted state after a backoff that doubles per
recent crash (``backoff_initial_s`` .. ``backoff_max_s``). More than ``max_restarts`` crashes
within ``window_s`` escalates: HALT through the kill switch (and flatten if configured). The
child is still restarted after an escalation, because flatten and cancels need it.

Calm failure: once HALTED (or escalated) a fault is usually persistent (a full disk, a dead
database), so a crashing child's delay (the kill switch's excepted) doubles per crash of that
child from ``max(backoff_max_s, 1)`` up to ``halted_backoff_max_s`` (60 s), until it has run
for ``window_s`` without crashing. A crash with the same error as the last one of that child is
counted, not logged again: one line at the first, then ``same error xN in 60s`` per window
(``ErrorRepeats``); only the first writes a post-mortem dump to ``logs/``.

Safety commands cannot be lost: escalation trips go through a ``SafetyOutbox`` and are re-sent
every second until the kill switch's state shows them in force and stored. When the kill switch
itself crashes holding a HALT it had not stored yet (its last snapshot says so), the HALT is
re-sent to its next incarnation the same way.

Auto-pause causes, each named in ``/status``, the logs and ``trader_trading_paused{cause}``:
leader lease not held (and a STEP_DOWN event after the grace period), market data or the
order stream older than its limit, a child that stopped answering its liveness ping. They
clear themselves when the condition does. At start, entries wait for the first lease with the
same LEADER_LOST cause, but as a routine wait: one ``AWAITING_LEADER`` line at INFO and a
``LEADER`` line when the lease is taken, no AUTO_PAUSE; only a first renewal that says
"not leader" is an incident (AUTO_PAUSE at WARNING).

Tripwires: the leader-loss row (stepped down after the grace period), the stale market data
and the stale order stream are runbook tripwire rows. The supervisor keeps detecting and acting
on them, and tells the watchdog each condition's start and end (``TripwireConditionChanged``),
which makes the episode, the TRIPWIRE event, the audit row, the metric and the ``/status``
cause; the conditions still held are told again to a restarted watchdog.

The supervisor must outlive everything it watches: an exception in one of its handlers is
logged, never allowed to stop it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import pykka

from actors.base import VigilActor
from actors.dumps import write_dump_in_background
from actors.safety_outbox import SafetyOutbox
from adapters.logs import ErrorRepeats, log_event
from domain.clock import NANOS_PER_SECOND
from domain.enums import PauseCause, TradingState, TripwireRule
from domain.messages import (
    ChildFailed,
    FeedHeartbeat,
    LeadershipChanged,
    OrderStreamHeartbeat,
    PauseEntries,
    Ping,
    Pong,
    RepublishState,
    ResumeEntries,
    TimerFired,
    TradingStateChanged,
    TripKillSwitch,
    TripwireConditionChanged,
)

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from domain.config import HeartbeatConfig, LeaderConfig, SupervisionConfig

__all__ = ["ChildSpec", "Supervisor"]

logger = logging.getLogger(__name__)

_PING_EVERY_NS = NANOS_PER_SECOND
_REAP_AFTER_TICKS = 3
_SILENT_DEATH = "died without reporting a failure"
_AWAITING_LEADER = "awaiting leader lease"
_ESCALATION_KEY = "escalation"
_UNSTORED_HALT_KEY = "unstored_halt"
# The auto-pause causes that are runbook tripwire rows (reported to the watchdog).
_TRIPWIRE_CAUSES: dict[PauseCause, TripwireRule] = {
    PauseCause.MARKETDATA_STALE: TripwireRule.MARKETDATA_STALE,
    PauseCause.ORDER_STREAM_STALE: TripwireRule.ORDER_STREAM_STALE,
}


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to (re)start one child. ``start`` builds, starts and returns its ref."""

    name: str
    start: Callable[[], pykka.ActorRef[Any]]
    receives_timer: bool = False


class Supervisor(VigilActor):
    # Crash reports and the safety signals it judges are few by construction and must never be
    # refused: a child's crash would go unrestarted, a HALT unseen by the backoff.
    unbounded_messages: ClassVar[tuple[type, ...]] = (
        *VigilActor.unbounded_messages,
        ChildFailed,
        TradingStateChanged,
        LeadershipChanged,
    )

    def __init__(
        self,
        *,
        children: Sequence[ChildSpec],
        metrics: EngineMetrics,
        supervision: SupervisionConfig,
        heartbeats: HeartbeatConfig,
        leader: LeaderConfig,
        feeds: Sequence[str],
        logs_dir: str | Path,
        kill_switch_actor: str = "kill_switch",
        leader_actor: str = "leader",
        order_actor: str = "order",
        watchdog_actor: str = "watchdog",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._specs: dict[str, ChildSpec] = {spec.name: spec for spec in children}
        self._metrics = metrics
        self._supervision = supervision
        self._heartbeats = heartbeats
        self._leader_config = leader
        self._feeds = tuple(feeds)
        self._logs_dir = logs_dir
        self._kill_switch_actor = kill_switch_actor
        self._leader_actor = leader_actor
        self._order_actor = order_actor
        self._watchdog_actor = watchdog_actor
        # Tripwire conditions told to the watchdog and still holding: rule -> detail.
        self._tripwires: dict[TripwireRule, str] = {}
        self._started_ns = 0
        self._crash_times: deque[int] = deque()
        self._restart_counts: dict[str, int] = dict.fromkeys(self._specs, 0)
        self._last_errors: dict[str, str] = {}
        self._pending_restarts: dict[str, int] = {}
        self._dead_ticks: dict[str, int] = {}
        self._reaped: set[str] = set()
        self._outbox = SafetyOutbox(
            directory=self.directory, owner=self.name, target=kill_switch_actor
        )
        self._repeats = ErrorRepeats(logger, window_ns=int(supervision.window_s * NANOS_PER_SECOND))
        self._degraded_streak: dict[str, int] = {}
        self._last_restart_ns: dict[str, int] = {}
        self._awaiting_first_lease = False
        self._feed_data_ns: dict[str, int] = {}
        self._stream_ns: int | None = None
        self._leadership: LeadershipChanged | None = None
        self._not_leader_since_ns: int | None = None
        self._stepped_down = False
        self._trading: TradingStateChanged | None = None
        self._asserted: dict[PauseCause, str] = {}
        self._ping_sequence = 0
        self._last_ping_ns = 0
        self._last_pong: dict[str, int] = {}
        self._ping_sent_ns: dict[int, int] = {}

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            ChildFailed: self.on_child_failed,
            TimerFired: self.on_timer_fired,
            FeedHeartbeat: self.on_feed_heartbeat,
            OrderStreamHeartbeat: self.on_order_stream_heartbeat,
            LeadershipChanged: self.on_leadership_changed,
            TradingStateChanged: self.on_trading_state_changed,
            Pong: self.on_pong,
        }

    def on_receive(self, message: Any) -> Any:
        try:
            return super().on_receive(message)
        except Exception:
            logger.exception("supervisor failed handling %s; carrying on", type(message).__name__)
            return None

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        self._started_ns = self.clock.now_ns()

    def start_children(self) -> list[str]:
        """Start every child in order (asked once by the launcher after this actor starts)."""
        started = []
        for name, spec in self._specs.items():
            self.directory.register(name, spec.start())
            self._last_pong[name] = self.clock.now_ns()
            started.append(name)
        if self._leadership is None or not self._leadership.is_leader:
            # Not leader until the lease says so: entries wait for it. This is the routine
            # wait of every start, not an incident: quiet unless the lease is refused.
            self._awaiting_first_lease = True
            self._asserted[PauseCause.LEADER_LOST] = _AWAITING_LEADER
            log_event(
                logger, "AWAITING_LEADER", "entries wait for the leader lease", level=logging.INFO
            )
            self.directory.tell(
                self._kill_switch_actor,
                PauseEntries(cause=PauseCause.LEADER_LOST, detail=_AWAITING_LEADER, routine=True),
            )
        # Judge the heartbeats once now, so the gauges are real numbers from the first scrape.
        self._check_heartbeats(self.clock.now_ns())
        return started

    def stop_children(self, timeout_s: float = 5.0) -> None:
        """Stop children in reverse start order, the leader last: the lease is released only
        once nothing that could still send an order is running."""
        self._pending_restarts.clear()
        names = [name for name in reversed(list(self._specs)) if name != self._leader_actor]
        if self._leader_actor in self._specs:
            names.append(self._leader_actor)
        for name in names:
            ref = self.directory.get(name)
            if ref is not None and ref.is_alive():
                try:
                    ref.stop(block=True, timeout=timeout_s)
                except pykka.Timeout:
                    logger.error("child %s did not stop within %ss", name, timeout_s)
            self.directory.unregister(name)
        self._specs.clear()

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_child_failed(self, failure: ChildFailed) -> None:
        now = self.clock.now_ns()
        name = failure.name
        current = self.directory.get(name)
        if name not in self._specs or current is None:
            return
        if failure.incarnation in self._reaped:
            # The reaper got there first and restarted it; keep the real error and its dump.
            self._reaped.discard(failure.incarnation)
            self._last_errors[name] = failure.error
            self._write_post_mortem(failure, now)
            return
        if failure.incarnation and failure.incarnation != current.actor_urn:
            return  # about an incarnation already replaced
        if name in self._pending_restarts:
            return  # this incarnation's death is already being handled
        self._last_errors[name] = failure.error
        self._restart_counts[name] = self._restart_counts.get(name, 0) + 1
        self._metrics.actor_restarts_total.labels(actor=name).inc()
        window_ns = int(self._supervision.window_s * NANOS_PER_SECOND)
        self._crash_times.append(now)
        while self._crash_times and self._crash_times[0] <= now - window_ns:
            self._crash_times.popleft()
        recent = len(self._crash_times)
        # The same error again is counted, not logged and dumped again (a full disk would
        # otherwise write a line, a traceback and a dump per restart).
        first_of_its_kind = self._repeats.error(
            f"crash:{name}:{failure.error}",
            f"actor {name} crashed ({recent} crashes in {self._supervision.window_s:.0f}s): "
            f"{failure.error}",
            now_ns=now,
            event="ACTOR_CRASH",
            actor=name,
            error=failure.error,
            recent_crashes=recent,
        )
        if first_of_its_kind and (failure.snapshot or not failure.error.startswith(_SILENT_DEATH)):
            self._write_post_mortem(failure, now)
        if name == self._kill_switch_actor:
            self._resend_unstored_halt(failure.snapshot, now)
        if recent > self._supervision.max_restarts:
            self._escalate(name, recent)
        backoff_s = self._backoff_s(name, recent, now)
        self._pending_restarts[name] = now + int(backoff_s * NANOS_PER_SECOND)
        if backoff_s == 0:
            self._run_due_restarts(now)

    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        for name, spec in self._specs.items():
            if spec.receives_timer:
                self.directory.tell(name, timer)
        self._reap_silent_deaths(now)
        self._run_due_restarts(now)
        self._outbox.retry(now)
        self._repeats.flush(now)
        self._check_heartbeats(now)
        self._check_leader(now)
        self._check_liveness(now)
        self._update_queue_metrics()

    def on_feed_heartbeat(self, heartbeat: FeedHeartbeat) -> None:
        self._feed_data_ns[heartbeat.feed] = max(
            heartbeat.ts_event, self._feed_data_ns.get(heartbeat.feed, 0)
        )

    def on_order_stream_heartbeat(self, heartbeat: OrderStreamHeartbeat) -> None:
        self._stream_ns = max(heartbeat.ts_event, self._stream_ns or 0)

    def on_leadership_changed(self, leadership: LeadershipChanged) -> None:
        self._leadership = leadership
        now = self.clock.now_ns()
        awaiting_first = self._awaiting_first_lease
        self._awaiting_first_lease = False
        if leadership.is_leader:
            self._not_leader_since_ns = None
            self._stepped_down = False
            self._report_tripwire(TripwireRule.LEADER_LOST, active=False)
            if awaiting_first and self._asserted.pop(PauseCause.LEADER_LOST, None) is not None:
                log_event(
                    logger,
                    "LEADER",
                    f"leader lease taken (epoch {leadership.epoch}): entries may flow",
                    epoch=leadership.epoch,
                )
                self.directory.tell(
                    self._kill_switch_actor,
                    ResumeEntries(cause=PauseCause.LEADER_LOST, routine=True),
                )
            else:
                self._clear(PauseCause.LEADER_LOST)
        else:
            if self._not_leader_since_ns is None:
                self._not_leader_since_ns = now
            if awaiting_first:
                # The lease was refused: now it is an incident, logged as one.
                self._asserted.pop(PauseCause.LEADER_LOST, None)
            holder = f" held by {leadership.current_holder}" if leadership.current_holder else ""
            self._assert(PauseCause.LEADER_LOST, f"epoch={leadership.epoch}{holder}")

    def on_trading_state_changed(self, state: TradingStateChanged) -> None:
        self._trading = state
        self._outbox.acknowledge(state)
        # The kill switch keeps only operator pauses across its own restarts, and a tell can be
        # dropped: every condition still asserted here must be in force there.
        for cause, detail in self._asserted.items():
            if cause not in state.pause_causes:
                self.directory.tell(
                    self._kill_switch_actor,
                    PauseEntries(cause=cause, detail=detail, routine=detail == _AWAITING_LEADER),
                )
        self._metrics.set_trading_state(state.state)
        self._metrics.set_pause_causes(state.pause_causes)
        self._metrics.set_mode(state.mode)
        self._metrics.set_armed(state.armed)

    def on_pong(self, pong: Pong) -> None:
        sent = self._ping_sent_ns.get(pong.sequence)
        if sent is not None:
            self._last_pong[pong.name] = max(sent, self._last_pong.get(pong.name, 0))

    # ------------------------------------------------------------------ QUERIES
    def actor_health(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "alive": self.directory.is_alive(name),
                "restarts": self._restart_counts.get(name, 0),
                "last_error": self._last_errors.get(name),
                "restart_due_ns": self._pending_restarts.get(name),
            }
            for name in self._specs
        }

    def heartbeat_ages(self) -> dict[str, Any]:
        now = self.clock.now_ns()
        return {
            "marketdata_age_s": {feed: self._age_s(feed, now) for feed in self._feeds},
            "order_stream_age_s": None
            if self._stream_ns is None
            else (now - self._stream_ns) / NANOS_PER_SECOND,
            "started_ns": self._started_ns,
            "asserted_pauses": {cause.value: detail for cause, detail in self._asserted.items()},
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "children": self.actor_health(),
            "heartbeats": self.heartbeat_ages(),
            "recent_crashes": len(self._crash_times),
            "degraded_backoff_streaks": dict(self._degraded_streak),
            "pending_safety_commands": self._outbox.snapshot(),
            "leadership": msgspec.to_builtins(self._leadership) if self._leadership else None,
            "stepped_down": self._stepped_down,
        }

    # ------------------------------------------------------------------ CHECKS
    def _age_s(self, feed: str, now: int) -> float:
        last = self._feed_data_ns.get(feed, self._started_ns)
        return max(0.0, (now - last) / NANOS_PER_SECOND)

    def _check_heartbeats(self, now: int) -> None:
        stale_feeds = []
        for feed in self._feeds:
            age = self._age_s(feed, now)
            self._metrics.marketdata_heartbeat_seconds.labels(bucket=feed).set(age)
            if age > self._heartbeats.marketdata_stale_s:
                stale_feeds.append(f"feed={feed} age_s={age:.1f}")
        if stale_feeds:
            self._assert(
                PauseCause.MARKETDATA_STALE,
                f"{'; '.join(stale_feeds)} limit_s={self._heartbeats.marketdata_stale_s}",
            )
        else:
            self._clear(PauseCause.MARKETDATA_STALE)
        stream_last = self._stream_ns if self._stream_ns is not None else self._started_ns
        stream_age = max(0.0, (now - stream_last) / NANOS_PER_SECOND)
        self._metrics.order_stream_heartbeat_seconds.set(stream_age)
        if stream_age > self._heartbeats.order_stream_stale_s:
            self._assert(
                PauseCause.ORDER_STREAM_STALE,
                f"age_s={stream_age:.1f} limit_s={self._heartbeats.order_stream_stale_s}",
            )
        else:
            self._clear(PauseCause.ORDER_STREAM_STALE)

    def _check_leader(self, now: int) -> None:
        if self._not_leader_since_ns is None:
            if self._leadership is None:
                self._not_leader_since_ns = self._started_ns
            else:
                return
        grace_ns = int(self._leader_config.grace_s * NANOS_PER_SECOND)
        if not self._stepped_down and now - self._not_leader_since_ns >= grace_ns:
            self._stepped_down = True
            log_event(
                logger,
                "STEP_DOWN",
                f"leader lease not held for {self._leader_config.grace_s:.0f}s: standing by, "
                "no orders will be sent",
                level=logging.WARNING,
            )
            not_leader_s = (now - self._not_leader_since_ns) / NANOS_PER_SECOND
            grace_s = self._leader_config.grace_s
            self._report_tripwire(
                TripwireRule.LEADER_LOST,
                active=True,
                detail=f"not_leader_for_s={not_leader_s:.1f} grace_s={grace_s:g}",
            )

    def _check_liveness(self, now: int) -> None:
        timeout_ns = int(self._heartbeats.actor_ping_timeout_s * NANOS_PER_SECOND)
        unresponsive = []
        for name in self._specs:
            if name in self._pending_restarts:
                continue
            # Judge only pings old enough to have been answered.
            # Two unanswered pings, the oldest past the timeout: one late pong is not a hang.
            unanswered = [
                sent for sent in self._ping_sent_ns.values() if sent > self._last_pong.get(name, 0)
            ]
            if len(unanswered) >= 2 and now - min(unanswered) > timeout_ns:
                unresponsive.append(name)
        if unresponsive:
            self._assert(PauseCause.ACTOR_UNRESPONSIVE, f"actors={','.join(sorted(unresponsive))}")
        else:
            self._clear(PauseCause.ACTOR_UNRESPONSIVE)
        if now - self._last_ping_ns >= _PING_EVERY_NS:
            self._last_ping_ns = now
            self._ping_sequence += 1
            self._ping_sent_ns[self._ping_sequence] = now
            for old in [s for s in self._ping_sent_ns if s < self._ping_sequence - 30]:
                del self._ping_sent_ns[old]
            for name in self._specs:
                self.directory.tell(name, Ping(sequence=self._ping_sequence))

    def _update_queue_metrics(self) -> None:
        for name, ref in self.directory.items():
            try:
                depth = ref.actor_inbox.qsize()
            except Exception:
                continue
            self._metrics.queue_depth.labels(queue=name).set(depth)

    # ------------------------------------------------------------------ EGRESS
    def _assert(self, cause: PauseCause, detail: str) -> None:
        first = cause not in self._asserted
        self._asserted[cause] = detail
        if first:
            log_event(
                logger,
                "AUTO_PAUSE",
                f"auto-pause: {cause.value} {detail}",
                level=logging.WARNING,
                cause=cause.value,
                detail=detail,
            )
            self.directory.tell(self._kill_switch_actor, PauseEntries(cause=cause, detail=detail))
            rule = _TRIPWIRE_CAUSES.get(cause)
            if rule is not None:
                self._report_tripwire(rule, active=True, detail=detail)

    def _clear(self, cause: PauseCause) -> None:
        if self._asserted.pop(cause, None) is not None:
            rule = _TRIPWIRE_CAUSES.get(cause)
            if rule is not None:
                self._report_tripwire(rule, active=False)
            log_event(
                logger, "AUTO_RESUME", f"auto-pause cleared: {cause.value}", cause=cause.value
            )
            self.directory.tell(self._kill_switch_actor, ResumeEntries(cause=cause))

    def _report_tripwire(self, rule: TripwireRule, *, active: bool, detail: str = "") -> None:
        if active:
            self._tripwires[rule] = detail
        elif self._tripwires.pop(rule, None) is None:
            return  # never reported: nothing to clear
        self.directory.tell(
            self._watchdog_actor,
            TripwireConditionChanged(
                rule=rule, active=active, detail=detail, ts_event=self.clock.now_ns()
            ),
        )

    def _escalate(self, name: str, recent: int) -> None:
        trip = TripKillSwitch(
            reason="RESTART_INTENSITY",
            detail=(
                f"actor={name} crashes={recent} window_s={self._supervision.window_s} "
                f"max_restarts={self._supervision.max_restarts}"
            ),
            flatten=self._supervision.flatten_on_escalation,
        )
        log_event(
            logger,
            "ESCALATION",
            f"restart intensity exceeded: {trip.detail}",
            level=logging.CRITICAL,
        )
        self._outbox.send(_ESCALATION_KEY, trip, now_ns=self.clock.now_ns())

    def _resend_unstored_halt(self, snapshot: dict[str, Any], now: int) -> None:
        # The crashed kill switch held a HALT it had not stored: its restart (from storage)
        # will not know it. Send it again until the new incarnation has it stored.
        halt = snapshot.get("halt")
        if not isinstance(halt, dict) or snapshot.get("halt_persisted", True):
            return
        pauses = snapshot.get("pauses") or []
        flatten = any(
            isinstance(p, dict) and p.get("cause") == PauseCause.FLATTEN.value for p in pauses
        )
        trip = TripKillSwitch(
            reason=str(halt.get("reason") or "UNSTORED_HALT"),
            detail=str(halt.get("detail") or ""),
            flatten=flatten,
        )
        log_event(
            logger,
            "KILL_SWITCH",
            f"kill switch crashed holding an unstored HALT ({trip.reason}); re-sending it",
            level=logging.CRITICAL,
            reason=trip.reason,
        )
        self._outbox.send(_UNSTORED_HALT_KEY, trip, now_ns=now)

    def _backoff_s(self, name: str, recent: int, now: int) -> float:
        supervision = self._supervision
        halted = self._trading is not None and self._trading.state is TradingState.HALTED
        # The kill switch never waits long: it holds the HALT and takes the safety commands
        # (it does not crash on storage errors, so it cannot storm on a dead disk).
        degraded = halted or recent > supervision.max_restarts
        if not degraded or name == self._kill_switch_actor:
            self._degraded_streak.pop(name, None)
            return min(
                supervision.backoff_initial_s * (2 ** max(0, recent - 1)),
                supervision.backoff_max_s,
            )
        # Degraded: per child, doubling until it runs window_s without crashing.
        window_ns = int(supervision.window_s * NANOS_PER_SECOND)
        ran_since = now - self._last_restart_ns.get(name, self._started_ns)
        streak = 1 if ran_since >= window_ns else self._degraded_streak.get(name, 0) + 1
        self._degraded_streak[name] = streak
        if supervision.backoff_initial_s == 0:
            return 0.0  # backoff switched off (tests that restart on the spot)
        base_s = max(supervision.backoff_max_s, 1.0)
        return min(base_s * 2 ** (streak - 1), supervision.halted_backoff_max_s)

    def _write_post_mortem(self, failure: ChildFailed, now: int) -> None:
        write_dump_in_background(
            directory=self.directory,
            logs_dir=self._logs_dir,
            kind=f"postmortem-{failure.name}",
            now_ns=now,
            extra={
                "crashed": failure.name,
                "error": failure.error,
                "crashed_snapshot": failure.snapshot,
            },
        )

    def _reap_silent_deaths(self, now: int) -> None:
        # A child can die without a ChildFailed (a BaseException, a failing hook): treat it as
        # a crash all the same. A crashing child is marked dead a moment before its own report
        # is sent, so wait a few ticks for that report, which carries the error and snapshot.
        for name in self._specs:
            if name in self._pending_restarts or self.directory.is_alive(name):
                self._dead_ticks.pop(name, None)
                continue
            ref = self.directory.get(name)
            if ref is None:
                continue
            self._dead_ticks[name] = self._dead_ticks.get(name, 0) + 1
            if self._dead_ticks[name] < _REAP_AFTER_TICKS:
                continue
            del self._dead_ticks[name]
            self.on_child_failed(
                ChildFailed(
                    name=name,
                    error=_SILENT_DEATH,
                    ts_event=now,
                    incarnation=ref.actor_urn,
                )
            )
            self._reaped.add(ref.actor_urn)  # its own late report must not count again

    def _run_due_restarts(self, now: int) -> None:
        for name, due in list(self._pending_restarts.items()):
            if due > now:
                continue
            del self._pending_restarts[name]
            spec = self._specs.get(name)
            if spec is None:
                continue
            try:
                ref = spec.start()
            except Exception as error:
                self._repeats.error(
                    f"restart:{name}:{error!r}",
                    f"restart of {name} failed; retrying: {error!r}",
                    now_ns=now,
                    event="ACTOR_RESTART",
                    exc_info=True,
                    actor=name,
                )
                self._last_errors[name] = f"restart failed: {error!r}"
                retry_ns = int(self._supervision.backoff_max_s * NANOS_PER_SECOND)
                self._pending_restarts[name] = now + max(retry_ns, NANOS_PER_SECOND // 10)
                continue
            self.directory.register(name, ref)
            self._last_pong[name] = now
            self._last_restart_ns[name] = now
            log_event(logger, "ACTOR_RESTART", f"actor {name} restarted", actor=name)
            if name == self._watchdog_actor:
                # A new watchdog starts with no episodes: tell it what still holds.
                for rule, detail in self._tripwires.items():
                    held = TripwireConditionChanged(
                        rule=rule, active=True, detail=detail, ts_event=now
                    )
                    self.directory.tell(name, held)
            # The new incarnation knows nothing of the trading state, leadership or portfolio.
            for publisher in (self._kill_switch_actor, self._leader_actor, self._order_actor):
                self.directory.tell(publisher, RepublishState())
