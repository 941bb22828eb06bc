"""Throttled liveness reports: tell the supervisor about fresh data without flooding it."""

from __future__ import annotations

__all__ = ["HeartbeatThrottle"]


class HeartbeatThrottle:
    """Decides when the time of the latest data is worth reporting.

    A report goes out when the data is newer than the last report and either the last report
    is at least ``every_ns`` old (in clock time) or the data moved on by ``every_ns`` since it.
    So the supervisor's view of a data stream lags by less than ``every_ns``, and a burst of
    data costs one message per ``every_ns``. Reporting unchanged data is never useful: ages are
    computed from the data's time, not from the report's.
    """

    def __init__(self, every_ns: int) -> None:
        self._every_ns = every_ns
        self._reported_ns: int | None = None
        self._sent_at_ns = 0

    def due(self, latest_data_ns: int, now_ns: int) -> bool:
        reported = self._reported_ns
        if reported is not None and latest_data_ns <= reported:
            return False
        if (
            reported is None
            or latest_data_ns - reported >= self._every_ns
            or now_ns - self._sent_at_ns >= self._every_ns
        ):
            self._reported_ns = latest_data_ns
            self._sent_at_ns = now_ns
            return True
        return False
