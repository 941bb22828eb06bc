"""The shipped paper profiles: both load, and the default one's market has no jumps all day.

configs/paper.yaml is ordinary conditions (it must trade a whole session without tripping its
own limits); configs/paper-stress.yaml is the same engine plus band jumps and spread blowouts.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from adapters.feeds import SyntheticMarket
from domain.clock import NANOS_PER_SECOND
from domain.config import EngineConfig
from domain.instruments import Instrument
from launcher.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = CONFIGS / "paper.yaml"
STRESS = CONFIGS / "paper-stress.yaml"
SESSION_S = 6 * 3600 + 15 * 60  # 09:15-15:30 IST
STRESS_KNOBS = {"spread_blowout_probability", "band_hit_probability"}


def load(path: Path) -> EngineConfig:
    # No environment and no .env: the profile as shipped.
    return load_config(path, environ={}, dotenv_path=None)


def instruments_of(config: EngineConfig) -> list[Instrument]:
    return [Instrument(**item.model_dump()) for item in config.instruments]


class TestShippedProfiles:
    @pytest.mark.parametrize("path", [PAPER, STRESS], ids=["paper", "paper-stress"])
    def test_loads_as_a_paper_engine_on_the_synthetic_market(self, path: Path) -> None:
        config = load(path)

        assert config.mode.value == "PAPER"
        assert config.feed.kind == "synthetic"
        assert [s.kind for s in config.strategies] == ["orb", "ema_pullback"]

    def test_the_default_profile_has_no_band_jumps_and_no_spread_blowouts(self) -> None:
        feed = load(PAPER).feed

        assert feed.band_hit_probability == 0
        assert feed.spread_blowout_probability == 0

    def test_the_stress_profile_is_the_default_plus_the_stress_on_its_own_storage(self) -> None:
        paper, stress = load(PAPER), load(STRESS)

        assert stress.feed.band_hit_probability > 0
        assert stress.feed.spread_blowout_probability > 0
        differing_feed = {
            key
            for key, value in stress.feed.model_dump().items()
            if paper.feed.model_dump()[key] != value
        }
        assert differing_feed == STRESS_KNOBS
        for section in ("instruments", "strategies", "risk", "paper_broker", "mode"):
            assert getattr(stress, section) == getattr(paper, section), section
        # A stress HALT is stored: it must never be found by the default profile.
        assert stress.database_url != paper.database_url
        assert stress.instance_id != paper.instance_id
        assert stress.logs_dir != paper.logs_dir
        assert stress.http.port != paper.http.port


def largest_moves(config: EngineConfig, steps: int) -> dict[str, tuple[int, int, int]]:
    """Per instrument: the largest one-step move of the touch, the widest spread (both in
    ticks) and how many ticks sat on a band edge."""
    instruments = instruments_of(config)
    by_symbol = {instrument.symbol: instrument for instrument in instruments}
    market = SyntheticMarket(instruments, config.feed)
    step_ns = config.feed.tick_interval_ms * 1_000_000
    previous: dict[str, tuple[int, int]] = {}
    result = {symbol: (0, 0, 0) for symbol in by_symbol}
    now_ns = 1_767_584_700 * NANOS_PER_SECOND
    bands = {
        symbol: tuple(int(edge / i.tick_size) for edge in i.band())
        for symbol, i in by_symbol.items()
    }
    for _ in range(steps):
        now_ns += step_ns
        for tick in market.next_ticks(now_ns):
            size = by_symbol[tick.instrument].tick_size
            bid, ask = int(tick.bid / size), int(tick.ask / size)
            move, spread, on_edge = result[tick.instrument]
            if tick.instrument in previous:
                last_bid, last_ask = previous[tick.instrument]
                move = max(move, abs(bid - last_bid), abs(ask - last_ask))
            lower, upper = bands[tick.instrument]
            on_edge += bid == lower or ask == upper
            result[tick.instrument] = (move, max(spread, ask - bid), on_edge)
            previous[tick.instrument] = (bid, ask)
    return result


def one_step_sigma_ticks(config: EngineConfig, instrument: Instrument) -> Decimal:
    bps = Decimal(str(config.feed.volatility_bps))
    return bps / 10_000 * instrument.reference_price / instrument.tick_size


class TestTheDefaultMarketHasNoGapsAllDay:
    def test_no_step_of_a_whole_session_jumps_the_touch_past_a_stop(self) -> None:
        # What let a stop fill 10 % away: a jump to the band edge in one step (or a blowout
        # that drops the bid dozens of ticks). Over a whole session of the shipped profile's
        # market, no step may move the touch more than ordinary noise: 6 sigma of one step.
        config = load(PAPER)
        steps = SESSION_S * 1000 // config.feed.tick_interval_ms

        moves = largest_moves(config, steps)

        for instrument in instruments_of(config):
            move, spread, on_edge = moves[instrument.symbol]
            limit = 6 * one_step_sigma_ticks(config, instrument) + 3
            assert move <= limit, (instrument.symbol, move, limit)
            assert spread <= 3, (instrument.symbol, spread)
            assert on_edge == 0, instrument.symbol

    def test_the_stress_profile_does_jump_within_an_hour(self) -> None:
        # The same check tells the two profiles apart: the stress market gaps.
        config = load(STRESS)
        steps = 3600 * 1000 // config.feed.tick_interval_ms

        moves = largest_moves(config, steps)

        assert any(on_edge > 0 for _, _, on_edge in moves.values())
        assert any(
            spread > instrument.max_spread_ticks
            for instrument in instruments_of(config)
            for _, spread, _ in [moves[instrument.symbol]]
        )
