"""The production clock."""

from __future__ import annotations

import time

__all__ = ["WallClock"]


class WallClock:
    """Wall time for ``now_ns`` (UTC epoch), monotonic time for durations."""

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()
