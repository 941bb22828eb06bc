"""The synthetic market: a seeded, deterministic quote generator (the ``make paper`` feed).

Each instrument walks on its own ``random.Random`` stream, derived from the feed seed and the
symbol, so adding an instrument does not change the others' prices and the same seed with the
same sequence of ``next_ticks`` calls always gives the same ticks.

What the walk does, per call and per instrument:
- moves the mid by a Gaussian step of ``volatility_bps`` (of the reference price), in whole
  ticks (stochastic rounding keeps small steps unbiased), plus the drift of the current regime;
- switches regimes now and then: trending up, trending down or flat, each lasting 30 s to
  4 min at the default 250 ms pace, so trend and breakout strategies find something to trade;
- pulls weakly towards the reference price, so a long run stays inside the band;
- quotes a spread of 1 to 3 ticks, except for rare blowouts (``spread_blowout_probability``)
  of 3 to 10 times ``max_spread_ticks``, lasting 1 to 4 ticks;
- rarely (``band_hit_probability``) jumps to an edge of ``Instrument.band()``, stays pinned a
  few ticks, then mean-reverts towards where it came from.

Invariants of every tick: ``lower band <= bid < ask <= upper band``, every price on the tick
grid and one the feed actor accepts (a band that reaches zero or past ten times the reference
is clipped to positive prices within ``domain.market_data.ABSURD_PRICE_MULTIPLE``),
``bid <= last <= ask``, sizes and volume positive, ``ts_event == ts_init == now_ns``.
``volume`` is the quantity traded at this tick, not a running total.

Prices are held as integer tick counts and leave as ``Decimal`` multiples of ``tick_size``.
The only floats are the walk's statistical parameters (sigma and drift, in ticks per step).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from domain.config import FeedConfig
from domain.instruments import Instrument
from domain.market_data import ABSURD_PRICE_MULTIPLE
from domain.messages.market import Tick

__all__ = ["SyntheticMarket"]

_SPREAD_TICKS = (1, 2, 3)
_SPREAD_WEIGHTS = (0.55, 0.3, 0.15)
_REGIME_STEPS = (120, 960)
_TREND_DRIFT_SIGMAS = (0.04, 0.12)
_REFERENCE_PULL_PER_STEP = 1e-4
_BLOWOUT_MULTIPLE = (3, 10)
_BLOWOUT_EXTRA_STEPS = (0, 3)
_BAND_PIN_STEPS = (2, 8)
_BAND_REVERT_STEPS = (80, 240)
_BAND_REVERT_RATE = 0.05


def _stream_seed(seed: int, symbol: str) -> int:
    # A hash, not hash(): str hashing is salted per process and would break determinism.
    digest = hashlib.sha256(f"vigil-synthetic|{seed}|{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class _Walk:
    def __init__(
        self, instrument: Instrument, config: FeedConfig, start_price: Decimal | None = None
    ) -> None:
        self.instrument = instrument
        self.rng = random.Random(_stream_seed(config.seed, instrument.symbol))
        tick = instrument.tick_size
        lower, upper = instrument.band()
        # A band of 100 % or more reaches zero (and past ten times the reference, the feed
        # actor's ABSURD_PRICE): the walk stays where every price it quotes is a valid one.
        lower = max(lower, tick, instrument.reference_price / ABSURD_PRICE_MULTIPLE)
        upper = min(upper, instrument.reference_price * ABSURD_PRICE_MULTIPLE)
        self.lower = int((lower / tick).to_integral_value(ROUND_CEILING))
        self.upper = int((upper / tick).to_integral_value(ROUND_FLOOR))
        if self.upper - self.lower < 2:
            raise ValueError(
                f"instrument {instrument.symbol}: price band {lower}..{upper} is narrower "
                f"than two ticks of {tick}; the synthetic market cannot quote inside it"
            )
        self.reference = int(instrument.round_price(instrument.reference_price) / tick)
        self.reference = min(max(self.reference, self.lower + 1), self.upper - 1)
        self.sigma = (
            config.volatility_bps / 10_000.0 * float(instrument.reference_price) / float(tick)
        )
        self.blowout_probability = config.spread_blowout_probability
        self.band_hit_probability = config.band_hit_probability
        self.mid = self.reference
        if start_price is not None:
            start = int(instrument.round_price(start_price) / tick)
            self.mid = min(max(start, self.lower + 1), self.upper - 1)
        self.last = self.mid
        self.drift = 0.0
        self.regime_left = 0
        self.blowout_spread = 0
        self.blowout_left = 0
        self.pinned_left = 0
        self.revert_to = self.reference
        self.revert_left = 0
        self.steps = 0
        self.blowouts = 0
        self.band_hits = 0

    def step(self, now_ns: int) -> Tick:
        rng = self.rng
        self.steps += 1
        self._next_regime()
        if self.pinned_left > 0:
            self.pinned_left -= 1
        elif rng.random() < self.band_hit_probability:
            self.band_hits += 1
            self.revert_to = self.mid
            self.mid = self.upper if rng.random() < 0.5 else self.lower
            self.pinned_left = rng.randint(*_BAND_PIN_STEPS)
            self.revert_left = rng.randint(*_BAND_REVERT_STEPS)
        else:
            mu = self.drift + (self.reference - self.mid) * _REFERENCE_PULL_PER_STEP
            if self.revert_left > 0:
                self.revert_left -= 1
                mu += (self.revert_to - self.mid) * _BAND_REVERT_RATE
            self.mid += math.floor(rng.gauss(mu, self.sigma) + rng.random())
            self.mid = min(max(self.mid, self.lower), self.upper)
        spread, blowing_out = self._spread()
        bid, ask = self._quote(spread)
        # Nothing trades at a blown-out quote: the last print stays where it was. Otherwise
        # a taker hits the bid or lifts the offer.
        if not blowing_out:
            self.last = bid if rng.random() < 0.5 else ask
        last = min(max(self.last, bid), ask)
        self.last = last
        lot = self.instrument.lot_size
        tick = self.instrument.tick_size
        return Tick(
            instrument=self.instrument.symbol,
            bid=bid * tick,
            ask=ask * tick,
            last=last * tick,
            bid_size=lot * rng.randint(1, 50),
            ask_size=lot * rng.randint(1, 50),
            volume=lot * rng.randint(1, 20),
            ts_event=now_ns,
            ts_init=now_ns,
        )

    def _next_regime(self) -> None:
        if self.regime_left > 0:
            self.regime_left -= 1
            return
        rng = self.rng
        self.regime_left = rng.randint(*_REGIME_STEPS)
        draw = rng.random()
        strength = rng.uniform(*_TREND_DRIFT_SIGMAS) * self.sigma
        if draw < 0.35:
            self.drift = strength
        elif draw < 0.7:
            self.drift = -strength
        else:
            self.drift = 0.0

    def _spread(self) -> tuple[int, bool]:
        rng = self.rng
        if self.blowout_left > 0:
            self.blowout_left -= 1
            return self.blowout_spread, True
        if rng.random() < self.blowout_probability:
            self.blowouts += 1
            self.blowout_spread = self.instrument.max_spread_ticks * rng.randint(*_BLOWOUT_MULTIPLE)
            self.blowout_left = rng.randint(*_BLOWOUT_EXTRA_STEPS)
            return self.blowout_spread, True
        return rng.choices(_SPREAD_TICKS, _SPREAD_WEIGHTS)[0], False

    def _quote(self, spread: int) -> tuple[int, int]:
        spread = max(1, min(spread, self.upper - self.lower))
        bid = self.mid - spread // 2
        ask = bid + spread
        if ask > self.upper:
            ask = self.upper
            bid = ask - spread
        if bid < self.lower:
            bid = self.lower
            ask = bid + spread
        return bid, ask


class SyntheticMarket:
    """A deterministic quote generator over a set of instruments.

    Args:
        instruments: the instruments to quote, in the order ``next_ticks`` returns them.
        config: seed, volatility and event probabilities (``FeedConfig``).
        start_prices: where each walk starts (e.g. the last traded prices, so a restarted
            engine's market does not jump back to the reference price); default the
            instrument's ``reference_price``. Clipped into the band.

    Raises:
        ValueError: on duplicate symbols or a band too narrow to quote in.
    """

    def __init__(
        self,
        instruments: Sequence[Instrument],
        config: FeedConfig,
        start_prices: Mapping[str, Decimal] | None = None,
    ) -> None:
        symbols = [instrument.symbol for instrument in instruments]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"synthetic market: duplicate symbols in {symbols}")
        self.config: FeedConfig = config
        starts = start_prices or {}
        self._walks: list[_Walk] = [
            _Walk(instrument, config, starts.get(instrument.symbol)) for instrument in instruments
        ]

    @property
    def tick_interval_ms(self) -> int:
        """The pace the pump should call ``next_ticks`` at."""
        return self.config.tick_interval_ms

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(walk.instrument.symbol for walk in self._walks)

    def next_ticks(self, now_ns: int) -> list[Tick]:
        """Advance every instrument one step and return one tick each, stamped ``now_ns``."""
        return [walk.step(now_ns) for walk in self._walks]

    def snapshot(self) -> dict[str, Any]:
        """Walk state per instrument, for debug dumps."""
        return {
            walk.instrument.symbol: {
                "steps": walk.steps,
                "mid": str(Decimal(walk.mid) * walk.instrument.tick_size),
                "last": str(Decimal(walk.last) * walk.instrument.tick_size),
                "drift_ticks_per_step": round(walk.drift, 4),
                "regime_steps_left": walk.regime_left,
                "blowouts": walk.blowouts,
                "band_hits": walk.band_hits,
            }
            for walk in self._walks
        }
