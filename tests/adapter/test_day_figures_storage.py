"""The day figures' storage (migration 0005) on both dialects: counts only add up, the heat mark
only rises, engine starts are listed per day, and the recorder's stores are fenced to the lease
holder and keep their deltas when the store fails."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from adapters.metrics import ORDER_LATENCY_BUCKETS_MS
from adapters.storage import Database, UnitOfWork, create_database_engine, upgrade_schema
from adapters.storage.day_figures import DayFiguresRecorder
from adapters.storage.metadata import metadata
from adapters.storage.repositories import EngineStart
from adapters.storage.tables import day_figure_counts, day_heat, engine_starts
from domain.day_figures import DayDeltas, HeatMark

pytest_plugins = ["tests.conftest_postgres"]

_NEW_TABLES = (day_figure_counts.name, day_heat.name, engine_starts.name)


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


def unique_day(request: pytest.FixtureRequest) -> str:
    # The PostgreSQL server is shared by the session: each test uses days of its own.
    return f"{2000 + abs(hash(request.node.nodeid)) % 900:04d}-01-0{1 + len(request.node.name) % 9}"


def test_the_migration_creates_exactly_the_new_tables(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
        present = set(sa.inspect(connection).get_table_names())

    def concerns_new_table(difference: Any) -> bool:
        text = repr(difference)
        return any(f"'{name}'" in text or f"{name}." in text for name in _NEW_TABLES)

    assert set(_NEW_TABLES) <= present
    assert [d for d in differences if concerns_new_table(d)] == []


def test_counts_add_up_and_heat_only_rises(
    database: Database, request: pytest.FixtureRequest
) -> None:
    day = unique_day(request)
    first = DayDeltas()
    first.add(day, "signals", "orb_1", 3)
    first.add(day, "blocked", "HEAT_CAP", 1)
    first.see_heat(day, Decimal("1500.5"), 10)
    second = DayDeltas()
    second.add(day, "signals", "orb_1", 2)
    second.add(day, "signals", "ema_1", 1)
    second.see_heat(day, Decimal("900"), 20)  # lower: the mark stays
    third = DayDeltas()
    third.see_heat(day, Decimal("1500.5"), 5)  # equal and earlier: the earlier time wins
    for deltas in (first, second, third):
        with UnitOfWork(database) as uow:
            uow.day_figures.add(deltas, ts_ns=1)
    with UnitOfWork(database) as uow:
        figures = uow.day_figures.figures(day)
        assert uow.day_figures.figures("1999-12-31") is None
    assert figures is not None
    assert figures.signals_by_strategy == {"ema_1": 1, "orb_1": 5}
    assert figures.blocked_by_reason == {"HEAT_CAP": 1}
    assert figures.max_heat == HeatMark(rupees=Decimal("1500.5"), ts_ns=5)
    higher = DayDeltas()
    higher.see_heat(day, Decimal("1500.75"), 30)
    with UnitOfWork(database) as uow:
        uow.day_figures.add(higher, ts_ns=2)
    with UnitOfWork(database) as uow:
        assert uow.day_figures.figures(day).max_heat == HeatMark(  # type: ignore[union-attr]
            rupees=Decimal("1500.75"), ts_ns=30
        )


def test_engine_starts_are_listed_by_time(database: Database) -> None:
    base = 1_800_000_000_000_000_000 + abs(hash("starts")) % 10**12  # distinct per run

    def start(ts_ns: int, sha: str) -> EngineStart:
        return EngineStart(
            ts_ns=ts_ns, trading_day="2027-01-15", instance_id="vigil-test",
            lease_holder="vigil-test#1", config_sha=sha, git_sha="abc", mode="PAPER",
            timezone="Asia/Kolkata",
        )  # fmt: skip

    with UnitOfWork(database) as uow:
        for offset, sha in ((0, "a"), (10, "b"), (20, "c")):
            uow.engine_starts.record(start(base + offset, sha))
    with UnitOfWork(database) as uow:
        assert [s.config_sha for s in uow.engine_starts.between(base + 5, base + 21)] == ["b", "c"]
        assert uow.engine_starts.last_before(base + 5) == start(base, "a")


def test_the_recorder_stores_deltas_that_add_up_across_recorders(
    database: Database, request: pytest.FixtureRequest
) -> None:
    from domain.calendar import day_bounds_ns

    day = unique_day(request)
    noon = day_bounds_ns(day)[0] + 12 * 3600 * 10**9
    for _process in range(2):  # two processes on one day, one after the other
        recorder = DayFiguresRecorder(database, latency_bounds_ms=ORDER_LATENCY_BUCKETS_MS)
        recorder.count_signal("orb_1", noon)
        recorder.count_blocked("NOT_ARMED", noon)
        recorder.observe_ack(30.0, noon)
        recorder.observe_ack(6000.0, noon)
        recorder.flush()
        recorder.flush()  # nothing new: adds nothing but the "recorded" mark
    with UnitOfWork(database) as uow:
        figures = uow.day_figures.figures(day)
    assert figures is not None
    assert figures.signals_by_strategy == {"orb_1": 2}
    assert figures.blocked_by_reason == {"NOT_ARMED": 2}
    assert figures.ack_latency_buckets == {"50": 2, "+Inf": 2}


def test_a_store_refused_by_the_lease_fence_is_dropped(tmp_path: Path) -> None:
    # SQLite only: the PostgreSQL server is shared, and its lease row must stay untouched.
    from domain.calendar import day_bounds_ns

    url = f"sqlite:///{tmp_path / 'fenced.db'}"
    upgrade_schema(url)
    database = Database(create_database_engine(url))
    day = "2026-03-02"
    noon = day_bounds_ns(day)[0] + 12 * 3600 * 10**9
    with UnitOfWork(database) as uow:
        uow.lease.acquire_or_renew(instance_id="someone-else#1", now_ns=noon, ttl_ns=10**12)
    recorder = DayFiguresRecorder(
        database, latency_bounds_ms=ORDER_LATENCY_BUCKETS_MS, lease_holder="standby#2"
    )
    recorder.count_signal("orb_1", noon)
    recorder.flush()
    assert recorder.fenced_drops == 1 and recorder.pending().is_empty
    with UnitOfWork(database) as uow:
        assert uow.day_figures.figures(day) is None
    database.dispose()


def test_the_recorder_thread_stores_without_a_stop(tmp_path: Path) -> None:
    # What a SIGKILL would leave: only what the thread stored on its own, within an interval.
    from domain.calendar import day_bounds_ns
    from tests.helpers import wait_until

    url = f"sqlite:///{tmp_path / 'thread.db'}"
    upgrade_schema(url)
    database = Database(create_database_engine(url))
    noon = day_bounds_ns("2026-03-03")[0] + 12 * 3600 * 10**9
    recorder = DayFiguresRecorder(
        database, latency_bounds_ms=ORDER_LATENCY_BUCKETS_MS, flush_interval_s=0.05
    )
    recorder.start()
    try:
        recorder.count_approved("orb_1", noon)

        def stored() -> bool:
            with UnitOfWork(database) as uow:
                figures = uow.day_figures.figures("2026-03-03")
            return figures is not None and figures.approved == 1

        wait_until(stored, timeout_s=10, message="the thread's store")
    finally:
        recorder.stop()
        database.dispose()


def test_a_failed_store_keeps_its_counts_for_the_next(tmp_path: Path) -> None:
    from domain.calendar import day_bounds_ns

    url = f"sqlite:///{tmp_path / 'late.db'}"
    database = Database(create_database_engine(url))  # no tables yet: the store fails
    noon = day_bounds_ns("2026-03-04")[0] + 12 * 3600 * 10**9
    recorder = DayFiguresRecorder(database, latency_bounds_ms=ORDER_LATENCY_BUCKETS_MS)
    recorder.count_blocked("NOT_ARMED", noon)
    with pytest.raises(sa.exc.OperationalError):
        recorder.flush()
    recorder.count_blocked("NOT_ARMED", noon)
    assert recorder.pending().counts == {("2026-03-04", "blocked", "NOT_ARMED"): 2}
    upgrade_schema(url)
    recorder.flush()
    with UnitOfWork(database) as uow:
        figures = uow.day_figures.figures("2026-03-04")
    assert figures is not None
    assert (figures.blocked_by_reason, figures.flushes) == ({"NOT_ARMED": 2}, 1)
    database.dispose()
