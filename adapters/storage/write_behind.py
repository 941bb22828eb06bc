"""Write-behind for the order actor: its changes reach the relational tables in batches.

The order actor's in-memory books are the truth while it runs; what must exist before a broker
call is the journal entry (``adapters.storage.journal``). Everything else the actor changes
(orders, brackets, fills, positions, events) is handed to a ``WriteBehind`` as an in-memory
item, copied at hand-over (the actor mutates its orders in place), and applied by the writer's
own thread: one transaction per batch (group commit), gathered for ``flush_interval_s`` or up to
``max_batch`` items, with repeated updates of one order, bracket or position in a batch
coalesced into the last. In the same transaction the writer records up to which journal seq
the tables are current (``control_state`` key ``order_journal.applied_seq``; ``applied_seq``
once committed). It never writes the journal: the journal deletes the entries at or below that
mark itself (``OrderJournal.trim``, on the order actor's thread), so that on SQLite its file
has one writer and an append never waits for a batch.

Ordering: items are applied in hand-over order, and a batch is one transaction, so the tables
always hold a prefix of the actor's changes. A journal seq is handed over after the items that
carry the change it describes (``write`` takes both at once), so the recorded seq never runs
ahead of the rows.

Failure is never silent: a failed batch is retried (the same batch, nothing dropped, later
items wait behind it) with a backoff from ``retry_initial_s`` doubling up to ``retry_max_s``.
The first failure is logged at ERROR; once it has lasted ``fail_after_s`` the writer is
*failed*: ``failure`` is set, logged CRITICAL, and ``raise_if_failed``/``flush`` raise
``StorageWriteFailed``, which the order actor lets out of its handler, exactly as a failed
transaction used to (the supervisor restarts it; a restart that cannot load storage counts
toward the restart intensity, which HALTs). The writer goes on retrying and clears the failure
at its next committed batch.

Fenced to the lease holder: given the process's ``lease_holder`` (one per process incarnation),
a batch of state rows (orders, brackets, fills, positions, the journal mark) commits only while
the lease row names this process as its holder (checked inside the batch's transaction, the
lease row share-locked on PostgreSQL). When another process holds the lease (it took over, or
this one stands by and never led) the rows are dropped and counted (``fenced_drops``): they must
not overwrite what the leader writes, and the leader recovers them from the journal's tail and
the broker. Not the epoch: this process retaking its own expired lease (a new epoch after a
pause) keeps its rows, because its books still hold them and its takeover merges the two. Not
the expiry: a clean stop releases the lease (same holder) before the last flush. Audit events
are appended whatever the fence (they never overwrite, and say which instance wrote them).

Threads: ``write``/``flush``/``raise_if_failed`` from any thread (the order actor's, a test's);
the batches on the writer's own daemon thread, started by ``start`` and ended by ``stop``,
which flushes first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import bindparam, select

from adapters.logs import log_event
from adapters.storage.prepared import PreparedStatement, upsert_statement
from adapters.storage.repositories import (
    DEFAULT_LEASE_NAME,
    PositionRow,
    bracket_values,
    dialect_insert,
    fill_values,
    order_values,
    position_values,
)
from adapters.storage.tables import (
    brackets,
    control_state,
    events,
    fills,
    leader_lease,
    orders,
    positions,
)

if TYPE_CHECKING:
    from adapters.storage.database import Database
    from domain.messages.orders import FillReport
    from domain.oco import Bracket
    from domain.orders import Order

__all__ = ["APPLIED_SEQ_KEY", "StorageWriteFailed", "WriteBehind"]

logger = logging.getLogger(__name__)

APPLIED_SEQ_KEY = "order_journal.applied_seq"
"""``control_state`` key: the journal seq up to which the tables are current."""

_ORDER, _BRACKET, _FILL, _POSITION, _EVENT, _SEQ = range(6)


class StorageWriteFailed(Exception):
    """The write-behind has not been able to commit for ``fail_after_s``: the tables are
    falling behind the books. ``str()`` says for how long, how many items wait, and the last
    database error."""


class WriteBehind:
    """Applies the order actor's changes to the tables in batches, on a thread of its own.

    Args:
        database: the engine's database.
        flush_interval_s: how long a batch gathers after its first item.
        max_batch: items that end a batch early.
        retry_initial_s: the first wait after a failed batch (doubles per failure).
        retry_max_s: the longest wait between retries.
        fail_after_s: how long failures may last before the writer is failed.
        name: the thread's name.
        lease_holder: this process's lease identity; with it, state rows are fenced to the
            lease (see the module docstring). Without it (tools, storage tests) nothing is.
    """

    def __init__(
        self,
        database: Database,
        *,
        flush_interval_s: float = 0.005,
        max_batch: int = 500,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        fail_after_s: float = 5.0,
        name: str = "order-write-behind",
        lease_holder: str | None = None,
    ) -> None:
        self._database = database
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._fail_after_s = fail_after_s
        self._name = name
        self._lease_holder = lease_holder
        self.fenced_drops = 0
        """Batches whose state rows were dropped because another process held the lease."""
        self._condition = threading.Condition()
        # One group per hand-over: a group is never split across batches.
        self._pending: list[list[tuple[int, Any]]] = []
        self._submitted = 0  # groups handed over, ever
        self._committed = 0  # groups committed, ever
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failure: StorageWriteFailed | None = None
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self.applied_seq = 0
        """The journal seq up to which this writer has brought the tables (committed): what
        the journal may delete (``OrderJournal.trim``)."""
        self.batches = 0
        self.statements = 0
        self._prepared: dict[str, PreparedStatement] | None = None

    # ------------------------------------------------------------------ LIFECYCLE
    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what was handed over (as far as storage allows within ``timeout_s``), then
        end the thread. Items still pending after that are logged as lost to the tables (the
        journal and the broker still have what recovery needs)."""
        try:
            self.flush(timeout_s=timeout_s)
        except (StorageWriteFailed, TimeoutError, RuntimeError) as error:
            logger.error("write-behind stopped with changes not stored: %s", error)
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    # ------------------------------------------------------------------ HAND-OVER
    def write(
        self,
        *,
        order: Order | None = None,
        bracket: Bracket | None = None,
        fill: FillReport | None = None,
        position: PositionRow | None = None,
        recorded_ns: int = 0,
        journal_seq: int | None = None,
    ) -> None:
        """Hand over the changes of one step (copied now, applied in one transaction, never
        split across batches): an order, its bracket, a fill of the order (stored once per
        trade id, recorded at ``recorded_ns``; its plan is the order's), the bracket's
        position row, and last the journal seq whose change they carry. Never blocks on
        storage."""
        items: list[tuple[int, Any]] = []
        if order is not None:
            items.append((_ORDER, order_values(order)))
            if fill is not None:
                values = fill_values(
                    fill, plan_client_id=order.plan_client_id, recorded_ns=recorded_ns
                )
                items.append((_FILL, values))
        elif fill is not None:
            raise ValueError(f"a fill is stored with its order: trade_id={fill.trade_id}")
        if bracket is not None:
            items.append((_BRACKET, bracket_values(bracket)))
        if position is not None:
            items.append((_POSITION, position_values(position)))
        if journal_seq is not None:
            items.append((_SEQ, journal_seq))
        self._hand_over(items)

    def write_event(
        self,
        event: str,
        payload: Mapping[str, Any] | msgspec.Struct,
        *,
        ts_ns: int,
        instance_id: str,
    ) -> None:
        """Hand over an audit-trail entry (``payload`` encoded as JSON now)."""
        body = payload if isinstance(payload, msgspec.Struct) else dict(payload)
        values = {
            "ts_ns": ts_ns,
            "event": event,
            "instance_id": instance_id,
            "payload": msgspec.json.encode(body).decode(),
        }
        self._hand_over([(_EVENT, values)])

    def _hand_over(self, items: list[tuple[int, Any]]) -> None:
        if not items:
            return
        with self._condition:
            was_empty = not self._pending
            self._pending.append(items)
            self._submitted += 1
            if was_empty:
                self._condition.notify_all()

    # ------------------------------------------------------------------ WAITING
    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything handed over before this call is committed.

        Raises:
            StorageWriteFailed: the writer is failed (storage has refused for too long).
            TimeoutError: not committed within ``timeout_s`` (storage slow or retrying).
            RuntimeError: the writer thread is not running.
        """
        deadline = time.monotonic() + timeout_s
        with self._condition:
            target = self._submitted
            while self._committed < target:
                if self._failure is not None:
                    raise self._failure
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError(
                        f"write-behind {self._name} is not running; "
                        f"{target - self._committed} changes not stored"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"write-behind {self._name}: {target - self._committed} changes not "
                        f"stored within {timeout_s} s (last error: {self._last_error})"
                    )
                self._condition.wait(remaining)

    def raise_if_failed(self) -> None:
        """Raise ``StorageWriteFailed`` if storage has refused the writer for too long."""
        failure = self._failure
        if failure is not None:
            raise failure

    @property
    def failure(self) -> StorageWriteFailed | None:
        return self._failure

    def snapshot(self) -> dict[str, Any]:
        with self._condition:
            pending = self._submitted - self._committed
        return {
            "pending": pending,
            "batches": self.batches,
            "statements": self.statements,
            "applied_seq": self.applied_seq,
            "fenced_drops": self.fenced_drops,
            "failed": self._failure is not None,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ THE WRITER THREAD
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._stopping:
                    self._condition.wait()
                if not self._pending and self._stopping:
                    return
            # Group commit: let the burst that woke us join this batch.
            if self._flush_interval_s > 0:
                time.sleep(self._flush_interval_s)
            with self._condition:
                taken = 0
                batch: list[tuple[int, Any]] = []
                for group in self._pending:
                    if batch and len(batch) + len(group) > self._max_batch:
                        break
                    batch.extend(group)
                    taken += 1
                del self._pending[:taken]
            self._commit_with_retries(batch)
            with self._condition:
                self._committed += taken
                self._condition.notify_all()

    def _commit_with_retries(self, batch: list[tuple[int, Any]]) -> None:
        delay = self._retry_initial_s
        while True:
            try:
                self._commit(batch)
            except Exception as error:
                self._failed_once(error, len(batch))
                with self._condition:
                    if self._stopping and self._failure is not None:
                        # Shutting down with storage gone: stop trying (logged by stop()).
                        return
                    self._condition.wait(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            if self._failing_since is not None:
                log_event(
                    logger,
                    "STORAGE",
                    f"write-behind {self._name} storing again after "
                    f"{time.monotonic() - self._failing_since:.1f} s of failures",
                )
            with self._condition:
                self._failing_since = None
                self._failure = None
                self._last_error = None
            return

    def _failed_once(self, error: Exception, size: int) -> None:
        now = time.monotonic()
        text = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
        with self._condition:
            pending = self._submitted - self._committed
            self._last_error = text
            if self._failing_since is None:
                self._failing_since = now
                logger.error(
                    "write-behind %s could not store a batch of %d changes (retrying): %s",
                    self._name,
                    size,
                    text,
                )
            failing_for = now - self._failing_since
            if self._failure is None and failing_for >= self._fail_after_s:
                self._failure = StorageWriteFailed(
                    f"STORAGE_WRITE_FAILED: the order tables have not been stored for "
                    f"{failing_for:.1f} s ({pending} changes waiting); last error: {text}"
                )
                self._condition.notify_all()
                failure = self._failure
            else:
                failure = None
        if failure is not None:
            log_event(logger, "STORAGE", str(failure), level=logging.CRITICAL)

    def _commit(self, batch: list[tuple[int, Any]]) -> None:
        order_rows: dict[str, dict[str, Any]] = {}
        bracket_rows: dict[str, dict[str, Any]] = {}
        position_rows: dict[str, dict[str, Any]] = {}
        fill_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        seq = 0
        # Coalesce: the last state of each order, bracket and position in the batch.
        for kind, values in batch:
            if kind == _ORDER:
                order_rows[values["client_order_id"]] = values
            elif kind == _BRACKET:
                bracket_rows[values["plan_client_id"]] = values
            elif kind == _POSITION:
                position_rows[values["position_id"]] = values
            elif kind == _FILL:
                fill_rows.append(values)
            elif kind == _EVENT:
                event_rows.append(values)
            else:
                seq = max(seq, values)
        statements = self._statements()
        # Everything Python does to the rows happens before the transaction: on SQLite the
        # transaction holds the file's one write lock, which the paper venue's writer (and, in
        # a database without a file, the journal append) waits for.
        work: list[tuple[str, list[Any]]] = []
        for name, rows in (
            ("orders", list(order_rows.values())),
            ("brackets", list(bracket_rows.values())),
            ("fills", fill_rows),
            ("positions", list(position_rows.values())),
            ("events", event_rows),
        ):
            if rows:
                statement = statements[name]
                work.append((statement.sql, [statement.parameters(row) for row in rows]))
        if seq > self.applied_seq:
            mark = statements["applied_seq"]
            work.append(
                (
                    mark.sql,
                    [
                        mark.parameters(
                            {
                                "key": APPLIED_SEQ_KEY,
                                "value": str(seq),
                                "updated_ns": time.time_ns(),
                            }
                        )
                    ],
                )
            )
        with self._database.transaction() as connection:
            holder = self._other_holder(connection)
            if holder is not None:
                # Another process leads (or this one never did): only the audit trail.
                work = [item for item in work if item[0] == statements["events"].sql]
                seq = 0
                self.fenced_drops += 1
                logger.info(
                    "write-behind: %d changes not stored: the lease is held by %s, not %s",
                    len(batch),
                    holder,
                    self._lease_holder,
                )
            for sql, parameters in work:
                connection.exec_driver_sql(sql, parameters)
        if seq > self.applied_seq:
            self.applied_seq = seq
        self.batches += 1
        self.statements += len(work)

    def _other_holder(self, connection: Any) -> str | None:
        """Who holds the lease when it is not this process (``"nobody"`` before any lease);
        None when it is this process, or when this writer is not fenced."""
        if self._lease_holder is None:
            return None
        holder = connection.execute(
            select(leader_lease.c.holder)
            .where(leader_lease.c.name == DEFAULT_LEASE_NAME)
            .with_for_update(read=True)
        ).scalar()
        if holder == self._lease_holder:
            return None
        return holder or "nobody"

    def _statements(self) -> dict[str, PreparedStatement]:
        if self._prepared is None:
            dialect = self._database.engine.dialect
            with self._database.engine.connect() as connection:
                insert = dialect_insert(connection)
            self._prepared = {
                "orders": upsert_statement(insert, orders, "client_order_id", dialect),
                "brackets": upsert_statement(insert, brackets, "plan_client_id", dialect),
                "positions": upsert_statement(insert, positions, "position_id", dialect),
                "applied_seq": upsert_statement(insert, control_state, "key", dialect),
                "fills": PreparedStatement(
                    insert(fills)
                    .values({c.name: bindparam(c.name) for c in fills.columns if c.name != "id"})
                    .on_conflict_do_nothing(index_elements=["trade_id"]),
                    fills,
                    dialect,
                ),
                "events": PreparedStatement(
                    events.insert().values(
                        {c.name: bindparam(c.name) for c in events.columns if c.name != "id"}
                    ),
                    events,
                    dialect,
                ),
            }
        return self._prepared
