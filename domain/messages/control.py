"""Operator and supervision messages: trading state, leadership, flatten, timers."""

from __future__ import annotations

from typing import Any

import msgspec

from domain.enums import Mode, PauseCause, TradingState

__all__ = [
    "ArmTrading",
    "ChildFailed",
    "DisarmTrading",
    "FlattenAll",
    "InjectFault",
    "LeadershipChanged",
    "PauseEntries",
    "QueryLastPortfolio",
    "ReloadRiskWindows",
    "RepublishState",
    "ResetKillSwitch",
    "ResumeEntries",
    "SetMode",
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


class TripKillSwitch(msgspec.Struct, frozen=True, kw_only=True):
    """Enter the sticky HALTED state. ``reason`` is an UPPER_SNAKE code (metric label)."""

    reason: str
    detail: str = ""
    flatten: bool = False


class FlattenAll(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel every working sibling first, then close every position at market."""

    reason: str
    ts_init: int


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


class SetMode(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode
    confirm: str | None = None


class ArmTrading(msgspec.Struct, frozen=True, kw_only=True):
    operator: str = "operator"


class DisarmTrading(msgspec.Struct, frozen=True, kw_only=True):
    reason: str = "operator"


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
