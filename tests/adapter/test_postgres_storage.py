"""The repository, lease, fencing and reconcile guarantees on both dialects: every test in
``TestBothDialects`` runs against a SQLite temp file and a throwaway PostgreSQL server (see
``tests/conftest_postgres.py``); ``TestPostgresOnly`` covers row locking and ``psql -f``.

The PostgreSQL schema comes from ``upgrade_schema`` once per session; each test starts from
truncated engine tables.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from adapters.storage import (
    Database,
    DuplicateClientOrderId,
    LeaseFence,
    StaleEpoch,
    UnitOfWork,
    create_database_engine,
    upgrade_schema,
)
from adapters.storage.metadata import metadata
from adapters.storage.tables import engine_tables, orders
from domain.enums import OrderStatus
from domain.oco import BracketStatus
from tests.adapter.test_lease import race_for_the_lease
from tests.adapter.test_reconcile import SQL_FILE, plant_bracket
from tests.adapter.test_storage import make_bracket, make_fill, make_order, make_position
from tools.reconcile import reconcile

pytest_plugins = ["tests.conftest_postgres"]

TTL_NS = 10_000


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade_schema(postgres_url)
    return postgres_url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vigil.db'}"
        upgrade_schema(url)
        return url
    url: str = request.getfixturevalue("migrated_postgres_url")
    engine = create_database_engine(url)
    with engine.begin() as connection:
        names = ", ".join(table.name for table in engine_tables)
        connection.exec_driver_sql(f"TRUNCATE TABLE {names} RESTART IDENTITY")
    engine.dispose()
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(create_database_engine(database_url))
    yield database
    database.dispose()


def acquire(database: Database, instance_id: str, now_ns: int) -> tuple[str, int, bool]:
    with UnitOfWork(database) as uow:
        state = uow.lease.acquire_or_renew(instance_id=instance_id, now_ns=now_ns, ttl_ns=TTL_NS)
    return state.holder, state.epoch, state.is_leader


class TestBothDialects:
    def test_orders_round_trip_and_a_duplicate_needs_a_new_unit_of_work(
        self, database: Database
    ) -> None:
        order = make_order(average_fill_price=Decimal("123.4566665"), epoch=7)
        with UnitOfWork(database) as uow:
            uow.orders.add(order)
        with pytest.raises(DuplicateClientOrderId), UnitOfWork(database) as uow:
            uow.orders.add(make_order())
        with UnitOfWork(database) as uow:
            stored = uow.orders.get("PABCE")
            uow.orders.add(make_order(client_order_id="PABCS"))
        assert stored is not None
        assert stored.average_fill_price == Decimal("123.456666")
        assert stored.price == Decimal("123.45")
        assert str(stored.price) == "123.45"
        assert stored.epoch == 7

    def test_fills_are_idempotent_and_the_transaction_stays_usable(
        self, database: Database
    ) -> None:
        with UnitOfWork(database) as uow:
            assert uow.fills.add(make_fill(), plan_client_id="PABC", recorded_ns=1) is True
            assert uow.fills.add(make_fill(), plan_client_id="PABC", recorded_ns=2) is False
            assert uow.fills.add(make_fill(trade_id="T2"), plan_client_id="PABC", recorded_ns=3)
        with UnitOfWork(database) as uow:
            assert uow.fills.trade_ids() == {"T1", "T2"}
            assert uow.fills.list_for_plan("PABC")[0] == make_fill()

    def test_brackets_positions_and_money_round_trip_exactly(self, database: Database) -> None:
        bracket = make_bracket(stop_price=Decimal("99999999999999.999999"))
        position = make_position(realized_pnl=Decimal("0.1") + Decimal("0.2") - Decimal("100"))
        with UnitOfWork(database) as uow:
            uow.brackets.upsert(bracket)
            uow.positions.upsert(position)
        with UnitOfWork(database) as uow:
            assert uow.brackets.get("PABC") == bracket
            assert [b.plan_client_id for b in uow.brackets.list_active()] == ["PABC"]
            stored = uow.positions.get("PABC")
        assert stored == position
        assert stored is not None
        assert str(stored.realized_pnl) == "-99.7"

    def test_upserts_replace_rows(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.brackets.upsert(make_bracket())
            uow.brackets.upsert(make_bracket(status=BracketStatus.CLOSED))
            uow.control.put("armed", "true", ts_ns=1)
            uow.control.put("armed", "false", ts_ns=2)
            uow.daily_reports.put("2025-01-02", {"trades": 1}, ts_ns=1)
            uow.daily_reports.put("2025-01-02", {"trades": 2}, ts_ns=2)
        with UnitOfWork(database) as uow:
            assert uow.brackets.list_active() == []
            assert uow.control.get("armed") == "false"
            assert uow.daily_reports.get("2025-01-02") == {"trades": 2}

    def test_lease_acquire_renew_takeover_and_release(self, database: Database) -> None:
        assert acquire(database, "a", 100) == ("a", 1, True)
        assert acquire(database, "a", 5_000) == ("a", 1, True)
        assert acquire(database, "b", 5_000 + TTL_NS - 1) == ("a", 1, False)
        assert acquire(database, "b", 5_000 + TTL_NS) == ("b", 2, True)
        with UnitOfWork(database) as uow:
            uow.lease.release(instance_id="b", now_ns=20_000)
        assert acquire(database, "a", 20_001) == ("a", 3, True)

    def test_a_stale_epoch_cannot_write_an_order(self, database: Database) -> None:
        acquire(database, "a", 100)
        acquire(database, "b", 100 + TTL_NS)
        with UnitOfWork(database) as uow:
            with pytest.raises(StaleEpoch) as raised:
                uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1))
            uow.orders.add(make_order(client_order_id="PABCS", epoch=2), fence=LeaseFence("b", 2))
        assert (raised.value.holder, raised.value.current_epoch) == ("b", 2)
        with UnitOfWork(database) as uow:
            assert uow.orders.get("PABCE") is None
            assert uow.orders.get("PABCS") is not None

    def test_racing_instances_never_share_an_epoch_and_stale_ones_never_write(
        self, database_url: str
    ) -> None:
        outcome = race_for_the_lease(database_url, instances=3, rounds=100)
        assert outcome.errors == []
        assert outcome.epochs_claimed > 3
        assert outcome.shared_epochs == {}
        assert outcome.orders_by_epoch_and_writer == outcome.claims_with_orders

    def test_reconcile_finds_an_orphan_and_passes_a_clean_plan(self, database: Database) -> None:
        plant_bracket(database, "P1")
        assert reconcile(database).clean
        plant_bracket(
            database,
            "P2",
            bracket_status=BracketStatus.CLOSED,
            position_quantity=0,
            position_status="CLOSED",
            stop_status=OrderStatus.ACCEPTED,
            target_status=OrderStatus.FILLED,
        )
        report = reconcile(database)
        assert [(o.client_order_id, o.reason) for o in report.orphans] == [
            ("P2S", "BRACKET_CLOSED")
        ]
        assert report.summary["open_positions"] == 1


@pytest.mark.postgres
class TestPostgresOnly:
    @pytest.fixture
    def postgres_database(self, migrated_postgres_url: str) -> Iterator[Database]:
        engine = create_database_engine(migrated_postgres_url)
        with engine.begin() as connection:
            names = ", ".join(table.name for table in engine_tables)
            connection.exec_driver_sql(f"TRUNCATE TABLE {names} RESTART IDENTITY")
        database = Database(engine)
        yield database
        database.dispose()

    def test_the_migrated_schema_matches_the_table_definitions(
        self, postgres_database: Database
    ) -> None:
        engine_table_names = {table.name for table in engine_tables}
        with postgres_database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert [
            d for d in differences if any(f"'{n}'" in repr(d) for n in engine_table_names)
        ] == []

    def test_a_takeover_waits_for_a_fenced_insert_in_flight_to_commit(
        self, postgres_database: Database
    ) -> None:
        database = postgres_database
        acquire(database, "a", 100)
        results: dict[str, tuple[str, int, bool]] = {}

        def take_over() -> None:
            results["b"] = acquire(database, "b", 100 + TTL_NS)

        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(epoch=1), fence=LeaseFence("a", 1))
            contender = threading.Thread(target=take_over)
            contender.start()
            wait_until_blocked_on_a_lock(database, contender)
            assert "b" not in results
        contender.join(timeout=30)
        assert results["b"] == ("b", 2, True)
        with database.transaction() as connection:
            epochs = connection.execute(sa.select(orders.c.epoch)).scalars().all()
        assert epochs == [1]

    @pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
    def test_the_sql_script_runs_under_psql_and_names_the_orphan(
        self, postgres_database: Database, migrated_postgres_url: str
    ) -> None:
        plant_bracket(postgres_database, "P1", position_quantity=None)
        url = sa.engine.make_url(migrated_postgres_url)
        completed = subprocess.run(
            [
                "psql",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-A",
                "-F",
                ",",
                "-h",
                str(url.query["host"]),
                "-p",
                str(url.query["port"]),
                "-U",
                str(url.username),
                "-d",
                str(url.database),
                "-f",
                str(SQL_FILE),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        assert "ORPHAN_SIBLING,P1S,P1,STOP,ACCEPTED,NO_POSITION,OPEN" in completed.stdout
        assert "ORPHAN_SIBLING,P1T,P1,TARGET,ACCEPTED,NO_POSITION,OPEN" in completed.stdout
        assert "TOTALS,3,2,0,1,1" in completed.stdout


def wait_until_blocked_on_a_lock(
    database: Database, contender: threading.Thread, timeout_s: float = 20
) -> None:
    """Wait until some session of this database waits on a row lock; fail if ``contender``
    finishes first (it was never blocked) or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with database.engine.connect() as connection:
            if connection.execute(query).scalar_one() > 0:
                return
        contender.join(timeout=0.01)
        if not contender.is_alive():
            raise AssertionError("the contender finished without waiting on the lease row lock")
    raise AssertionError(f"no session was waiting on a lock within {timeout_s} s")
