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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

IdleStep = Callable[[], bool]


class _Attached:
    """The dispatcher's bookkeeping for one actor incarnation."""

    __slots__ = ("actor", "scheduled", "started")

    def __init__(self, actor: pykka.Actor) -> None:
        self.actor = actor
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
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self.messages_processed = 0
        """Envelopes handled since start (all actors)."""

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
    def attach(self, actor: pykka.Actor) -> None:
        """Run ``actor``'s loop here: ``on_start`` first, then its messages. Called by the
        actor's ``_start_actor_loop`` (in the thread that starts it)."""
        entry = _Attached(actor)
        with self._lock:
            if self._stopping:
                raise RuntimeError(f"dispatcher {self.name} is stopping; cannot start {actor}")
            self._attached[id(actor)] = entry
            entry.scheduled = True
            self._ready.append(entry)
            self._work.notify()

    def schedule(self, actor: pykka.Actor) -> None:
        """The actor's inbox got a message: give it a turn. Called by the inbox after the put,
        from any thread."""
        with self._lock:
            entry = self._attached.get(id(actor))
            if entry is None or entry.scheduled:
                return
            entry.scheduled = True
            self._ready.append(entry)
            self._work.notify()

    # ------------------------------------------------------------------ dispatcher thread
    def _run(self) -> None:
        self._thread_ident = threading.get_ident()
        try:
            while True:
                entry = self._next_turn()
                if entry is None:
                    return
                self._take_turn(entry)
        finally:
            self._abandon_all()

    def _next_turn(self) -> _Attached | None:
        """The next actor to run, or None when stopping and nothing is left to do."""
        while True:
            with self._lock:
                while not self._ready:
                    if self._idle_step is not None:
                        break
                    if self._stopping:
                        return None
                    self._work.wait()
                if self._ready:
                    return self._ready.popleft()
                step = self._idle_step
            # Nothing is queued: let the idle work (a replay's next tick) run, unlocked.
            if step is not None and not self._call_idle_step(step):
                with self._lock:
                    if self._idle_step is step:
                        self._idle_step = None

    def _call_idle_step(self, step: IdleStep) -> bool:
        try:
            return bool(step())
        except Exception:
            logger.exception("dispatcher %s idle step failed; removed", self.name)
            return False

    def _take_turn(self, entry: _Attached) -> None:
        actor = entry.actor
        if not entry.started:
            entry.started = True
            actor._actor_loop_setup()  # on_start; a failure there stops the actor
        elif not actor.actor_stopped.is_set():
            try:
                envelope = actor.actor_inbox.get_nowait()  # type: ignore[attr-defined]
            except Exception:  # queue.Empty: a turn without a message (start-up race)
                envelope = None
            if envelope is not None:
                self._handle(actor, envelope)
        with self._lock:
            if actor.actor_stopped.is_set():
                self._attached.pop(id(actor), None)
                entry.scheduled = False
                detached = True
            elif actor.actor_inbox.empty():
                entry.scheduled = False
                detached = False
            else:
                self._ready.append(entry)  # more to do: back of the line, others go first
                detached = False
        if detached:
            # Asks still queued (or that race in after the stop) are answered ActorDeadError.
            actor._actor_loop_teardown()

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
