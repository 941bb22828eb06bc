"""Engine storage: the database (SQLite by default, PostgreSQL through ``DATABASE_URL``), the
tables, Alembic migrations, and the repositories with their unit of work.

Import tables from ``adapters.storage.tables``; everything an actor needs is re-exported here.
"""

from __future__ import annotations

from adapters.storage.database import Database, create_database_engine, upgrade_schema
from adapters.storage.repositories import (
    DEFAULT_LEASE_NAME,
    BracketRepository,
    ControlStateRepository,
    DailyReportRepository,
    DuplicateClientOrderId,
    EventRepository,
    EventRow,
    FillRepository,
    KillSwitchRecord,
    KillSwitchRepository,
    LeaseFence,
    LeaseRepository,
    LeaseState,
    OrderNotFound,
    OrderRepository,
    PositionRepository,
    PositionRow,
    StaleEpoch,
    UnitOfWork,
)

__all__ = [
    "DEFAULT_LEASE_NAME",
    "BracketRepository",
    "ControlStateRepository",
    "DailyReportRepository",
    "Database",
    "DuplicateClientOrderId",
    "EventRepository",
    "EventRow",
    "FillRepository",
    "KillSwitchRecord",
    "KillSwitchRepository",
    "LeaseFence",
    "LeaseRepository",
    "LeaseState",
    "OrderNotFound",
    "OrderRepository",
    "PositionRepository",
    "PositionRow",
    "StaleEpoch",
    "UnitOfWork",
    "create_database_engine",
    "upgrade_schema",
]
