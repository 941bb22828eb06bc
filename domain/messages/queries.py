"""Queries (``Query...``, answered through ``ask``) and actor-plumbing messages."""

from __future__ import annotations

import msgspec

__all__ = [
    "DrainTicks",
    "Ping",
    "Pong",
    "QueryOrders",
    "QueryPortfolio",
    "QueryPositions",
    "QueryReconcileReport",
    "QueryRisk",
    "QuerySchedule",
    "QuerySnapshot",
    "QueryTradingState",
]


class QuerySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Ask any actor for its state dump (secrets redacted)."""


class QueryPositions(msgspec.Struct, frozen=True, kw_only=True):
    pass


class QueryOrders(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 200


class QueryPortfolio(msgspec.Struct, frozen=True, kw_only=True):
    pass


class QueryReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the order actor for its latest reconciliation report (``ReconcileReportView``)."""


class QueryRisk(msgspec.Struct, frozen=True, kw_only=True):
    pass


class QuerySchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the scheduler actor for its view (``ScheduleView``: phase, next action)."""


class QueryTradingState(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness probe from the supervisor; the child answers with ``Pong`` by ``tell``."""

    sequence: int


class Pong(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sequence: int


class DrainTicks(msgspec.Struct, frozen=True, kw_only=True):
    """Wake-up: the conflating mailbox holds the latest tick per instrument."""
