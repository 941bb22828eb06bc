"""KillSwitchActor: owns the trading state — mode, armed, pause causes and the sticky HALT.

Accepts: ``PauseEntries``, ``ResumeEntries``, ``TripKillSwitch``, ``ResetKillSwitch``,
``SetMode``, ``ArmTrading``, ``DisarmTrading``; answers ``QueryTradingState``.
Publishes: ``TradingStateChanged`` to its subscribers on every change, after deciding it in the
shared ``TradingGate``; ``FlattenAll`` to the order actor when a FLATTEN pause is newly set (by a
trip with flatten, an operator flatten or the heat cap).

Intent before action. Every decision that tightens (a HALT, a FLATTEN or operator pause, a
disarm) is decided in memory, then stored, and only then published or acted on: the HALT and
the FLATTEN pause of a trip go into one transaction before ``FlattenAll`` is told, so a crash at
any moment after the decision restarts into HALTED/REDUCING with the FLATTEN pause, and the order
actor's "FLATTEN pause keeps the book flat" finishes the flatten. Decisions that loosen (resume
of an operator pause, reset, arm) are stored first and refused (``refused`` in the answer) when
storage fails, so a crash can only ever bring back the tighter state.

Storage failures. A tightening decision holds in memory even when it cannot be stored; it is
retried on every timer tick, ``TradingStateChanged.persisted`` and the view say it is not stored
yet, and the error is logged once with a count per minute (``ErrorRepeats``). A handler never
raises on a storage error, so a ``tell`` can no longer kill this actor. If the stored state
cannot be read at start, the actor holds entries back (disarmed, ``persisted=False``) and
retries the read on every tick, merging what it decided meanwhile.

Why a decided HALT cannot be lost: if this actor dies before the HALT is stored, the restart
reads storage and does not know it. The senders therefore keep every trip pending and re-send
it until a ``TradingStateChanged`` shows it in force AND persisted (``actors.safety_outbox``);
the supervisor does the same for its escalations and re-sends an unpersisted HALT found in a
crashed incarnation's snapshot. Safety commands bypass the inbox capacity, so backpressure
cannot drop them either.

What persists: the HALT record (``kill_switch`` table), the operator pauses (OPERATOR, FLATTEN)
and ``armed``/``mode`` (``control_state``). Condition pauses (stale feed, leader loss, ...) are
re-derived by the supervisor. Mode comes from the configuration at start (restarting with
another profile is the runbook's rollback); the stored ``armed`` applies when the stored mode
is the configured one, and a stored disarm always applies.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from actors.base import VigilActor
from adapters.logs import ErrorRepeats, log_event
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

__all__ = [
    "OPERATOR_CAUSES",
    "SAFETY_COMMANDS",
    "KillSwitchActor",
    "ModeDecision",
    "TradingControlView",
]

logger = logging.getLogger(__name__)

# Causes an operator sets and clears; they persist across restarts.
OPERATOR_CAUSES = frozenset({PauseCause.OPERATOR, PauseCause.FLATTEN})
# Commands that must never be refused for backpressure: a full inbox cannot drop a trip.
SAFETY_COMMANDS: tuple[type, ...] = (
    TripKillSwitch,
    PauseEntries,
    ResumeEntries,
    ResetKillSwitch,
    DisarmTrading,
)
_PAUSES_KEY = "operator_pause_causes"
_ARMED_KEY = "armed_state"
_STORAGE_ERROR_KEY = "kill_switch_storage"
_REPEAT_WINDOW_NS = 60 * NANOS_PER_SECOND
_MAX_PENDING_EVENTS = 500


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


class _ArmedState(msgspec.Struct, frozen=True, kw_only=True):
    armed: bool
    mode: Mode


class TradingControlView(msgspec.Struct, frozen=True, kw_only=True):
    """The kill switch's answer to every command and query.

    ``persisted``: every decision in force is stored. ``halt_persisted``: no HALT, or the HALT
    is stored. ``loaded``: the stored state was read (False holds entries back). ``refused``:
    non-empty when the command was refused (a loosening change that could not be stored), with
    the reason; nothing changed then.
    """

    state: TradingStateChanged
    pauses: tuple[PauseCauseState, ...]
    halt_detail: str
    halted_since_ns: int | None
    persisted: bool = True
    halt_persisted: bool = True
    loaded: bool = True
    refused: str = ""
    # The LIVE gates that refused the command (an arm, a LIVE mode switch), as sentences.
    blockers: tuple[str, ...] = ()


class _Event(msgspec.Struct, frozen=True):
    event: str
    payload: dict[str, Any]
    ts_ns: int


class KillSwitchActor(VigilActor):
    unbounded_messages: ClassVar[tuple[type, ...]] = (
        *VigilActor.unbounded_messages,
        *SAFETY_COMMANDS,
    )

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
        self._auto_arm = initial_mode is Mode.PAPER and auto_arm_paper
        # Entries are held back until the stored state has been read (on_start).
        self._armed = False
        self._halt: KillSwitchRecord | None = None
        self._pauses: dict[PauseCause, PauseCauseState] = {}
        self._last_publish_ns = 0
        self._loaded = False
        self._disarmed_before_load = False
        self._unsaved = False
        self._pending_events: deque[_Event] = deque(maxlen=_MAX_PENDING_EVENTS)
        self._repeats = ErrorRepeats(logger, window_ns=_REPEAT_WINDOW_NS)

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
        self._try_load(now)
        self._publish(now)

    def _try_load(self, now: int) -> bool:
        try:
            with UnitOfWork(self._database) as uow:
                record = uow.kill_switch.load()
                stored_pauses = uow.control.get(_PAUSES_KEY)
                stored_armed = uow.control.get(_ARMED_KEY)
        except Exception as error:
            self._repeats.error(
                _STORAGE_ERROR_KEY,
                f"kill switch could not read its stored state; entries held back (disarmed) "
                f"until it can: {error!r}",
                now_ns=now,
                event="KILL_SWITCH",
                level=logging.CRITICAL,
            )
            return False
        self._repeats.resolved(_STORAGE_ERROR_KEY, now)
        self._merge_stored(record, stored_pauses, stored_armed, now)
        return True

    def _merge_stored(
        self,
        record: KillSwitchRecord | None,
        stored_pauses: str | None,
        stored_armed: str | None,
        now: int,
    ) -> None:
        decided_meanwhile = self._halt is not None or bool(self._pauses)
        if record is not None and record.active:
            # The stored HALT is the older decision; it wins over one made while unloaded.
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
                self._pauses.setdefault(item.cause, item)
        armed = self._auto_arm
        if stored_armed:
            stored = msgspec.json.decode(stored_armed, type=_ArmedState)
            if not stored.armed:
                armed = False  # an operator's disarm survives any restart
            elif stored.mode is self._mode:
                armed = True
        self._armed = armed and not self._disarmed_before_load
        self._loaded = True
        if decided_meanwhile or self._disarmed_before_load:
            self._unsaved = True
            self._store_state(now)

    # ------------------------------------------------------------------ COMMAND HANDLERS
    def pause_entries(self, command: PauseEntries) -> TradingControlView:
        now = self.clock.now_ns()
        existing = self._pauses.get(command.cause)
        if existing is not None:
            if command.detail and existing.detail != command.detail:
                # Same cause, newer figures: shown in /status, nothing else changes.
                self._pauses[command.cause] = msgspec.structs.replace(
                    existing, detail=command.detail
                )
            return self.view()
        self._pauses[command.cause] = PauseCauseState(
            cause=command.cause, detail=command.detail, since_ns=now
        )
        log_event(
            logger,
            "PAUSE",
            f"entries paused: {command.cause.value} {command.detail}".strip(),
            level=logging.INFO if command.routine else logging.WARNING,
            cause=command.cause.value,
            detail=command.detail,
        )
        events = (
            []
            if command.routine
            else [_Event("PAUSE", {"cause": command.cause.value, "detail": command.detail}, now)]
        )
        if command.cause in OPERATOR_CAUSES:
            self._store_state(now, events)
        else:
            self._store_events(events)
        flatten_reason = (
            (command.detail or "flatten") if command.cause is PauseCause.FLATTEN else None
        )
        self._publish(now, flatten_reason=flatten_reason)
        return self.view()

    def resume_entries(self, command: ResumeEntries) -> TradingControlView:
        # An operator resume clears what an operator (or a flatten) set; condition causes clear
        # only when their condition does.
        causes = OPERATOR_CAUSES if command.cause is PauseCause.OPERATOR else {command.cause}
        removed = sorted(cause for cause in causes if cause in self._pauses)
        if not removed:
            return self.view()
        now = self.clock.now_ns()
        names = ",".join(cause.value for cause in removed)
        events = [] if command.routine else [_Event("RESUME", {"causes": names}, now)]
        if OPERATOR_CAUSES.intersection(removed):
            # Loosening: stored first, refused if it cannot be (a crash must not bring back
            # less than the operator saw).
            kept = {c: s for c, s in self._pauses.items() if c not in removed}
            if not self._write_state(now, events, pauses=kept):
                return self.view(refused=f"STORAGE_UNAVAILABLE: resume of {names} not stored")
            self._pauses = kept
        else:
            for cause in removed:
                self._pauses.pop(cause, None)
            self._store_events(events)
        log_event(
            logger,
            "RESUME",
            f"pause cleared: {names}",
            level=logging.DEBUG if command.routine else logging.INFO,
            causes=names,
        )
        self._publish(now)
        return self.view()

    def trip_kill_switch(self, command: TripKillSwitch) -> TradingControlView:
        now = self.clock.now_ns()
        newly_halted = self._halt is None
        events: list[_Event] = []
        if newly_halted:
            self._halt = KillSwitchRecord(
                active=True,
                reason=command.reason,
                detail=command.detail,
                activated_ns=now,
                reset_ns=None,
                updated_ns=now,
            )
            self._metrics.kill_switch_total.labels(reason=command.reason).inc()
            log_event(
                logger,
                "KILL_SWITCH",
                f"kill switch activated: {command.reason} {command.detail}".strip(),
                level=logging.CRITICAL,
                reason=command.reason,
                detail=command.detail,
            )
            events.append(
                _Event(
                    "KILL_SWITCH",
                    {"reason": command.reason, "detail": command.detail, "active": True},
                    now,
                )
            )
        flatten_reason = f"kill_switch:{command.reason}" if command.flatten else None
        newly_flattening = command.flatten and PauseCause.FLATTEN not in self._pauses
        if newly_flattening:
            assert flatten_reason is not None
            self._pauses[PauseCause.FLATTEN] = PauseCauseState(
                cause=PauseCause.FLATTEN, detail=flatten_reason, since_ns=now
            )
            log_event(
                logger,
                "PAUSE",
                f"entries paused: FLATTEN {flatten_reason}",
                level=logging.WARNING,
                cause=PauseCause.FLATTEN.value,
                detail=flatten_reason,
            )
            events.append(_Event("PAUSE", {"cause": "FLATTEN", "detail": flatten_reason}, now))
        if newly_halted or newly_flattening:
            # HALT and FLATTEN pause in one transaction, before anything acts on them.
            self._store_state(now, events)
            self._publish(now, flatten_reason=flatten_reason)
        elif flatten_reason is not None:
            # Already halted and flattening: the order actor keeps the book flat; one more
            # FlattenAll (an operator activating again) is harmless and idempotent.
            self.directory.tell(self._order_actor, FlattenAll(reason=flatten_reason, ts_init=now))
        return self.view()

    def reset_kill_switch(self, command: ResetKillSwitch) -> TradingControlView:
        if self._halt is None:
            return self.view()
        now = self.clock.now_ns()
        cleared = KillSwitchRecord(
            active=False,
            reason=self._halt.reason,
            detail=self._halt.detail,
            activated_ns=self._halt.activated_ns,
            reset_ns=now,
            updated_ns=now,
        )
        event = _Event(
            "KILL_SWITCH",
            {
                "reason": cleared.reason,
                "active": False,
                "operator": command.operator,
                "reset_reason": command.reason,
            },
            now,
        )
        # A reset does not re-arm: stored cleared AND disarmed in one transaction, or refused.
        if not self._write_state(now, [event], halt=cleared, armed=False):
            return self.view(refused="STORAGE_UNAVAILABLE: the reset could not be stored")
        self._halt = None
        self._armed = False
        log_event(
            logger,
            "KILL_SWITCH",
            f"kill switch reset by {command.operator}: {command.reason}; engine is disarmed "
            "until armed again",
            operator=command.operator,
            reason=command.reason,
        )
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
        log_event(
            logger,
            "MODE_SWITCH",
            f"Mode switched to {command.mode.value}",
            previous=previous.value,
            mode=command.mode.value,
        )
        self._store_state(
            now, [_Event("MODE_SWITCH", {"from": previous.value, "to": command.mode.value}, now)]
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
            return self.view(refused=f"ARM_REFUSED: arming in {self._mode.value} is gated")
        if not self._loaded:
            return self.view(refused="STORAGE_UNAVAILABLE: stored state not read yet")
        if self._armed:
            return self.view()
        now = self.clock.now_ns()
        if not self._write_state(
            now, [_Event("ARM", {"operator": command.operator}, now)], armed=True
        ):
            return self.view(refused="STORAGE_UNAVAILABLE: arming could not be stored")
        self._armed = True
        log_event(logger, "ARM", f"armed by {command.operator}", operator=command.operator)
        self._publish(now)
        return self.view()

    def disarm_trading(self, command: DisarmTrading) -> TradingControlView:
        if not self._loaded:
            self._disarmed_before_load = True
        if not self._armed:
            return self.view()
        now = self.clock.now_ns()
        self._armed = False
        log_event(logger, "DISARM", f"disarmed: {command.reason}", reason=command.reason)
        self._store_state(now, [_Event("DISARM", {"reason": command.reason}, now)])
        self._publish(now)
        return self.view()

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        if not self._loaded:
            if self._try_load(now):
                self._publish(now)
        elif self._unsaved:
            if self._store_state(now):
                self._publish(now)  # subscribers waiting for "persisted" hear it now
        elif self._pending_events:
            self._store_events([])
        self._repeats.flush(now)
        # Re-publish periodically: a restarted subscriber learns the state within a second.
        if timer.now_ns - self._last_publish_ns >= NANOS_PER_SECOND:
            self._publish(timer.now_ns)

    # ------------------------------------------------------------------ QUERIES
    def view(self, *, refused: str = "") -> TradingControlView:
        return TradingControlView(
            state=self._state_message(self.clock.now_ns()),
            pauses=tuple(self._pauses.values()),
            halt_detail=self._halt.detail if self._halt else "",
            halted_since_ns=self._halt.activated_ns if self._halt else None,
            persisted=self._persisted,
            halt_persisted=self._halt is None or self._persisted,
            loaded=self._loaded,
            refused=refused,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self._mode.value,
            "armed": self._armed,
            "state": self._trading_state().value,
            "halt": msgspec.to_builtins(self._halt) if self._halt else None,
            "halt_persisted": self._halt is None or self._persisted,
            "persisted": self._persisted,
            "loaded": self._loaded,
            "pending_audit_events": len(self._pending_events),
            "pauses": msgspec.to_builtins(list(self._pauses.values())),
        }

    # ------------------------------------------------------------------ CHECKS
    @property
    def _persisted(self) -> bool:
        return self._loaded and not self._unsaved

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
            persisted=self._persisted,
        )

    def _publish(self, now: int, *, flatten_reason: str | None = None) -> None:
        message = self._state_message(now)
        # The gate first: from here on the order actor's last gate enforces this decision,
        # even for orders already queued, before any subscriber or asker hears of it.
        self._gate.decide(message)
        self._last_publish_ns = now
        if flatten_reason is not None:
            # Told before the state so the order actor's flatten carries this reason.
            self.directory.tell(self._order_actor, FlattenAll(reason=flatten_reason, ts_init=now))
        for subscriber in self._subscribers:
            self.directory.tell(subscriber, message)

    # ------------------------------------------------------------------ STORAGE
    def _store_state(self, now: int, events: Sequence[_Event] = ()) -> bool:
        """Store what is in force now (a tightening decision): on failure it stays in force,
        marked unsaved, and the timer retries."""
        if not self._loaded:
            # Writing before the stored state is known could overwrite a stored HALT or pause.
            self._unsaved = True
            self._pending_events.extend(events)
            return False
        if self._write_state(now, events):
            return True
        self._unsaved = True
        self._pending_events.extend(events)
        return False

    def _write_state(
        self,
        now: int,
        events: Sequence[_Event],
        *,
        pauses: dict[PauseCause, PauseCauseState] | None = None,
        halt: KillSwitchRecord | None = None,
        armed: bool | None = None,
    ) -> bool:
        # One transaction: the HALT record, the operator pauses, armed/mode and the audit rows
        # (those that failed earlier first, so the trail keeps its order).
        if not self._loaded:
            return False  # writing before the stored state is known could overwrite it
        pauses = self._pauses if pauses is None else pauses
        halt = self._halt if halt is None else halt
        armed = self._armed if armed is None else armed
        kept = [state for cause, state in pauses.items() if cause in OPERATOR_CAUSES]
        try:
            with UnitOfWork(self._database) as uow:
                if halt is not None:
                    uow.kill_switch.save(halt)
                uow.control.put(_PAUSES_KEY, msgspec.json.encode(kept).decode(), ts_ns=now)
                uow.control.put(
                    _ARMED_KEY,
                    msgspec.json.encode(_ArmedState(armed=armed, mode=self._mode)).decode(),
                    ts_ns=now,
                )
                for event in (*self._pending_events, *events):
                    uow.events.append(
                        event.event, event.payload, ts_ns=event.ts_ns, instance_id=self._instance_id
                    )
        except Exception as error:
            self._storage_failed(error, now)
            return False
        self._pending_events.clear()
        # What was written is what is (or, for a loosening change, is about to be) in force.
        self._unsaved = False
        self._repeats.resolved(_STORAGE_ERROR_KEY, now)
        return True

    def _store_events(self, events: Sequence[_Event]) -> None:
        # Audit rows of decisions that need no storage to hold (condition pauses): best effort,
        # kept and written with the next successful transaction when storage is down.
        if not events and not self._pending_events:
            return
        if not self._loaded:
            self._pending_events.extend(events)
            return
        now = self.clock.now_ns()
        try:
            with UnitOfWork(self._database) as uow:
                for event in (*self._pending_events, *events):
                    uow.events.append(
                        event.event, event.payload, ts_ns=event.ts_ns, instance_id=self._instance_id
                    )
        except Exception as error:
            self._pending_events.extend(events)
            self._storage_failed(error, now)
            return
        self._pending_events.clear()

    def _storage_failed(self, error: Exception, now: int) -> None:
        self._repeats.error(
            _STORAGE_ERROR_KEY,
            f"kill switch could not store its state; decisions stay in force in memory and "
            f"are retried every tick: {error!r}",
            now_ns=now,
            event="KILL_SWITCH",
            level=logging.CRITICAL,
        )
