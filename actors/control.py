"""EngineControl: the admin API's view of the engine (implements ``ControlPort``).

Runs on HTTP server threads, never inside an actor: each method asks the owning actor through
the directory with a timeout. A timeout or a dead actor becomes a 503 ``ControlError`` naming
the actor; a refused request a 4xx with the reason.

``/status`` and ``/ready`` answer from memory: the actors they ask answer from memory, and when
one cannot answer (the order actor restarting in a loop on a dead disk), the last figures it
gave are shown instead, named in ``degraded`` with their age. The only state held here is that
cache of last answers.

Operator text (reasons, details) is redacted with the log redactor (``adapters.logs``) plus
this engine's configured secrets, both on the way in (so storage and the audit trail never
hold a pasted token) and on the way out (``/status``, ``/debug/actors``, kill-switch views).

The gated path to LIVE. The kill switch actor owns the gates (``domain.live_gates``), the
confirmation, the circuit breaker and the audit trail; this asks it. Broker I/O never runs in
an actor: ``connect`` and ``prelive_run`` call the broker's ``connect()`` here, on the HTTP
server's thread (one call in flight at a time, bounded by the ask timeout; a broker that hangs
leaves that call's daemon thread waiting, never the actors), then tell the kill switch the
outcome (``RecordConnect``; ``RunPrelive`` with the safety problems known here: stale
heartbeats judged now and pauses other than OPERATOR). Every command carries ``by``, the
``OperatorRef`` (token name and client address) the HTTP layer resolved, for the audit trail.

Flatten is intent before action: the FLATTEN pause is stored by the kill switch (which then
tells the order actor ``FlattenAll``) before this asks the order actor for its progress, so a
crash at any moment restarts REDUCING with the FLATTEN pause and the flatten completes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actors.directory import ActorUnavailable
from actors.dumps import gather_snapshots
from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.http.app import REHEARSAL_PREFIX, ControlError
from adapters.logs import REDACTED, Redactor, current_redactor
from domain.enums import Mode, PauseCause, TradingState
from domain.live_gates import AccountFacts, PreliveResult, holiday_list_blocker
from domain.messages import (
    ArmTrading,
    AuditEntry,
    ConfirmLive,
    ConfirmOutcome,
    DisarmTrading,
    FlattenAll,
    FlattenCompleted,
    LiveGatesReport,
    OperatorRef,
    PauseEntries,
    QueryAudit,
    QueryGates,
    QueryLastPortfolio,
    QueryOrders,
    QueryPortfolio,
    QueryPositions,
    QueryReconcileReport,
    QueryRisk,
    QuerySchedule,
    QueryTradingState,
    QueryTripwires,
    RecordConnect,
    ResetCircuitBreaker,
    ResetKillSwitch,
    ResumeEntries,
    RevokeLive,
    RunPrelive,
    SetMode,
    TripKillSwitch,
)
from domain.messages.api import (
    ActorView,
    ArmRequest,
    ArmView,
    AuditEntryView,
    AuditView,
    CircuitBreakerResetRequest,
    ConnectView,
    DisarmRequest,
    FlattenRequest,
    GatesView,
    HealthView,
    KillSwitchActivateRequest,
    KillSwitchResetRequest,
    KillSwitchView,
    LiveConfirmRequest,
    LiveConfirmView,
    ModeRequest,
    ModeResult,
    OrdersView,
    OrderView,
    PauseCauseView,
    PauseRequest,
    PositionsView,
    PreliveCheckView,
    PreliveView,
    ReadyView,
    ReconcileReportView,
    RevokeRequest,
    RiskView,
    StatusView,
)
from domain.schedule import HOLIDAYS_CONFIG_KEY

if TYPE_CHECKING:
    from actors.directory import ActorDirectory
    from actors.kill_switch_actor import ModeDecision, TradingControlView
    from actors.order_actor import PortfolioView
    from adapters.brokers.base import AccountInfo, BrokerPort
    from adapters.metrics import EngineMetrics
    from domain.clock import Clock
    from domain.config import EngineConfig
    from domain.messages import PortfolioUpdated

__all__ = ["EngineControl"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_FLATTEN_POLL_S = 0.01
# The trip code of an operator's kill switch (a metric label); their text goes in the detail.
MANUAL_KILL_SWITCH = "MANUAL"
_RESET_ROUTE = "POST /execution/kill-switch/reset"
# The engine itself, or a caller that did not say (tests, tools).
_IN_PROCESS = OperatorRef()
# The connect failure's code (ConnectView.error); served as 502.
BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
# A refused confirmation's HTTP status by the kill switch's code; anything else is 403.
_CONFIRM_REFUSAL_STATUS = {
    "BAD_PHRASE": 400,
    "BAD_TOKEN": 403,
    "BAD_ACCOUNT": 403,
    "NOT_CONFIGURED": 409,
}


class EngineControl:
    def __init__(
        self,
        *,
        directory: ActorDirectory,
        clock: Clock,
        config: EngineConfig,
        config_sha: str,
        metrics: EngineMetrics,
        broker: BrokerPort | None = None,
    ) -> None:
        self._directory = directory
        # The engine's broker: ``connect()`` is called here, on a server thread (thread-safe).
        self._broker = broker
        self._connect_lock = threading.Lock()
        self._pending_connect: _PendingCall | None = None
        self._clock = clock
        self._config = config
        self._config_sha = config_sha
        self._metrics = metrics
        self._timeout_s = config.http.ask_timeout_s
        self._started_monotonic = time.monotonic()
        self._secrets = [
            secret.get_secret_value()
            for secret in (
                config.http.token,
                config.live.live_enable_token,
                *config.http.tokens.values(),
            )
            if secret is not None
        ]
        # Last good answers, shown (and named as stale) when their owner cannot answer.
        self._last_lock = threading.Lock()
        self._last_answers: dict[str, tuple[float, Any]] = {}

    # ------------------------------------------------------------------ liveness
    def health(self) -> HealthView:
        return HealthView(status="ok", uptime_s=self._uptime_s())

    def ready(self) -> ReadyView:
        blockers: list[str] = []
        try:
            status = self.status()
        except ControlError as error:
            return ReadyView(ready=False, blockers=[error.message])
        if not status.is_leader:
            blockers.append("not leader: the leader lease is not held by this instance")
        for cause in status.pause_causes:
            if cause.cause in (
                PauseCause.MARKETDATA_STALE,
                PauseCause.ORDER_STREAM_STALE,
                PauseCause.ACTOR_UNRESPONSIVE,
            ):
                blockers.append(f"{cause.cause.value}: {cause.detail}")
        blockers.extend(self._stale_now(status))
        for actor in status.actors:
            if not actor.alive:
                blockers.append(f"actor {actor.name} is not running")
        if status.trading_state is TradingState.HALTED:
            blockers.append(f"kill switch active: {status.halt_reason}")
        if not status.control_persisted:
            blockers.append(
                "kill switch state not stored: storage unavailable, decisions held in memory"
            )
        blockers.extend(f"stale: {note}" for note in status.degraded)
        return ReadyView(ready=not blockers, blockers=blockers)

    def _stale_now(self, status: StatusView) -> list[str]:
        """Heartbeats judged at the moment of asking, not at the supervisor's last timer: a
        process resumed after SIGSTOP (or a stalled timer thread) answers before its timers
        catch up, and must not say ready on ages it has not looked at yet."""
        limits = self._config.heartbeats
        asserted = {cause.cause for cause in status.pause_causes}
        stale = []
        if PauseCause.MARKETDATA_STALE not in asserted:
            stale.extend(
                f"MARKETDATA_STALE: feed={feed} age_s={age:.1f} limit_s={limits.marketdata_stale_s}"
                for feed, age in status.marketdata_age_s.items()
                if age > limits.marketdata_stale_s
            )
        stream_age = status.order_stream_age_s
        if (
            PauseCause.ORDER_STREAM_STALE not in asserted
            and stream_age is not None
            and stream_age > limits.order_stream_stale_s
        ):
            stale.append(
                f"ORDER_STREAM_STALE: age_s={stream_age:.1f} limit_s={limits.order_stream_stale_s}"
            )
        return stale

    def status(self) -> StatusView:
        degraded: list[str] = []
        control: TradingControlView = self._ask_or_last(
            "kill_switch", QueryTradingState(), degraded
        )
        portfolio, working_orders = self._portfolio_figures(degraded)
        gates = self._gates_for_status(degraded)
        supervisor = self._supervisor_state()
        leadership = supervisor.get("leadership") or {}
        heartbeats = supervisor["heartbeats"]
        redactor = self._redactor()
        halt_reason = control.state.halt_reason
        schedule = self._schedule_view(degraded)
        return StatusView(
            instance_id=self._config.instance_id,
            mode=control.state.mode,
            armed=control.state.armed,
            trading_state=control.state.state,
            pause_causes=[
                PauseCauseView(cause=p.cause, detail=redactor.text(p.detail), since_ns=p.since_ns)
                for p in control.pauses
            ],
            halt_reason=None if halt_reason is None else redactor.text(halt_reason),
            halt_detail=redactor.text(control.halt_detail) if halt_reason is not None else None,
            halt_persisted=control.halt_persisted,
            control_persisted=control.persisted,
            degraded=degraded,
            is_leader=bool(leadership.get("is_leader", False)),
            epoch=int(leadership.get("epoch", 0)),
            config_sha=self._config_sha,
            marketdata_age_s=heartbeats["marketdata_age_s"],
            order_stream_age_s=heartbeats["order_stream_age_s"],
            positions_open=len(portfolio.positions),
            working_orders=working_orders,
            realized_pnl_today=portfolio.realized_pnl_today,
            unrealized_pnl=portfolio.unrealized_pnl,
            heat_rupees=portfolio.heat,
            uptime_s=self._uptime_s(),
            actors=[
                ActorView(
                    name=name,
                    alive=bool(info["alive"]),
                    restarts=int(info["restarts"]),
                    last_error=None
                    if info["last_error"] is None
                    else redactor.text(str(info["last_error"])),
                )
                for name, info in supervisor["children"].items()
            ],
            ts_event=self._clock.now_ns(),
            next_scheduled_action=getattr(schedule, "next_action", None),
            schedule_warnings=[redactor.text(w) for w in getattr(schedule, "warnings", [])],
            tripwires=[redactor.text(t) for t in self._tripwires_for_status(degraded)],
            **self._gate_status_fields(gates, redactor),
        )

    def _schedule_view(self, degraded: list[str]) -> Any:
        """The scheduler's view (next action, warnings) for ``/status``; None when it is off
        or cannot answer (named in ``degraded``)."""
        if not self._config.scheduler.enabled:
            return None
        try:
            return self._ask_or_last("scheduler", QuerySchedule(), degraded)
        except ControlError as error:
            degraded.append(f"scheduler: next action unknown: {error.message}")
            return None

    def _tripwires_for_status(self, degraded: list[str]) -> list[str]:
        """The watchdog's active episodes; none, named in ``degraded``, if it cannot answer."""
        try:
            active = self._directory.ask("watchdog", QueryTripwires(), timeout_s=self._timeout_s)
            return list(active)
        except ActorUnavailable as error:
            degraded.append(f"watchdog: tripwires unknown: {error}")
            return []

    def _gates_for_status(self, degraded: list[str]) -> LiveGatesReport | None:
        """The kill switch's LIVE gates for ``/status``; None when it has none to give (a
        kill switch without the gates answers nothing), or the last report, named stale."""
        try:
            report = self._ask_or_last("kill_switch", QueryGates(), degraded)
        except ControlError as error:
            degraded.append(f"kill_switch: LIVE gates unknown: {error.message}")
            return None
        return report if isinstance(report, LiveGatesReport) else None

    def _gate_status_fields(
        self, report: LiveGatesReport | None, redactor: Redactor
    ) -> dict[str, Any]:
        if report is None:
            return {"rehearsal": self._config.rehearsal}
        tripped = report.breaker.tripped
        stopped = report.live_entries_stopped
        return {
            "rehearsal": self._config.rehearsal or report.rehearsal,
            "live_entries_stopped": None if stopped is None else redactor.text(stopped),
            "live_confirmation_expires_in_s": self._expires_in_s(report),
            "circuit_breaker": "TRIPPED" if tripped else "OK",
            "circuit_breaker_detail": redactor.text(report.breaker.detail) if tripped else None,
        }

    # ------------------------------------------------------------------ commands
    def set_mode(self, request: ModeRequest, *, by: OperatorRef = _IN_PROCESS) -> ModeResult:
        """The AITRAPP flip: to LIVE through every LIVE gate (and armed); from LIVE a revoke."""
        decision: ModeDecision = self._ask(
            "kill_switch", SetMode(mode=request.mode, confirm=request.confirm, by=by)
        )
        redactor = self._redactor()
        if not decision.accepted:
            raise ControlError(
                403,
                "MODE_BLOCKED",
                f"switch to {request.mode.value} refused: {len(decision.blockers)} blockers",
                blockers=[redactor.text(blocker) for blocker in decision.blockers],
            )
        return ModeResult(
            status=decision.mode,
            previous=decision.previous,
            armed=decision.armed,
            message=self._rehearsal_text(redactor.text(decision.message)),
        )

    def pause(self, request: PauseRequest, *, by: OperatorRef = _IN_PROCESS) -> StatusView:
        reason = self._redactor().text(request.reason)
        self._control_ask(PauseEntries(cause=PauseCause.OPERATOR, detail=reason))
        return self.status()

    def resume(self, *, by: OperatorRef = _IN_PROCESS) -> StatusView:
        control: TradingControlView = self._ask("kill_switch", QueryTradingState())
        if control.state.state is TradingState.HALTED:
            raise ControlError(
                409,
                "HALTED",
                f"the kill switch is active ({self._halt_text(control)}); resume does not clear "
                f"it: {_RESET_ROUTE} clears the HALT (then arm again), then POST /resume clears "
                "the pauses",
            )
        self._control_ask(ResumeEntries(cause=PauseCause.OPERATOR))
        return self.status()

    def flatten(
        self, request: FlattenRequest, *, by: OperatorRef = _IN_PROCESS
    ) -> FlattenCompleted:
        """Store the FLATTEN pause, then close everything; return once flat or at the timeout."""
        started = time.monotonic()
        reason = self._redactor().text(request.reason)
        # Intent before action: the kill switch stores the FLATTEN pause (it keeps the book
        # flat across a crash), then tells the order actor FlattenAll with this reason.
        self._control_ask(PauseEntries(cause=PauseCause.FLATTEN, detail=reason))
        # Idempotent while a flatten runs; answers with the counts at its start.
        first = self._ask("order", FlattenAll(reason=reason, ts_init=self._clock.now_ns()))
        deadline = started + self._config.http.flatten_timeout_s
        status = first
        while status.remaining_positions or status.remaining_working_orders:
            if time.monotonic() >= deadline:
                raise ControlError(
                    504,
                    "FLATTEN_TIMEOUT",
                    f"flatten not complete after {self._config.http.flatten_timeout_s}s: "
                    f"remaining_positions={status.remaining_positions} "
                    f"remaining_working_orders={status.remaining_working_orders}",
                )
            time.sleep(_FLATTEN_POLL_S)  # polling the actor, not synchronising a test
            status = self._ask("order", QueryPortfolio()).flatten
        duration_ms = (time.monotonic() - started) * 1000
        return FlattenCompleted(
            reason=reason,
            positions_closed=first.positions_at_start,
            orders_cancelled=first.orders_at_start,
            remaining_positions=0,
            remaining_working_orders=0,
            duration_ms=round(duration_ms, 3),
            ts_event=self._clock.now_ns(),
        )

    def kill_switch_activate(
        self, request: KillSwitchActivateRequest, *, by: OperatorRef = _IN_PROCESS
    ) -> KillSwitchView:
        """Trip the sticky HALT (flattening when ``close_on_kill_switch``); answers at once."""
        detail = self._redactor().text(request.reason)
        flatten = self._config.close_on_kill_switch
        control = self._control_ask(
            TripKillSwitch(reason=MANUAL_KILL_SWITCH, detail=detail, flatten=flatten, by=by)
        )
        message = "kill switch active"
        if flatten:
            message += "; closing every position (close_on_kill_switch): check GET /positions"
        if not control.halt_persisted:
            message += "; NOT STORED YET (storage unavailable): it holds in memory and is retried"
        return self._kill_switch_view(control, message)

    def kill_switch_reset(
        self, request: KillSwitchResetRequest, *, by: OperatorRef = _IN_PROCESS
    ) -> KillSwitchView:
        """Clear the HALT (audited). Leaves the engine disarmed; pauses stay until resumed."""
        redactor = self._redactor()
        control = self._control_ask(
            ResetKillSwitch(
                operator=redactor.text(request.operator),
                reason=redactor.text(request.reason),
                by=by,
            )
        )
        if control.pauses:
            causes = ",".join(p.cause.value for p in control.pauses)
            next_step = f"entries still paused ({causes}): POST /resume, then POST /execution/arm"
        else:
            next_step = "POST /execution/arm to trade again"
        return self._kill_switch_view(control, f"kill switch inactive; disarmed: {next_step}")

    def kill_switch(self) -> KillSwitchView:
        control: TradingControlView = self._ask("kill_switch", QueryTradingState())
        message = (
            f"active: {_RESET_ROUTE} clears it"
            if control.state.state is TradingState.HALTED
            else "inactive"
        )
        return self._kill_switch_view(control, message)

    def arm(self, request: ArmRequest, *, by: OperatorRef = _IN_PROCESS) -> ArmView:
        """Arm; ``live_mode`` arms in LIVE through every LIVE gate (409 with the blockers)."""
        control: TradingControlView = self._ask(
            "kill_switch", ArmTrading(operator=by.who, live=request.live_mode, by=by)
        )
        redactor = self._redactor()
        if control.refused:
            code, _, message = control.refused.partition(": ")
            blockers = [redactor.text(blocker) for blocker in control.blockers]
            if blockers and request.live_mode:
                code = "LIVE_GATES_BLOCKED"
            raise ControlError(
                409, code, redactor.text(message or control.refused), blockers=blockers or None
            )
        if not control.state.armed:
            raise ControlError(409, "ARM_REFUSED", "the kill switch did not arm")
        if request.live_mode and control.state.mode is not Mode.LIVE:
            # A kill switch that does not know LIVE arming armed in its own mode: say so, as
            # a refusal of what was asked (LIVE), never as a LIVE success.
            raise ControlError(
                409,
                "LIVE_GATES_BLOCKED",
                f"LIVE arming was not done: the kill switch armed in {control.state.mode.value}"
                ", not LIVE; POST /execution/disarm if that was not wanted",
                blockers=[f"the engine armed in {control.state.mode.value}, not LIVE"],
            )
        message = "armed in LIVE: real money is at risk" if request.live_mode else "armed"
        if control.state.state is not TradingState.ACTIVE:
            message += f"; entries still blocked: trading state {control.state.state.value}"
        return self._arm_view(control, message)

    def disarm(self, request: DisarmRequest, *, by: OperatorRef = _IN_PROCESS) -> ArmView:
        reason = self._redactor().text(request.reason)
        control = self._control_ask(DisarmTrading(reason=reason, by=by))
        return self._arm_view(control, "disarmed: entries refused until POST /execution/arm")

    # ------------------------------------------------------------------ the gated path to LIVE
    def connect(self, *, by: OperatorRef = _IN_PROCESS) -> ConnectView:
        """Connect to the broker now (on this thread), and tell the kill switch the outcome
        (a failure disarms). A failure is ``ok`` false with ``error`` BROKER_UNAVAILABLE."""
        account, failure = self._connect_broker()
        self._ask("kill_switch", RecordConnect(account=account, error=failure, by=by))
        control: TradingControlView = self._ask("kill_switch", QueryTradingState())
        mode = control.state.mode
        rehearsal = self._config.rehearsal
        if account is None:
            return ConnectView(
                ok=False,
                account_id="",
                balance=0.0,
                mode=mode,
                live_account=False,
                rehearsal=rehearsal,
                message=self._rehearsal_text(
                    f"broker connect failed: {failure}; the engine is disarmed (armed="
                    f"{str(control.state.armed).lower()}): POST /execution/connect again once "
                    "the broker is back"
                ),
                error=BROKER_UNAVAILABLE,
            )
        kind = "a LIVE account" if account.is_live else "not a LIVE account"
        return ConnectView(
            ok=True,
            account_id=account.account_id,
            balance=float(account.balance),
            mode=mode,
            live_account=account.is_live,
            rehearsal=rehearsal,
            message=self._rehearsal_text(
                f"connected: account {account.account_id} ({kind}), balance "
                f"{account.balance} {account.currency}"
            ),
        )

    def gates(self) -> GatesView:
        report: LiveGatesReport = self._ask_answer("kill_switch", QueryGates(), LiveGatesReport)
        redactor = self._redactor()
        now = self._clock.now_ns()
        prelive = report.prelive
        stopped = report.live_entries_stopped
        return GatesView(
            allowed=report.allowed,
            mode=report.mode,
            blockers=[redactor.text(blocker) for blocker in report.blockers],
            warnings=[redactor.text(warning) for warning in report.warnings],
            armed=report.armed,
            rehearsal=self._config.rehearsal or report.rehearsal,
            confirmation_expires_in_s=self._expires_in_s(report),
            prelive_age_s=None if prelive is None else round((now - prelive.ran_ns) / 1e9, 3),
            circuit_breaker="TRIPPED" if report.breaker.tripped else "OK",
            live_entries_stopped=None if stopped is None else redactor.text(stopped),
        )

    def prelive_run(self, *, by: OperatorRef = _IN_PROCESS) -> PreliveView:
        """The seven checks on a fresh connect and the safety problems known here."""
        account, failure = self._connect_broker()
        result: PreliveResult = self._ask_answer(
            "kill_switch",
            RunPrelive(
                account=account,
                connectivity_error=failure,
                safety_problems=self._safety_problems(),
                by=by,
            ),
            PreliveResult,
        )
        redactor = self._redactor()
        return PreliveView(
            passed=result.passed,
            checks=[
                PreliveCheckView(
                    name=check.name, passed=check.passed, details=redactor.text(check.details)
                )
                for check in result.checks
            ],
            rehearsal=self._config.rehearsal,
        )

    def live_confirm(
        self, request: LiveConfirmRequest, *, by: OperatorRef = _IN_PROCESS
    ) -> LiveConfirmView:
        """The SOLAT confirmation. A refusal is a 4xx naming what was wrong, never the token
        (neither the configured one nor the one sent)."""
        outcome: ConfirmOutcome = self._ask_answer(
            "kill_switch",
            ConfirmLive(
                phrase=request.phrase,
                token=request.token,
                account_id=request.account_id,
                by=by,
            ),
            ConfirmOutcome,
        )

        def clean(text: str) -> str:
            text = self._redactor().text(text)
            # The token as sent, whatever its length (the redactor skips very short ones).
            return text.replace(request.token, REDACTED) if request.token else text

        if not outcome.accepted:
            code = outcome.code or "CONFIRM_REFUSED"
            raise ControlError(
                _CONFIRM_REFUSAL_STATUS.get(code, 403),
                code,
                clean(outcome.message or "the LIVE confirmation was refused"),
            )
        expires = outcome.expires_in_seconds
        return LiveConfirmView(
            ok=True,
            account_id=clean(request.account_id),
            expires_in_seconds=expires,
            rehearsal=self._config.rehearsal,
            message=self._rehearsal_text(
                clean(
                    outcome.message
                    or f"LIVE confirmed; expires in {expires:.0f}s: POST /execution/arm "
                    '{"confirm": true, "live_mode": true} before then'
                )
            ),
        )

    def live_revoke(self, request: RevokeRequest, *, by: OperatorRef = _IN_PROCESS) -> ArmView:
        """Withdraw the LIVE confirmation: disarm and leave LIVE."""
        reason = self._redactor().text(request.reason)
        control = self._control_ask(RevokeLive(reason=reason, by=by), refused_status=409)
        return self._arm_view(
            control,
            f"LIVE revoked: disarmed, mode {control.state.mode.value}; going LIVE again needs a "
            "fresh pre-live check and confirmation",
        )

    def circuit_breaker_reset(
        self, request: CircuitBreakerResetRequest, *, by: OperatorRef = _IN_PROCESS
    ) -> GatesView:
        """Close a tripped breaker (refused with 409 before its cooldown); stays disarmed."""
        reason = self._redactor().text(request.reason)
        answer = self._ask("kill_switch", ResetCircuitBreaker(reason=reason, by=by))
        refused = getattr(answer, "refused", "")
        if answer is None:
            raise _no_gates("kill_switch", ResetCircuitBreaker, answer)
        if refused:
            code, _, message = refused.partition(": ")
            raise ControlError(409, code, self._redactor().text(message or refused))
        return self.gates()

    def audit(self, limit: int) -> AuditView:
        rows = self._ask("kill_switch", QueryAudit(limit=limit))
        if not isinstance(rows, list | tuple) or not all(
            isinstance(row, AuditEntry) for row in rows
        ):
            raise _no_gates("kill_switch", QueryAudit, rows)
        redactor = self._redactor()
        entries = [
            AuditEntryView(
                ts_ns=row.ts_ns,
                at=datetime.fromtimestamp(row.ts_ns / 1e9, tz=UTC).isoformat(),
                who=row.who,
                address=row.address,
                action=row.action,
                outcome=row.outcome,
                detail=redactor.text(row.detail),
                blockers=[redactor.text(blocker) for blocker in row.blockers],
                mode=row.mode,
                rehearsal=row.rehearsal,
            )
            for row in rows[:limit]
        ]
        return AuditView(entries=entries, count=len(entries))

    def reconcile_report(self) -> ReconcileReportView:
        try:
            report = self._directory.ask("order", QueryReconcileReport(), timeout_s=self._timeout_s)
        except ActorUnavailable as error:
            raise ControlError(503, "RECONCILE_UNAVAILABLE", str(error)) from error
        if not isinstance(report, ReconcileReportView):
            # An order actor that does not answer this query (yet) says so with None.
            raise ControlError(
                503,
                "RECONCILE_UNAVAILABLE",
                "the order actor has no reconciliation report to give",
            )
        return report

    # ------------------------------------------------------------------ queries
    def positions(self) -> PositionsView:
        positions = self._ask("order", QueryPositions())
        return PositionsView(positions=list(positions), count=len(positions))

    def orders(self, limit: int) -> OrdersView:
        try:
            orders = self._ask("order", QueryOrders(limit=limit))
        except ControlError:
            raise
        except Exception as error:
            # The order list is read from storage: a dead disk is a 503, not a 500.
            raise ControlError(
                503, "STORAGE_UNAVAILABLE", f"orders could not be read: {error!r}"
            ) from error
        views = [msgspec.convert(msgspec.to_builtins(o), OrderView) for o in orders]
        return OrdersView(orders=views, count=len(views))

    def risk(self) -> RiskView:
        return self._ask("risk", QueryRisk())

    def debug_actors(self) -> dict[str, Any]:
        snapshots = gather_snapshots(self._directory, timeout_s=self._timeout_s)
        return {
            "instance_id": self._config.instance_id,
            "config_sha": self._config_sha,
            "ts_event": self._clock.now_ns(),
            "actors": self._redactor().value(snapshots),
        }

    def metrics_text(self) -> bytes:
        return self._metrics.render()

    # ------------------------------------------------------------------ internals
    def _ask(self, actor: str, message: object) -> Any:
        try:
            return self._directory.ask(actor, message, timeout_s=self._timeout_s)
        except ActorUnavailable as error:
            raise ControlError(503, "ACTOR_UNAVAILABLE", str(error)) from error

    def _ask_answer(self, actor: str, message: object, expected: type[_T]) -> _T:
        answer = self._ask(actor, message)
        if not isinstance(answer, expected):
            raise _no_gates(actor, type(message), answer)
        return answer

    def _control_ask(self, command: object, *, refused_status: int = 503) -> TradingControlView:
        control = self._ask_answer("kill_switch", command, _trading_control_view())
        if control.refused:
            code, _, message = control.refused.partition(": ")
            raise ControlError(
                refused_status, code, self._redactor().text(message or control.refused)
            )
        return control

    def _ask_or_last(self, actor: str, message: object, degraded: list[str]) -> Any:
        key = f"{actor}:{type(message).__name__}"
        try:
            answer = self._directory.ask(actor, message, timeout_s=self._timeout_s)
        except ActorUnavailable as error:
            with self._last_lock:
                last = self._last_answers.get(key)
            if last is None:
                raise ControlError(503, "ACTOR_UNAVAILABLE", str(error)) from error
            age_s = time.monotonic() - last[0]
            degraded.append(f"{actor}: {error}; figures as of {age_s:.1f}s ago")
            return last[1]
        with self._last_lock:
            self._last_answers[key] = (time.monotonic(), answer)
        return answer

    def _portfolio_figures(self, degraded: list[str]) -> tuple[PortfolioUpdated, int]:
        try:
            view: PortfolioView = self._ask_or_last("order", QueryPortfolio(), degraded)
            return view.portfolio, view.working_orders
        except ControlError as order_error:
            # Never answered yet: the risk actor holds the order actor's last published
            # portfolio (working orders known there only as working entries).
            try:
                last: PortfolioUpdated = self._directory.ask(
                    "risk", QueryLastPortfolio(), timeout_s=self._timeout_s
                )
            except ActorUnavailable:
                raise order_error from None
            age = (
                "none published yet"
                if last.ts_event == 0
                else f"as of {(self._clock.now_ns() - last.ts_event) / 1e9:.1f}s ago"
            )
            degraded.append(
                f"order: {order_error.message}; positions and PnL from the last portfolio the "
                f"risk actor received ({age}); working_orders counts entries only"
            )
            return last, last.working_entry_count

    def _redactor(self) -> Redactor:
        return current_redactor(self._secrets)

    def _rehearsal_text(self, message: str) -> str:
        if self._config.rehearsal and not message.startswith(REHEARSAL_PREFIX):
            return REHEARSAL_PREFIX + message
        return message

    def _expires_in_s(self, report: LiveGatesReport) -> float | None:
        if report.confirmation_expires_ns is None:
            return None
        return round(max(0.0, (report.confirmation_expires_ns - self._clock.now_ns()) / 1e9), 3)

    def _safety_problems(self) -> tuple[str, ...]:
        """What the pre-live "Safety guard" check must know beyond the kill switch's own
        facts: heartbeats judged now, and every pause an operator did not ask for."""
        try:
            status = self.status()
        except ControlError as error:
            return (f"engine status unavailable: {error.message}",)
        problems = [
            f"{cause.cause.value}: {cause.detail}"
            for cause in status.pause_causes
            if cause.cause is not PauseCause.OPERATOR
        ]
        problems.extend(self._stale_now(status))
        problems.extend(f"stale: {note}" for note in status.degraded)
        holidays = self._holiday_list_problem()
        if holidays is not None:
            problems.append(holidays)
        return tuple(problems)

    def _holiday_list_problem(self) -> str | None:
        """The scheduler's holiday list not reaching today (a pre-live blocker)."""
        view = self._schedule_view([])
        known = getattr(view, "holidays_known_through", None)
        if view is None or known is None:
            return None
        return holiday_list_blocker(
            today=date.fromisoformat(view.trading_day),
            holidays_known_through=date.fromisoformat(known),
            config_key=HOLIDAYS_CONFIG_KEY,
        )

    def _connect_broker(self) -> tuple[AccountFacts | None, str | None]:
        """Call the broker's ``connect()`` on this thread's behalf, bounded by the ask timeout:
        (the account, None) or (None, why it failed). One call in flight at a time: a caller
        that finds one running waits for its outcome instead of starting another."""
        broker = self._broker
        if broker is None:
            return None, "no broker is attached to the admin API"
        with self._connect_lock:
            pending = self._pending_connect
            if pending is None or pending.done.is_set():
                pending = _PendingCall(broker.connect, name=f"admin-connect:{broker.name}")
                self._pending_connect = pending
        if not pending.done.wait(self._timeout_s):
            return None, f"TIMEOUT: {broker.name} did not answer connect within {self._timeout_s}s"
        error = pending.error
        if error is not None:
            if isinstance(error, BrokerRejected):
                kind = "REJECTED"
            elif isinstance(error, BrokerUnavailable):
                kind = "UNAVAILABLE"
            else:
                # Fail closed on anything else too: a connect that did not succeed failed.
                kind = type(error).__name__
            return None, self._redactor().text(f"{kind}: {broker.name}: {error}")
        info: AccountInfo = pending.value
        return (
            AccountFacts(
                account_id=info.account_id,
                balance=str(info.balance),
                currency=info.currency,
                is_live=info.is_live,
                connected_ns=self._clock.now_ns(),
            ),
            None,
        )

    def _halt_text(self, control: TradingControlView) -> str:
        reason = control.state.halt_reason or "unknown"
        detail = f": {control.halt_detail}" if control.halt_detail else ""
        return self._redactor().text(f"{reason}{detail}")

    def _kill_switch_view(self, control: TradingControlView, message: str) -> KillSwitchView:
        redactor = self._redactor()
        active = control.state.state is TradingState.HALTED
        return KillSwitchView(
            active=active,
            reason=redactor.text(control.state.halt_reason or "") if active else None,
            detail=redactor.text(control.halt_detail) if active else None,
            activated_ns=control.halted_since_ns,
            persisted=control.persisted,
            armed=control.state.armed,
            trading_state=control.state.state,
            flatten_pause=PauseCause.FLATTEN in control.state.pause_causes,
            message=redactor.text(message),
        )

    def _arm_view(self, control: TradingControlView, message: str) -> ArmView:
        return ArmView(
            ok=True,
            armed=control.state.armed,
            mode=control.state.mode,
            live=control.state.mode is Mode.LIVE,
            message=self._rehearsal_text(message),
        )

    def _supervisor_state(self) -> dict[str, Any]:
        ref = self._directory.get("supervisor")
        if ref is None:
            raise ControlError(503, "ACTOR_UNAVAILABLE", "supervisor is not running")
        try:
            proxy = ref.proxy()
            children = proxy.actor_health().get(timeout=self._timeout_s)
            heartbeats = proxy.heartbeat_ages().get(timeout=self._timeout_s)
            snapshot = proxy.snapshot().get(timeout=self._timeout_s)
        except Exception as error:
            raise ControlError(503, "ACTOR_UNAVAILABLE", f"supervisor: {error!r}") from error
        return {
            "children": children,
            "heartbeats": heartbeats,
            "leadership": snapshot.get("leadership"),
        }

    def _uptime_s(self) -> float:
        return round(time.monotonic() - self._started_monotonic, 3)


class _PendingCall:
    """One blocking call run on a daemon thread of its own, so a caller can stop waiting at a
    deadline (the thread is left to finish or hang; it holds nothing the engine needs)."""

    def __init__(self, call: Callable[[], Any], *, name: str) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._call = call
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self.value = self._call()
        except BaseException as error:  # handed to the caller, who decides
            self.error = error
        finally:
            self.done.set()


def _trading_control_view() -> type[TradingControlView]:
    # Imported late: actors.kill_switch_actor imports far more than this module needs to load.
    from actors.kill_switch_actor import TradingControlView

    return TradingControlView


def _no_gates(actor: str, message: type, answer: object) -> ControlError:
    return ControlError(
        503,
        "LIVE_GATES_UNAVAILABLE",
        f"the {actor} actor gave no answer to {message.__name__} (it answered "
        f"{type(answer).__name__}): this engine's kill switch does not run the LIVE gates",
    )
