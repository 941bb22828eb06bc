"""Closed vocabularies shared by messages, rules, storage, metrics and the HTTP API."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DenialCode",
    "LegKind",
    "Mode",
    "OrderStatus",
    "OrderType",
    "PauseCause",
    "Side",
    "TradingState",
    "TripwireRule",
]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"  # stop-market: triggers when price crosses trigger_price


class LegKind(StrEnum):
    ENTRY = "ENTRY"
    STOP = "STOP"
    TARGET = "TARGET"
    EXIT = "EXIT"  # a flatten or manual close of a position


class OrderStatus(StrEnum):
    PENDING_SUBMIT = "PENDING_SUBMIT"  # written ahead, broker not called yet
    SUBMITTED = "SUBMITTED"  # broker called, no ack yet (or the call timed out: unknown)
    ACCEPTED = "ACCEPTED"  # working at the broker
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"  # definitive broker refusal

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_working(self) -> bool:
        return not self.is_terminal


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})


class Mode(StrEnum):
    PAPER = "PAPER"
    DEMO = "DEMO"
    LIVE = "LIVE"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # entries paused; exits and protective orders go on
    HALTED = "HALTED"  # kill switch: nothing new but flatten and cancels


class PauseCause(StrEnum):
    OPERATOR = "OPERATOR"
    FLATTEN = "FLATTEN"
    LEADER_LOST = "LEADER_LOST"
    MARKETDATA_STALE = "MARKETDATA_STALE"
    ORDER_STREAM_STALE = "ORDER_STREAM_STALE"
    ACTOR_UNRESPONSIVE = "ACTOR_UNRESPONSIVE"
    BACKPRESSURE = "BACKPRESSURE"
    RECONCILE_DRIFT = "RECONCILE_DRIFT"  # our books and the broker's disagree unexplained
    # The trading-day schedule (actors/scheduler_actor.py): before the session opens, after the
    # 15:20 tighten, on weekends and holidays. Exits go on.
    OUTSIDE_SESSION = "OUTSIDE_SESSION"
    # The watchdog's own tripwires (actors/watchdog_actor.py), asserted and cleared by it.
    TRIPWIRE_LATENCY = "TRIPWIRE_LATENCY"  # order-ack latency p95 above its limit
    TRIPWIRE_MARKET_QUALITY = "TRIPWIRE_MARKET_QUALITY"  # spread blowouts / band rejections
    RATE_LIMIT_BACKLOG = "RATE_LIMIT_BACKLOG"  # the broker request queue keeps growing
    # The broker refused our credentials (Kite's expired access token): no request can succeed
    # until an operator logs in again; asserted and cleared by the order actor.
    BROKER_AUTH = "BROKER_AUTH"


class DenialCode(StrEnum):
    """Why we refused something before the broker saw it. Metric label and HTTP error code."""

    KILL_SWITCH_ACTIVE = "KILL_SWITCH_ACTIVE"
    TRADING_PAUSED = "TRADING_PAUSED"
    NOT_ARMED = "NOT_ARMED"
    NOT_LEADER = "NOT_LEADER"
    STALE_EPOCH = "STALE_EPOCH"
    DUPLICATE_PLAN = "DUPLICATE_PLAN"
    INVALID_PLAN = "INVALID_PLAN"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    NO_QUOTE = "NO_QUOTE"
    QUANTITY_ZERO_AFTER_ROUNDING = "QUANTITY_ZERO_AFTER_ROUNDING"
    MAX_ORDER_SIZE = "MAX_ORDER_SIZE"
    FREEZE_QUANTITY = "FREEZE_QUANTITY"
    PER_TRADE_RISK = "PER_TRADE_RISK"
    HEAT_CAP = "HEAT_CAP"
    MAX_CONCURRENT_POSITIONS = "MAX_CONCURRENT_POSITIONS"
    PER_SYMBOL_EXPOSURE = "PER_SYMBOL_EXPOSURE"
    TRADES_PER_HOUR = "TRADES_PER_HOUR"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    FREEZE_BAND = "FREEZE_BAND"
    SPREAD_BLOWOUT = "SPREAD_BLOWOUT"
    POSITION_OPEN = "POSITION_OPEN"
    BACKPRESSURE = "BACKPRESSURE"
    # LIVE only: the quantity after sizing is above LIVE_MAX_ORDER_SIZE, or that limit is unset.
    LIVE_MAX_ORDER_SIZE = "LIVE_MAX_ORDER_SIZE"
    # In LIVE: a LIVE gate lapsed while armed (confirmation expired, broker gone, breaker...).
    LIVE_GATE = "LIVE_GATE"
    # The broker refused our credentials before acting (an expired access token).
    BROKER_AUTH = "BROKER_AUTH"


class TripwireRule(StrEnum):
    """The runbook's tripwire rows (label of ``trader_tripwire_total{rule}``, the audit rows
    and ``/status``). The watchdog judges some itself and is told about the others by the
    actor that already detects them (the supervisor, the risk actor)."""

    ORDER_ACK_LATENCY = "order_ack_latency"
    LEADER_LOST = "leader_lost"
    RATE_LIMIT_BACKLOG = "rate_limit_backlog"
    MARKET_QUALITY = "market_quality"
    RISK_CAP = "risk_cap"
    MARKETDATA_STALE = "marketdata_stale"
    ORDER_STREAM_STALE = "order_stream_stale"
