"""Database engine creation, schema migration, and the transaction boundary.

SQLite (WAL) by default under ``data/``; PostgreSQL through ``DATABASE_URL``. The schema is
owned by Alembic: ``upgrade_schema`` runs ``alembic upgrade head`` in-process, the same thing an
operator runs from the repo root.

``Database.from_url`` is the start-up path: it opens and migrates, and turns every way that can
fail (a malformed URL, an unknown driver, a SQLite file whose folder cannot be created or
written, an unreachable or refusing server, a failed migration) into one
``DatabaseUnavailable`` whose text names the URL (password hidden) or the SQLite path, and the
cause, on one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "create_database_engine",
    "redact_database_url",
    "upgrade_schema",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

# A server that does not answer must not hang a start (or a lease renewal) for minutes.
_POSTGRES_CONNECT_TIMEOUT_S = 10
# user:password@ in a URL SQLAlchemy cannot parse: hide the password all the same
_URL_PASSWORD = re.compile(r"(?P<head>://[^/:@]*:)[^@/]*(?P<tail>@)")


class DatabaseUnavailable(Exception):
    """The database cannot be opened or migrated. ``str()`` is one line for an operator:
    which database (the SQLite path, or the URL with its password hidden) and why.

    Attributes:
        where: the SQLite file path or the redacted URL.
        cause: what went wrong, in the driver's or the operating system's words.
    """

    def __init__(self, where: str, cause: str) -> None:
        self.where = where
        self.cause = " ".join(cause.split())  # one line, whatever the driver printed
        super().__init__(f"database {where} cannot be used: {self.cause}")


def redact_database_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", url)


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
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = _POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args
    )


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
        """Open the database at ``url`` (migrated to head unless ``migrate`` is False) and
        check that it answers.

        Raises:
            DatabaseUnavailable: it cannot be opened, reached or migrated; the text names the
                SQLite path or the redacted URL and the cause, on one line.
        """
        parsed = _parse(url)
        where = _describe_location(parsed)
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite_location(parsed, where)
        engine: Engine | None = None
        try:
            if migrate:
                upgrade_schema(url)
            engine = create_database_engine(url)
            with engine.connect():
                pass
        except NoSuchModuleError as error:
            raise DatabaseUnavailable(where, f"unknown database driver: {error}") from error
        except ImportError as error:
            raise DatabaseUnavailable(
                where, f"the database driver is not installed: {error}"
            ) from error
        except DBAPIError as error:
            if engine is not None:
                engine.dispose()
            cause = _without_password(_driver_message(error), parsed)
            raise DatabaseUnavailable(where, cause) from error
        except SQLAlchemyError as error:
            if engine is not None:
                engine.dispose()
            raise DatabaseUnavailable(where, _without_password(str(error), parsed)) from error
        except _alembic_errors() as error:
            raise DatabaseUnavailable(where, f"schema migration failed: {error}") from error
        return cls(engine)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self._sqlite_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._sqlite_lock, self.engine.begin() as connection:
            yield connection

    def write_lock(self) -> contextlib.AbstractContextManager[object]:
        """The lock this process's SQLite writers share (a no-op on PostgreSQL): taken by
        ``transaction()`` and by writers on connections of their own (the order journal)."""
        if self._sqlite_lock is None:
            return contextlib.nullcontext()
        return self._sqlite_lock

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            redact_database_url(url),
            "not a database URL (expected e.g. sqlite:///data/vigil.db or "
            "postgresql+psycopg://user:password@host:5432/vigil)",
        ) from None


def _describe_location(parsed: URL) -> str:
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"SQLite file {Path(parsed.database).absolute()}"
    return parsed.render_as_string(hide_password=True)


def _check_sqlite_location(parsed: URL, where: str) -> None:
    # SQLite's own word for all of these is "unable to open database file": say which.
    if parsed.database in (None, "", ":memory:") or parsed.query.get("uri"):
        return
    path = Path(parsed.database)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DatabaseUnavailable(
            where, f"its folder {folder.absolute()} cannot be created: a part of it is a file"
        ) from None
    except OSError as error:
        raise DatabaseUnavailable(
            where, f"its folder {folder.absolute()} cannot be created: {_os_reason(error)}"
        ) from None
    if path.is_dir():
        raise DatabaseUnavailable(where, "it is a directory, not a database file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseUnavailable(where, "the file is not readable and writable by this user")
    # SQLite writes its -wal and -shm files beside the database, so the folder must be writable
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(
            where, f"its folder {folder.absolute()} is not writable by this user"
        )


def _without_password(text: str, parsed: URL) -> str:
    # Drivers do not usually echo the password, but a DSN in an error message would.
    password = parsed.password
    return text.replace(str(password), "***") if password else text


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error)


def _driver_message(error: DBAPIError) -> str:
    # The driver's own words say it best ("connection refused", "password authentication
    # failed", "unable to open database file"); SQLAlchemy's wrapper only adds the statement
    # and a help link.
    return str(error.orig).strip() or type(error.orig).__name__


def _alembic_errors() -> tuple[type[BaseException], ...]:
    import alembic.util.exc

    return (alembic.util.exc.CommandError,)
