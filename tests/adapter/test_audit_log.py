"""The LIVE gates' audit trail (``audit_log``, migration 0004) on both dialects: rows go in and
come back newest first, and the database itself refuses UPDATE and DELETE (triggers), so not
even a bug in the engine can rewrite what an operator did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.storage import Database, UnitOfWork, create_database_engine, upgrade_schema
from domain.messages import AuditEntry

pytest_plugins = ["tests.conftest_postgres"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vigil.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade_schema(url)
    database = Database(create_database_engine(url))
    yield database
    database.dispose()


def entry(ts_ns: int, action: str, outcome: str = "ACCEPTED") -> AuditEntry:
    return AuditEntry(
        ts_ns=ts_ns,
        who="admin",
        address="127.0.0.1",
        action=action,
        outcome=outcome,
        detail=f"{action} at {ts_ns}",
        blockers=("UI LIVE confirmation not completed",) if outcome == "REFUSED" else (),
        mode="PAPER",
        rehearsal=True,
    )


def test_rows_come_back_newest_first(database: Database) -> None:
    base = 1_700_000_000_000_000_000  # distinct per run: the PostgreSQL server is shared
    with UnitOfWork(database) as uow:
        uow.audit.append(entry(base + 1, "CONNECT"), instance_id="t")
        uow.audit.append(entry(base + 2, "ARM", "REFUSED"), instance_id="t")
    with UnitOfWork(database) as uow:
        rows = uow.audit.list_recent(2)
    assert rows == [entry(base + 2, "ARM", "REFUSED"), entry(base + 1, "CONNECT")]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET who = 'someone else'", "DELETE FROM audit_log"],
    ids=["update", "delete"],
)
def test_the_database_refuses_to_rewrite_the_trail(database: Database, statement: str) -> None:
    with UnitOfWork(database) as uow:
        uow.audit.append(entry(1, "DISARM"), instance_id="t")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), database.transaction() as c:
        c.execute(sa.text(statement))
    with UnitOfWork(database) as uow:
        assert uow.audit.list_recent(1000)
