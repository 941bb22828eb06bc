"""The engine's tables (SQLAlchemy Core) on the shared ``metadata``.

Owns: orders, fills, brackets, positions, events, leader_lease, kill_switch, control_state,
daily_reports, and the order actor's write-ahead ``order_journal`` (migration 0003). The
paper venue's books live in ``adapters.brokers.paper.books`` on the same
metadata. The domain never imports this module; ``adapters.storage.repositories`` maps rows to
domain types. Schema changes go through an Alembic migration in ``alembic/versions``.

Conventions: ``*_ns`` columns are epoch nanoseconds (``BigInteger``); money and prices are
``ExactDecimal`` (``NUMERIC(20, 6)`` on PostgreSQL, canonical text on SQLite); quantities are
integers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from adapters.storage.metadata import metadata

__all__ = [
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "ExactDecimal",
    "audit_log",
    "brackets",
    "control_state",
    "daily_reports",
    "day_figure_counts",
    "day_heat",
    "engine_starts",
    "engine_tables",
    "events",
    "fills",
    "kill_switch",
    "leader_lease",
    "metadata",
    "order_journal",
    "orders",
    "positions",
]

DECIMAL_PRECISION = 20
DECIMAL_SCALE = 6
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` that round-trips exactly on every dialect.

    PostgreSQL stores ``NUMERIC(20, 6)``. SQLite has no exact numeric storage (a NUMERIC column
    turns ``'123.45'`` into a REAL), so there the canonical string goes into a text column.
    Values with more than six decimals are rounded half-even to six on every dialect, so SQLite
    and PostgreSQL hold the same figure; trailing zeros are dropped on read, so ``123.45`` comes
    back as ``Decimal('123.45')`` from both.
    """

    impl = Numeric(DECIMAL_PRECISION, DECIMAL_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(48))
        return dialect.type_descriptor(Numeric(DECIMAL_PRECISION, DECIMAL_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            # floats are refused on purpose: money never passes through binary floating point
            if isinstance(value, int) and not isinstance(value, bool):
                value = Decimal(value)
            else:
                raise TypeError(
                    f"ExactDecimal column was given {type(value).__name__} {value!r}; "
                    "pass a decimal.Decimal"
                )
        if not value.is_finite():
            raise ValueError(f"ExactDecimal column was given a non-finite value {value!r}")
        value = _canonical(value)
        if dialect.name == "sqlite":
            return format(value, "f")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return _canonical(Decimal(str(value)) if not isinstance(value, Decimal) else value)


def _canonical(value: Decimal) -> Decimal:
    if value.as_tuple().exponent < -DECIMAL_SCALE:  # type: ignore[operator]
        value = value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)
    normalized = value.normalize()
    # normalize() writes 100 as 1E+2; keep integers in plain notation
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        normalized = normalized.quantize(Decimal(1))
    return normalized


def _ns(name: str, **kwargs: Any) -> Column[int]:
    return Column(name, BigInteger, **kwargs)


orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client_order_id", String(40), nullable=False, unique=True),
    Column("plan_client_id", String(40), nullable=False, index=True),
    Column("strategy", String(64), nullable=False),
    Column("instrument", String(64), nullable=False),
    Column("leg", String(16), nullable=False),
    Column("side", String(8), nullable=False),
    Column("order_type", String(16), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price", ExactDecimal(), nullable=True),
    Column("trigger_price", ExactDecimal(), nullable=True),
    Column("status", String(24), nullable=False, index=True),
    Column("filled_quantity", Integer, nullable=False, default=0),
    Column("average_fill_price", ExactDecimal(), nullable=True),
    Column("broker_order_id", String(64), nullable=True),
    Column("epoch", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
    _ns("created_ns", nullable=False),
    _ns("updated_ns", nullable=False),
)

fills = Table(
    "fills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trade_id", String(64), nullable=False, unique=True),
    Column("client_order_id", String(40), nullable=False, index=True),
    Column("plan_client_id", String(40), nullable=False, index=True),
    Column("broker_order_id", String(64), nullable=False, default=""),
    Column("instrument", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price", ExactDecimal(), nullable=False),
    _ns("ts_event_ns", nullable=False),
    _ns("recorded_ns", nullable=False),
)

brackets = Table(
    "brackets",
    metadata,
    Column("plan_client_id", String(40), primary_key=True),
    Column("strategy", String(64), nullable=False),
    Column("instrument", String(64), nullable=False),
    Column("status", String(24), nullable=False, index=True),
    Column("entry_order_id", String(40), nullable=True),
    Column("stop_order_id", String(40), nullable=True),
    Column("target_order_id", String(40), nullable=True),
    Column("state", Text, nullable=False),
    _ns("updated_ns", nullable=False),
)

positions = Table(
    "positions",
    metadata,
    Column("position_id", String(40), primary_key=True),
    Column("strategy", String(64), nullable=False),
    Column("instrument", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("average_price", ExactDecimal(), nullable=False),
    Column("realized_pnl", ExactDecimal(), nullable=False),
    Column("status", String(8), nullable=False, index=True),
    _ns("updated_ns", nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ns("ts_ns", nullable=False, index=True),
    Column("event", String(40), nullable=False, index=True),
    Column("instance_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
)

leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    _ns("expires_ns", nullable=False),
    _ns("renewed_ns", nullable=False),
)

kill_switch = Table(
    "kill_switch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("active", Boolean, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    _ns("activated_ns", nullable=True),
    _ns("reset_ns", nullable=True),
    _ns("updated_ns", nullable=False),
)

control_state = Table(
    "control_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    _ns("updated_ns", nullable=False),
)

daily_reports = Table(
    "daily_reports",
    metadata,
    Column("trading_day", String(10), primary_key=True),
    Column("report", Text, nullable=False),
    _ns("created_ns", nullable=False),
)

engine_tables: tuple[Table, ...] = (
    orders,
    fills,
    brackets,
    positions,
    events,
    leader_lease,
    kill_switch,
    control_state,
    daily_reports,
)
"""The tables migration ``0001_engine_tables`` creates (the venue books are not among them)."""

order_journal = Table(
    "order_journal",
    metadata,
    # Never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): the write-behind deletes
    # the entries the tables have caught up with, and recovery reads what is above the mark.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("client_order_id", String(40), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("holder", String(64), nullable=False),
    _ns("ts_ns", nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # A place of a known id is refused by the database, like the orders table's unique id.
    Index(
        "uq_order_journal_place_client_order_id",
        "client_order_id",
        unique=True,
        sqlite_where=text("kind = 'PLACE'"),
        postgresql_where=text("kind = 'PLACE'"),
    ),
    sqlite_autoincrement=True,
)
"""The order actor's write-ahead journal (``adapters.storage.journal``): one fenced row per
broker call, appended before the call; the relational tables follow behind it."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ns("ts_ns", nullable=False, index=True),
    Column("instance_id", String(64), nullable=False),
    Column("who", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("blockers", Text, nullable=False),  # JSON list of sentences
    Column("mode", String(8), nullable=False),
    Column("rehearsal", Boolean, nullable=False),
    sqlite_autoincrement=True,
)
"""The LIVE gates' append-only audit trail (migration 0004): every connect, pre-live run,
confirmation, arm, disarm, revoke, kill switch, breaker, mode change and LIVE expiry. Triggers
refuse UPDATE and DELETE on SQLite and PostgreSQL. Never holds a token."""

day_figure_counts = Table(
    "day_figure_counts",
    metadata,
    Column("trading_day", String(10), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    _ns("updated_ns", nullable=False),
)
"""The day figures' counts (migration 0005, ``domain.day_figures``): per trading day (in the
exchange zone), kind (signals, approved, blocked, ack_latency_ms, recorded) and key (strategy,
denial code, latency bucket). Only ever increased by deltas, so restarts add up."""

day_heat = Table(
    "day_heat",
    metadata,
    Column("trading_day", String(10), primary_key=True),
    Column("max_heat", ExactDecimal, nullable=False),
    _ns("max_heat_ns", nullable=False),
    _ns("updated_ns", nullable=False),
)
"""The high-water mark of portfolio heat per trading day (migration 0005): only ever raised."""

engine_starts = Table(
    "engine_starts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ns("ts_ns", nullable=False, index=True),
    Column("trading_day", String(10), nullable=False),
    Column("instance_id", String(64), nullable=False),
    Column("lease_holder", String(64), nullable=False),
    Column("config_sha", String(64), nullable=False),
    Column("git_sha", String(64), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("timezone", String(64), nullable=False),
    sqlite_autoincrement=True,
)
"""One row per engine start (migration 0005): the config SHA and git SHA the process ran with,
its instance and lease identity, mode and exchange time zone."""
