"""What every strategy offers, and the plumbing bar-based strategies share.

A strategy is pure: it gets ticks (or bars), keeps per-instrument state, and returns the
``TradePlan``s a closed bar caused. It never reads a clock, logs or talks to actors; the
StrategyActor owns one instance and publishes the plans.

``BarStrategy`` does the common part: one ``BarAggregator`` per instrument, parameter parsing
(unknown keys are errors), and turning a signal into a plan (entry at the bar close rounded to
the tick, ATR-based stop and target, risk-based quantity, deterministic plan id).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple, Protocol

from domain.bars import BarAggregator
from domain.config import RiskConfig
from domain.enums import OrderType, Side
from domain.instruments import Instrument
from domain.messages.market import Bar, Tick
from domain.messages.orders import TradePlan
from domain.plans import plan_client_id
from domain.sizing import risk_based_quantity

__all__ = ["BarStrategy", "Param", "Strategy", "parse_params"]


class Strategy(Protocol):
    """A source of trade plans. Every method runs on the owning actor's thread."""

    name: str

    def on_tick(self, tick: Tick) -> list[TradePlan]:
        """Aggregate the tick into bars; return the plans of any bar it closed."""
        ...

    def on_bar(self, bar: Bar) -> list[TradePlan]:
        """Evaluate one closed bar; return the plans it causes (often none)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for the debug dump."""
        ...


class Param(NamedTuple):
    """The declaration of one strategy parameter."""

    default: float
    integer: bool = False
    minimum: float = 0.0
    """Inclusive lower bound."""
    doc: str = ""


def parse_params(
    kind: str, name: str, params: Mapping[str, float], spec: Mapping[str, Param]
) -> dict[str, int | Decimal]:
    """Merge ``params`` over the defaults of ``spec`` and validate them.

    Returns:
        Every declared key: ``int`` for integer params, ``Decimal`` for the others (parsed
        from the float's shortest repr, so ``0.1`` becomes ``Decimal("0.1")``).

    Raises:
        ValueError: naming the key on an unknown key, a fractional integer param or a value
            below the minimum.
    """
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(
            f"strategy {name!r} ({kind}): unknown param {unknown[0]!r}; "
            f"allowed params are {sorted(spec)}"
        )
    parsed: dict[str, int | Decimal] = {}
    for key, declaration in spec.items():
        raw = float(params.get(key, declaration.default))
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise ValueError(f"strategy {name!r} ({kind}): param {key!r} was {raw}")
        if raw < declaration.minimum:
            raise ValueError(
                f"strategy {name!r} ({kind}): param {key!r} was {raw}, "
                f"must be >= {declaration.minimum}"
            )
        if declaration.integer:
            if raw != int(raw):
                raise ValueError(
                    f"strategy {name!r} ({kind}): param {key!r} was {raw}, must be a whole number"
                )
            parsed[key] = int(raw)
        else:
            parsed[key] = Decimal(repr(raw))
    return parsed


class BarStrategy:
    """Base of the bar strategies: per-instrument bars, params, plan construction.

    Subclasses set ``kind`` and ``params_spec`` and implement ``_evaluate``. Ticks and bars for
    instruments the strategy does not trade are ignored.

    Args:
        name: the instance name (plan ``strategy`` field, metric label).
        instruments: the instruments traded, by symbol.
        bar_interval_s: bar length.
        params: overrides of ``params_spec`` defaults.
        risk: capital, per-trade risk percent and max order size for sizing.

    Raises:
        ValueError: on an unknown or invalid param.
    """

    kind: ClassVar[str] = ""
    params_spec: ClassVar[Mapping[str, Param]] = {}

    def __init__(
        self,
        *,
        name: str,
        instruments: Mapping[str, Instrument],
        bar_interval_s: int,
        params: Mapping[str, float],
        risk: RiskConfig,
    ) -> None:
        self.name: str = name
        self.bar_interval_s: int = bar_interval_s
        self.params: dict[str, int | Decimal] = parse_params(
            self.kind, name, params, self.params_spec
        )
        self.instruments: dict[str, Instrument] = dict(instruments)
        self._risk: RiskConfig = risk
        self._aggregators: dict[str, BarAggregator] = {
            symbol: BarAggregator(symbol, bar_interval_s) for symbol in self.instruments
        }
        self.plans_emitted: int = 0
        self.signals_skipped: int = 0
        """Signals dropped because the ATR was not warm or the quantity rounded to 0."""
        self._configure()

    def _configure(self) -> None:
        """Subclass hook: read ``self.params`` into per-instrument state (may raise
        ValueError for params that are invalid together)."""

    # -- Strategy protocol ----------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[TradePlan]:
        aggregator = self._aggregators.get(tick.instrument)
        if aggregator is None:
            return []
        bars = aggregator.on_tick(tick)
        if not bars:
            return []  # most ticks close no bar
        plans: list[TradePlan] = []
        for bar in bars:
            plans.extend(self._on_bar(bar, tick.ts_init))
        return plans

    def on_bar(self, bar: Bar) -> list[TradePlan]:
        # Without a tick, the bar's close is the moment the plan is made.
        return self._on_bar(bar, bar.ts_close)

    def snapshot(self) -> dict[str, Any]:
        per_instrument: dict[str, Any] = {}
        for symbol, aggregator in self._aggregators.items():
            current = aggregator.current()
            per_instrument[symbol] = {
                "bars_closed": aggregator.bars_closed,
                "late_ticks": aggregator.late_ticks,
                "open_bar": None
                if current is None
                else {
                    "ts_open": current.ts_open,
                    "open": str(current.open),
                    "high": str(current.high),
                    "low": str(current.low),
                    "close": str(current.close),
                    "tick_count": current.tick_count,
                },
                **self._instrument_snapshot(symbol),
            }
        return {
            "name": self.name,
            "kind": self.kind,
            "bar_interval_s": self.bar_interval_s,
            "params": {key: str(value) for key, value in self.params.items()},
            "plans_emitted": self.plans_emitted,
            "signals_skipped": self.signals_skipped,
            "instruments": per_instrument,
        }

    # -- for subclasses -------------------------------------------------------------------

    def _evaluate(self, instrument: Instrument, bar: Bar, ts_init: int) -> list[TradePlan]:
        raise NotImplementedError

    def _instrument_snapshot(self, symbol: str) -> dict[str, Any]:
        return {}

    def _make_plan(
        self,
        *,
        instrument: Instrument,
        side: Side,
        bar: Bar,
        atr: Decimal | None,
        ts_init: int,
    ) -> TradePlan | None:
        """Build the plan for a signal on ``bar``, or None (counted) if it cannot be sized.

        Entry is MARKET at the bar close rounded to the tick; stop and target sit
        ``stop_atr`` and ``target_atr`` ATRs away, rounded to the tick and at least one tick
        from the entry.
        """
        if atr is None or atr <= 0:
            self.signals_skipped += 1
            return None
        tick = instrument.tick_size
        entry = instrument.round_price(bar.close)
        stop_distance = Decimal(self.params["stop_atr"]) * atr
        target_distance = Decimal(self.params["target_atr"]) * atr
        stop = instrument.round_price(entry - side.sign * stop_distance)
        target = instrument.round_price(entry + side.sign * target_distance)
        # Rounding can pull a small ATR distance back onto the entry; keep a one-tick gap.
        if (stop - entry) * side.sign >= 0:
            stop = entry - side.sign * tick
        if (target - entry) * side.sign <= 0:
            target = entry + side.sign * tick
        if stop <= 0 or target <= 0 or entry <= 0:
            self.signals_skipped += 1
            return None
        quantity = risk_based_quantity(
            capital=self._risk.capital_rupees,
            risk_pct=self._risk.per_trade_risk_pct,
            entry=entry,
            stop=stop,
            lot_size=instrument.lot_size,
            # An order above the exchange freeze quantity would only be refused downstream.
            max_quantity=min(self._risk.max_order_size, instrument.freeze_quantity),
        )
        if quantity == 0:
            self.signals_skipped += 1
            return None
        self.plans_emitted += 1
        return TradePlan(
            plan_client_id=plan_client_id(
                strategy=self.name,
                instrument=instrument.symbol,
                side=side,
                entry_price=entry,
                stop_price=stop,
                target_price=target,
                quantity=quantity,
                signal_ts=bar.ts_close,
            ),
            strategy=self.name,
            instrument=instrument.symbol,
            side=side,
            quantity=quantity,
            entry_type=OrderType.MARKET,
            entry_price=entry,
            stop_price=stop,
            target_price=target,
            signal_ts=bar.ts_close,
            ts_init=ts_init,
        )

    def _on_bar(self, bar: Bar, ts_init: int) -> list[TradePlan]:
        instrument = self.instruments.get(bar.instrument)
        if instrument is None:
            return []
        return self._evaluate(instrument, bar, ts_init)
