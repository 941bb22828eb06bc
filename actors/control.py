"""EngineControl: the admin API's view of the engine (implements ``ControlPort``).

Runs on HTTP server threads, never inside an actor: each method asks the owning actor through
the directory with a timeout. A timeout or a dead actor becomes a 503 ``ControlError`` naming
the actor; a refused request a 4xx with the reason. Nothing here holds state of its own
beyond the process start time.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actors.directory import ActorUnavailable
from actors.dumps import gather_snapshots
from adapters.http.app import ControlError
from domain.enums import PauseCause, TradingState
from domain.messages import (
    FlattenAll,
    FlattenCompleted,
    PauseEntries,
    QueryOrders,
    QueryPortfolio,
    QueryPositions,
    QueryRisk,
    QueryTradingState,
    ResumeEntries,
    SetMode,
)
from domain.messages.api import (
    ActorView,
    FlattenRequest,
    HealthView,
    ModeRequest,
    ModeResult,
    OrdersView,
    OrderView,
    PauseCauseView,
    PauseRequest,
    PositionsView,
    ReadyView,
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

__all__ = ["EngineControl"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_FLATTEN_POLL_S = 0.01


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
        for actor in status.actors:
            if not actor.alive:
                blockers.append(f"actor {actor.name} is not running")
        if status.trading_state is TradingState.HALTED:
            blockers.append(f"kill switch active: {status.halt_reason}")
        return ReadyView(ready=not blockers, blockers=blockers)

    def status(self) -> StatusView:
        control: TradingControlView = self._ask("kill_switch", QueryTradingState())
        portfolio_view: PortfolioView = self._ask("order", QueryPortfolio())
        supervisor = self._supervisor_state()
        leadership = supervisor.get("leadership") or {}
        portfolio = portfolio_view.portfolio
        heartbeats = supervisor["heartbeats"]
        return StatusView(
            instance_id=self._config.instance_id,
            mode=control.state.mode,
            armed=control.state.armed,
            trading_state=control.state.state,
            pause_causes=[
                PauseCauseView(cause=p.cause, detail=p.detail, since_ns=p.since_ns)
                for p in control.pauses
            ],
            halt_reason=control.state.halt_reason,
            is_leader=bool(leadership.get("is_leader", False)),
            epoch=int(leadership.get("epoch", 0)),
            config_sha=self._config_sha,
            marketdata_age_s=heartbeats["marketdata_age_s"],
            order_stream_age_s=heartbeats["order_stream_age_s"],
            positions_open=len(portfolio.positions),
            working_orders=portfolio_view.working_orders,
            realized_pnl_today=portfolio.realized_pnl_today,
            unrealized_pnl=portfolio.unrealized_pnl,
            heat_rupees=portfolio.heat,
            uptime_s=self._uptime_s(),
            actors=[
                ActorView(
                    name=name,
                    alive=bool(info["alive"]),
                    restarts=int(info["restarts"]),
                    last_error=info["last_error"],
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
        self._ask("kill_switch", PauseEntries(cause=PauseCause.OPERATOR, detail=request.reason))
        return self.status()

    def resume(self) -> StatusView:
        self._ask("kill_switch", ResumeEntries(cause=PauseCause.OPERATOR))
        return self.status()

    def flatten(self, request: FlattenRequest) -> FlattenCompleted:
        """Pause entries, then close everything; return once flat or at the flatten timeout."""
        started = time.monotonic()
        now = self._clock.now_ns()
        # Flatten first (it carries the operator's reason), then the FLATTEN pause, which keeps
        # the book flat: anything entered in between is flattened by the order actor too.
        first = self._ask("order", FlattenAll(reason=request.reason, ts_init=now))
        self._ask("kill_switch", PauseEntries(cause=PauseCause.FLATTEN, detail=request.reason))
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
            reason=request.reason,
            positions_closed=first.positions_at_start,
            orders_cancelled=first.orders_at_start,
            remaining_positions=0,
            remaining_working_orders=0,
            duration_ms=round(duration_ms, 3),
            ts_event=self._clock.now_ns(),
        )

    # ------------------------------------------------------------------ queries
    def positions(self) -> PositionsView:
        positions = self._ask("order", QueryPositions())
        return PositionsView(positions=list(positions), count=len(positions))

    def orders(self, limit: int) -> OrdersView:
        orders = self._ask("order", QueryOrders(limit=limit))
        views = [msgspec.convert(msgspec.to_builtins(o), OrderView) for o in orders]
        return OrdersView(orders=views, count=len(views))

    def risk(self) -> RiskView:
        return self._ask("risk", QueryRisk())

    def debug_actors(self) -> dict[str, Any]:
        return {
            "instance_id": self._config.instance_id,
            "config_sha": self._config_sha,
            "ts_event": self._clock.now_ns(),
            "actors": gather_snapshots(self._directory, timeout_s=self._timeout_s),
        }

    def metrics_text(self) -> bytes:
        return self._metrics.render()

    # ------------------------------------------------------------------ internals
    def _ask(self, actor: str, message: object) -> Any:
        try:
            return self._directory.ask(actor, message, timeout_s=self._timeout_s)
        except ActorUnavailable as error:
            raise ControlError(503, "ACTOR_UNAVAILABLE", str(error)) from error

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
