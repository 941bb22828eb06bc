"""Strategies: crafted bar sequences, plan construction, params, and the default paper profile."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.feeds.synthetic import SyntheticMarket
from domain.clock import NANOS_PER_SECOND
from domain.config import EngineConfig, RiskConfig, StrategyConfig
from domain.enums import OrderType, Side
from domain.instruments import Instrument
from domain.messages.market import Bar, Tick
from domain.messages.orders import TradePlan
from domain.plans import plan_client_id
from domain.strategies import (
    EmaPullbackStrategy,
    OrbStrategy,
    Strategy,
    build_strategy,
)

D = Decimal
T0 = 1_767_225_600 * NANOS_PER_SECOND  # 2026-01-01T00:00:00Z, aligned to every window here
INTERVAL_S = 5
INTERVAL_NS = INTERVAL_S * NANOS_PER_SECOND
PAPER_YAML = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"

RELIANCE = Instrument(symbol="RELIANCE", lot_size=1, tick_size=D("0.05"), reference_price=D("100"))
RISK = RiskConfig(capital_rupees=D("1000000"), per_trade_risk_pct=D("0.1"), max_order_size=500)


def make_bar(
    index: int,
    *,
    open: str,
    high: str,
    low: str,
    close: str,
    instrument: str = "RELIANCE",
) -> Bar:
    ts_open = T0 + index * INTERVAL_NS
    return Bar(
        instrument=instrument,
        interval_s=INTERVAL_S,
        open=D(open),
        high=D(high),
        low=D(low),
        close=D(close),
        tick_count=10,
        ts_open=ts_open,
        ts_close=ts_open + INTERVAL_NS,
    )


def make_orb(name: str = "orb_test", **params: float) -> OrbStrategy:
    merged = {"range_bars": 2, "window_bars": 6, "atr_period": 2, **params}
    return OrbStrategy(
        name=name,
        instruments={"RELIANCE": RELIANCE},
        bar_interval_s=INTERVAL_S,
        params=merged,
        risk=RISK,
    )


def make_ema(name: str = "ema_test", **params: float) -> EmaPullbackStrategy:
    merged = {
        "fast_period": 2,
        "slow_period": 4,
        "atr_period": 2,
        "stop_atr": 1,
        "target_atr": 2,
        "cooldown_bars": 2,
        **params,
    }
    return EmaPullbackStrategy(
        name=name,
        instruments={"RELIANCE": RELIANCE},
        bar_interval_s=INTERVAL_S,
        params=merged,
        risk=RISK,
    )


def feed(strategy: Strategy, bars: list[Bar]) -> list[list[TradePlan]]:
    return [strategy.on_bar(bar) for bar in bars]


ORB_OPENING = [
    make_bar(0, open="100", high="101", low="99", close="100"),
    make_bar(1, open="100", high="102", low="99.5", close="101"),
    make_bar(2, open="101", high="101.8", low="101", close="101.5"),
]
ORB_BREAKOUT_UP = make_bar(3, open="101.5", high="103", low="101", close="102.5")


class TestOpeningRangeBreakout:
    def test_buys_the_first_close_above_the_opening_range_with_atr_stop_and_target(
        self,
    ) -> None:
        strategy = make_orb()

        assert feed(strategy, ORB_OPENING) == [[], [], []]
        plans = strategy.on_bar(ORB_BREAKOUT_UP)

        # ATR(2): TR 2, 2.5 -> 2.25; TR 0.8 -> 1.525; TR 2 -> 1.7625.
        # stop 102.5 - 1.7625 = 100.7375 -> 100.75; target 102.5 + 3.525 -> 106.05.
        # quantity: 1000 / 1.75 = 571 units, capped at max_order_size 500.
        assert len(plans) == 1
        plan = plans[0]
        assert plan.side is Side.BUY
        assert plan.entry_type is OrderType.MARKET
        assert plan.entry_price == D("102.50")
        assert plan.stop_price == D("100.75")
        assert plan.target_price == D("106.05")
        assert plan.quantity == 500
        assert plan.strategy == "orb_test"
        assert plan.instrument == "RELIANCE"
        assert plan.signal_ts == ORB_BREAKOUT_UP.ts_close
        assert plan.ts_init == ORB_BREAKOUT_UP.ts_close
        assert plan.plan_client_id == plan_client_id(
            strategy="orb_test",
            instrument="RELIANCE",
            side=Side.BUY,
            entry_price=D("102.50"),
            stop_price=D("100.75"),
            target_price=D("106.05"),
            quantity=500,
            signal_ts=ORB_BREAKOUT_UP.ts_close,
        )

    def test_signals_each_side_at_most_once_per_window_and_resets_in_the_next(self) -> None:
        strategy = make_orb()
        feed(strategy, [*ORB_OPENING, ORB_BREAKOUT_UP])

        again_above = strategy.on_bar(make_bar(4, open="102.5", high="104", low="102", close="103"))
        below = strategy.on_bar(make_bar(5, open="100", high="100", low="97", close="98"))
        next_window = feed(
            strategy,
            [
                make_bar(6, open="98", high="99", low="97", close="98"),
                make_bar(7, open="98", high="99", low="97.5", close="98.5"),
                make_bar(8, open="98.5", high="100", low="98.5", close="99.5"),
            ],
        )

        assert again_above == []
        assert [plan.side for plan in below] == [Side.SELL]
        assert below[0].stop_price > below[0].entry_price > below[0].target_price
        assert [[plan.side for plan in plans] for plans in next_window] == [[], [], [Side.BUY]]

    def test_gives_no_signal_in_a_window_it_joined_after_the_first_bar(self) -> None:
        strategy = make_orb()
        late_start = [
            make_bar(1, open="100", high="101", low="99", close="100"),
            make_bar(2, open="100", high="101", low="99", close="100"),
            make_bar(3, open="100", high="101", low="99", close="100"),
            make_bar(4, open="100", high="110", low="100", close="109"),
        ]

        assert feed(strategy, late_start) == [[], [], [], []]

    def test_on_tick_builds_bars_and_stamps_the_plan_with_the_closing_ticks_ts_init(
        self,
    ) -> None:
        strategy = make_orb()

        def tick(seconds: float, price: str) -> Tick:
            ts = T0 + int(seconds * NANOS_PER_SECOND)
            return Tick(
                instrument="RELIANCE",
                bid=D(price) - D("0.05"),
                ask=D(price) + D("0.05"),
                last=D(price),
                ts_event=ts,
                ts_init=ts + 1_000_000,
            )

        ticks = [tick(0, "100"), tick(1, "101"), tick(5, "99"), tick(6, "100"), tick(10, "103")]
        assert [strategy.on_tick(t) for t in ticks] == [[], [], [], [], []]
        closing = tick(15, "103")
        plans = strategy.on_tick(closing)

        # Bars: [100..101] c101, [99..100] c100, [103] c103 > range high 101.
        # ATR(2): TR 1, 2 -> 1.5; TR max(0, |103-100|, |103-100|) = 3 -> 2.25.
        assert len(plans) == 1
        assert plans[0].side is Side.BUY
        assert plans[0].entry_price == D("103.00")
        assert plans[0].stop_price == D("100.75")
        assert plans[0].signal_ts == T0 + 15 * NANOS_PER_SECOND
        assert plans[0].ts_init == closing.ts_init

    def test_ignores_ticks_and_bars_of_instruments_it_does_not_trade(self) -> None:
        strategy = make_orb()
        other = make_bar(0, open="1", high="2", low="1", close="2", instrument="INFY")

        assert strategy.on_bar(other) == []

    def test_skips_a_signal_whose_quantity_rounds_to_zero(self) -> None:
        big_lot = Instrument(symbol="RELIANCE", lot_size=1000, tick_size=D("0.05"))
        strategy = OrbStrategy(
            name="orb_big_lot",
            instruments={"RELIANCE": big_lot},
            bar_interval_s=INTERVAL_S,
            params={"range_bars": 2, "window_bars": 6, "atr_period": 2},
            risk=RISK,
        )

        plans = feed(strategy, [*ORB_OPENING, ORB_BREAKOUT_UP])

        assert plans == [[], [], [], []]
        assert strategy.snapshot()["signals_skipped"] == 1

    def test_refuses_a_range_as_long_as_the_window(self) -> None:
        with pytest.raises(ValueError, match="range_bars"):
            make_orb(range_bars=6, window_bars=6)


def uptrend_bars() -> list[Bar]:
    # o = l = c - 0.5, h = c + 0.5 on closes 100..104.
    half = D("0.5")
    return [
        make_bar(i, open=str(D(c) - half), high=str(D(c) + half), low=str(D(c) - half), close=c)
        for i, c in enumerate(["100", "101", "102", "103", "104"])
    ]


def downtrend_bars() -> list[Bar]:
    # o = h = c + 0.5, l = c - 0.5 on closes 200..196.
    half = D("0.5")
    return [
        make_bar(i, open=str(D(c) + half), high=str(D(c) + half), low=str(D(c) - half), close=c)
        for i, c in enumerate(["200", "199", "198", "197", "196"])
    ]


def pullback_to(strategy: EmaPullbackStrategy, index: int) -> Bar:
    """An up bar whose low touches the current fast EMA and closes above it."""
    fast = D(strategy.snapshot()["instruments"]["RELIANCE"]["fast_ema"])
    return make_bar(
        index,
        open=str(fast + D("0.1")),
        high=str(fast + D("0.7")),
        low=str(fast - D("0.2")),
        close=str(fast + D("0.5")),
    )


class TestEmaPullback:
    def test_buys_a_pullback_to_the_fast_ema_that_closes_back_up_in_an_uptrend(self) -> None:
        strategy = make_ema()
        # fast EMA(2) after closes 100..104: 100.5, 101.5, 102.5, 103.5; slow EMA(4): 101.5,
        # 102.5. The bar after them touches 103.5 and closes above it.
        assert feed(strategy, uptrend_bars()) == [[]] * 5

        plans = strategy.on_bar(make_bar(5, open="103.6", high="104.2", low="103.3", close="104"))

        # ATR(2): TR 1, 1.5 -> 1.25; 1.5 -> 1.375; 1.5 -> 1.4375; 1.5 -> 1.46875;
        # TR max(0.9, 0.2, 0.7) = 0.9 -> 1.184375. Stop 104 - 1.184375 -> 102.80,
        # target 104 + 2.36875 -> 106.35, quantity 1000 / 1.20 = 833 -> capped at 500.
        assert len(plans) == 1
        plan = plans[0]
        assert plan.side is Side.BUY
        assert plan.entry_price == D("104.00")
        assert plan.stop_price == D("102.80")
        assert plan.target_price == D("106.35")
        assert plan.quantity == 500
        assert plan.signal_ts == T0 + 6 * INTERVAL_NS

    def test_sells_a_pullback_up_to_the_fast_ema_that_closes_back_down_in_a_downtrend(
        self,
    ) -> None:
        strategy = make_ema()
        feed(strategy, downtrend_bars())

        plans = strategy.on_bar(make_bar(5, open="196.4", high="196.7", low="195.8", close="196"))

        assert [plan.side for plan in plans] == [Side.SELL]
        assert plans[0].stop_price > plans[0].entry_price > plans[0].target_price

    def test_ignores_a_trend_bar_that_never_touches_the_fast_ema(self) -> None:
        strategy = make_ema()
        feed(strategy, uptrend_bars())

        plans = strategy.on_bar(make_bar(5, open="104.5", high="106", low="104.4", close="105.5"))

        assert plans == []

    def test_ignores_a_touch_that_closes_as_a_down_bar(self) -> None:
        strategy = make_ema()
        feed(strategy, uptrend_bars())

        plans = strategy.on_bar(make_bar(5, open="104.4", high="104.5", low="103.3", close="104"))

        assert plans == []

    def test_sits_out_cooldown_bars_after_a_signal(self) -> None:
        strategy = make_ema(cooldown_bars=2)
        feed(strategy, uptrend_bars())
        first = strategy.on_bar(pullback_to(strategy, 5))
        assert len(first) == 1

        during_cooldown = [strategy.on_bar(pullback_to(strategy, index)) for index in (6, 7)]
        after_cooldown = strategy.on_bar(pullback_to(strategy, 8))

        assert during_cooldown == [[], []]
        assert [plan.side for plan in after_cooldown] == [Side.BUY]

    def test_refuses_a_fast_period_not_below_the_slow_period(self) -> None:
        with pytest.raises(ValueError, match="fast_period"):
            make_ema(fast_period=5, slow_period=5)


class TestBuildStrategy:
    def test_builds_each_kind_from_its_config(self) -> None:
        instruments = {"RELIANCE": RELIANCE}
        orb = build_strategy(
            StrategyConfig(name="o", kind="orb", instruments=("RELIANCE",)), instruments, RISK
        )
        ema = build_strategy(
            StrategyConfig(name="e", kind="ema_pullback", instruments=("RELIANCE",)),
            instruments,
            RISK,
        )

        assert isinstance(orb, OrbStrategy)
        assert isinstance(ema, EmaPullbackStrategy)
        assert orb.name == "o"

    def test_refuses_an_unknown_param_naming_it_and_the_allowed_keys(self) -> None:
        config = StrategyConfig(
            name="o", kind="orb", instruments=("RELIANCE",), params={"rnage_bars": 3}
        )

        with pytest.raises(ValueError, match=r"'rnage_bars'.*allowed params are .*'range_bars'"):
            build_strategy(config, {"RELIANCE": RELIANCE}, RISK)

    def test_refuses_a_fractional_bar_count(self) -> None:
        config = StrategyConfig(
            name="e", kind="ema_pullback", instruments=("RELIANCE",), params={"fast_period": 2.5}
        )

        with pytest.raises(ValueError, match=r"'fast_period' was 2\.5, must be a whole number"):
            build_strategy(config, {"RELIANCE": RELIANCE}, RISK)

    def test_refuses_an_instrument_it_was_not_given(self) -> None:
        config = StrategyConfig(name="o", kind="orb", instruments=("INFY",))

        with pytest.raises(ValueError, match="INFY"):
            build_strategy(config, {"RELIANCE": RELIANCE}, RISK)

    def test_snapshot_is_json_serialisable(self) -> None:
        strategy = make_ema()
        feed(strategy, uptrend_bars())

        dumped = json.loads(json.dumps(strategy.snapshot()))

        assert dumped["kind"] == "ema_pullback"
        assert dumped["instruments"]["RELIANCE"]["fast_ema"] is not None


def load_paper_config() -> EngineConfig:
    with PAPER_YAML.open() as handle:
        return EngineConfig.model_validate(yaml.safe_load(handle))


def run_paper_market(config: EngineConfig, calls: int) -> list[TradePlan]:
    instruments = {i.symbol: Instrument(**i.model_dump()) for i in config.instruments}
    market = SyntheticMarket(list(instruments.values()), config.feed)
    strategies = [build_strategy(s, instruments, config.risk) for s in config.strategies]
    now_ns = T0
    plans: list[TradePlan] = []
    for _ in range(calls):
        for tick in market.next_ticks(now_ns):
            for strategy in strategies:
                plans.extend(strategy.on_tick(tick))
        now_ns += config.feed.tick_interval_ms * 1_000_000
    return plans


class TestDefaultPaperProfile:
    def test_paper_yaml_loads_and_describes_the_default_engine(self) -> None:
        config = load_paper_config()

        assert config.instance_id == "vigil-paper"
        assert config.mode.value == "PAPER"
        assert config.auto_arm_paper is True
        assert config.feed.kind == "synthetic"
        assert config.feed.tick_interval_ms == 250
        assert {i.symbol for i in config.instruments} == {
            "NIFTY-FUT",
            "BANKNIFTY-FUT",
            "RELIANCE",
            "INFY",
        }
        assert [(s.name, s.kind) for s in config.strategies] == [
            ("orb_1", "orb"),
            ("ema_1", "ema_pullback"),
        ]
        assert config.http.port == 8000

    def test_five_minutes_of_synthetic_market_produce_several_valid_plans_per_minute(
        self,
    ) -> None:
        config = load_paper_config()
        instruments = {i.symbol: Instrument(**i.model_dump()) for i in config.instruments}

        plans = run_paper_market(config, calls=1200)  # 1200 x 250 ms = 5 minutes

        per_strategy = Counter(plan.strategy for plan in plans)
        assert len(plans) >= 3 * 5, f"only {len(plans)} plans in 5 minutes: {per_strategy}"
        assert per_strategy["orb_1"] > 0
        assert per_strategy["ema_1"] > 0
        for plan in plans:
            _assert_plan_is_well_formed(plan, instruments[plan.instrument], config)

    def test_the_same_market_gives_the_same_plan_ids(self) -> None:
        config = load_paper_config()

        first = [plan.plan_client_id for plan in run_paper_market(config, calls=600)]
        second = [plan.plan_client_id for plan in run_paper_market(config, calls=600)]

        assert first
        assert first == second
        assert len(set(first)) == len(first)


def _assert_plan_is_well_formed(
    plan: TradePlan, instrument: Instrument, config: EngineConfig
) -> None:
    detail: Any = plan
    for price in (plan.entry_price, plan.stop_price, plan.target_price):
        assert price % instrument.tick_size == 0, detail
    sign = plan.side.sign
    assert (plan.entry_price - plan.stop_price) * sign > 0, detail
    assert (plan.target_price - plan.entry_price) * sign > 0, detail
    assert plan.quantity > 0, detail
    assert plan.quantity % instrument.lot_size == 0, detail
    assert plan.quantity <= config.risk.max_order_size, detail
    risk_amount = plan.quantity * abs(plan.entry_price - plan.stop_price)
    budget = config.risk.capital_rupees * config.risk.per_trade_risk_pct / 100
    assert risk_amount <= budget, detail
