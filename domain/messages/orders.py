"""Order-path messages: plans, commands to the order layer, broker reports, outcomes.

Three outcomes stay apart: ``OrderDenied``/``RiskBlocked`` mean we refused before the broker;
``OrderStatusReport(status=REJECTED)`` means the broker definitively refused; a timeout or 5xx
produces no event and the order stays in flight until the broker's order list settles it.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from domain.enums import DenialCode, LegKind, OrderStatus, OrderType, Side

__all__ = [
    "FillReport",
    "FlattenCompleted",
    "OrderDenied",
    "OrderRequest",
    "OrderStatusReport",
    "PortfolioUpdated",
    "PositionReport",
    "PositionView",
    "RiskBlocked",
    "SubmitBracket",
    "TradePlan",
]


class TradePlan(msgspec.Struct, frozen=True, kw_only=True):
    """A strategy's intent: enter, protect with a stop, take profit at a target.

    ``plan_client_id`` is deterministic (``domain.plans.plan_client_id``), so the same signal
    produces the same id and a repeat inside the dedupe window is dropped.
    """

    plan_client_id: str
    strategy: str
    instrument: str
    side: Side
    quantity: int
    entry_type: OrderType  # MARKET or LIMIT
    entry_price: Decimal  # reference (MARKET) or limit price (LIMIT)
    stop_price: Decimal
    target_price: Decimal
    signal_ts: int  # the bar or tick time the signal came from, epoch ns
    ts_init: int


class SubmitBracket(msgspec.Struct, frozen=True, kw_only=True):
    """Risk-approved plan for OrderActor: place the entry, then the OCO stop and target."""

    plan: TradePlan
    quantity: int  # after lot rounding and caps
    ts_init: int


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a broker port is asked to place. ``client_order_id`` travels in the broker's tag."""

    client_order_id: str
    instrument: str
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None  # LIMIT price
    trigger_price: Decimal | None = None  # STOP trigger
    # An ENTRY carries its bracket's stop and target: a broker that keeps them on the
    # position (IG's stopLevel/limitLevel) opens it protected in the same request; the others
    # ignore them and protect with the STOP and TARGET legs the OCO places after the fill.
    attached_stop: Decimal | None = None
    attached_target: Decimal | None = None


class OrderStatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's view of one order (an update or a line of its order list)."""

    client_order_id: str
    broker_order_id: str
    instrument: str
    status: OrderStatus
    quantity: int
    filled_quantity: int
    reason: str = ""
    ts_event: int
    # The broker's current LIMIT price and STOP trigger of the order, when its list says
    # (None: not said). Reconciliation compares them with ours: a stop moved or a level
    # changed at the broker behind our back is drift.
    price: Decimal | None = None
    trigger_price: Decimal | None = None


class FillReport(msgspec.Struct, frozen=True, kw_only=True):
    """One execution. ``trade_id`` is the broker's and makes fills idempotent."""

    trade_id: str
    client_order_id: str
    broker_order_id: str
    instrument: str
    side: Side
    quantity: int
    price: Decimal
    ts_event: int


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's net position in one instrument (signed quantity)."""

    instrument: str
    quantity: int
    average_price: Decimal
    ts_event: int


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """An open position as the engine sees it (for risk, HTTP and metrics)."""

    position_id: str  # the plan_client_id of the bracket that opened it
    strategy: str
    instrument: str
    side: Side
    quantity: int  # open quantity, always > 0
    average_price: Decimal
    stop_price: Decimal | None
    target_price: Decimal | None
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    risk_amount: Decimal  # quantity * |average - stop|: what the position can still lose


class PortfolioUpdated(msgspec.Struct, frozen=True, kw_only=True):
    """OrderActor's portfolio after a change: what the risk layer and metrics need."""

    positions: tuple[PositionView, ...]
    working_entry_count: int  # entries sent but not yet filled or dead
    # (strategy, instrument) of each working entry: one bracket per strategy+instrument
    working_entries: tuple[tuple[str, str], ...] = ()
    # plan ids of every bracket the order layer holds (lets risk retire pending approvals)
    working_plan_ids: tuple[str, ...] = ()
    # (instrument, notional) of the unfilled part of every working entry: exposure that can
    # appear at any moment
    working_entry_notional: tuple[tuple[str, Decimal], ...] = ()
    realized_pnl_today: Decimal
    unrealized_pnl: Decimal
    heat: Decimal  # risk to the stop of open positions plus working entries
    ts_event: int


class RiskBlocked(msgspec.Struct, frozen=True, kw_only=True):
    """The risk layer refused a plan. ``code`` is the metric label, ``detail`` has figures."""

    plan_client_id: str
    strategy: str
    instrument: str
    code: DenialCode
    detail: str
    ts_event: int


class OrderDenied(msgspec.Struct, frozen=True, kw_only=True):
    """OrderActor's last gate refused an order before the broker call."""

    client_order_id: str
    leg: LegKind
    code: DenialCode
    detail: str
    ts_event: int


class FlattenCompleted(msgspec.Struct, frozen=True, kw_only=True):
    """Result of a flatten: what was closed and cancelled, and whether anything is left."""

    reason: str
    positions_closed: int
    orders_cancelled: int
    remaining_positions: int
    remaining_working_orders: int
    duration_ms: float
    ts_event: int


class OrderStreamHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's order/fill stream is alive even when nothing traded."""

    ts_event: int


class BrokerSessionChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The broker session became unusable (``valid=False``: the broker refuses our credentials,
    e.g. Kite's access token expired at 06:00) or usable again (a new token, connected).
    ``detail`` says what happened and what the operator must do; never a secret."""

    valid: bool
    detail: str
    ts_event: int


__all__ += ["BrokerSessionChanged", "OrderStreamHeartbeat"]
