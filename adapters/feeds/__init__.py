"""Market-data sources: the synthetic market, CSV replay, and the pump thread that drives them.

The FeedActor owns a ``FeedPump`` built over ``build_tick_source(config.feed, instruments)``;
the pump hands ``TicksReceived`` batches to the actor's ``tell``.
"""

from __future__ import annotations

from adapters.feeds.csv_replay import (
    CsvTickReplay,
    TickDataError,
    parse_timestamp_ns,
    read_ticks,
)
from adapters.feeds.pump import FeedPump, PolledSource, TickSource, build_tick_source
from adapters.feeds.synthetic import SyntheticMarket

__all__ = [
    "CsvTickReplay",
    "FeedPump",
    "PolledSource",
    "SyntheticMarket",
    "TickDataError",
    "TickSource",
    "build_tick_source",
    "parse_timestamp_ns",
    "read_ticks",
]
