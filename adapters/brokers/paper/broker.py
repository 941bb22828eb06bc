"""``PaperBroker``: a simulated venue behind the broker port, with its own books in storage.

It owns the venue's in-memory books (``venue.VenueBooks``), one lock over them, the venue
tables (``books.py``) and the report sink. The matching rules live in ``venue.py``.

Threads and failure semantics:
- Any method may be called from any thread (order actor, feed actor, timer). One lock guards
  the books and the storage writes. The sink is called outside the lock, in event order: each
  pass queues its reports under the lock, then whichever thread is not already delivering
  drains the queue. A sink may call back into the broker (``list_orders``, even ``on_time``)
  without deadlocking; reports it causes are delivered after the current ones.
- Nothing is emitted from ``submit_order``, ``cancel_order`` or ``modify_order``: acks, fills,
  cancels and modifies come from a later ``on_time``/``on_tick`` once the clock has moved
  ``latency_ms`` past the request.
- Every change is committed (orders, fills, positions, counters in one transaction) before its
  reports are queued. If the commit fails the books stay as they were, the pass is retried by
  the next ``on_time``/``on_tick``, and no heartbeat goes out for it, so the engine sees the
  order stream go stale. A storage failure in a request raises ``BrokerUnavailable`` (outcome
  unknown), never ``BrokerRejected``.
- An exception raised by the sink is logged and the next report is still delivered.
- Reports queued while no sink is set wait for one (heartbeats are dropped instead).

Leadership: with several processes on one database, each has its own ``PaperBroker`` over the
same venue tables, and only the leader's may act. Built with ``follow_leadership=True`` (the
engine does), the venue starts passive: it keeps quotes and answers queries from storage, but
matches nothing, writes nothing and refuses requests (``BrokerUnavailable``, ``VENUE_PASSIVE``)
until ``on_leadership(True, epoch)``, which reloads its books from storage (the previous
leader's orders, fills, positions and counters), as the venue of a standby must not match its
stale copy of orders another process may have filled or cancelled. ``on_leadership(False, ...)``
makes it passive again. While active it is fenced like the engine's orders: every write
transaction first checks (share-locking the lease row) that the lease is still at its epoch,
so the venue of a leader that was deposed without knowing it (paused, partitioned) cannot
write after the new leader's venue has loaded the books; it goes passive instead. A storage
conflict on a request (another writer moved the books: a primary-key violation on the order
sequence) reloads the books and tries once more; if that fails too the request is refused
(``BrokerRejected``, ``VENUE_STORAGE_CONFLICT``), never left to fail the same way forever.

Sessions: ``list_orders`` returns the orders received since the start of the current trading
day (midnight at ``session_utc_offset_minutes``, IST by default) plus any older order still
working; ``list_fills`` returns the fills of the current day. Positions carry over days.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from adapters.brokers.base import (
    AccountInfo,
    BrokerRejected,
    BrokerReport,
    BrokerUnavailable,
    ReportSink,
)
from adapters.brokers.paper import books as store
from adapters.brokers.paper.venue import (
    StepResult,
    VenueBooks,
    VenueOrder,
    VenueRejection,
    VenueRules,
    receive_order,
    request_cancel,
    request_modify,
    step,
)
from adapters.storage.repositories import DEFAULT_LEASE_NAME
from adapters.storage.tables import leader_lease
from domain.market_data import quote_rejection
from domain.messages import (
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    PositionReport,
    Tick,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from adapters.storage.database import Database
    from domain.clock import Clock
    from domain.config import PaperBrokerConfig
    from domain.instruments import Instrument

__all__ = ["HEARTBEAT_INTERVAL_NS", "PaperBroker"]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_NS = 500_000_000
NANOS_PER_MILLISECOND = 1_000_000
NANOS_PER_DAY = 86_400 * 1_000_000_000
IST_UTC_OFFSET_MINUTES = 330
DEFAULT_STARTING_BALANCE = Decimal("1000000")

_T = TypeVar("_T")


class _FencedOut(Exception):
    """The lease moved past this venue's epoch: another process's venue owns the books."""

    def __init__(self, epoch: int, current_epoch: int | None) -> None:
        super().__init__(
            f"VENUE_FENCED: this venue acts for epoch {epoch}, the lease is at epoch "
            f"{current_epoch}; another process leads"
        )
        self.epoch = epoch
        self.current_epoch = current_epoch


class PaperBroker:
    """A simulated venue implementing ``adapters.brokers.base.BrokerPort`` structurally.

    Args:
        config: latency, slippage and account id.
        instruments: the tradable instruments by symbol (lot and tick sizes, freeze quantity).
        database: storage holding the venue tables (created by migration 0002).
        clock: the time source; report ``ts_event`` comes from it.
        partial_fill_max: cap on one fill's quantity per matching pass (``None``: full fills);
            lets tests and drills produce partial fills.
        starting_balance: the account's cash the first time these books are created; the
            balance reported by ``connect`` is this plus the realized PnL of every position.
        session_utc_offset_minutes: where the trading day starts, for ``list_orders`` and
            ``list_fills``.
        follow_leadership: start passive and act only between ``on_leadership(True, epoch)``
            and ``on_leadership(False, ...)`` (several processes on one database).
    """

    name = "paper"

    def __init__(
        self,
        *,
        config: PaperBrokerConfig,
        instruments: Mapping[str, Instrument],
        database: Database,
        clock: Clock,
        partial_fill_max: int | None = None,
        starting_balance: Decimal = DEFAULT_STARTING_BALANCE,
        session_utc_offset_minutes: int = IST_UTC_OFFSET_MINUTES,
        follow_leadership: bool = False,
    ) -> None:
        if partial_fill_max is not None and partial_fill_max <= 0:
            raise ValueError(f"partial_fill_max must be > 0 or None, was {partial_fill_max}")
        self._config = config
        self._instruments: dict[str, Instrument] = dict(instruments)
        self._database = database
        self._clock = clock
        self._rules = VenueRules(
            latency_ns=config.latency_ms * NANOS_PER_MILLISECOND,
            slippage_ticks=config.slippage_ticks,
            partial_fill_max=partial_fill_max,
        )
        self._starting_balance = starting_balance
        self._session_offset_ns = session_utc_offset_minutes * 60 * 1_000_000_000
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._books = VenueBooks()
        self._is_connected = False
        self._is_closed = False
        self._venue_now_ns = 0
        self._last_heartbeat_ns: int | None = None
        self._refused_counts: collections.Counter[str] = collections.Counter()
        self._sink: ReportSink | None = None
        self._outbox: collections.deque[BrokerReport] = collections.deque()
        self._is_draining = False
        self._is_active = not follow_leadership
        self._leader_epoch: int | None = None

    # -----------------------------------------------------------------------------------------
    # LIFECYCLE
    # -----------------------------------------------------------------------------------------

    def connect(self) -> AccountInfo:
        """Load the books from storage (working orders, positions, counters) and go online.

        Calling it again reloads from storage. Quotes seen before are kept.

        Raises:
            BrokerUnavailable: storage could not be read.
        """
        with self._lock:
            self._check_open()
            try:
                with self._database.transaction() as connection:
                    books, balance = self._load(connection)
            except SQLAlchemyError as error:
                raise BrokerUnavailable(f"STORAGE_UNAVAILABLE: loading books: {error}") from error
            self._books = msgspec.structs.replace(books, quotes=self._books.quotes)
            self._is_connected = True
            logger.info(
                "paper venue connected: account_id=%s working_orders=%d positions=%d "
                "next_order_seq=%d next_trade_seq=%d",
                self._config.account_id,
                len(books.working),
                sum(1 for position in books.positions.values() if position.quantity != 0),
                books.next_order_seq,
                books.next_trade_seq,
            )
        return AccountInfo(account_id=self._config.account_id, balance=balance, is_live=False)

    def set_report_sink(self, sink: ReportSink) -> None:
        """Route reports to ``sink``. It runs on whichever thread drives the venue."""
        with self._lock:
            self._sink = sink

    def on_leadership(self, is_leader: bool, epoch: int) -> None:
        """This process gained (``is_leader``) or lost the leader lease at ``epoch``.

        Gaining it (or a new epoch) reloads the books from storage, where the previous leader
        left them, and makes the venue active; losing it makes the venue passive: no matching,
        no writes, requests refused. Idempotent for a repeated (is_leader, epoch).

        Raises:
            BrokerUnavailable: storage could not be read; the venue stays passive.
        """
        with self._lock:
            if self._is_closed:
                return
            if not is_leader:
                if self._is_active:
                    logger.warning(
                        "paper venue passive: this process lost the lease (epoch %d)", epoch
                    )
                self._is_active = False
                return
            if self._is_active and self._leader_epoch == epoch:
                return
            self._is_active = False  # until the books are reloaded
            books = self._reload_books("taking over")
            self._is_active = True
            self._leader_epoch = epoch
            logger.info(
                "paper venue active for epoch %d: working_orders=%d next_order_seq=%d "
                "next_trade_seq=%d",
                epoch,
                len(books.working),
                books.next_order_seq,
                books.next_trade_seq,
            )

    def close(self) -> None:
        """Go offline: later requests raise ``BrokerUnavailable``, passes are ignored.

        The database is the caller's and stays open.
        """
        with self._lock:
            self._is_closed = True
            self._is_connected = False

    # -----------------------------------------------------------------------------------------
    # COMMANDS
    # -----------------------------------------------------------------------------------------

    def submit_order(self, request: OrderRequest) -> None:
        """Validate and store ``request`` as received; the ack comes after the latency.

        Raises:
            BrokerRejected: a bad request (the message opens with the code, e.g.
                ``UNKNOWN_INSTRUMENT``, ``INVALID_QUANTITY``, ``NOT_LOT_MULTIPLE``,
                ``FREEZE_QUANTITY``, ``MISSING_LIMIT_PRICE``, ``MISSING_TRIGGER_PRICE``,
                ``INVALID_PRICE``), or ``DUPLICATE_CLIENT_ORDER_ID`` when the id is already on
                the books: no second order is created, and the first one is untouched.
            BrokerUnavailable: not connected, closed, or storage failed (outcome unknown).
        """
        client_order_id = request.client_order_id
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            try:
                duplicate, submit_count, rejection, books = self._store_request(request, now_ns)
            except IntegrityError as error:
                # Another writer moved the venue tables under our in-memory books (a stale
                # order counter after a takeover): reload them and try once more.
                logger.warning(
                    "paper venue storage conflict on submit, reloading books: "
                    "client_order_id=%s: %s",
                    client_order_id,
                    error.orig,
                )
                self._reload_books("storage conflict")
                try:
                    duplicate, submit_count, rejection, books = self._store_request(request, now_ns)
                except IntegrityError as again:
                    raise BrokerRejected(
                        f"VENUE_STORAGE_CONFLICT: client_order_id={client_order_id} could not "
                        f"be stored even after reloading the books: {again.orig}",
                        client_order_id=client_order_id,
                    ) from again
                except SQLAlchemyError as again:
                    raise BrokerUnavailable(
                        f"STORAGE_UNAVAILABLE: client_order_id={client_order_id}: {again}",
                        client_order_id=client_order_id,
                    ) from again
            except _FencedOut as fenced:
                self._go_passive(fenced)
                raise BrokerUnavailable(str(fenced), client_order_id=client_order_id) from None
            except SQLAlchemyError as error:
                raise BrokerUnavailable(
                    f"STORAGE_UNAVAILABLE: client_order_id={client_order_id}: {error}",
                    client_order_id=client_order_id,
                ) from error
            if duplicate is not None:
                logger.warning(
                    "paper venue refused a duplicate: client_order_id=%s submit_count=%d",
                    client_order_id,
                    submit_count,
                )
                raise BrokerRejected(
                    f"DUPLICATE_CLIENT_ORDER_ID: client_order_id={client_order_id} "
                    f"venue_order_id={duplicate.venue_order_id} "
                    f"status={duplicate.status.value} submit_count={submit_count}",
                    client_order_id=client_order_id,
                )
            if rejection is not None:
                self._refused_counts[client_order_id] += 1
                logger.info("paper venue rejected an order: %s", rejection)
                raise BrokerRejected(str(rejection), client_order_id=client_order_id)
            self._books = books

    def cancel_order(self, client_order_id: str) -> None:
        """Cancel after the latency. A dead, unknown or already-cancelling order: a no-op.

        Raises:
            BrokerUnavailable: not connected, closed, or storage failed (outcome unknown).
        """
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            books, order = request_cancel(
                self._books, client_order_id, rules=self._rules, now_ns=now_ns
            )
            if order is None:
                logger.info(
                    "paper venue cancel is a no-op: client_order_id=%s is not working or "
                    "already cancelling",
                    client_order_id,
                )
                return
            self._write(client_order_id, lambda connection: store.update_order(connection, order))
            self._books = books

    def modify_order(self, client_order_id: str, *, quantity: int) -> None:
        """Change the order's total quantity after the latency.

        If a fill takes the order to ``quantity`` or beyond before the change is due, the
        change is refused then with a status report whose reason opens ``MODIFY_REJECTED``.

        Raises:
            BrokerRejected: ``ORDER_NOT_WORKING``, ``ORDER_PENDING_CANCEL``, a bad quantity, or
                ``MODIFY_BELOW_FILLED``; the order is unchanged.
            BrokerUnavailable: not connected, closed, or storage failed (outcome unknown).
        """
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            try:
                books, order = request_modify(
                    self._books,
                    client_order_id,
                    quantity,
                    instruments=self._instruments,
                    rules=self._rules,
                    now_ns=now_ns,
                )
            except VenueRejection as rejection:
                logger.info("paper venue rejected a modify: %s", rejection)
                raise BrokerRejected(str(rejection), client_order_id=client_order_id) from None
            self._write(client_order_id, lambda connection: store.update_order(connection, order))
            self._books = books

    # -----------------------------------------------------------------------------------------
    # EVENTS (time and prices)
    # -----------------------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Take a new quote: apply what is due by the clock's now, then match on the quote.

        Storage failures are logged and the pass is retried on the next call. A quote the
        feed actor would reject (NaN, infinite, crossed, absurd) is ignored here too: the venue
        is the one consumer that fills money on a price, so it does not rely on its caller.
        """
        if quote_rejection(tick, self._instruments.get(getattr(tick, "instrument", ""))):
            return
        with self._lock:
            if self._is_closed:
                return
            now_ns = self._advance_time(self._clock.now_ns())
            if not self._is_connected or not self._is_active:
                if tick.instrument in self._instruments:
                    quotes = {**self._books.quotes, tick.instrument: tick}
                    self._books = msgspec.structs.replace(self._books, quotes=quotes)
            else:
                self._run_pass(now_ns, tick)
        self._drain()

    def on_time(self, now_ns: int) -> None:
        """Let time pass: apply due acks, cancels and modifies, continue partial fills, and
        emit an ``OrderStreamHeartbeat(ts_event=now_ns)`` at most every 500 ms of clock time.

        Storage failures are logged; that pass emits no heartbeat.
        """
        with self._lock:
            if self._is_closed or not self._is_connected:
                return
            pass_ns = self._advance_time(max(now_ns, self._clock.now_ns()))
            # A passive venue (this process does not lead) only says it is reachable.
            is_healthy = self._run_pass(pass_ns, None) if self._is_active else True
            if is_healthy and (
                self._last_heartbeat_ns is None
                or now_ns - self._last_heartbeat_ns >= HEARTBEAT_INTERVAL_NS
            ):
                self._last_heartbeat_ns = now_ns
                if self._sink is not None:
                    self._outbox.append(OrderStreamHeartbeat(ts_event=now_ns))
        self._drain()

    # -----------------------------------------------------------------------------------------
    # QUERIES
    # -----------------------------------------------------------------------------------------

    def list_orders(self) -> list[OrderStatusReport]:
        """Return the orders of the current session (working and terminal), oldest first."""
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            orders = self._read(
                lambda connection: store.load_orders_since(
                    connection, self._session_start_ns(now_ns)
                )
            )
            return [order.status_report(now_ns) for order in orders]

    def list_fills(self) -> list[FillReport]:
        """Return every fill of the current session, in execution order."""
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            fills = self._read(
                lambda connection: store.load_fills_since(
                    connection, self._session_start_ns(now_ns)
                )
            )
            return [fill.report() for fill in fills]

    def list_positions(self) -> list[PositionReport]:
        """Return the open net positions (quantity != 0), by instrument. A passive venue reads
        them from storage (its books may be stale; the leader's venue moves them)."""
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            if self._is_active:
                positions = dict(self._books.positions)
            else:
                positions = {
                    position.instrument: position for position in self._read(store.load_positions)
                }
            return [
                position.report(now_ns)
                for _instrument, position in sorted(positions.items())
                if position.quantity != 0
            ]

    def last_trade_prices(self) -> dict[str, Decimal]:
        """The latest traded price per instrument, from the books (survives restarts): where a
        simulated market should resume so that prices do not jump after an engine restart."""
        with self._lock:
            return self._read(store.last_fill_prices)

    def submission_counts(self) -> dict[str, int]:
        """Return how many times ``submit_order`` was called with each client order id.

        Calls that reached the books (the first one and every duplicate) are counted in
        storage and survive restarts; calls refused by validation are counted in memory.
        """
        with self._lock:
            counts = collections.Counter(self._refused_counts)
            counts.update(self._read(store.load_submit_counts))
            return dict(counts)

    def snapshot(self) -> dict[str, Any]:
        """Return a serialisable dump of the venue's state (no secrets to redact)."""
        with self._lock:
            books = self._books
            return {
                "name": self.name,
                "account_id": self._config.account_id,
                "is_connected": self._is_connected,
                "is_closed": self._is_closed,
                "is_active": self._is_active,
                "leader_epoch": self._leader_epoch,
                "latency_ms": self._config.latency_ms,
                "slippage_ticks": self._config.slippage_ticks,
                "partial_fill_max": self._rules.partial_fill_max,
                "venue_now_ns": self._venue_now_ns,
                "last_heartbeat_ns": self._last_heartbeat_ns,
                "next_order_seq": books.next_order_seq,
                "next_trade_seq": books.next_trade_seq,
                "working_orders": msgspec.to_builtins(
                    sorted(books.working.values(), key=lambda order: order.seq)
                ),
                "positions": msgspec.to_builtins(
                    [books.positions[key] for key in sorted(books.positions)]
                ),
                "quotes": {
                    symbol: {"bid": str(tick.bid), "ask": str(tick.ask), "ts_event": tick.ts_event}
                    for symbol, tick in sorted(books.quotes.items())
                },
                "refused_submit_counts": dict(self._refused_counts),
                "outbox_depth": len(self._outbox),
            }

    # -----------------------------------------------------------------------------------------
    # INTERNALS (all called with _lock held, except _drain)
    # -----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._is_closed:
            raise BrokerUnavailable(f"PAPER_VENUE_CLOSED: account_id={self._config.account_id}")

    def _check_online(self) -> None:
        self._check_open()
        if not self._is_connected:
            raise BrokerUnavailable(
                f"NOT_CONNECTED: account_id={self._config.account_id}; call connect() first"
            )

    def _check_active(self) -> None:
        self._check_online()
        if not self._is_active:
            raise BrokerUnavailable(
                f"VENUE_PASSIVE: account_id={self._config.account_id}; this process does not "
                "hold the leader lease, so its venue takes no requests"
            )

    def _fence(self, connection: Connection) -> None:
        """In a write transaction: refuse unless the lease is still at this venue's epoch
        (share-locked until commit on PostgreSQL, so a takeover waits for this write)."""
        if self._leader_epoch is None:
            return  # not following leadership: the only venue on these books
        current = connection.execute(
            select(leader_lease.c.epoch)
            .where(leader_lease.c.name == DEFAULT_LEASE_NAME)
            .with_for_update(read=True)
        ).scalar()
        if current != self._leader_epoch:
            raise _FencedOut(self._leader_epoch, current)

    def _go_passive(self, fenced: _FencedOut) -> None:
        if self._is_active:
            logger.warning("paper venue passive: %s", fenced)
        self._is_active = False

    def _reload_books(self, why: str) -> VenueBooks:
        try:
            with self._database.transaction() as connection:
                books, _balance = self._load(connection)
        except SQLAlchemyError as error:
            raise BrokerUnavailable(
                f"STORAGE_UNAVAILABLE: reloading books ({why}): {error}"
            ) from error
        self._books = msgspec.structs.replace(books, quotes=self._books.quotes)
        return self._books

    def _store_request(
        self, request: OrderRequest, now_ns: int
    ) -> tuple[VenueOrder | None, int, VenueRejection | None, VenueBooks]:
        """One transaction: the duplicate check (its count commits even though the request is
        refused), or validation and the insert. Returns (duplicate, submit_count, rejection,
        books after)."""
        client_order_id = request.client_order_id
        books = self._books
        with self._database.transaction() as connection:
            self._fence(connection)
            duplicate = store.find_order(connection, client_order_id)
            if duplicate is not None:
                return duplicate, store.bump_submit_count(connection, client_order_id), None, books
            try:
                books, order = receive_order(
                    self._books,
                    request,
                    instruments=self._instruments,
                    rules=self._rules,
                    now_ns=now_ns,
                )
            except VenueRejection as error:
                return None, 0, error, books
            store.insert_order(connection, order)
            store.save_meta(connection, [(store.META_NEXT_ORDER_SEQ, str(books.next_order_seq))])
        return None, 0, None, books

    def _advance_time(self, now_ns: int) -> int:
        # Callers on different threads read the clock at slightly different moments; the
        # venue's time never goes backwards.
        self._venue_now_ns = max(self._venue_now_ns, now_ns)
        return self._venue_now_ns

    def _session_start_ns(self, now_ns: int) -> int:
        local = now_ns + self._session_offset_ns
        return local - local % NANOS_PER_DAY - self._session_offset_ns

    def _load(self, connection: Connection) -> tuple[VenueBooks, Decimal]:
        meta = store.load_meta(connection)
        if store.META_STARTING_BALANCE not in meta:
            store.save_meta(
                connection, [(store.META_STARTING_BALANCE, str(self._starting_balance))]
            )
            meta[store.META_STARTING_BALANCE] = str(self._starting_balance)
        # The max over stored rows guards against a meta row behind its table.
        next_order_seq = max(
            int(meta.get(store.META_NEXT_ORDER_SEQ, "1")), store.max_order_seq(connection) + 1
        )
        next_trade_seq = max(
            int(meta.get(store.META_NEXT_TRADE_SEQ, "1")), store.max_fill_seq(connection) + 1
        )
        positions = store.load_positions(connection)
        books = VenueBooks(
            working={
                order.client_order_id: order for order in store.load_working_orders(connection)
            },
            positions={position.instrument: position for position in positions},
            next_order_seq=next_order_seq,
            next_trade_seq=next_trade_seq,
        )
        realized = sum((position.realized_pnl for position in positions), Decimal(0))
        return books, Decimal(meta[store.META_STARTING_BALANCE]) + realized

    def _run_pass(self, now_ns: int, tick: Tick | None) -> bool:
        result = step(
            self._books, now_ns=now_ns, instruments=self._instruments, rules=self._rules, tick=tick
        )
        if result.has_changes:
            try:
                with self._database.transaction() as connection:
                    self._fence(connection)
                    self._persist(connection, result)
            except _FencedOut as fenced:
                self._go_passive(fenced)
                return True
            except SQLAlchemyError:
                logger.exception(
                    "paper venue could not store a pass; books unchanged, retrying on the next "
                    "pass: now_ns=%d orders=%d fills=%d",
                    now_ns,
                    len(result.orders),
                    len(result.fills),
                )
                return False
        self._books = result.books
        self._outbox.extend(result.reports)
        return True

    @staticmethod
    def _persist(connection: Connection, result: StepResult) -> None:
        for order in result.orders:
            store.update_order(connection, order)
        for fill in result.fills:
            store.insert_fill(connection, fill)
        for position in result.positions:
            store.upsert_position(connection, position)
        if result.fills:
            store.save_meta(
                connection, [(store.META_NEXT_TRADE_SEQ, str(result.books.next_trade_seq))]
            )

    def _write(self, client_order_id: str, action: Callable[[Connection], None]) -> None:
        try:
            with self._database.transaction() as connection:
                self._fence(connection)
                action(connection)
        except _FencedOut as fenced:
            self._go_passive(fenced)
            raise BrokerUnavailable(str(fenced), client_order_id=client_order_id) from None
        except SQLAlchemyError as error:
            raise BrokerUnavailable(
                f"STORAGE_UNAVAILABLE: client_order_id={client_order_id}: {error}",
                client_order_id=client_order_id,
            ) from error

    def _read(self, query: Callable[[Connection], _T]) -> _T:
        try:
            with self._database.transaction() as connection:
                return query(connection)
        except SQLAlchemyError as error:
            raise BrokerUnavailable(f"STORAGE_UNAVAILABLE: reading books: {error}") from error

    def _drain(self) -> None:
        # Called without the lock. Only one thread delivers at a time, so reports keep the
        # order they were queued in; a thread that finds delivery in progress leaves its
        # reports to the deliverer, which loops until the queue is empty.
        while True:
            with self._lock:
                sink = self._sink
                if self._is_draining or sink is None or not self._outbox:
                    return
                self._is_draining = True
                batch = list(self._outbox)
                self._outbox.clear()
            try:
                for report in batch:
                    try:
                        sink(report)
                    except Exception:
                        logger.exception(
                            "paper venue report sink raised; continuing with the next report: "
                            "report=%s",
                            type(report).__name__,
                        )
            finally:
                with self._lock:
                    self._is_draining = False
