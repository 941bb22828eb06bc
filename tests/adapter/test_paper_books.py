"""The paper venue's batch writes (one executemany per table): the rows they store, and the
conflict they must still detect, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from adapters.brokers.paper import books
from adapters.brokers.paper.venue import VenueOrder, VenuePosition
from adapters.storage.database import Database
from domain.enums import OrderStatus, OrderType, Side

pytest_plugins = ["tests.conftest_postgres"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'venue.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    database = Database.from_url(url)
    yield database
    database.dispose()


def order(seq: int, **changes: object) -> VenueOrder:
    base = VenueOrder(
        seq=seq,
        venue_order_id=f"V{seq}",
        client_order_id=f"C{seq}",
        instrument="INFY",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=10,
        price=Decimal("1500.05"),
        ts_received=1_000 + seq,
        ack_due_ns=2_000 + seq,
        submit_count=3,
        ts_updated=1_000 + seq,
    )
    return msgspec.structs.replace(base, **changes)


def stored_orders(database: Database) -> dict[str, VenueOrder]:
    with database.transaction() as connection:
        return {o.client_order_id: o for o in books.load_orders_since(connection, 0)}


def test_updating_a_batch_of_orders_stores_each_and_leaves_submit_counts_alone(
    database: Database,
) -> None:
    with database.transaction() as connection:
        books.insert_orders(connection, [order(1), order(2), order(3)])
    filled = order(1, status=OrderStatus.FILLED, filled_quantity=10)
    filled = msgspec.structs.replace(filled, average_fill_price=Decimal("1499.95"))
    cancelled = order(2, status=OrderStatus.CANCELLED, reason="by request", cancel_due_ns=None)
    with database.transaction() as connection:
        books.update_orders(connection, [filled, cancelled])
    stored = stored_orders(database)
    assert stored["C1"].status is OrderStatus.FILLED
    assert stored["C1"].average_fill_price == Decimal("1499.95")
    assert stored["C2"].status is OrderStatus.CANCELLED
    assert stored["C2"].reason == "by request"
    assert stored["C3"] == order(3)
    with database.transaction() as connection:
        assert books.load_submit_counts(connection) == {"C1": 3, "C2": 3, "C3": 3}


def test_an_update_of_an_order_missing_from_storage_names_it_and_writes_nothing(
    database: Database,
) -> None:
    with database.transaction() as connection:
        books.insert_orders(connection, [order(1)])
    updates = [order(1, status=OrderStatus.FILLED, filled_quantity=10), order(9)]
    with (
        pytest.raises(LookupError, match="venue_order_id=V9 client_order_id=C9"),
        database.transaction() as connection,
    ):
        books.update_orders(connection, updates)
    assert stored_orders(database)["C1"].status is OrderStatus.SUBMITTED


def test_positions_submit_counts_and_meta_are_inserted_then_overwritten(
    database: Database,
) -> None:
    with database.transaction() as connection:
        books.insert_orders(connection, [order(1)])
        books.upsert_positions(
            connection,
            [VenuePosition(instrument="INFY", quantity=10, average_price=Decimal("1500.05"))],
        )
        books.set_submit_counts(connection, [("C1", 5)])
        books.save_meta(connection, [("next_order_seq", "2")])
    with database.transaction() as connection:
        books.upsert_positions(
            connection,
            [
                VenuePosition(instrument="INFY", quantity=0, realized_pnl=Decimal("-1.50")),
                VenuePosition(instrument="TCS", quantity=-5, average_price=Decimal("3900.10")),
            ],
        )
        books.save_meta(connection, [("next_order_seq", "3"), ("starting_balance", "100000")])
    with database.transaction() as connection:
        positions = {p.instrument: p for p in books.load_positions(connection)}
        assert books.load_submit_counts(connection) == {"C1": 5}
        meta = books.load_meta(connection)
    assert positions["INFY"].quantity == 0
    assert positions["INFY"].realized_pnl == Decimal("-1.50")
    assert positions["TCS"].average_price == Decimal("3900.10")
    assert meta == {"next_order_seq": "3", "starting_balance": "100000"}
