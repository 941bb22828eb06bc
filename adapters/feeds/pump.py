"""The feed pump: one background thread that drives a tick source in real time.

Two kinds of source (``TickSource``):
- a *polled* source (``PolledSource``: the synthetic market) is asked for ticks every
  ``tick_interval_ms / speed``; its ticks are stamped with ``clock.now_ns()``;
- a *recorded* source (any iterator of ticks, e.g. ``read_ticks``) is paced by the gaps
  between its ``ts_event``s divided by ``speed``; every tick due by now goes out in one
  ``TicksReceived`` of at most ``max_batch_ticks`` ticks, so a replay that falls behind
  catches up in batches. ``ts_event`` is kept, ``ts_init`` is restamped from the clock.

``speed = 0`` means as fast as possible (no waiting at all).

Threads and failures:
- ``start`` and ``stop`` run in the caller's thread; everything else in the pump thread
  (daemon, named ``feed-pump-<name>``). The sink is called on the pump thread.
- Pacing waits on a ``threading.Event``, so ``stop``, ``stall`` and ``resume`` take effect at
  once, not after the current interval.
- ``stall`` keeps the thread alive but emits nothing (a frozen feed, for operators and tests
  of the staleness watchdog); ``resume`` restarts the pacing from now, without a burst of the
  ticks the stall skipped.
- A sink that raises (its actor is dead or restarting) is logged, rate-limited, and counted
  in ``sink_errors``; the pump keeps going so a restarted consumer gets data again.
- A bad row in a replayed file does not reach the pump: ``CsvTickReplay`` skips, counts and
  logs it and the replay goes on (its counters appear in ``snapshot()["source"]``). A source
  that raises anyway (a file that cannot be opened, a bad header) ends the pump: the error is
  logged and kept in ``error``. A recorded source that runs out ends it too (``exhausted``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import msgspec

from adapters.feeds.csv_replay import CsvTickReplay, TickDataError
from adapters.feeds.synthetic import SyntheticMarket
from domain.clock import NANOS_PER_SECOND, Clock
from domain.config import FeedConfig
from domain.instruments import Instrument
from domain.messages.market import Tick, TicksReceived

__all__ = ["FeedPump", "PolledSource", "TickSource", "build_tick_source"]

logger = logging.getLogger(__name__)

_SINK_ERROR_LOG_INTERVAL_S = 5.0


@runtime_checkable
class PolledSource(Protocol):
    """A source asked for fresh ticks at a fixed pace (the synthetic market)."""

    @property
    def tick_interval_ms(self) -> int: ...

    def next_ticks(self, now_ns: int) -> list[Tick]: ...


TickSource = PolledSource | Iterator[Tick]
"""A polled source, or an iterator of recorded ticks in ``ts_event`` order."""


def build_tick_source(
    config: FeedConfig,
    instruments: Sequence[Instrument] | Mapping[str, Instrument],
    *,
    start_prices: Mapping[str, Decimal] | None = None,
    on_bad_row: Callable[[TickDataError], None] | None = None,
) -> TickSource:
    """Build the source ``config.kind`` names.

    Args:
        config: the feed settings.
        instruments: the configured instruments (a sequence, or a mapping by symbol).
        start_prices: where the synthetic walks start (ignored for a CSV replay).
        on_bad_row: told about every row a CSV replay skips (ignored for the synthetic
            market), e.g. to count it in ``trader_ticks_rejected_total{reason="BAD_ROW"}``.

    Returns:
        A ``SyntheticMarket`` for ``synthetic``; a lazy ``CsvTickReplay`` for ``csv`` (the
        file is opened on the first read, in the pump thread; bad rows are skipped).
    """
    listed = list(instruments.values()) if isinstance(instruments, Mapping) else list(instruments)
    if config.kind == "synthetic":
        return SyntheticMarket(listed, config, start_prices)
    if config.csv_path is None:  # FeedConfig validates this; kept for the type checker
        raise ValueError("feed.csv_path is required when feed.kind is 'csv'")
    return CsvTickReplay(
        config.csv_path,
        {instrument.symbol: instrument for instrument in listed},
        on_bad_row=on_bad_row,
    )


class FeedPump:
    """Drives a ``TickSource`` on a background thread and hands batches to ``sink``.

    Args:
        name: the feed name (``TicksReceived.feed``, thread name).
        sink: receives each batch, on the pump thread; may raise (logged, pump goes on).
        source: a polled source or an iterator of recorded ticks.
        clock: stamps polled ticks and the ``ts_init`` of recorded ones.
        speed: pacing multiplier; 1.0 real time, 2.0 twice as fast, 0 no waiting.
        max_batch_ticks: the largest batch of recorded ticks in one ``TicksReceived``.

    Raises:
        ValueError: on a negative speed or a batch limit below 1.
    """

    def __init__(
        self,
        *,
        name: str,
        sink: Callable[[TicksReceived], None],
        source: TickSource,
        clock: Clock,
        speed: float = 1.0,
        max_batch_ticks: int = 500,
    ) -> None:
        if speed < 0:
            raise ValueError(f"feed pump {name}: speed must not be negative: speed={speed}")
        if max_batch_ticks < 1:
            raise ValueError(
                f"feed pump {name}: max_batch_ticks must be >= 1: max_batch_ticks={max_batch_ticks}"
            )
        self.name: str = name
        self._sink = sink
        self._source = source
        self._clock = clock
        self._speed = speed
        self._max_batch_ticks = max_batch_ticks
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._wake = threading.Event()
        self._stalled = False
        self._resumed = False
        # Held while a batch is taken and handed over, so that once stall() or stop() returns
        # no further batch reaches the sink. Re-entrant: the sink may call stall() itself.
        self._emit_lock = threading.RLock()
        self._finished = threading.Event()
        self._pending: Tick | None = None
        self._anchor: tuple[float, int] | None = None  # (monotonic s, ts_event) of the pacing
        self._last_sink_error_log = float("-inf")
        self.batches_emitted: int = 0
        self.ticks_emitted: int = 0
        self.sink_errors: int = 0
        self.last_emit_ns: int | None = None
        """Clock time of the last batch handed to the sink."""
        self.exhausted: bool = False
        """A recorded source ran out."""
        self.error: BaseException | None = None
        """What the source raised, if it ended the pump."""

    # -- control (caller's thread) ----------------------------------------------------------

    def start(self) -> None:
        """Start the pump thread.

        Raises:
            RuntimeError: if it was already started.
        """
        if self._thread is not None:
            raise RuntimeError(f"feed pump {self.name} was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"feed-pump-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the thread to end and wait up to ``timeout_s`` for it. Safe to call twice.

        A sink call in progress is not interrupted; if it outlasts the timeout the thread is
        left to finish on its own (it is a daemon) and a warning is logged.
        """
        self._stop_requested.set()
        self._wake.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning(
                "feed pump did not stop in time",
                extra={
                    "event": "FEED_PUMP_STOP_TIMEOUT",
                    "feed": self.name,
                    "timeout_s": timeout_s,
                },
            )

    def stall(self) -> None:
        """Stop emitting without stopping the thread (the feed looks frozen).

        Waits for a batch being handed to the sink to finish; after this returns, no batch
        reaches the sink until ``resume``.
        """
        with self._emit_lock:
            self._stalled = True
        self._wake.set()

    def resume(self) -> None:
        """Emit again after ``stall``, pacing from now."""
        self._stalled = False
        self._resumed = True
        self._wake.set()

    def paused(self) -> bool:
        """True while stalled."""
        return self._stalled

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_finished(self, timeout_s: float) -> bool:
        """Wait until the thread ended (stopped, exhausted or failed); False on timeout."""
        return self._finished.wait(timeout_s)

    def snapshot(self) -> dict[str, Any]:
        """Counters and state for debug dumps."""
        return {
            "name": self.name,
            "alive": self.is_alive,
            "stalled": self._stalled,
            "speed": self._speed,
            "batches_emitted": self.batches_emitted,
            "ticks_emitted": self.ticks_emitted,
            "sink_errors": self.sink_errors,
            "last_emit_ns": self.last_emit_ns,
            "exhausted": self.exhausted,
            "error": None if self.error is None else repr(self.error),
            "source": self._source.snapshot() if isinstance(self._source, CsvTickReplay) else None,
        }

    # -- pump thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if isinstance(self._source, PolledSource):
                self._run_polled(self._source)
            else:
                self._run_recorded(self._source)
        except Exception as error:
            self.error = error
            logger.error(
                "feed source failed; pump stopped: %s",
                error,
                extra={"event": "FEED_SOURCE_FAILED", "feed": self.name},
            )
        finally:
            self._finished.set()

    def _run_polled(self, source: PolledSource) -> None:
        interval_s = 0.0 if self._speed == 0 else source.tick_interval_ms / 1000.0 / self._speed
        next_due = time.monotonic()
        while not self._stop_requested.is_set():
            if self._hold_while_stalled():
                next_due = time.monotonic()
                continue
            delay = next_due - time.monotonic()
            if delay > 0:
                self._wait(delay)
                continue
            with self._emit_lock:
                if self._stalled or self._stop_requested.is_set():
                    continue
                self._emit(source.next_ticks(self._clock.now_ns()))
            # After a slow sink, go on from now: no burst of the missed slots.
            next_due = max(next_due + interval_s, time.monotonic())

    def _run_recorded(self, source: Iterator[Tick]) -> None:
        while not self._stop_requested.is_set():
            if self._hold_while_stalled():
                self._anchor = None
                continue
            if self._pending is None:
                self._pending = next(source, None)
                if self._pending is None:
                    self.exhausted = True
                    return
            if self._anchor is None:
                self._anchor = (time.monotonic(), self._pending.ts_event)
            delay = self._seconds_until_due(self._pending)
            if delay > 0:
                self._wait(delay)
                continue
            with self._emit_lock:
                if self._stalled or self._stop_requested.is_set():
                    continue
                batch, failure = self._take_due(source)
                now_ns = self._clock.now_ns()
                self._emit([msgspec.structs.replace(tick, ts_init=now_ns) for tick in batch])
            if failure is not None:
                raise failure

    def _take_due(self, source: Iterator[Tick]) -> tuple[list[Tick], Exception | None]:
        # A bad row mid-batch must not swallow the good ticks before it: hand back both.
        batch: list[Tick] = []
        while self._pending is not None and len(batch) < self._max_batch_ticks:
            if batch and self._seconds_until_due(self._pending) > 0:
                break
            batch.append(self._pending)
            try:
                self._pending = next(source, None)
            except Exception as error:
                self._pending = None
                return batch, error
        return batch, None

    def _seconds_until_due(self, tick: Tick) -> float:
        if self._speed == 0 or self._anchor is None:
            return 0.0
        anchor_monotonic, anchor_ts = self._anchor
        source_gap_s = (tick.ts_event - anchor_ts) / NANOS_PER_SECOND
        return anchor_monotonic + source_gap_s / self._speed - time.monotonic()

    def _hold_while_stalled(self) -> bool:
        """Block while stalled; True if the pacing must restart from now."""
        if not self._stalled and not self._resumed:
            return False
        while self._stalled and not self._stop_requested.is_set():
            self._wait(None)
        self._resumed = False
        return True

    def _wait(self, timeout_s: float | None) -> None:
        self._wake.wait(timeout_s)
        # Flags are re-read by the caller after the clear, so a wake that lands in between
        # is never lost.
        self._wake.clear()

    def _emit(self, ticks: list[Tick]) -> None:
        if not ticks:
            return
        batch = TicksReceived(
            feed=self.name,
            ticks=tuple(ticks),
            # A reader that checked every tick spares the feed actor a second pass (a restamped
            # ts_init is the clock's, always valid).
            validated=getattr(self._source, "validates_ticks", False) is True,
        )
        try:
            self._sink(batch)
        except Exception as error:
            self.sink_errors += 1
            now = time.monotonic()
            if now - self._last_sink_error_log >= _SINK_ERROR_LOG_INTERVAL_S:
                self._last_sink_error_log = now
                logger.warning(
                    "feed sink raised; pump keeps going (sink_errors=%d): %r",
                    self.sink_errors,
                    error,
                    extra={"event": "FEED_SINK_FAILED", "feed": self.name},
                )
            return
        self.batches_emitted += 1
        self.ticks_emitted += len(ticks)
        self.last_emit_ns = self._clock.now_ns()
