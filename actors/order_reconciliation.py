"""The order actor's reconciler: when to compare our books with the broker's, and what came of it.

Not an actor: a helper the ``OrderActor`` owns and calls on its own thread, so nothing here
needs a lock. The comparison itself is ``domain.reconcile.reconcile`` (pure); this class holds
what lives between runs:

- the schedule of the three loops from ``config.reconciliation`` (in-flight, open orders,
  positions) and an early re-check when a difference is first seen, so that a difference that
  persists past ``drift_grace_s`` is confirmed without waiting for the next full interval;
- the standing drift, each item with when it was first seen, and which items are confirmed
  (seen again after the grace): confirmed drift pauses entries with ``RECONCILE_DRIFT``;
- consecutive broker failures (at ``max_failures`` the report says so, it is logged once, and
  entries pause: books nobody can check are not traded on);
- ids the broker refused as duplicates (it holds them), and when each order was last resent;
- the latest report, answered as ``ReconcileReportView``.

The actor does the I/O (broker lists, applying actions, telling the kill switch) and logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from domain.clock import NANOS_PER_SECOND
from domain.messages.api import InstrumentReconcileView, ReconcileReportView
from domain.reconcile import Drift, DriftKind, Reconciliation

if TYPE_CHECKING:
    from domain.config import ReconciliationConfig

__all__ = ["DriftChanges", "OrderReconciler", "Trigger"]


class Trigger:
    START = "start"
    LEADERSHIP = "leadership"
    IN_FLIGHT = "in_flight"
    OPEN_ORDERS = "open_orders"
    POSITIONS = "positions"


_MAX_HALTS_SHOWN = 20

# Which lists each run fetches.
FULL_RUNS = frozenset({Trigger.START, Trigger.LEADERSHIP, Trigger.POSITIONS})


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
        if trigger in FULL_RUNS:
            self._recheck_ns = None

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
    ) -> DriftChanges:
        """Take one run's outcome: report fields, standing drift, failure count reset."""
        self.mark_ran(trigger, now_ns)
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
