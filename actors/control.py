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

Flatten is intent before action: the FLATTEN pause is stored by the kill switch (which then
tells the order actor ``FlattenAll``) before this asks the order actor for its progress, so a
crash at any moment restarts REDUCING with the FLATTEN pause and the flatten completes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actors.directory import ActorUnavailable
from actors.dumps import gather_snapshots
from adapters.http.app import ControlError
from adapters.logs import Redactor, current_redactor
from domain.enums import Mode, PauseCause, TradingState
from domain.messages import (
    ArmTrading,
    DisarmTrading,
    FlattenAll,
    FlattenCompleted,
    PauseEntries,
    QueryLastPortfolio,
    QueryOrders,
    QueryPortfolio,
    QueryPositions,
    QueryReconcileReport,
    QueryRisk,
    QueryTradingState,
    ResetKillSwitch,
    ResumeEntries,
    SetMode,
    TripKillSwitch,
)
from domain.messages.api import (
    ActorView,
    ArmRequest,
    ArmView,
    DisarmRequest,
    FlattenRequest,
    HealthView,
    KillSwitchActivateRequest,
    KillSwitchResetRequest,
    KillSwitchView,
    ModeRequest,
    ModeResult,
    OrdersView,
    OrderView,
    PauseCauseView,
    PauseRequest,
    PositionsView,
    ReadyView,
    ReconcileReportView,
    RiskView,
    StatusView,
)

if TYPE_CHECKING:
    from actors.directory import ActorDirectory
    from actors.kill_switch_actor import ModeDecision, TradingControlView
    from actors.order_actor import PortfolioView
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


class EngineControl:
    def __init__(
        self,
        *,
        directory: ActorDirectory,
        clock: Clock,
        config: EngineConfig,
        config_sha: str,
        metrics: EngineMetrics,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._config = config
        self._config_sha = config_sha
        self._metrics = metrics
        self._timeout_s = config.http.ask_timeout_s
        self._started_monotonic = time.monotonic()
        self._secrets = [
            secret.get_secret_value()
            for secret in (config.http.token, config.live.live_enable_token)
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
        supervisor = self._supervisor_state()
        leadership = supervisor.get("leadership") or {}
        heartbeats = supervisor["heartbeats"]
        redactor = self._redactor()
        halt_reason = control.state.halt_reason
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
        )

    # ------------------------------------------------------------------ commands
    def set_mode(self, request: ModeRequest) -> ModeResult:
        decision: ModeDecision = self._ask(
            "kill_switch", SetMode(mode=request.mode, confirm=request.confirm)
        )
        if not decision.accepted:
            raise ControlError(
                403,
                "MODE_BLOCKED",
                f"switch to {request.mode.value} refused: {len(decision.blockers)} blockers",
                blockers=list(decision.blockers),
            )
        return ModeResult(
            status=decision.mode,
            previous=decision.previous,
            armed=decision.armed,
            message=decision.message,
        )

    def pause(self, request: PauseRequest) -> StatusView:
        reason = self._redactor().text(request.reason)
        self._control_ask(PauseEntries(cause=PauseCause.OPERATOR, detail=reason))
        return self.status()

    def resume(self) -> StatusView:
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

    def flatten(self, request: FlattenRequest) -> FlattenCompleted:
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

    def kill_switch_activate(self, request: KillSwitchActivateRequest) -> KillSwitchView:
        """Trip the sticky HALT (flattening when ``close_on_kill_switch``); answers at once."""
        detail = self._redactor().text(request.reason)
        flatten = self._config.close_on_kill_switch
        control = self._control_ask(
            TripKillSwitch(reason=MANUAL_KILL_SWITCH, detail=detail, flatten=flatten)
        )
        message = "kill switch active"
        if flatten:
            message += "; closing every position (close_on_kill_switch): check GET /positions"
        if not control.halt_persisted:
            message += "; NOT STORED YET (storage unavailable): it holds in memory and is retried"
        return self._kill_switch_view(control, message)

    def kill_switch_reset(self, request: KillSwitchResetRequest) -> KillSwitchView:
        """Clear the HALT (audited). Leaves the engine disarmed; pauses stay until resumed."""
        redactor = self._redactor()
        control = self._control_ask(
            ResetKillSwitch(
                operator=redactor.text(request.operator), reason=redactor.text(request.reason)
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

    def arm(self, request: ArmRequest) -> ArmView:
        if request.live_mode:
            raise ControlError(
                409,
                "ARM_REFUSED",
                "LIVE arming goes through the LIVE gates, which this build does not have",
            )
        control = self._control_ask(ArmTrading(operator="operator"), refused_status=409)
        if not control.state.armed:
            raise ControlError(409, "ARM_REFUSED", "the kill switch did not arm")
        message = "armed"
        if control.state.state is not TradingState.ACTIVE:
            message += f"; entries still blocked: trading state {control.state.state.value}"
        return self._arm_view(control, message)

    def disarm(self, request: DisarmRequest) -> ArmView:
        reason = self._redactor().text(request.reason)
        control = self._control_ask(DisarmTrading(reason=reason))
        return self._arm_view(control, "disarmed: entries refused until POST /execution/arm")

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

    def _control_ask(self, command: object, *, refused_status: int = 503) -> TradingControlView:
        control: TradingControlView = self._ask("kill_switch", command)
        if control.refused:
            code, _, message = control.refused.partition(": ")
            raise ControlError(refused_status, code, message or control.refused)
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
            message=message,
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
