"""The base of every Vigil actor: bounded inbox, typed dispatch, snapshots, crash reporting.

Threads: ``__init__`` runs in the creating thread, everything else in the actor's own, or, for
an actor started with ``dispatcher=``, in that shared dispatcher's thread (actors/dispatcher.py),
one message at a time among the actors sharing it.
Failures: an exception in a ``tell`` handler stops the actor; ``on_failure`` then tells the
supervisor ``ChildFailed`` with the actor's last snapshot, and the supervisor restarts it from
persisted state. An exception in an ``ask`` handler goes back to the asker (pykka logs it only
at INFO), and the actor lives on.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import pykka

from actors.mailbox import BoundedInbox
from domain.messages import (
    ChildFailed,
    DrainTicks,
    InjectFault,
    Ping,
    Pong,
    QuerySnapshot,
    RepublishState,
    TimerFired,
)

if TYPE_CHECKING:
    from actors.directory import ActorDirectory
    from actors.dispatcher import DispatchedInbox, Dispatcher
    from domain.clock import Clock

__all__ = ["SUPERVISOR", "InjectedFault", "VigilActor"]

SUPERVISOR = "supervisor"

logger = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """Raised on purpose by ``InjectFault`` (chaos drills and supervision tests)."""


class VigilActor(pykka.ThreadingActor):
    """Subclasses declare ``handlers()``: message type -> method. Unknown types are logged."""

    put_timeout_s: ClassVar[float] = 5.0
    # Message types that bypass the inbox capacity (never refused for backpressure). Timers,
    # pings, republish requests and tick wake-ups are few by construction and must never stall
    # their sender (the supervisor, the feed) behind a full inbox.
    unbounded_messages: ClassVar[tuple[type, ...]] = (
        TimerFired,
        Ping,
        DrainTicks,
        RepublishState,
    )

    @staticmethod
    def message_weight(message: Any) -> int:
        """How much of the inbox capacity one message takes (1 unless an actor says more)."""
        return 1

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        directory: ActorDirectory,
        mailbox_capacity: int = 10_000,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.directory = directory
        self._mailbox_capacity = mailbox_capacity
        # None: a thread of its own (pykka's ThreadingActor). Otherwise the loop runs on the
        # shared dispatcher's thread with the other hot-path actors (actors/dispatcher.py).
        self._dispatcher = dispatcher
        super().__init__()
        # pykka does not call on_failure when on_start raises (it only logs and stops): report
        # it ourselves, so the supervisor restarts a child that failed to come up.
        start_up = self.on_start

        def on_start_reporting_failure() -> None:
            try:
                start_up()
            except Exception:
                self.on_failure(*sys.exc_info())
                raise

        self.on_start = on_start_reporting_failure  # type: ignore[method-assign]
        self._handlers: dict[type, Callable[[Any], Any]] = {
            QuerySnapshot: lambda _query: self.snapshot(),
            Ping: self._on_ping,
            InjectFault: self._on_inject_fault,
            **self.handlers(),
        }

    def _create_actor_inbox(self) -> BoundedInbox | DispatchedInbox:  # type: ignore[override]
        inbox_settings: dict[str, Any] = {
            "actor_name": self.name,
            "capacity": self._mailbox_capacity,
            "put_timeout_s": self.put_timeout_s,
            "exempt_types": self.unbounded_messages,
            # Weighing every message costs a call per put: only actors that weigh pay it.
            "weigh": None
            if type(self).message_weight is VigilActor.message_weight
            else self.message_weight,
        }
        if self._dispatcher is None:
            return BoundedInbox(**inbox_settings)
        return self._dispatcher.create_inbox(**inbox_settings)

    def _start_actor_loop(self) -> None:
        if self._dispatcher is None:
            super()._start_actor_loop()
        else:
            self._dispatcher.attach(self)

    @property
    def on_shared_dispatcher(self) -> bool:
        return self._dispatcher is not None

    # ------------------------------------------------------------------ LIFECYCLE
    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            snapshot = self.snapshot()
        except Exception as error:
            snapshot = {"snapshot_error": repr(error)}
        error_text = "".join(traceback.format_exception_only(exception_type, exception_value))
        self.directory.tell(
            SUPERVISOR,
            ChildFailed(
                name=self.name,
                error=error_text.strip(),
                ts_event=self.clock.now_ns(),
                incarnation=self.actor_urn,
                snapshot=snapshot,
            ),
        )

    # ------------------------------------------------------------------ DISPATCH
    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {}

    def _handle_receive(self, message: Any) -> Any:
        # Our own messages first, in one dict lookup: pykka's isinstance chain (stop, proxy
        # calls) runs only for what is not ours (a hot-path hop saves ~1 us).
        handler = self._handlers.get(type(message))
        if handler is not None:
            return handler(message)
        return super()._handle_receive(message)

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            logger.warning("%s ignored unknown message %s", self.name, type(message).__name__)
            return None
        return handler(message)

    def _on_inject_fault(self, fault: InjectFault) -> None:
        raise InjectedFault(f"{self.name}: {fault.detail}")

    def _on_ping(self, ping: Ping) -> None:
        self.directory.tell(SUPERVISOR, Pong(name=self.name, sequence=ping.sequence))

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name}

    @property
    def mailbox_depth(self) -> int:
        return self.actor_inbox.qsize()
