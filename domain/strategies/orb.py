"""Opening-range breakout (``kind: orb``).

Time is cut into windows of ``window_bars`` bars, aligned to the epoch plus
``window_offset_s``. The first ``range_bars`` bars of a window form the opening range (its
highest high and lowest low). After that, the first bar that *closes* above the range high is a
BUY and the first that closes below the range low is a SELL: at most one signal per side per
window. A window whose first bar we did not see (we joined late) has no valid range and gives
no signal, so a restart mid-session never trades a partial opening range.

The synthetic market has no sessions, so the defaults make a short rolling window: with 5 s
bars, a 30 s range inside every 2 minutes. A real NSE session maps onto it through the params:
5-minute bars (``bar_interval_s: 300``), a 15-minute opening range (``range_bars: 3``), one
window per day (``window_bars: 288``) starting at 09:15 IST = 03:45 UTC
(``window_offset_s: 13500``). Bars only exist while the market ticks, so the hours after the
15:30 close produce nothing.

Params (``StrategyConfig.params``), with defaults:
    range_bars (6): bars that form the opening range, >= 1 and < window_bars.
    window_bars (24): bars per window.
    window_offset_s (0): window start, seconds after the epoch modulo the window length.
    atr_period (10): Wilder ATR period, in bars.
    stop_atr (1.0): stop distance from the entry, in ATRs.
    target_atr (2.0): target distance from the entry, in ATRs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.clock import NANOS_PER_SECOND
from domain.enums import Side
from domain.indicators import Atr
from domain.instruments import Instrument
from domain.messages.market import Bar
from domain.messages.orders import TradePlan
from domain.strategies.base import BarStrategy, Param

__all__ = ["OrbStrategy"]


class _OrbState:
    def __init__(self, atr_period: int) -> None:
        self.atr: Atr = Atr(atr_period)
        self.window: int | None = None
        self.range_high: Decimal | None = None
        self.range_low: Decimal | None = None
        self.window_valid: bool = False
        self.bought: bool = False
        self.sold: bool = False


class OrbStrategy(BarStrategy):
    """Opening-range breakout; see the module docstring for the rules and params."""

    kind = "orb"
    params_spec = {
        "range_bars": Param(6, integer=True, minimum=1, doc="bars in the opening range"),
        "window_bars": Param(24, integer=True, minimum=2, doc="bars per window"),
        "window_offset_s": Param(0, integer=True, minimum=0, doc="window start offset"),
        "atr_period": Param(10, integer=True, minimum=1, doc="ATR period, bars"),
        "stop_atr": Param(1.0, minimum=0.1, doc="stop distance, ATRs"),
        "target_atr": Param(2.0, minimum=0.1, doc="target distance, ATRs"),
    }

    def _configure(self) -> None:
        self._range_bars: int = int(self.params["range_bars"])
        self._window_bars: int = int(self.params["window_bars"])
        if self._range_bars >= self._window_bars:
            raise ValueError(
                f"strategy {self.name!r} (orb): range_bars ({self._range_bars}) must be below "
                f"window_bars ({self._window_bars})"
            )
        self._offset_ns: int = int(self.params["window_offset_s"]) * NANOS_PER_SECOND
        self._state: dict[str, _OrbState] = {
            symbol: _OrbState(int(self.params["atr_period"])) for symbol in self.instruments
        }

    def _evaluate(self, instrument: Instrument, bar: Bar, ts_init: int) -> list[TradePlan]:
        state = self._state[instrument.symbol]
        atr = state.atr.update(bar.high, bar.low, bar.close)
        interval_ns = bar.interval_s * NANOS_PER_SECOND
        since_origin = bar.ts_open - self._offset_ns
        window, offset_in_window = divmod(since_origin, self._window_bars * interval_ns)
        position = offset_in_window // interval_ns
        if window != state.window:
            state.window = window
            state.range_high = state.range_low = None
            state.window_valid = position == 0
            state.bought = state.sold = False
        if position < self._range_bars:
            # As max()/min() would, without their call cost: the first of equal values stays.
            if state.range_high is None or bar.high > state.range_high:
                state.range_high = bar.high
            if state.range_low is None or bar.low < state.range_low:
                state.range_low = bar.low
            return []
        if not state.window_valid or state.range_high is None or state.range_low is None:
            return []
        side: Side | None = None
        if bar.close > state.range_high and not state.bought:
            side = Side.BUY
        elif bar.close < state.range_low and not state.sold:
            side = Side.SELL
        if side is None:
            return []
        plan = self._make_plan(instrument=instrument, side=side, bar=bar, atr=atr, ts_init=ts_init)
        if plan is None:
            return []
        if side is Side.BUY:
            state.bought = True
        else:
            state.sold = True
        return [plan]

    def _instrument_snapshot(self, symbol: str) -> dict[str, Any]:
        state = self._state[symbol]
        return {
            "atr": None if state.atr.value is None else str(state.atr.value),
            "window": state.window,
            "window_valid": state.window_valid,
            "range_high": None if state.range_high is None else str(state.range_high),
            "range_low": None if state.range_low is None else str(state.range_low),
            "bought": state.bought,
            "sold": state.sold,
        }
