"""The watchdog's inputs (events from the actors that see the conditions) and its query."""

from __future__ import annotations

import msgspec

from domain.enums import DenialCode, TripwireRule

__all__ = [
    "MarketQualityRejected",
    "OrderAckObserved",
    "QueryTripwires",
    "TripwireConditionChanged",
]


class OrderAckObserved(msgspec.Struct, frozen=True, kw_only=True):
    """An order was acknowledged by the broker ``latency_ms`` after it was sent (the figure the
    order actor observes into ``trader_order_latency_ms``)."""

    latency_ms: float
    ts_event: int


class MarketQualityRejected(msgspec.Struct, frozen=True, kw_only=True):
    """The risk actor refused a plan for the market's quality: ``FREEZE_BAND`` (a price outside
    the band) or ``SPREAD_BLOWOUT``."""

    code: DenialCode
    instrument: str
    detail: str
    ts_event: int


class TripwireConditionChanged(msgspec.Struct, frozen=True, kw_only=True):
    """A tripwire condition that another actor detects (and acts on) began (``active``) or
    ended: the supervisor's leader loss and stale heartbeats, the risk actor's daily loss and
    heat cap. The watchdog turns it into an episode: TRIPWIRE event, audit row, metric,
    ``/status``. Idempotent: the same state told again changes nothing."""

    rule: TripwireRule
    active: bool
    detail: str = ""
    ts_event: int = 0


class QueryTripwires(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the watchdog for its active episodes, one sentence each (``/status`` tripwires)."""
