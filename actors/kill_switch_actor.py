"""KillSwitchActor: owns the trading state — mode, armed, pause causes and the sticky HALT.

Accepts: ``PauseEntries``, ``ResumeEntries``, ``TripKillSwitch``, ``ResetKillSwitch``,
``SetMode``, ``ArmTrading``, ``DisarmTrading``; answers ``QueryTradingState``. The LIVE gates
(``actors.live_gate_state.LiveGateState`` holds their facts): ``RecordConnect``, ``RunPrelive``,
``ConfirmLive``, ``RevokeLive``, ``ResetCircuitBreaker``, ``QueryGates``, ``QueryAudit``, and
the tells ``BrokerErrorObserved`` (order actor) and ``LeadershipChanged`` (leader actor). Every
handler answers from memory and this actor's own storage: it never waits on broker I/O and never
asks another actor (the caller connects to the broker and reports the outcome).
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

LIVE. Arming in LIVE (``ArmTrading(live=True)``, the AITRAPP ``SetMode(LIVE)``) is refused with
the blockers unless ``domain.live_gates.live_blockers(for_arming=True)`` is empty, and is stored
first (loosening). PAPER arming is refused on a LIVE-type account (rehearsal). While armed in
LIVE the shared ``TradingGate`` carries the gate facts and refuses an entry whose time is past a
lapsed gate (the confirmation's expiry, ...); the timer notices it too and says so once (log
LIVE_GATE, audit LIVE_EXPIRED, metric). A failed connect and a circuit breaker trip disarm.
Restarts never come back LIVE-armed: the confirmation is held only in memory, and a stored
``armed`` in LIVE is never restored, neither by a new process nor by a supervisor restart of
this actor (the safer of the two choices the design allows). The circuit breaker and the bound
account are stored in ``control_state``. Every operator action and the engine's own LIVE
decisions are rows of the append-only ``audit_log`` (in the same transaction as the decision;
refusals best effort) and log events; the LIVE token never reaches either.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from actors.base import VigilActor
from actors.live_gate_state import BOUND_ACCOUNT_KEY, BREAKER_KEY, ENGINE, LiveGateState
from actors.trading_gate import LiveGateSnapshot
from adapters.logs import ErrorRepeats, log_event
from adapters.storage.repositories import KillSwitchRecord, UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import Mode, PauseCause, TradingState
from domain.live_gates import MODE_CONFIRM_PHRASE, CircuitBreaker, GateFacts, PreliveResult
from domain.messages import (
    ArmTrading,
    AuditEntry,
    BrokerErrorObserved,
    ConfirmLive,
    ConfirmOutcome,
    DisarmTrading,
    FlattenAll,
    LeadershipChanged,
    LiveGatesReport,
    OperatorRef,
    PauseEntries,
    QueryAudit,
    QueryGates,
    QueryTradingState,
    RecordConnect,
    RepublishState,
    ResetCircuitBreaker,
    ResetKillSwitch,
    ResumeEntries,
    RevokeLive,
    RunPrelive,
    SetMode,
    TimerFired,
    TradingStateChanged,
    TripKillSwitch,
)

if TYPE_CHECKING:
    from actors.trading_gate import TradingGate
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.config import EngineConfig, LiveGateConfig

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
    # Tightening LIVE commands: a revoke, and the broker errors the circuit breaker counts.
    RevokeLive,
    BrokerErrorObserved,
)
_PAUSES_KEY = "operator_pause_causes"
_ARMED_KEY = "armed_state"
_STORAGE_ERROR_KEY = "kill_switch_storage"
_REPEAT_WINDOW_NS = 60 * NANOS_PER_SECOND
_MAX_PENDING_EVENTS = 500
_MAX_AUDIT_QUERY = 1000
# Log headlines of audited actions, worded for the runbook's greps ("LIVE.*blocked",
# "Circuit.*tripped", "LIVE.*confirm", "Kill.*switch").
_HEADLINES: dict[tuple[str, str], str] = {
    ("ARM", "REFUSED"): "Arming refused",
    ("ARM", "ACCEPTED"): "Armed",
    ("DISARM", "ACCEPTED"): "Disarmed",
    ("CONNECT", "ACCEPTED"): "Broker connected",
    ("CONNECT", "FAILED"): "Broker connect failed",
    ("PRELIVE", "ACCEPTED"): "Pre-live check passed",
    ("PRELIVE", "FAILED"): "Pre-live check failed",
    ("LIVE_CONFIRM", "ACCEPTED"): "LIVE confirmation accepted",
    ("LIVE_CONFIRM", "REFUSED"): "LIVE confirmation refused",
    ("LIVE_REVOKE", "ACCEPTED"): "LIVE confirmation revoked",
    ("MODE_SWITCH", "REFUSED"): "Mode switch refused",
    ("CIRCUIT_BREAKER", "TRIPPED"): "Circuit breaker tripped",
    ("CIRCUIT_BREAKER_RESET", "ACCEPTED"): "Circuit breaker reset",
    ("CIRCUIT_BREAKER_RESET", "REFUSED"): "Circuit breaker reset refused",
    ("KILL_SWITCH", "TRIPPED"): "Kill switch activated",
    ("KILL_SWITCH_RESET", "ACCEPTED"): "Kill switch reset",
    ("LIVE_EXPIRED", "EXPIRED"): "LIVE entries stopped",
}


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
        config: EngineConfig | None = None,
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
        # The LIVE gate facts (account, pre-live, confirmation, breaker, leadership, lock).
        self._live = LiveGateState(live_gates, config)
        # Where a revoke leaves the engine: the configured mode unless that is LIVE.
        self._fallback_mode = Mode.PAPER if initial_mode is Mode.LIVE else initial_mode
        # PAPER auto-arming on a LIVE-type account would send entries to it.
        self._auto_arm = (
            initial_mode is Mode.PAPER and auto_arm_paper and not self._live.account_is_live
        )
        # Entries are held back until the stored state has been read (on_start).
        self._armed = False
        self._halt: KillSwitchRecord | None = None
        self._pauses: dict[PauseCause, PauseCauseState] = {}
        self._last_publish_ns = 0
        self._loaded = False
        self._disarmed_before_load = False
        self._unsaved = False
        self._pending_events: deque[_Event] = deque(maxlen=_MAX_PENDING_EVENTS)
        self._pending_audits: deque[AuditEntry] = deque(maxlen=_MAX_PENDING_EVENTS)
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
            RecordConnect: self.record_connect,
            RunPrelive: self.run_prelive,
            ConfirmLive: self.confirm_live,
            RevokeLive: self.revoke_live,
            ResetCircuitBreaker: self.reset_circuit_breaker,
            BrokerErrorObserved: self.on_broker_error,
            LeadershipChanged: self.on_leadership_changed,
            QueryGates: lambda _query: self.gates_report(self.clock.now_ns()),
            QueryAudit: self.query_audit,
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
                stored_breaker = uow.control.get(BREAKER_KEY)
                stored_bound = uow.control.get(BOUND_ACCOUNT_KEY)
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
        self._live.load(stored_breaker, stored_bound)
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
                f"Kill switch still active after restart: {record.reason}",
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
            elif stored.mode is self._mode and self._restorable_arming():
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
        removed = sorted(
            cause
            for cause in causes
            if cause in self._pauses
            and (
                command.only_if_detail is None
                or self._pauses[cause].detail == command.only_if_detail
            )
        )
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
                f"Kill switch activated: {command.reason} {command.detail}".strip(),
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
        flatten_reason = (
            (command.flatten_reason or f"kill_switch:{command.reason}") if command.flatten else None
        )
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
            audits = [
                self._audit(
                    "KILL_SWITCH",
                    "TRIPPED",
                    command.by or ENGINE,
                    now,
                    detail=f"{command.reason} {command.detail}".strip(),
                    log=False,
                )
            ]
            # HALT and FLATTEN pause in one transaction, before anything acts on them.
            self._store_state(now, events, audits)
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
        audit = self._audit(
            "KILL_SWITCH_RESET",
            "ACCEPTED",
            command.by or OperatorRef(who=command.operator),
            now,
            detail=f"{cleared.reason}: {command.reason}; engine stays disarmed",
            log=False,
        )
        # A reset does not re-arm: stored cleared AND disarmed in one transaction, or refused.
        if not self._write_state(now, [event], halt=cleared, armed=False, audits=[audit]):
            return self.view(refused="STORAGE_UNAVAILABLE: the reset could not be stored")
        self._halt = None
        self._armed = False
        log_event(
            logger,
            "KILL_SWITCH",
            f"Kill switch reset by {command.operator}: {command.reason}; engine is disarmed "
            "until armed again",
            operator=command.operator,
            reason=command.reason,
        )
        self._publish(now)
        return self.view()

    def set_mode(self, command: SetMode) -> ModeDecision:
        now = self.clock.now_ns()
        previous = self._mode
        if command.mode is Mode.LIVE:
            # The AITRAPP flip: the phrase, then every LIVE gate; accepted means armed in LIVE.
            phrase_blockers = (
                ()
                if command.confirm == MODE_CONFIRM_PHRASE
                else (f'confirm must be exactly "{MODE_CONFIRM_PHRASE}"',)
            )
            refused, blockers = self._enter_live(
                command.by, now, action="MODE_SWITCH", extra_blockers=phrase_blockers
            )
            return ModeDecision(
                accepted=not refused,
                mode=self._mode,
                previous=previous,
                armed=self._armed,
                blockers=blockers,
                message=refused or "Mode switched to LIVE",
            )
        if previous is Mode.LIVE:
            # Leaving LIVE is a revoke: disarmed, the confirmation gone.
            self._revoke(command.by, now, reason=f"mode switch to {command.mode.value}")
            if command.mode is Mode.PAPER and self._mode is not Mode.PAPER:
                self._mode = Mode.PAPER
                self._store_state(now)
                self._publish(now)
            return ModeDecision(
                accepted=True,
                mode=self._mode,
                previous=previous,
                armed=self._armed,
                message=f"Mode switched to {self._mode.value}",
            )
        blockers = self._mode_blockers(command.mode)
        if blockers:
            audit = self._audit(
                "MODE_SWITCH",
                "REFUSED",
                command.by,
                now,
                detail=f"to {command.mode.value}",
                blockers=blockers,
                log=False,
            )
            log_event(
                logger,
                "MODE_SWITCH",
                f"mode switch to {command.mode.value} refused",
                level=logging.WARNING,
                requested=command.mode.value,
                blockers=list(blockers),
            )
            self._store_events([], [audit])
            return ModeDecision(
                accepted=False,
                mode=self._mode,
                previous=previous,
                armed=self._armed,
                blockers=blockers,
                message=f"{command.mode.value} is blocked",
            )
        self._mode = command.mode
        # Choosing a mode other than LIVE voids a LIVE confirmation given meanwhile: the
        # operator said "not LIVE" after it, so arming LIVE needs a fresh one.
        dropped = self._live.confirmation is not None
        self._live.confirmation = None
        log_event(
            logger,
            "MODE_SWITCH",
            f"Mode switched to {command.mode.value}",
            previous=previous.value,
            mode=command.mode.value,
        )
        audit = self._audit(
            "MODE_SWITCH",
            "ACCEPTED",
            command.by,
            now,
            detail=f"{previous.value} -> {command.mode.value}"
            + ("; LIVE confirmation dropped" if dropped else ""),
            log=False,
        )
        self._store_state(
            now,
            [_Event("MODE_SWITCH", {"from": previous.value, "to": command.mode.value}, now)],
            [audit],
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
        now = self.clock.now_ns()
        if command.live:
            refused, blockers = self._enter_live(command.by, now, action="ARM")
            return self.view(refused=refused, blockers=blockers)
        refusal = ""
        if self._mode is Mode.LIVE:
            refusal = "ARM_REFUSED: the engine is in LIVE: arm with live_mode (every LIVE gate)"
        elif self._mode is not Mode.PAPER:
            refusal = f"ARM_REFUSED: arming in {self._mode.value} is gated"
        elif self._live.account_is_live:
            refusal = (
                "ARM_REFUSED: the broker account is a LIVE-type account"
                f"{' (REHEARSAL)' if self._live.settings.rehearsal else ''}: PAPER arming would "
                "send entries to it; arm with live_mode through every LIVE gate"
            )
        elif not self._loaded:
            refusal = "STORAGE_UNAVAILABLE: stored state not read yet"
        if refusal:
            audit = self._audit("ARM", "REFUSED", command.by, now, detail=refusal)
            self._store_events([], [audit])
            return self.view(refused=refusal)
        if self._armed:
            return self.view()
        audit = self._audit(
            "ARM", "ACCEPTED", command.by, now, detail=f"{self._mode.value}", log=False
        )
        if not self._write_state(
            now, [_Event("ARM", {"operator": command.operator}, now)], armed=True, audits=[audit]
        ):
            return self.view(refused="STORAGE_UNAVAILABLE: arming could not be stored")
        self._armed = True
        log_event(logger, "ARM", f"armed by {command.operator}", operator=command.operator)
        self._publish(now)
        return self.view()

    def disarm_trading(self, command: DisarmTrading) -> TradingControlView:
        if not self._loaded:
            self._disarmed_before_load = True
        now = self.clock.now_ns()
        if not self._armed:
            self._store_events(
                [],
                [self._audit("DISARM", "ACCEPTED", command.by, now, detail="already disarmed")],
            )
            return self.view()
        self._armed = False
        log_event(logger, "DISARM", f"disarmed: {command.reason}", reason=command.reason)
        audit = self._audit("DISARM", "ACCEPTED", command.by, now, detail=command.reason, log=False)
        self._store_state(now, [_Event("DISARM", {"reason": command.reason}, now)], [audit])
        self._publish(now)
        return self.view()

    # ------------------------------------------------------------------ LIVE GATES
    def record_connect(self, command: RecordConnect) -> LiveGatesReport:
        now = self.clock.now_ns()
        audits = self._take_connect(command.account, command.error, command.by, now)
        self._store_state(now, (), audits)
        self._publish(now)
        return self.gates_report(now)

    def run_prelive(self, command: RunPrelive) -> PreliveResult:
        now = self.clock.now_ns()
        audits: list[AuditEntry] = []
        if command.account is not None or command.connectivity_error is not None:
            audits = self._take_connect(
                command.account, command.connectivity_error, command.by, now
            )
        result = self._live.run_prelive(
            self._facts(),
            now_ns=now,
            connectivity_error=command.connectivity_error,
            safety_problems=command.safety_problems,
        )
        failed = tuple(
            f"{check.name}: {check.details}" for check in result.checks if not check.passed
        )
        audits.append(
            self._audit(
                "PRELIVE",
                "ACCEPTED" if result.passed else "FAILED",
                command.by,
                now,
                detail="passed" if result.passed else f"{len(failed)} checks failed",
                blockers=failed,
                level=logging.INFO if result.passed else logging.WARNING,
            )
        )
        self._store_state(now, (), audits)
        self._publish(now)
        return result

    def confirm_live(self, command: ConfirmLive) -> ConfirmOutcome:
        now = self.clock.now_ns()
        previous = self._live.confirmation
        outcome = self._live.confirm(
            phrase=command.phrase,
            token=command.token,
            account_id=command.account_id,
            who=command.by.who,
            now_ns=now,
        )
        if not outcome.accepted:
            # The code and a sentence that never holds the token; the account id given is
            # shown (it is not a secret, and a mismatch is what an operator must see).
            audit = self._audit(
                "LIVE_CONFIRM",
                "REFUSED",
                command.by,
                now,
                detail=f"{outcome.code}: {outcome.message} (account_id={command.account_id!r})",
                level=logging.WARNING,
            )
            self._store_events([], [audit])
            return outcome
        audit = self._audit(
            "LIVE_CONFIRM",
            "ACCEPTED",
            command.by,
            now,
            detail=f"account {command.account_id}, valid {outcome.expires_in_seconds:.0f} s",
            level=logging.WARNING,
        )
        # Loosening: the audit row is stored first, or the confirmation does not count.
        if not self._write_state(now, (), audits=[audit]):
            self._live.confirmation = previous
            return ConfirmOutcome(
                accepted=False,
                code="STORAGE_UNAVAILABLE",
                message="the confirmation could not be recorded in the audit trail",
            )
        self._publish(now)
        return outcome

    def revoke_live(self, command: RevokeLive) -> TradingControlView:
        now = self.clock.now_ns()
        self._revoke(command.by, now, reason=command.reason)
        return self.view()

    def reset_circuit_breaker(self, command: ResetCircuitBreaker) -> TradingControlView:
        now = self.clock.now_ns()
        if not self._live.breaker.tripped:
            return self.view()
        cleared, refusal = self._live.reset_breaker(now)
        if refusal is not None:
            audit = self._audit(
                "CIRCUIT_BREAKER_RESET",
                "REFUSED",
                command.by,
                now,
                detail=refusal,
                level=logging.WARNING,
            )
            self._store_events([], [audit])
            return self.view(refused=f"CIRCUIT_BREAKER_COOLDOWN: {refusal}")
        audit = self._audit(
            "CIRCUIT_BREAKER_RESET",
            "ACCEPTED",
            command.by,
            now,
            detail=f"{command.reason}; engine stays disarmed until armed again",
        )
        # Loosening: stored (closed AND disarmed) first, or refused.
        if not self._write_state(now, (), armed=False, breaker=cleared, audits=[audit]):
            return self.view(refused="STORAGE_UNAVAILABLE: the reset could not be stored")
        self._live.breaker = cleared
        self._armed = False
        self._publish(now)
        return self.view()

    def on_broker_error(self, observed: BrokerErrorObserved) -> None:
        # Counted where entries can reach a LIVE-type account; a PAPER drill's refusals do not
        # trip a breaker that would disarm the paper engine.
        if self._mode is not Mode.LIVE and not self._live.account_is_live:
            return
        now = self.clock.now_ns()
        if not self._live.record_error(observed.error, now):
            return
        detail = self._live.breaker.detail
        audits = [
            self._audit(
                "CIRCUIT_BREAKER", "TRIPPED", ENGINE, now, detail=detail, level=logging.ERROR
            )
        ]
        if self._armed:
            self._armed = False
            audits.append(
                self._audit("DISARM", "ACCEPTED", ENGINE, now, detail="circuit breaker tripped")
            )
        self._store_state(now, (), audits)
        self._publish(now)

    def on_leadership_changed(self, leadership: LeadershipChanged) -> None:
        if leadership.is_leader == self._live.is_leader:
            return
        self._live.is_leader = leadership.is_leader
        self._publish(self.clock.now_ns())

    def query_audit(self, query: QueryAudit) -> tuple[AuditEntry, ...]:
        limit = max(0, min(query.limit, _MAX_AUDIT_QUERY))
        unsaved = tuple(reversed(self._pending_audits))  # not stored yet: newest first
        try:
            with UnitOfWork(self._database) as uow:
                stored = tuple(uow.audit.list_recent(limit))
        except Exception as error:
            logger.warning("audit trail could not be read: %r", error)
            stored = ()
        return (unsaved + stored)[:limit]

    def gates_report(self, now: int) -> LiveGatesReport:
        return self._live.report(self._facts(), mode=self._mode, armed=self._armed, now_ns=now)

    def _take_connect(
        self,
        account: Any,
        error: str | None,
        by: OperatorRef,
        now: int,
    ) -> list[AuditEntry]:
        """A connect's outcome as facts (and audit rows); a failure disarms a LIVE engine."""
        bind = self._live.record_connect(account, error)
        audits: list[AuditEntry] = []
        if account is None or error is not None:
            audits.append(
                self._audit(
                    "CONNECT",
                    "FAILED",
                    by,
                    now,
                    detail=self._live.connect_error,
                    level=logging.WARNING,
                )
            )
            if self._armed and self._mode is Mode.LIVE:
                self._armed = False
                audits.append(
                    self._audit(
                        "DISARM",
                        "ACCEPTED",
                        ENGINE,
                        now,
                        detail=f"broker connect failed: {self._live.connect_error}",
                        level=logging.WARNING,
                    )
                )
            return audits
        assert account is not None
        kind = "LIVE" if account.is_live else "non-LIVE"
        audits.append(
            self._audit(
                "CONNECT", "ACCEPTED", by, now, detail=f"{kind} account {account.account_id}"
            )
        )
        if account.is_live and self._armed and self._mode is not Mode.LIVE:
            # PAPER-armed, and the broker turns out to be a LIVE account: entries would reach it.
            self._armed = False
            audits.append(
                self._audit(
                    "DISARM",
                    "ACCEPTED",
                    ENGINE,
                    now,
                    detail=f"armed in {self._mode.value} but account {account.account_id} is LIVE",
                    level=logging.WARNING,
                )
            )
        if bind is not None:
            # Account lock: this database trades this account from now on (stored with the
            # audit row; a different account later blocks LIVE).
            self._live.bound_account_id = bind
        return audits

    def _enter_live(
        self,
        by: OperatorRef,
        now: int,
        *,
        action: str,
        extra_blockers: tuple[str, ...] = (),
    ) -> tuple[str, tuple[str, ...]]:
        """Arm in LIVE through every gate: ("", ()) when armed, else (refusal, blockers)."""
        blockers = list(extra_blockers)
        if not self._loaded:
            blockers.append("the kill switch has not read its stored state yet")
        blockers += self._live.arming_blockers(self._facts(), now)
        if blockers:
            refusal = f"LIVE_GATES_BLOCKED: {blockers[0]}"
            audit = self._audit(
                action, "REFUSED", by, now, detail="LIVE", blockers=blockers, level=logging.WARNING
            )
            self._store_events([], [audit])
            return refusal, tuple(blockers)
        if self._armed and self._mode is Mode.LIVE:
            return "", ()
        previous = self._mode
        audits = [self._audit(action, "ACCEPTED", by, now, detail="LIVE", log=False)]
        event = _Event("ARM", {"operator": by.who, "mode": "LIVE"}, now)
        # Loosening: stored first (mode LIVE and armed), or refused.
        if not self._write_state(now, [event], armed=True, mode=Mode.LIVE, audits=audits):
            return "STORAGE_UNAVAILABLE: arming in LIVE could not be stored", ()
        self._mode = Mode.LIVE
        self._armed = True
        self._live.announced_stop = None
        if action == "MODE_SWITCH" or previous is not Mode.LIVE:
            log_event(
                logger,
                "MODE_SWITCH",
                "Mode switched to LIVE",
                level=logging.WARNING,
                previous=previous.value,
                mode=Mode.LIVE.value,
                who=by.who,
                address=by.address,
                rehearsal=self._live.settings.rehearsal,
            )
        log_event(
            logger,
            "ARM",
            f"armed in LIVE by {by.who}",
            level=logging.WARNING,
            who=by.who,
            address=by.address,
            rehearsal=self._live.settings.rehearsal,
        )
        self._publish(now)
        return "", ()

    def _revoke(self, by: OperatorRef, now: int, *, reason: str) -> None:
        """Disarm, drop the confirmation, leave LIVE for the fallback mode (tightening)."""
        previous = self._mode
        self._live.confirmation = None
        self._live.announced_stop = None
        self._armed = False
        self._mode = self._fallback_mode if previous is Mode.LIVE else previous
        audit = self._audit(
            "LIVE_REVOKE",
            "ACCEPTED",
            by,
            now,
            detail=f"{reason}; {previous.value} -> {self._mode.value}, disarmed",
            level=logging.WARNING,
        )
        self._store_state(now, [_Event("DISARM", {"reason": f"revoke: {reason}"}, now)], [audit])
        self._publish(now)

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        if not self._loaded:
            if self._try_load(now):
                self._publish(now)
        elif self._unsaved:
            if self._store_state(now):
                self._publish(now)  # subscribers waiting for "persisted" hear it now
        elif self._pending_events or self._pending_audits:
            self._store_events([])
        self._repeats.flush(now)
        self._check_live(now)
        # Re-publish periodically: a restarted subscriber learns the state within a second.
        if timer.now_ns - self._last_publish_ns >= NANOS_PER_SECOND:
            self._publish(timer.now_ns)

    # ------------------------------------------------------------------ QUERIES
    def view(self, *, refused: str = "", blockers: tuple[str, ...] = ()) -> TradingControlView:
        return TradingControlView(
            state=self._state_message(self.clock.now_ns()),
            pauses=tuple(self._pauses.values()),
            halt_detail=self._halt.detail if self._halt else "",
            halted_since_ns=self._halt.activated_ns if self._halt else None,
            persisted=self._persisted,
            halt_persisted=self._halt is None or self._persisted,
            loaded=self._loaded,
            refused=refused,
            blockers=blockers,
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
            "pending_audit_rows": len(self._pending_audits),
            "live_gates": self._live.snapshot(self.clock.now_ns()),
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
        # LIVE is decided by _enter_live (every LIVE gate); DEMO has no adapter.
        if mode is Mode.DEMO:
            return ("no DEMO broker adapter is configured in this build",)
        return ()

    def _restorable_arming(self) -> bool:
        """May a stored ``armed`` come back at start? Never in LIVE (the confirmation is not
        stored, so neither a new process nor a restart of this actor comes back LIVE-armed), and
        never PAPER-armed on a LIVE-type account."""
        if self._mode is Mode.LIVE:
            return False
        return not (self._mode is Mode.PAPER and self._live.account_is_live)

    def _facts(self) -> GateFacts:
        drift = self._pauses.get(PauseCause.RECONCILE_DRIFT)
        return self._live.facts(
            halt_reason=self._halt.reason if self._halt else None,
            drift=((drift.detail or "books and broker disagree"),) if drift else (),
        )

    def _check_live(self, now: int) -> None:
        """Say once that an armed LIVE engine stopped opening positions (the gate itself already
        refuses the entries at their own time), and keep the LIVE metrics current."""
        facts = self._facts()
        change = self._live.note_stop(facts, mode=self._mode, armed=self._armed, now_ns=now)
        if change == "stopped":
            stopped = self._live.announced_stop or ""
            log_event(
                logger,
                "LIVE_GATE",
                f"LIVE entries stopped (exits go on): {stopped}",
                level=logging.WARNING,
                detail=stopped,
                rehearsal=self._live.settings.rehearsal,
            )
            audit = self._audit("LIVE_EXPIRED", "EXPIRED", ENGINE, now, detail=stopped, log=False)
            self._store_events([], [audit])
        elif change == "resumed":
            log_event(logger, "LIVE_GATE", "LIVE entries flow again: every gate holds")
        self._live.update_metrics(
            self._metrics, facts, mode=self._mode, armed=self._armed, now_ns=now
        )

    def _audit(
        self,
        action: str,
        outcome: str,
        by: OperatorRef,
        now: int,
        *,
        detail: str = "",
        blockers: Sequence[str] = (),
        level: int = logging.INFO,
        log: bool = True,
    ) -> AuditEntry:
        """One audit row (stored by the caller with its decision), its metric, and its log
        event unless the caller logs the decision itself."""
        entry = self._live.audit(
            action,
            outcome,
            by,
            now_ns=now,
            mode=self._mode,
            detail=detail,
            blockers=tuple(blockers),
        )
        self._metrics.audit_events_total.labels(action=action, outcome=outcome).inc()
        if log:
            log_event(
                logger,
                action,
                self._headline(action, outcome, by, detail, blockers),
                level=level,
                who=by.who,
                address=by.address,
                outcome=outcome,
                detail=detail,
                blockers=list(blockers),
                rehearsal=self._live.settings.rehearsal,
            )
        return entry

    # ------------------------------------------------------------------ EGRESS
    @staticmethod
    def _headline(
        action: str, outcome: str, by: OperatorRef, detail: str, blockers: Sequence[str]
    ) -> str:
        headline = _HEADLINES.get((action, outcome), f"{action} {outcome}")
        if blockers and outcome == "REFUSED" and detail == "LIVE":
            headline = f"LIVE blocked: {headline.lower()}"
            detail = "; ".join(blockers)
        text = f"{headline} (by {by.who} from {by.address})"
        return f"{text}: {detail}" if detail else text

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
        self._gate.decide(
            message, LiveGateSnapshot(settings=self._live.settings, facts=self._facts())
        )
        self._last_publish_ns = now
        self._check_live(now)
        if flatten_reason is not None:
            # Told before the state so the order actor's flatten carries this reason.
            self.directory.tell(self._order_actor, FlattenAll(reason=flatten_reason, ts_init=now))
        for subscriber in self._subscribers:
            self.directory.tell(subscriber, message)

    # ------------------------------------------------------------------ STORAGE
    def _store_state(
        self, now: int, events: Sequence[_Event] = (), audits: Sequence[AuditEntry] = ()
    ) -> bool:
        """Store what is in force now (a tightening decision): on failure it stays in force,
        marked unsaved, and the timer retries."""
        if not self._loaded:
            # Writing before the stored state is known could overwrite a stored HALT or pause.
            self._unsaved = True
            self._pending_events.extend(events)
            self._pending_audits.extend(audits)
            return False
        if self._write_state(now, events, audits=audits):
            return True
        self._unsaved = True
        self._pending_events.extend(events)
        self._pending_audits.extend(audits)
        return False

    def _write_state(
        self,
        now: int,
        events: Sequence[_Event],
        *,
        pauses: dict[PauseCause, PauseCauseState] | None = None,
        halt: KillSwitchRecord | None = None,
        armed: bool | None = None,
        mode: Mode | None = None,
        breaker: CircuitBreaker | None = None,
        audits: Sequence[AuditEntry] = (),
    ) -> bool:
        # One transaction: the HALT record, the operator pauses, armed/mode and the audit rows
        # (those that failed earlier first, so the trail keeps its order).
        if not self._loaded:
            return False  # writing before the stored state is known could overwrite it
        pauses = self._pauses if pauses is None else pauses
        halt = self._halt if halt is None else halt
        armed = self._armed if armed is None else armed
        mode = self._mode if mode is None else mode
        breaker = self._live.breaker if breaker is None else breaker
        bound = self._live.bound_account_id
        kept = [state for cause, state in pauses.items() if cause in OPERATOR_CAUSES]
        try:
            with UnitOfWork(self._database) as uow:
                if halt is not None:
                    uow.kill_switch.save(halt)
                uow.control.put(_PAUSES_KEY, msgspec.json.encode(kept).decode(), ts_ns=now)
                uow.control.put(
                    _ARMED_KEY,
                    msgspec.json.encode(_ArmedState(armed=armed, mode=mode)).decode(),
                    ts_ns=now,
                )
                uow.control.put(BREAKER_KEY, msgspec.json.encode(breaker).decode(), ts_ns=now)
                if bound is not None:
                    uow.control.put(BOUND_ACCOUNT_KEY, bound, ts_ns=now)
                for event in (*self._pending_events, *events):
                    uow.events.append(
                        event.event, event.payload, ts_ns=event.ts_ns, instance_id=self._instance_id
                    )
                for audit in (*self._pending_audits, *audits):
                    uow.audit.append(audit, instance_id=self._instance_id)
        except Exception as error:
            self._storage_failed(error, now)
            return False
        self._pending_events.clear()
        self._pending_audits.clear()
        # What was written is what is (or, for a loosening change, is about to be) in force.
        self._unsaved = False
        self._repeats.resolved(_STORAGE_ERROR_KEY, now)
        return True

    def _store_events(self, events: Sequence[_Event], audits: Sequence[AuditEntry] = ()) -> None:
        # Audit rows of decisions that need no storage to hold (condition pauses, refusals):
        # best effort, kept and written with the next successful transaction when storage is
        # down.
        if not events and not audits and not self._pending_events and not self._pending_audits:
            return
        if not self._loaded:
            self._pending_events.extend(events)
            self._pending_audits.extend(audits)
            return
        now = self.clock.now_ns()
        try:
            with UnitOfWork(self._database) as uow:
                for event in (*self._pending_events, *events):
                    uow.events.append(
                        event.event, event.payload, ts_ns=event.ts_ns, instance_id=self._instance_id
                    )
                for audit in (*self._pending_audits, *audits):
                    uow.audit.append(audit, instance_id=self._instance_id)
        except Exception as error:
            self._pending_events.extend(events)
            self._pending_audits.extend(audits)
            self._storage_failed(error, now)
            return
        self._pending_events.clear()
        self._pending_audits.clear()

    def _storage_failed(self, error: Exception, now: int) -> None:
        self._repeats.error(
            _STORAGE_ERROR_KEY,
            f"kill switch could not store its state; decisions stay in force in memory and "
            f"are retried every tick: {error!r}",
            now_ns=now,
            event="KILL_SWITCH",
            level=logging.CRITICAL,
        )
