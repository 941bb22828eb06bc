"""Database engine creation, schema migration, and the transaction boundary.

SQLite (WAL) by default under ``data/``; PostgreSQL through ``DATABASE_URL``. The schema is
owned by Alembic: ``upgrade_schema`` runs ``alembic upgrade head`` in-process, the same thing an
operator runs from the repo root.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["Database", "create_database_engine", "upgrade_schema"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def create_database_engine(url: str) -> Engine:
    """Create an engine. For SQLite: create the parent folder, WAL, foreign keys, busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=False,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def upgrade_schema(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision."""
    # imported by module path: ruff's isort would take the bare name ``alembic`` for the repo's
    # own alembic/ folder and split the imports
    import alembic.command
    import alembic.config

    config = alembic.config.Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    alembic.command.upgrade(config, "head")


class Database:
    """Owns the engine. ``transaction()`` commits on a clean exit and rolls back on an error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite allows one writer per file, and a thread that finds it locked waits in
        # sqlite's busy handler, which sleeps 1, 2, 5, 10... ms between tries. Serialising
        # this process's transactions with a lock hands the file over without those sleeps.
        # (PostgreSQL needs no such thing.)
        self._sqlite_lock: threading.RLock | None = (
            threading.RLock() if engine.dialect.name == "sqlite" else None
        )

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> Database:
        if migrate:
            upgrade_schema(url)
        return cls(create_database_engine(url))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self._sqlite_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._sqlite_lock, self.engine.begin() as connection:
            yield connection

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()
