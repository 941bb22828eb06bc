"""OrderActor: the only actor that talks to the broker for orders.

Owns: orders, OCO brackets, fills and the positions derived from them; journals every broker
call ahead (one fenced INSERT, ``adapters.storage.journal``) and hands every change to the
write-behind (``adapters.storage.write_behind``), which brings the tables up to date in batches
on its own thread. The books in memory are the truth while it runs.
Accepts: ``SubmitBracket`` (from risk), ``FlattenAll``, ``TightenStops`` (the scheduler's
15:20), broker reports (``OrderStatusReport``,
``FillReport``, ``OrderStreamHeartbeat``), ``TradingStateChanged``, ``LeadershipChanged``,
``DrainTicks`` (marks), ``TimerFired``, the broker gateway's outcomes (``BrokerRequestFailed``,
``BrokerRequestCompleted``, ``BrokerRequestWithheld``: submits, cancels and modifies go to the
broker through ``actors.broker_gateway``, never on this thread when it is threaded); answers
``QueryPositions``, ``QueryOrders``, ``QueryPortfolio``, ``QueryReconcileReport``.
Publishes: ``PortfolioUpdated`` to risk, ``OrderStreamHeartbeat`` to the
supervisor, ``OrderDenied`` to the log and metrics.

The actor owns the state and is the composition of three helpers it calls on its own thread,
all sharing one ``OrderBook`` (``actors.order_book``) by reference:

- ``OrderExecution`` (``actors.order_execution``): the last gate, the write-ahead fence, and
  placing, sending, resending, resizing and cancelling orders; entry expiry and retry caps.
- ``BrokerReconciliation`` and ``OrderReconciler`` (``actors.order_reconciliation``): compare
  these books (pure rules in ``domain.reconcile``) with the broker's orders, fills and
  positions at start, on every gain of leadership and on the loops of
  ``config.reconciliation``; drift it cannot explain pauses entries with ``RECONCILE_DRIFT``.
- ``PortfolioProjection`` (``actors.order_portfolio``): positions, heat and PnL published to
  risk, realized-today and the trading-day roll.
- ``BrokerSessionWatch`` (``actors.broker_session``): a broker that refuses our credentials
  (``BrokerSessionChanged``, or a request failed with ``BROKER_AUTH_EXPIRED``) pauses entries
  with ``BROKER_AUTH`` until the adapter reports a working session again.

What stays here: the lifecycle, message dispatch, the takeover on a gain of leadership, the
flatten orchestration, and applying fills and status reports to orders, brackets and positions.

Failure: an exception in a handler stops the actor; the supervisor restarts it, and
``on_start`` rebuilds everything from storage (the tables, once the write-behind has stored
what the previous incarnation handed it, plus the journal's tail) and reconciles with the
broker's books. A write-behind that cannot store for long (``StorageWriteFailed``) is raised
from the next timer or plan, as a failed transaction used to be.

Where it waits for storage: the journal append before each broker call (one INSERT); a flush
of the write-behind before reading the tables (loading at start and takeover, an order neither
in the books nor among those this incarnation last finished, the broker's ids reconciliation
does not know, ``QueryOrders``), and at stop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec

from actors.base import SUPERVISOR, VigilActor
from actors.broker_gateway import BrokerGateway, InlineBrokerGateway
from actors.broker_session import AUTH_EXPIRED_PREFIX, BrokerSessionWatch
from actors.heartbeat import HeartbeatThrottle
from actors.order_book import ACTIVE, OrderBook, position_row
from actors.order_execution import OrderExecution
from actors.order_portfolio import FlattenStatus, PortfolioProjection, PortfolioView
from actors.order_reconciliation import BrokerReconciliation, OrderReconciler
from actors.safety_outbox import SafetyOutbox
from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.logs import flush_logging, log_event
from adapters.storage.journal import JournalKind, JournalUnavailable
from adapters.storage.repositories import LeaseFence, StaleEpoch, UnitOfWork
from adapters.storage.write_behind import APPLIED_SEQ_KEY, StorageWriteFailed
from domain import oco
from domain.calendar import EXCHANGE_TZ
from domain.clock import NANOS_PER_SECOND
from domain.config import OrderConfig, ReconciliationConfig
from domain.enums import DenialCode, LegKind, OrderStatus, PauseCause
from domain.messages import (
    BrokerErrorObserved,
    BrokerRequestCompleted,
    BrokerRequestFailed,
    BrokerRequestWithheld,
    BrokerSessionChanged,
    DrainTicks,
    FillReport,
    FlattenAll,
    FlattenCompleted,
    LeadershipChanged,
    OrderStatusReport,
    OrderStreamHeartbeat,
    PositionView,
    QueryOrders,
    QueryPortfolio,
    QueryPositions,
    QueryReconcileReport,
    ReloadRiskWindows,
    RepublishState,
    SubmitBracket,
    TightenStops,
    TimerFired,
    TradingStateChanged,
)
from domain.orders import (
    InvalidTransition,
    Order,
    Overfill,
    apply_fill,
    apply_status_report,
    mark_cancel_requested,
)
from domain.plans import client_order_id
from domain.positions import apply_fill as position_apply_fill
from domain.positions import flat

if TYPE_CHECKING:
    from actors.mailbox import TickChannel
    from actors.trading_gate import TradingGate
    from adapters.brokers.base import BrokerPort
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from adapters.storage.journal import JournalEntry, OrderJournal
    from adapters.storage.write_behind import WriteBehind
    from domain.instruments import Instrument

__all__ = ["FlattenStatus", "OrderActor", "PortfolioView"]

logger = logging.getLogger(__name__)

_HEARTBEAT_EVERY_NS = NANOS_PER_SECOND // 5
# Messages that come in bursts: the venue's reports (a batch delivers them together; a
# flatten's acks by the hundred) and risk's approved plans (a bar close). While a burst is
# worked through, places are journalled together (one fenced statement) and sent at its end,
# and the portfolio is rebuilt and published once, not per message (that was O(n) per report,
# O(n^2) per flatten). A burst ends when the inbox is empty, after _BURST_AT_MOST messages,
# or before any other message (a timer, a query, a takeover) is handled.
_BURST_MESSAGES = frozenset(
    {
        FillReport,
        OrderStatusReport,
        OrderStreamHeartbeat,
        BrokerRequestFailed,
        BrokerRequestCompleted,
        BrokerRequestWithheld,
        SubmitBracket,
    }
)
_BURST_AT_MOST = 64
_CONSISTENCY_EVERY_NS = NANOS_PER_SECOND


class OrderActor(VigilActor):
    unbounded_messages = (
        *VigilActor.unbounded_messages,
        FillReport,
        OrderStatusReport,
        OrderStreamHeartbeat,
        BrokerSessionChanged,
        # The kill switch and the lease publish to us; a full inbox must not stall them.
        TradingStateChanged,
        LeadershipChanged,
        # The broker gateway's outcomes: never lost to a full inbox, and an inline gateway
        # tells them from this actor's own thread, which must not block on itself.
        BrokerRequestFailed,
        BrokerRequestCompleted,
        BrokerRequestWithheld,
    )

    def __init__(
        self,
        *,
        database: Database,
        journal: OrderJournal,
        write_behind: WriteBehind,
        broker: BrokerPort,
        instruments: Mapping[str, Instrument],
        conflator: TickChannel,
        metrics: EngineMetrics,
        instance_id: str,
        lease_holder: str,
        gate: TradingGate,
        portfolio_subscribers: Iterable[str] = ("risk",),
        kill_switch_actor: str = "kill_switch",
        reconciliation: ReconciliationConfig | None = None,
        risk_actor: str = "risk",
        orders: OrderConfig | None = None,
        gateway: BrokerGateway | None = None,
        exchange_tz: ZoneInfo = EXCHANGE_TZ,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._database = database
        self._journal = journal
        self._journal_trim_failing = False
        self._lease_holder = lease_holder
        self._store = write_behind
        self._broker = broker
        self._instruments = dict(instruments)
        self._conflator = conflator
        self._metrics = metrics
        self._instance_id = instance_id
        self._book = OrderBook()
        self._projection = PortfolioProjection(
            self._book,
            database=database,
            metrics=metrics,
            clock=self.clock,
            tell=self.directory.tell,
            subscribers=portfolio_subscribers,
            # A marks-only change is published after what is queued: one per burst.
            wake=lambda: self.directory.tell(self.name, RepublishState()),
            quotes=conflator,
            # "Realized PnL today" rolls at midnight in the exchange's zone (scheduler.timezone).
            exchange_tz=exchange_tz,
        )
        self._trading: TradingStateChanged | None = None
        self._in_burst = False
        self._burst_length = 0
        self._refresh_wanted = False
        self._publish_forced = False
        self._last_stream_ns: int | None = None
        self._stream_heartbeat = HeartbeatThrottle(_HEARTBEAT_EVERY_NS)
        self._last_consistency_ns = 0
        self._broker_pass_missed = False
        self._flatten_reason: str | None = None
        self._flatten_started_ns: int | None = None
        self._flatten_started_mono: int | None = None
        self._flatten_at_start = (0, 0)
        self._flatten_cancelled = 0
        self._last_flatten: FlattenCompleted | None = None
        # Drift halts are re-sent until the kill switch shows them in force and stored.
        self._safety = SafetyOutbox(
            directory=self.directory, owner=self.name, target=kill_switch_actor
        )
        self._session = BrokerSessionWatch(
            lambda command: self.directory.tell(kill_switch_actor, command)
        )
        self._risk_actor = risk_actor
        # Told every broker rejection and unavailability (the LIVE circuit breaker counts them).
        self._kill_switch_actor = kill_switch_actor
        self._order_config = orders or OrderConfig()
        self._reconciler = OrderReconciler(
            reconciliation or ReconciliationConfig(),
            in_flight_settle_ns=int(self._order_config.in_flight_settle_s * NANOS_PER_SECOND),
        )
        self._execution = OrderExecution(
            self._book,
            database=database,
            journal=journal,
            store=write_behind,
            broker=broker,
            # Without one from the engine: the broker is called here, outcomes told to us.
            gateway=gateway
            or InlineBrokerGateway(
                broker,
                deliver=lambda message: self.directory.tell(self.name, message),
                clock=self.clock,
                metrics=metrics,
            ),
            metrics=metrics,
            clock=self.clock,
            gate=gate,
            lease_holder=lease_holder,
            instance_id=instance_id,
            config=self._order_config,
            reconciler=self._reconciler,
            safety=self._safety,
            apply_status_report=self._apply_status_report,
            on_cancel_requested=self._count_flatten_cancel,
        )
        self._reconciliation = BrokerReconciliation(
            self._book,
            reconciler=self._reconciler,
            execution=self._execution,
            database=database,
            store=write_behind,
            broker=broker,
            metrics=metrics,
            clock=self.clock,
            safety=self._safety,
            tell=self.directory.tell,
            kill_switch_actor=kill_switch_actor,
            instance_id=instance_id,
            trading_state=lambda: self._trading,
            apply_fill_report=self._apply_fill_report,
            apply_status_report=self._apply_status_report,
        )

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            SubmitBracket: self.submit_bracket,
            FlattenAll: self.flatten_all,
            TightenStops: self.tighten_stops,
            FillReport: self.on_fill_report,
            OrderStatusReport: self.on_order_status_report,
            OrderStreamHeartbeat: self.on_order_stream_heartbeat,
            BrokerSessionChanged: self.on_broker_session_changed,
            TradingStateChanged: self.on_trading_state_changed,
            LeadershipChanged: self.on_leadership_changed,
            DrainTicks: self.on_drain_ticks,
            TimerFired: self.on_timer_fired,
            QueryPositions: lambda _query: self.position_views(),
            QueryOrders: lambda query: self.recent_orders(query.limit),
            QueryPortfolio: lambda _query: self.portfolio_view(),
            QueryReconcileReport: lambda _query: self._reconciler.view(),
            RepublishState: lambda _command: self._projection.publish(),
            BrokerRequestFailed: self.on_broker_request_failed,
            BrokerRequestCompleted: self.on_broker_request_completed,
            BrokerRequestWithheld: self.on_broker_request_withheld,
        }

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        self._load_from_storage()
        self._tell_broker_working_orders()
        self._reconciliation.reconcile_with_broker()
        open_count = self._book.open_position_count()
        log_event(
            logger,
            "RECOVERY",
            f"Recovering {open_count} open positions",
            open_positions=open_count,
            active_brackets=len(self._book.brackets),
            working_orders=self._book.working_order_count(),
        )
        self._store.write_event(
            "RECOVERY",
            {"open_positions": open_count, "active_brackets": len(self._book.brackets)},
            ts_ns=self.clock.now_ns(),
            instance_id=self._instance_id,
        )
        self.on_drain_ticks(DrainTicks())
        self._projection.publish()

    def on_stop(self) -> None:
        # What this incarnation handed over reaches the tables before it is gone (the engine
        # stops the writer itself after every child).
        try:
            self._store.flush(timeout_s=10)
        except (StorageWriteFailed, TimeoutError, RuntimeError) as error:
            logger.error("order actor stopped with changes not stored: %s", error)

    # ------------------------------------------------------------------ COMMAND HANDLERS
    def submit_bracket(self, command: SubmitBracket) -> None:
        # Tables that cannot be written for long fail this handler, as a failed transaction did.
        self._store.raise_if_failed()
        plan = command.plan
        now = self.clock.now_ns()
        entry_id = client_order_id(plan.plan_client_id, LegKind.ENTRY)
        if plan.plan_client_id in self._book.brackets:
            self._execution.deny(
                entry_id, LegKind.ENTRY, DenialCode.DUPLICATE_PLAN, "bracket exists", now
            )
            return
        bracket, entry = oco.open_bracket(plan, command.quantity, now)
        self._book.brackets[plan.plan_client_id] = bracket
        placed = self._execution.place(bracket, entry)
        if not placed:
            del self._book.brackets[plan.plan_client_id]
        # Even unchanged (the entry denied): risk retires its pending approval from it.
        self._refresh_portfolio(even_unchanged=True)

    def flatten_all(self, command: FlattenAll) -> FlattenStatus:
        now = self.clock.now_ns()
        open_positions = self._book.open_position_count()
        working = self._book.working_order_count()
        if self._flatten_reason is None:
            self._flatten_reason = command.reason
            self._flatten_started_ns = now
            self._flatten_started_mono = self.clock.monotonic_ns()
            self._flatten_at_start = (open_positions, working)
            self._flatten_cancelled = 0
        log_event(
            logger,
            "FLATTEN",
            f"flatten requested: {command.reason}",
            reason=command.reason,
            open_positions=open_positions,
            working_orders=working,
        )
        # Lines are written by a writer thread; this one is the audit of a flatten's start (the
        # crash torture reads it), so it is on disk before the first cancel goes out. Rare, and
        # bounded: a stuck disk costs at most the timeout, never the flatten.
        flush_logging(timeout_s=0.2)
        work: list[tuple[oco.Bracket, list[oco.BracketAction]]] = []
        for bracket in list(self._book.brackets.values()):
            actions = self._execution.bracket_flatten(bracket, command.reason, now)
            self._execution.persist_bracket(bracket)
            work.append((bracket, actions))
        # Every protected position's stop and target: journalled in one statement.
        self._execution.execute_all(work)
        self._after_change()
        return self.flatten_status()

    def tighten_stops(self, command: TightenStops) -> int:
        """Move every open position's stop closer (``oco.tightened_stop_price``); answers how
        many stops are being moved.

        How a stop moves depends on the broker (``oco.tighten_stop``). One that changes a
        working stop in place (``stop_in_place``: Kite) gets one request moving its trigger
        (``MoveStop``): the stop protects throughout, and our books take the new trigger once
        the broker did; a refused move leaves the old stop working and is asked again, and past
        ``order.max_attempts`` the stop is cancelled and replaced. A broker whose stop is the
        position's own level (``levels_on_position``: IG) gets the new stop first, which moves
        the level in one request. Any other (the paper venue) cancels and replaces: the
        keep-protected rule places the new stop under the next sequence number once the cancel
        is confirmed, so two stops never work at once, but the position has its target and no
        stop for that round trip. Every request is journalled and fenced like any broker call;
        the bracket's new ``stop_price`` is stored with it, so a restart finishes the move.
        Idempotent: a stop already as tight (or being moved) is left alone.
        """
        now = self.clock.now_ns()
        work: list[tuple[oco.Bracket, list[oco.BracketAction]]] = []
        skipped: list[str] = []
        for bracket in list(self._book.brackets.values()):
            if bracket.status is not oco.BracketStatus.OPEN or bracket.flatten_reason is not None:
                continue
            orders = self._book.bracket_orders(bracket)
            entry = orders.get(bracket.entry_order_id)
            instrument = self._instruments.get(bracket.instrument)
            self._projection.mark_price(bracket.instrument)  # brings the latest quotes in
            tick = self._projection.marks.get(bracket.instrument)
            if entry is None or entry.average_fill_price is None or instrument is None:
                skipped.append(f"{bracket.plan_client_id}: no entry fill price")
                continue
            if tick is None:
                skipped.append(f"{bracket.plan_client_id}: no quote for {bracket.instrument}")
                continue
            new_stop = oco.tightened_stop_price(
                side=bracket.side,
                current_stop=bracket.stop_price,
                average_entry=entry.average_fill_price,
                bid=tick.bid,
                ask=tick.ask,
                tick_size=instrument.tick_size,
                mode=command.mode,
                trail_ticks=command.trail_ticks,
            )
            if new_stop is None:
                continue
            old_stop = bracket.stop_price
            actions = oco.tighten_stop(
                bracket,
                orders,
                new_stop,
                now,
                levels_on_position=self._execution.levels_on_position,
                stop_in_place=self._execution.stop_in_place,
            )
            if not actions:
                continue
            log_event(
                logger,
                "STOP_TIGHTENED",
                f"{bracket.plan_client_id} stop {old_stop} -> {new_stop} ({command.reason}, "
                f"{command.mode})",
                plan_client_id=bracket.plan_client_id,
                old_stop=str(old_stop),
                new_stop=str(new_stop),
                mode=command.mode,
                reason=command.reason,
            )
            self._execution.persist_bracket(bracket)
            work.append((bracket, actions))
        if skipped:
            logger.warning("stops not tightened (%s): %s", command.reason, "; ".join(skipped))
        # The record that the tighten happened (the burn-in checklist reads it), even when
        # nothing was open: an event row, written behind with the orders it caused.
        self._store.write_event(
            "TIGHTEN_STOPS",
            {
                "reason": command.reason,
                "mode": command.mode,
                "tightened": [bracket.plan_client_id for bracket, _ in work],
                "skipped": skipped,
            },
            ts_ns=now,
            instance_id=self._instance_id,
        )
        self._execution.execute_all(work)
        self._after_change()
        return len(work)

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_fill_report(self, fill: FillReport) -> None:
        # Only a report the broker pushed proves its stream alive; one we fetched by asking
        # (reconciliation, settling) must not hide a silent stream.
        self._stream_alive(self.clock.now_ns())
        self._apply_fill_report(fill)

    def _apply_fill_report(self, fill: FillReport) -> None:
        now = self.clock.now_ns()
        if fill.trade_id in self._book.trade_ids:
            return
        order = self._find_order(fill.client_order_id)
        if order is None:
            self._reconciliation.unknown_report("fill", fill.client_order_id, fill, now)
            return
        bracket = self._book.brackets.get(order.plan_client_id)
        actions: list[oco.BracketAction] = []
        position = None
        was_acknowledged = order.status not in (OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED)
        try:
            apply_fill(order, fill, now)  # Overfill leaves the order unchanged
            if bracket is not None:
                position = self._book.positions.get(order.plan_client_id) or flat(order.instrument)
                position = position_apply_fill(position, fill.side, fill.quantity, fill.price)
                self._book.positions[order.plan_client_id] = position
                actions = self._execution.bracket_update(bracket, now)
        except Overfill as error:
            self._book.trade_ids.add(fill.trade_id)
            self._reconciliation.halt_on_drift("OVERFILL", str(error), fill, now)
            return
        except ValueError as error:  # a fill that does not match its order (instrument, side)
            self._book.trade_ids.add(fill.trade_id)
            self._reconciliation.halt_on_drift("FILL_MISMATCH", str(error), fill, now)
            return
        if not was_acknowledged:
            self._observe_ack_latency(order)
        # The trade id is booked in memory now; a fill lost with the write-behind in a crash is
        # listed by the broker and applied again by the reconciliation at start.
        self._store.write(
            order=order,
            fill=fill,
            recorded_ns=now,
            bracket=bracket,
            position=None
            if bracket is None or position is None
            else position_row(bracket, position, now),
        )
        self._book.trade_ids.add(fill.trade_id)
        if bracket is None:
            # A fill for a bracket already finished (a cancel that lost a race at the broker):
            # exposure no bracket protects. Stop and let an operator decide.
            self._reconciliation.halt_on_drift(
                "LATE_FILL",
                f"fill {fill.trade_id} for {fill.client_order_id} after its bracket finished: "
                f"{fill.side.value} {fill.quantity} {fill.instrument} @ {fill.price}",
                fill,
                now,
            )
        if bracket is not None:
            self._execution.execute(bracket, actions)
        self._after_change()

    def on_order_status_report(self, report: OrderStatusReport) -> None:
        self._stream_alive(self.clock.now_ns())
        self._apply_status_report(report)

    def _apply_status_report(self, report: OrderStatusReport) -> None:
        now = self.clock.now_ns()
        order = self._find_order(report.client_order_id)
        if order is None:
            self._reconciliation.unknown_report("status", report.client_order_id, report, now)
            return
        was_acknowledged = order.status not in (OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED)
        if not apply_status_report(order, report, now):
            return
        if not was_acknowledged:
            self._observe_ack_latency(order)
        outcome = "rejected" if order.status is OrderStatus.REJECTED else None
        if outcome:
            self._metrics.orders_total.labels(leg=order.leg.value, outcome=outcome).inc()
            logger.warning(
                "broker rejected %s (%s): %s", order.client_order_id, order.leg.value, report.reason
            )
            self._tell_broker_error(f"REJECTED {order.client_order_id}: {report.reason}", now)
        self._execution.store_order_update(order, now)
        self._after_change()

    def _observe_ack_latency(self, order: Order) -> None:
        """The broker's first word on ``order`` (its ack, or a fill that overtook the ack):
        observe the time from the broker call. Both paths count it once, so an entry that
        fills at once is measured whichever report comes first."""
        if order.status in (OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED):
            return
        sent = self._execution.submitted_at_ns.pop(order.client_order_id, None)
        # From the broker call, not the hand-over: a wait in the gateway for a rate-limit
        # token is ours, not the broker's (the queue has its own tripwire).
        call_started = self._execution.submit_started_ns(order.client_order_id)
        if call_started is not None and sent is not None:
            sent = max(sent, call_started)
        if sent is not None:
            latency_ms = (self.clock.monotonic_ns() - sent) / 1e6
            self._metrics.order_latency_ms.observe(latency_ms)

    def on_broker_session_changed(self, changed: BrokerSessionChanged) -> None:
        self._session.on_session_changed(changed, self._trading)

    def on_broker_request_failed(self, failed: BrokerRequestFailed) -> None:
        self._execution.on_request_failed(failed)
        if failed.error.startswith(AUTH_EXPIRED_PREFIX):
            self._session.session_refused(failed.error, self._trading)
        if not failed.error.startswith("DUPLICATE_CLIENT_ORDER_ID"):
            # A refusal or an unanswered call: one tell, the circuit breaker counts it. A
            # duplicate id is the broker confirming it has the order, not an error.
            kind = "rejected" if failed.rejected else "unavailable"
            self._tell_broker_error(
                f"{failed.request.value} {failed.client_order_id} {kind}: {failed.error}",
                failed.ts_event,
            )
        self._after_change()

    def _tell_broker_error(self, error: str, ts_event: int) -> None:
        self.directory.tell(
            self._kill_switch_actor, BrokerErrorObserved(error=error, ts_event=ts_event)
        )

    def on_broker_request_completed(self, completed: BrokerRequestCompleted) -> None:
        self._execution.on_request_completed(completed)

    def on_broker_request_withheld(self, withheld: BrokerRequestWithheld) -> None:
        self._execution.on_request_withheld(withheld)
        if withheld.code is DenialCode.BROKER_AUTH:
            self._session.session_refused(withheld.detail, self._trading)
        self._after_change()

    def on_order_stream_heartbeat(self, heartbeat: OrderStreamHeartbeat) -> None:
        # Dated when sent (never later than now): a heartbeat that waited in a backlog must not
        # make a stream that has since gone silent look alive.
        self._stream_alive(min(heartbeat.ts_event, self.clock.now_ns()))

    def on_trading_state_changed(self, state: TradingStateChanged) -> None:
        self._trading = state
        self._safety.acknowledge(state)
        self._session.sync(state)
        self._flatten_if_asked(state.ts_event)

    def _flatten_if_asked(self, now: int) -> None:
        # A FLATTEN pause means "keep the book flat": a flatten that was requested while this
        # actor was down (or restarting) still happens, and so does one for an entry that
        # filled after the flatten.
        trading = self._trading
        if (
            trading is None
            or PauseCause.FLATTEN not in trading.pause_causes
            or self._flatten_reason is not None
            or not any(
                b.status is not oco.BracketStatus.FLATTENING for b in self._book.brackets.values()
            )
        ):
            return
        self.flatten_all(FlattenAll(reason="flatten_pause", ts_init=now))

    def on_leadership_changed(self, leadership: LeadershipChanged) -> None:
        self._execution.leadership = leadership
        self._tell_venue(leadership)
        if leadership.is_leader and self._execution.taken_over_epoch != leadership.epoch:
            # Repeated on every renewal until it succeeds (a failure raises, the supervisor
            # restarts this actor, and the next broadcast tries again).
            self._take_over(leadership)

    def _tell_venue(self, leadership: LeadershipChanged) -> None:
        # An optional port hook: a simulated venue sharing the database reloads its books on a
        # gain and goes passive on a loss; real brokers do not have it.
        hook = getattr(self._broker, "on_leadership", None)
        if hook is None:
            return
        try:
            hook(leadership.is_leader, leadership.epoch)
        except (BrokerUnavailable, BrokerRejected) as error:
            logger.error("broker could not follow leadership epoch %d: %s", leadership.epoch, error)

    def _tell_broker_working_orders(self) -> None:
        """An optional port hook (``adopt_working_orders``), after recovery and before the
        reconciliation: a broker that keeps a bracket's levels on the position (IG) learns
        which of the engine's leg ids stand for them, which its own lists cannot name after a
        restart. Brokers without it are skipped; only the leader asks the broker."""
        hook = getattr(self._broker, "adopt_working_orders", None)
        if hook is None or not self._execution.may_touch_broker():
            return
        unfinished = [order for order in self._book.orders.values() if order.status.is_working]
        try:
            hook(unfinished)
        except (BrokerUnavailable, BrokerRejected) as error:
            # The reconciliation that follows sees what it would have without the hook.
            logger.error("broker could not adopt the engine's working orders: %s", error)

    def _take_over(self, leadership: LeadershipChanged) -> None:
        """Gaining the lease is a takeover: whatever the previous leader (another process, or
        this one before a pause) left in storage becomes ours to manage. Reload the books,
        catch up with the broker, settle what expired, and only then let entries through."""
        started_mono = self.clock.monotonic_ns()
        now = self.clock.now_ns()
        # Claim the journal before its tail is read (in _load_from_storage): from here an older
        # leader's append is refused, so every entry it ever wrote is in the tail we read.
        try:
            self._journal.claim(LeaseFence(instance_id=self._lease_holder, epoch=leadership.epoch))
        except StaleEpoch as error:
            # Deposed before the takeover began: not ours to take over (entries stay denied;
            # an exit's append is refused the same way and marks the epoch deposed).
            log_event(
                logger,
                "DEPOSED",
                f"takeover of epoch {leadership.epoch} abandoned: the journal was refused "
                f"({error})",
                level=logging.ERROR,
                epoch=leadership.epoch,
            )
            return
        # Before any plan reaches us: the previous leader's entries count in the risk windows,
        # and so do ours (the risk actor reads the tables: they must have caught up first).
        self._store.flush(timeout_s=30)
        self.directory.tell(self._risk_actor, ReloadRiskWindows(epoch=leadership.epoch))
        self._load_from_storage()
        self._tell_broker_working_orders()
        self._reconciliation.reconcile_with_broker()
        self._execution.expire_entries(now)
        self._execution.taken_over_epoch = leadership.epoch
        # Anything deferred while we could not send happens now.
        self._execution.resubmit_unsent()
        self._consistency_pass(now)
        self._after_change()
        duration_ms = (self.clock.monotonic_ns() - started_mono) / 1e6
        details = {
            "epoch": leadership.epoch,
            "active_brackets": len(self._book.brackets),
            "open_positions": self._book.open_position_count(),
            "working_orders": self._book.working_order_count(),
            "duration_ms": round(duration_ms, 3),
        }
        log_event(
            logger,
            "TAKEOVER",
            f"leading at epoch {leadership.epoch}: {details['active_brackets']} brackets, "
            f"{details['working_orders']} working orders taken over; entries allowed",
            **details,
        )
        self._store.write_event("TAKEOVER", details, ts_ns=now, instance_id=self._instance_id)

    def on_drain_ticks(self, _wake: DrainTicks) -> None:
        self._projection.on_ticks(self._conflator.drain())

    def on_timer_fired(self, timer: TimerFired) -> None:
        # Tables that cannot be written for long fail this handler, as a failed transaction did.
        self._store.raise_if_failed()
        self._trim_journal()
        now = timer.now_ns
        if now - self._last_consistency_ns >= _CONSISTENCY_EVERY_NS or self._broker_pass_missed:
            self._last_consistency_ns = now
            # A leader's pass that found its lease expired (the renewal still on its way) did no
            # broker work: the next timer tries again instead of a second later.
            leadership = self._execution.leadership
            self._broker_pass_missed = (
                leadership is not None
                and leadership.is_leader
                and not self._execution.may_touch_broker()
            )
            self._projection.roll_trading_day(now)
            self._execution.expire_entries(now)
            self._reconciliation.reconcile_on_schedule(now)
            self._flatten_if_asked(now)
            self._consistency_pass(now)
            self._session.sync(self._trading)
            self._after_change()

    def _trim_journal(self) -> None:
        # What the write-behind has committed leaves the journal (on this thread: its one
        # writer). A failure here is not yet a lost write-ahead record: the next append, which
        # must succeed before any broker call, fails loudly on its own. Logged once per streak.
        try:
            self._journal.trim(self._store.applied_seq)
        except JournalUnavailable as error:
            if not self._journal_trim_failing:
                logger.error("order journal not trimmed (retried on the next timer): %s", error)
            self._journal_trim_failing = True
            return
        self._journal_trim_failing = False

    # ------------------------------------------------------------------ QUERIES
    def position_views(self) -> list[PositionView]:
        return self._projection.position_views()

    def recent_orders(self, limit: int) -> list[Order]:
        try:
            # The tables answer: let them catch up with what this actor handed over.
            self._store.flush(timeout_s=2)
        except (StorageWriteFailed, TimeoutError, RuntimeError) as error:
            logger.warning("orders listed from tables not yet current: %s", error)
        with UnitOfWork(self._database) as uow:
            return uow.orders.list_recent(limit)

    def portfolio_view(self) -> PortfolioView:
        return PortfolioView(
            portfolio=self._projection.portfolio(),
            working_orders=self._book.working_order_count(),
            flatten=self.flatten_status(),
        )

    def flatten_status(self) -> FlattenStatus:
        return FlattenStatus(
            reason=self._flatten_reason,
            in_progress=self._flatten_reason is not None,
            positions_at_start=self._flatten_at_start[0],
            orders_at_start=self._flatten_at_start[1],
            remaining_positions=self._book.open_position_count(),
            remaining_working_orders=self._book.working_order_count(),
            started_ns=self._flatten_started_ns,
            completed=self._last_flatten,
        )

    def snapshot(self) -> dict[str, Any]:
        leadership = self._execution.leadership
        return {
            "name": self.name,
            "brackets": msgspec.to_builtins(list(self._book.brackets.values())),
            "working_orders": msgspec.to_builtins(
                [o for o in self._book.orders.values() if o.status.is_working]
            ),
            "positions": msgspec.to_builtins(self.position_views()),
            "realized_pnl_today": str(self._projection.realized_today),
            "leadership": msgspec.to_builtins(leadership) if leadership else None,
            # The epoch whose takeover finished: entries wait until it equals the lease's.
            "taken_over_epoch": self._execution.taken_over_epoch,
            "trading": msgspec.to_builtins(self._trading) if self._trading else None,
            "flatten": msgspec.to_builtins(self.flatten_status()),
            "recent_denials": msgspec.to_builtins(list(self._execution.denied)),
            "safety_outbox": self._safety.snapshot(),
            "broker_session_problem": self._session.problem,
            "write_behind": self._store.snapshot(),
            "last_stream_ns": self._last_stream_ns,
            "mailbox_depth": self.mailbox_depth,
        }

    # ------------------------------------------------------------------ BOOKKEEPING
    def _handle_receive(self, message: Any) -> Any:
        in_burst = type(message) in _BURST_MESSAGES
        if in_burst:
            self._execution.defer_places()
        else:
            self._end_burst()
        self._in_burst = in_burst
        try:
            result = super()._handle_receive(message)
        finally:
            self._in_burst = False
        if in_burst:
            self._burst_length += 1
            if self._burst_length >= _BURST_AT_MOST or self.actor_inbox.qsize() == 0:
                self._end_burst()
        return result

    def _end_burst(self) -> None:
        """Journal and send the burst's places, then publish the portfolio if it changed."""
        self._burst_length = 0
        self._execution.flush_places()
        if self._refresh_wanted:
            self._refresh_portfolio()

    def _refresh_portfolio(self, *, even_unchanged: bool = False) -> None:
        """Publish the portfolio if it changed, or ``even_unchanged`` (at the end of a burst,
        when in one)."""
        self._publish_forced |= even_unchanged
        if self._in_burst:
            self._refresh_wanted = True
            return
        self._refresh_wanted = False
        if self._publish_forced:
            self._publish_forced = False
            self._projection.publish()
            return
        # At once if exposure changed (a fill, a new or finished bracket); marks are throttled.
        self._projection.refresh()

    def _after_change(self) -> None:
        now = self.clock.now_ns()
        for plan_id, bracket in list(self._book.brackets.items()):
            if bracket.status in ACTIVE:
                continue
            position = self._book.positions.pop(plan_id, None)
            if position is not None:
                self._projection.book_closed(position)
                self._store.write(position=position_row(bracket, position, now))
            for order_id in oco.bracket_orders(bracket):
                self._book.retire_order(order_id)
                self._execution.submitted_at_ns.pop(order_id, None)
            del self._book.brackets[plan_id]
        if self._flatten_reason is not None:
            self._check_flatten_done(now)
        self._refresh_portfolio()

    def _count_flatten_cancel(self) -> None:
        if self._flatten_reason is not None:
            self._flatten_cancelled += 1

    def _check_flatten_done(self, now: int) -> None:
        if self._book.has_open_positions() or self._book.has_working_orders():
            return
        assert self._flatten_started_mono is not None and self._flatten_reason is not None
        duration_ms = (self.clock.monotonic_ns() - self._flatten_started_mono) / 1e6
        self._last_flatten = FlattenCompleted(
            reason=self._flatten_reason,
            positions_closed=self._flatten_at_start[0],
            orders_cancelled=self._flatten_cancelled,
            remaining_positions=0,
            remaining_working_orders=0,
            duration_ms=duration_ms,
            ts_event=now,
        )
        self._metrics.flatten_duration_ms.observe(duration_ms)
        log_event(
            logger,
            "FLATTEN",
            f"flatten completed in {duration_ms:.0f} ms: {self._flatten_reason}",
            reason=self._flatten_reason,
            duration_ms=round(duration_ms, 3),
            positions_closed=self._flatten_at_start[0],
        )
        self._store.write_event(
            "FLATTEN",
            msgspec.to_builtins(self._last_flatten),
            ts_ns=now,
            instance_id=self._instance_id,
        )
        self._flatten_reason = None
        self._flatten_started_ns = None
        self._flatten_started_mono = None

    def _consistency_pass(self, now: int) -> None:
        if not self._execution.may_touch_broker():
            return
        work: list[tuple[oco.Bracket, list[oco.BracketAction]]] = []
        for bracket in list(self._book.brackets.values()):
            if (
                self._flatten_reason is not None
                and bracket.status is not oco.BracketStatus.FLATTENING
            ):
                actions = self._execution.bracket_flatten(bracket, self._flatten_reason, now)
            else:
                actions = self._execution.bracket_update(bracket, now)
            if actions:
                self._execution.persist_bracket(bracket)
                work.append((bracket, actions))
        self._execution.execute_all(work)

    def _load_from_storage(self) -> None:
        """Load the active brackets, their orders, positions (rebuilt from fills), the trade ids
        and today's realized PnL from the tables, then apply the journal's tail, merging with
        what is in memory.

        First the write-behind stores everything handed to it (this incarnation's, or the one
        that crashed before it in this process): the one place where recovery waits for it.
        What a killed process never stored is in the journal's tail (entries the tables have
        not caught up with, read before the tables so that an entry the tables take meanwhile
        is seen in one or the other): an order placed but not in the tables comes back
        PENDING_SUBMIT with the bracket it was placed for, a cancel as requested, a resend or
        resize under its epoch; the reconciliation with the broker settles the rest (fills the
        tables lost are in the broker's fill list).

        Storage is the truth: every change this incarnation made is stored before this reads
        it, and anything another leader did is only there. The one thing memory knows better
        is that an order was handed to the broker (SUBMITTED lives in memory only; storage says
        PENDING_SUBMIT): that is kept, so the order is settled from the broker's list rather
        than treated as never sent. A bracket in memory that storage no longer lists as active
        was finished by another leader and is dropped. The booked trade ids are storage's
        alone: one only memory holds belongs to a fill whose write was fenced out (heard while
        standing by), and that fill must be booked again from the broker's list.
        """
        now = self.clock.now_ns()
        self._projection.roll_trading_day(now)
        self._store.flush(timeout_s=30)
        self._book.finished.clear()  # the tables answer for finished orders from here
        with UnitOfWork(self._database) as uow:
            applied_seq = int(uow.control.get(APPLIED_SEQ_KEY) or 0)
        tail = self._journal.tail(applied_seq)
        stored_ids: set[str] = set()
        with UnitOfWork(self._database) as uow:
            brackets = uow.brackets.list_active()
            # Replaced, not merged: after the flush, a trade id only memory holds is a fill
            # whose write was refused (a standby's, fenced out) and whose order is reloaded
            # below without it; kept as "booked", no reconciliation would ever book it again.
            self._book.trade_ids.clear()
            self._book.trade_ids |= uow.fills.trade_ids()
            self._projection.reload_realized(uow, now)
            active = {bracket.plan_client_id for bracket in brackets}
            active |= {
                entry.bracket.plan_client_id
                for entry in tail
                if entry.bracket is not None and entry.bracket.status in ACTIVE
            }
            for plan_id in [p for p in self._book.brackets if p not in active]:
                finished = self._book.brackets.pop(plan_id)
                self._book.positions.pop(plan_id, None)
                for order_id in oco.bracket_orders(finished):
                    self._book.orders.pop(order_id, None)
                    self._execution.submitted_at_ns.pop(order_id, None)
            for bracket in brackets:
                self._book.brackets[bracket.plan_client_id] = bracket
                for order in uow.orders.list_for_plan(bracket.plan_client_id):
                    stored_ids.add(order.client_order_id)
                    self._merge_loaded(order)
                position = flat(bracket.instrument)
                fills = sorted(
                    uow.fills.list_for_plan(bracket.plan_client_id), key=lambda f: f.ts_event
                )
                for fill in fills:
                    position = position_apply_fill(position, fill.side, fill.quantity, fill.price)
                self._book.positions[bracket.plan_client_id] = position
            if tail:
                # An order of the tail that the tables do have (but not under an active
                # bracket) is settled there: never resurrect it.
                stored_ids |= {
                    entry.client_order_id
                    for entry in tail
                    if entry.client_order_id not in stored_ids
                    and uow.orders.get(entry.client_order_id) is not None
                }
        if tail:
            self._apply_journal_tail(tail, stored_ids)

    def _merge_loaded(self, order: Order) -> None:
        known = self._book.orders.get(order.client_order_id)
        if (
            known is not None
            and known.status is OrderStatus.SUBMITTED
            and order.status is OrderStatus.PENDING_SUBMIT
        ):
            order.status = OrderStatus.SUBMITTED
            order.ts_updated = known.ts_updated
        self._book.orders[order.client_order_id] = order

    def _apply_journal_tail(self, tail: list[JournalEntry], stored_ids: set[str]) -> None:
        # Entries newer than the tables, oldest first. A state the tables already hold is as
        # new as the entry or newer, so an entry only adds what they lack: never a regression.
        recovered: dict[str, Order] = {}
        brackets: dict[str, oco.Bracket] = {}
        for entry in tail:
            order_id = entry.client_order_id
            if entry.kind is JournalKind.PLACE:
                bracket = entry.bracket
                if order_id in stored_ids or bracket is None or bracket.status not in ACTIVE:
                    continue
                # Placed, maybe sent, never stored: the bracket it was placed for is newer
                # than the stored one (which may not exist at all).
                self._book.brackets[bracket.plan_client_id] = bracket
                self._book.positions.setdefault(bracket.plan_client_id, flat(bracket.instrument))
                brackets[bracket.plan_client_id] = bracket
                self._merge_loaded(entry.order)
                recovered[order_id] = self._book.orders[order_id]
                continue
            order = self._book.orders.get(order_id)
            if order is None or order.status.is_terminal:
                continue
            order.epoch = max(order.epoch, entry.epoch)
            if (
                entry.kind is JournalKind.CANCEL
                and entry.order.status is OrderStatus.PENDING_CANCEL
                and order.status is not OrderStatus.PENDING_CANCEL
            ):
                # Not yet acknowledged in the tables: the broker's list settles it.
                with contextlib.suppress(InvalidTransition):
                    mark_cancel_requested(order, entry.ts_ns)
            recovered[order_id] = order
        for order in recovered.values():
            self._store.write(order=order)
        for bracket in brackets.values():
            self._store.write(bracket=bracket)
        # Caught up once these are stored: the tail goes with them.
        self._store.write(journal_seq=tail[-1].seq)
        log_event(
            logger,
            "RECOVERY",
            f"journal tail: {len(tail)} entries newer than the tables, {len(recovered)} orders "
            f"and {len(brackets)} brackets recovered from them",
            journal_entries=len(tail),
            orders=len(recovered),
            brackets=len(brackets),
            first_seq=tail[0].seq,
            last_seq=tail[-1].seq,
        )

    def _find_order(self, client_order_id: str) -> Order | None:
        order = self._book.orders.get(client_order_id)
        if order is not None:
            return order
        order = self._book.finished.get(client_order_id)
        if order is not None:
            return order  # a late report for a bracket this incarnation finished
        self._store.flush()  # a finished bracket's leg: its rows may still be on the way
        with UnitOfWork(self._database) as uow:
            order = uow.orders.get(client_order_id)
            if order is None:
                return None
            bracket = uow.brackets.get(order.plan_client_id)
        if bracket is None or bracket.status not in ACTIVE:
            return order  # a late report for a finished bracket: apply to the order only
        self._book.orders[order.client_order_id] = order
        return order

    def _stream_alive(self, seen_ns: int) -> None:
        self._last_stream_ns = max(seen_ns, self._last_stream_ns or 0)
        if self._stream_heartbeat.due(seen_ns, self.clock.now_ns()):
            self.directory.tell(SUPERVISOR, OrderStreamHeartbeat(ts_event=seen_ns))
