"""Name -> live actor reference, updated by the supervisor when it restarts a child.

Actors never hold each other's refs directly: a restarted peer gets a new ref, and every
sender finds it here. A ``tell`` to a missing or dead actor is reported (False), never raised
into the sender's handler.

A receiver whose judgement spans a window of told reports (the watchdog's market-quality
count) asks the directory to keep the last ``limit`` messages of some types told to its name
(``retain_recent``), delivered or not: a restarted incarnation reads them back (``recent``)
and rebuilds its window, so neither the reports its predecessor held nor those told while it
was down (no ref, or a dead one) are lost. The sender does nothing different.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import pykka

from actors.dispatcher import DispatchedInbox, current_dispatcher
from actors.mailbox import MailboxFull

__all__ = ["ActorDirectory", "ActorUnavailable"]

logger = logging.getLogger(__name__)


class ActorUnavailable(Exception):
    """The actor is not registered, is dead, or did not answer in time."""


class ActorDirectory:
    def __init__(self) -> None:
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._lock = threading.Lock()
        self.dropped_tells = 0
        # name -> (message types, the last messages of those types told to it).
        self._retained: dict[str, tuple[tuple[type, ...], deque[object]]] = {}

    def retain_recent(self, name: str, types: tuple[type, ...], *, limit: int) -> None:
        """Keep the last ``limit`` messages of ``types`` told to ``name`` from now on, whether
        or not they reached it. Idempotent: a restarted actor asking again keeps what is kept.
        """
        with self._lock:
            if name not in self._retained:
                self._retained[name] = (types, deque(maxlen=limit))

    def recent(self, name: str) -> list[object]:
        """The messages kept for ``name`` (oldest first); [] if it asked for none."""
        with self._lock:
            kept = self._retained.get(name)
            return [] if kept is None else list(kept[1])

    def register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        with self._lock:
            self._refs[name] = ref

    def unregister(self, name: str) -> None:
        with self._lock:
            self._refs.pop(name, None)

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        # No lock: a dict read is atomic in CPython and this runs on every tell of the hot
        # path; writers still serialise on the lock.
        return self._refs.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._refs)

    def items(self) -> list[tuple[str, pykka.ActorRef[Any]]]:
        with self._lock:
            return list(self._refs.items())

    def is_alive(self, name: str) -> bool:
        ref = self.get(name)
        return ref is not None and ref.is_alive()

    def tell(self, name: str, message: object) -> bool:
        """Send without waiting. Returns False if the actor is gone or its mailbox stayed full."""
        if self._retained:
            kept = self._retained.get(name)
            if kept is not None and isinstance(message, kept[0]):
                with self._lock:
                    kept[1].append(message)
        ref = self.get(name)
        if ref is None:
            self.dropped_tells += 1
            return False
        if type(ref.actor_inbox) is not DispatchedInbox:
            # A message leaving the shared dispatcher for a thread of its own: noted, so a
            # replay can wait for its effects before the next tick (tools/replay.py).
            dispatcher = current_dispatcher()
            if dispatcher is not None:
                dispatcher.egress.add(name)
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            self.dropped_tells += 1
            return False
        except MailboxFull:
            self.dropped_tells += 1
            logger.warning("mailbox of %s full; dropped %s", name, type(message).__name__)
            return False
        return True

    def ask(self, name: str, message: object, *, timeout_s: float) -> Any:
        """Ask and wait at most ``timeout_s``. Re-raises the actor's own exception.

        Raises:
            ActorUnavailable: not registered, dead, no answer within the timeout, or asked
                from the thread of the shared dispatcher the actor runs on (a deadlock).
        """
        ref = self.get(name)
        if ref is None:
            raise ActorUnavailable(f"ACTOR_UNAVAILABLE: actor={name} is not running")
        inbox = ref.actor_inbox
        if isinstance(inbox, DispatchedInbox) and inbox.consumer_is_calling():
            # The answer would need the very thread that would wait for it: fail now, not
            # after the timeout with every actor of the dispatcher frozen meanwhile.
            raise ActorUnavailable(
                f"ACTOR_SAME_DISPATCHER: actor={name} runs on the calling thread's dispatcher; "
                "an actor there must tell it, never ask and wait"
            )
        try:
            return ref.ask(message, timeout=timeout_s)
        except pykka.ActorDeadError as error:
            raise ActorUnavailable(f"ACTOR_UNAVAILABLE: actor={name} is dead") from error
        except pykka.Timeout as error:
            raise ActorUnavailable(
                f"ACTOR_TIMEOUT: actor={name} did not answer within {timeout_s}s"
            ) from error
