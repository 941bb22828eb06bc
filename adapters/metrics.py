"""Prometheus metrics of one engine, on a registry of its own.

``EngineMetrics`` owns a ``CollectorRegistry`` (several engines may live in one test process,
so nothing goes to the global registry) and the metric objects on it, named as the runbooks
name them (prefix ``trader_``). Actors update the attributes directly; prometheus_client
metrics are thread-safe. ``render`` produces the text exposition format 0.0.4 for
``GET /metrics``.

Every labelled gauge whose label values are known at start-up is created at start-up, so
``curl /metrics | grep trader_positions_open`` shows ``trader_positions_open{strategy="orb_1"}
0.0`` before anything happens. Heartbeat ages start at ``+Inf`` (never heard from), not 0, so a
feed that never connected cannot pass the runbook's "< 5 s" check.

Counters are named without ``_total``: prometheus_client appends it when rendering
(``retries_total`` renders as ``trader_retries_total``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from domain.enums import DenialCode, Mode, PauseCause, TradingState, TripwireRule
from domain.schedule import Phase

# The ``*_created`` series double the exposition for no operator value.
disable_created_metrics()

__all__ = [
    "BROKER_QUEUE_PRIORITIES",
    "FLATTEN_DURATION_BUCKETS_MS",
    "ORDER_LATENCY_BUCKETS_MS",
    "RATE_LIMIT_WAIT_BUCKETS_MS",
    "TICK_TO_DECISION_BUCKETS_MS",
    "EngineMetrics",
]

# 800 ms is the runbook's "p95 > 800 ms for 2 m -> pause and flatten" line; 500 ms its target.
ORDER_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 100, 250, 500, 800, 1000, 2500, 5000,
)  # fmt: skip
RATE_LIMIT_WAIT_BUCKETS_MS: tuple[float, ...] = (
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
)  # fmt: skip
# A pykka hop costs tens of microseconds here; decisions should land well under 10 ms.
TICK_TO_DECISION_BUCKETS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000,
)  # fmt: skip
# The burn-in checklist wants flatten p95 <= 2 s.
FLATTEN_DURATION_BUCKETS_MS: tuple[float, ...] = (
    50, 100, 250, 500, 1000, 2000, 5000, 10000,
)  # fmt: skip

# The retry types the runbook asks to watch ("flat, esp. token_refresh, rate_limit").
_RUNBOOK_RETRY_TYPES = ("token_refresh", "rate_limit")
# The broker gateway's priorities (``actors.broker_gateway.BrokerPriority``), lowest first.
BROKER_QUEUE_PRIORITIES = ("close", "cancel", "protective", "entry")


class EngineMetrics:
    """The ``trader_*`` metrics of one engine instance.

    Args:
        instance_id: this engine's id (label of ``trader_is_leader``).
        strategies: strategy instance names (``trader_positions_open`` starts at 0 for each).
        feeds: feed names (heartbeat ages start at ``+Inf``, ``trader_ticks_total`` at 0).
        queues: queue names whose ``trader_queue_depth`` starts at 0.
        config_sha: shown by ``trader_config_info`` until ``set_config_sha`` is called.
    """

    def __init__(
        self,
        *,
        instance_id: str,
        strategies: Sequence[str],
        feeds: Sequence[str],
        queues: Sequence[str] = (),
        config_sha: str = "unknown",
    ) -> None:
        self.instance_id = instance_id
        self._strategies: set[str] = set(strategies)
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry

        # -- leadership, state, config ----------------------------------------------------
        self.is_leader = Gauge(
            "trader_is_leader",
            "1 while this instance holds the leader lease",
            ["instance_id"],
            registry=registry,
        )
        self.trading_state = Gauge(
            "trader_trading_state",
            "1 for the current trading state (ACTIVE, REDUCING, HALTED), 0 for the others",
            ["state"],
            registry=registry,
        )
        self.trading_paused = Gauge(
            "trader_trading_paused",
            "1 while entries are paused for this cause",
            ["cause"],
            registry=registry,
        )
        self.armed = Gauge("trader_armed", "1 while orders may flow", registry=registry)
        self.mode = Gauge(
            "trader_mode", "1 for the current mode (PAPER, DEMO, LIVE)", ["mode"], registry=registry
        )
        self.config_info = Info(
            "trader_config", "Hash of the effective config, secrets removed", registry=registry
        )
        self.kill_switch_total = Counter(
            "trader_kill_switch",
            "Kill switch trips, by reason code",
            ["reason"],
            registry=registry,
        )
        # Exported at 0 from the start, so that increase() sees a first trip of the reasons the
        # runbook's alerts name (a series created by its first increment starts at 1).
        for reason in ("DAILY_LOSS_LIMIT", "HEAT_CAP", "MANUAL", "RESTART_INTENSITY"):
            self.kill_switch_total.labels(reason=reason)
        # -- the LIVE gates (actors.kill_switch_actor, actors.live_gate_state) --------------
        self.live_armed = Gauge(
            "trader_live_armed", "1 while armed in LIVE mode", registry=registry
        )
        self.live_confirmation_seconds_left = Gauge(
            "trader_live_confirmation_seconds_left",
            "Seconds until the LIVE confirmation expires (0 when there is none)",
            registry=registry,
        )
        self.circuit_breaker_tripped = Gauge(
            "trader_circuit_breaker_tripped",
            "1 while the broker-error circuit breaker is tripped",
            registry=registry,
        )
        self.live_gate_blockers = Gauge(
            "trader_live_gate_blockers",
            "How many LIVE gates block arming now",
            registry=registry,
        )
        self.live_entries_stopped = Gauge(
            "trader_live_entries_stopped",
            "1 while armed in LIVE with entries stopped by a lapsed gate (exits go on)",
            registry=registry,
        )
        self.audit_events_total = Counter(
            "trader_audit_events",
            "Audit trail rows, by action and outcome",
            ["action", "outcome"],
            registry=registry,
        )
        self.tripwire_total = Counter(
            "trader_tripwire",
            "Tripwire episodes fired by the watchdog, by rule",
            ["rule"],
            registry=registry,
        )
        self.actor_restarts_total = Counter(
            "trader_actor_restarts",
            "Supervisor restarts of a crashed actor",
            ["actor"],
            registry=registry,
        )

        # -- heartbeats and market data ---------------------------------------------------
        self.marketdata_heartbeat_seconds = Gauge(
            "trader_marketdata_heartbeat_seconds",
            "Seconds since the feed's last tick or heartbeat (+Inf: never)",
            ["bucket"],
            registry=registry,
        )
        self.order_stream_heartbeat_seconds = Gauge(
            "trader_order_stream_heartbeat_seconds",
            "Seconds since the broker order stream was last heard from (+Inf: never)",
            registry=registry,
        )
        self.ticks_total = Counter(
            "trader_ticks", "Ticks accepted from a feed", ["feed"], registry=registry
        )
        self.ticks_rejected_total = Counter(
            "trader_ticks_rejected",
            "Ticks dropped by normalisation, by reason",
            ["feed", "reason"],
            registry=registry,
        )
        self.ticks_conflated_total = Counter(
            "trader_ticks_conflated",
            "Ticks replaced by a newer one before a slow consumer saw them",
            ["consumer"],
            registry=registry,
        )
        self.tick_to_decision_ms = Histogram(
            "trader_tick_to_decision_ms",
            "From tick creation to the strategy's decision, milliseconds",
            buckets=TICK_TO_DECISION_BUCKETS_MS,
            registry=registry,
        )

        # -- portfolio and risk -----------------------------------------------------------
        self.positions_open = Gauge(
            "trader_positions_open", "Open positions", ["strategy"], registry=registry
        )
        self.portfolio_heat_rupees = Gauge(
            "trader_portfolio_heat_rupees",
            "Summed risk to stop of open positions, rupees",
            registry=registry,
        )
        self.daily_pnl_rupees = Gauge(
            "trader_daily_pnl_rupees",
            "Realized plus unrealized PnL today, rupees",
            registry=registry,
        )
        self.unrealized_pnl_rupees = Gauge(
            "trader_unrealized_pnl_rupees", "Unrealized PnL of open positions", registry=registry
        )
        self.risk_blocks_total = Counter(
            "trader_risk_blocks",
            "Plans blocked before the broker, by denial code",
            ["reason"],
            registry=registry,
        )

        # -- orders and the broker --------------------------------------------------------
        self.order_latency_ms = _ListenedHistogram(
            "trader_order_latency_ms",
            "From broker call to acknowledgement, milliseconds",
            buckets=ORDER_LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.orders_total = Counter(
            "trader_orders", "Orders by leg and outcome", ["leg", "outcome"], registry=registry
        )
        self.retries_total = Counter(
            "trader_retries", "Broker call retries, by type", ["type"], registry=registry
        )
        self.queue_depth = Gauge(
            "trader_queue_depth", "Items waiting in a queue", ["queue"], registry=registry
        )
        self.rate_limit_wait_ms = Histogram(
            "trader_rate_limit_wait_ms",
            "Time a broker request, next in line, waited for a rate-limit token, milliseconds",
            buckets=RATE_LIMIT_WAIT_BUCKETS_MS,
            registry=registry,
        )
        self.broker_queue_depth = Gauge(
            "trader_broker_queue_depth",
            "Broker requests waiting in the gateway's queue, by priority",
            ["priority"],
            registry=registry,
        )
        # The broker gateway's flatten reserve (actors/broker_gateway.py): the per-minute
        # requests entries must leave for a flatten of what the engine holds, and the entries
        # waiting for it now.
        self.broker_flatten_reserve = Gauge(
            "trader_broker_flatten_reserve",
            "Per-minute broker requests held back from entries for a flatten",
            registry=registry,
        )
        self.broker_entries_held_for_reserve = Gauge(
            "trader_broker_entries_held_for_reserve",
            "Entries waiting because the rest of the minute's budget is held for a flatten",
            registry=registry,
        )
        self.flatten_duration_ms = Histogram(
            "trader_flatten_duration_ms",
            "From flatten request to flat, milliseconds",
            buckets=FLATTEN_DURATION_BUCKETS_MS,
            registry=registry,
        )
        # The trading-day schedule (actors/scheduler_actor.py): SESSION_OPEN, TIGHTEN_STOPS,
        # HARD_FLAT, SESSION_CLOSE, each counted when the scheduler carries it out.
        self.schedule_actions_total = Counter(
            "trader_schedule_actions",
            "Trading-day schedule actions carried out, by action",
            ["action"],
            registry=registry,
        )
        # Whether the exchange session is open (OPEN, TIGHTEN or FLAT: 1; CLOSED: 0), set by
        # the scheduler; 1 from the start, so with the scheduler off (a 24h market, a paper
        # engine at night) the heartbeat alerts gated on it keep working around the clock.
        self.session_open = Gauge(
            "trader_session_open",
            "1 while the exchange session is open (always 1 with the scheduler off)",
            registry=registry,
        )
        self.session_open.set(1)
        self.schedule_phase = Gauge(
            "trader_schedule_phase",
            "The trading-day phase the scheduler is in (one series at 1; none with it off)",
            ["phase"],
            registry=registry,
        )

        self._initialise(strategies=strategies, feeds=feeds, queues=queues, config_sha=config_sha)

    # -- start-up values ----------------------------------------------------------------------

    def _initialise(
        self,
        *,
        strategies: Sequence[str],
        feeds: Sequence[str],
        queues: Sequence[str],
        config_sha: str,
    ) -> None:
        self.is_leader.labels(instance_id=self.instance_id).set(0)
        for strategy in strategies:
            self.positions_open.labels(strategy=strategy).set(0)
        for feed in feeds:
            self.marketdata_heartbeat_seconds.labels(bucket=feed).set(math.inf)
            self.ticks_total.labels(feed=feed)
        self.order_stream_heartbeat_seconds.set(math.inf)
        for queue in queues:
            self.queue_depth.labels(queue=queue).set(0)
        for state in TradingState:
            self.trading_state.labels(state=state.value).set(0)
        for cause in PauseCause:
            self.trading_paused.labels(cause=cause.value).set(0)
        for mode in Mode:
            self.mode.labels(mode=mode.value).set(0)
        for code in DenialCode:
            self.risk_blocks_total.labels(reason=code.value)
        for retry_type in _RUNBOOK_RETRY_TYPES:
            self.retries_total.labels(type=retry_type)
        for priority in BROKER_QUEUE_PRIORITIES:
            self.broker_queue_depth.labels(priority=priority).set(0)
        for rule in TripwireRule:
            self.tripwire_total.labels(rule=rule.value)
        self.set_config_sha(config_sha)

    # -- setters for one-hot and derived values -----------------------------------------------

    def set_leader(self, is_leader: bool) -> None:
        """Set ``trader_is_leader`` for this instance."""
        self.is_leader.labels(instance_id=self.instance_id).set(1 if is_leader else 0)

    def set_trading_state(self, state: TradingState) -> None:
        """Make ``state`` the one ``trader_trading_state`` series at 1."""
        for candidate in TradingState:
            self.trading_state.labels(state=candidate.value).set(1 if candidate is state else 0)

    def set_schedule_phase(self, phase: str, *, session_open: bool) -> None:
        """Make ``phase`` the one ``trader_schedule_phase`` series at 1; set
        ``trader_session_open``."""
        for candidate in Phase:
            self.schedule_phase.labels(phase=candidate.value).set(
                1 if candidate.value == phase else 0
            )
        self.session_open.set(1 if session_open else 0)

    def set_mode(self, mode: Mode) -> None:
        """Make ``mode`` the one ``trader_mode`` series at 1."""
        for candidate in Mode:
            self.mode.labels(mode=candidate.value).set(1 if candidate is mode else 0)

    def set_armed(self, armed: bool) -> None:
        """Set ``trader_armed``."""
        self.armed.set(1 if armed else 0)

    def set_pause_causes(self, causes: Iterable[PauseCause]) -> None:
        """Set ``trader_trading_paused`` to 1 for each cause in force, 0 for the others."""
        active = frozenset(causes)
        for cause in PauseCause:
            self.trading_paused.labels(cause=cause.value).set(1 if cause in active else 0)

    def set_config_sha(self, config_sha: str) -> None:
        """Show ``config_sha`` in ``trader_config_info``."""
        self.config_info.info({"config_sha": config_sha})

    def set_positions_open(self, counts: dict[str, int]) -> None:
        """Set ``trader_positions_open`` per strategy. Strategies already shown but missing
        from ``counts`` go to 0 (their series stay, so the runbook's grep still finds them)."""
        self._strategies.update(counts)
        for strategy in self._strategies:
            self.positions_open.labels(strategy=strategy).set(counts.get(strategy, 0))

    def set_rupees(self, *, heat: Decimal, daily_pnl: Decimal, unrealized_pnl: Decimal) -> None:
        """Set the money gauges (Prometheus values are floats: display only, never arithmetic)."""
        self.portfolio_heat_rupees.set(float(heat))
        self.daily_pnl_rupees.set(float(daily_pnl))
        self.unrealized_pnl_rupees.set(float(unrealized_pnl))

    def listen_to_order_latency(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(latency_ms)`` with every observation of ``trader_order_latency_ms``
        (the order actor observes it at each ack): the watchdog's latency tripwire reads the
        same figures the histogram shows, without a second measurement in the order path."""
        self.order_latency_ms.add_listener(listener)

    def render(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


class _ListenedHistogram(Histogram):
    """An unlabelled histogram that also hands each observation to its listeners. A listener
    must be cheap and must not raise into the observer (the order actor): errors are dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listeners: list[Callable[[float], None]] = []

    def add_listener(self, listener: Callable[[float], None]) -> None:
        self._listeners.append(listener)

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        for listener in self._listeners:
            try:
                listener(amount)
            except Exception:  # a tripwire input must never fail an ack
                continue
