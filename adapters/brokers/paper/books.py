"""The paper venue's own books in storage: ``venue_orders``, ``venue_fills``,
``venue_positions`` and ``venue_meta``.

They register on the shared ``adapters.storage.metadata.metadata`` (so Alembic sees one
schema; migration ``0002_venue_tables`` creates them) but are separate from the engine's
tables: the venue never reads the engine's rows and the engine never writes these, so a crash
of the engine leaves an independent record to reconcile against.

Functions here take an open ``Connection`` and do no locking and no transaction handling; the
broker's writer thread calls them inside ``Database.transaction()``, one transaction per batch,
and the broker reads them when it loads its books (connect, takeover, a storage conflict).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    String,
    Table,
    bindparam,
    func,
    or_,
    select,
    update,
)

from adapters.brokers.paper.venue import VenueFill, VenueOrder, VenuePosition
from adapters.storage.metadata import metadata
from adapters.storage.prepared import PreparedStatement, upsert_statement
from adapters.storage.repositories import dialect_insert
from adapters.storage.tables import ExactDecimal
from domain.enums import OrderStatus, OrderType, Side

__all__ = [
    "META_NEXT_ORDER_SEQ",
    "META_NEXT_TRADE_SEQ",
    "META_STARTING_BALANCE",
    "VENUE_TABLES",
    "bump_submit_count",
    "find_order",
    "insert_fill",
    "insert_fills",
    "insert_order",
    "insert_orders",
    "last_fill_prices",
    "load_fills_since",
    "load_meta",
    "load_orders_since",
    "load_positions",
    "load_submit_counts",
    "load_working_orders",
    "max_fill_seq",
    "max_order_seq",
    "save_meta",
    "set_submit_counts",
    "update_orders",
    "upsert_positions",
    "venue_fills",
    "venue_meta",
    "venue_orders",
    "venue_positions",
]

META_NEXT_ORDER_SEQ = "next_order_seq"
META_NEXT_TRADE_SEQ = "next_trade_seq"
META_STARTING_BALANCE = "starting_balance"

_TERMINAL_STATUSES = tuple(status.value for status in OrderStatus if status.is_terminal)


venue_orders = Table(
    "venue_orders",
    metadata,
    Column("venue_order_id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("client_order_id", String(128), nullable=False, unique=True),
    Column("instrument", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("order_type", String(16), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price", ExactDecimal, nullable=True),
    Column("trigger_price", ExactDecimal, nullable=True),
    Column("status", String(24), nullable=False, index=True),
    Column("filled_quantity", Integer, nullable=False),
    Column("average_fill_price", ExactDecimal, nullable=True),
    Column("reason", String(256), nullable=False),
    Column("is_accepted", Boolean, nullable=False),
    Column("is_triggered", Boolean, nullable=False),
    Column("ts_received", BigInteger, nullable=False, index=True),
    Column("ack_due_ns", BigInteger, nullable=False),
    Column("cancel_due_ns", BigInteger, nullable=True),
    Column("modify_quantity", Integer, nullable=True),
    Column("modify_due_ns", BigInteger, nullable=True),
    Column("submit_count", Integer, nullable=False),
    Column("ts_updated", BigInteger, nullable=False),
)

venue_fills = Table(
    "venue_fills",
    metadata,
    Column("trade_id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("venue_order_id", String(32), nullable=False, index=True),
    Column("client_order_id", String(128), nullable=False),
    Column("instrument", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("ts_event", BigInteger, nullable=False, index=True),
)

venue_positions = Table(
    "venue_positions",
    metadata,
    Column("instrument", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("average_price", ExactDecimal, nullable=False),
    Column("realized_pnl", ExactDecimal, nullable=False),
    Column("ts_updated", BigInteger, nullable=False),
)

venue_meta = Table(
    "venue_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

VENUE_TABLES: tuple[Table, ...] = (venue_orders, venue_fills, venue_positions, venue_meta)


# ---------------------------------------------------------------------------------------------
# ORDERS
# ---------------------------------------------------------------------------------------------


def _order_row(order: VenueOrder) -> dict[str, Any]:
    return {
        "venue_order_id": order.venue_order_id,
        "seq": order.seq,
        "client_order_id": order.client_order_id,
        "instrument": order.instrument,
        "side": order.side.value,
        "order_type": order.order_type.value,
        "quantity": order.quantity,
        "price": order.price,
        "trigger_price": order.trigger_price,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "average_fill_price": order.average_fill_price,
        "reason": order.reason,
        "is_accepted": order.is_accepted,
        "is_triggered": order.is_triggered,
        "ts_received": order.ts_received,
        "ack_due_ns": order.ack_due_ns,
        "cancel_due_ns": order.cancel_due_ns,
        "modify_quantity": order.modify_quantity,
        "modify_due_ns": order.modify_due_ns,
        "submit_count": order.submit_count,
        "ts_updated": order.ts_updated,
    }


def _order_from_row(row: Any) -> VenueOrder:
    return VenueOrder(
        seq=row.seq,
        venue_order_id=row.venue_order_id,
        client_order_id=row.client_order_id,
        instrument=row.instrument,
        side=Side(row.side),
        order_type=OrderType(row.order_type),
        quantity=row.quantity,
        price=row.price,
        trigger_price=row.trigger_price,
        status=OrderStatus(row.status),
        filled_quantity=row.filled_quantity,
        average_fill_price=row.average_fill_price,
        reason=row.reason,
        is_accepted=bool(row.is_accepted),
        is_triggered=bool(row.is_triggered),
        ts_received=row.ts_received,
        ack_due_ns=row.ack_due_ns,
        cancel_due_ns=row.cancel_due_ns,
        modify_quantity=row.modify_quantity,
        modify_due_ns=row.modify_due_ns,
        submit_count=row.submit_count,
        ts_updated=row.ts_updated,
    )


def insert_order(connection: Connection, order: VenueOrder) -> None:
    """Insert a newly received order."""
    connection.execute(venue_orders.insert().values(**_order_row(order)))


def insert_orders(connection: Connection, orders: Iterable[VenueOrder]) -> None:
    """Insert newly received orders in one statement (a client order id stored twice raises)."""
    rows = [_order_row(order) for order in orders]
    if rows:
        connection.execute(venue_orders.insert(), rows)


def update_orders(connection: Connection, orders: Iterable[VenueOrder]) -> None:
    """Overwrite the stored orders with ``orders`` (matched by venue order id), in one
    executemany.

    The submit count is left alone: it is counted by ``set_submit_counts`` (a duplicate can
    arrive for any stored order), and an order's in-memory copy does not carry it.

    Raises:
        LookupError: a stored order is missing (another writer moved the books); names it.
    """
    rows = []
    for order in orders:
        row = _order_row(order)
        del row["submit_count"]
        row["b_venue_order_id"] = row.pop("venue_order_id")
        rows.append(row)
    if not rows:
        return
    changed = _prepared(connection).update_order.execute_many(connection, rows)
    if changed == len(rows) or (changed < 0 and _all_stored(connection, rows)):
        return
    stored = _stored_venue_order_ids(connection, [row["b_venue_order_id"] for row in rows])
    missing = [row for row in rows if row["b_venue_order_id"] not in stored]
    if not missing:
        return
    raise LookupError(
        f"venue order missing from storage: venue_order_id={missing[0]['b_venue_order_id']} "
        f"client_order_id={missing[0]['client_order_id']} ({len(missing)} of {len(rows)} "
        f"updated orders missing)"
    )


def _all_stored(connection: Connection, rows: list[dict[str, Any]]) -> bool:
    ids = [row["b_venue_order_id"] for row in rows]
    return len(_stored_venue_order_ids(connection, ids)) == len(set(ids))


def _stored_venue_order_ids(connection: Connection, venue_order_ids: list[str]) -> set[str]:
    # Cold path (a driver that does not count an executemany's rows, or a conflict).
    return set(
        connection.execute(
            select(venue_orders.c.venue_order_id).where(
                venue_orders.c.venue_order_id.in_(venue_order_ids)
            )
        ).scalars()
    )


def find_order(connection: Connection, client_order_id: str) -> VenueOrder | None:
    """Return the stored order with ``client_order_id`` (any status), or ``None``."""
    row = connection.execute(
        select(venue_orders).where(venue_orders.c.client_order_id == client_order_id)
    ).first()
    return None if row is None else _order_from_row(row)


def bump_submit_count(connection: Connection, client_order_id: str) -> int:
    """Count one more submit of a known id; return the new count."""
    connection.execute(
        update(venue_orders)
        .where(venue_orders.c.client_order_id == client_order_id)
        .values(submit_count=venue_orders.c.submit_count + 1)
    )
    count = connection.execute(
        select(venue_orders.c.submit_count).where(venue_orders.c.client_order_id == client_order_id)
    ).scalar_one()
    return int(count)


def set_submit_counts(connection: Connection, counts: Iterable[tuple[str, int]]) -> None:
    """Store how many times each client order id was submitted (ids already stored)."""
    _prepared(connection).set_submit_count.execute_many(
        connection,
        [
            {"b_client_order_id": client_order_id, "submit_count": count}
            for client_order_id, count in counts
        ],
    )


def load_working_orders(connection: Connection) -> list[VenueOrder]:
    """Return every non-terminal order, oldest first."""
    rows = connection.execute(
        select(venue_orders)
        .where(venue_orders.c.status.not_in(_TERMINAL_STATUSES))
        .order_by(venue_orders.c.seq)
    )
    return [_order_from_row(row) for row in rows]


def load_orders_since(connection: Connection, since_ns: int) -> list[VenueOrder]:
    """Return orders received at or after ``since_ns`` plus every older still-working order."""
    rows = connection.execute(
        select(venue_orders)
        .where(
            or_(
                venue_orders.c.ts_received >= since_ns,
                venue_orders.c.status.not_in(_TERMINAL_STATUSES),
            )
        )
        .order_by(venue_orders.c.seq)
    )
    return [_order_from_row(row) for row in rows]


def load_submit_counts(connection: Connection) -> dict[str, int]:
    """Return how many times each stored client order id was submitted."""
    rows = connection.execute(select(venue_orders.c.client_order_id, venue_orders.c.submit_count))
    return {row.client_order_id: int(row.submit_count) for row in rows}


def max_order_seq(connection: Connection) -> int:
    """Return the highest stored order sequence, 0 when there is none."""
    return int(connection.execute(select(func.max(venue_orders.c.seq))).scalar() or 0)


# ---------------------------------------------------------------------------------------------
# FILLS
# ---------------------------------------------------------------------------------------------


def insert_fill(connection: Connection, fill: VenueFill) -> None:
    """Insert one execution (trade ids are unique: a second insert of one raises)."""
    connection.execute(
        venue_fills.insert().values(
            trade_id=fill.trade_id,
            seq=fill.seq,
            venue_order_id=fill.venue_order_id,
            client_order_id=fill.client_order_id,
            instrument=fill.instrument,
            side=fill.side.value,
            quantity=fill.quantity,
            price=fill.price,
            ts_event=fill.ts_event,
        )
    )


def insert_fills(connection: Connection, fills: Iterable[VenueFill]) -> None:
    """Insert executions in one statement (trade ids are unique: a second insert raises)."""
    rows = [
        {
            "trade_id": fill.trade_id,
            "seq": fill.seq,
            "venue_order_id": fill.venue_order_id,
            "client_order_id": fill.client_order_id,
            "instrument": fill.instrument,
            "side": fill.side.value,
            "quantity": fill.quantity,
            "price": fill.price,
            "ts_event": fill.ts_event,
        }
        for fill in fills
    ]
    if rows:
        connection.execute(venue_fills.insert(), rows)


def last_fill_prices(connection: Connection) -> dict[str, Decimal]:
    """The price of the latest fill in each instrument."""
    latest = (
        select(venue_fills.c.instrument, func.max(venue_fills.c.seq).label("seq"))
        .group_by(venue_fills.c.instrument)
        .subquery()
    )
    rows = connection.execute(
        select(venue_fills.c.instrument, venue_fills.c.price).join(
            latest,
            (venue_fills.c.instrument == latest.c.instrument) & (venue_fills.c.seq == latest.c.seq),
        )
    )
    return {row.instrument: row.price for row in rows}


def load_fills_since(connection: Connection, since_ns: int) -> list[VenueFill]:
    """Return fills at or after ``since_ns``, in execution order."""
    rows = connection.execute(
        select(venue_fills).where(venue_fills.c.ts_event >= since_ns).order_by(venue_fills.c.seq)
    )
    return [
        VenueFill(
            seq=row.seq,
            trade_id=row.trade_id,
            venue_order_id=row.venue_order_id,
            client_order_id=row.client_order_id,
            instrument=row.instrument,
            side=Side(row.side),
            quantity=row.quantity,
            price=row.price,
            ts_event=row.ts_event,
        )
        for row in rows
    ]


def max_fill_seq(connection: Connection) -> int:
    """Return the highest stored trade sequence, 0 when there is none."""
    return int(connection.execute(select(func.max(venue_fills.c.seq))).scalar() or 0)


# ---------------------------------------------------------------------------------------------
# POSITIONS AND META
# ---------------------------------------------------------------------------------------------


def upsert_positions(connection: Connection, positions: Iterable[VenuePosition]) -> None:
    """Store ``positions`` (inserted the first time an instrument trades), in one
    executemany."""
    _prepared(connection).upsert_position.execute_many(
        connection,
        [
            {
                "instrument": position.instrument,
                "quantity": position.quantity,
                "average_price": position.average_price,
                "realized_pnl": position.realized_pnl,
                "ts_updated": position.ts_updated,
            }
            for position in positions
        ],
    )


def load_positions(connection: Connection) -> list[VenuePosition]:
    """Return every stored position, flat ones included."""
    rows = connection.execute(select(venue_positions).order_by(venue_positions.c.instrument))
    return [
        VenuePosition(
            instrument=row.instrument,
            quantity=row.quantity,
            average_price=row.average_price,
            realized_pnl=row.realized_pnl,
            ts_updated=row.ts_updated,
        )
        for row in rows
    ]


def load_meta(connection: Connection) -> dict[str, str]:
    """Return every meta key and value."""
    return {row.key: row.value for row in connection.execute(select(venue_meta))}


def save_meta(connection: Connection, values: Iterable[tuple[str, str]]) -> None:
    """Store meta keys (insert or overwrite)."""
    _prepared(connection).upsert_meta.execute_many(
        connection, [{"key": key, "value": value} for key, value in values]
    )


# ---------------------------------------------------------------------------------------------
# PREPARED WRITES
# ---------------------------------------------------------------------------------------------


class _Writes:
    """The writer thread's statements, compiled once per dialect (see
    ``adapters.storage.prepared``)."""

    def __init__(self, connection: Connection) -> None:
        dialect = connection.dialect
        insert = dialect_insert(connection)
        order_columns = [
            c.name for c in venue_orders.columns if c.name not in ("venue_order_id", "submit_count")
        ]
        self.update_order = PreparedStatement(
            update(venue_orders)
            .where(venue_orders.c.venue_order_id == bindparam("b_venue_order_id"))
            .values({name: bindparam(name) for name in order_columns}),
            venue_orders,
            dialect,
        )
        self.set_submit_count = PreparedStatement(
            update(venue_orders)
            .where(venue_orders.c.client_order_id == bindparam("b_client_order_id"))
            .values(submit_count=bindparam("submit_count")),
            venue_orders,
            dialect,
        )
        self.upsert_position = upsert_statement(insert, venue_positions, "instrument", dialect)
        self.upsert_meta = upsert_statement(insert, venue_meta, "key", dialect)


_WRITES: dict[str, _Writes] = {}


def _prepared(connection: Connection) -> _Writes:
    name = connection.dialect.name
    writes = _WRITES.get(name)
    if writes is None:
        writes = _WRITES[name] = _Writes(connection)
    return writes
