"""Strategies: pure objects that turn ticks and bars into trade plans.

``build_strategy`` is the factory the launcher uses: it maps ``StrategyConfig.kind`` to a
class. Each strategy module documents its rules and params.
"""

from __future__ import annotations

from collections.abc import Mapping

from domain.config import RiskConfig, StrategyConfig
from domain.instruments import Instrument
from domain.strategies.base import BarStrategy, Param, Strategy, parse_params
from domain.strategies.ema_pullback import EmaPullbackStrategy
from domain.strategies.orb import OrbStrategy

__all__ = [
    "STRATEGY_KINDS",
    "BarStrategy",
    "EmaPullbackStrategy",
    "OrbStrategy",
    "Param",
    "Strategy",
    "build_strategy",
    "parse_params",
]

STRATEGY_KINDS: Mapping[str, type[BarStrategy]] = {
    OrbStrategy.kind: OrbStrategy,
    EmaPullbackStrategy.kind: EmaPullbackStrategy,
}


def build_strategy(
    config: StrategyConfig, instruments: Mapping[str, Instrument], risk: RiskConfig
) -> Strategy:
    """Build the strategy instance ``config`` describes.

    Args:
        config: the instance (name, kind, instruments, bar interval, params).
        instruments: every known instrument by symbol; the strategy keeps the ones it trades.
        risk: sizing inputs (capital, per-trade risk percent, max order size).

    Raises:
        ValueError: on an unknown kind, an instrument missing from ``instruments``, or an
            unknown or invalid param (the message names the key).
    """
    strategy_class = STRATEGY_KINDS.get(config.kind)
    if strategy_class is None:
        raise ValueError(
            f"strategy {config.name!r}: unknown kind {config.kind!r}; "
            f"known kinds are {sorted(STRATEGY_KINDS)}"
        )
    missing = [symbol for symbol in config.instruments if symbol not in instruments]
    if missing:
        raise ValueError(
            f"strategy {config.name!r}: unknown instruments {missing}; "
            f"known instruments are {sorted(instruments)}"
        )
    return strategy_class(
        name=config.name,
        instruments={symbol: instruments[symbol] for symbol in config.instruments},
        bar_interval_s=config.bar_interval_s,
        params=config.params,
        risk=risk,
    )
