"""``PaperBroker``: a simulated venue behind the broker port, its books in memory, written
behind to its own tables by a writer thread of its own.

It owns the venue's live books (``matching.IndexedBooks``: working orders indexed for
matching, positions, quotes, counters), one short lock over them, a writer thread that
persists what the venue did in batches (``books.py``'s tables), and the report sink. The
matching rules live in ``venue.py``.

Threads and what a caller waits for:
- ``submit_order``/``cancel_order``/``modify_order`` validate and apply the request to the
  in-memory books under the lock, queue it for the writer and return: no database, no matching,
  microseconds. Nothing is emitted from them: acks, fills, cancels and modifies come from a
  later ``on_time``/``on_tick`` once the clock has moved ``latency_ms`` past the request.
- ``on_tick`` (the feed thread, every valid quote) and ``on_time`` (the timer) run a matching
  pass under the lock; the trigger index hands the pass only the orders it can touch (about
  a microsecond per tick with nothing crossed, whatever the number of working orders).
- Everything a request or a pass changes (orders, fills, positions, counters) and the reports
  it produces go into the open batch, in the order they happened. The writer takes the whole
  open batch when it is free (a group commit: what piles up while it writes goes in the next
  one), writes it in one transaction, and only then hands that batch's reports to the sink,
  on the writer thread, outside any venue lock. Batches are written and delivered one at a
  time, in order.

The ordering guarantee: **a report reaches the sink only after the transaction holding the
change it reports has committed**, and reports keep the order of the events. So after a
SIGKILL the venue's tables hold everything the order actor was told, and perhaps more (a batch
committed and killed before its reports went out: the engine's reconciliation reads those from
``list_orders``/``list_fills``). What was not committed is lost as if the venue never received
it: a request the caller was told "received" but whose batch did not commit is unknown after a
restart; the order actor resends it under the same id after its settle threshold. A duplicate
client order id is refused against every id the venue has taken, in memory or in storage,
including across restarts once it was committed.

With ``rate_limit_per_s``/``rate_limit_per_min`` set, the venue's front door is a rate-limited
broker's (``rate_limit.VenueRateLimit``): a request over the limit is refused with
``BrokerRateLimited`` (a 429) before it touches the books, and ``request_rates`` tells the most
requests that arrived in any second and minute.

Queries answer from memory and only with what was reported: ``list_orders``, ``list_fills`` and
``list_positions`` read a mirror of the tables that the writer brings up to date after it has
delivered each batch's reports (so a reconciliation never sees a fill before its report). They
first wait (briefly) for the writer to catch up with everything done before the call, so a list
never leaves out an order the venue took (the order actor would resend it); if storage keeps the
writer behind they raise ``BrokerUnavailable`` (``VENUE_STORAGE_BEHIND``) rather than answer
with an incomplete list. A passive venue (see below) reads its tables instead: another
process's venue moves them.

Failures:
- A batch whose transaction fails (storage unavailable) is retried with backoff until it
  commits; later work queues behind it and nothing is delivered meanwhile, heartbeats included,
  so the engine sees the order stream go stale.
- An exception raised by the sink is logged and the next report is still delivered.
- Reports due while no sink is set wait for one (heartbeats are not produced without a sink).
- ``flush`` waits until everything done so far is committed and delivered (tests, shutdown).

Leadership: with several processes on one database, each has its own ``PaperBroker`` over the
same venue tables, and only the leader's may act. Built with ``follow_leadership=True`` (the
engine does), the venue starts passive: it keeps quotes and answers queries from storage, but
matches nothing, writes nothing and refuses requests (``BrokerUnavailable``, ``VENUE_PASSIVE``)
until ``on_leadership(True, epoch)``, which lets the writer finish what it holds and reloads the
books from storage (the previous leader's orders, fills, positions and counters), as the venue of
a standby must not match its stale copy of orders another process may have filled or cancelled.
``on_leadership(False, ...)`` makes it passive again. While active its writes are fenced like the
engine's orders: every batch's transaction first checks (share-locking the lease row) that the
lease is still at the epoch the batch was made in, so the venue of a leader that was deposed
without knowing it (paused, partitioned) cannot write after the new leader's venue has loaded
the books. A fenced batch is dropped with everything queued behind it (none of it was reported)
and the venue goes passive. A storage conflict (another writer moved the books: a duplicate key
or a missing row) reloads the books and applies the lost batches' requests again as new
arrivals; requests that conflict twice in a row are refused with a REJECTED status report
(``VENUE_STORAGE_CONFLICT``), never left to fail the same way forever.

Sessions: ``list_orders`` returns the orders received since the start of the current trading
day (midnight at ``session_utc_offset_minutes``, IST by default) plus any older order still
working; ``list_fills`` returns the fills of the current day. Positions carry over days.
``list_open_orders`` (the working orders, of any day) and ``list_fills(since_ns=...)`` answer
the reconciliation's frequent light runs in O(what they return), whatever the day's volume:
the reported mirror keeps the working orders apart, and its fills are in execution order with
a running maximum of their times, so the first fill at or after ``since_ns`` is a bisection.
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading
from collections.abc import Mapping
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
from adapters.brokers.paper.matching import IndexedBooks
from adapters.brokers.paper.rate_limit import VenueRateLimit
from adapters.brokers.paper.venue import (
    PassChanges,
    VenueBooks,
    VenueFill,
    VenueOrder,
    VenuePosition,
    VenueRejection,
    VenueRules,
)
from adapters.storage.repositories import DEFAULT_LEASE_NAME
from adapters.storage.tables import leader_lease
from domain.enums import OrderStatus
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
    from collections.abc import Callable

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
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0
CLOSE_TIMEOUT_S = 10.0
# How long a query waits for the writer to catch up before it says the venue is unavailable.
QUERY_CATCH_UP_TIMEOUT_S = 2.0

_T = TypeVar("_T")

# A request as the venue received it, kept until its batch commits: after a storage conflict
# the venue reloads its books and applies these again.
_Request = (
    tuple[str, OrderRequest, None]  # ("submit", request, None)
    | tuple[str, str, int | None]  # ("cancel", client_order_id, None) / ("modify", id, quantity)
)


class _FencedOut(Exception):
    """The lease moved past this venue's epoch: another process's venue owns the books."""

    def __init__(self, epoch: int, current_epoch: int | None) -> None:
        super().__init__(
            f"VENUE_FENCED: this venue acts for epoch {epoch}, the lease is at epoch "
            f"{current_epoch}; another process leads"
        )
        self.epoch = epoch
        self.current_epoch = current_epoch


class _Batch:
    """What the venue did since the previous batch, to write in one transaction, and the
    reports to deliver once it has committed. Rows are kept in their final version."""

    __slots__ = (
        "epoch",
        "fills",
        "inserts",
        "meta",
        "number",
        "positions",
        "reports",
        "requests",
        "submit_counts",
        "updates",
    )

    def __init__(self, number: int, epoch: int | None) -> None:
        self.number = number
        self.epoch = epoch  # the lease epoch its writes were made at (None: not fenced)
        self.inserts: dict[str, VenueOrder] = {}
        self.updates: dict[str, VenueOrder] = {}
        self.fills: list[VenueFill] = []
        self.positions: dict[str, VenuePosition] = {}
        self.submit_counts: dict[str, int] = {}
        self.meta: dict[str, str] = {}
        self.reports: list[BrokerReport] = []
        self.requests: list[_Request] = []

    @property
    def has_writes(self) -> bool:
        return bool(
            self.inserts
            or self.updates
            or self.fills
            or self.positions
            or self.submit_counts
            or self.meta
        )

    @property
    def is_empty(self) -> bool:
        return not (self.has_writes or self.reports)

    def record_order(self, order: VenueOrder) -> None:
        if order.client_order_id in self.inserts:
            self.inserts[order.client_order_id] = order
        else:
            self.updates[order.client_order_id] = order


class _Loaded(msgspec.Struct, frozen=True, kw_only=True):
    """The venue's tables as read at connect, takeover or after a conflict."""

    books: VenueBooks
    balance: Decimal
    starting_balance: Decimal
    since_ns: int  # the session start the session lists were read from
    session_orders: tuple[VenueOrder, ...]
    session_fills: tuple[VenueFill, ...]
    submit_counts: dict[str, int]
    last_prices: dict[str, Decimal]


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
        writer_thread: write behind on a thread of the venue's own (default). False: batches
            are written and their reports delivered only when the caller asks
            (``write_pending``, ``flush``), on its thread: a replay calls it between ticks, so
            reports land at the same place in every run.
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
        writer_thread: bool = True,
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
        self._changed = threading.Condition(self._lock)  # the writer's wake-up, flush's too
        # Guarded by _lock. The live books (ahead of storage by the batches not yet written):
        self._books = IndexedBooks(VenueBooks(), instruments=self._instruments, rules=self._rules)
        self._latest: dict[str, VenueOrder] = {}  # latest version of each order known here
        self._submit_counts: dict[str, int] = {}  # every client order id taken, ever
        self._refused_counts: collections.Counter[str] = collections.Counter()
        # What was reported (the tables as of the last delivered batch):
        self._published_orders: dict[str, VenueOrder] = {}
        self._published_working: dict[str, VenueOrder] = {}  # the non-terminal ones of those
        self._published_fills: list[VenueFill] = []
        # _published_fill_ts_max[i] = max ts_event of _published_fills[:i + 1]: nondecreasing
        # even if a reload put another process's later clock before ours, so it bisects.
        self._published_fill_ts_max: list[int] = []
        # The session start the mirror was last trimmed to (earlier finished orders dropped).
        self._published_since_ns: int | None = None
        self._published_positions: dict[str, VenuePosition] = {}
        self._starting_balance_stored = starting_balance
        self._last_prices: dict[str, Decimal] = {}
        # The write-behind:
        self._open = _Batch(1, None)
        self._in_flight: _Batch | None = None
        self._done_through = 0  # every batch numbered up to this is written (or dropped)
        self._held: list[BrokerReport] = []  # committed, waiting for a sink
        # Requests already taken again once after a storage conflict, by id() (kept alive
        # here, so an id is not reused); cleared when a batch with writes commits.
        self._conflicted_requests: dict[int, _Request] = {}
        self._writer: threading.Thread | None = None
        self._writer_thread = writer_thread
        self._driven = threading.Lock()  # one batch at a time without the writer thread
        self._batches_written = 0
        self._write_failures = 0
        self._sink: ReportSink | None = None
        self._is_connected = False
        self._is_closed = False
        self._venue_now_ns = 0
        self._last_heartbeat_ns: int | None = None
        self._is_active = not follow_leadership
        self._leader_epoch: int | None = None
        # A rate-limited broker's front door, when configured (None: unlimited, not counted).
        self._rate_limit: VenueRateLimit | None = None
        if config.rate_limit_per_s is not None or config.rate_limit_per_min is not None:
            self._rate_limit = VenueRateLimit(
                per_second=config.rate_limit_per_s, per_minute=config.rate_limit_per_min
            )

    # -----------------------------------------------------------------------------------------
    # LIFECYCLE
    # -----------------------------------------------------------------------------------------

    def connect(self) -> AccountInfo:
        """Load the books from storage (working orders, positions, counters, the session's
        orders and fills) and go online; starts the writer thread.

        Calling it again while connected only answers the account (an operator's
        ``POST /execution/connect`` or a pre-live check while trading): reloading the books
        under a running venue could drop an order submitted between the read and the install.

        Raises:
            BrokerUnavailable: storage could not be read.
        """
        with self._lock:
            self._check_open()
            if self._is_connected:
                return self._account_info()
        self.flush()
        loaded = self._load_all("connecting")
        with self._lock:
            self._check_open()
            self._install(loaded)
            self._is_connected = True
            if self._writer is None and self._writer_thread:
                self._writer = threading.Thread(
                    target=self._write_loop, name="paper-venue-writer", daemon=True
                )
                self._writer.start()
        books = loaded.books
        logger.info(
            "paper venue connected: account_id=%s working_orders=%d positions=%d "
            "next_order_seq=%d next_trade_seq=%d",
            self._config.account_id,
            len(books.working),
            sum(1 for position in books.positions.values() if position.quantity != 0),
            books.next_order_seq,
            books.next_trade_seq,
        )
        with self._lock:
            return self._account_info()

    def _account_info(self) -> AccountInfo:
        # The balance as reported so far: starting cash plus every reported position's realized
        # PnL. is_live: a rehearsal venue presents a LIVE-type account (paper_broker.live_account).
        realized = sum(
            (position.realized_pnl for position in self._published_positions.values()), Decimal(0)
        )
        return AccountInfo(
            account_id=self._config.account_id,
            balance=self._starting_balance_stored + realized,
            is_live=self._config.live_account,
        )

    def set_report_sink(self, sink: ReportSink) -> None:
        """Route reports to ``sink``. The venue's writer thread calls it, outside any lock."""
        with self._lock:
            self._sink = sink
            self._changed.notify_all()

    def on_leadership(self, is_leader: bool, epoch: int) -> None:
        """This process gained (``is_leader``) or lost the leader lease at ``epoch``.

        Gaining it (or a new epoch) lets the writer finish (a batch of an older epoch is fenced
        out and dropped), reloads the books from storage, where the previous leader left them,
        and makes the venue active; losing it makes the venue passive: no matching, no writes,
        requests refused. Idempotent (and immediate) for a repeated (is_leader, epoch).

        Raises:
            BrokerUnavailable: storage could not be read; the venue stays passive.
        """
        with self._lock:
            if self._is_closed:
                return
            if not is_leader:
                was_active = self._is_active
                self._is_active = False
            elif self._is_active and self._leader_epoch == epoch:
                return
            else:
                was_active = False
                self._is_active = False  # until the books are reloaded
        if not is_leader:
            if was_active:
                logger.warning("paper venue passive: this process lost the lease (epoch %d)", epoch)
            return
        self.flush()
        loaded = self._load_all("taking over")
        with self._lock:
            if self._is_closed:
                return
            self._install(loaded)
            self._leader_epoch = epoch
            self._is_active = True
        logger.info(
            "paper venue active for epoch %d: working_orders=%d next_order_seq=%d "
            "next_trade_seq=%d",
            epoch,
            len(loaded.books.working),
            loaded.books.next_order_seq,
            loaded.books.next_trade_seq,
        )

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything the venue did before this call is committed and its reports
        delivered (or dropped, if fenced). Returns False on timeout; True at once when called
        from the writer thread (a sink), which cannot wait for itself."""
        if threading.current_thread() is self._writer:
            return True
        if not self._writer_thread:
            while self.write_pending():
                pass
            return True
        with self._lock:
            target = self._open.number if not self._open.is_empty else self._open.number - 1
            return self._changed.wait_for(
                lambda: (
                    self._done_through >= target
                    or self._writer is None
                    or not self._writer.is_alive()
                ),
                timeout=timeout_s,
            )

    def close(self) -> None:
        """Go offline: later requests raise ``BrokerUnavailable``, passes are ignored. The
        writer commits and delivers what it holds, then stops.

        The database is the caller's and stays open.
        """
        if not self._writer_thread:
            self.flush()
        with self._lock:
            self._is_closed = True
            self._is_connected = False
            self._changed.notify_all()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(CLOSE_TIMEOUT_S)
            if writer.is_alive():
                logger.error(
                    "paper venue writer did not stop within %.0f s; unwritten batches are lost",
                    CLOSE_TIMEOUT_S,
                )

    # -----------------------------------------------------------------------------------------
    # COMMANDS
    # -----------------------------------------------------------------------------------------

    def submit_order(self, request: OrderRequest) -> None:
        """Validate ``request`` and take it as received; the ack comes after the latency.

        Raises:
            BrokerRejected: a bad request (the message opens with the code, e.g.
                ``UNKNOWN_INSTRUMENT``, ``INVALID_QUANTITY``, ``NOT_LOT_MULTIPLE``,
                ``FREEZE_QUANTITY``, ``MISSING_LIMIT_PRICE``, ``MISSING_TRIGGER_PRICE``,
                ``INVALID_PRICE``), or ``DUPLICATE_CLIENT_ORDER_ID`` when the id was taken
                before: no second order is created, and the first one is untouched.
            BrokerUnavailable: not connected, closed, or passive.
            BrokerRateLimited: over ``rate_limit_per_s``/``rate_limit_per_min``; not taken.
        """
        client_order_id = request.client_order_id
        if self._rate_limit is not None:
            self._rate_limit.admit("submit", client_order_id)
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            count = self._submit_counts.get(client_order_id)
            if count is not None:
                # Taken before (working, finished, or an earlier session's): count it, keep
                # the first order as it is.
                count += 1
                self._submit_counts[client_order_id] = count
                self._batch_for_writes().submit_counts[client_order_id] = count
                self._changed.notify_all()
                existing = self._latest.get(client_order_id)
                rejection: VenueRejection | None = None
            else:
                try:
                    order = self._books.receive(request, now_ns=now_ns)
                except VenueRejection as error:
                    self._refused_counts[client_order_id] += 1
                    rejection = error
                else:
                    self._submit_counts[client_order_id] = 1
                    self._latest[client_order_id] = order
                    batch = self._batch_for_writes()
                    batch.inserts[client_order_id] = order
                    batch.meta[store.META_NEXT_ORDER_SEQ] = str(self._books.next_order_seq)
                    batch.requests.append(("submit", request, None))
                    self._changed.notify_all()
                    return
        # Logged and raised outside the lock: a log line costs far more than the request.
        if rejection is not None:
            logger.info("paper venue rejected an order: %s", rejection)
            raise BrokerRejected(str(rejection), client_order_id=client_order_id)
        logger.warning(
            "paper venue refused a duplicate: client_order_id=%s submit_count=%d",
            client_order_id,
            count,
        )
        described = (
            "status=unknown (an earlier session's order)"
            if existing is None
            else f"venue_order_id={existing.venue_order_id} status={existing.status.value}"
        )
        raise BrokerRejected(
            f"DUPLICATE_CLIENT_ORDER_ID: client_order_id={client_order_id} {described} "
            f"submit_count={count}",
            client_order_id=client_order_id,
        )

    def cancel_order(self, client_order_id: str) -> None:
        """Cancel after the latency. A dead, unknown or already-cancelling order: a no-op.

        Raises:
            BrokerUnavailable: not connected, closed, or passive.
            BrokerRateLimited: over the venue's rate limit; not taken.
        """
        if self._rate_limit is not None:
            self._rate_limit.admit("cancel", client_order_id)
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            order = self._books.cancel(client_order_id, now_ns=now_ns)
            if order is not None:
                self._latest[client_order_id] = order
                batch = self._batch_for_writes()
                batch.record_order(order)
                batch.requests.append(("cancel", client_order_id, None))
                self._changed.notify_all()
                return
        logger.info(
            "paper venue cancel is a no-op: client_order_id=%s is not working or "
            "already cancelling",
            client_order_id,
        )

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: int,
        to_market: bool = False,
        trigger_price: Decimal | None = None,
    ) -> None:
        """Change the order's total quantity after the latency (``to_market`` is not offered:
        the paper venue's flatten cancels the stop and sends an exit).

        If a fill takes the order to ``quantity`` or beyond before the change is due, the
        change is refused then with a status report whose reason opens ``MODIFY_REJECTED``.

        Raises:
            BrokerRejected: ``ORDER_NOT_WORKING``, ``ORDER_PENDING_CANCEL``, a bad quantity, or
                ``MODIFY_BELOW_FILLED``; the order is unchanged.
            BrokerUnavailable: not connected, closed, or passive.
            BrokerRateLimited: over the venue's rate limit; not taken.
        """
        if to_market or trigger_price is not None:
            raise BrokerRejected(
                f"MODIFY_UNSUPPORTED: {client_order_id}: the paper venue only resizes (its "
                "flatten cancels the stop, its tighten replaces it)",
                client_order_id=client_order_id,
            )
        if self._rate_limit is not None:
            self._rate_limit.admit("modify", client_order_id)
        with self._lock:
            self._check_active()
            now_ns = self._advance_time(self._clock.now_ns())
            try:
                order = self._books.modify(client_order_id, quantity, now_ns=now_ns)
            except VenueRejection as error:
                rejection = error
            else:
                self._latest[client_order_id] = order
                batch = self._batch_for_writes()
                batch.record_order(order)
                batch.requests.append(("modify", client_order_id, quantity))
                self._changed.notify_all()
                return
        logger.info("paper venue rejected a modify: %s", rejection)
        raise BrokerRejected(str(rejection), client_order_id=client_order_id)

    # -----------------------------------------------------------------------------------------
    # EVENTS (time and prices)
    # -----------------------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Take a new quote: apply what is due by the clock's now, then match on the quote.

        A quote the feed actor would reject (NaN, infinite, crossed, absurd) is ignored here
        too: the venue is the one consumer that fills money on a price, so it does not rely
        on its caller.
        """
        if quote_rejection(tick, self._instruments.get(getattr(tick, "instrument", ""))):
            return
        self.on_validated_tick(tick)

    def on_validated_tick(self, tick: Tick) -> None:
        """``on_tick`` for a quote that already passed the feed actor's ``tick_rejection`` (a
        superset of the venue's check): the engine's feed hands every tick here, so it is not
        checked twice."""
        with self._lock:
            if self._is_closed:
                return
            now_ns = self._advance_time(self._clock.now_ns())
            if not self._is_connected or not self._is_active:
                self._books.set_quote(tick)
                return
            self._record(self._books.step(now_ns=now_ns, tick=tick))

    def on_time(self, now_ns: int) -> None:
        """Let time pass: apply due acks, cancels and modifies, continue partial fills, and
        emit an ``OrderStreamHeartbeat(ts_event=now_ns)`` at most every 500 ms of clock time
        (delivered, like every report, after the batches before it have committed).
        """
        with self._lock:
            if self._is_closed or not self._is_connected:
                return
            pass_ns = self._advance_time(max(now_ns, self._clock.now_ns()))
            # A passive venue (this process does not lead) only says it is reachable.
            if self._is_active:
                self._record(self._books.step(now_ns=pass_ns))
            if self._sink is not None and (
                self._last_heartbeat_ns is None
                or now_ns - self._last_heartbeat_ns >= HEARTBEAT_INTERVAL_NS
            ):
                self._last_heartbeat_ns = now_ns
                self._open.reports.append(OrderStreamHeartbeat(ts_event=now_ns))
                self._changed.notify_all()

    # -----------------------------------------------------------------------------------------
    # QUERIES
    # -----------------------------------------------------------------------------------------

    def list_orders(self) -> list[OrderStatusReport]:
        """Return the orders of the current session (working and terminal), oldest first, as
        reported so far."""
        self._catch_up("list_orders")
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            since_ns = self._session_start_ns(now_ns)
            orders = None
            if self._is_active:
                self._forget_before(since_ns)
                orders = list(self._published_orders.values())
        if orders is None:
            orders = self._read(lambda connection: store.load_orders_since(connection, since_ns))
        return [
            order.status_report(now_ns)
            for order in sorted(orders, key=lambda order: order.seq)
            if order.ts_received >= since_ns or not order.status.is_terminal
        ]

    def list_open_orders(self) -> list[OrderStatusReport]:
        """Return the working orders (of any session), oldest first, as reported so far: the
        working part of ``list_orders``, in O(working orders)."""
        self._catch_up("list_open_orders")
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            orders = None
            if self._is_active:
                self._forget_before(self._session_start_ns(now_ns))
                orders = list(self._published_working.values())
        if orders is None:
            orders = self._read(store.load_working_orders)
        return [
            order.status_report(now_ns) for order in sorted(orders, key=lambda order: order.seq)
        ]

    def list_fills(self, since_ns: int | None = None) -> list[FillReport]:
        """Return the fills of the current session reported so far, in execution order; with
        ``since_ns``, only those with ``ts_event >= since_ns`` (in O(those), by bisection)."""
        self._catch_up("list_fills")
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            session_ns = self._session_start_ns(now_ns)
            from_ns = session_ns if since_ns is None else max(session_ns, since_ns)
            fills = None
            if self._is_active:
                self._forget_before(session_ns)
                start = bisect.bisect_left(self._published_fill_ts_max, from_ns)
                fills = self._published_fills[start:]
        if fills is None:
            fills = self._read(lambda connection: store.load_fills_since(connection, from_ns))
        return [fill.report() for fill in fills if fill.ts_event >= from_ns]

    def list_positions(self) -> list[PositionReport]:
        """Return the open net positions (quantity != 0), by instrument, as reported so far. A
        passive venue reads them from storage (its books may be stale; the leader's venue
        moves them)."""
        self._catch_up("list_positions")
        with self._lock:
            self._check_online()
            now_ns = self._advance_time(self._clock.now_ns())
            positions = dict(self._published_positions) if self._is_active else None
        if positions is None:
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
            if self._is_connected:
                return dict(self._last_prices)
        return self._read(store.last_fill_prices)

    def submission_counts(self) -> dict[str, int]:
        """Return how many times ``submit_order`` was called with each client order id.

        Calls that reached the books (the first one and every duplicate) are counted in
        storage and survive restarts once written; calls refused by validation are counted
        in memory only.
        """
        with self._lock:
            counts = collections.Counter(self._refused_counts)
            counts.update(self._submit_counts)
            return dict(counts)

    def request_rates(self) -> dict[str, Any] | None:
        """What the venue's rate limit counted (``VenueRateLimit.counts``), or None without one:
        the most requests that arrived in any second and minute, and how many were refused."""
        return None if self._rate_limit is None else self._rate_limit.counts()

    def request_arrivals(self) -> list[tuple[float, str, str, bool]]:
        """The last requests that reached the venue's rate limit, in order (empty without one):
        (wall time, request, client order id, accepted)."""
        return [] if self._rate_limit is None else self._rate_limit.arrivals()

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
                "write_behind": {
                    "open_batch": self._open.number,
                    "open_batch_reports": len(self._open.reports),
                    "in_flight_batch": None if self._in_flight is None else self._in_flight.number,
                    "done_through": self._done_through,
                    "batches_written": self._batches_written,
                    "write_failures": self._write_failures,
                    "held_reports": len(self._held),
                },
            }

    # -----------------------------------------------------------------------------------------
    # INTERNALS (called with _lock held unless they say otherwise)
    # -----------------------------------------------------------------------------------------

    def _catch_up(self, query: str) -> None:
        """Called without the lock. Wait until what the venue did before the query has been
        written and reported, so the answer leaves out nothing the venue has taken: an order
        missing from the list would be resent by a reconciliation after its settle threshold.

        Raises:
            BrokerUnavailable: ``VENUE_STORAGE_BEHIND`` when the writer cannot catch up in time
                (storage failing); an incomplete list is not an answer.
        """
        if not self.flush(QUERY_CATCH_UP_TIMEOUT_S):
            raise BrokerUnavailable(
                f"VENUE_STORAGE_BEHIND: {query}: account_id={self._config.account_id}; the "
                f"venue's writer has not stored its recent work within "
                f"{QUERY_CATCH_UP_TIMEOUT_S:.0f} s"
            )

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

    def _advance_time(self, now_ns: int) -> int:
        # Callers on different threads read the clock at slightly different moments; the
        # venue's time never goes backwards.
        self._venue_now_ns = max(self._venue_now_ns, now_ns)
        return self._venue_now_ns

    def _session_start_ns(self, now_ns: int) -> int:
        local = now_ns + self._session_offset_ns
        return local - local % NANOS_PER_DAY - self._session_offset_ns

    def _forget_before(self, since_ns: int) -> None:
        # A new session: earlier sessions' finished orders and fills leave the memory (they
        # stay in storage; their ids stay in _submit_counts, so they are still duplicates).
        # Once per session start: the queries call it every time and must not scan the day.
        if self._published_since_ns is not None and since_ns <= self._published_since_ns:
            return
        self._published_since_ns = since_ns
        if self._published_fills and self._published_fills[0].ts_event < since_ns:
            self._set_published_fills([f for f in self._published_fills if f.ts_event >= since_ns])
        stale = [
            order.client_order_id
            for order in self._published_orders.values()
            if order.ts_received < since_ns and order.status.is_terminal
        ]
        for client_order_id in stale:
            del self._published_orders[client_order_id]
            latest = self._latest.get(client_order_id)
            if latest is not None and latest.status.is_terminal:
                del self._latest[client_order_id]

    def _batch_for_writes(self) -> _Batch:
        batch = self._open
        if not batch.has_writes:
            # Its writes are fenced at the epoch they are made in (the venue reloads and
            # changes epoch only while passive, with the writer flushed).
            batch.epoch = self._leader_epoch
        return batch

    def _record(self, changes: PassChanges) -> None:
        if not (changes.has_changes or changes.reports):
            return
        batch = self._batch_for_writes()
        for order in changes.orders:
            self._latest[order.client_order_id] = order
            batch.record_order(order)
        if changes.fills:
            batch.fills.extend(changes.fills)
            batch.meta[store.META_NEXT_TRADE_SEQ] = str(self._books.next_trade_seq)
        for position in changes.positions:
            batch.positions[position.instrument] = position
        batch.reports.extend(changes.reports)
        self._changed.notify_all()

    def _set_published_fills(self, fills: list[VenueFill]) -> None:
        self._published_fills = []
        self._published_fill_ts_max = []
        self._append_published_fills(fills)

    def _append_published_fills(self, fills: list[VenueFill]) -> None:
        ts_max = self._published_fill_ts_max
        latest = ts_max[-1] if ts_max else None
        for fill in fills:
            latest = fill.ts_event if latest is None else max(latest, fill.ts_event)
            ts_max.append(latest)
        self._published_fills.extend(fills)

    def _publish_order(self, order: VenueOrder) -> None:
        self._published_orders[order.client_order_id] = order
        if order.status.is_terminal:
            self._published_working.pop(order.client_order_id, None)
        else:
            self._published_working[order.client_order_id] = order

    def _install(self, loaded: _Loaded) -> None:
        """Replace the live books and the reported mirror with what storage holds."""
        books = msgspec.structs.replace(loaded.books, quotes=self._books.quotes)
        self._books = IndexedBooks(books, instruments=self._instruments, rules=self._rules)
        self._latest = {order.client_order_id: order for order in loaded.session_orders}
        self._latest.update(books.working)
        self._submit_counts = dict(loaded.submit_counts)
        self._published_orders = dict(self._latest)
        self._published_working = {
            order_id: order
            for order_id, order in self._published_orders.items()
            if not order.status.is_terminal
        }
        self._set_published_fills(list(loaded.session_fills))
        self._published_since_ns = loaded.since_ns
        self._published_positions = dict(books.positions)
        self._last_prices = dict(loaded.last_prices)
        self._starting_balance_stored = loaded.starting_balance

    def _load_all(self, why: str) -> _Loaded:
        """Read the venue's tables. Called without the lock."""
        with self._lock:
            since_ns = self._session_start_ns(self._advance_time(self._clock.now_ns()))
        try:
            with self._database.transaction() as connection:
                books, starting_balance = self._load(connection)
                realized = sum(
                    (position.realized_pnl for position in books.positions.values()), Decimal(0)
                )
                return _Loaded(
                    books=books,
                    balance=starting_balance + realized,
                    starting_balance=starting_balance,
                    since_ns=since_ns,
                    session_orders=tuple(store.load_orders_since(connection, since_ns)),
                    session_fills=tuple(store.load_fills_since(connection, since_ns)),
                    submit_counts=store.load_submit_counts(connection),
                    last_prices=store.last_fill_prices(connection),
                )
        except SQLAlchemyError as error:
            raise BrokerUnavailable(
                f"STORAGE_UNAVAILABLE: loading books ({why}): {error}"
            ) from error

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
        return books, Decimal(meta[store.META_STARTING_BALANCE])

    def _read(self, query: Callable[[Connection], _T]) -> _T:
        # Without the lock: a passive venue's queries and start-up reads.
        try:
            with self._database.transaction() as connection:
                return query(connection)
        except SQLAlchemyError as error:
            raise BrokerUnavailable(f"STORAGE_UNAVAILABLE: reading books: {error}") from error

    # -----------------------------------------------------------------------------------------
    # THE WRITER THREAD
    # -----------------------------------------------------------------------------------------

    def write_pending(self) -> bool:
        """Without a writer thread (``writer_thread=False``): write the open batch and deliver
        its reports (and any held for a sink) on the caller's thread.

        Returns:
            True when there was a batch to write or reports to deliver.
        """
        if self._writer_thread:
            raise RuntimeError("write_pending: this venue writes behind on its own thread")
        with self._driven:
            with self._lock:
                if not self._has_work():
                    return False
                batch = self._take_batch()
            self._run_batch(batch)
            return True

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._is_closed or self._has_work())
                if not self._has_work():
                    return  # closed, and nothing left to write
                batch = self._take_batch()
            self._run_batch(batch)

    def _has_work(self) -> bool:
        return not self._open.is_empty or bool(self._held and self._sink is not None)

    def _take_batch(self) -> _Batch:
        batch = self._open
        self._open = _Batch(batch.number + 1, self._leader_epoch)
        self._in_flight = batch
        return batch

    def _run_batch(self, batch: _Batch) -> None:
        """Called without the lock: write ``batch``, deliver its reports, mark it done."""
        done = True
        try:
            done = self._write_and_deliver(batch)
        except Exception:
            # Nothing may kill the writer: every report would stop. Log and carry on.
            logger.exception("paper venue writer failed on batch %d", batch.number)
        finally:
            with self._lock:
                self._in_flight = None
                if done:
                    self._done_through = max(self._done_through, batch.number)
                self._changed.notify_all()

    def _write_and_deliver(self, batch: _Batch) -> bool:
        """Called without the lock, on the writer thread. Returns False when the batch's work
        was taken again into the open batch (a conflict): a ``flush`` waits for that one."""
        outcome = self._commit(batch)
        if outcome == "conflict":
            self._recover_from_conflict(batch)
            return False
        if outcome in ("fenced", "abandoned"):
            return True
        with self._lock:
            if batch.has_writes:
                self._batches_written += 1
                self._conflicted_requests.clear()
            sink = self._sink
            reports = [*self._held, *batch.reports]
            self._held = [] if sink is not None else reports
        if sink is not None:
            for report in reports:
                try:
                    sink(report)
                except Exception:
                    logger.exception(
                        "paper venue report sink raised; continuing with the next report: "
                        "report=%s",
                        type(report).__name__,
                    )
        # Only now do the queries show the batch: nothing is listed before it was reported.
        with self._lock:
            self._publish(batch)
        return True

    def _commit(self, batch: _Batch) -> str:
        """Write ``batch`` in one transaction, retrying storage failures with backoff.
        Returns "written", "fenced", "conflict" or "abandoned" (closed while failing)."""
        if not batch.has_writes:
            return "written"
        delay_s = RETRY_FIRST_DELAY_S
        while True:
            try:
                with self._database.transaction() as connection:
                    self._fence(connection, batch.epoch)
                    self._persist(connection, batch)
                return "written"
            except _FencedOut as fenced:
                self._drop_fenced(batch, fenced)
                return "fenced"
            except (IntegrityError, LookupError) as error:
                logger.warning(
                    "paper venue storage conflict writing batch %d (another writer moved the "
                    "books): %s",
                    batch.number,
                    getattr(error, "orig", error),
                )
                return "conflict"
            except SQLAlchemyError:
                logger.exception(
                    "paper venue could not write batch %d (orders=%d fills=%d); nothing after "
                    "it is reported until it is written; retrying in %.2f s",
                    batch.number,
                    len(batch.inserts) + len(batch.updates),
                    len(batch.fills),
                    delay_s,
                )
            with self._lock:
                self._write_failures += 1
                if self._changed.wait_for(lambda: self._is_closed, timeout=delay_s):
                    logger.error(
                        "paper venue closed with batch %d unwritten: its requests and fills "
                        "are lost as if never received",
                        batch.number,
                    )
                    return "abandoned"
            delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)

    def _fence(self, connection: Connection, epoch: int | None) -> None:
        """In a write transaction: refuse unless the lease is still at ``epoch`` (share-locked
        until commit on PostgreSQL, so a takeover waits for this write)."""
        if epoch is None:
            return  # not following leadership: the only venue on these books
        current = connection.execute(
            select(leader_lease.c.epoch)
            .where(leader_lease.c.name == DEFAULT_LEASE_NAME)
            .with_for_update(read=True)
        ).scalar()
        if current != epoch:
            raise _FencedOut(epoch, current)

    @staticmethod
    def _persist(connection: Connection, batch: _Batch) -> None:
        store.insert_orders(connection, batch.inserts.values())
        store.update_orders(connection, batch.updates.values())
        store.insert_fills(connection, batch.fills)
        store.upsert_positions(connection, batch.positions.values())
        store.set_submit_counts(connection, batch.submit_counts.items())
        if batch.meta:
            store.save_meta(connection, batch.meta.items())

    def _publish(self, batch: _Batch) -> None:
        for order in batch.inserts.values():
            self._publish_order(order)
        for order in batch.updates.values():
            self._publish_order(order)
        self._append_published_fills(batch.fills)
        for fill in batch.fills:
            self._last_prices[fill.instrument] = fill.price
        self._published_positions.update(batch.positions)

    def _drop_fenced(self, batch: _Batch, fenced: _FencedOut) -> None:
        # Another process leads: this batch and everything queued behind it were never
        # reported, so dropping them is as if the venue never received them.
        with self._lock:
            if batch.epoch == self._leader_epoch and self._is_active:
                self._is_active = False
                dropped = self._open
                self._open = _Batch(dropped.number, self._leader_epoch)
                logger.warning(
                    "paper venue passive: %s; dropped unwritten batches %d..%d (%d requests)",
                    fenced,
                    batch.number,
                    dropped.number,
                    len(batch.requests) + len(dropped.requests),
                )

    def _recover_from_conflict(self, batch: _Batch) -> None:
        """Another writer moved the venue tables under the live books: reload them and take
        the requests of the lost batches again, as new arrivals. Requests lost to a conflict
        twice in a row are refused instead (REJECTED status report)."""
        while True:
            try:
                loaded = self._load_all("storage conflict")
                break
            except BrokerUnavailable:
                logger.exception("paper venue could not reload its books after a conflict")
                with self._lock:
                    if self._changed.wait_for(lambda: self._is_closed, timeout=RETRY_MAX_DELAY_S):
                        return
        with self._lock:
            requests = [*batch.requests, *self._open.requests]
            self._open = _Batch(self._open.number, self._leader_epoch)
            self._install(loaded)
            now_ns = self._advance_time(self._clock.now_ns())
            refused: list[BrokerReport] = []
            replayed: dict[int, _Request] = {}
            for request in requests:
                report = self._replay(request, now_ns)
                if report is not None:
                    refused.append(report)
                replayed[id(request)] = request
            self._conflicted_requests = replayed
            self._record(self._books.step(now_ns=now_ns))
            self._open.reports.extend(refused)
            self._changed.notify_all()

    def _replay(self, request: _Request, now_ns: int) -> BrokerReport | None:
        kind, subject, quantity = request
        if kind == "submit":
            assert isinstance(subject, OrderRequest)
            client_order_id = subject.client_order_id
            if id(request) in self._conflicted_requests:
                return self._refusal(subject, "lost to a storage conflict twice", now_ns)
            if client_order_id in self._submit_counts:
                logger.warning(
                    "paper venue: client_order_id=%s was stored by another writer meanwhile; "
                    "not taken again",
                    client_order_id,
                )
                return None
            try:
                order = self._books.receive(subject, now_ns=now_ns)
            except VenueRejection as rejection:
                return self._refusal(subject, str(rejection), now_ns)
            self._submit_counts[client_order_id] = 1
            self._latest[client_order_id] = order
            batch = self._batch_for_writes()
            batch.inserts[client_order_id] = order
            batch.meta[store.META_NEXT_ORDER_SEQ] = str(self._books.next_order_seq)
            batch.requests.append(request)
            return None
        assert isinstance(subject, str)
        try:
            if kind == "cancel":
                order = self._books.cancel(subject, now_ns=now_ns)
            else:
                assert quantity is not None
                order = self._books.modify(subject, quantity, now_ns=now_ns)
        except VenueRejection as rejection:
            logger.warning("paper venue: a %s taken again after a conflict: %s", kind, rejection)
            return None
        if order is not None:
            self._latest[subject] = order
            batch = self._batch_for_writes()
            batch.record_order(order)
            batch.requests.append(request)
        return None

    def _refusal(self, request: OrderRequest, why: str, now_ns: int) -> OrderStatusReport:
        logger.error(
            "paper venue refused client_order_id=%s after a storage conflict: %s",
            request.client_order_id,
            why,
        )
        return OrderStatusReport(
            client_order_id=request.client_order_id,
            broker_order_id="",
            instrument=request.instrument,
            status=OrderStatus.REJECTED,
            quantity=request.quantity,
            filled_quantity=0,
            reason=f"VENUE_STORAGE_CONFLICT: {why}",
            ts_event=now_ns,
        )
