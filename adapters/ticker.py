"""A background thread that calls a function every interval: the engine's heartbeat.

Production drives timers (leases, heartbeats, paper venue latency) with it; tests and replays
leave it off and fire the same callback by hand after moving a manual clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Ticker"]

logger = logging.getLogger(__name__)


class Ticker:
    def __init__(self, *, name: str, interval_s: float, callback: Callable[[], None]) -> None:
        self._name = name
        self._interval_s = interval_s
        self._callback = callback
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        # Event.wait doubles as an interruptible pause so stop() is prompt.
        while not self._stopping.wait(self._interval_s):
            try:
                self._callback()
            except Exception:
                logger.exception("ticker %s callback failed; continuing", self._name)
