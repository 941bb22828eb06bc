"""The paper broker: a simulated venue with asynchronous acks and fills, resting stops and
targets, its books in memory and written behind to its own tables (``venue_*``), so it
outlives an engine crash.

``venue`` holds the matching rules (pure), ``matching`` the live books with their trigger index
(pure), ``books`` the tables and their queries, ``broker`` the ``PaperBroker`` that implements
the broker port over them with its own writer thread.
"""

from __future__ import annotations

from adapters.brokers.paper.books import (
    VENUE_TABLES,
    venue_fills,
    venue_meta,
    venue_orders,
    venue_positions,
)
from adapters.brokers.paper.broker import HEARTBEAT_INTERVAL_NS, PaperBroker

__all__ = [
    "HEARTBEAT_INTERVAL_NS",
    "VENUE_TABLES",
    "PaperBroker",
    "venue_fills",
    "venue_meta",
    "venue_orders",
    "venue_positions",
]
