"""EngineMetrics: the runbooks' names, present from start-up, on a registry per engine."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import EngineMetrics
from domain.enums import DenialCode, Mode, PauseCause, TradingState

# Every family the brief names, as Prometheus renders it (counters gain _total).
EXPECTED_FAMILIES = {
    "trader_is_leader": "gauge",
    "trader_marketdata_heartbeat_seconds": "gauge",
    "trader_order_stream_heartbeat_seconds": "gauge",
    "trader_positions_open": "gauge",
    "trader_portfolio_heat_rupees": "gauge",
    "trader_order_latency_ms": "histogram",
    "trader_retries": "counter",
    "trader_kill_switch": "counter",
    "trader_risk_blocks": "counter",
    "trader_daily_pnl_rupees": "gauge",
    "trader_unrealized_pnl_rupees": "gauge",
    "trader_queue_depth": "gauge",
    "trader_rate_limit_wait_ms": "histogram",
    "trader_tick_to_decision_ms": "histogram",
    "trader_actor_restarts": "counter",
    "trader_ticks": "counter",
    "trader_ticks_rejected": "counter",
    "trader_ticks_conflated": "counter",
    "trader_orders": "counter",
    "trader_trading_state": "gauge",
    "trader_trading_paused": "gauge",
    "trader_armed": "gauge",
    "trader_mode": "gauge",
    "trader_config_info": "gauge",  # an Info renders as a gauge in format 0.0.4
    "trader_flatten_duration_ms": "histogram",
}


@pytest.fixture
def metrics() -> EngineMetrics:
    return EngineMetrics(
        instance_id="vigil-1",
        strategies=["orb_1", "ema_pullback_1"],
        feeds=["synthetic"],
        queues=["broker_rate_limit"],
    )


def _samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def _value(metrics: EngineMetrics, name: str, **labels: str) -> float:
    return _samples(metrics)[(name, tuple(sorted(labels.items())))]


class TestStartUp:
    def test_every_named_family_is_rendered_with_its_type(self, metrics: EngineMetrics) -> None:
        families = {
            family.name: family.type
            for family in text_string_to_metric_families(metrics.render().decode())
        }

        for name, kind in EXPECTED_FAMILIES.items():
            assert families.get(name) == kind, name

    def test_positions_open_is_zero_for_each_strategy_at_once(self, metrics: EngineMetrics) -> None:
        text = metrics.render().decode()

        assert 'trader_positions_open{strategy="orb_1"} 0.0' in text
        assert 'trader_positions_open{strategy="ema_pullback_1"} 0.0' in text

    def test_leader_heat_and_pnl_gauges_start_at_zero(self, metrics: EngineMetrics) -> None:
        assert _value(metrics, "trader_is_leader", instance_id="vigil-1") == 0
        assert _value(metrics, "trader_portfolio_heat_rupees") == 0
        assert _value(metrics, "trader_daily_pnl_rupees") == 0
        assert _value(metrics, "trader_armed") == 0
        assert _value(metrics, "trader_queue_depth", queue="broker_rate_limit") == 0

    def test_heartbeats_start_at_infinity_so_a_silent_feed_is_not_fresh(
        self, metrics: EngineMetrics
    ) -> None:
        assert _value(metrics, "trader_marketdata_heartbeat_seconds", bucket="synthetic") == (
            math.inf
        )
        assert _value(metrics, "trader_order_stream_heartbeat_seconds") == math.inf

    def test_state_labels_exist_for_every_state_mode_and_pause_cause(
        self, metrics: EngineMetrics
    ) -> None:
        for state in TradingState:
            assert _value(metrics, "trader_trading_state", state=state.value) == 0
        for mode in Mode:
            assert _value(metrics, "trader_mode", mode=mode.value) == 0
        for cause in PauseCause:
            assert _value(metrics, "trader_trading_paused", cause=cause.value) == 0

    def test_risk_blocks_start_at_zero_for_every_denial_code(self, metrics: EngineMetrics) -> None:
        for code in DenialCode:
            assert _value(metrics, "trader_risk_blocks_total", reason=code.value) == 0

    def test_counters_render_with_a_total_suffix(self, metrics: EngineMetrics) -> None:
        text = metrics.render().decode()

        assert 'trader_retries_total{type="rate_limit"} 0.0' in text
        assert 'trader_retries_total{type="token_refresh"} 0.0' in text
        assert 'trader_ticks_total{feed="synthetic"} 0.0' in text
        assert "# TYPE trader_kill_switch_total counter" in text
        assert "_total_total" not in text

    def test_config_sha_is_shown_as_info(self, metrics: EngineMetrics) -> None:
        metrics.set_config_sha("9f2c1e")

        assert _value(metrics, "trader_config_info", config_sha="9f2c1e") == 1


class TestUpdates:
    def test_counter_increments_render_under_the_total_name(self, metrics: EngineMetrics) -> None:
        metrics.retries_total.labels(type="rate_limit").inc()
        metrics.kill_switch_total.labels(reason="DAILY_LOSS_LIMIT").inc()
        metrics.risk_blocks_total.labels(reason="HEAT_CAP").inc(2)

        text = metrics.render().decode()

        assert 'trader_retries_total{type="rate_limit"} 1.0' in text
        assert 'trader_kill_switch_total{reason="DAILY_LOSS_LIMIT"} 1.0' in text
        assert 'trader_risk_blocks_total{reason="HEAT_CAP"} 2.0' in text

    def test_order_latency_histogram_has_the_runbook_800_ms_bucket(
        self, metrics: EngineMetrics
    ) -> None:
        metrics.order_latency_ms.observe(650)

        assert _value(metrics, "trader_order_latency_ms_bucket", le="500.0") == 0
        assert _value(metrics, "trader_order_latency_ms_bucket", le="800.0") == 1
        assert _value(metrics, "trader_order_latency_ms_count") == 1

    def test_trading_state_is_one_hot(self, metrics: EngineMetrics) -> None:
        metrics.set_trading_state(TradingState.ACTIVE)
        metrics.set_trading_state(TradingState.HALTED)

        assert _value(metrics, "trader_trading_state", state="HALTED") == 1
        assert _value(metrics, "trader_trading_state", state="ACTIVE") == 0
        assert _value(metrics, "trader_trading_state", state="REDUCING") == 0

    def test_mode_is_one_hot(self, metrics: EngineMetrics) -> None:
        metrics.set_mode(Mode.LIVE)

        assert _value(metrics, "trader_mode", mode="LIVE") == 1
        assert _value(metrics, "trader_mode", mode="PAPER") == 0

    def test_pause_causes_set_exactly_the_given_ones(self, metrics: EngineMetrics) -> None:
        metrics.set_pause_causes([PauseCause.OPERATOR, PauseCause.MARKETDATA_STALE])
        metrics.set_pause_causes([PauseCause.MARKETDATA_STALE])

        assert _value(metrics, "trader_trading_paused", cause="MARKETDATA_STALE") == 1
        assert _value(metrics, "trader_trading_paused", cause="OPERATOR") == 0

    def test_leader_and_armed_setters(self, metrics: EngineMetrics) -> None:
        metrics.set_leader(True)
        metrics.set_armed(True)

        assert _value(metrics, "trader_is_leader", instance_id="vigil-1") == 1
        assert _value(metrics, "trader_armed") == 1

    def test_positions_open_zeroes_strategies_left_out(self, metrics: EngineMetrics) -> None:
        metrics.set_positions_open({"orb_1": 2, "ema_pullback_1": 1})
        metrics.set_positions_open({"orb_1": 1})

        assert _value(metrics, "trader_positions_open", strategy="orb_1") == 1
        assert _value(metrics, "trader_positions_open", strategy="ema_pullback_1") == 0

    def test_rupee_gauges_take_decimals(self, metrics: EngineMetrics) -> None:
        metrics.set_rupees(
            heat=Decimal("2502.50"), daily_pnl=Decimal("-120.25"), unrealized_pnl=Decimal("5")
        )

        assert _value(metrics, "trader_portfolio_heat_rupees") == 2502.5
        assert _value(metrics, "trader_daily_pnl_rupees") == -120.25
        assert _value(metrics, "trader_unrealized_pnl_rupees") == 5


class TestIsolation:
    def test_two_engines_in_one_process_have_separate_registries(self) -> None:
        first = EngineMetrics(instance_id="a", strategies=["s"], feeds=["f"])
        second = EngineMetrics(instance_id="b", strategies=["s"], feeds=["f"])

        first.retries_total.labels(type="rate_limit").inc()

        assert 'trader_retries_total{type="rate_limit"} 1.0' in first.render().decode()
        assert 'trader_retries_total{type="rate_limit"} 0.0' in second.render().decode()
        assert 'instance_id="a"' not in second.render().decode()
