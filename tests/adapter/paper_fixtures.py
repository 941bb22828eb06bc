"""Fixtures of the paper venue's adapter tests: a fresh migrated SQLite database per test,
copied from one migrated per module, and a manual clock. A module takes them with
``pytest_plugins = ["tests.adapter.paper_fixtures"]``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.storage.database import Database, create_database_engine, upgrade_schema
from domain.clock import ManualClock


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Migrating once and copying the file keeps each test's database fresh and the module fast.
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_schema(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(tmp_path: Path, migrated_template: Path) -> str:
    path = tmp_path / "venue.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(create_database_engine(database_url))
    yield database
    database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
