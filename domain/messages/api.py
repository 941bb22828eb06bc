"""Request and response bodies of the admin HTTP API.

These are the shapes ``adapters.http`` decodes and encodes and the OpenAPI document describes.
Money is ``Decimal`` (a JSON string on the wire), quantities are ``int``, times are epoch
nanoseconds (``*_ns``, ``ts_*``) and ages are float seconds (``*_s``).

Request structs reject unknown fields: a typo in a mutating command (``{"mdoe": "LIVE"}``) is a
400, not a silently ignored key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import msgspec

from domain.enums import LegKind, Mode, OrderStatus, OrderType, PauseCause, Side, TradingState
from domain.messages.orders import PositionView, RiskBlocked

__all__ = [
    "ActorView",
    "ArmRequest",
    "ArmView",
    "AuditEntryView",
    "AuditView",
    "CircuitBreakerResetRequest",
    "ConnectView",
    "DisarmRequest",
    "ErrorBody",
    "FlattenRequest",
    "GatesView",
    "HealthView",
    "InstrumentReconcileView",
    "KillSwitchActivateRequest",
    "KillSwitchResetRequest",
    "KillSwitchView",
    "LiveConfirmRequest",
    "LiveConfirmView",
    "ModeRequest",
    "ModeResult",
    "OrderView",
    "OrdersView",
    "PauseCauseView",
    "PauseRequest",
    "PositionsView",
    "PreliveCheckView",
    "PreliveView",
    "ReadyView",
    "ReconcileReportView",
    "RevokeRequest",
    "RiskView",
    "StatusView",
]

# A reason travels to logs, the audit trail and metric labels: keep it short and non-empty.
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


# ---------------------------------------------------------------------------------------------
# REQUESTS
# ---------------------------------------------------------------------------------------------


class ModeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Switch mode. ``confirm`` is the confirmation phrase the LIVE gate asks for."""

    mode: Mode
    confirm: str | None = None


class PauseRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pause entries (exits and protective orders go on)."""

    reason: Reason = "operator"


class FlattenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cancel every working sibling, then close every position at market."""

    reason: Reason = "operator"


class KillSwitchActivateRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Trip the kill switch (sticky HALT). Whether positions are closed too is the engine's
    ``close_on_kill_switch`` setting, not the caller's choice."""

    reason: Reason = "manual"


class KillSwitchResetRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Clear the HALT. Audited with ``operator`` and ``reason``; leaves the engine disarmed."""

    reason: Reason = "manual"
    operator: Reason = "operator"


class ArmRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arm order flow (the SOLAT runbook's body). ``live_mode`` asks for LIVE arming, which
    goes through every LIVE gate (409 ``LIVE_GATES_BLOCKED`` with the blockers otherwise);
    ``confirm`` must be true."""

    confirm: bool = True
    live_mode: bool = False


class DisarmRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Stop order flow for entries until armed again (persists across restarts)."""

    reason: Reason = "operator"


# The SOLAT confirmation's fields: long enough for any real token, short enough to bound a log.
Secret = Annotated[str, msgspec.Meta(max_length=512)]
Phrase = Annotated[str, msgspec.Meta(max_length=100)]
AccountId = Annotated[str, msgspec.Meta(max_length=100)]


class LiveConfirmRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The SOLAT confirmation: the phrase "ENABLE LIVE TRADING", ``LIVE_ENABLE_TOKEN`` and
    ``LIVE_ACCOUNT_ID``. The token is compared in constant time and never echoed or logged."""

    phrase: Phrase
    token: Secret
    account_id: AccountId


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Revoke the LIVE confirmation (disarms and leaves LIVE). The body is optional."""

    reason: Reason = "operator"


class CircuitBreakerResetRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Close a tripped circuit breaker after its cooldown; the engine stays disarmed."""

    reason: Reason = "operator"


# ---------------------------------------------------------------------------------------------
# RESPONSES
# ---------------------------------------------------------------------------------------------


class ConnectView(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /execution/connect`` (the SOLAT runbook's fields first). ``balance`` is a JSON
    number for display, as the runbook shows it; ``mode`` is the engine's mode now."""

    ok: bool
    account_id: str
    balance: float
    mode: Mode
    live_account: bool
    rehearsal: bool
    message: str
    # On failure (``ok`` false, served as 502): ``BROKER_UNAVAILABLE``. Added by the HTTP side.
    error: str | None = None


class GatesView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /execution/gates``: may LIVE be armed now, and if not, why (plain sentences)."""

    allowed: bool
    mode: Mode
    blockers: list[str]
    warnings: list[str]
    armed: bool
    rehearsal: bool
    confirmation_expires_in_s: float | None
    prelive_age_s: float | None
    circuit_breaker: str  # OK | TRIPPED
    live_entries_stopped: str | None = None


class PreliveCheckView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    passed: bool
    details: str


class PreliveView(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /execution/prelive/run``: the seven checks, in the runbook's order."""

    passed: bool
    checks: list[PreliveCheckView]
    rehearsal: bool


class LiveConfirmView(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /execution/live/confirm`` accepted (a refusal is a 4xx ``ErrorBody``)."""

    ok: bool
    account_id: str
    expires_in_seconds: float
    rehearsal: bool
    message: str


class AuditEntryView(msgspec.Struct, frozen=True, kw_only=True):
    ts_ns: int
    at: str  # ISO 8601 UTC
    who: str
    address: str
    action: str
    outcome: str
    detail: str
    blockers: list[str]
    mode: str
    rehearsal: bool


class AuditView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /execution/audit?limit=N``: the newest audit rows, newest first."""

    entries: list[AuditEntryView]
    count: int


class ModeResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a mode switch: the mode now in force and the one before it."""

    status: Mode
    previous: Mode
    armed: bool
    message: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every 4xx/5xx body. ``error`` is an UPPER_SNAKE code; ``blockers`` lists failed gates."""

    error: str
    message: str
    blockers: list[str] | None = None


class PauseCauseView(msgspec.Struct, frozen=True, kw_only=True):
    """One reason entries are paused, and since when."""

    cause: PauseCause
    detail: str
    since_ns: int


class ActorView(msgspec.Struct, frozen=True, kw_only=True):
    """A supervised actor's liveness and restart count."""

    name: str
    alive: bool
    restarts: int
    last_error: str | None


class StatusView(msgspec.Struct, frozen=True, kw_only=True):
    """The three state dimensions plus the figures an operator checks first."""

    instance_id: str
    mode: Mode
    armed: bool
    trading_state: TradingState
    pause_causes: list[PauseCauseView]
    halt_reason: str | None
    is_leader: bool
    epoch: int
    config_sha: str
    marketdata_age_s: dict[str, float]  # feed name -> seconds since its last tick or heartbeat
    order_stream_age_s: float | None  # None until the order stream has been heard from
    positions_open: int
    working_orders: int
    realized_pnl_today: Decimal
    unrealized_pnl: Decimal
    heat_rupees: Decimal
    uptime_s: float
    actors: list[ActorView]
    ts_event: int
    halt_detail: str | None = None
    # False while the HALT is in force in memory but could not be stored yet (storage down):
    # it is retried every timer tick; a crash before it is stored would lose it.
    halt_persisted: bool = True
    # False while any kill-switch decision (HALT, operator pause, disarm) is not yet stored.
    control_persisted: bool = True
    # Parts of this view answered from the last known figures because their owner could not
    # answer now (e.g. "order: ACTOR_UNAVAILABLE ...; figures as of 12.0s ago").
    degraded: list[str] = msgspec.field(default_factory=list)
    # REHEARSAL: the paper venue presents a LIVE account; nothing reaches a real broker.
    rehearsal: bool = False
    # Armed in LIVE but entries stopped by a gate that lapsed (confirmation expired, broker
    # gone, ...): the sentence why. Exits go on.
    live_entries_stopped: str | None = None
    live_confirmation_expires_in_s: float | None = None
    circuit_breaker: str = "OK"  # OK | TRIPPED
    circuit_breaker_detail: str | None = None
    # The trading-day schedule's next action, e.g. "HARD_FLAT at 2026-01-02T15:25:00+05:30";
    # None when the scheduler is off (scheduler.enabled false) or not answering.
    next_scheduled_action: str | None = None
    # What the schedule needs an operator for: the exchange holiday list running out
    # (HOLIDAYS_UNKNOWN...), positions carried past the hard flat (CARRIED_OVER: ...).
    schedule_warnings: list[str] = msgspec.field(default_factory=list)
    # The watchdog's active tripwire episodes, one sentence each (rule, figures, action).
    tripwires: list[str] = msgspec.field(default_factory=list)


class KillSwitchView(msgspec.Struct, frozen=True, kw_only=True):
    """``/execution/kill-switch``: the sticky HALT and what it takes to clear it.

    ``reason`` is the UPPER_SNAKE code (``MANUAL`` for an operator, ``DAILY_LOSS_LIMIT``, ...);
    ``detail`` the figures or the operator's text. ``flatten_pause`` is True while the FLATTEN
    pause keeps the book flat (cleared by ``POST /resume``, not by a reset)."""

    active: bool
    reason: str | None
    detail: str | None
    activated_ns: int | None
    persisted: bool
    armed: bool
    trading_state: TradingState
    flatten_pause: bool
    message: str


class ArmView(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of ``/execution/arm`` and ``/execution/disarm`` (the SOLAT runbook's shape)."""

    ok: bool
    armed: bool
    mode: Mode
    live: bool
    message: str


class HealthView(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness: the process answers."""

    status: str
    uptime_s: float


class ReadyView(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness: ``ready`` only when ``blockers`` is empty."""

    ready: bool
    blockers: list[str]


class PositionsView(msgspec.Struct, frozen=True, kw_only=True):
    """Open positions."""

    positions: list[PositionView]
    count: int


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    """One order as the engine tracks it."""

    client_order_id: str
    plan_client_id: str
    strategy: str
    instrument: str
    leg: LegKind
    side: Side
    order_type: OrderType
    quantity: int
    filled_quantity: int
    price: Decimal | None
    trigger_price: Decimal | None
    average_fill_price: Decimal | None
    status: OrderStatus
    epoch: int
    reason: str
    ts_created: int
    ts_updated: int


class OrdersView(msgspec.Struct, frozen=True, kw_only=True):
    """The most recent orders, newest first."""

    orders: list[OrderView]
    count: int


class RiskView(msgspec.Struct, frozen=True, kw_only=True):
    """Risk limits in force, current usage, and why recent plans were blocked.

    ``limits`` maps each limit's config name to its value as text; ``blocks`` counts blocks
    per denial code since start.
    """

    limits: dict[str, str]
    heat_rupees: Decimal
    heat_cap_rupees: Decimal
    daily_pnl: Decimal
    daily_loss_limit_rupees: Decimal
    open_positions: int
    trades_last_hour: int
    blocks: dict[str, int]
    last_blocks: list[RiskBlocked]


class InstrumentReconcileView(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's net position in our books and at the broker (signed quantities)."""

    instrument: str
    local_quantity: int
    broker_quantity: int
    difference: int


class ReconcileReportView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /execution/reconcile/report``: the latest comparison of our books with the
    broker's orders, fills and positions, and what it did about the differences.

    ``drift`` holds plain sentences for differences no action could explain; any drift halts
    entries with cause ``RECONCILE_DRIFT``. ``last_run_ns`` is None before the first run.
    """

    clean: bool
    trigger: str  # start | leadership | in_flight | open_orders | positions | manual
    last_run_ns: int | None
    duration_ms: float | None
    runs: int
    instruments: list[InstrumentReconcileView]
    unknown_broker_orders: list[str]  # client_order_ids the broker has and we do not
    missing_at_broker: list[str]  # our working orders the broker does not know
    actions: list[str]  # what the last run applied, one sentence each
    drift: list[str]
    error: str | None = None  # the broker could not be asked; the previous facts stand
