"""The order actor's reconciliation: comparing our books with the broker's, and acting on it.

Not an actor: helpers the ``OrderActor`` owns and calls on its own thread, so nothing here
needs a lock. The comparison itself is ``domain.reconcile.reconcile`` (pure). Two classes:

``OrderReconciler`` holds what lives between runs:

- the schedule of the three loops from ``config.reconciliation`` (in-flight, open orders,
  positions) and an early re-check when a difference is first seen, so that a difference that
  persists past ``drift_grace_s`` is confirmed without waiting for the next full interval;
- the standing drift, each item with when it was first seen, and which items are confirmed
  (seen again after the grace): confirmed drift pauses entries with ``RECONCILE_DRIFT``;
- consecutive broker failures (at ``max_failures`` the report says so, it is logged once, and
  entries pause: books nobody can check are not traded on);
- ids the broker refused as duplicates (it holds them), and when each order was last resent;
- the latest report, answered as ``ReconcileReportView``;
- the fills watermark: where the next light run's fill list starts.

Light and full runs. START and LEADERSHIP runs are **full**: the broker's whole session order
and fill lists (what happened while we were down or not leading). The scheduled runs
(in-flight, open orders, positions) are **light**: the broker's open orders, its fills since
the watermark (the start of the previous successful run less a margin), and for the positions
loop its positions: a cost of O(working orders + recent fills), not O(the day's orders), as in
NautilusTrader's live execution engine's open-order check. A light run settles nothing on an
order's absence from the open list (``domain.reconcile``: it may have finished there); whatever
it cannot settle by itself (such an absence past the in-flight threshold, a fill gap, a fill of
an unknown order, any drift) and any drift already standing (a light run cannot see that it
went away) or a positions loop without a clean full run since the last failure make the same
pass run a full one, whose outcome alone is recorded.

``BrokerReconciliation`` does the I/O of a run: it lists the broker's orders, fills and
positions, builds the ``LocalBooks`` from the shared ``OrderBook``, applies the actions
(missed fills and status reports through the actor's own paths, settling and resending through
``OrderExecution``), logs and stores drift, and keeps the kill switch showing what the
reconciliation decided (a ``RECONCILE_DRIFT`` pause, halts on drift it cannot explain).
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.logs import log_event
from adapters.storage.journal import JournalKind
from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import OrderStatus, PauseCause
from domain.messages import (
    FillReport,
    OrderStatusReport,
    PauseEntries,
    ResumeEntries,
    TradingStateChanged,
    TripKillSwitch,
)
from domain.messages.api import InstrumentReconcileView, ReconcileReportView
from domain.orders import InvalidTransition
from domain.reconcile import (
    IN_FLIGHT,
    ApplyFill,
    ApplyStatus,
    BrokerFacts,
    Drift,
    DriftKind,
    LocalBooks,
    ReconcileAction,
    Reconciliation,
    ResendCancel,
    SettleInFlight,
    describe_action,
    reconcile,
    signed_quantity,
)

if TYPE_CHECKING:
    from actors.order_book import OrderBook
    from actors.order_execution import OrderExecution
    from actors.safety_outbox import SafetyOutbox
    from adapters.brokers.base import BrokerPort
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from adapters.storage.write_behind import WriteBehind
    from domain.clock import Clock
    from domain.config import ReconciliationConfig

__all__ = ["BrokerReconciliation", "DriftChanges", "OrderReconciler", "Trigger"]

# The order actor's log lines keep one logger name, whichever module writes them.
logger = logging.getLogger("actors.order_actor")


class Trigger:
    START = "start"
    LEADERSHIP = "leadership"
    IN_FLIGHT = "in_flight"
    OPEN_ORDERS = "open_orders"
    POSITIONS = "positions"


_MAX_HALTS_SHOWN = 20

# Runs that ask for the broker's whole session order and fill lists (the others are light).
FULL_RUNS = frozenset({Trigger.START, Trigger.LEADERSHIP})
# Runs that compare positions.
POSITIONS_RUNS = frozenset({Trigger.START, Trigger.LEADERSHIP, Trigger.POSITIONS})

# A light run asks for fills from the start of the previous successful run less this much at
# least: a fill is listed by the broker some time after its ts_event (reports in transit, a
# REST list that lags its stream) and the broker's clock is not ours. Also at least the
# in-flight settle threshold and the drift grace (see OrderReconciler.fills_since_ns).
MIN_FILLS_MARGIN_NS = 60 * NANOS_PER_SECOND


class _StandingDrift(msgspec.Struct, kw_only=True):
    drift: Drift
    first_seen_ns: int
    last_seen_ns: int
    confirmed: bool = False


class DriftChanges(msgspec.Struct, frozen=True, kw_only=True):
    confirmed: tuple[Drift, ...]  # newly past the grace: log, record, pause
    cleared: tuple[Drift, ...]  # no longer seen by a run that could see them


class OrderReconciler:
    """Schedule and state of reconciliation for one order actor.

    Args:
        config: intervals, grace and failure cap.
        in_flight_settle_ns: how long an order may stay in flight before the broker's order
            list is taken as the answer.
    """

    def __init__(self, config: ReconciliationConfig, *, in_flight_settle_ns: int) -> None:
        self.config = config
        self.in_flight_settle_ns = in_flight_settle_ns
        self._grace_ns = int(config.drift_grace_s * NANOS_PER_SECOND)
        self._intervals_ns = {
            Trigger.IN_FLIGHT: int(config.in_flight_interval_s * NANOS_PER_SECOND),
            Trigger.OPEN_ORDERS: int(config.open_orders_interval_s * NANOS_PER_SECOND),
            Trigger.POSITIONS: int(config.positions_interval_s * NANOS_PER_SECOND),
        }
        self._stale_after_ns = 2 * max(self._grace_ns, self._intervals_ns[Trigger.POSITIONS])
        # How far before the previous successful run a light run's fill list starts: what the
        # broker may list late (up to the settle threshold we already allow a request to take
        # to show up), a drift seen within its grace, and a floor for clock skew.
        self.fills_margin_ns = max(in_flight_settle_ns, self._grace_ns, MIN_FILLS_MARGIN_NS)
        self._last_success_ns: int | None = None
        self.light_runs = 0
        self.full_runs = 0
        self.escalations = 0
        self._last_ns: dict[str, int] = {}
        self._recheck_ns: int | None = None
        self.started = False
        self.runs = 0
        self.trigger = Trigger.START
        self.last_run_ns: int | None = None
        self.duration_ms: float | None = None
        self.instruments: list[InstrumentReconcileView] = []
        self.unknown_broker_orders: list[str] = []
        self.missing_at_broker: list[str] = []
        self.actions: list[str] = []
        self._drift: dict[str, _StandingDrift] = {}
        self.failures = 0
        self.error: str | None = None
        self.failure_logged = False
        # A full run (positions included) found nothing, so a RECONCILE_DRIFT pause may go.
        self.full_run_clean = False
        self.broker_has: set[str] = set()
        self.last_request_ns: dict[str, int] = {}
        self.logged_unknown: set[str] = set()
        # Drift the order actor halted on (overfill, a fill for a finished bracket): sticky
        # until an operator resets the kill switch and the actor restarts.
        self.halts: list[str] = []

    # ------------------------------------------------------------------ schedule
    def due(self, now_ns: int) -> str | None:
        """The widest loop due at ``now_ns`` (positions > open orders > in-flight), or None."""
        if self._recheck_ns is not None and now_ns >= self._recheck_ns:
            return Trigger.POSITIONS
        for trigger in (Trigger.POSITIONS, Trigger.OPEN_ORDERS, Trigger.IN_FLIGHT):
            last = self._last_ns.get(trigger)
            if last is None or now_ns - last >= self._intervals_ns[trigger]:
                return trigger
        return None

    def record_halt(self, sentence: str) -> None:
        """Keep a drift the actor halted on in the report (the latest few)."""
        self.halts = [*self.halts, sentence][-_MAX_HALTS_SHOWN:]

    def request_positions_check(self, now_ns: int) -> None:
        """Run the positions loop at the next pass (an unknown order traded)."""
        if self._recheck_ns is None or self._recheck_ns > now_ns:
            self._recheck_ns = now_ns

    def mark_ran(self, trigger: str, now_ns: int) -> None:
        # A wider run covers the narrower loops: a positions run also checked open orders
        # and what was in flight.
        covered = {
            Trigger.IN_FLIGHT: (Trigger.IN_FLIGHT,),
            Trigger.OPEN_ORDERS: (Trigger.IN_FLIGHT, Trigger.OPEN_ORDERS),
        }.get(trigger, (Trigger.IN_FLIGHT, Trigger.OPEN_ORDERS, Trigger.POSITIONS))
        for loop in covered:
            self._last_ns[loop] = now_ns
        if trigger in POSITIONS_RUNS:
            self._recheck_ns = None

    def fills_since_ns(self) -> int | None:
        """Where a light run's fill list starts: the start of the previous successful run less
        the margin. Every fill before it was listed to (and booked or judged by) a run that
        succeeded; None before the first success (the whole session)."""
        if self._last_success_ns is None:
            return None
        return self._last_success_ns - self.fills_margin_ns

    def full_run_reason(self, trigger: str) -> str | None:
        """Why a scheduled run must ask for the whole lists without trying a light run first,
        or None: before any success (no watermark), and while drift stands (a light run
        cannot see that a difference went away)."""
        if self._last_success_ns is None:
            return "no run has reached the broker yet"
        if trigger != Trigger.IN_FLIGHT and self._drift:
            # (The in-flight loop never clears drift, light or full.)
            return "drift stands: only a full run can see it go away"
        return None

    def clean_full_run_wanted(self, trigger: str) -> bool:
        """A positions loop whose light run reached the broker, while no clean full run has
        followed the last failure: only a full run may let a RECONCILE_DRIFT pause go."""
        return trigger == Trigger.POSITIONS and not self.full_run_clean

    # ------------------------------------------------------------------ outcomes
    def record_failure(self, trigger: str, error: str, now_ns: int) -> bool:
        """Count one failed attempt to ask the broker. Returns True the first time the count
        reaches ``max_failures`` (log it then, not on every later failure)."""
        self.mark_ran(trigger, now_ns)
        self.failures += 1
        self.full_run_clean = False
        if self.failures < self.config.max_failures:
            return False
        self.error = (
            f"BROKER_UNREACHABLE: {self.failures} consecutive reconciliation attempts failed; "
            f"the facts below are from the last run that reached it. Last error: {error}"
        )
        if self.failure_logged:
            return False
        self.failure_logged = True
        return True

    def record_run(
        self,
        trigger: str,
        outcome: Reconciliation,
        *,
        now_ns: int,
        duration_ms: float,
        applied: list[str],
        deferred: bool = False,
        light: bool = False,
    ) -> DriftChanges:
        """Take one run's outcome: report fields, standing drift, failure count reset. A light
        run's outcome (recorded only when it found nothing to escalate) clears no drift."""
        self.mark_ran(trigger, now_ns)
        self._last_success_ns = now_ns
        if light:
            self.light_runs += 1
            # It escalates any absence it cannot explain, so nothing is missing right now.
            self.missing_at_broker = list(outcome.missing_at_broker)
        else:
            self.full_runs += 1
        self.started = True
        self.runs += 1
        self.trigger = trigger
        self.last_run_ns = now_ns
        self.duration_ms = duration_ms
        self.failures = 0
        self.error = None
        self.failure_logged = False
        self.actions = list(applied)
        if deferred:
            # Settling needs the broker and we may not use it yet: the in-flight loop runs
            # again at the next pass instead of an interval later.
            self._last_ns.pop(Trigger.IN_FLIGHT, None)
        if DriftKind.POSITIONS in outcome.kinds_checked:
            self.instruments = list(outcome.instruments)
        if DriftKind.ORDERS in outcome.kinds_checked:
            self.unknown_broker_orders = list(outcome.unknown_broker_orders)
            self.missing_at_broker = list(outcome.missing_at_broker)
        changes = self._update_drift(outcome, now_ns)
        if DriftKind.POSITIONS in outcome.kinds_checked:
            self.full_run_clean = not self._drift
        return changes

    def _update_drift(self, outcome: Reconciliation, now_ns: int) -> DriftChanges:
        seen = {drift.key: drift for drift in outcome.drift}
        cleared: list[Drift] = []
        for key in list(self._drift):
            standing = self._drift[key]
            if standing.drift.kind in outcome.kinds_checked and key not in seen:
                cleared.append(standing.drift)
                del self._drift[key]
        confirmed: list[Drift] = []
        for key, drift in seen.items():
            standing = self._drift.get(key)
            if standing is not None and now_ns - standing.last_seen_ns > self._stale_after_ns:
                # Not looked at for long (a standby's start run, hours before it leads): the
                # grace counts between two looks, so this look starts it again.
                standing = None
            if standing is None:
                standing = _StandingDrift(drift=drift, first_seen_ns=now_ns, last_seen_ns=now_ns)
                self._drift[key] = standing
            standing.drift = drift
            standing.last_seen_ns = now_ns
            if not standing.confirmed and now_ns - standing.first_seen_ns >= self._grace_ns:
                standing.confirmed = True
                confirmed.append(drift)
        pending = [s.first_seen_ns for s in self._drift.values() if not s.confirmed]
        if pending:
            # Look again once the grace has passed rather than at the next interval.
            due = min(pending) + self._grace_ns
            self._recheck_ns = due if self._recheck_ns is None else min(self._recheck_ns, due)
        return DriftChanges(confirmed=tuple(confirmed), cleared=tuple(cleared))

    # ------------------------------------------------------------------ decisions
    def pause_wanted(self) -> bool:
        """Entries must pause: confirmed drift stands, or the broker cannot be asked."""
        return self.failures >= self.config.max_failures or any(
            standing.confirmed for standing in self._drift.values()
        )

    def resume_allowed(self) -> bool:
        """A RECONCILE_DRIFT pause may be cleared: a later full run was clean."""
        return self.full_run_clean and not self._drift and self.failures == 0

    def pause_detail(self) -> str:
        if self.failures >= self.config.max_failures and self.error:
            return self.error
        sentences = [s.drift.sentence for s in self._drift.values() if s.confirmed]
        return "; ".join(sentences)[:1000]

    # ------------------------------------------------------------------ report
    def view(self) -> ReconcileReportView:
        drift = [*self.halts, *(standing.drift.sentence for standing in self._drift.values())]
        return ReconcileReportView(
            clean=self.last_run_ns is not None and not drift and self.error is None,
            trigger=self.trigger,
            last_run_ns=self.last_run_ns,
            duration_ms=self.duration_ms,
            runs=self.runs,
            instruments=list(self.instruments),
            unknown_broker_orders=list(self.unknown_broker_orders),
            missing_at_broker=list(self.missing_at_broker),
            actions=list(self.actions),
            drift=drift,
            error=self.error,
        )


class BrokerReconciliation:
    """Runs reconciliation for one order actor and applies what it finds.

    Args:
        book: the actor's books, shared by reference.
        reconciler: schedule and state between runs.
        execution: the last gate, settling, resending and cancel retries.
        database: stored orders (read after a flush of ``store``).
        store: the write-behind events are handed to.
        broker: the broker port (orders, fills, positions).
        metrics: retry counters.
        clock: the actor's clock.
        safety: halts that must reach the kill switch.
        tell: sends a message to an actor by name (the actor's directory).
        kill_switch_actor: name of the kill switch (told to pause or resume on drift).
        instance_id: stamped on stored events.
        trading_state: the kill switch's last published state, as the actor saw it.
        apply_fill_report: the actor's fill path (a missed fill).
        apply_status_report: the actor's status path (a missed status report).
    """

    def __init__(
        self,
        book: OrderBook,
        *,
        reconciler: OrderReconciler,
        execution: OrderExecution,
        database: Database,
        store: WriteBehind,
        broker: BrokerPort,
        metrics: EngineMetrics,
        clock: Clock,
        safety: SafetyOutbox,
        tell: Callable[[str, object], bool],
        kill_switch_actor: str,
        instance_id: str,
        trading_state: Callable[[], TradingStateChanged | None],
        apply_fill_report: Callable[[FillReport], None],
        apply_status_report: Callable[[OrderStatusReport], None],
    ) -> None:
        self._book = book
        self._reconciler = reconciler
        self._execution = execution
        self._database = database
        self._store = store
        self._broker = broker
        self._metrics = metrics
        self._clock = clock
        self._safety = safety
        self._tell = tell
        self._kill_switch_actor = kill_switch_actor
        self._instance_id = instance_id
        self._trading_state = trading_state
        self._apply_fill_report = apply_fill_report
        self._apply_status_report = apply_status_report
        # Whether the broker's unknown ids are ours in storage (that never changes).
        self._stored_ids_cache: dict[str, bool] = {}

    def reconcile_with_broker(self) -> None:
        """Compare the whole book with the broker's orders, fills and positions and apply what
        they explain (what happened while we were down or not leading). Runs at start and on
        every gain of leadership; a broker failure is counted and the schedule tries again."""
        if not self._execution.may_touch_broker():
            # A standby applying fills would write brackets the leader owns, and the leader
            # would then skip them as known trade ids: only the lease holder reconciles (the
            # takeover runs this again once the lease is ours).
            return
        trigger = Trigger.LEADERSHIP if self._reconciler.started else Trigger.START
        self._run(trigger, self._clock.now_ns())

    def reconcile_on_schedule(self, now: int) -> None:
        # The three loops of config.reconciliation, only while we lead (a standby applying
        # fills would write brackets the leader owns); then make sure the kill switch shows
        # what the reconciliation decided, whoever lost a message on the way.
        if self._execution.may_touch_broker():
            due = self._reconciler.due(now)
            if due == Trigger.IN_FLIGHT:
                self._settle_in_flight(now)
            elif due is not None:
                self._run(due, now)
        self._sync_drift_pause()

    def _settle_in_flight(self, now: int) -> None:
        """The in-flight loop: orders sent (or cancels asked) longer ago than the settle delay
        are settled from the broker's order list, by the same rules as every other run."""
        threshold = self._reconciler.in_flight_settle_ns
        last_request = self._reconciler.last_request_ns
        held = self._execution.held_by_gateway()
        stale = any(
            order.status in IN_FLIGHT
            and order_id not in held
            and now - max(order.ts_updated, last_request.get(order_id, 0)) >= threshold
            for order_id, order in self._book.orders.items()
        )
        if stale and self._execution.may_touch_broker():
            self._run(Trigger.IN_FLIGHT, now)

    def _run(self, trigger: str, now: int) -> None:
        started_mono = self._clock.monotonic_ns()
        reconciler = self._reconciler
        light = trigger not in FULL_RUNS
        why_full = reconciler.full_run_reason(trigger) if light else None
        if light and why_full is None:
            outcome = self._compare(trigger, now, light=True)
            if outcome is None:
                return  # the broker could not be asked: counted as a failed run
            why_full = _escalation(outcome)
            if why_full is None and reconciler.clean_full_run_wanted(trigger):
                why_full = "the first positions check to reach the broker after a failure"
            if why_full is None:
                self._record(trigger, outcome, now, started_mono, light=True)
                return
            # Its actions are dropped with it: the full run proposes them again, with the rest.
            reconciler.escalations += 1
            log_event(
                logger,
                "RECONCILE",
                f"reconciliation ({trigger}) asks for the broker's whole lists: {why_full}",
                trigger=trigger,
            )
        if light and trigger == Trigger.IN_FLIGHT:
            # Whatever the in-flight loop could not settle, the open-orders rules judge with
            # the whole lists (an unknown order's fill included).
            trigger = Trigger.OPEN_ORDERS
        outcome = self._compare(trigger, now, light=False)
        if outcome is None:
            return
        self._record(
            trigger,
            outcome,
            now,
            started_mono,
            light=False,
            note=None if why_full is None else f"whole lists asked: {why_full}",
        )

    def _compare(self, trigger: str, now: int, *, light: bool) -> Reconciliation | None:
        """Ask the broker (light: open orders and fills since the watermark; full: the whole
        session's lists) and compare; None when the broker could not be asked."""
        try:
            # Orders before fills: a fill list newer than the order list cannot make a
            # filled quantity look unbooked.
            if light:
                reports = self._broker.list_open_orders()
                fills = self._broker.list_fills(since_ns=self._reconciler.fills_since_ns())
            else:
                reports = self._broker.list_orders()
                fills = self._broker.list_fills()
            positions = self._broker.list_positions() if trigger in POSITIONS_RUNS else None
        except (BrokerUnavailable, BrokerRejected) as error:
            self._metrics.retries_total.labels(type="reconcile").inc()
            if self._reconciler.record_failure(trigger, str(error), now):
                log_event(
                    logger,
                    "RECONCILE",
                    f"reconciliation cannot reach the broker ({self._reconciler.failures} "
                    f"attempts in a row); entries pause until it can: {error}",
                    level=logging.ERROR,
                    trigger=trigger,
                    failures=self._reconciler.failures,
                )
            elif self._reconciler.failures == 1:
                logger.warning("reconciliation (%s) could not ask the broker: %s", trigger, error)
            self._sync_drift_pause()
            return None
        return reconcile(
            self._local_books(reports, fills, full=not light),
            BrokerFacts(orders=reports, fills=fills, positions=positions, orders_open_only=light),
            now_ns=now,
            in_flight_settle_ns=self._reconciler.in_flight_settle_ns,
            in_flight_only=trigger == Trigger.IN_FLIGHT,
        )

    def _record(
        self,
        trigger: str,
        outcome: Reconciliation,
        now: int,
        started_mono: int,
        *,
        light: bool,
        note: str | None = None,
    ) -> None:
        applied, deferred = self._apply_actions(outcome.actions, now)
        if note is not None:
            applied.insert(0, note)
        changes = self._reconciler.record_run(
            trigger,
            outcome,
            now_ns=now,
            duration_ms=(self._clock.monotonic_ns() - started_mono) / 1e6,
            applied=applied,
            deferred=deferred,
            light=light,
        )
        self._log_unknown_broker_orders(outcome, now)
        self._announce_drift(changes, trigger, now)
        self._sync_drift_pause()

    def _local_books(
        self, reports: list[OrderStatusReport], fills: list[FillReport], *, full: bool
    ) -> LocalBooks:
        positions: dict[str, int] = {}
        for bracket in self._book.brackets.values():
            quantity = signed_quantity(bracket.side, bracket.open_quantity)
            positions[bracket.instrument] = positions.get(bracket.instrument, 0) + quantity
        in_memory = self._book.orders
        elsewhere = {r.client_order_id for r in reports if r.client_order_id not in in_memory}
        elsewhere.update(f.client_order_id for f in fills if f.client_order_id not in in_memory)
        return LocalBooks(
            orders=in_memory,
            finished_order_ids=frozenset(self._stored_elsewhere(elsewhere, prune=full)),
            # The live sets, not copies: they grow all session, and reconcile only reads them
            # (on this thread, before any action is applied).
            trade_ids=self._book.trade_ids,
            positions=positions,
            broker_has=frozenset(self._reconciler.broker_has),
            last_request_ns=self._last_requests(),
            reported_unknown=self._reconciler.logged_unknown,
        )

    def _last_requests(self) -> Mapping[str, int]:
        """When each order was last sent, as far as settling goes. A request the broker gateway
        still holds (waiting for a rate-limit token behind a burst, or in a call) counts as
        sent now: the broker may not have it yet, so its absence from the broker's list must
        not settle the order or send it again (50 brackets at Kite's 10/s queued longer than
        the settle wait, were resent until RESEND_GAVE_UP HALTed the engine)."""
        held = self._execution.held_by_gateway()
        if not held:
            return self._reconciler.last_request_ns
        now = self._clock.now_ns()
        return ChainMap(dict.fromkeys(held, now), self._reconciler.last_request_ns)

    def _stored_elsewhere(self, client_order_ids: set[str], *, prune: bool) -> set[str]:
        # Ids the broker lists that are not in memory: ours if storage has them (a finished
        # bracket's legs). Whether an id is stored never changes, so each is looked up once;
        # a full run (the broker's whole lists) keeps only the ids the broker still lists, so
        # the cache does not outgrow the broker's session.
        known = self._stored_ids_cache
        if prune:
            for order_id in [i for i in known if i not in client_order_ids]:
                del known[order_id]
        for order_id in client_order_ids & self._book.finished.keys():
            known[order_id] = True  # finished by us: stored, or on its way to the tables
        lookup = [order_id for order_id in client_order_ids if order_id not in known]
        if lookup:
            self._store.flush()  # the tables answer: what we handed over first
            with UnitOfWork(self._database) as uow:
                for order_id in lookup:
                    known[order_id] = uow.orders.get(order_id) is not None
        return {order_id for order_id in client_order_ids if known[order_id]}

    def _apply_actions(
        self, actions: Iterable[ReconcileAction], now: int
    ) -> tuple[list[str], bool]:
        applied: list[str] = []
        deferred = False
        may_send = self._execution.may_touch_broker()
        for action in actions:
            sentence = describe_action(action)
            if isinstance(action, ApplyFill):
                self._apply_fill_report(action.fill)
            elif isinstance(action, ApplyStatus):
                try:
                    self._apply_status_report(action.report)
                except InvalidTransition as error:
                    # One report our books cannot take must not stop the rest.
                    self.halt_on_drift("RECONCILE_MISMATCH", str(error), action.report, now)
                    continue
            elif not may_send:
                # Settling needs the broker (and the directory, which may not name us yet
                # during on_start): deferred to the next pass while we lead.
                applied.append(f"deferred until leading: {sentence}")
                deferred = True
                continue
            elif isinstance(action, SettleInFlight):
                order = self._book.orders.get(action.client_order_id)
                if order is None or order.status not in IN_FLIGHT:
                    continue
                if order.status is OrderStatus.PENDING_CANCEL:
                    # The broker's order list does not show it, so there is nothing to cancel.
                    # Not proof that it was never sent (a broker lists only today's orders):
                    # the positions run catches exposure it may have left.
                    why = f" ({order.reason})" if order.reason else ""
                    self._execution.settle_locally(
                        order, f"NOT_AT_BROKER: cancel asked, not in the broker's orders{why}"
                    )
                    sentence += "; cancelled locally"
                else:
                    self._reconciler.last_request_ns[order.client_order_id] = now
                    self._execution.resend_or_drop(order)
                    sentence += "; not resent, settled" if order.status.is_terminal else "; resent"
            elif isinstance(action, ResendCancel):
                order = self._book.orders.get(action.client_order_id)
                if order is None or order.status is not OrderStatus.PENDING_CANCEL:
                    continue
                # Still working at the broker: our cancel was lost (or its outcome unknown).
                if (
                    not self._execution.may_resend_cancel(order, now)
                    or self._execution.stamp_under_fence(order, now, kind=JournalKind.CANCEL_RESEND)
                    is not None
                ):
                    continue
                self._metrics.retries_total.labels(type="cancel_resend").inc()
                self._execution.request_cancel(order)
            log_event(logger, "RECOVERY", f"reconcile: {sentence}", action=type(action).__name__)
            applied.append(sentence)
        return applied, deferred

    def _log_unknown_broker_orders(self, outcome: Reconciliation, now: int) -> None:
        for order_id in outcome.unknown_broker_orders:
            if order_id not in self._reconciler.logged_unknown:
                self.unknown_report("order list", order_id, {"client_order_id": order_id}, now)

    def _announce_drift(self, changes: DriftChanges, trigger: str, now: int) -> None:
        for drift in changes.confirmed:
            log_event(
                logger,
                "RECONCILE",
                f"reconcile drift: {drift.sentence}",
                level=logging.CRITICAL if drift.unprotected else logging.ERROR,
                drift_key=drift.key,
                instrument=drift.instrument,
                unprotected=drift.unprotected,
                trigger=trigger,
            )
            self._store.write_event(
                "RECONCILE_DRIFT",
                {
                    "key": drift.key,
                    "kind": drift.kind.value,
                    "instrument": drift.instrument,
                    "unprotected": drift.unprotected,
                    "sentence": drift.sentence,
                    "trigger": trigger,
                },
                ts_ns=now,
                instance_id=self._instance_id,
            )
        for drift in changes.cleared:
            log_event(
                logger,
                "RECONCILE",
                f"reconcile drift cleared: {drift.sentence}",
                drift_key=drift.key,
                instrument=drift.instrument,
                trigger=trigger,
            )

    def _sync_drift_pause(self) -> None:
        # Told again on every pass until the kill switch's published state shows it: a tell
        # can fail (a restarting kill switch) and RECONCILE_DRIFT is not persisted there.
        trading = self._trading_state()
        shown = trading is not None and PauseCause.RECONCILE_DRIFT in trading.pause_causes
        reconciler = self._reconciler
        if reconciler.pause_wanted():
            if not shown:
                command = PauseEntries(
                    cause=PauseCause.RECONCILE_DRIFT, detail=reconciler.pause_detail()
                )
                if not self._tell(self._kill_switch_actor, command):
                    logger.warning("could not tell the kill switch to pause on drift; retrying")
        elif shown and reconciler.resume_allowed():
            self._tell(self._kill_switch_actor, ResumeEntries(cause=PauseCause.RECONCILE_DRIFT))
        self._safety.retry(self._clock.now_ns())

    def unknown_report(self, kind: str, client_order_id: str, report: object, now: int) -> None:
        # Once per order: an unknown order's every report would otherwise repeat the line.
        # Its exposure is the positions loop's to judge, so that loop looks again soon.
        self._reconciler.request_positions_check(now)
        if client_order_id in self._reconciler.logged_unknown:
            return
        self._reconciler.logged_unknown.add(client_order_id)
        log_event(
            logger,
            "RECONCILE",
            f"{kind} report for an order this engine does not know: {client_order_id}",
            level=logging.WARNING,
            client_order_id=client_order_id,
        )
        self._store.write_event(
            "RECONCILE",
            {
                "kind": kind,
                "client_order_id": client_order_id,
                "report": msgspec.to_builtins(report),
            },
            ts_ns=now,
            instance_id=self._instance_id,
        )

    def halt_on_drift(self, reason: str, detail: str, report: object, now: int) -> None:
        # The broker's books and ours disagree: stop trading and leave the reconciliation to an
        # operator; flattening from books we no longer trust could make it worse. The trip is
        # told again on every pass until the kill switch shows HALTED (a tell can fail).
        log_event(logger, reason, detail, level=logging.CRITICAL)
        self._store.write_event(
            reason,
            {"detail": detail, "report": msgspec.to_builtins(report)},
            ts_ns=now,
            instance_id=self._instance_id,
        )
        self._reconciler.record_halt(f"HALT {reason}: {detail}")
        self._safety.send(
            f"halt:{reason}", TripKillSwitch(reason=reason, detail=detail), now_ns=now
        )


def _escalation(outcome: Reconciliation) -> str | None:
    """Why a light run's outcome needs the whole lists, or None when it settles by itself."""
    if outcome.needs_full:
        more = len(outcome.needs_full) - 1
        return outcome.needs_full[0] + (f" (and {more} more)" if more else "")
    if outcome.drift:
        return f"drift seen: {outcome.drift[0].sentence}"
    if outcome.unknown_broker_orders:
        return f"an order we do not know: {outcome.unknown_broker_orders[0]}"
    return None
