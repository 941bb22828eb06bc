"""Market data messages."""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = ["Bar", "FeedHeartbeat", "Tick", "TicksReceived"]


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """A top-of-book quote. ``ts_event`` is the venue's time, ``ts_init`` when we made it."""

    instrument: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: int = 0
    ask_size: int = 0
    volume: int = 0
    ts_event: int
    ts_init: int

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        return self.ask - self.bid


class TicksReceived(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of raw ticks from one feed source, in arrival order.

    ``validated``: the source already held every tick to ``domain.market_data.tick_rejection``
    and to time order (the CSV reader does, row by row), so the feed actor checks only what the
    source could not know (the instrument is configured here, time does not go backwards
    across batches). Only our own readers set it; a broker's feed never does.
    """

    feed: str
    ticks: tuple[Tick, ...]
    validated: bool = False


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """An OHLC bar built from ticks (last price, falling back to mid)."""

    instrument: str
    interval_s: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    tick_count: int
    ts_open: int  # start of the interval, epoch ns
    ts_close: int  # end of the interval (exclusive), epoch ns


class FeedHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The feed is alive even if no instrument ticked."""

    feed: str
    ts_event: int
