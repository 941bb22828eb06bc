"""On SQLite the order journal lives in a file of its own, written by nobody else.

An append must not wait for the database's writers (the write-behind's batches, the paper
venue's), and the fence must stay as strong as when the append and a takeover's lease write
shared one file: a new leader claims the journal file before it reads the tail, and every
append requires that claim to be its own. Two ``Database`` objects on one file stand for two
processes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters.storage import Database, LeaseFence, StaleEpoch, UnitOfWork, upgrade_schema
from adapters.storage.journal import (
    JournalKind,
    JournalUnavailable,
    OrderJournal,
    journal_file_for,
)
from adapters.storage.write_behind import APPLIED_SEQ_KEY, WriteBehind
from tests.adapter.test_order_journal import NOW, TTL_NS, make_bracket, make_order, take_lease

_DEADLINE_S = 5.0

OpenJournal = Callable[[], tuple[Database, OrderJournal]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    upgrade_schema(url)
    return url


@pytest.fixture
def open_journal(url: str) -> Iterator[OpenJournal]:
    """Opens a journal on a database of its own (a process of its own), closed at the end."""
    opened: list[tuple[Database, OrderJournal]] = []

    def open_one() -> tuple[Database, OrderJournal]:
        database = Database.from_url(url, migrate=False)
        journal = OrderJournal(database)
        opened.append((database, journal))
        return database, journal

    yield open_one
    for database, journal in opened:
        journal.close()
        database.dispose()


def place(journal: OrderJournal, holder: str, epoch: int, order_id: str, now: int = NOW) -> int:
    fence = LeaseFence(instance_id=holder, epoch=epoch, now_ns=now)
    order = make_order(client_order_id=f"{order_id}E", plan_client_id=order_id, epoch=epoch)
    bracket = make_bracket(plan_client_id=order_id, entry_order_id=f"{order_id}E")
    return journal.append(JournalKind.PLACE, order, fence, bracket=bracket)


def fence_row(path: Path) -> tuple[str, int] | None:
    with sqlite3.connect(path) as connection:
        row = connection.execute("SELECT holder, epoch FROM journal_fence").fetchone()
    connection.close()
    return None if row is None else (row[0], int(row[1]))


def restore_lease(database: Database, holder: str, epoch: int) -> None:
    """The lease row as a deposed leader's stale snapshot of the database still shows it."""
    with database.transaction() as connection:
        connection.exec_driver_sql(
            "UPDATE leader_lease SET holder = ?, epoch = ?, expires_ns = ?",
            (holder, epoch, NOW + 100 * TTL_NS),
        )


class TestWhereTheJournalLives:
    def test_beside_a_sqlite_database_file_and_in_the_database_otherwise(self) -> None:
        assert journal_file_for(make_url("sqlite:////srv/data/vigil.db")) == Path(
            "/srv/data/vigil.journal.db"
        )
        assert journal_file_for(make_url("sqlite:////srv/data/vigil")) == Path(
            "/srv/data/vigil.journal"
        )
        assert journal_file_for(make_url("sqlite://")) is None
        assert journal_file_for(make_url("sqlite:///:memory:")) is None
        assert journal_file_for(make_url("sqlite:///file:vigil.db?mode=rwc&uri=true")) is None
        assert journal_file_for(make_url("postgresql+psycopg://u:p@host/vigil")) is None

    def test_appends_go_to_the_journal_file_not_the_database(
        self, open_journal: OpenJournal, tmp_path: Path
    ) -> None:
        database, journal = open_journal()
        epoch = take_lease(database, "a")
        seq = place(journal, "a", epoch, "P1")

        assert journal.path == tmp_path / "vigil.journal.db" and journal.path.exists()
        with sqlite3.connect(journal.path) as connection:
            assert connection.execute("SELECT seq FROM order_journal").fetchall() == [(seq,)]
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
        with sqlite3.connect(tmp_path / "vigil.db") as connection:
            assert connection.execute("SELECT count(*) FROM order_journal").fetchone()[0] == 0


class TestNobodyElseWritesIt:
    def test_an_append_does_not_wait_for_the_databases_writers(
        self, open_journal: OpenJournal
    ) -> None:
        # The write-behind's batch (and the paper venue's) holds this process's SQLite write
        # lock and the database file's own: the append must not wait for either.
        database, journal = open_journal()
        epoch = take_lease(database, "a")
        place(journal, "a", epoch, "P1")
        holding, release = threading.Event(), threading.Event()

        def hold_a_database_write() -> None:
            with database.transaction() as connection:
                connection.exec_driver_sql(
                    "INSERT INTO control_state (key, value, updated_ns) VALUES ('x', 'y', 0)"
                )
                holding.set()
                release.wait(_DEADLINE_S * 4)

        writer = threading.Thread(target=hold_a_database_write, daemon=True)
        writer.start()
        assert holding.wait(_DEADLINE_S)
        appended: list[int] = []
        appender = threading.Thread(
            target=lambda: appended.append(place(journal, "a", epoch, "P2")), daemon=True
        )
        try:
            appender.start()
            appender.join(_DEADLINE_S)
            assert appended, "the append waited for the database's writer"
        finally:
            release.set()
            writer.join(_DEADLINE_S)
            appender.join(_DEADLINE_S)
        assert [entry.client_order_id for entry in journal.tail()] == ["P1E", "P2E"]


class TestTheClaim:
    def test_a_deposed_leaders_append_after_the_new_leaders_claim_is_refused(
        self, open_journal: OpenJournal
    ) -> None:
        old_database, old = open_journal()
        new_database, new = open_journal()
        old_epoch = take_lease(old_database, "old")
        before = place(old, "old", old_epoch, "P1")
        # The old leader's lease expires; the new one takes it and claims the journal before
        # reading the tail: the old leader's entry is in it.
        new_epoch = take_lease(new_database, "new", now_ns=NOW + 2 * TTL_NS)
        new.claim(LeaseFence(instance_id="new", epoch=new_epoch))
        assert [entry.seq for entry in new.tail()] == [before]

        # The old leader's statement may read a snapshot of the database from before the
        # takeover (here: the lease row put back as it was); the journal file refuses it.
        restore_lease(old_database, "old", old_epoch)
        with pytest.raises(StaleEpoch) as refused:
            place(old, "old", old_epoch, "P2")
        assert refused.value.holder == "new" and refused.value.current_epoch == new_epoch
        assert [entry.seq for entry in new.tail()] == [before]
        assert new.path is not None and fence_row(new.path) == ("new", new_epoch)

    def test_a_claim_never_lowers_the_epoch(self, open_journal: OpenJournal) -> None:
        old_database, old = open_journal()
        new_database, new = open_journal()
        old_epoch = take_lease(old_database, "old")
        new_epoch = take_lease(new_database, "new", now_ns=NOW + 2 * TTL_NS)
        new.claim(LeaseFence(instance_id="new", epoch=new_epoch))

        restore_lease(old_database, "old", old_epoch)
        with pytest.raises(StaleEpoch):
            old.claim(LeaseFence(instance_id="old", epoch=old_epoch))
        assert new.path is not None and fence_row(new.path) == ("new", new_epoch)

    def test_a_claim_needs_the_lease(self, open_journal: OpenJournal) -> None:
        database, journal = open_journal()
        take_lease(database, "other")
        with pytest.raises(StaleEpoch) as refused:
            journal.claim(LeaseFence(instance_id="me", epoch=1))
        assert refused.value.holder == "other"
        assert journal.path is not None and fence_row(journal.path) is None

    def test_this_process_retaking_its_own_lease_appends_on(
        self, open_journal: OpenJournal
    ) -> None:
        # A pause longer than the lease: the same holder takes it again at a new epoch (the
        # write-behind keeps its rows then, commit 37026aa); its journal goes on at that epoch.
        database, journal = open_journal()
        first = take_lease(database, "me")
        seq_first = place(journal, "me", first, "P1")
        second = take_lease(database, "me", now_ns=NOW + 2 * TTL_NS)
        journal.claim(LeaseFence(instance_id="me", epoch=second))

        seq_second = place(journal, "me", second, "P2", now=NOW + 2 * TTL_NS)
        with pytest.raises(StaleEpoch):
            place(journal, "me", first, "P3", now=NOW + 2 * TTL_NS)
        assert [(e.seq, e.epoch) for e in journal.tail()] == [
            (seq_first, first),
            (seq_second, second),
        ]

    def test_an_append_under_an_unclaimed_epoch_claims_first(
        self, open_journal: OpenJournal
    ) -> None:
        database, journal = open_journal()
        epoch = take_lease(database, "me")
        place(journal, "me", epoch, "P1")
        assert journal.path is not None and fence_row(journal.path) == ("me", epoch)


class TestSeqsOnlyGrow:
    def test_a_lost_journal_file_starts_above_the_applied_mark(
        self, open_journal: OpenJournal
    ) -> None:
        database, journal = open_journal()
        epoch = take_lease(database, "me")
        writer = WriteBehind(database, flush_interval_s=0.001, lease_holder="me")
        writer.start()
        try:
            for plan in ("P1", "P2", "P3"):
                seq = place(journal, "me", epoch, plan)
                writer.write(order=make_order(client_order_id=f"{plan}E"), journal_seq=seq)
            writer.flush(timeout_s=10)
        finally:
            writer.stop(timeout_s=5)
        assert writer.applied_seq == 3
        journal.close()
        assert journal.path is not None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal.path}{suffix}").unlink(missing_ok=True)

        _, recreated = open_journal()
        seq = place(recreated, "me", epoch, "P4")

        assert seq > 3
        assert [entry.client_order_id for entry in recreated.tail(3)] == ["P4E"]

    def test_entries_an_older_vigil_left_in_the_database_move_to_the_journal_file(
        self, open_journal: OpenJournal, tmp_path: Path
    ) -> None:
        # Today's main journalled into the database's own table: write three entries, then
        # put them there (as that version left them) and lose the file.
        database, journal = open_journal()
        epoch = take_lease(database, "me")
        for plan in ("P1", "P2", "P3"):
            place(journal, "me", epoch, plan)
        journal.close()
        assert journal.path is not None
        with sqlite3.connect(tmp_path / "vigil.db") as connection:
            connection.execute("ATTACH DATABASE ? AS journal", (str(journal.path),))
            connection.execute("INSERT INTO order_journal SELECT * FROM journal.order_journal")
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal.path}{suffix}").unlink(missing_ok=True)
        with UnitOfWork(database) as uow:
            uow.control.put(APPLIED_SEQ_KEY, "1", ts_ns=NOW)

        _, upgraded = open_journal()
        upgraded.claim(LeaseFence(instance_id="me", epoch=epoch))

        assert [(e.seq, e.client_order_id) for e in upgraded.tail(1)] == [(2, "P2E"), (3, "P3E")]
        with sqlite3.connect(tmp_path / "vigil.db") as connection:
            assert connection.execute("SELECT count(*) FROM order_journal").fetchone()[0] == 0
        connection.close()
        assert place(upgraded, "me", epoch, "P4") == 4
        # Claiming again (a restart, another incarnation) changes nothing.
        _, again = open_journal()
        again.claim(LeaseFence(instance_id="me", epoch=epoch))
        assert [e.seq for e in again.tail(1)] == [2, 3, 4]


class TestErrors:
    def test_a_journal_file_from_a_newer_vigil_is_refused(
        self, open_journal: OpenJournal, url: str
    ) -> None:
        path = journal_file_for(make_url(url))
        assert path is not None
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA user_version = 99")
        connection.close()
        _, journal = open_journal()

        with pytest.raises(JournalUnavailable, match="schema version 99") as refused:
            journal.tail()
        assert str(path) in str(refused.value)

    def test_a_journal_file_that_cannot_be_opened_names_its_path_and_the_cause(
        self, open_journal: OpenJournal, url: str
    ) -> None:
        path = journal_file_for(make_url(url))
        assert path is not None
        path.mkdir()  # a directory where the file should be
        database, journal = open_journal()
        epoch = take_lease(database, "me")

        with pytest.raises(JournalUnavailable) as refused:
            place(journal, "me", epoch, "P1")
        text = str(refused.value)
        assert text.startswith("JOURNAL_UNAVAILABLE") and str(path) in text
        assert "unable to open database file" in text
