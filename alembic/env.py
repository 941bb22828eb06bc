"""Alembic environment: which database, and which metadata the migrations describe.

The URL comes from, in order: ``-x url=...``; ``sqlalchemy.url`` in the config (set by
``adapters.storage.database.upgrade_schema``); the ``DATABASE_URL`` environment variable (a
``.env`` file in the working directory is read but never overrides the environment); and
finally ``sqlite:///data/vigil.db``. ``target_metadata`` is the one shared ``metadata`` with
every table registered: the engine's and the paper venue's books.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import adapters.storage.tables  # noqa: E402  (registers the engine tables)
from adapters.storage.database import create_database_engine  # noqa: E402
from adapters.storage.metadata import metadata  # noqa: E402

try:
    import adapters.brokers.paper.books  # noqa: F401  (registers the venue books)
except ImportError as error:  # pragma: no cover - only until the paper broker lands
    if error.name not in {"adapters.brokers.paper.books", "adapters.brokers.paper"}:
        raise

__all__: list[str] = []

DEFAULT_DATABASE_URL = "sqlite:///data/vigil.db"

config = context.config
target_metadata = metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    from_x = context.get_x_argument(as_dictionary=True).get("url")
    if from_x:
        return from_x
    from_config = config.get_main_option("sqlalchemy.url")
    if from_config:
        return from_config
    try:
        from dotenv import load_dotenv

        load_dotenv(override=False)
    except ImportError:  # pragma: no cover - python-dotenv is a declared dependency
        pass
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _database_url()
    engine = create_database_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things; batch mode rebuilds the table instead
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
