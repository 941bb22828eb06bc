"""Incremental indicators on Decimal prices: EMA and Wilder's ATR.

Both are fed one value (or one bar) at a time and return None until warmed up. Arithmetic is
Decimal in the default context (28 significant digits); results are not rounded, so callers
round to the instrument's tick when a price leaves the strategy.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["Atr", "Ema"]


def _check_period(kind: str, period: int) -> None:
    if period < 1:
        raise ValueError(f"{kind} period must be >= 1: period={period}")


class Ema:
    """Exponential moving average with ``alpha = 2 / (period + 1)``.

    The first value is the simple average of the first ``period`` inputs (the usual seed), so
    the result is None for the first ``period - 1`` updates.

    Raises:
        ValueError: if ``period`` < 1.
    """

    def __init__(self, period: int) -> None:
        _check_period("EMA", period)
        self.period: int = period
        self._alpha: Decimal = Decimal(2) / Decimal(period + 1)
        self._period_decimal: Decimal = Decimal(period)
        self._seed_sum: Decimal = Decimal(0)
        self._count: int = 0
        self._value: Decimal | None = None

    @property
    def value(self) -> Decimal | None:
        """The latest EMA, or None while warming up."""
        return self._value

    def update(self, price: Decimal) -> Decimal | None:
        """Fold one price in and return the EMA (None while warming up)."""
        self._count += 1
        if self._value is None:
            self._seed_sum += price
            if self._count == self.period:
                self._value = self._seed_sum / self._period_decimal
            return self._value
        self._value = self._value + self._alpha * (price - self._value)
        return self._value


class Atr:
    """Average true range, Wilder's smoothing.

    True range is ``max(high - low, |high - previous close|, |low - previous close|)``; the
    first bar has no previous close, so its true range is ``high - low``. The first ATR is the
    simple average of the first ``period`` true ranges; after that
    ``atr = (atr * (period - 1) + tr) / period``.

    Raises:
        ValueError: if ``period`` < 1, or on update if ``high < low``.
    """

    def __init__(self, period: int) -> None:
        _check_period("ATR", period)
        self.period: int = period
        # Built once: the smoothing runs on every bar, and Decimal(int) is not free.
        self._period_decimal: Decimal = Decimal(period)
        self._period_minus_one: Decimal = Decimal(period - 1)
        self._previous_close: Decimal | None = None
        self._seed_sum: Decimal = Decimal(0)
        self._count: int = 0
        self._value: Decimal | None = None

    @property
    def value(self) -> Decimal | None:
        """The latest ATR, or None while warming up."""
        return self._value

    def update(self, high: Decimal, low: Decimal, close: Decimal) -> Decimal | None:
        """Fold one bar in and return the ATR (None while warming up)."""
        if high < low:
            raise ValueError(f"bar high below low: high={high} low={low}")
        true_range = high - low
        previous_close = self._previous_close
        if previous_close is not None:
            # max(true_range, |high - pc|, |low - pc|) without the max() call (it costs more
            # than the comparisons); like max(), a later candidate wins only when strictly
            # greater, so of two equal values the same Decimal (and exponent) is kept.
            from_high = abs(high - previous_close)
            if from_high > true_range:
                true_range = from_high
            from_low = abs(low - previous_close)
            if from_low > true_range:
                true_range = from_low
        self._previous_close = close
        self._count += 1
        if self._value is None:
            self._seed_sum += true_range
            if self._count == self.period:
                self._value = self._seed_sum / self._period_decimal
            return self._value
        self._value = (self._value * self._period_minus_one + true_range) / self._period_decimal
        return self._value
