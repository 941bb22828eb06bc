"""Bounded actor inboxes and per-instrument tick conflation.

pykka's inboxes are unbounded queues; a producer faster than its consumer grows one without
limit. Here every ``tell`` waits at most ``put_timeout_s`` for room, then raises
``MailboxFull`` (backpressure the sender can act on). Asks and stop requests are not counted
against the capacity: their callers wait for the answer anyway, and a full inbox must never
make an actor unstoppable. An actor may also name message types that must never be dropped
(the order actor's broker reports: they are the truth about money, and their volume is bounded
by our own orders).

Market data does not go through the inbox at all: a ``TickConflator`` keeps the latest tick per
instrument and wakes its consumer with a single ``DrainTicks``, so a busy strategy sees the
latest quote, not a backlog, and memory stays bounded by the number of instruments.

Consumers that only need the latest price when something else happens (the risk actor's quote
for a plan, the order actor's marks) read a ``QuoteBoard`` instead: the latest tick per
instrument with no wake-up at all. The consumer picks the ticks up when it next needs them, so a
tick costs them nothing (no message, no actor turn, no thread hand-off) and what they see is
never older than what a conflator would have handed them.

Live quotes can also arrive faster than the feed actor takes them in (a burst, a slow
machine). The live feed's ``FeedDoor`` then keeps, per instrument, only the newest quote not yet
taken in: the engine trades on the latest price instead of working through a backlog of stale
ones, and the wait from the door to a decision stays bounded by one quote per instrument. While
the feed actor keeps up, every item reaches it as it came. Dropped quotes are counted
(``conflated``), never validated and never seen by anyone.

A replayed file is different: its ticks are history, not a live quote that goes stale, and a
backtest must evaluate every one of them. There a ``TickQueue`` (same interface, the
``TickChannel`` protocol) keeps every tick in order; the producer waits for room
(``wait_for_room``) instead of overwriting, so memory stays bounded by its limit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pykka import messages as pykka_messages

from domain.messages import DrainTicks, Tick, TicksReceived

__all__ = [
    "BoundedInbox",
    "FeedDoor",
    "MailboxFull",
    "QuoteBoard",
    "TickChannel",
    "TickConflator",
    "TickQueue",
]


# DrainTicks carries nothing: one frozen instance serves every wake-up.
_WAKE = DrainTicks()


class MailboxFull(Exception):
    """A ``tell`` found the inbox full for longer than the put timeout."""

    def __init__(self, actor_name: str, capacity: int, waited_s: float) -> None:
        super().__init__(
            f"MAILBOX_FULL: actor={actor_name} capacity={capacity} waited_s={waited_s:.3f}"
        )
        self.actor_name = actor_name


class BoundedInbox(queue.Queue):  # type: ignore[type-arg]
    """A pykka inbox whose ``tell`` side is bounded by total message weight.

    The weight of a message is 1 unless ``weigh`` says otherwise (the feed actor weighs a batch
    by its ticks, so its bound is in ticks, whatever the batch size). A message heavier than
    the whole capacity is still taken when the inbox is empty, so nothing is refused forever.
    """

    def __init__(
        self,
        *,
        actor_name: str,
        capacity: int,
        put_timeout_s: float,
        exempt_types: tuple[type, ...] = (),
        weigh: Callable[[Any], int] | None = None,
    ) -> None:
        super().__init__()  # unbounded underneath; the capacity applies to tells only
        self._actor_name = actor_name
        self._capacity = capacity
        self._put_timeout_s = put_timeout_s
        self._exempt_types = (pykka_messages._ActorStop, *exempt_types)
        self._weigh = weigh
        self._load = 0

    @property
    def load(self) -> int:
        """Total weight queued (ticks for the feed actor, messages elsewhere)."""
        with self.mutex:
            return self._load

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        exempt = getattr(item, "reply_to", None) is not None or isinstance(
            getattr(item, "message", None), self._exempt_types
        )
        if exempt:
            super().put(item)
            return
        weight = self._weight(item)
        deadline = time.monotonic() + self._put_timeout_s
        with self.not_full:
            while self._load > 0 and self._load + weight > self._capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MailboxFull(self._actor_name, self._capacity, self._put_timeout_s)
                self.not_full.wait(remaining)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    # queue.Queue calls these with its mutex held.
    def _put(self, item: Any) -> None:
        self.queue.append(item)
        self._load += self._weight(item)

    def _get(self) -> Any:
        item = self.queue.popleft()
        self._load -= self._weight(item)
        return item

    def _weight(self, item: Any) -> int:
        if self._weigh is None:
            return 1
        return max(1, self._weigh(getattr(item, "message", item)))


class _WakesOnce:
    """The producer side every woken tick channel shares: at most one pending wake-up
    (``DrainTicks``) until the consumer drains, a wake that could not be delivered (the consumer
    down or full) re-armed for the next offer (the consumer drains in ``on_start`` what arrived
    meanwhile), and ``wait_for_room`` for a producer that would rather wait than let items pile
    up. Subclasses keep their items under ``_lock`` and say how many wait
    (``_pending_locked``)."""

    def __init__(self, wake: Callable[[DrainTicks], bool]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake_pending = False
        self._waiting_for_room = 0

    def _must_wake_locked(self) -> bool:
        """After an offer, under the lock: whether this offer sends the wake-up."""
        if self._wake_pending:
            return False
        self._wake_pending = True
        return True

    def _send_wake(self) -> None:
        """Outside the lock (a tell may wait for room in the consumer's inbox)."""
        if not self._wake(_WAKE):
            with self._lock:
                self._wake_pending = False

    def _taken_locked(self, *, more: bool = False) -> None:
        """After a drain, under the lock: the wake-up stays pending only while ``more`` wait
        (the consumer comes back for them); a producer waiting for room is told."""
        self._wake_pending = more
        if self._waiting_for_room:  # rare (a replay's or a benchmark's producer)
            self._drained.notify_all()

    def _pending_locked(self) -> int:
        raise NotImplementedError

    def wait_for_room(self, limit: int, timeout_s: float) -> bool:
        """Wait until fewer than ``limit`` items are pending; False if still not after
        ``timeout_s`` (a consumer that is down: the caller decides). Never call this on the
        consumer's own thread."""
        with self._lock:
            self._waiting_for_room += 1
            try:
                return self._drained.wait_for(
                    lambda: self._pending_locked() < limit, timeout=timeout_s
                )
            finally:
                self._waiting_for_room -= 1

    @property
    def pending_count(self) -> int:
        with self._lock:
            return self._pending_locked()


class TickConflator(_WakesOnce):
    """Latest tick per instrument for one consumer, with at most one pending wake-up.

    ``instruments``: the only instruments offered (None: all); a tick of another is ignored.
    ``offer`` runs on the producer's thread; ``drain`` on the consumer's. ``wake`` tells the
    consumer (normally ``ActorDirectory.tell``) and returns False when it could not; the wake is
    then re-armed, so a restarted consumer is woken by the next offer. A consumer calls ``drain``
    in ``on_start`` to pick up what arrived while it was down.
    """

    def __init__(
        self,
        *,
        consumer: str,
        wake: Callable[[DrainTicks], bool],
        instruments: frozenset[str] | None = None,
    ) -> None:
        super().__init__(wake)
        self.consumer = consumer
        self._instruments = instruments
        self._pending: dict[str, Tick] = {}
        self.offered = 0
        self.conflated = 0

    def offer(self, tick: Tick) -> None:
        if self._instruments is not None and tick.instrument not in self._instruments:
            return  # not the consumer's instrument: not offered at all
        with self._lock:
            self.offered += 1
            if tick.instrument in self._pending:
                self.conflated += 1
            self._pending[tick.instrument] = tick
            wake = self._must_wake_locked()
        if wake:
            self._send_wake()

    def drain(self) -> list[Tick]:
        """The latest tick of each instrument, oldest first: the consumer sees time move
        forward across instruments (a dict keeps the order instruments were first offered,
        which after conflation is not the order of their ticks)."""
        with self._lock:
            ticks = list(self._pending.values())
            self._pending.clear()
            self._taken_locked()
        ticks.sort(key=lambda tick: tick.ts_event)
        return ticks

    def _pending_locked(self) -> int:
        return len(self._pending)


class FeedDoor(_WakesOnce):
    """Live market data on its way to the feed actor, with at most one pending wake-up
    (``DrainTicks``): every item as it came while the feed actor keeps up; once more than
    ``keep`` items wait (it fell behind), only the newest quote per instrument.

    ``offer`` runs on the producer's thread (the feed pump, the engine's ``publish_ticks``) and
    never blocks; ``drain`` on the feed actor's. Collapsing keeps anything that is not a
    ``Tick`` (for the feed actor to refuse and count) and each instrument's last-arrived quote,
    in arrival order; the quotes it drops are counted in ``conflated``, never validated and
    never seen by anyone. A failed wake is re-armed for the next offer; the feed actor drains in
    ``on_start`` what arrived while it was down.
    """

    def __init__(self, *, feed: str, keep: int, wake: Callable[[DrainTicks], bool]) -> None:
        super().__init__(wake)
        self.feed = feed
        self.keep = max(1, keep)
        """Items kept as they came; beyond this many waiting, the newest quote per instrument."""
        self._items: list[Any] = []
        self._all_validated = True
        self.offered = 0
        self.conflated = 0

    def offer(self, batch: TicksReceived) -> None:
        with self._lock:
            self._items.extend(batch.ticks)
            self.offered += len(batch.ticks)
            self._all_validated = self._all_validated and batch.validated is True
            if len(self._items) > self.keep:
                self._collapse_locked()
            wake = self._must_wake_locked()
        if wake:
            self._send_wake()

    def _collapse_locked(self) -> None:
        newest: dict[str, int] = {}
        items = self._items
        for index, item in enumerate(items):
            if type(item) is Tick:
                newest[item.instrument] = index
        kept = [
            item
            for index, item in enumerate(items)
            if type(item) is not Tick or newest[item.instrument] == index
        ]
        self.conflated += len(items) - len(kept)
        self._items = kept

    def drain(self, limit: int | None = None) -> tuple[TicksReceived | None, bool]:
        """The oldest ``limit`` items at the door (all when None) as one batch, in arrival
        order (None when nothing waits), and whether more wait: then the wake-up stays
        pending and the caller must drain again (the feed actor tells itself, so the consumers
        of one round run before it takes the next)."""
        with self._lock:
            items = self._items
            if not items:
                self._taken_locked()
                return None, False
            if limit is None or len(items) <= limit:
                taken, self._items = items, []
            else:
                taken, self._items = items[:limit], items[limit:]
            more = bool(self._items)
            validated = self._all_validated
            if not more:
                self._all_validated = True
            self._taken_locked(more=more)
        return TicksReceived(feed=self.feed, ticks=tuple(taken), validated=validated), more

    def _pending_locked(self) -> int:
        return len(self._items)


class QuoteBoard:
    """The latest tick per instrument, read by its consumer when it needs a price: no wake-up.

    ``offer`` runs on the feed actor's thread; ``drain`` on the consumer's, which calls it
    before it reads a price (and in ``on_start``). A tick overwritten before a drain is not a
    loss here (only the latest price is ever used), so ``conflated`` stays 0; and nothing ever
    waits for the consumer, so ``pending_count`` is 0 (a board is not a backlog: an idle
    consumer with a full board is idle).
    """

    def __init__(self, *, consumer: str) -> None:
        self.consumer = consumer
        self._lock = threading.Lock()
        self._pending: dict[str, Tick] = {}
        self.offered = 0
        self.conflated = 0

    def offer(self, tick: Tick) -> None:
        with self._lock:
            self.offered += 1
            self._pending[tick.instrument] = tick

    def drain(self) -> list[Tick]:
        """The latest tick of each instrument offered since the last drain, oldest first."""
        with self._lock:
            if not self._pending:
                return []
            ticks = list(self._pending.values())
            self._pending.clear()
        ticks.sort(key=_ts_event)
        return ticks

    @property
    def pending_count(self) -> int:
        return 0


def _ts_event(tick: Tick) -> int:
    return tick.ts_event


class TickChannel(Protocol):
    """What a tick consumer's actor reads: ``TickConflator`` (live), ``TickQueue`` (replay) or
    ``QuoteBoard`` (read on demand).
    ``offer`` runs on the feed actor's thread, ``drain`` on the consumer's."""

    consumer: str
    offered: int
    conflated: int

    def offer(self, tick: Tick) -> None: ...

    def drain(self) -> list[Tick]: ...

    @property
    def pending_count(self) -> int: ...


class TickQueue(_WakesOnce):
    """Every tick, in order, for one consumer, with at most one pending wake-up: the lossless
    channel of a replayed file (nothing is ever conflated: ``conflated`` stays 0).

    ``offer`` never blocks (it runs on the feed actor, which may share its thread with the
    consumer); the producer upstream of the feed actor calls ``wait_for_room`` before it hands
    over more (the engine's delivery of a replay batch does), so the backlog stays bounded.
    ``wake`` works as for ``TickConflator``: a failed wake is re-armed for the next offer.
    """

    def __init__(
        self,
        *,
        consumer: str,
        wake: Callable[[DrainTicks], bool],
        instruments: frozenset[str] | None = None,
    ) -> None:
        super().__init__(wake)
        self.consumer = consumer
        self._instruments = instruments
        self._pending: list[Tick] = []
        self.offered = 0
        self.conflated = 0

    def offer(self, tick: Tick) -> None:
        if self._instruments is not None and tick.instrument not in self._instruments:
            return  # not the consumer's instrument: not offered at all
        with self._lock:
            self.offered += 1
            self._pending.append(tick)
            wake = self._must_wake_locked()
        if wake:
            self._send_wake()

    def drain(self) -> list[Tick]:
        """Every tick offered since the last drain, in the order offered."""
        with self._lock:
            ticks = self._pending
            self._pending = []
            self._taken_locked()
        return ticks

    def _pending_locked(self) -> int:
        return len(self._pending)
