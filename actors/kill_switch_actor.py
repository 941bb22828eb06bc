"""KillSwitchActor: owns the trading state — mode, armed, pause causes and the sticky HALT.

Accepts: ``PauseEntries``, ``ResumeEntries``, ``TripKillSwitch``, ``ResetKillSwitch``,
``SetMode``, ``ArmTrading``, ``DisarmTrading``; answers ``QueryTradingState``.
Publishes: ``TradingStateChanged`` to its subscribers on every change (and ``FlattenAll`` to the
order actor when a trip asks for it).

The HALT is persisted before it is published and reloaded on start, so it survives a crash or
a restart; only ``ResetKillSwitch`` clears it. Operator pauses (OPERATOR, FLATTEN) persist too;
condition pauses (stale feed, leader loss, ...) are re-derived by the supervisor after a start.
A crash here is restarted by the supervisor like any other child; the persisted state comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actors.base import VigilActor
from adapters.logs import log_event
from adapters.storage.repositories import KillSwitchRecord, UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import Mode, PauseCause, TradingState
from domain.messages import (
    ArmTrading,
    DisarmTrading,
    FlattenAll,
    PauseEntries,
    QueryTradingState,
    RepublishState,
    ResetKillSwitch,
    ResumeEntries,
    SetMode,
    TimerFired,
    TradingStateChanged,
    TripKillSwitch,
)

if TYPE_CHECKING:
    from actors.trading_gate import TradingGate
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.config import LiveGateConfig

__all__ = ["KillSwitchActor", "ModeDecision", "TradingControlView"]

logger = logging.getLogger(__name__)

# Causes an operator sets and clears; they persist across restarts.
OPERATOR_CAUSES = frozenset({PauseCause.OPERATOR, PauseCause.FLATTEN})
_PAUSES_KEY = "operator_pause_causes"


class ModeDecision(msgspec.Struct, frozen=True, kw_only=True):
    accepted: bool
    mode: Mode
    previous: Mode
    armed: bool
    blockers: tuple[str, ...] = ()
    message: str = ""


class PauseCauseState(msgspec.Struct, frozen=True, kw_only=True):
    cause: PauseCause
    detail: str
    since_ns: int


class TradingControlView(msgspec.Struct, frozen=True, kw_only=True):
    state: TradingStateChanged
    pauses: tuple[PauseCauseState, ...]
    halt_detail: str
    halted_since_ns: int | None


class KillSwitchActor(VigilActor):
    def __init__(
        self,
        *,
        database: Database,
        metrics: EngineMetrics,
        instance_id: str,
        initial_mode: Mode,
        auto_arm_paper: bool,
        live_gates: LiveGateConfig,
        subscribers: Sequence[str],
        gate: TradingGate,
        order_actor: str = "order",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._gate = gate
        self._database = database
        self._metrics = metrics
        self._instance_id = instance_id
        self._live_gates = live_gates
        self._subscribers = tuple(subscribers)
        self._order_actor = order_actor
        self._mode = initial_mode
        self._armed = initial_mode is Mode.PAPER and auto_arm_paper
        self._halt: KillSwitchRecord | None = None
        self._pauses: dict[PauseCause, PauseCauseState] = {}
        self._last_publish_ns = 0
        self._halt_unsaved = False

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            PauseEntries: self.pause_entries,
            ResumeEntries: self.resume_entries,
            TripKillSwitch: self.trip_kill_switch,
            ResetKillSwitch: self.reset_kill_switch,
            SetMode: self.set_mode,
            ArmTrading: self.arm_trading,
            DisarmTrading: self.disarm_trading,
            QueryTradingState: lambda _query: self.view(),
            TimerFired: self.on_timer_fired,
            RepublishState: lambda _command: self._publish(self.clock.now_ns()),
        }

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        now = self.clock.now_ns()
        with UnitOfWork(self._database) as uow:
            record = uow.kill_switch.load()
            stored_pauses = uow.control.get(_PAUSES_KEY)
        if record is not None and record.active:
            self._halt = record
            log_event(
                logger,
                "KILL_SWITCH",
                f"kill switch still active after restart: {record.reason}",
                level=logging.WARNING,
                reason=record.reason,
            )
        if stored_pauses:
            for item in msgspec.json.decode(stored_pauses, type=list[PauseCauseState]):
                self._pauses[item.cause] = item
        self._publish(now)

    # ------------------------------------------------------------------ COMMAND HANDLERS
    def pause_entries(self, command: PauseEntries) -> TradingControlView:
        if command.cause not in self._pauses:
            now = self.clock.now_ns()
            self._pauses[command.cause] = PauseCauseState(
                cause=command.cause, detail=command.detail, since_ns=now
            )
            log_event(
                logger,
                "PAUSE",
                f"entries paused: {command.cause.value} {command.detail}".strip(),
                level=logging.WARNING,
                cause=command.cause.value,
                detail=command.detail,
            )
            self._audit("PAUSE", {"cause": command.cause.value, "detail": command.detail}, now)
            if command.cause in OPERATOR_CAUSES:
                self._persist_operator_pauses(now)
            self._publish(now)
        return self.view()

    def resume_entries(self, command: ResumeEntries) -> TradingControlView:
        # An operator resume clears what an operator (or a flatten) set; condition causes clear
        # only when their condition does.
        causes = OPERATOR_CAUSES if command.cause is PauseCause.OPERATOR else {command.cause}
        removed = [cause for cause in causes if self._pauses.pop(cause, None) is not None]
        if removed:
            now = self.clock.now_ns()
            names = ",".join(sorted(cause.value for cause in removed))
            log_event(logger, "RESUME", f"pause cleared: {names}", causes=names)
            self._audit("RESUME", {"causes": names}, now)
            if OPERATOR_CAUSES.intersection(removed):
                self._persist_operator_pauses(now)
            self._publish(now)
        return self.view()

    def trip_kill_switch(self, command: TripKillSwitch) -> TradingControlView:
        now = self.clock.now_ns()
        if self._halt is None:
            self._halt = KillSwitchRecord(
                active=True,
                reason=command.reason,
                detail=command.detail,
                activated_ns=now,
                reset_ns=None,
                updated_ns=now,
            )
            self._persist_halt(now)
            self._metrics.kill_switch_total.labels(reason=command.reason).inc()
            log_event(
                logger,
                "KILL_SWITCH",
                f"kill switch activated: {command.reason} {command.detail}".strip(),
                level=logging.CRITICAL,
                reason=command.reason,
                detail=command.detail,
            )
            self._publish(now)
        if command.flatten:
            reason = f"kill_switch:{command.reason}"
            self.directory.tell(self._order_actor, FlattenAll(reason=reason, ts_init=now))
            # The persisted FLATTEN pause makes the order actor finish the job even if it was
            # down when the tell above was sent.
            self.pause_entries(PauseEntries(cause=PauseCause.FLATTEN, detail=reason))
        return self.view()

    def reset_kill_switch(self, command: ResetKillSwitch) -> TradingControlView:
        if self._halt is not None:
            now = self.clock.now_ns()
            cleared = KillSwitchRecord(
                active=False,
                reason=self._halt.reason,
                detail=self._halt.detail,
                activated_ns=self._halt.activated_ns,
                reset_ns=now,
                updated_ns=now,
            )
            with UnitOfWork(self._database) as uow:
                uow.kill_switch.save(cleared)
                uow.events.append(
                    "KILL_SWITCH",
                    {"reason": cleared.reason, "active": False, "operator": command.operator},
                    ts_ns=now,
                    instance_id=self._instance_id,
                )
            self._halt = None
            log_event(logger, "KILL_SWITCH", "kill switch reset", operator=command.operator)
            self._publish(now)
        return self.view()

    def set_mode(self, command: SetMode) -> ModeDecision:
        previous = self._mode
        blockers = self._mode_blockers(command.mode)
        if blockers:
            log_event(
                logger,
                "MODE_SWITCH",
                f"mode switch to {command.mode.value} refused",
                level=logging.WARNING,
                requested=command.mode.value,
                blockers=list(blockers),
            )
            return ModeDecision(
                accepted=False,
                mode=self._mode,
                previous=previous,
                armed=self._armed,
                blockers=blockers,
                message=f"{command.mode.value} is blocked",
            )
        now = self.clock.now_ns()
        self._mode = command.mode
        self._audit("MODE_SWITCH", {"from": previous.value, "to": command.mode.value}, now)
        log_event(
            logger,
            "MODE_SWITCH",
            f"Mode switched to {command.mode.value}",
            previous=previous.value,
            mode=command.mode.value,
        )
        self._publish(now)
        return ModeDecision(
            accepted=True,
            mode=self._mode,
            previous=previous,
            armed=self._armed,
            message=f"Mode switched to {command.mode.value}",
        )

    def arm_trading(self, command: ArmTrading) -> TradingControlView:
        if self._mode is not Mode.PAPER:
            # Arming outside PAPER is the gated path of a later issue; refuse rather than guess.
            return self.view()
        if not self._armed:
            self._armed = True
            now = self.clock.now_ns()
            self._audit("ARM", {"operator": command.operator}, now)
            self._publish(now)
        return self.view()

    def disarm_trading(self, command: DisarmTrading) -> TradingControlView:
        if self._armed:
            self._armed = False
            now = self.clock.now_ns()
            self._audit("DISARM", {"reason": command.reason}, now)
            log_event(logger, "DISARM", f"disarmed: {command.reason}", reason=command.reason)
            self._publish(now)
        return self.view()

    def _persist_halt(self, now: int) -> None:
        # The HALT is in force the moment it is decided, stored or not: a storage error must
        # not lose it (a crash here would restart without it). Retried on every timer tick.
        assert self._halt is not None
        try:
            with UnitOfWork(self._database) as uow:
                uow.kill_switch.save(self._halt)
                uow.events.append(
                    "KILL_SWITCH",
                    {"reason": self._halt.reason, "detail": self._halt.detail, "active": True},
                    ts_ns=now,
                    instance_id=self._instance_id,
                )
            self._halt_unsaved = False
        except Exception:
            self._halt_unsaved = True
            logger.exception("could not persist the kill switch; it stays active, will retry")

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        if self._halt_unsaved and self._halt is not None:
            self._persist_halt(timer.now_ns)
        # Re-publish periodically: a restarted subscriber learns the state within a second.
        if timer.now_ns - self._last_publish_ns >= NANOS_PER_SECOND:
            self._publish(timer.now_ns)

    # ------------------------------------------------------------------ QUERIES
    def view(self) -> TradingControlView:
        return TradingControlView(
            state=self._state_message(self.clock.now_ns()),
            pauses=tuple(self._pauses.values()),
            halt_detail=self._halt.detail if self._halt else "",
            halted_since_ns=self._halt.activated_ns if self._halt else None,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self._mode.value,
            "armed": self._armed,
            "state": self._trading_state().value,
            "halt": msgspec.to_builtins(self._halt) if self._halt else None,
            "pauses": msgspec.to_builtins(list(self._pauses.values())),
        }

    # ------------------------------------------------------------------ CHECKS
    def _trading_state(self) -> TradingState:
        if self._halt is not None:
            return TradingState.HALTED
        if self._pauses:
            return TradingState.REDUCING
        return TradingState.ACTIVE

    def _mode_blockers(self, mode: Mode) -> tuple[str, ...]:
        if mode is Mode.PAPER:
            return ()
        if mode is Mode.DEMO:
            return ("no DEMO broker adapter is configured in this build",)
        gates = self._live_gates
        blockers = []
        if not gates.live_trading_enabled:
            blockers.append("LIVE_TRADING_ENABLED is not set to true")
        if gates.live_enable_token is None:
            blockers.append("LIVE_ENABLE_TOKEN is not configured")
        if not gates.live_account_id:
            blockers.append("LIVE_ACCOUNT_ID is not configured")
        if gates.live_max_order_size is None:
            blockers.append("LIVE_MAX_ORDER_SIZE is not configured")
        if self._halt is not None:
            blockers.append(f"kill switch is active: {self._halt.reason}")
        blockers.append("Pre-live check has never passed")
        blockers.append("LIVE confirmation not completed")
        blockers.append("no LIVE broker adapter is configured in this build")
        return tuple(blockers)

    # ------------------------------------------------------------------ EGRESS
    def _state_message(self, now: int) -> TradingStateChanged:
        return TradingStateChanged(
            mode=self._mode,
            armed=self._armed,
            state=self._trading_state(),
            pause_causes=tuple(self._pauses),
            halt_reason=self._halt.reason if self._halt else None,
            ts_event=now,
        )

    def _publish(self, now: int) -> None:
        message = self._state_message(now)
        # The gate first: from here on the order actor's last gate enforces this decision,
        # even for orders already queued, before any subscriber or asker hears of it.
        self._gate.decide(message)
        self._last_publish_ns = now
        for subscriber in self._subscribers:
            self.directory.tell(subscriber, message)

    def _persist_operator_pauses(self, now: int) -> None:
        kept = [state for cause, state in self._pauses.items() if cause in OPERATOR_CAUSES]
        with UnitOfWork(self._database) as uow:
            uow.control.put(_PAUSES_KEY, msgspec.json.encode(kept).decode(), ts_ns=now)

    def _audit(self, event: str, payload: dict[str, Any], now: int) -> None:
        with UnitOfWork(self._database) as uow:
            uow.events.append(event, payload, ts_ns=now, instance_id=self._instance_id)
