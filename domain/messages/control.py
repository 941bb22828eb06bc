"""Operator and supervision messages: trading state, leadership, flatten, timers."""

from __future__ import annotations

from typing import Any

import msgspec

from domain.enums import Mode, PauseCause, TradingState
from domain.live_gates import AccountFacts, CircuitBreaker, PreliveResult

__all__ = [
    "ArmTrading",
    "AuditEntry",
    "BrokerErrorObserved",
    "ChildFailed",
    "ConfirmLive",
    "ConfirmOutcome",
    "DisarmTrading",
    "FlattenAll",
    "InjectFault",
    "LeadershipChanged",
    "LiveGatesReport",
    "OperatorRef",
    "PauseEntries",
    "QueryAudit",
    "QueryGates",
    "QueryLastPortfolio",
    "RecordConnect",
    "ReloadRiskWindows",
    "RepublishState",
    "ResetCircuitBreaker",
    "ResetKillSwitch",
    "ResumeEntries",
    "RevokeLive",
    "RunPrelive",
    "SetMode",
    "TightenStops",
    "TimerFired",
    "TradingStateChanged",
    "TripKillSwitch",
]


class TimerFired(msgspec.Struct, frozen=True, kw_only=True):
    """Periodic wake-up carrying the clock's time (drives leases, heartbeats, paper latency)."""

    now_ns: int


class PauseEntries(msgspec.Struct, frozen=True, kw_only=True):
    """Pause entries for ``cause``. A FLATTEN pause also means "keep the book flat": the kill
    switch stores it, then tells the order actor ``FlattenAll`` with ``detail`` as the reason.

    ``routine`` marks an expected, momentary pause (waiting for the leader lease at start): it
    is logged at INFO and not audited, so a normal start does not look like an incident."""

    cause: PauseCause
    detail: str = ""
    routine: bool = False


class ResumeEntries(msgspec.Struct, frozen=True, kw_only=True):
    cause: PauseCause
    routine: bool = False
    # Clear the cause only if its stored detail is this one, in the kill switch's own turn (the
    # scheduler clears its own ``eod_hard_flat`` flatten at the open, never an operator's flatten
    # set over it between a look and a resume). None: whatever its detail.
    only_if_detail: str | None = None


class TripKillSwitch(msgspec.Struct, frozen=True, kw_only=True):
    """Enter the sticky HALTED state. ``reason`` is an UPPER_SNAKE code (metric label)."""

    reason: str
    detail: str = ""
    flatten: bool = False
    # Who asked (the audit trail); None: the engine itself.
    by: OperatorRef | None = None
    # With ``flatten``: the flatten's reason (the FLATTEN pause's detail); None:
    # ``kill_switch:<reason>``. The risk caps flatten with the runbook's ``risk_cap``.
    flatten_reason: str | None = None


class FlattenAll(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel every working sibling first, then close every position at market."""

    reason: str
    ts_init: int


class TightenStops(msgspec.Struct, frozen=True, kw_only=True):
    """Move every open position's stop closer (the schedule's 15:20 tighten): to the entry's
    average fill price (``mode="break_even"``) or ``trail_ticks`` behind the current price
    (``mode="trail"``). A stop only ever moves toward the price, and never to where it would
    trigger at once; one that cannot be tightened stays where it is."""

    reason: str
    mode: str = "break_even"
    trail_ticks: int = 20
    ts_init: int = 0


class TradingStateChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The three state dimensions, published on every change."""

    mode: Mode
    armed: bool
    state: TradingState
    pause_causes: tuple[PauseCause, ...]
    halt_reason: str | None
    ts_event: int
    # False while a decision of the kill switch (HALT, operator pause, disarm) is in force in
    # memory but not yet stored: a sender waiting for its trip to be safe waits for True.
    persisted: bool = True

    @property
    def entries_allowed(self) -> bool:
        return self.armed and self.state is TradingState.ACTIVE

    @property
    def exits_allowed(self) -> bool:
        return True


class LeadershipChanged(msgspec.Struct, frozen=True, kw_only=True):
    """Leader lease outcome. Orders may be sent only while ``is_leader`` under this epoch.

    ``holder`` is this process's incarnation (instance_id plus a random suffix): the lease is
    held by a process, not by a name, so two processes sharing an ``instance_id`` cannot both
    lead. ``current_holder`` is whoever holds the lease now (ours or another's)."""

    instance_id: str
    is_leader: bool
    epoch: int
    lease_expires_ns: int
    ts_event: int
    holder: str = ""
    current_holder: str = ""


class ChildFailed(msgspec.Struct, frozen=True, kw_only=True):
    """A supervised child crashed in a ``tell`` handler."""

    name: str
    error: str
    ts_event: int
    incarnation: str = ""  # the crashed actor's URN: a report about an older one is stale
    snapshot: dict[str, Any] = msgspec.field(default_factory=dict)


class ResetKillSwitch(msgspec.Struct, frozen=True, kw_only=True):
    """Operator clears a HALT. The only way out of HALTED. It does not re-arm: after a reset
    the engine is disarmed until an explicit ``ArmTrading``."""

    operator: str = "operator"
    reason: str = "manual"
    # Who asked (the audit trail); None: ``operator`` as the name, address unknown.
    by: OperatorRef | None = None


class OperatorRef(msgspec.Struct, frozen=True, kw_only=True):
    """Who asked, for the audit trail: the admin token's name (``local`` when the API has no
    token) and the client's address (``in-process`` for the engine itself)."""

    who: str = "local"
    address: str = "in-process"


class SetMode(msgspec.Struct, frozen=True, kw_only=True):
    """The AITRAPP flip. ``LIVE`` needs ``confirm`` == ``MODE_CONFIRM_PHRASE`` and every LIVE
    gate (domain.live_gates), and arms; leaving LIVE is a revoke (disarm, confirmation gone)."""

    mode: Mode
    confirm: str | None = None
    by: OperatorRef = OperatorRef()


class ArmTrading(msgspec.Struct, frozen=True, kw_only=True):
    """Arm. ``live``: arm in LIVE, through every LIVE gate (the SOLAT ``live_mode``)."""

    operator: str = "operator"
    live: bool = False
    by: OperatorRef = OperatorRef()


class DisarmTrading(msgspec.Struct, frozen=True, kw_only=True):
    reason: str = "operator"
    by: OperatorRef = OperatorRef()


class RevokeLive(msgspec.Struct, frozen=True, kw_only=True):
    """Withdraw the LIVE confirmation: disarm, leave LIVE for the configured non-LIVE mode."""

    reason: str = "operator"
    by: OperatorRef = OperatorRef()


class RecordConnect(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a broker connect made by the caller (the admin API's thread; no actor
    waits on broker I/O): ``account`` when it succeeded, ``error`` when it failed. A failure
    disarms a LIVE engine."""

    account: AccountFacts | None = None
    error: str | None = None
    by: OperatorRef = OperatorRef()


class RunPrelive(msgspec.Struct, frozen=True, kw_only=True):
    """Run the seven pre-live checks on the kill switch's facts plus a fresh connect made by
    the caller (``account``/``connectivity_error``) and the caller's view of other safety
    problems (stale heartbeats, ...). Answered with the ``PreliveResult``, which is kept."""

    account: AccountFacts | None = None
    connectivity_error: str | None = None
    safety_problems: tuple[str, ...] = ()
    by: OperatorRef = OperatorRef()


class ConfirmLive(msgspec.Struct, frozen=True, kw_only=True):
    """The SOLAT confirmation. ``token`` is compared in constant time and never stored,
    logged or audited."""

    phrase: str
    token: str
    account_id: str
    by: OperatorRef = OperatorRef()


class ConfirmOutcome(msgspec.Struct, frozen=True, kw_only=True):
    accepted: bool
    code: str = ""  # on refusal: BAD_PHRASE | BAD_TOKEN | BAD_ACCOUNT | NOT_CONFIGURED
    message: str = ""
    expires_in_seconds: float = 0.0


class ResetCircuitBreaker(msgspec.Struct, frozen=True, kw_only=True):
    """Close a tripped circuit breaker (refused before its cooldown). Leaves the engine
    disarmed."""

    reason: str = "operator"
    by: OperatorRef = OperatorRef()


class BrokerErrorObserved(msgspec.Struct, frozen=True, kw_only=True):
    """The order actor saw a broker error or a rejection: the circuit breaker counts it."""

    error: str
    ts_event: int


class QueryGates(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the kill switch for the LIVE gates now (``LiveGatesView``)."""


class QueryAudit(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the kill switch for the newest ``limit`` audit rows, newest first."""

    limit: int = 100


class InjectFault(msgspec.Struct, frozen=True, kw_only=True):
    """Chaos drill: the receiving actor raises in its handler, as a real bug would.

    Only reachable in-process (tests, operator drills from a Python shell); no HTTP route.
    """

    detail: str = "injected fault"


class ReloadRiskWindows(msgspec.Struct, frozen=True, kw_only=True):
    """Rebuild the rolling risk windows (trades per hour, plan dedupe) from storage: this
    process just took over from a leader whose entries its windows never saw."""

    epoch: int = 0


class RepublishState(msgspec.Struct, frozen=True, kw_only=True):
    """Send your current state to your subscribers again (a subscriber was restarted)."""


class QueryLastPortfolio(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the risk actor for the last ``PortfolioUpdated`` it received from the order actor:
    what ``/status`` shows when the order actor itself cannot answer (``ts_event`` 0: none)."""


class LiveGatesReport(msgspec.Struct, frozen=True, kw_only=True):
    """The kill switch's answer to ``QueryGates`` (and what it keeps for status): the LIVE
    gates evaluated now for arming, and the facts behind them.

    ``live_entries_stopped``: armed in LIVE but entries stopped by a gate that lapsed while
    armed (the confirmation expired, the broker went away, ...), the sentence why; exits go on.
    """

    mode: Mode
    armed: bool
    rehearsal: bool
    allowed: bool
    blockers: tuple[str, ...]
    warnings: tuple[str, ...]
    account: AccountFacts | None
    prelive: PreliveResult | None
    confirmation_expires_ns: int | None
    breaker: CircuitBreaker
    live_entries_stopped: str | None = None
    ts_event: int = 0


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the append-only audit trail. Never holds a token.

    ``action``: CONNECT, PRELIVE, LIVE_CONFIRM, ARM, DISARM, LIVE_REVOKE, MODE_SWITCH,
    KILL_SWITCH, KILL_SWITCH_RESET, CIRCUIT_BREAKER, CIRCUIT_BREAKER_RESET, LIVE_EXPIRED.
    ``outcome``: ACCEPTED, REFUSED or FAILED (or TRIPPED/EXPIRED for the engine's own)."""

    ts_ns: int
    who: str
    address: str
    action: str
    outcome: str
    detail: str = ""
    blockers: tuple[str, ...] = ()
    mode: str = ""
    rehearsal: bool = False
