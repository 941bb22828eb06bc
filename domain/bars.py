"""Time-bucketed OHLC bars built from ticks, one aggregator per instrument.

A bar covers ``[ts_open, ts_close)`` where ``ts_open`` is ``ts_event`` floored to a whole
multiple of the interval (epoch-aligned, so a 300 s bar opens at 09:15:00, 09:20:00, ...).
A bar closes when the first tick of a later bucket arrives; there is no timer here (the domain
reads no clock), so an instrument that stops ticking keeps its last bar open until it ticks
again or the caller uses ``flush``.

Gaps: a tick that lands several intervals after the open bar closes that bar only. No empty
"flat" bars are invented for the silent intervals: a fake bar would feed a zero range into ATR
and a repeated close into the EMAs, both of which distort the indicators more than a missing
bar does. Consumers that count bars therefore count *traded* intervals.

Late ticks (``ts_event`` in a bucket before the open bar's) cannot change a closed bar; they
are dropped and counted in ``late_ticks``.
"""

from __future__ import annotations

from decimal import Decimal

from domain.clock import NANOS_PER_SECOND
from domain.messages.market import Bar, Tick

__all__ = ["BarAggregator", "tick_price"]


def tick_price(tick: Tick) -> Decimal:
    """The price a bar uses for a tick: ``last``, or the mid when ``last`` is not positive."""
    return tick.last if tick.last > 0 else tick.mid


class BarAggregator:
    """Builds bars of ``interval_s`` seconds for one instrument.

    Args:
        instrument: the only symbol this aggregator accepts.
        interval_s: bar length in seconds, > 0.

    Raises:
        ValueError: if ``interval_s`` is not positive.
    """

    def __init__(self, instrument: str, interval_s: int) -> None:
        if interval_s <= 0:
            raise ValueError(f"bar interval must be positive: interval_s={interval_s}")
        self.instrument: str = instrument
        self.interval_s: int = interval_s
        self._interval_ns: int = interval_s * NANOS_PER_SECOND
        self._ts_open: int | None = None
        self._open: Decimal = Decimal(0)
        self._high: Decimal = Decimal(0)
        self._low: Decimal = Decimal(0)
        self._close: Decimal = Decimal(0)
        self._tick_count: int = 0
        self.bars_closed: int = 0
        """Bars returned so far."""
        self.late_ticks: int = 0
        """Ticks dropped because they belonged to an already closed bucket."""

    def on_tick(self, tick: Tick) -> list[Bar]:
        """Fold a tick in and return the bars it closed (zero or one).

        Raises:
            ValueError: if the tick is for another instrument.
        """
        if tick.instrument != self.instrument:
            raise ValueError(
                f"tick for instrument={tick.instrument!r} sent to the bar aggregator of "
                f"{self.instrument!r}"
            )
        # Runs for every tick of every strategy: the common case (same bucket) comes first, and
        # comparisons replace max()/min() and the tick_price()/mid calls (each a Python call
        # costing more than the Decimal comparison itself). Same results, including which of
        # two equal Decimals is kept (max/min keep the first, as these comparisons do).
        ts_event = tick.ts_event
        bucket = ts_event - ts_event % self._interval_ns
        price = tick.last
        if not price > 0:
            price = (tick.bid + tick.ask) / 2  # Tick.mid
        ts_open = self._ts_open
        if bucket == ts_open:
            if price > self._high:
                self._high = price
            elif price < self._low:  # low <= high, so a new high is never a new low
                self._low = price
            self._close = price
            self._tick_count += 1
            return []
        if ts_open is None:
            self._start(bucket, price)
            return []
        if bucket < ts_open:
            self.late_ticks += 1
            return []
        closed = self._build()
        self._start(bucket, price)
        return [closed]

    def flush(self) -> list[Bar]:
        """Close the open bar now (end of a replay or a session) and return it, if any."""
        if self._ts_open is None:
            return []
        closed = self._build()
        self._ts_open = None
        self._tick_count = 0
        return [closed]

    def current(self) -> Bar | None:
        """The open, still changing bar, or None before the first tick."""
        if self._ts_open is None:
            return None
        return Bar(
            instrument=self.instrument,
            interval_s=self.interval_s,
            open=self._open,
            high=self._high,
            low=self._low,
            close=self._close,
            tick_count=self._tick_count,
            ts_open=self._ts_open,
            ts_close=self._ts_open + self._interval_ns,
        )

    def _start(self, bucket: int, price: Decimal) -> None:
        self._ts_open = bucket
        self._open = self._high = self._low = self._close = price
        self._tick_count = 1

    def _build(self) -> Bar:
        bar = self.current()
        assert bar is not None  # callers check that a bar is open
        self.bars_closed += 1
        return bar
