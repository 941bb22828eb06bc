"""Engine storage on SQLite in a temp dir: migrations, repositories, the unit of work, and
exact Decimal round trips. The schema always comes from the Alembic migrations.

The ``make_*`` builders default every field; other storage test modules import them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from adapters.storage import (
    Database,
    DuplicateClientOrderId,
    KillSwitchRecord,
    OrderNotFound,
    PositionRow,
    UnitOfWork,
    create_database_engine,
    upgrade_schema,
)
from adapters.storage.metadata import metadata
from adapters.storage.tables import brackets, engine_tables
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.orders import FillReport
from domain.oco import Bracket, BracketStatus
from domain.orders import Order

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_REVISION = "0001_engine_tables"


def head_revision() -> str:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


# ---------------------------------------------------------------------------------------------
# builders and fixtures
# ---------------------------------------------------------------------------------------------


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
        "ts_created": 1_000,
        "ts_updated": 1_000,
    }
    fields.update(overrides)
    return Order(**fields)


def make_fill(**overrides: Any) -> FillReport:
    fields: dict[str, Any] = {
        "trade_id": "T1",
        "client_order_id": "PABCE",
        "broker_order_id": "B1",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": 50,
        "price": Decimal("123.45"),
        "ts_event": 2_000,
    }
    fields.update(overrides)
    return FillReport(**fields)


def make_bracket(**overrides: Any) -> Bracket:
    fields: dict[str, Any] = {
        "plan_client_id": "PABC",
        "strategy": "orb",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "planned_quantity": 50,
        "entry_price": Decimal("123.45"),
        "stop_price": Decimal("120.05"),
        "target_price": Decimal("130.10"),
        "status": BracketStatus.OPEN,
        "entry_order_id": "PABCE",
        "stop_order_id": "PABCS",
        "target_order_id": "PABCT",
        "exit_order_ids": ("PABCX1", "PABCX2"),
        "entry_filled": 50,
        "exit_filled": 20,
        "ts_opened": 1_000,
        "ts_updated": 3_000,
    }
    fields.update(overrides)
    return Bracket(**fields)


def make_position(**overrides: Any) -> PositionRow:
    fields: dict[str, Any] = {
        "position_id": "PABC",
        "strategy": "orb",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": 50,
        "average_price": Decimal("123.45"),
        "realized_pnl": Decimal("0"),
        "status": "OPEN",
        "updated_ns": 3_000,
    }
    fields.update(overrides)
    return PositionRow(**fields)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'vigil.db'}"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path)
    upgrade_schema(url)
    database = Database(create_database_engine(url))
    yield database
    database.dispose()


# ---------------------------------------------------------------------------------------------
# schema and migrations
# ---------------------------------------------------------------------------------------------


class TestMigrations:
    def test_upgrade_creates_exactly_what_the_table_definitions_describe(
        self, database: Database
    ) -> None:
        engine_table_names = {table.name for table in engine_tables}
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables_present = set(sa.inspect(connection).get_table_names())

        def concerns_engine_table(difference: Any) -> bool:
            text = repr(difference)
            return any(f"'{name}'" in text or f"{name}." in text for name in engine_table_names)

        assert engine_table_names <= tables_present
        assert [d for d in differences if concerns_engine_table(d)] == []

    def test_the_engine_tables_are_the_first_revision(self) -> None:
        config = Config(str(REPO_ROOT / "alembic.ini"))
        config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
        script = ScriptDirectory.from_config(config)
        revisions = [revision.revision for revision in script.walk_revisions()]
        assert revisions[-1] == ENGINE_REVISION
        assert script.get_revision(ENGINE_REVISION).down_revision is None

    def test_upgrade_is_idempotent_and_records_the_head_revision(self, tmp_path: Path) -> None:
        url = sqlite_url(tmp_path)
        upgrade_schema(url)
        upgrade_schema(url)
        engine = create_database_engine(url)
        with engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert [row[0] for row in versions] == [head_revision()]
        engine.dispose()

    @pytest.mark.parametrize("how", ["DATABASE_URL", "-x url"])
    def test_alembic_upgrade_head_from_the_repo_root_migrates_the_named_database(
        self, tmp_path: Path, how: str
    ) -> None:
        url = sqlite_url(tmp_path)
        environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        command = [sys.executable, "-m", "alembic"]
        if how == "DATABASE_URL":
            environment["DATABASE_URL"] = url
        else:
            command += ["-x", f"url={url}"]
        completed = subprocess.run(
            [*command, "upgrade", "head"],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        engine = create_database_engine(url)
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == head_revision()
        engine.dispose()
        assert {table.name for table in engine_tables} <= tables


# ---------------------------------------------------------------------------------------------
# unit of work
# ---------------------------------------------------------------------------------------------


class TestUnitOfWork:
    def test_commits_on_a_clean_exit(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order())
        with UnitOfWork(database) as uow:
            assert uow.orders.get("PABCE") is not None

    def test_rolls_back_everything_when_the_block_raises(self, database: Database) -> None:
        with pytest.raises(RuntimeError, match="boom"), UnitOfWork(database) as uow:
            uow.orders.add(make_order())
            uow.brackets.upsert(make_bracket())
            raise RuntimeError("boom")
        with UnitOfWork(database) as uow:
            assert uow.orders.get("PABCE") is None
            assert uow.brackets.get("PABC") is None


# ---------------------------------------------------------------------------------------------
# orders
# ---------------------------------------------------------------------------------------------


class TestOrders:
    def test_round_trips_every_field(self, database: Database) -> None:
        order = make_order(
            leg=LegKind.STOP,
            side=Side.SELL,
            order_type=OrderType.STOP,
            price=None,
            trigger_price=Decimal("120.05"),
            status=OrderStatus.PARTIALLY_FILLED,
            filled_quantity=20,
            average_fill_price=Decimal("120.0333"),
            broker_order_id="B-77",
            epoch=3,
            reason="partial",
            ts_created=11,
            ts_updated=12,
        )
        with UnitOfWork(database) as uow:
            uow.orders.add(order)
        with UnitOfWork(database) as uow:
            assert uow.orders.get(order.client_order_id) == order

    def test_refuses_a_second_order_with_the_same_client_order_id(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order())
        with pytest.raises(DuplicateClientOrderId) as raised, UnitOfWork(database) as uow:
            uow.orders.add(make_order(quantity=99))
        assert raised.value.client_order_id == "PABCE"
        assert "PABCE" in str(raised.value)
        with UnitOfWork(database) as uow:
            stored = uow.orders.get("PABCE")
            assert stored is not None
            assert stored.quantity == 50
            assert uow.orders.count_duplicates() == 0

    def test_update_overwrites_the_stored_order(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order())
        changed = make_order(
            status=OrderStatus.FILLED,
            filled_quantity=50,
            average_fill_price=Decimal("123.40"),
            broker_order_id="B1",
            ts_updated=5_000,
        )
        with UnitOfWork(database) as uow:
            uow.orders.update(changed)
        with UnitOfWork(database) as uow:
            assert uow.orders.get("PABCE") == changed

    def test_update_of_an_unknown_order_raises_order_not_found(self, database: Database) -> None:
        with pytest.raises(OrderNotFound, match="NOPE"), UnitOfWork(database) as uow:
            uow.orders.update(make_order(client_order_id="NOPE"))

    def test_list_working_leaves_out_filled_cancelled_and_rejected(
        self, database: Database
    ) -> None:
        statuses = {
            "O1": OrderStatus.PENDING_SUBMIT,
            "O2": OrderStatus.ACCEPTED,
            "O3": OrderStatus.FILLED,
            "O4": OrderStatus.CANCELLED,
            "O5": OrderStatus.REJECTED,
            "O6": OrderStatus.PENDING_CANCEL,
        }
        with UnitOfWork(database) as uow:
            for number, (order_id, status) in enumerate(statuses.items()):
                uow.orders.add(
                    make_order(client_order_id=order_id, status=status, ts_created=number)
                )
        with UnitOfWork(database) as uow:
            working = [order.client_order_id for order in uow.orders.list_working()]
        assert working == ["O1", "O2", "O6"]

    def test_list_recent_is_newest_first_and_limited(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            for number in range(5):
                uow.orders.add(make_order(client_order_id=f"O{number}", ts_created=number))
        with UnitOfWork(database) as uow:
            recent = [order.client_order_id for order in uow.orders.list_recent(limit=3)]
        assert recent == ["O4", "O3", "O2"]

    def test_list_for_plan_returns_only_that_plans_legs(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(client_order_id="PABCE", ts_created=1))
            uow.orders.add(make_order(client_order_id="PABCS", leg=LegKind.STOP, ts_created=2))
            uow.orders.add(make_order(client_order_id="PXYZE", plan_client_id="PXYZ"))
        with UnitOfWork(database) as uow:
            legs = [order.client_order_id for order in uow.orders.list_for_plan("PABC")]
        assert legs == ["PABCE", "PABCS"]


# ---------------------------------------------------------------------------------------------
# fills
# ---------------------------------------------------------------------------------------------


class TestFills:
    def test_a_repeated_trade_id_is_skipped_and_the_transaction_stays_usable(
        self, database: Database
    ) -> None:
        with UnitOfWork(database) as uow:
            assert uow.fills.add(make_fill(), plan_client_id="PABC", recorded_ns=1) is True
            assert uow.fills.add(make_fill(), plan_client_id="PABC", recorded_ns=2) is False
            assert uow.fills.add(make_fill(trade_id="T2"), plan_client_id="PABC", recorded_ns=3)
        with UnitOfWork(database) as uow:
            assert uow.fills.add(make_fill(), plan_client_id="PABC", recorded_ns=4) is False
            assert uow.fills.trade_ids() == {"T1", "T2"}

    def test_list_for_plan_round_trips_the_fill_reports_in_event_order(
        self, database: Database
    ) -> None:
        first = make_fill(trade_id="T1", quantity=20, price=Decimal("123.45"), ts_event=10)
        second = make_fill(trade_id="T2", quantity=30, price=Decimal("123.5"), ts_event=20)
        other = make_fill(trade_id="T3", client_order_id="PXYZE")
        with UnitOfWork(database) as uow:
            uow.fills.add(second, plan_client_id="PABC", recorded_ns=1)
            uow.fills.add(first, plan_client_id="PABC", recorded_ns=1)
            uow.fills.add(other, plan_client_id="PXYZ", recorded_ns=1)
        with UnitOfWork(database) as uow:
            assert uow.fills.list_for_plan("PABC") == [first, second]


# ---------------------------------------------------------------------------------------------
# brackets and positions
# ---------------------------------------------------------------------------------------------


class TestBrackets:
    def test_round_trips_the_whole_bracket_through_json(self, database: Database) -> None:
        bracket = make_bracket(flatten_reason="EOD")
        with UnitOfWork(database) as uow:
            uow.brackets.upsert(bracket)
        with UnitOfWork(database) as uow:
            loaded = uow.brackets.get("PABC")
        assert loaded == bracket
        assert loaded is not None
        assert loaded.exit_order_ids == ("PABCX1", "PABCX2")
        assert loaded.stop_price == Decimal("120.05")

    def test_upsert_replaces_the_state_and_the_plain_columns(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.brackets.upsert(make_bracket())
            uow.brackets.upsert(
                make_bracket(status=BracketStatus.CLOSED, target_order_id=None, ts_updated=9)
            )
        with database.transaction() as connection:
            row = connection.execute(sa.select(brackets)).one()
        assert (row.status, row.entry_order_id, row.stop_order_id, row.target_order_id) == (
            "CLOSED",
            "PABCE",
            "PABCS",
            None,
        )
        assert row.updated_ns == 9
        assert msgspec.json.decode(row.state, type=Bracket).status is BracketStatus.CLOSED

    def test_list_active_leaves_out_closed_and_cancelled(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            for plan, status in [
                ("P1", BracketStatus.PENDING_ENTRY),
                ("P2", BracketStatus.OPEN),
                ("P3", BracketStatus.FLATTENING),
                ("P4", BracketStatus.CLOSED),
                ("P5", BracketStatus.CANCELLED),
            ]:
                uow.brackets.upsert(make_bracket(plan_client_id=plan, status=status))
        with UnitOfWork(database) as uow:
            active = sorted(b.plan_client_id for b in uow.brackets.list_active())
        assert active == ["P1", "P2", "P3"]


class TestPositions:
    def test_list_open_follows_upserts_until_the_position_closes(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.positions.upsert(make_position())
            uow.positions.upsert(make_position(position_id="P2", side=Side.SELL))
        with UnitOfWork(database) as uow:
            assert {p.position_id for p in uow.positions.list_open()} == {"PABC", "P2"}
            closed = make_position(quantity=0, status="CLOSED", realized_pnl=Decimal("-12.5"))
            uow.positions.upsert(closed)
        with UnitOfWork(database) as uow:
            assert [p.position_id for p in uow.positions.list_open()] == ["P2"]
            assert uow.positions.get("PABC") == closed
            assert uow.positions.list_open()[0].side is Side.SELL


# ---------------------------------------------------------------------------------------------
# money
# ---------------------------------------------------------------------------------------------


class TestDecimalExactness:
    @pytest.mark.parametrize(
        "value",
        [
            "123.45",
            "0.05",
            "0.000001",
            "-4321.123456",
            "99999999999999.999999",
            "100",
            "0",
        ],
    )
    def test_prices_come_back_exactly_equal(self, database: Database, value: str) -> None:
        price = Decimal(value)
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(price=price, average_fill_price=price))
        with UnitOfWork(database) as uow:
            stored = uow.orders.get("PABCE")
        assert stored is not None
        assert stored.price == price
        assert stored.average_fill_price == price
        assert str(stored.price) == value

    def test_a_pnl_sum_that_floats_get_wrong_comes_back_exact(self, database: Database) -> None:
        realized = sum((Decimal("0.1"), Decimal("0.2"), Decimal("1234.55")), Decimal(0))
        with UnitOfWork(database) as uow:
            uow.positions.upsert(make_position(realized_pnl=realized))
        with UnitOfWork(database) as uow:
            stored = uow.positions.get("PABC")
        assert stored is not None
        assert stored.realized_pnl == Decimal("1234.85")
        assert str(stored.realized_pnl) == "1234.85"

    def test_more_than_six_decimals_round_half_even_to_six(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.orders.add(make_order(average_fill_price=Decimal("123.4566665")))
        with UnitOfWork(database) as uow:
            stored = uow.orders.get("PABCE")
        assert stored is not None
        assert stored.average_fill_price == Decimal("123.456666")

    def test_a_float_price_is_refused(self, database: Database) -> None:
        with (
            pytest.raises(sa.exc.StatementError, match=r"pass a decimal\.Decimal"),
            UnitOfWork(database) as uow,
        ):
            uow.orders.add(make_order(price=123.45))


# ---------------------------------------------------------------------------------------------
# events, kill switch, control state, daily reports
# ---------------------------------------------------------------------------------------------


class TestAuditAndControl:
    def test_events_come_back_newest_first_and_filter_by_kind(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            uow.events.append("MODE_SWITCH", {"to": "LIVE"}, ts_ns=1, instance_id="a")
            uow.events.append(
                "KILL_SWITCH",
                KillSwitchRecord(active=True, reason="DAILY_LOSS_LIMIT", updated_ns=2),
                ts_ns=2,
                instance_id="a",
            )
            uow.events.append("TRIPWIRE", {"loss": Decimal("-5.5")}, ts_ns=3, instance_id="b")
        with UnitOfWork(database) as uow:
            recent = uow.events.list_recent()
            kill = uow.events.list_recent(event="KILL_SWITCH")
            limited = uow.events.list_recent(limit=1)
        assert [row.event for row in recent] == ["TRIPWIRE", "KILL_SWITCH", "MODE_SWITCH"]
        assert recent[0].payload == {"loss": "-5.5"}
        assert recent[0].instance_id == "b"
        assert [row.payload["reason"] for row in kill] == ["DAILY_LOSS_LIMIT"]
        assert [row.event for row in limited] == ["TRIPWIRE"]

    def test_kill_switch_state_is_a_single_overwritten_record(self, database: Database) -> None:
        tripped = KillSwitchRecord(
            active=True,
            reason="DAILY_LOSS_LIMIT",
            detail="loss=5000",
            activated_ns=10,
            updated_ns=10,
        )
        reset = KillSwitchRecord(
            active=False,
            reason="DAILY_LOSS_LIMIT",
            detail="loss=5000",
            activated_ns=10,
            reset_ns=20,
            updated_ns=20,
        )
        with UnitOfWork(database) as uow:
            assert uow.kill_switch.load() is None
            uow.kill_switch.save(tripped)
        with UnitOfWork(database) as uow:
            assert uow.kill_switch.load() == tripped
            uow.kill_switch.save(reset)
        with UnitOfWork(database) as uow:
            assert uow.kill_switch.load() == reset

    def test_control_state_and_daily_reports_round_trip(self, database: Database) -> None:
        with UnitOfWork(database) as uow:
            assert uow.control.get("mode") is None
            uow.control.put("mode", '"PAPER"', ts_ns=1)
            uow.control.put("mode", '"LIVE"', ts_ns=2)
            uow.daily_reports.put("2025-01-02", {"pnl": Decimal("10.5"), "trades": 3}, ts_ns=3)
        with UnitOfWork(database) as uow:
            assert uow.control.get("mode") == '"LIVE"'
            assert uow.daily_reports.get("2025-01-02") == {"pnl": "10.5", "trades": 3}
            assert uow.daily_reports.get("2025-01-03") is None
