"""The order actor's write-ahead journal and write-behind, on real SQLite and PostgreSQL.

The journal is the record that must exist before any broker call: one fenced INSERT on a
connection of its own. The write-behind brings the tables up to date behind it, in batches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.storage import (
    Database,
    DuplicateClientOrderId,
    LeaseFence,
    StaleEpoch,
    UnitOfWork,
    create_database_engine,
    upgrade_schema,
)
from adapters.storage.journal import JournalKind, OrderJournal
from adapters.storage.tables import engine_tables, order_journal
from adapters.storage.write_behind import APPLIED_SEQ_KEY, StorageWriteFailed, WriteBehind
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.orders import FillReport
from domain.oco import Bracket
from domain.orders import Order
from tests.helpers import wait_until

pytest_plugins = ["tests.conftest_postgres"]

TTL_NS = 10_000
NOW = 1_000


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade_schema(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vigil.db'}"
        upgrade_schema(url)
    else:
        url = request.getfixturevalue("migrated_postgres_url")
        engine = create_database_engine(url)
        with engine.begin() as connection:
            names = ", ".join([*(table.name for table in engine_tables), "order_journal"])
            connection.exec_driver_sql(f"TRUNCATE TABLE {names} RESTART IDENTITY")
        engine.dispose()
    database = Database(create_database_engine(url))
    yield database
    database.dispose()


@pytest.fixture
def journal(database: Database) -> Iterator[OrderJournal]:
    journal = OrderJournal(database)
    yield journal
    journal.close()


@pytest.fixture
def writer(database: Database) -> Iterator[WriteBehind]:
    writer = WriteBehind(database, flush_interval_s=0.001, retry_initial_s=0.01)
    yield writer
    writer.stop(timeout_s=5)


def take_lease(database: Database, holder: str, now_ns: int = NOW) -> int:
    with UnitOfWork(database) as uow:
        state = uow.lease.acquire_or_renew(instance_id=holder, now_ns=now_ns, ttl_ns=TTL_NS)
    assert state.is_leader
    return state.epoch


def deposed_fence(database: Database) -> LeaseFence:
    """The fence of "old", whose lease "new" has taken over at the next epoch."""
    old_epoch = take_lease(database, "old")
    with UnitOfWork(database) as uow:
        uow.lease.release(instance_id="old", now_ns=NOW)
    take_lease(database, "new", now_ns=NOW + 1)
    return LeaseFence(instance_id="old", epoch=old_epoch, now_ns=NOW + 1)


def make_order(**overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "client_order_id": "PABCE",
        "plan_client_id": "PABC",
        "strategy": "orb",
        "instrument": "NIFTY",
        "leg": LegKind.ENTRY,
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": 50,
        "price": Decimal("123.45"),
        "epoch": 1,
        "ts_created": NOW,
        "ts_updated": NOW,
    }
    fields.update(overrides)
    return Order(**fields)


def make_bracket(**overrides: Any) -> Bracket:
    fields: dict[str, Any] = {
        "plan_client_id": "PABC",
        "strategy": "orb",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "planned_quantity": 50,
        "entry_price": Decimal("123.45"),
        "stop_price": Decimal("120"),
        "target_price": Decimal("130"),
        "entry_order_id": "PABCE",
    }
    fields.update(overrides)
    return Bracket(**fields)


def database_journal_rows(database: Database) -> int:
    """Rows in the database's own ``order_journal`` table (PostgreSQL's journal; on SQLite with
    a file, only what an older Vigil left there)."""
    with UnitOfWork(database) as uow:
        return int(uow.connection.execute(select(func.count()).select_from(order_journal)).scalar())


class TestTheJournal:
    def test_a_place_is_stored_with_its_order_and_bracket(
        self, database: Database, journal: OrderJournal
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)

        seq = journal.append(
            JournalKind.PLACE, make_order(epoch=epoch), fence, bracket=make_bracket()
        )

        [entry] = journal.tail()
        assert entry.seq == seq == journal.last_seq
        assert entry.kind is JournalKind.PLACE and entry.epoch == epoch and entry.holder == "me"
        assert entry.order == make_order(epoch=epoch)
        assert entry.bracket == make_bracket()

    def test_a_deposed_holder_is_refused_and_nothing_is_written(
        self, database: Database, journal: OrderJournal
    ) -> None:
        fence = deposed_fence(database)
        old_epoch = fence.epoch

        for kind in JournalKind:
            with pytest.raises(StaleEpoch) as refused:
                journal.append(kind, make_order(epoch=old_epoch), fence)
            assert refused.value.holder == "new" and refused.value.current_epoch == old_epoch + 1

        assert journal.tail() == [] and database_journal_rows(database) == 0

    def test_a_batch_of_cancels_is_one_statement_with_a_seq_per_order_in_order(
        self, database: Database, journal: OrderJournal
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)
        orders = [
            make_order(client_order_id=f"P{index:03d}S", plan_client_id=f"P{index:03d}")
            for index in range(150)  # more than one statement's worth of rows
        ]

        seqs = journal.append_batch(JournalKind.CANCEL, orders, fence)

        entries = journal.tail()
        assert [entry.seq for entry in entries] == seqs == sorted(seqs)
        assert [entry.order.client_order_id for entry in entries] == [
            order.client_order_id for order in orders
        ]
        assert {entry.kind for entry in entries} == {JournalKind.CANCEL}
        assert journal.last_seq == seqs[-1]

    def test_a_batch_of_a_deposed_holder_writes_nothing(
        self, database: Database, journal: OrderJournal
    ) -> None:
        fence = deposed_fence(database)
        orders = [make_order(client_order_id=f"P{index}T") for index in range(3)]

        with pytest.raises(StaleEpoch):
            journal.append_batch(JournalKind.CANCEL, orders, fence)
        with pytest.raises(ValueError, match="PLACE"):
            journal.append_batch(JournalKind.PLACE, orders, fence)

        assert journal.tail() == [] and database_journal_rows(database) == 0

    def test_an_expired_lease_fences_its_own_holder(
        self, database: Database, journal: OrderJournal
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW + TTL_NS)

        with pytest.raises(StaleEpoch):
            journal.append(JournalKind.RESEND, make_order(epoch=epoch), fence)

    def test_a_place_of_a_known_id_is_refused_whether_journalled_or_stored(
        self, database: Database, journal: OrderJournal
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)
        journal.append(JournalKind.PLACE, make_order(epoch=epoch), fence)
        with pytest.raises(DuplicateClientOrderId):
            journal.append(JournalKind.PLACE, make_order(epoch=epoch), fence)

        stored = make_order(client_order_id="PXYZE", plan_client_id="PXYZ", epoch=epoch)
        with UnitOfWork(database) as uow:
            uow.orders.add(stored)
        with pytest.raises(DuplicateClientOrderId):
            journal.append(JournalKind.PLACE, stored, fence)
        # The journal is still usable, and later calls on a placed order are appended.
        journal.append(JournalKind.CANCEL, make_order(epoch=epoch), fence)
        assert [e.kind for e in journal.tail()] == [JournalKind.PLACE, JournalKind.CANCEL]

    def test_a_batch_of_places_writes_each_new_id_once_and_skips_known_ones(
        self, database: Database, journal: OrderJournal
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)
        journalled = make_order(client_order_id="PJJJE", plan_client_id="PJJJ", epoch=epoch)
        journal.append(JournalKind.PLACE, journalled, fence)
        stored = make_order(client_order_id="PSSSE", plan_client_id="PSSS", epoch=epoch)
        with UnitOfWork(database) as uow:
            uow.orders.add(stored)
        fresh = [
            make_order(client_order_id=f"P{index}E", plan_client_id=f"P{index}", epoch=epoch)
            for index in range(3)
        ]
        places = [(fresh[0], make_bracket()), (journalled, None), (fresh[1], None)]
        places += [(stored, None), (fresh[2], make_bracket(plan_client_id="P2"))]

        seqs = journal.append_places(places, fence)

        assert seqs[1] is None and seqs[3] is None
        entries = {entry.client_order_id: entry for entry in journal.tail()}
        assert [entries[o.client_order_id].seq for o in fresh] == [seqs[0], seqs[2], seqs[4]]
        assert entries["P0E"].bracket == make_bracket()
        assert entries["P2E"].bracket == make_bracket(plan_client_id="P2")
        assert entries["P1E"].bracket is None
        assert "PSSSE" not in entries and len(entries) == 4  # the journalled one, once

    def test_a_batch_of_places_of_a_deposed_holder_writes_nothing(
        self, database: Database, journal: OrderJournal
    ) -> None:
        fence = deposed_fence(database)
        places = [(make_order(client_order_id=f"P{index}E"), None) for index in range(3)]

        with pytest.raises(StaleEpoch):
            journal.append_places(places, fence)

        assert journal.tail() == [] and database_journal_rows(database) == 0

    def test_an_append_is_one_statement_on_sqlite(
        self, database: Database, journal: OrderJournal
    ) -> None:
        if not database.is_sqlite:
            pytest.skip("statement tracing through sqlite3")
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)
        journal.append(JournalKind.PLACE, make_order(epoch=epoch), fence)  # connects
        statements: list[str] = []
        connection = journal._connect()
        assert isinstance(connection, sqlite3.Connection)
        connection.set_trace_callback(statements.append)

        journal.append(JournalKind.RESIZE, make_order(epoch=epoch), fence)

        # (main: the journal's own file, beside the database)
        assert len(statements) == 1 and statements[0].startswith("INSERT INTO main.order_journal")


class TestTheWriteBehind:
    def test_a_batch_coalesces_each_order_to_its_last_state_in_one_transaction(
        self, database: Database, writer: WriteBehind
    ) -> None:
        order = make_order()
        for quantity in range(1, 101):  # handed over before the thread runs: one batch
            order.quantity = quantity
            writer.write(order=order, bracket=make_bracket(planned_quantity=quantity))
        writer.write(
            order=order,
            fill=FillReport(
                trade_id="T1",
                client_order_id=order.client_order_id,
                broker_order_id="B1",
                instrument="NIFTY",
                side=Side.BUY,
                quantity=50,
                price=Decimal("123.45"),
                ts_event=NOW,
            ),
            recorded_ns=NOW,
        )
        writer.write_event("RECOVERY", {"open_positions": 0}, ts_ns=NOW, instance_id="me")
        writer.start()

        writer.flush(timeout_s=10)

        assert writer.batches == 1
        with UnitOfWork(database) as uow:
            stored = uow.orders.get(order.client_order_id)
            bracket = uow.brackets.get("PABC")
            trade_ids = uow.fills.trade_ids()
            events = [row.event for row in uow.events.list_recent()]
        assert stored is not None and stored.quantity == 100
        assert bracket is not None and bracket.planned_quantity == 100
        assert trade_ids == {"T1"} and events == ["RECOVERY"]

    def test_the_tables_record_the_journal_seq_they_caught_up_with(
        self, database: Database, journal: OrderJournal, writer: WriteBehind
    ) -> None:
        epoch = take_lease(database, "me")
        fence = LeaseFence(instance_id="me", epoch=epoch, now_ns=NOW)
        first = journal.append(JournalKind.PLACE, make_order(epoch=epoch), fence)
        writer.write(order=make_order(epoch=epoch), journal_seq=first)
        second = journal.append(
            JournalKind.PLACE,
            make_order(client_order_id="PXYZE", plan_client_id="PXYZ", epoch=epoch),
            fence,
        )
        writer.start()
        writer.flush(timeout_s=10)

        with UnitOfWork(database) as uow:
            assert uow.control.get(APPLIED_SEQ_KEY) == str(first)
        assert writer.applied_seq == first
        # The write-behind leaves the journal alone (on SQLite its file has one writer, the
        # order actor's thread); the journal trims what the tables have, keeping the tail.
        assert [entry.seq for entry in journal.tail()] == [first, second]
        assert journal.trim(writer.applied_seq) == 1
        assert [entry.seq for entry in journal.tail()] == [second]

    def test_a_transient_storage_error_is_retried_and_nothing_is_lost(
        self, database: Database, writer: WriteBehind
    ) -> None:
        writer.start()
        with database.transaction() as connection:
            connection.exec_driver_sql("ALTER TABLE orders RENAME TO orders_away")
        writer.write(order=make_order())
        wait_until(lambda: writer.snapshot()["last_error"] is not None, message="a failure")
        assert writer.failure is None  # not yet for long
        with database.transaction() as connection:
            connection.exec_driver_sql("ALTER TABLE orders_away RENAME TO orders")

        writer.flush(timeout_s=10)

        with UnitOfWork(database) as uow:
            assert uow.orders.get("PABCE") is not None
        assert writer.snapshot()["last_error"] is None

    def test_a_lasting_storage_failure_is_signalled_then_cleared(self, database: Database) -> None:
        writer = WriteBehind(
            database, flush_interval_s=0.001, retry_initial_s=0.01, fail_after_s=0.2
        )
        writer.start()
        try:
            with database.transaction() as connection:
                connection.exec_driver_sql("ALTER TABLE orders RENAME TO orders_away")
            writer.write(order=make_order())
            wait_until(lambda: writer.failure is not None, message="the failure signalled")
            with pytest.raises(StorageWriteFailed, match="STORAGE_WRITE_FAILED"):
                writer.raise_if_failed()
            with pytest.raises(StorageWriteFailed):
                writer.flush(timeout_s=5)
            with database.transaction() as connection:
                connection.exec_driver_sql("ALTER TABLE orders_away RENAME TO orders")

            wait_until(lambda: writer.failure is None, message="the failure cleared")
            writer.flush(timeout_s=10)
            with UnitOfWork(database) as uow:
                stored = uow.orders.get("PABCE")
            assert stored is not None and stored.status is OrderStatus.PENDING_SUBMIT
        finally:
            writer.stop(timeout_s=5)


class TestTheWriteBehindFence:
    """A deposed process's late batch must not overwrite what the new leader wrote."""

    @pytest.fixture
    def fenced_writer(self, database: Database) -> Iterator[WriteBehind]:
        writer = WriteBehind(
            database, flush_interval_s=0.001, retry_initial_s=0.01, lease_holder="me"
        )
        writer.start()
        yield writer
        writer.stop(timeout_s=5)

    @staticmethod
    def stored_status(database: Database, client_order_id: str) -> OrderStatus | None:
        with UnitOfWork(database) as uow:
            stored = uow.orders.get(client_order_id)
        return None if stored is None else stored.status

    def test_rows_of_a_deposed_epoch_are_dropped_but_its_audit_events_kept(
        self, database: Database, fenced_writer: WriteBehind
    ) -> None:
        take_lease(database, "me")
        fenced_writer.write(order=make_order(client_order_id="MINE"))
        fenced_writer.flush()
        assert self.stored_status(database, "MINE") is OrderStatus.PENDING_SUBMIT

        # Our lease expires and another process takes it (a new epoch) and writes the order.
        other_epoch = take_lease(database, "other", now_ns=NOW + 2 * TTL_NS)
        with UnitOfWork(database) as uow:
            uow.orders.update(make_order(client_order_id="MINE", status=OrderStatus.CANCELLED))
        fenced_writer.write(order=make_order(client_order_id="MINE", status=OrderStatus.ACCEPTED))
        fenced_writer.write_event("LATE", {"why": "deposed"}, ts_ns=NOW, instance_id="me")
        fenced_writer.flush()

        assert self.stored_status(database, "MINE") is OrderStatus.CANCELLED
        assert fenced_writer.fenced_drops >= 1
        with UnitOfWork(database) as uow:
            assert [row.event for row in uow.events.list_recent(event="LATE")] == ["LATE"]
        assert other_epoch > 1

    def test_a_standby_that_never_led_stores_no_rows(
        self, database: Database, fenced_writer: WriteBehind
    ) -> None:
        take_lease(database, "other")
        fenced_writer.write(order=make_order(client_order_id="STANDBY"))
        fenced_writer.flush()
        assert self.stored_status(database, "STANDBY") is None

    def test_a_released_lease_still_takes_the_last_flush_of_its_holder(
        self, database: Database, fenced_writer: WriteBehind
    ) -> None:
        take_lease(database, "me")
        with UnitOfWork(database) as uow:
            uow.lease.release(instance_id="me", now_ns=NOW + 1)
        fenced_writer.write(order=make_order(client_order_id="LAST"))
        fenced_writer.flush()
        assert self.stored_status(database, "LAST") is OrderStatus.PENDING_SUBMIT

    def test_this_process_retaking_its_own_lease_keeps_its_rows(
        self, database: Database, fenced_writer: WriteBehind
    ) -> None:
        # A pause (SIGSTOP) longer than the lease: the same process takes it again at a new
        # epoch. Its books still hold what it handed over; dropping it would split the books
        # from the tables (the crash torture's stop_cont trials caught exactly that).
        first = take_lease(database, "me")
        second = take_lease(database, "me", now_ns=NOW + 2 * TTL_NS)
        assert second > first
        fenced_writer.write(order=make_order(client_order_id="KEPT"))
        fenced_writer.flush()
        assert self.stored_status(database, "KEPT") is OrderStatus.PENDING_SUBMIT
        assert fenced_writer.fenced_drops == 0
