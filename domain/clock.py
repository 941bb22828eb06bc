"""Time as an injected dependency.

Domain rules never read the clock: they take ``now`` as an argument. Actors get a ``Clock``
from the launcher: the wall clock in production (``adapters.clock.WallClock``), a
``ManualClock`` in tests and replays, so TTLs, windows and heartbeats are tested without
sleeping.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["NANOS_PER_SECOND", "Clock", "ManualClock"]

NANOS_PER_SECOND = 1_000_000_000


@runtime_checkable
class Clock(Protocol):
    """A source of time. ``now_ns`` is UTC epoch nanoseconds and never goes backwards."""

    def now_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class ManualClock:
    """A clock that only moves when told to. Thread-safe: actors read it from many threads."""

    def __init__(self, start_ns: int = 1_767_225_600 * NANOS_PER_SECOND) -> None:
        # Default start: 2026-01-01T00:00:00Z.
        self._now_ns = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._now_ns

    def monotonic_ns(self) -> int:
        return self.now_ns()

    def advance(self, seconds: float = 0.0, *, nanos: int = 0) -> int:
        """Move time forward and return the new ``now_ns``."""
        step = int(seconds * NANOS_PER_SECOND) + nanos
        if step < 0:
            raise ValueError(f"clock cannot move backwards: step_ns={step}")
        with self._lock:
            self._now_ns += step
            return self._now_ns

    def set(self, now_ns: int) -> None:
        """Jump to ``now_ns``, which must not be earlier than the current time."""
        with self._lock:
            if now_ns < self._now_ns:
                raise ValueError(f"clock cannot move backwards: now_ns={now_ns} < {self._now_ns}")
            self._now_ns = now_ns
