"""The paper venue's front door as a rate-limited broker's: it counts requests and says 429.

A real broker counts the requests that arrive (Kite: 10 order requests in any second, 200 in
a minute) and answers the ones over its limit with HTTP 429, without acting on them.
``VenueRateLimit`` does the same for the paper venue (``paper_broker.rate_limit_per_s`` /
``rate_limit_per_min``): every submit, cancel and modify is counted on arrival, on wall time
(the engine's clock may be a manual one; a broker's limit is not: ``time.time``, the clock the
gateway's ``limits`` windows read, so the two count on one time line), and one that would make more
than the limit accepted in the trailing second (minute) is refused with ``BrokerRateLimited``
carrying the time until the oldest accepted request leaves that window. Refused requests do not
use up the limit.

It also keeps what a test needs to prove that the engine never exceeded the limit, counted at
the broker: the most requests that arrived (accepted or refused) in any one-second and
one-minute window, how many were refused, and the last 10,000 arrivals in order (which request
for which order, accepted or not). Thread-safe (its own lock; it never calls out).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from adapters.brokers.base import BrokerRateLimited

__all__ = ["VenueRateLimit"]

_WINDOWS_S = (1.0, 60.0)
_ARRIVALS_KEPT = 10_000


class VenueRateLimit:
    """Args:
    per_second, per_minute: the venue's limits (None: that window is only counted).
    wall_time: seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        per_second: int | None,
        per_minute: int | None,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self._limits = (per_second, per_minute)
        self._wall_time = wall_time
        self._lock = threading.Lock()
        # Per window: arrival times of the accepted requests, and of every request.
        self._accepted: tuple[deque[float], deque[float]] = (deque(), deque())
        self._arrived: tuple[deque[float], deque[float]] = (deque(), deque())
        self._max_arrived = [0, 0]
        self._log: deque[tuple[float, str, str, bool]] = deque(maxlen=_ARRIVALS_KEPT)
        self.requests_total = 0
        self.rate_limited_total = 0

    def admit(self, request: str, client_order_id: str) -> None:
        """Count one request arriving now.

        Raises:
            BrokerRateLimited: ``RATE_LIMITED``: over the limit; the venue did not act.
        """
        with self._lock:
            now = self._wall_time()
            self.requests_total += 1
            refusal: tuple[int, float, float] | None = None
            for index, window_s in enumerate(_WINDOWS_S):
                arrived = self._arrived[index]
                _trim(arrived, now - window_s)
                arrived.append(now)
                self._max_arrived[index] = max(self._max_arrived[index], len(arrived))
                accepted = self._accepted[index]
                _trim(accepted, now - window_s)
                limit = self._limits[index]
                if refusal is None and limit is not None and len(accepted) >= limit:
                    refusal = (limit, window_s, accepted[0] + window_s - now)
            self._log.append((now, request, client_order_id, refusal is None))
            if refusal is None:
                for accepted in self._accepted:
                    accepted.append(now)
                return
            self.rate_limited_total += 1
        limit, window_s, retry_after_s = refusal
        raise BrokerRateLimited(
            f"RATE_LIMITED: {request} {client_order_id} refused: limit={limit} per "
            f"{window_s:g}s, retry_after_s={retry_after_s:.3f}",
            client_order_id=client_order_id,
            retry_after_s=max(0.0, retry_after_s),
        )

    def counts(self) -> dict[str, Any]:
        """What arrived: the most requests in any second and any minute, the totals."""
        with self._lock:
            return {
                "limit_per_s": self._limits[0],
                "limit_per_min": self._limits[1],
                "max_requests_in_1s": self._max_arrived[0],
                "max_requests_in_60s": self._max_arrived[1],
                "requests_total": self.requests_total,
                "rate_limited_total": self.rate_limited_total,
            }

    def arrivals(self) -> list[tuple[float, str, str, bool]]:
        """The last arrivals in order: (wall time, ``submit``/``cancel``/``modify``, client
        order id, accepted)."""
        with self._lock:
            return list(self._log)


def _trim(times: deque[float], older_than_or_at: float) -> None:
    # A request exactly one window ago is outside the trailing window (now - window, now].
    while times and times[0] <= older_than_or_at:
        times.popleft()
