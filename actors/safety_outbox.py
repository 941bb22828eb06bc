"""SafetyOutbox: tell the kill switch a safety command until its published state confirms it.

A ``tell`` can fail (the kill switch is restarting, its inbox refused the message) and a
kill switch can die after accepting a trip and before storing it. A sender that decided a HALT
or a FLATTEN pause therefore keeps the command here, re-sends it at most every
``retry_interval_ns`` while it is pending, and drops it only when a ``TradingStateChanged``
shows it in force AND persisted (``TradingStateChanged.persisted``). Re-sending is safe: the
kill switch's commands are idempotent (a second trip of a HALTED switch changes nothing).

Use from inside ONE actor (not thread-safe; it is that actor's state):

    outbox = SafetyOutbox(directory=self.directory, owner=self.name)
    outbox.send("daily_loss", TripKillSwitch(...), now_ns=now)    # tells now, keeps pending
    outbox.retry(now_ns)            # call on a periodic event (timer, portfolio update)
    outbox.acknowledge(state)       # call with every TradingStateChanged; returns confirmed keys
    outbox.is_pending("daily_loss") / outbox.pending_keys()

Only ``TripKillSwitch`` and ``PauseEntries`` are accepted: they are the commands whose
confirmation can be read from the published state (HALTED, or the cause in ``pause_causes``).
A pending command survives nothing: if the sending actor itself dies, its restart re-derives
the decision from its own inputs (the risk actor re-checks the next portfolio).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from adapters.logs import ErrorRepeats
from domain.clock import NANOS_PER_SECOND
from domain.enums import PauseCause, TradingState
from domain.messages import PauseEntries, TradingStateChanged, TripKillSwitch

if TYPE_CHECKING:
    from actors.directory import ActorDirectory

__all__ = ["SafetyCommand", "SafetyOutbox", "is_confirmed"]

logger = logging.getLogger(__name__)

SafetyCommand = TripKillSwitch | PauseEntries


def is_confirmed(command: SafetyCommand, state: TradingStateChanged) -> bool:
    """Whether ``state`` shows ``command`` in force and stored."""
    if not state.persisted:
        return False
    if isinstance(command, TripKillSwitch):
        # A trip with a flatten is in force once both are: an engine HALTed already (another
        # reason, no flatten) must still store this trip's FLATTEN pause.
        return state.state is TradingState.HALTED and (
            not command.flatten or PauseCause.FLATTEN in state.pause_causes
        )
    return command.cause in state.pause_causes


class _Pending(msgspec.Struct):
    command: SafetyCommand
    last_sent_ns: int
    attempts: int
    delivered: bool


class SafetyOutbox:
    def __init__(
        self,
        *,
        directory: ActorDirectory,
        owner: str,
        target: str = "kill_switch",
        retry_interval_ns: int = NANOS_PER_SECOND,
    ) -> None:
        self._directory = directory
        self._owner = owner
        self._target = target
        self._retry_interval_ns = retry_interval_ns
        self._pending: dict[str, _Pending] = {}
        # A kill switch down for a minute must not mean sixty identical lines.
        self._repeats = ErrorRepeats(logger, window_ns=60 * NANOS_PER_SECOND)

    def send(self, key: str, command: SafetyCommand, *, now_ns: int) -> bool:
        """Tell ``command`` now and keep it pending under ``key`` until confirmed.

        A second ``send`` with a pending ``key`` replaces the command (newer figures) without
        telling again before the retry interval. Returns whether this tell was delivered to
        the inbox (not whether it is confirmed: that is ``acknowledge``).
        """
        existing = self._pending.get(key)
        if existing is not None:
            existing.command = command
            return existing.delivered
        pending = _Pending(command=command, last_sent_ns=now_ns, attempts=0, delivered=False)
        self._pending[key] = pending
        return self._tell(key, pending, now_ns)

    def retry(self, now_ns: int) -> int:
        """Re-send every pending command last sent ``retry_interval_ns`` ago or more.
        Returns how many were sent."""
        sent = 0
        for key, pending in self._pending.items():
            if now_ns - pending.last_sent_ns >= self._retry_interval_ns:
                self._tell(key, pending, now_ns)
                sent += 1
        return sent

    def acknowledge(self, state: TradingStateChanged) -> list[str]:
        """Drop the commands ``state`` confirms; returns their keys."""
        confirmed = [key for key, p in self._pending.items() if is_confirmed(p.command, state)]
        for key in confirmed:
            del self._pending[key]
            self._repeats.resolved(key, state.ts_event)
        return confirmed

    def is_pending(self, key: str) -> bool:
        return key in self._pending

    def pending_keys(self) -> list[str]:
        return list(self._pending)

    def snapshot(self) -> dict[str, object]:
        return {
            key: {
                "command": type(p.command).__name__,
                "attempts": p.attempts,
                "delivered": p.delivered,
                "last_sent_ns": p.last_sent_ns,
            }
            for key, p in self._pending.items()
        }

    def _tell(self, key: str, pending: _Pending, now_ns: int) -> bool:
        pending.attempts += 1
        pending.last_sent_ns = now_ns
        delivered = self._directory.tell(self._target, pending.command)
        pending.delivered = pending.delivered or delivered
        if not delivered:
            self._repeats.error(
                key,
                f"{self._owner} could not deliver {type(pending.command).__name__} ({key}) to "
                f"{self._target}; kept and re-sent every "
                f"{self._retry_interval_ns / NANOS_PER_SECOND:.0f}s until confirmed",
                now_ns=now_ns,
                event="SAFETY_RETRY",
                command_key=key,
                attempts=pending.attempts,
            )
        return delivered
