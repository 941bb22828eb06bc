"""EMA trend pullback (``kind: ema_pullback``).

The trend is up while the fast EMA is above the slow EMA, down while below. In an uptrend, a
bar whose low touches the fast EMA (pulls back to it) and that closes back above it, as an up
bar (close > open), is a BUY; the mirror image is a SELL. The EMAs a bar is judged against are
the values *before* that bar, the level the market could see while the bar was forming. After
a signal, the instrument sits out ``cooldown_bars`` bars.

Params (``StrategyConfig.params``), with defaults:
    fast_period (8): fast EMA period, bars; below slow_period.
    slow_period (21): slow EMA period, bars.
    atr_period (10): Wilder ATR period, bars.
    stop_atr (1.5): stop distance from the entry, in ATRs.
    target_atr (3.0): target distance from the entry, in ATRs.
    cooldown_bars (3): bars ignored on an instrument after one of its signals.
"""

from __future__ import annotations

from typing import Any

from domain.enums import Side
from domain.indicators import Atr, Ema
from domain.instruments import Instrument
from domain.messages.market import Bar
from domain.messages.orders import TradePlan
from domain.strategies.base import BarStrategy, Param

__all__ = ["EmaPullbackStrategy"]


class _EmaState:
    def __init__(self, fast_period: int, slow_period: int, atr_period: int) -> None:
        self.fast: Ema = Ema(fast_period)
        self.slow: Ema = Ema(slow_period)
        self.atr: Atr = Atr(atr_period)
        self.cooldown: int = 0


class EmaPullbackStrategy(BarStrategy):
    """EMA trend pullback; see the module docstring for the rules and params."""

    kind = "ema_pullback"
    params_spec = {
        "fast_period": Param(8, integer=True, minimum=1, doc="fast EMA period, bars"),
        "slow_period": Param(21, integer=True, minimum=2, doc="slow EMA period, bars"),
        "atr_period": Param(10, integer=True, minimum=1, doc="ATR period, bars"),
        "stop_atr": Param(1.5, minimum=0.1, doc="stop distance, ATRs"),
        "target_atr": Param(3.0, minimum=0.1, doc="target distance, ATRs"),
        "cooldown_bars": Param(3, integer=True, minimum=0, doc="bars to sit out after a signal"),
    }

    def _configure(self) -> None:
        fast_period = int(self.params["fast_period"])
        slow_period = int(self.params["slow_period"])
        if fast_period >= slow_period:
            raise ValueError(
                f"strategy {self.name!r} (ema_pullback): fast_period ({fast_period}) must be below "
                f"slow_period ({slow_period})"
            )
        self._cooldown_bars: int = int(self.params["cooldown_bars"])
        self._state: dict[str, _EmaState] = {
            symbol: _EmaState(fast_period, slow_period, int(self.params["atr_period"]))
            for symbol in self.instruments
        }

    def _evaluate(self, instrument: Instrument, bar: Bar, ts_init: int) -> list[TradePlan]:
        state = self._state[instrument.symbol]
        fast, slow = state.fast.value, state.slow.value
        atr = state.atr.update(bar.high, bar.low, bar.close)
        state.fast.update(bar.close)
        state.slow.update(bar.close)
        if state.cooldown > 0:
            state.cooldown -= 1
            return []
        if fast is None or slow is None:
            return []
        side: Side | None = None
        if fast > slow and bar.low <= fast < bar.close and bar.close > bar.open:
            side = Side.BUY
        elif fast < slow and bar.high >= fast > bar.close and bar.close < bar.open:
            side = Side.SELL
        if side is None:
            return []
        plan = self._make_plan(instrument=instrument, side=side, bar=bar, atr=atr, ts_init=ts_init)
        if plan is None:
            return []
        state.cooldown = self._cooldown_bars
        return [plan]

    def _instrument_snapshot(self, symbol: str) -> dict[str, Any]:
        state = self._state[symbol]
        return {
            "fast_ema": None if state.fast.value is None else str(state.fast.value),
            "slow_ema": None if state.slow.value is None else str(state.slow.value),
            "atr": None if state.atr.value is None else str(state.atr.value),
            "cooldown_remaining": state.cooldown,
        }
