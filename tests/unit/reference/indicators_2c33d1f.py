"""ORACLE, NOT PRODUCT CODE: the indicators (domain/indicators.py)
verbatim as of commit 2c33d1f, before the fast path
of issue 6. The property tests in tests/unit/test_fast_path_equivalence.py check that the
current module decides exactly as this one on random inputs. Do not edit or import elsewhere.

Original docstring follows.

Incremental indicators on Decimal prices: EMA and Wilder's ATR.

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
                self._value = self._seed_sum / Decimal(self.period)
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
        if self._previous_close is not None:
            true_range = max(
                true_range, abs(high - self._previous_close), abs(low - self._previous_close)
            )
        self._previous_close = close
        self._count += 1
        if self._value is None:
            self._seed_sum += true_range
            if self._count == self.period:
                self._value = self._seed_sum / Decimal(self.period)
            return self._value
        self._value = (self._value * Decimal(self.period - 1) + true_range) / Decimal(self.period)
        return self._value
