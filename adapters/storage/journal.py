"""The order actor's write-ahead journal: one fenced INSERT before every broker call.

The record that must exist before the order actor calls the broker (a place, a resend, a
cancel, a cancel resend, a resize) is one row appended to ``order_journal`` by one raw statement
on a DBAPI connection of the journal's own (sqlite3 or psycopg, autocommit, fixed statement text
the driver caches and prepares): no SQLAlchemy statement building and no unit of work on the
hot path. The relational tables (orders, brackets, fills, positions, events) are brought up to
date behind it by ``adapters.storage.write_behind.WriteBehind``, which deletes the entries they
have caught up with; recovery reads the tables, then the entries still here (``tail``).

Database-level guarantees, both dialects, in the one statement:

- **The fence.** ``INSERT ... SELECT ... WHERE EXISTS`` the lease row held by this holder at
  this epoch and unexpired at ``fence.now_ns`` (the rule of ``repositories._lease_held``; on
  PostgreSQL the lease row is share-locked until the statement commits, so a takeover waits
  for it). Nothing inserted means deposed: ``StaleEpoch``, and no broker call may follow.
- **Idempotency.** A PLACE of a ``client_order_id`` already in ``orders`` is not inserted
  (``NOT EXISTS`` on the unique index), and one already journalled is refused by the partial
  unique index on PLACE rows: ``DuplicateClientOrderId`` either way.

Payloads are msgpack (msgspec): the order as it was when the call was decided and, for a
place, its bracket, because recovery needs the bracket to protect an entry that fills while
the tables are still behind.

Not thread-safe: one thread (the order actor's) appends. Any other database error closes the
connection (the next call reconnects) and is raised as ``JournalUnavailable``, which the order
actor treats like any storage error: its handler fails and the supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import enum
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.storage.repositories import DuplicateClientOrderId, LeaseFence, StaleEpoch
from domain.oco import Bracket
from domain.orders import Order

if TYPE_CHECKING:
    from adapters.storage.database import Database

__all__ = [
    "JournalEntry",
    "JournalKind",
    "JournalUnavailable",
    "OrderJournal",
]

# An expired lease fences too; a fence without a time checks only holder and epoch.
_NO_EXPIRY_CHECK_NS = -(2**62)


class JournalKind(enum.StrEnum):
    """Which broker call an entry was written ahead of."""

    PLACE = "PLACE"
    RESEND = "RESEND"
    CANCEL = "CANCEL"
    CANCEL_RESEND = "CANCEL_RESEND"
    RESIZE = "RESIZE"


class JournalUnavailable(Exception):
    """The journal could not be written or read (the database failed, not the fence).

    Nothing may be sent: the write-ahead record does not exist. ``str()`` names the statement
    and the driver's words.
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


_COLUMNS = "kind, client_order_id, epoch, holder, ts_ns, payload"

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


class OrderJournal:
    """Appends fenced write-ahead entries for one order actor, on a connection of its own.

    Args:
        database: where the journal lives (the engine's database: the fence reads its lease).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._postgres = database.engine.dialect.name == "postgresql"
        if not self._postgres and not database.is_sqlite:
            raise ValueError(
                f"the order journal supports sqlite and postgresql; the database dialect was "
                f"{database.engine.dialect.name}"
            )
        self._connection: Any = None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Payload)
        self._place_sql = _POSTGRES_PLACE if self._postgres else _SQLITE_PLACE
        self._append_sql = _POSTGRES_APPEND if self._postgres else _SQLITE_APPEND
        if self._postgres:
            self._place_sql += " RETURNING seq"
            self._append_sql += " RETURNING seq"
        self.last_seq = 0
        """The newest seq this journal appended (0 before the first)."""

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
            StaleEpoch: the lease is not ours at this epoch (or expired): nothing was written.
            DuplicateClientOrderId: a PLACE of an id already placed: nothing was written.
            JournalUnavailable: the database failed; nothing may be sent.
        """
        payload = self._encoder.encode(_Payload(order=order, bracket=bracket))
        now_ns = _NO_EXPIRY_CHECK_NS if fence.now_ns is None else fence.now_ns
        parameters: tuple[Any, ...] = (
            kind.value,
            order.client_order_id,
            fence.epoch,
            fence.instance_id,
            now_ns if fence.now_ns is not None else 0,
            payload,
            fence.name,
            fence.instance_id,
            fence.epoch,
            now_ns,
        )
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
            raise JournalUnavailable(
                f"JOURNAL_UNAVAILABLE: {kind.value} {order.client_order_id} not journalled: "
                f"{type(error).__name__}: {error}"
            ) from error
        if seq is None:
            raise self._refused(fence, order.client_order_id, place=place)
        self.last_seq = max(self.last_seq, seq)
        return seq

    def _execute_append(self, statement: str, parameters: tuple[Any, ...]) -> int | None:
        connection = self._connect()
        if self._postgres:
            row = connection.execute(statement, parameters).fetchone()
            return None if row is None else int(row[0])
        # One writer per SQLite file: wait on this process's lock (handed over at once) rather
        # than in SQLite's busy handler, which sleeps milliseconds between tries.
        with self._database.write_lock():
            cursor = connection.execute(statement, parameters)
        return int(cursor.lastrowid) if cursor.rowcount == 1 else None

    def _refused(self, fence: LeaseFence, client_order_id: str, *, place: bool) -> Exception:
        # Cold path: say why nothing was inserted.
        connection = self._connect()
        mark = "%s" if self._postgres else "?"
        if place:
            row = connection.execute(
                f"SELECT 1 FROM orders WHERE client_order_id = {mark}", (client_order_id,)
            ).fetchone()
            if row is not None:
                return DuplicateClientOrderId(client_order_id)
        lease = connection.execute(
            f"SELECT holder, epoch FROM leader_lease WHERE name = {mark}", (fence.name,)
        ).fetchone()
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
        try:
            rows = (
                self._connect()
                .execute(
                    f"SELECT seq, kind, client_order_id, epoch, holder, ts_ns, payload "
                    f"FROM order_journal WHERE seq > {mark} ORDER BY seq",
                    (after_seq,),
                )
                .fetchall()
            )
        except Exception as error:
            self._reset()
            raise JournalUnavailable(
                f"JOURNAL_UNAVAILABLE: the journal could not be read: {type(error).__name__}: "
                f"{error}"
            ) from error
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
    def close(self) -> None:
        """Close the journal's connection (a later call opens a new one)."""
        self._reset()

    def _connect(self) -> Any:
        if self._connection is not None:
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

    def _reset(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def _is_unique_violation(error: Exception) -> bool:
    if type(error).__name__ in ("IntegrityError", "UniqueViolation"):
        return "client_order_id" in str(error) or "uq_order_journal" in str(error)
    return False
