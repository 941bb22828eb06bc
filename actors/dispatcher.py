"""A shared dispatcher: many pykka actors, one thread, no thread hand-off between them.

A ``VigilActor`` started with ``dispatcher=...`` keeps everything that makes it an actor (its
own inbox, private state, ``tell``/``ask``/futures, ``stop``, ``on_start``/``on_stop``/
``on_failure``, a fresh incarnation on restart), but its loop does not own a thread: the
dispatcher's thread runs it, one message at a time, taking turns with the other actors
attached to it (round-robin over the actors whose inbox is not empty, one message per turn,
like an Akka dispatcher's throughput of 1). A ``tell`` from one of these actors to another is
then a queue append, not a wake-up of another thread and a GIL hand-off.

Threads: ``start``/``stop`` run in the caller's thread; every actor hook and handler of an
attached actor runs in the dispatcher thread (``dispatcher-<name>``), never two at once.

Rules that keep it deadlock-free:
- an actor on a dispatcher must never block on another actor of the same dispatcher (an
  ``ask`` and wait, a blocking ``stop``): the answer would need the thread that is waiting.
  ``on_dispatcher_thread()`` tells the code that must know (the inbox uses it below);
- a ``tell`` made on the dispatcher thread to a full inbox of an actor of the same dispatcher
  does not wait for room (nobody else could make it): it fails at once with ``MailboxFull``,
  which ``ActorDirectory.tell`` reports as a dropped message. Producers on other threads (the
  feed pump, the broker gateway) wait for room as before: that is the backpressure.

Failures: exactly pykka's, message by message: an exception in an ``ask`` goes back to the
asker and the actor lives on; an exception in a ``tell`` stops the actor and calls
``on_failure`` (the supervisor then starts a new incarnation, attached to the same dispatcher);
a failing ``on_start`` stops it; messages left in the inbox of a stopped actor have their asks
answered with ``ActorDeadError``. A ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``) in
a handler stops that actor and asks every actor to stop, without blocking this thread.

Idle work: ``run_when_idle(step)`` installs a function the dispatcher calls whenever no actor
has a message (a replay feeds the next tick there, so each tick is processed to quiescence
before the next, with no thread hand-off: see ``tools/replay.py``). It returns False when it
has nothing more to do and is then removed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from pykka import messages as pykka_messages

from actors.mailbox import MailboxFull

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = ["DispatchedInbox", "Dispatcher", "current_dispatcher"]

logger = logging.getLogger(__name__)

_running = threading.local()


def current_dispatcher() -> Dispatcher | None:
    """The dispatcher whose thread is calling, if any."""
    return getattr(_running, "dispatcher", None)


IdleStep = Callable[[], bool]


class DispatchedInbox:
    """The inbox of an actor on a dispatcher: a deque guarded by the dispatcher's own lock, so
    one lock acquisition both queues a message and gives its actor a turn.

    Same contract as ``actors.mailbox.BoundedInbox``: ``tell``s are bounded by total weight
    (``capacity``) and wait at most ``put_timeout_s`` for room, then raise ``MailboxFull``;
    asks, stop requests and ``exempt_types`` are never refused. One difference, the reason for
    a dispatcher: a put made on the dispatcher's own thread never waits (module docstring).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        actor_name: str,
        capacity: int,
        put_timeout_s: float,
        exempt_types: tuple[type, ...] = (),
        weigh: Callable[[Any], int] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._lock = dispatcher._lock
        self._room = threading.Condition(self._lock)
        self._actor_name = actor_name
        self._capacity = capacity
        self._put_timeout_s = put_timeout_s
        self._exempt_types = (pykka_messages._ActorStop, *exempt_types)
        self._weigh = weigh
        self._items: deque[tuple[Envelope[Any], int]] = deque()
        self._load = 0
        self._waiting_for_room = 0
        self._entry: _Attached | None = None  # set by Dispatcher.attach

    # -- pykka's ActorInbox protocol ---------------------------------------------------------
    def put(self, envelope: Envelope[Any], /) -> None:
        weight = 1 if self._weigh is None else max(1, self._weigh(envelope.message))
        with self._lock:
            # Whether the message is exempt matters only when the inbox is full (checked last:
            # this runs for every message of the hot path).
            if (
                self._load > 0
                and self._load + weight > self._capacity
                and envelope.reply_to is None
                and not isinstance(envelope.message, self._exempt_types)
            ):
                self._wait_for_room(weight)
            self._items.append((envelope, weight))
            self._load += weight
            entry = self._entry
            if entry is not None and not entry.scheduled:
                self._dispatcher._schedule_locked(entry)

    def get(self) -> Envelope[Any]:
        """The oldest message (dispatcher thread, or pykka's teardown). Raises IndexError
        when empty: nothing else consumes this inbox, so nothing could be waited for."""
        with self._lock:
            return self._pop_locked()

    def empty(self) -> bool:
        return not self._items

    # -- what VigilActor and the supervisor read ---------------------------------------------
    def qsize(self) -> int:
        return len(self._items)

    @property
    def load(self) -> int:
        """Total weight queued (ticks for the feed actor, messages elsewhere)."""
        return self._load

    def consumer_is_calling(self) -> bool:
        """True on the dispatcher's thread: it must not wait on an answer from this inbox."""
        return self._dispatcher.on_dispatcher_thread()

    # -- internals (dispatcher lock held) ----------------------------------------------------
    def _pop_locked(self) -> Envelope[Any]:
        envelope, weight = self._items.popleft()
        self._load -= weight
        if self._waiting_for_room:
            self._room.notify_all()
        return envelope

    def _wait_for_room(self, weight: int) -> None:
        if self._dispatcher.on_dispatcher_thread():
            raise MailboxFull(self._actor_name, self._capacity, 0.0)
        deadline = time.monotonic() + self._put_timeout_s
        self._waiting_for_room += 1
        try:
            while self._load > 0 and self._load + weight > self._capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MailboxFull(self._actor_name, self._capacity, self._put_timeout_s)
                self._room.wait(remaining)
        finally:
            self._waiting_for_room -= 1


class _Attached:
    """The dispatcher's bookkeeping for one actor incarnation."""

    __slots__ = ("actor", "inbox", "scheduled", "started")

    def __init__(self, actor: pykka.Actor, inbox: DispatchedInbox) -> None:
        self.actor = actor
        self.inbox = inbox
        self.scheduled = False  # in the ready queue (or being run)
        self.started = False  # on_start has run


class Dispatcher:
    """One thread that runs the loops of the actors attached to it.

    Args:
        name: names the thread (``dispatcher-<name>``) and log lines.
    """

    def __init__(self, name: str = "hot-path") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._ready: deque[_Attached] = deque()
        self._attached: dict[int, _Attached] = {}
        self._idle_step: IdleStep | None = None
        self._sleeping = False  # the thread waits for work (a put must wake it)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self.messages_processed = 0
        """Envelopes handled since start (all actors)."""
        self.egress: set[str] = set()
        """Names of actors off this dispatcher told something from its thread (recorded by
        ``ActorDirectory.tell``; a replay waits for them before its next tick)."""

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        """Start the thread. Actors may attach before or after.

        Raises:
            RuntimeError: if it was already started.
        """
        if self._thread is not None:
            raise RuntimeError(f"dispatcher {self.name} was already started")
        self._thread = threading.Thread(target=self._run, name=f"dispatcher-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """End the thread once no actor has work left; True if it ended within ``timeout_s``.

        Stop the actors first (their ``on_stop`` runs on this thread). Actors still attached
        when the thread ends are stopped without their hooks and their pending asks get
        ``ActorDeadError``, as pykka does for a stopped actor.
        """
        with self._lock:
            self._stopping = True
            self._work.notify_all()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            logger.error(
                "dispatcher %s did not stop within %ss (an actor handler is stuck?)",
                self.name,
                timeout_s,
            )
            return False
        return True

    def on_dispatcher_thread(self) -> bool:
        """True when called from this dispatcher's own thread."""
        return threading.get_ident() == self._thread_ident

    def run_when_idle(self, step: IdleStep) -> None:
        """Call ``step`` on the dispatcher thread whenever no actor has a message, until it
        returns False (or raises: logged, then removed)."""
        with self._lock:
            self._idle_step = step
            self._work.notify_all()

    @property
    def is_idle_step_installed(self) -> bool:
        return self._idle_step is not None

    def depth(self) -> int:
        """Actors with messages waiting (for metrics and tests)."""
        with self._lock:
            return len(self._ready)

    # ------------------------------------------------------------------ actor side
    def create_inbox(
        self,
        *,
        actor_name: str,
        capacity: int,
        put_timeout_s: float,
        exempt_types: tuple[type, ...] = (),
        weigh: Callable[[Any], int] | None = None,
    ) -> DispatchedInbox:
        """An inbox for an actor that will attach here (its ``_create_actor_inbox``)."""
        return DispatchedInbox(
            self,
            actor_name=actor_name,
            capacity=capacity,
            put_timeout_s=put_timeout_s,
            exempt_types=exempt_types,
            weigh=weigh,
        )

    def attach(self, actor: pykka.Actor) -> None:
        """Run ``actor``'s loop here: ``on_start`` first, then its messages. Called by the
        actor's ``_start_actor_loop`` (in the thread that starts it).

        Raises:
            TypeError: the actor's inbox was not made by ``create_inbox``.
            RuntimeError: the dispatcher is stopping.
        """
        inbox = actor.actor_inbox
        if not isinstance(inbox, DispatchedInbox) or inbox._dispatcher is not self:
            raise TypeError(f"{actor} must use an inbox from Dispatcher.create_inbox")
        entry = _Attached(actor, inbox)
        with self._lock:
            if self._stopping:
                raise RuntimeError(f"dispatcher {self.name} is stopping; cannot start {actor}")
            inbox._entry = entry
            self._attached[id(actor)] = entry
            self._schedule_locked(entry)

    def _schedule_locked(self, entry: _Attached) -> None:
        entry.scheduled = True
        self._ready.append(entry)
        if self._sleeping:
            self._work.notify()

    # ------------------------------------------------------------------ dispatcher thread
    def _run(self) -> None:
        self._thread_ident = threading.get_ident()
        _running.dispatcher = self
        try:
            turn = self._next_turn()
            while turn is not None:
                # A turn hands back the next one when it can take it under the same lock.
                turn = self._take_turn(*turn) or self._next_turn()
        finally:
            self._abandon_all()

    def _next_turn(self) -> tuple[_Attached, Envelope[Any] | None] | None:
        """The next actor to run and its oldest message (None: ``on_start`` is due, or the
        inbox was emptied by a teardown), or None when stopping with nothing left to do."""
        while True:
            with self._lock:
                while not self._ready:
                    if self._idle_step is not None:
                        break
                    if self._stopping:
                        return None
                    self._sleeping = True
                    self._work.wait()
                    self._sleeping = False
                if self._ready:
                    return self._pop_turn_locked()
                step = self._idle_step
            # Nothing is queued: let the idle work (a replay's next tick) run, unlocked.
            if step is not None and not self._call_idle_step(step):
                with self._lock:
                    if self._idle_step is step:
                        self._idle_step = None

    def _pop_turn_locked(self) -> tuple[_Attached, Envelope[Any] | None]:
        entry = self._ready.popleft()
        inbox = entry.inbox
        if entry.started and inbox._items:
            return entry, inbox._pop_locked()
        return entry, None

    def _call_idle_step(self, step: IdleStep) -> bool:
        try:
            return bool(step())
        except Exception:
            logger.exception("dispatcher %s idle step failed; removed", self.name)
            return False

    def _take_turn(
        self, entry: _Attached, envelope: Envelope[Any] | None
    ) -> tuple[_Attached, Envelope[Any] | None] | None:
        """Run one turn; return the next turn if one is ready (taken under the same lock, so
        a busy dispatcher takes its lock once per message), else None."""
        actor = entry.actor
        stopped = actor.actor_stopped
        if not entry.started:
            entry.started = True
            actor._actor_loop_setup()  # on_start; a failure there stops the actor
        elif envelope is not None:
            if stopped.is_set():
                # Stopped outside its own turn: put it back for the teardown to answer.
                with self._lock:
                    entry.inbox._items.appendleft((envelope, 0))
            elif envelope.reply_to is None:
                # A tell (the hot path) in this frame; asks and failures in _handle.
                self.messages_processed += 1
                try:
                    actor._handle_receive(envelope.message)
                except BaseException:
                    self._handle_failed_tell(actor)
            else:
                self._handle(actor, envelope)
        with self._lock:
            if not stopped.is_set():
                if entry.inbox._items:
                    self._ready.append(entry)  # more to do: back of the line, others go first
                else:
                    entry.scheduled = False
                return self._pop_turn_locked() if self._ready else None
            self._attached.pop(id(actor), None)
            entry.inbox._entry = None
            entry.scheduled = False
        # Stopped: asks still queued are answered ActorDeadError (pykka's teardown).
        actor._actor_loop_teardown()
        return None

    def _handle_failed_tell(self, actor: pykka.Actor) -> None:
        """A tell's handler raised (called in the ``except`` block): what ``_handle`` does with
        it, pykka's semantics."""
        error = sys.exc_info()[1]
        if isinstance(error, Exception):
            actor._handle_failure(*sys.exc_info())
            try:
                actor.on_failure(*sys.exc_info())
            except Exception:
                actor._handle_failure(*sys.exc_info())
            return
        logger.debug("%r in %s. Stopping all actors.", error, actor)
        actor._stop()
        pykka.ActorRegistry.stop_all(block=False)

    def _handle(self, actor: pykka.Actor, envelope: Envelope[Any]) -> None:
        """One message, with the semantics of pykka's ``_actor_loop_running`` body."""
        self.messages_processed += 1
        try:
            response = actor._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                logger.info("Exception returned from %s to caller:", actor, exc_info=True)
                envelope.reply_to.set_exception()
            else:
                actor._handle_failure(*sys.exc_info())
                try:
                    actor.on_failure(*sys.exc_info())
                except Exception:
                    actor._handle_failure(*sys.exc_info())
        except BaseException:
            logger.debug("%r in %s. Stopping all actors.", sys.exc_info()[1], actor)
            actor._stop()
            # Not block=True: the actors of this dispatcher can only stop on this thread.
            pykka.ActorRegistry.stop_all(block=False)

    def _abandon_all(self) -> None:
        with self._lock:
            left = list(self._attached.values())
            self._attached.clear()
            self._ready.clear()
        for entry in left:
            actor = entry.actor
            if not actor.actor_stopped.is_set():
                logger.warning("dispatcher %s ended with %s still running", self.name, actor)
                pykka.ActorRegistry.unregister(actor.actor_ref)
                actor.actor_stopped.set()
            actor._actor_loop_teardown()
