"""The order actor's write-ahead journal: one fenced INSERT before every broker call.

The record that must exist before the order actor calls the broker (a place, a resend, a
cancel, a cancel resend, a resize) is one row appended to ``order_journal`` by one raw statement
on a DBAPI connection of the journal's own (sqlite3 or psycopg, autocommit, fixed statement text
the driver caches and prepares): no SQLAlchemy statement building and no unit of work on the
hot path. The relational tables (orders, brackets, fills, positions, events) are brought up to
date behind it by ``adapters.storage.write_behind.WriteBehind``, which records in
``control_state`` (``order_journal.applied_seq``) the seq they have caught up with; the journal
deletes the entries at or below that mark itself (``trim``, from the order actor's thread, on
its timer); recovery reads the tables, then the entries still here (``tail``).

Where the journal lives:

- **SQLite, a database file**: in a file of its own beside the database, ``journal_file_for``
  (``data/vigil.db`` -> ``data/vigil.journal.db``), written only by the order actor's thread of
  the leading process. SQLite allows one writer per file: sharing the database's file made every
  append wait for the write-behind's and the paper venue's batches (``Database.write_lock``,
  ~4.6 ms per append during a flatten instead of ~30 us). The journal's connection opens that
  file with the engine's pragmas (WAL) and ATTACHes the database as ``engine_db`` to read
  ``leader_lease``, ``orders`` and ``control_state`` in the same statement; it never writes the
  database, except once, to move entries an older Vigil left in its ``order_journal`` table
  (``claim``). The file's schema is made here, from ``journal_metadata``, and versioned in
  ``PRAGMA user_version`` (``JOURNAL_SCHEMA_VERSION``); a file from a newer Vigil is refused.
  Back both files up together; a lost journal file loses only entries the tables had not caught
  up with (the broker reconciliation settles those orders), never the seq order (see below).
- **PostgreSQL**, and SQLite without a file (``:memory:``, a ``uri=true`` URL): the table
  ``order_journal`` of the database itself (migration 0003), as before; the lease row and the
  append serialise there.

Database-level guarantees, in the one statement:

- **The fence.** ``INSERT ... SELECT ... WHERE EXISTS`` the lease row held by this holder at
  this epoch and unexpired at ``fence.now_ns`` (the rule of ``repositories._lease_held``; on
  PostgreSQL the lease row is share-locked until the statement commits, so a takeover waits
  for it). In a journal file of its own that is not enough: the append's snapshot of the
  database may predate a takeover's commit while the new leader reads the tail before the
  append commits. So the file holds a fence row (``journal_fence``: holder, epoch) that a new
  leader *claims* (``claim``: writes its holder and epoch, only ever raising the epoch) in a
  write transaction of the journal file before its recovery reads the tail, and every append
  also requires that row to name its holder and epoch. Both serialise on the journal file's
  write lock: an old leader's append commits before the claim (the new leader's tail has it) or
  is refused. Nothing inserted means deposed: ``StaleEpoch``, and no broker call may follow.
- **Idempotency.** A PLACE of a ``client_order_id`` already in ``orders`` is not inserted
  (``NOT EXISTS`` on the unique index), and one already journalled is refused by the partial
  unique index on PLACE rows: ``DuplicateClientOrderId`` either way.
- **Seqs only grow.** ``seq`` is AUTOINCREMENT (a sequence on PostgreSQL), and a claim raises
  the journal file's sequence to at least the applied mark: a new or lost file never hands out
  a seq at or below it, which recovery (``tail(applied_seq)``) would skip.

Payloads are msgpack (msgspec): the order as it was when the call was decided and, for a
place, its bracket, because recovery needs the bracket to protect an entry that fills while
the tables are still behind.

Not thread-safe: one thread (the order actor's) appends, claims and trims. Any other database
error closes the connection (the next call reconnects) and is raised as ``JournalUnavailable``
(naming the journal and the driver's words), which the order actor treats like any storage
error: its handler fails and the supervisor restarts it; nothing is sent.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import BigInteger, Column, MetaData, String, Table
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateIndex, CreateTable

from adapters.storage.database import create_database_engine
from adapters.storage.repositories import DuplicateClientOrderId, LeaseFence, StaleEpoch
from adapters.storage.tables import order_journal
from adapters.storage.write_behind import APPLIED_SEQ_KEY
from domain.oco import Bracket
from domain.orders import Order

if TYPE_CHECKING:
    from adapters.storage.database import Database

__all__ = [
    "JOURNAL_SCHEMA_VERSION",
    "JournalEntry",
    "JournalKind",
    "JournalUnavailable",
    "OrderJournal",
    "journal_file_for",
    "journal_metadata",
]

# An expired lease fences too; a fence without a time checks only holder and epoch.
_NO_EXPIRY_CHECK_NS = -(2**62)

JOURNAL_SCHEMA_VERSION = 1
"""The journal file's schema (``PRAGMA user_version``). Raise it with any change to
``journal_metadata`` and teach ``_create_schema`` to upgrade an older file."""

journal_metadata = MetaData()
"""The journal file's tables: ``order_journal`` (the same table as the database's, migration
0003) and ``journal_fence``."""

journal_entries = order_journal.to_metadata(journal_metadata)
journal_fence = Table(
    "journal_fence",
    journal_metadata,
    # One row per lease (there is one): the holder and epoch whose appends the file accepts.
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("epoch", BigInteger, nullable=False),
)


class JournalKind(enum.StrEnum):
    """Which broker call an entry was written ahead of."""

    PLACE = "PLACE"
    RESEND = "RESEND"
    CANCEL = "CANCEL"
    CANCEL_RESEND = "CANCEL_RESEND"
    RESIZE = "RESIZE"


class JournalUnavailable(Exception):
    """The journal could not be written or read (the database failed, not the fence).

    Nothing may be sent: the write-ahead record does not exist. ``str()`` names the journal,
    the statement and the driver's words.
    """


class _Payload(msgspec.Struct, array_like=True, kw_only=True):
    order: Order
    bracket: Bracket | None = None


class JournalEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One journal row, decoded."""

    seq: int
    kind: JournalKind
    client_order_id: str
    epoch: int
    holder: str
    ts_ns: int
    order: Order
    bracket: Bracket | None


def journal_file_for(url: URL) -> Path | None:
    """The journal file of the SQLite database at ``url``: beside it, ``.journal`` before the
    suffix (``data/vigil.db`` -> ``data/vigil.journal.db``, ``data/vigil`` ->
    ``data/vigil.journal``). None when the journal stays in the database: PostgreSQL, an
    in-memory SQLite database, a ``uri=true`` URL."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if database in (None, "", ":memory:") or url.query.get("uri"):
        return None
    path = Path(database).absolute()
    return path.with_name(f"{path.stem}.journal{path.suffix}")


_COLUMNS = "kind, client_order_id, epoch, holder, ts_ns, payload"

# The journal in the database itself (PostgreSQL; SQLite without a file).
_SQLITE_APPEND = (
    f"INSERT INTO order_journal ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM leader_lease WHERE name = ? AND holder = ? AND epoch = ? "
    "AND expires_ns > ?)"
)
_SQLITE_PLACE = _SQLITE_APPEND + (
    " AND NOT EXISTS (SELECT 1 FROM orders WHERE client_order_id = ?)"
)
_POSTGRES_APPEND = (
    f"INSERT INTO order_journal ({_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s "
    "WHERE EXISTS (SELECT 1 FROM leader_lease WHERE name = %s AND holder = %s AND epoch = %s "
    "AND expires_ns > %s FOR SHARE)"
)
_POSTGRES_PLACE = _POSTGRES_APPEND + (
    " AND NOT EXISTS (SELECT 1 FROM orders WHERE client_order_id = %s)"
)

# The journal in a file of its own: ``main`` is the journal file, ``engine_db`` the database.
# The statement writes ``main``, so SQLite takes the journal file's write lock before it reads
# the fence row: an append and a claim are serialised there.
_ENGINE_DB = "engine_db"
_FILE_APPEND = (
    f"INSERT INTO main.order_journal ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM main.journal_fence WHERE name = ? AND holder = ? AND epoch = ?) "
    f"AND EXISTS (SELECT 1 FROM {_ENGINE_DB}.leader_lease WHERE name = ? AND holder = ? "
    "AND epoch = ? AND expires_ns > ?)"
)
_FILE_PLACE = _FILE_APPEND + (
    f" AND NOT EXISTS (SELECT 1 FROM {_ENGINE_DB}.orders WHERE client_order_id = ?)"
)
# The claim: only ever raising the epoch (the same holder may claim its epoch again), and only
# for the holder the database's lease names at that epoch.
_FILE_CLAIM = (
    "INSERT INTO main.journal_fence (name, holder, epoch) SELECT ?, ?, ? "
    f"WHERE EXISTS (SELECT 1 FROM {_ENGINE_DB}.leader_lease WHERE name = ? AND holder = ? "
    "AND epoch = ?) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch "
    "WHERE journal_fence.epoch < excluded.epoch "
    "OR (journal_fence.epoch = excluded.epoch AND journal_fence.holder = excluded.holder)"
)
_ENTRY_COLUMNS = f"seq, {_COLUMNS}"

# A batch of entries of one non-PLACE kind in one statement, fenced as one append is. Rows are
# inserted in the order of the VALUES list. 100 rows of 6 parameters stay far below SQLite's
# 32,766 bound variables.
_BATCH_ROWS = 100
_VALUES_COLUMNS = "column1, column2, column3, column4, column5, column6"
_SQLITE_BATCH = (
    f"INSERT INTO order_journal ({_COLUMNS}) SELECT {_VALUES_COLUMNS} FROM (VALUES {{rows}}) "
    "AS v WHERE EXISTS (SELECT 1 FROM leader_lease WHERE name = ? AND holder = ? AND epoch = ? "
    "AND expires_ns > ?){place}"
)
_FILE_BATCH = (
    f"INSERT INTO main.order_journal ({_COLUMNS}) SELECT {_VALUES_COLUMNS} FROM (VALUES {{rows}}) "
    "AS v WHERE EXISTS (SELECT 1 FROM main.journal_fence WHERE name = ? AND holder = ? "
    f"AND epoch = ?) AND EXISTS (SELECT 1 FROM {_ENGINE_DB}.leader_lease WHERE name = ? "
    "AND holder = ? AND epoch = ? AND expires_ns > ?){place}"
)
_POSTGRES_BATCH = (
    f"INSERT INTO order_journal ({_COLUMNS}) SELECT v.kind, v.client_order_id, v.epoch, "
    "v.holder, v.ts_ns, v.payload FROM (VALUES {rows}) "
    "AS v(kind, client_order_id, epoch, holder, ts_ns, payload) "
    "WHERE EXISTS (SELECT 1 FROM leader_lease WHERE name = %s AND holder = %s AND epoch = %s "
    "AND expires_ns > %s FOR SHARE){place} RETURNING seq, client_order_id"
)
# A PLACE row is inserted only for an id the orders table does not hold (each row checked).
_SQLITE_PLACE_ROWS = " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = v.column2)"
_FILE_PLACE_ROWS = (
    f" AND NOT EXISTS (SELECT 1 FROM {_ENGINE_DB}.orders o WHERE o.client_order_id = v.column2)"
)
_POSTGRES_PLACE_ROWS = (
    " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = v.client_order_id)"
)


class OrderJournal:
    """Appends fenced write-ahead entries for one order actor, on a connection of its own.

    Args:
        database: the engine's database (the fence reads its lease; on SQLite with a file, the
            journal's own file is ``journal_file_for`` its URL).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._postgres = database.engine.dialect.name == "postgresql"
        if not self._postgres and not database.is_sqlite:
            raise ValueError(
                f"the order journal supports sqlite and postgresql; the database dialect was "
                f"{database.engine.dialect.name}"
            )
        self.path: Path | None = journal_file_for(database.engine.url)
        """The journal's own file (SQLite with a database file), else None: in the database."""
        self._connection: Any = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Payload)
        if self.path is not None:
            self._place_sql, self._append_sql = _FILE_PLACE, _FILE_APPEND
        elif self._postgres:
            self._place_sql = _POSTGRES_PLACE + " RETURNING seq"
            self._append_sql = _POSTGRES_APPEND + " RETURNING seq"
        else:
            self._place_sql, self._append_sql = _SQLITE_PLACE, _SQLITE_APPEND
        # (lease name, holder, epoch) this journal claimed last; appends under another claim
        # first (a takeover claims before it reads the tail, so this is rare).
        self._claimed: tuple[str, str, int] | None = None
        self._trimmed_to = 0
        self.last_seq = 0
        """The newest seq this journal appended (0 before the first)."""

    @property
    def where(self) -> str:
        """The journal, for an operator: its file, or the database's table."""
        if self.path is not None:
            return f"journal file {self.path}"
        return f"order_journal table of {self._database.engine.url.render_as_string()}"

    # ------------------------------------------------------------------ writing
    def append(
        self,
        kind: JournalKind,
        order: Order,
        fence: LeaseFence,
        *,
        bracket: Bracket | None = None,
    ) -> int:
        """Append one entry under ``fence``, in one statement, before the broker call it
        describes.

        Args:
            kind: the broker call that follows.
            order: the order as the call will send it (its epoch is the fence's).
            fence: our lease holder, epoch and ``now_ns``; checked in the same statement.
            bracket: the order's bracket (a PLACE carries it for recovery).

        Returns:
            The entry's seq.

        Raises:
            StaleEpoch: the lease is not ours at this epoch (or expired), or a newer leader
                claimed the journal: nothing was written.
            DuplicateClientOrderId: a PLACE of an id already placed: nothing was written.
            JournalUnavailable: the database failed; nothing may be sent.
        """
        if self._claimed != (fence.name, fence.instance_id, fence.epoch):
            self.claim(fence, client_order_id=order.client_order_id)
        payload = self._encoder.encode(_Payload(order=order, bracket=bracket))
        now_ns = _NO_EXPIRY_CHECK_NS if fence.now_ns is None else fence.now_ns
        parameters: tuple[Any, ...] = (
            kind.value,
            order.client_order_id,
            fence.epoch,
            fence.instance_id,
            now_ns if fence.now_ns is not None else 0,
            payload,
        )
        if self.path is not None:
            parameters += (fence.name, fence.instance_id, fence.epoch)
        parameters += (fence.name, fence.instance_id, fence.epoch, now_ns)
        place = kind is JournalKind.PLACE
        if place:
            parameters += (order.client_order_id,)
        statement = self._place_sql if place else self._append_sql
        try:
            seq = self._execute_append(statement, parameters)
        except DuplicateClientOrderId:
            raise
        except Exception as error:
            if _is_unique_violation(error):
                raise DuplicateClientOrderId(order.client_order_id) from error
            self._reset()
            raise self._unavailable(
                f"{kind.value} {order.client_order_id} not journalled", error
            ) from error
        if seq is None:
            raise self._refused(fence, order.client_order_id, place=place)
        self.last_seq = max(self.last_seq, seq)
        return seq

    def append_batch(
        self, kind: JournalKind, orders: Sequence[Order], fence: LeaseFence
    ) -> list[int]:
        """Append one entry of ``kind`` per order, all under ``fence``, in ONE statement (per
        100): all are written or none (a flatten's cancels: one commit instead of one per
        order, each of which also hands the GIL away and waits to get it back).

        Not for PLACE (its duplicate check is per entry): use ``append_places``.

        Returns:
            The entries' seqs, in the order of ``orders``.

        Raises:
            StaleEpoch: the lease is not ours at this epoch (or expired), or a newer leader
                claimed the journal: nothing was written.
            JournalUnavailable: the database failed; nothing may be sent.
        """
        if kind is JournalKind.PLACE:
            raise ValueError("append_batch takes no PLACE entries: use append_places")
        seqs: list[int] = []
        for chunk in self._chunks([(order, None) for order in orders], fence):
            written = self._write_batch(kind, chunk, fence)
            if len(written) != len(chunk):
                raise self._refused(fence, chunk[0][0].client_order_id, place=False)
            seqs += [written[order.client_order_id] for order, _ in chunk]
        return seqs

    def append_places(
        self, places: Sequence[tuple[Order, Bracket | None]], fence: LeaseFence
    ) -> list[int | None]:
        """Append a PLACE entry per (order, bracket) under ``fence``, in one statement per 100
        (the entries of a burst of plans, a flatten's exits). An id already placed is not
        written: its seq is None (``append`` would raise ``DuplicateClientOrderId``).

        Returns:
            Per place, in order: its seq, or None for an id already placed.

        Raises:
            StaleEpoch: the lease is not ours at this epoch (or expired), or a newer leader
                claimed the journal: nothing of that statement was written.
            JournalUnavailable: the database failed; nothing may be sent.
        """
        result: list[int | None] = []
        for chunk in self._chunks(places, fence):
            try:
                written = (
                    self._write_batch(JournalKind.PLACE, chunk, fence) if len(chunk) > 1 else {}
                )
            except DuplicateClientOrderId:
                written = {}  # an id journalled but not yet stored: sorted out one by one
            for order, bracket in chunk:
                seq = written.get(order.client_order_id)
                if seq is None:
                    # Not in the batch: a duplicate, a refused fence (raised here), or a
                    # chunk of one. Cold path, one statement each.
                    try:
                        seq = self.append(JournalKind.PLACE, order, fence, bracket=bracket)
                    except DuplicateClientOrderId:
                        seq = None
                result.append(seq)
        return result

    def _chunks(
        self, items: Sequence[tuple[Order, Bracket | None]], fence: LeaseFence
    ) -> list[Sequence[tuple[Order, Bracket | None]]]:
        if not items:
            return []
        if self._claimed != (fence.name, fence.instance_id, fence.epoch):
            self.claim(fence, client_order_id=items[0][0].client_order_id)
        return [items[start : start + _BATCH_ROWS] for start in range(0, len(items), _BATCH_ROWS)]

    def _write_batch(
        self,
        kind: JournalKind,
        chunk: Sequence[tuple[Order, Bracket | None]],
        fence: LeaseFence,
    ) -> dict[str, int]:
        """One statement for ``chunk``; returns the seq of each client order id written (none
        when the fence refused; a PLACE of a stored id is skipped)."""
        now_ns = _NO_EXPIRY_CHECK_NS if fence.now_ns is None else fence.now_ns
        stamp = now_ns if fence.now_ns is not None else 0
        values: list[Any] = []
        for order, bracket in chunk:
            values += (
                kind.value,
                order.client_order_id,
                fence.epoch,
                fence.instance_id,
                stamp,
                self._encoder.encode(_Payload(order=order, bracket=bracket)),
            )
        if self.path is not None:
            values += (fence.name, fence.instance_id, fence.epoch)
        values += (fence.name, fence.instance_id, fence.epoch, now_ns)
        place = kind is JournalKind.PLACE
        try:
            written = self._execute_batch(len(chunk), tuple(values), place=place)
        except Exception as error:
            if _is_unique_violation(error):
                raise DuplicateClientOrderId(chunk[0][0].client_order_id) from error
            self._reset()
            raise self._unavailable(
                f"{len(chunk)} {kind.value} entries ({chunk[0][0].client_order_id} ...) not "
                f"journalled",
                error,
            ) from error
        if written:
            self.last_seq = max(self.last_seq, *written.values())
        return written

    def _execute_batch(
        self, rows: int, parameters: tuple[Any, ...], *, place: bool
    ) -> dict[str, int]:
        connection = self._connect()
        if self._postgres:
            row_values = ", ".join(
                ["(%s::text, %s::text, %s::bigint, %s::text, %s::bigint, %s::bytea)"] * rows
            )
            statement = _POSTGRES_BATCH.format(
                rows=row_values, place=_POSTGRES_PLACE_ROWS if place else ""
            )
            returned = connection.execute(statement, parameters).fetchall()
            return {client_order_id: int(seq) for seq, client_order_id in returned}
        row_values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
        if self.path is not None:
            statement = _FILE_BATCH.format(rows=row_values, place=_FILE_PLACE_ROWS if place else "")
            cursor = connection.execute(statement, parameters)
        else:
            statement = _SQLITE_BATCH.format(
                rows=row_values, place=_SQLITE_PLACE_ROWS if place else ""
            )
            with self._database.write_lock():
                cursor = connection.execute(statement, parameters)
        written = cursor.rowcount
        if written <= 0:
            return {}
        # One statement, one writer of this table: the rows written took consecutive seqs.
        last = int(cursor.lastrowid)
        table = "main.order_journal" if self.path is not None else "order_journal"
        return {
            client_order_id: int(seq)
            for seq, client_order_id in connection.execute(
                f"SELECT seq, client_order_id FROM {table} WHERE seq > ? AND seq <= ?",
                (last - written, last),
            )
        }

    def _execute_append(self, statement: str, parameters: tuple[Any, ...]) -> int | None:
        connection = self._connect()
        if self._postgres:
            row = connection.execute(statement, parameters).fetchone()
            return None if row is None else int(row[0])
        if self.path is not None:
            # The journal's own file: no other thread of this process writes it.
            cursor = connection.execute(statement, parameters)
        else:
            # One writer per SQLite file: wait on this process's lock (handed over at once)
            # rather than in SQLite's busy handler, which sleeps milliseconds between tries.
            with self._database.write_lock():
                cursor = connection.execute(statement, parameters)
        return int(cursor.lastrowid) if cursor.rowcount == 1 else None

    def claim(self, fence: LeaseFence, *, client_order_id: str | None = None) -> None:
        """Make the journal accept appends of ``fence``'s holder and epoch only, before a
        takeover reads the tail: from here an older leader's append is refused, so the tail
        read after this holds every entry an older leader will ever have appended.

        In a journal file of its own, in one write transaction of that file: the fence row
        becomes ``fence``'s holder and epoch (never a lower epoch; the same holder and epoch
        again is a no-op), entries an older Vigil left in the database's ``order_journal``
        table are moved here (idempotent), and the file's seq is raised to at least the applied
        mark. In the database itself (PostgreSQL; SQLite without a file) the lease row already
        serialises appends with a takeover: nothing to write.

        Raises:
            StaleEpoch: the lease is not ``fence``'s at its epoch, or a newer epoch claimed the
                journal: nothing changed.
            JournalUnavailable: the journal could not be opened or written.
        """
        key = (fence.name, fence.instance_id, fence.epoch)
        if self.path is None:
            self._claimed = key
            return
        try:
            connection = self._connect()
            # Entries an older Vigil left in the database are moved in this transaction, which
            # then writes the database too: IMMEDIATE takes both files' write locks up front
            # (waiting in the busy handler), where a deferred one could find its snapshot of
            # the database outdated by the write-behind's next batch (SQLITE_BUSY_SNAPSHOT).
            adopting = connection.execute(
                f"SELECT 1 FROM {_ENGINE_DB}.order_journal LIMIT 1"
            ).fetchone()
            connection.execute("BEGIN IMMEDIATE" if adopting else "BEGIN")
            try:
                claimed = connection.execute(_FILE_CLAIM, (*key, *key)).rowcount
                if claimed != 1:
                    connection.execute("ROLLBACK")
                    raise self._refused(fence, client_order_id, place=False)
                self._adopt_database_entries(connection)
                self._raise_seq_floor(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except StaleEpoch:
            raise
        except Exception as error:
            self._reset()
            what = f"not claimed for {fence.instance_id} at epoch {fence.epoch}"
            if client_order_id is not None:
                what = f"{client_order_id} not journalled: {what}"
            raise self._unavailable(what, error) from error
        self._claimed = key

    def _adopt_database_entries(self, connection: Any) -> None:
        # An older Vigil journalled into the database's table: its entries the tables had not
        # caught up with move here. Insert-or-ignore by seq, then delete there: a crash between
        # the two (the files commit one by one) repeats the move harmlessly.
        pending = connection.execute(f"SELECT max(seq) FROM {_ENGINE_DB}.order_journal").fetchone()[
            0
        ]
        if pending is None:
            return
        connection.execute(
            f"INSERT OR IGNORE INTO main.order_journal ({_ENTRY_COLUMNS}) "
            f"SELECT {_ENTRY_COLUMNS} FROM {_ENGINE_DB}.order_journal WHERE seq <= ?",
            (pending,),
        )
        connection.execute(f"DELETE FROM {_ENGINE_DB}.order_journal WHERE seq <= ?", (pending,))

    def _raise_seq_floor(self, connection: Any) -> None:
        # Never a seq at or below the applied mark, nor one the database's table handed out: a
        # new (or lost and recreated) file would otherwise start again at 1.
        floor = connection.execute(
            "SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM "
            f"{_ENGINE_DB}.control_state WHERE key = ?), 0), coalesce((SELECT seq FROM "
            f"{_ENGINE_DB}.sqlite_sequence WHERE name = 'order_journal'), 0))",
            (APPLIED_SEQ_KEY,),
        ).fetchone()[0]
        connection.execute(
            "UPDATE main.sqlite_sequence SET seq = ? WHERE name = 'order_journal' AND seq < ?",
            (floor, floor),
        )
        connection.execute(
            "INSERT INTO main.sqlite_sequence (name, seq) SELECT 'order_journal', ? "
            "WHERE NOT EXISTS (SELECT 1 FROM main.sqlite_sequence WHERE name = 'order_journal')",
            (floor,),
        )

    def trim(self, applied_seq: int) -> int:
        """Delete the entries at or below ``applied_seq``: the seq up to which the write-behind
        has committed the tables (``WriteBehind.applied_seq``; never a mark it has not
        committed, or recovery would lose entries). Cheap when nothing new was applied.

        Returns:
            How many entries were deleted.

        Raises:
            JournalUnavailable: the journal could not be written.
        """
        if applied_seq <= self._trimmed_to:
            return 0
        mark = "%s" if self._postgres else "?"
        table = "main.order_journal" if self.path is not None else "order_journal"
        statement = f"DELETE FROM {table} WHERE seq <= {mark}"
        try:
            connection = self._connect()
            if self.path is None and not self._postgres:
                with self._database.write_lock():
                    deleted = connection.execute(statement, (applied_seq,)).rowcount
            else:
                deleted = connection.execute(statement, (applied_seq,)).rowcount
        except Exception as error:
            self._reset()
            raise self._unavailable(
                f"entries up to seq {applied_seq} not trimmed", error
            ) from error
        self._trimmed_to = applied_seq
        return int(deleted)

    def _refused(self, fence: LeaseFence, client_order_id: str | None, *, place: bool) -> Exception:
        # Cold path: say why nothing was inserted.
        connection = self._connect()
        mark = "%s" if self._postgres else "?"
        schema = f"{_ENGINE_DB}." if self.path is not None else ""
        if place:
            row = connection.execute(
                f"SELECT 1 FROM {schema}orders WHERE client_order_id = {mark}",
                (client_order_id,),
            ).fetchone()
            if row is not None:
                return DuplicateClientOrderId(str(client_order_id))
        lease = connection.execute(
            f"SELECT holder, epoch FROM {schema}leader_lease WHERE name = {mark}", (fence.name,)
        ).fetchone()
        if self.path is not None:
            claimed = connection.execute(
                "SELECT holder, epoch FROM main.journal_fence WHERE name = ?", (fence.name,)
            ).fetchone()
            if claimed is not None and (claimed[0], int(claimed[1])) != (
                fence.instance_id,
                fence.epoch,
            ):
                # A newer leader claimed the journal (the database may not show it yet).
                lease = claimed
        return StaleEpoch(
            instance_id=fence.instance_id,
            epoch=fence.epoch,
            name=fence.name,
            holder=None if lease is None else lease[0],
            current_epoch=None if lease is None else int(lease[1]),
            client_order_id=client_order_id,
        )

    # ------------------------------------------------------------------ reading
    def tail(self, after_seq: int = 0) -> list[JournalEntry]:
        """Every entry with a seq above ``after_seq``, oldest first: what the tables have not
        caught up with yet.

        Raises:
            JournalUnavailable: the database failed.
        """
        mark = "%s" if self._postgres else "?"
        table = "main.order_journal" if self.path is not None else "order_journal"
        try:
            rows = (
                self._connect()
                .execute(
                    f"SELECT seq, kind, client_order_id, epoch, holder, ts_ns, payload "
                    f"FROM {table} WHERE seq > {mark} ORDER BY seq",
                    (after_seq,),
                )
                .fetchall()
            )
        except Exception as error:
            self._reset()
            raise self._unavailable("the journal could not be read", error) from error
        entries: list[JournalEntry] = []
        for seq, kind, client_order_id, epoch, holder, ts_ns, payload in rows:
            decoded = self._decoder.decode(bytes(payload))
            entries.append(
                JournalEntry(
                    seq=int(seq),
                    kind=JournalKind(kind),
                    client_order_id=client_order_id,
                    epoch=int(epoch),
                    holder=holder,
                    ts_ns=int(ts_ns),
                    order=decoded.order,
                    bracket=decoded.bracket,
                )
            )
        if entries:
            self.last_seq = max(self.last_seq, entries[-1].seq)
        return entries

    # ------------------------------------------------------------------ connection
    def check(self) -> None:
        """Open the journal (on SQLite its own file: created if new, its schema version
        checked) without writing an entry: a start-up check.

        Raises:
            JournalUnavailable: it cannot be opened; names the file or table and the cause.
        """
        try:
            self._connect()
        except JournalUnavailable:
            raise
        except Exception as error:
            self._reset()
            raise self._unavailable("cannot be opened", error) from error

    def close(self) -> None:
        """Close the journal's connection (a later call opens a new one)."""
        self._reset()

    def _connect(self) -> Any:
        if self._connection is not None:
            return self._connection
        if self.path is not None:
            self._connection = self._open_file(self.path)
            return self._connection
        # The engine's own connect arguments and SQLite pragmas, but a DBAPI connection that
        # leaves the pool: the journal keeps it, in autocommit mode (one statement, one commit).
        proxy = self._database.engine.raw_connection()
        connection = proxy.driver_connection
        if connection is None:
            raise RuntimeError("the database engine gave no DBAPI connection")
        proxy.detach()
        connection.rollback()
        if self._postgres:
            connection.autocommit = True
            # Prepared on the server from the first use: the text never changes.
            connection.prepare_threshold = 0
        else:
            connection.isolation_level = None
        self._connection = connection
        return connection

    def _open_file(self, path: Path) -> Any:
        # The engine's pragmas (WAL, synchronous=NORMAL, busy timeout) on the journal's file.
        engine = create_database_engine(f"sqlite:///{path}")
        try:
            proxy = engine.raw_connection()
            connection = proxy.driver_connection
            if connection is None:
                raise RuntimeError("the SQLite engine gave no DBAPI connection")
            proxy.detach()
        finally:
            engine.dispose()
        try:
            connection.rollback()
            connection.isolation_level = None
            _create_schema(connection, engine.dialect, path)
            database = self._database.engine.url.database
            assert database is not None
            connection.execute(
                f"ATTACH DATABASE ? AS {_ENGINE_DB}", (str(Path(database).absolute()),)
            )
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        return connection

    def _unavailable(self, what: str, error: BaseException) -> JournalUnavailable:
        if isinstance(error, JournalUnavailable):
            return error
        return JournalUnavailable(
            f"JOURNAL_UNAVAILABLE: {what} ({self.where}): {type(error).__name__}: {error}"
        )

    def _reset(self) -> None:
        connection, self._connection = self._connection, None
        self._claimed = None  # a new connection claims again (a lost file is a new file)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def _create_schema(connection: Any, dialect: Any, path: Path) -> None:
    # In one write transaction, so two processes opening a new file at once do not race.
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > JOURNAL_SCHEMA_VERSION:
            raise JournalUnavailable(
                f"JOURNAL_UNAVAILABLE: journal file {path} has schema version {version}; this "
                f"Vigil knows up to {JOURNAL_SCHEMA_VERSION} (a newer Vigil wrote it): run "
                "that version, or move the file away once its entries are applied"
            )
        if version < JOURNAL_SCHEMA_VERSION:
            for table in journal_metadata.sorted_tables:
                connection.execute(
                    str(CreateTable(table, if_not_exists=True).compile(dialect=dialect))
                )
                for index in table.indexes:
                    connection.execute(
                        str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                    )
            connection.execute(f"PRAGMA user_version = {JOURNAL_SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _is_unique_violation(error: Exception) -> bool:
    if type(error).__name__ in ("IntegrityError", "UniqueViolation"):
        return "client_order_id" in str(error) or "uq_order_journal" in str(error)
    return False
