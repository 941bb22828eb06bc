"""The day figures' recorder: counted in memory on the hot path, stored as deltas off it.

``DayFiguresRecorder`` is what the risk actor (signals, approvals, blocks by reason, the heat
it sees) and the order actor's ack latency observations (through the engine's listener on
``trader_order_latency_ms``) count into. Counting is a lock and a dict update: no caller ever
waits for the database. A thread of its own stores what was counted since the last store, every
``flush_interval_s`` and at ``stop``, as *deltas* (``domain.day_figures.DayDeltas``): counts are
added to the stored ones and heat only raises the stored mark (``DayFiguresRepository.add``), so
the figures of a day are the sum over every process that ran that day, and a restarted
process never overwrites a day with its own smaller counts.

The trading day of a count is the exchange-local date of the time it happened
(``domain.calendar.trading_day`` in the configured zone): a plan at 23:59:59 and one at
00:00:01 local are counted on two days even if stored in one batch.

What a crash loses: a SIGKILL loses what was counted since the last store, at most
``flush_interval_s`` (1 s by default) of figures; a clean stop stores everything first. A
store that fails (storage down) keeps its deltas and retries at the next interval (logged once
per failure streak); nothing is dropped while the process lives.

Fenced to the lease holder, like the order write-behind: given ``lease_holder``, a batch is
stored only while the lease row names this process (checked in the batch's transaction). A
standby (or a process before its first lease) blocks every plan; its counts are dropped
(``fenced_drops``) so the day's figures are the leader's. Without ``lease_holder`` (tools,
tests of storage) nothing is fenced.

Threads: ``count_*``/``see_heat``/``observe_ack`` from any thread; ``flush`` from any thread
(stores synchronously, waits for a store in progress); the periodic store on the recorder's
daemon thread, started by ``start`` and ended by ``stop`` (which stores first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import select

from adapters.storage.repositories import DEFAULT_LEASE_NAME, UnitOfWork
from adapters.storage.tables import leader_lease
from domain.calendar import EXCHANGE_TZ, day_bounds_ns, trading_day
from domain.day_figures import (
    ACK_LATENCY,
    APPROVED,
    BLOCKED,
    RECORDED,
    SIGNALS,
    DayDeltas,
    bucket_label,
)

if TYPE_CHECKING:
    from adapters.storage.database import Database

__all__ = ["DayFiguresRecorder"]

logger = logging.getLogger(__name__)


class DayFiguresRecorder:
    """Counts the day figures in memory and stores them as deltas on a thread of its own.

    Args:
        database: the engine's database.
        latency_bounds_ms: the ack latency buckets' upper bounds (those of
            ``trader_order_latency_ms``, ``adapters.metrics.ORDER_LATENCY_BUCKETS_MS``).
        tz: the exchange zone whose local date is the trading day.
        flush_interval_s: how often the thread stores what was counted (wall clock); what a
            SIGKILL can lose at most.
        lease_holder: this process's lease identity; with it, stores are fenced to the lease.
    """

    def __init__(
        self,
        database: Database,
        *,
        latency_bounds_ms: Sequence[float],
        tz: ZoneInfo = EXCHANGE_TZ,
        flush_interval_s: float = 1.0,
        lease_holder: str | None = None,
    ) -> None:
        self._database = database
        self._bounds = tuple(latency_bounds_ms)
        self._tz = tz
        self._flush_interval_s = flush_interval_s
        self._lease_holder = lease_holder
        self._lock = threading.Lock()
        self._deltas = DayDeltas()
        # The trading day last looked up and its [start, end): most counts fall in it.
        self._day = ""
        self._day_start_ns = 0
        self._day_end_ns = 0
        # One store at a time (the thread's and a caller's flush).
        self._store_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.fenced_drops = 0
        """Stores dropped because another process held the lease."""
        self.stores = 0
        """Stores committed."""

    # ------------------------------------------------------------------ LIFECYCLE
    def start(self) -> None:
        """Start the storing thread (once)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="day-figures", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the thread, then store what is left (an error is logged with what was lost)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        try:
            self.flush()
        except Exception as error:
            with self._lock:
                lost = self._deltas
            logger.error(
                "day figures not stored at stop (lost: %d counts on %s): %r",
                sum(lost.counts.values()),
                sorted(lost.days()),
                error,
            )

    # ------------------------------------------------------------------ COUNTING
    def count_signal(self, strategy: str, now_ns: int) -> None:
        """A trade plan of ``strategy`` reached the risk actor."""
        self._add(SIGNALS, strategy, now_ns)

    def count_approved(self, strategy: str, now_ns: int) -> None:
        """The risk actor approved a plan of ``strategy`` and handed it to the order actor."""
        self._add(APPROVED, strategy, now_ns)

    def count_blocked(self, reason: str, now_ns: int) -> None:
        """The risk actor blocked a plan with denial code ``reason``."""
        self._add(BLOCKED, reason, now_ns)

    def observe_ack(self, latency_ms: float, now_ns: int) -> None:
        """An order was acknowledged ``latency_ms`` after it was sent."""
        self._add(ACK_LATENCY, bucket_label(latency_ms, self._bounds), now_ns)

    def see_heat(self, rupees: Decimal, ts_ns: int) -> None:
        """The portfolio's heat was ``rupees`` at ``ts_ns``; the day keeps the highest."""
        with self._lock:
            self._deltas.see_heat(self._trading_day(ts_ns), rupees, ts_ns)

    def _add(self, kind: str, key: str, now_ns: int) -> None:
        with self._lock:
            self._deltas.add(self._trading_day(now_ns), kind, key)

    def _trading_day(self, now_ns: int) -> str:
        # Under self._lock. The calendar is asked only when the time leaves the cached day.
        if not self._day_start_ns <= now_ns < self._day_end_ns:
            self._day = trading_day(now_ns, self._tz)
            self._day_start_ns, self._day_end_ns = day_bounds_ns(self._day, self._tz)
        return self._day

    # ------------------------------------------------------------------ STORING
    def pending(self) -> DayDeltas:
        """A copy of what was counted and not stored yet."""
        with self._lock:
            copy = DayDeltas()
            copy.merge(self._deltas)
            return copy

    def flush(self, now_ns: int | None = None) -> None:
        """Store what was counted so far, now, on the calling thread.

        Every day with counts gets one more ``recorded``/``flushes``, and so does the day of
        ``now_ns`` when given (a day on which the engine ran and counted nothing is then a day
        of zeros, not a day without figures).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the store failed; the deltas are kept for the next.
        """
        with self._store_lock:
            with self._lock:
                deltas, self._deltas = self._deltas, DayDeltas()
                days = deltas.days()
                if now_ns is not None:
                    days.add(self._trading_day(now_ns))
            batch = DayDeltas()
            batch.merge(deltas)
            for day in days:
                batch.add(day, RECORDED, "flushes")
            try:
                self._store(batch)
            except Exception:
                # Given back (without the "recorded" marks), ahead of what was counted since.
                with self._lock:
                    deltas.merge(self._deltas)
                    self._deltas = deltas
                raise

    def _store(self, deltas: DayDeltas) -> None:
        with UnitOfWork(self._database) as uow:
            holder = self._other_holder(uow)
            if holder is not None:
                self.fenced_drops += 1
                logger.info(
                    "day figures not stored: the lease is held by %s, not %s",
                    holder,
                    self._lease_holder,
                )
                return
            uow.day_figures.add(deltas, ts_ns=time.time_ns())
        self.stores += 1

    def _other_holder(self, uow: UnitOfWork) -> str | None:
        if self._lease_holder is None:
            return None
        holder = uow.connection.execute(
            select(leader_lease.c.holder)
            .where(leader_lease.c.name == DEFAULT_LEASE_NAME)
            .with_for_update(read=True)
        ).scalar()
        if holder == self._lease_holder:
            return None
        return holder or "nobody"

    def _run(self) -> None:
        while not self._stopping.wait(self._flush_interval_s):
            with self._lock:
                if self._deltas.is_empty:
                    continue
            try:
                self.flush()
            except Exception as error:
                if not self._failing:
                    logger.error("day figures not stored (kept, retried): %r", error)
                self._failing = True
            else:
                if self._failing:
                    logger.info("day figures stored again")
                self._failing = False
