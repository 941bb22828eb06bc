"""The post-close reconcile: ``reconcile(database)``, the ``python -m tools.reconcile`` exit
codes, and ``tools/reconcile_db.sql`` under the sqlite3 shell, on SQLite in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from adapters.storage import Database, UnitOfWork, create_database_engine, upgrade_schema
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.oco import BracketStatus
from tests.adapter.test_storage import make_bracket, make_fill, make_order, make_position
from tools.reconcile import ReconcileReport, reconcile

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_FILE = REPO_ROOT / "tools" / "reconcile_db.sql"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    upgrade_schema(url)
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(create_database_engine(url=database_url))
    yield database
    database.dispose()


def plant_bracket(
    database: Database,
    plan: str,
    *,
    bracket_status: BracketStatus = BracketStatus.OPEN,
    position_quantity: int | None = 50,
    position_status: str = "OPEN",
    stop_status: OrderStatus = OrderStatus.ACCEPTED,
    target_status: OrderStatus = OrderStatus.ACCEPTED,
) -> None:
    """A bracket with a filled entry, a stop and a target, and (unless ``position_quantity`` is
    None) its position row."""
    with UnitOfWork(database) as uow:
        uow.orders.add(
            make_order(
                client_order_id=f"{plan}E",
                plan_client_id=plan,
                status=OrderStatus.FILLED,
                filled_quantity=50,
            )
        )
        for leg, status in ((LegKind.STOP, stop_status), (LegKind.TARGET, target_status)):
            uow.orders.add(
                make_order(
                    client_order_id=f"{plan}{leg.value[0]}",
                    plan_client_id=plan,
                    leg=leg,
                    side=Side.SELL,
                    order_type=OrderType.STOP if leg is LegKind.STOP else OrderType.LIMIT,
                    status=status,
                )
            )
        uow.fills.add(
            make_fill(trade_id=f"{plan}-T1", client_order_id=f"{plan}E"),
            plan_client_id=plan,
            recorded_ns=1,
        )
        uow.brackets.upsert(
            make_bracket(
                plan_client_id=plan,
                status=bracket_status,
                entry_order_id=f"{plan}E",
                stop_order_id=f"{plan}S",
                target_order_id=f"{plan}T",
            )
        )
        if position_quantity is not None:
            uow.positions.upsert(
                make_position(position_id=plan, quantity=position_quantity, status=position_status)
            )


def plant_duplicate_client_order_id(database_url: str, client_order_id: str) -> None:
    """Rebuild ``orders`` without its unique constraint (as a broken schema would be) and store
    the same client_order_id twice."""
    engine = create_database_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE orders RENAME TO orders_constrained")
        connection.exec_driver_sql("CREATE TABLE orders AS SELECT * FROM orders_constrained")
        connection.exec_driver_sql("DROP TABLE orders_constrained")
    engine.dispose()
    database = Database(create_database_engine(database_url))
    for row_id in (1, 2):
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(client_order_id=client_order_id))
            uow.connection.execute(
                sa.text("UPDATE orders SET id = :id WHERE id IS NULL"), {"id": row_id}
            )
    database.dispose()


def run_cli(*arguments: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "tools.reconcile", *arguments],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestReconcile:
    def test_an_empty_database_is_clean(self, database: Database) -> None:
        report = reconcile(database)
        assert report == ReconcileReport(
            duplicates=[],
            orphans=[],
            summary={
                "orders_by_status": {},
                "orders": 0,
                "working_orders": 0,
                "open_positions": 0,
                "active_brackets": 0,
                "fills": 0,
            },
            clean=True,
        )

    def test_an_open_position_with_working_siblings_is_clean(self, database: Database) -> None:
        plant_bracket(database, "P1")
        report = reconcile(database)
        assert report.clean
        assert report.summary["orders_by_status"] == {"ACCEPTED": 2, "FILLED": 1}
        assert report.summary["working_orders"] == 2
        assert report.summary["open_positions"] == 1
        assert report.summary["active_brackets"] == 1
        assert report.summary["fills"] == 1

    def test_a_closed_bracket_whose_siblings_are_all_dead_is_clean(
        self, database: Database
    ) -> None:
        plant_bracket(
            database,
            "P1",
            bracket_status=BracketStatus.CLOSED,
            position_quantity=0,
            position_status="CLOSED",
            stop_status=OrderStatus.FILLED,
            target_status=OrderStatus.CANCELLED,
        )
        assert reconcile(database).clean

    def test_finds_a_working_sibling_of_a_closed_bracket(self, database: Database) -> None:
        plant_bracket(
            database,
            "P1",
            bracket_status=BracketStatus.CLOSED,
            position_quantity=0,
            position_status="CLOSED",
            stop_status=OrderStatus.FILLED,
            target_status=OrderStatus.ACCEPTED,
        )
        report = reconcile(database)
        assert not report.clean
        assert report.duplicates == []
        assert [(o.client_order_id, o.leg, o.reason) for o in report.orphans] == [
            ("P1T", "TARGET", "BRACKET_CLOSED")
        ]
        assert report.orphans[0].position_quantity == 0

    def test_finds_working_siblings_of_a_position_with_nothing_open(
        self, database: Database
    ) -> None:
        plant_bracket(database, "P1", position_quantity=0)
        report = reconcile(database)
        assert [(o.client_order_id, o.reason) for o in report.orphans] == [
            ("P1S", "POSITION_CLOSED"),
            ("P1T", "POSITION_CLOSED"),
        ]

    def test_finds_working_siblings_without_a_position(self, database: Database) -> None:
        plant_bracket(database, "P1", position_quantity=None)
        plant_bracket(database, "P2")
        report = reconcile(database)
        assert [(o.client_order_id, o.reason, o.bracket_status) for o in report.orphans] == [
            ("P1S", "NO_POSITION", "OPEN"),
            ("P1T", "NO_POSITION", "OPEN"),
        ]

    def test_finds_a_duplicate_client_order_id(self, database: Database, database_url: str) -> None:
        plant_duplicate_client_order_id(database_url, "PDUPE")
        report = reconcile(database)
        assert not report.clean
        assert [(d.client_order_id, d.copies) for d in report.duplicates] == [("PDUPE", 2)]
        with UnitOfWork(database) as uow:
            assert uow.orders.count_duplicates() == 1


class TestCommandLine:
    def test_exits_zero_and_says_clean_on_a_clean_database(
        self, database: Database, database_url: str
    ) -> None:
        plant_bracket(database, "P1")
        completed = run_cli("--database-url", database_url)
        assert completed.returncode == 0, completed.stderr
        assert "RESULT: CLEAN" in completed.stdout
        assert "open_positions=1" in completed.stdout

    def test_exits_one_and_names_the_orphan(self, database: Database, database_url: str) -> None:
        plant_bracket(database, "P1", position_quantity=None)
        completed = run_cli(database_url=database_url)  # the URL comes from DATABASE_URL
        assert completed.returncode == 1, completed.stderr
        assert "P1S" in completed.stdout
        assert "NO_POSITION" in completed.stdout

    def test_exits_one_on_a_duplicate_and_can_print_json(self, database_url: str) -> None:
        plant_duplicate_client_order_id(database_url, "PDUPE")
        completed = run_cli("--json", "--database-url", database_url)
        assert completed.returncode == 1, completed.stderr
        report = msgspec.json.decode(completed.stdout, type=ReconcileReport)
        assert report.duplicates[0].client_order_id == "PDUPE"
        assert report.clean is False

    def test_exits_two_when_the_database_file_does_not_exist(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere" / "vigil.db"
        completed = run_cli("--database-url", f"sqlite:///{missing}")
        assert completed.returncode == 2
        assert "no SQLite database" in completed.stderr
        assert not missing.exists()

    def test_exits_two_when_the_tables_are_missing(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.db"
        engine = create_database_engine(f"sqlite:///{empty}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
        engine.dispose()
        completed = run_cli("--database-url", f"sqlite:///{empty}")
        assert completed.returncode == 2
        assert "cannot read the database" in completed.stderr


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
class TestSqlScript:
    def run_script(self, database_url: str) -> str:
        path = sa.engine.make_url(database_url).database
        assert path is not None
        completed = subprocess.run(
            ["sqlite3", "-bail", "-header", "-csv", path],
            stdin=SQL_FILE.open(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == ""
        return completed.stdout

    def test_reports_nothing_but_the_summary_on_a_clean_database(
        self, database: Database, database_url: str
    ) -> None:
        plant_bracket(database, "P1")
        output = self.run_script(database_url)
        assert "ORPHAN_SIBLING" not in output
        assert "DUPLICATE_CLIENT_ORDER_ID" not in output
        assert "TOTALS,3,2,1,1,1" in output

    def test_reports_the_same_orphans_as_the_python_tool(
        self, database: Database, database_url: str
    ) -> None:
        plant_bracket(database, "P1", position_quantity=None)
        plant_bracket(database, "P2", position_quantity=0)
        plant_bracket(
            database,
            "P3",
            bracket_status=BracketStatus.CLOSED,
            position_quantity=0,
            position_status="CLOSED",
            stop_status=OrderStatus.CANCELLED,
        )
        output = self.run_script(database_url)
        found = {
            (fields[1], fields[5])
            for fields in (line.split(",") for line in output.splitlines())
            if fields[0] == "ORPHAN_SIBLING"
        }
        expected = {(o.client_order_id, o.reason) for o in reconcile(database).orphans}
        assert found == expected
        assert len(found) == 5

    def test_reports_a_duplicate_client_order_id(self, database_url: str) -> None:
        plant_duplicate_client_order_id(database_url, "PDUPE")
        assert "DUPLICATE_CLIENT_ORDER_ID,PDUPE,2" in self.run_script(database_url)
