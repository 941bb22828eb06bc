"""Benchmarks (``make bench``): the pykka hop limit, engine throughput, tick-to-order latency
and the time to flatten a book of bracketed positions.

``python -m tools.bench`` runs every measurement, prints one labelled line per figure as it
lands and a summary table at the end. Timings never fail the run: the exit status is 0 unless
a measurement crashed or hung past its deadline (1), so CI can run it without flaking on a slow
machine.

Each measurement runs in a fresh child process (``python -m tools.bench --section NAME``):
CPU pinning (``os.sched_setaffinity``) cannot be undone for threads that already exist, and a
fresh process also keeps one engine's threads, metrics and SQLite file away from the next
measurement. A child prints exactly one ``BENCH_RESULT {json}`` line on stdout; its stderr is
shown only when it fails.

What each figure means, and how it is taken, is written up in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pykka
from sqlalchemy import func, select

from adapters.clock import WallClock
from adapters.feeds.synthetic import SyntheticMarket
from adapters.logs import configure_logging
from adapters.storage.tables import orders
from adapters.ticker import Ticker
from domain.config import EngineConfig, FeedConfig
from domain.enums import LegKind, OrderType, Side, TradingState
from domain.instruments import Instrument
from domain.messages import QuerySnapshot, SubmitBracket, Tick, TradePlan
from domain.messages.api import FlattenRequest
from domain.messages.queries import QueryPortfolio
from domain.plans import plan_client_id
from launcher.engine import Engine, strategy_actor_name

__all__ = [
    "SECTIONS",
    "BenchError",
    "SectionResult",
    "main",
    "run_flatten",
    "run_latency",
    "run_raw",
    "run_section",
    "run_throughput",
]

RESULT_MARKER = "BENCH_RESULT "
SECTIONS = ("raw", "throughput", "latency", "flatten")

_CHAIN_LENGTH = 4
_TIMER_EVERY_S = 0.1  # the production ticker's default (heartbeats.timer_interval_ms)
_ASK_TIMEOUT_S = 5.0
_CHILD_TIMEOUT_S = 240.0
_READY_STABLE_S = 0.3


class BenchError(RuntimeError):
    """A measurement could not be taken (the engine never became ready, a drain timed out)."""


@dataclass
class SectionResult:
    """What one child process measured (the ``figures`` are JSON-serialisable)."""

    section: str
    pinned: bool
    figures: dict[str, Any] = field(default_factory=dict)


# =============================================================================================
# 1. RAW PYKKA LIMIT
# =============================================================================================


class _Forwarder(pykka.ThreadingActor):
    def __init__(self, next_actor: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._next = next_actor

    def on_receive(self, message: Any) -> None:
        self._next.tell(message)


class _Counter(pykka.ThreadingActor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self._expected = expected
        self._done = done
        self._count = 0

    def on_receive(self, message: Any) -> None:
        self._count += 1
        if self._count == self._expected:
            self._done.set()


def _start_chain(expected: int, done: threading.Event) -> list[pykka.ActorRef[Any]]:
    refs: list[pykka.ActorRef[Any]] = [_Counter.start(expected, done)]
    for _ in range(_CHAIN_LENGTH - 1):
        refs.insert(0, _Forwarder.start(refs[0]))
    return refs


def _stop_chain(refs: Sequence[pykka.ActorRef[Any]]) -> None:
    for ref in refs:
        ref.stop(block=True, timeout=10)


def _raw_throughput(ticks: Sequence[Tick], count: int) -> dict[str, float]:
    done = threading.Event()
    refs = _start_chain(count, done)
    first = refs[0]
    try:
        started = time.perf_counter()
        for index in range(count):
            first.tell(ticks[index % len(ticks)])
        produced = time.perf_counter()
        if not done.wait(120):
            raise BenchError(f"raw chain did not deliver {count} ticks within 120 s")
        finished = time.perf_counter()
    finally:
        _stop_chain(refs)
    elapsed = finished - started
    return {
        "ticks_per_s": count / elapsed,
        "elapsed_s": elapsed,
        "producer_s": produced - started,
    }


def _raw_round_trip_us(ticks: Sequence[Tick], rounds: int) -> list[float]:
    # One tick at a time through the chain: the latency of four hops with idle actors, which
    # is where cross-CPU wake-ups show (a saturated chain batches them away).
    arrived = threading.Event()

    class _Signal(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> None:
            arrived.set()

    refs: list[pykka.ActorRef[Any]] = [_Signal.start()]
    for _ in range(_CHAIN_LENGTH - 1):
        refs.insert(0, _Forwarder.start(refs[0]))
    samples: list[float] = []
    try:
        for index in range(rounds):
            arrived.clear()
            started = time.perf_counter_ns()
            refs[0].tell(ticks[index % len(ticks)])
            if not arrived.wait(5):
                raise BenchError(f"raw chain round trip {index} took more than 5 s")
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        _stop_chain(refs)
    return samples


class _PlainStage:
    def __init__(self, next_stage: _PlainStage | None) -> None:
        self._next = next_stage
        self.count = 0

    def on_receive(self, message: Any) -> None:
        if self._next is None:
            self.count += 1
        else:
            self._next.on_receive(message)


def _plain_calls_per_s(ticks: Sequence[Tick], count: int) -> float:
    # The same 4-stage chain as plain method calls on one thread: what a hop is compared to.
    last = _PlainStage(None)
    first = last
    for _ in range(_CHAIN_LENGTH - 1):
        first = _PlainStage(first)
    started = time.perf_counter()
    for index in range(count):
        first.on_receive(ticks[index % len(ticks)])
    elapsed = time.perf_counter() - started
    if last.count != count:
        raise BenchError(f"plain chain counted {last.count} of {count} ticks")
    return count / elapsed


def run_raw(*, count: int, repeats: int, rounds: int) -> dict[str, Any]:
    """Push ``count`` ticks through a bare 4-actor chain ``repeats`` times; also time
    ``rounds`` single-tick trips through the idle chain."""
    ticks = _sample_ticks(_bench_instruments(20), steps=50)
    _raw_throughput(ticks, min(count, 20_000))  # warm-up: imports, thread start, allocator
    runs = [_raw_throughput(ticks, count) for _ in range(repeats)]
    rates = sorted(run["ticks_per_s"] for run in runs)
    trips = sorted(_raw_round_trip_us(ticks, rounds))
    return {
        "ticks": count,
        "repeats": repeats,
        "ticks_per_s_median": statistics.median(rates),
        "ticks_per_s_best": rates[-1],
        "ticks_per_s_worst": rates[0],
        "elapsed_s": [round(run["elapsed_s"], 3) for run in runs],
        "producer_s": [round(run["producer_s"], 3) for run in runs],
        "plain_calls_ticks_per_s": _plain_calls_per_s(ticks, count),
        "round_trip_us_p50": _percentile(trips, 50),
        "round_trip_us_p99": _percentile(trips, 99),
        "round_trips": rounds,
    }


# =============================================================================================
# ENGINE FIXTURES
# =============================================================================================


def _bench_instruments(count: int) -> list[Instrument]:
    # Prices from 100 to 2,000 so the ATR-based stops and sizes differ per instrument, all on a
    # 0.05 grid with lot size 1 (sizing never rounds a plan to nothing).
    return [
        Instrument(
            symbol=f"SYM{index:02d}",
            lot_size=1,
            tick_size=Decimal("0.05"),
            freeze_quantity=100_000,
            price_band_pct=Decimal("10"),
            reference_price=Decimal(100 * (1 + index % 20)),
            max_spread_ticks=20,
        )
        for index in range(1, count + 1)
    ]


def _feed_config(*, volatility_bps: float) -> FeedConfig:
    return FeedConfig(
        kind="synthetic",
        name="synthetic",
        seed=7,
        tick_interval_ms=2,
        volatility_bps=volatility_bps,
        spread_blowout_probability=0.0005,
        band_hit_probability=0.0,
        replay_speed=0,
    )


def _sample_ticks(instruments: Sequence[Instrument], *, steps: int) -> list[Tick]:
    market = _market(instruments, volatility_bps=2.0)
    ticks: list[Tick] = []
    for step in range(steps):
        ticks.extend(market.next_ticks(step + 1))
    return ticks


def _market(instruments: Sequence[Instrument], *, volatility_bps: float) -> SyntheticMarket:
    return SyntheticMarket(instruments, _feed_config(volatility_bps=volatility_bps))


def _engine_config(
    root: Path,
    *,
    instruments: Sequence[Instrument],
    trade: bool,
    pinned: bool,
    volatility_bps: float,
) -> EngineConfig:
    """A PAPER engine on SQLite in ``root``: strategies that trade often, loose risk limits."""
    symbols = [instrument.symbol for instrument in instruments]
    strategies: list[dict[str, Any]] = []
    if trade:
        # 1 s bars and short windows, so a 10-15 s run produces plans on most instruments.
        strategies = [
            {
                "name": "orb_1",
                "kind": "orb",
                "instruments": symbols,
                "bar_interval_s": 1,
                "params": {
                    "range_bars": 1,
                    "window_bars": 3,
                    "atr_period": 2,
                    "stop_atr": 1.0,
                    "target_atr": 1.5,
                },
            },
            {
                "name": "ema_1",
                "kind": "ema_pullback",
                "instruments": symbols,
                "bar_interval_s": 1,
                "params": {
                    "fast_period": 2,
                    "slow_period": 4,
                    "atr_period": 2,
                    "stop_atr": 1.0,
                    "target_atr": 1.5,
                    "cooldown_bars": 0,
                },
            },
        ]
    data = {
        "instance_id": "vigil-bench",
        "mode": "PAPER",
        "auto_arm_paper": True,
        "database_url": f"sqlite:///{root / 'data' / 'vigil.db'}",
        "data_dir": str(root / "data"),
        "logs_dir": str(root / "logs"),
        "log_level": "INFO",
        "cpu_affinity": (0,) if pinned else None,
        "instruments": [
            {
                "symbol": i.symbol,
                "lot_size": i.lot_size,
                "tick_size": i.tick_size,
                "freeze_quantity": i.freeze_quantity,
                "price_band_pct": i.price_band_pct,
                "reference_price": i.reference_price,
                "max_spread_ticks": i.max_spread_ticks,
            }
            for i in instruments
        ],
        "feed": _feed_config(volatility_bps=volatility_bps).model_dump(),
        "strategies": strategies,
        "risk": {
            "capital_rupees": "10000000",
            "per_trade_risk_pct": "0.05",
            "portfolio_heat_cap_pct": "100",
            "max_order_size": 1000,
            "max_concurrent_positions": 1000,
            "per_symbol_exposure_cap_rupees": "1000000000",
            "max_trades_per_hour": 1_000_000,
            "max_daily_loss_pct": "100",
        },
        # Zero simulated venue latency: the figures are the engine's own cost.
        "paper_broker": {"latency_ms": 0},
        "http": {"port": 0, "flatten_timeout_s": 60},
    }
    return EngineConfig.model_validate(data)


def _make_engine(config: EngineConfig, *, run_ticker: bool = False) -> Engine:
    # The production level (INFO) into a file: logging is part of the engine's cost, but the
    # bench's stdout stays readable.
    configure_logging(logs_dir=config.logs_dir, level=config.log_level, stream=False)
    return Engine(
        config,
        clock=WallClock(),
        run_ticker=run_ticker,
        run_feed=False,
        run_http=False,
    )


def _wait_until(
    condition: Callable[[], Any],
    *,
    timeout_s: float,
    what: str,
    every: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition`` until truthy; call ``every`` (a timer tick) at the ticker's pace."""
    deadline = time.monotonic() + timeout_s
    next_timer = time.monotonic()
    while True:
        if every is not None and time.monotonic() >= next_timer:
            every()
            next_timer = time.monotonic() + _TIMER_EVERY_S
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.002)  # polling a condition, not synchronising on a guess


def _wait_ready(engine: Engine, *, warm_up: Callable[[], None] | None = None) -> None:
    """Wait until the order actor holds the leader lease and sees trading ACTIVE, armed and
    unpaused. ``warm_up`` publishes a round of ticks at each timer tick, so market data is
    fresh and every instrument has a quote before the measurement starts."""

    def ready() -> bool:
        snapshot = engine.directory.ask("order", QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)
        leadership = snapshot.get("leadership") or {}
        trading = snapshot.get("trading") or {}
        return bool(
            leadership.get("is_leader")
            and trading.get("armed")
            and trading.get("state") == TradingState.ACTIVE.value
            and not trading.get("pause_causes")
        )

    def tick() -> None:
        if warm_up is not None:
            warm_up()
        engine.fire_timer()

    # Ready must hold across a few timer rounds: the supervisor's first checks can assert and
    # clear a pause (leader not yet elected) just after an early look said "ready".
    ready_since: list[float] = []

    def stable() -> bool:
        if not ready():
            ready_since.clear()
            return False
        if not ready_since:
            ready_since.append(time.monotonic())
        return time.monotonic() - ready_since[0] >= _READY_STABLE_S

    _wait_until(
        stable, timeout_s=20, what="leader lease and ACTIVE, armed, unpaused trading", every=tick
    )


def _feed_accepted(engine: Engine) -> int:
    value = engine.metrics.registry.get_sample_value(
        "trader_ticks_total", {"feed": engine.feed_name}
    )
    return int(value or 0)


def _counter_by_label(engine: Engine, name: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for metric in engine.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name and sample.value:
                key = sample.labels.get(label, "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _histogram(engine: Engine, name: str) -> dict[str, Any]:
    """Count, mean and bucket-interpolated p50/p99 of a prometheus histogram, milliseconds."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    total = 0.0
    for metric in engine.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_count":
                count = sample.value
            elif sample.name == f"{name}_sum":
                total = sample.value
    buckets.sort()
    return {
        "count": int(count),
        "mean": total / count if count else None,
        "p50": _bucket_quantile(buckets, count, 0.50),
        "p99": _bucket_quantile(buckets, count, 0.99),
    }


def _bucket_quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    # Linear interpolation inside the bucket, as PromQL's histogram_quantile does.
    if not count:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            if cumulative == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                cumulative - lower_count
            )
        lower_bound, lower_count = bound, cumulative
    return None


def _conflation(engine: Engine) -> dict[str, dict[str, int]]:
    consumers = ["order", "risk", *map(strategy_actor_name, engine.strategy_names)]
    return {
        consumer: {
            "offered": engine.conflator(consumer).offered,
            "conflated": engine.conflator(consumer).conflated,
        }
        for consumer in consumers
    }


def _actors_idle(engine: Engine) -> bool:
    names = ["order", "risk", *map(strategy_actor_name, engine.strategy_names)]
    for name in names:
        if engine.conflator(name).pending_count:
            return False
        snapshot = engine.directory.ask(name, QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)
        if snapshot.get("mailbox_depth", 0):
            return False
    return True


def _strategy_stats(engine: Engine) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    for name in engine.strategy_names:
        snapshot = engine.directory.ask(
            strategy_actor_name(name), QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S
        )
        stats[name] = {
            "ticks_seen": int(snapshot["ticks_seen"]),
            "plans_sent": int(snapshot["plans_sent"]),
            "plans_dropped": int(snapshot["plans_dropped"]),
        }
    return stats


def _entry_orders(engine: Engine) -> list[tuple[str, str, int]]:
    """(client_order_id, plan_client_id, created_ns) of every ENTRY row in the orders table."""
    assert engine.database is not None
    query = select(orders.c.client_order_id, orders.c.plan_client_id, orders.c.created_ns).where(
        orders.c.leg == LegKind.ENTRY.value
    )
    with engine.database.transaction() as connection:
        return [(row[0], row[1], int(row[2])) for row in connection.execute(query)]


def _order_count(engine: Engine) -> int:
    assert engine.database is not None
    with engine.database.transaction() as connection:
        return int(connection.execute(select(func.count()).select_from(orders)).scalar_one())


def _restamp(ticks: Sequence[Tick], now_ns: int) -> list[Tick]:
    return [msgspec.structs.replace(tick, ts_event=now_ns, ts_init=now_ns) for tick in ticks]


def _steps(
    instruments: Sequence[Instrument], *, steps: int, step_ns: int, start_ns: int
) -> Iterator[list[Tick]]:
    market = _market(instruments, volatility_bps=2.0)
    for step in range(steps):
        yield market.next_ticks(start_ns + step * step_ns)


# =============================================================================================
# 2. ENGINE PIPELINE THROUGHPUT
# =============================================================================================


def run_throughput(
    *,
    count: int,
    batches: Sequence[int],
    repeats: int,
    instruments: int,
    pinned: bool,
    root: Path,
) -> dict[str, Any]:
    """For each batch size, ``repeats`` times, a fresh engine takes ``count`` pre-generated
    ticks through ``publish_ticks`` as fast as it accepts them; the time until the feed actor
    has accepted them all (its ``trader_ticks_total``) gives the rate. The run with the median
    rate is reported in full, with the rates of all runs."""
    universe = _bench_instruments(instruments)
    steps = max(1, count // instruments)
    # Stamps as if the market ticked at 10,000 ticks/s and ended a second ago, so bars close
    # and the strategies really evaluate, plan and trade while we measure.
    step_ns = 1_000_000_000 * instruments // 10_000
    start_ns = time.time_ns() - steps * step_ns - 1_000_000_000
    flat = [
        tick
        for ticks in _steps(universe, steps=steps, step_ns=step_ns, start_ns=start_ns)
        for tick in ticks
    ]
    # Warm-up ticks are stamped before the measured ones, so none of those is out of order.
    warm_up = _WarmUp(universe, first_ns=start_ns - 1_000_000_000)
    runs = []
    for batch in batches:
        repeated = [
            _throughput_run(
                flat,
                batch=batch,
                universe=universe,
                pinned=pinned,
                root=root / f"batch-{batch}-run-{attempt}",
                warm_up=warm_up,
            )
            for attempt in range(repeats)
        ]
        repeated.sort(key=lambda run: run["ticks_per_s"])
        median = dict(repeated[len(repeated) // 2])
        median["all_ticks_per_s"] = [run["ticks_per_s"] for run in repeated]
        runs.append(median)
    return {"ticks": len(flat), "instruments": instruments, "runs": runs}


class _WarmUp:
    """Publishes one round of ticks per call, stamped from ``first_ns`` on, 1 us apart."""

    def __init__(self, universe: Sequence[Instrument], *, first_ns: int) -> None:
        self._market = _market(universe, volatility_bps=2.0)
        self._first_ns = first_ns
        self._calls = 0
        self.engine: Engine | None = None

    def __call__(self) -> None:
        assert self.engine is not None
        self._calls += 1
        self.engine.publish_ticks(self._market.next_ticks(self._first_ns + self._calls * 1000))


def _throughput_run(
    flat: Sequence[Tick],
    *,
    batch: int,
    universe: Sequence[Instrument],
    pinned: bool,
    root: Path,
    warm_up: _WarmUp,
) -> dict[str, Any]:
    chunks = [flat[index : index + batch] for index in range(0, len(flat), batch)]
    total = len(flat)
    config = _engine_config(
        root, instruments=universe, trade=True, pinned=pinned, volatility_bps=2.0
    )
    engine = _make_engine(config)
    engine.start()
    try:
        warm_up.engine = engine
        _wait_ready(engine, warm_up=warm_up)
        # Let the warm-up drain, so the counter below starts from a quiet pipeline.
        _wait_until(lambda: _actors_idle(engine), timeout_s=30, what="warm-up to drain")
        before = _feed_accepted(engine)
        offered_before = {
            name: (c["offered"], c["conflated"]) for name, c in _conflation(engine).items()
        }
        seen_before = _strategy_stats(engine)
        orders_before = _order_count(engine)
        dropped = 0
        started = time.perf_counter()
        next_timer = started + _TIMER_EVERY_S
        for ticks in chunks:
            if not engine.publish_ticks(ticks):
                dropped += len(ticks)
            if time.perf_counter() >= next_timer:
                engine.fire_timer()
                next_timer = time.perf_counter() + _TIMER_EVERY_S
        published = time.perf_counter()
        expected = before + total - dropped
        _wait_until(
            lambda: _feed_accepted(engine) >= expected,
            timeout_s=180,
            what=f"the feed actor to accept {total - dropped} ticks",
            every=engine.fire_timer,
        )
        fed = time.perf_counter()
        _wait_until(
            lambda: _actors_idle(engine),
            timeout_s=60,
            what="strategies, risk and order to drain",
            every=engine.fire_timer,
        )
        idle = time.perf_counter()
        conflation = {
            name: {
                "offered": c["offered"] - offered_before[name][0],
                "conflated": c["conflated"] - offered_before[name][1],
            }
            for name, c in _conflation(engine).items()
        }
        strategies = {
            name: {key: value - seen_before[name][key] for key, value in stats.items()}
            for name, stats in _strategy_stats(engine).items()
        }
        return {
            "ticks": total,
            "batch": batch,
            "dropped": dropped,
            "accepted": _feed_accepted(engine) - before,
            "publish_s": published - started,
            "feed_s": fed - started,
            "pipeline_s": idle - started,
            "ticks_per_s": (total - dropped) / (fed - started),
            "conflation": conflation,
            "strategies": strategies,
            "orders_written": _order_count(engine) - orders_before,
            "risk_blocks": _counter_by_label(engine, "trader_risk_blocks_total", "reason"),
        }
    finally:
        engine.stop()


# =============================================================================================
# 3. TICK-TO-ORDER LATENCY
# =============================================================================================


class _Taps:
    """Pass-through observers on the directory and the broker (nothing is replaced or faked):
    they timestamp the moments the engine does not store."""

    def __init__(self) -> None:
        self.decided_ns: dict[str, int] = {}  # plan id -> strategy told risk
        self.tick_ns: dict[str, int] = {}  # plan id -> the triggering tick's ts_init
        self.approved_ns: dict[str, int] = {}  # plan id -> risk told order
        self.sent_ns: dict[str, int] = {}  # client order id -> broker.submit_order called

    def install(self, engine: Engine) -> None:
        directory_tell = engine.directory.tell

        def tell(name: str, message: object) -> bool:
            if isinstance(message, TradePlan):
                self.decided_ns.setdefault(message.plan_client_id, time.time_ns())
                self.tick_ns.setdefault(message.plan_client_id, message.ts_init)
            elif isinstance(message, SubmitBracket):
                self.approved_ns.setdefault(message.plan.plan_client_id, message.ts_init)
            return directory_tell(name, message)

        engine.directory.tell = tell  # type: ignore[method-assign]

    def install_broker(self, engine: Engine) -> None:
        assert engine.broker is not None
        submit_order = engine.broker.submit_order

        def submit(request: Any) -> Any:
            self.sent_ns.setdefault(request.client_order_id, time.time_ns())
            return submit_order(request)

        engine.broker.submit_order = submit  # type: ignore[method-assign]


def run_latency(
    *, rate: int, seconds: float, instruments: int, pinned: bool, root: Path
) -> dict[str, Any]:
    """Pace the feed at ``rate`` ticks/s for ``seconds``; per entry order, time from the
    triggering tick's ``ts_init`` to the order row (write-ahead) and to the broker call."""
    universe = _bench_instruments(instruments)
    step_interval_s = instruments / rate
    steps = int(seconds / step_interval_s)
    # Generate before the clock starts; each step is re-stamped with the wall clock as sent.
    pregenerated = list(_steps(universe, steps=steps, step_ns=1, start_ns=1))
    config = _engine_config(
        root, instruments=universe, trade=True, pinned=pinned, volatility_bps=2.0
    )
    engine = _make_engine(config)
    taps = _Taps()
    taps.install(engine)
    engine.start()
    try:
        taps.install_broker(engine)
        warm_market = _market(universe, volatility_bps=2.0)
        _wait_ready(
            engine,
            warm_up=lambda: engine.publish_ticks(warm_market.next_ticks(time.time_ns())),
        )
        before = _feed_accepted(engine)
        started = time.perf_counter()
        next_timer = started + _TIMER_EVERY_S
        late_steps = 0
        for index, ticks in enumerate(pregenerated):
            due = started + index * step_interval_s
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)  # pacing the feed, not synchronising
            elif now - due > step_interval_s:
                late_steps += 1
            engine.publish_ticks(_restamp(ticks, time.time_ns()))
            if time.perf_counter() >= next_timer:
                engine.fire_timer()
                next_timer = time.perf_counter() + _TIMER_EVERY_S
        paced = time.perf_counter()
        total = len(pregenerated) * instruments
        _wait_until(
            lambda: _feed_accepted(engine) >= before + total,
            timeout_s=120,
            what=f"the feed actor to accept {total} ticks",
            every=engine.fire_timer,
        )
        _wait_until(
            lambda: _actors_idle(engine),
            timeout_s=60,
            what="strategies, risk and order to drain",
            every=engine.fire_timer,
        )
        entries = _entry_orders(engine)
        written: list[float] = []
        sent: list[float] = []
        decided: list[float] = []
        approved: list[float] = []
        for entry_id, plan_id, created_ns in entries:
            tick_ns = taps.tick_ns.get(plan_id)
            if tick_ns is None:
                continue
            written.append((created_ns - tick_ns) / 1e6)
            if entry_id in taps.sent_ns:
                sent.append((taps.sent_ns[entry_id] - tick_ns) / 1e6)
            if plan_id in taps.decided_ns:
                decided.append((taps.decided_ns[plan_id] - tick_ns) / 1e6)
            if plan_id in taps.approved_ns:
                approved.append((taps.approved_ns[plan_id] - tick_ns) / 1e6)
        figures = {
            "rate": rate,
            "instruments": instruments,
            "ticks": total,
            "achieved_rate": total / (paced - started),
            "late_steps": late_steps,
            "plans": len(taps.tick_ns),
            "entry_orders": len(written),
            "tick_to_decision_ms": _summary(decided),
            "tick_to_approved_ms": _summary(approved),
            "tick_to_written_ms": _summary(written),
            "tick_to_sent_ms": _summary(sent),
            "histogram_tick_to_decision_ms": _histogram(engine, "trader_tick_to_decision_ms"),
            "histogram_order_latency_ms": _histogram(engine, "trader_order_latency_ms"),
            "conflation": _conflation(engine),
            "risk_blocks": _counter_by_label(engine, "trader_risk_blocks_total", "reason"),
        }
    finally:
        engine.stop()
    return figures


# =============================================================================================
# 4. TIME TO FLATTEN
# =============================================================================================


def run_flatten(*, positions: int, instruments: int, pinned: bool, root: Path) -> dict[str, Any]:
    """Open ``positions`` brackets (entry filled, stop and target working), then time
    ``EngineControl.flatten`` until the order actor reports flat."""
    universe = _bench_instruments(instruments)
    market = _market(universe, volatility_bps=0.2)
    config = _engine_config(
        root, instruments=universe, trade=False, pinned=pinned, volatility_bps=0.2
    )
    # The production heartbeat (100 ms) drives leases and venue passes; a quiet market ticks
    # every instrument every 10 ms, so the venue sees prices as it would in a session.
    engine = _make_engine(config, run_ticker=True)
    last: dict[str, Tick] = {}
    lock = threading.Lock()

    def publish_step() -> None:
        ticks = market.next_ticks(time.time_ns())
        with lock:
            last.update((tick.instrument, tick) for tick in ticks)
        engine.publish_ticks(ticks)

    engine.start()
    market_ticker = Ticker(name="bench-market", interval_s=0.01, callback=publish_step)
    market_ticker.start()
    try:
        _wait_ready(engine)
        _wait_until(lambda: len(last) == instruments, timeout_s=10, what="a quote per instrument")
        now = time.time_ns()
        with lock:
            quotes = dict(last)
        for index in range(positions):
            instrument = universe[index % instruments]
            side = Side.BUY if index % 2 == 0 else Side.SELL
            quote = quotes[instrument.symbol]
            entry = instrument.round_price(quote.mid)
            # Stop and target 5 % away: a quiet market never reaches them during the run.
            stop = instrument.round_price(entry * (1 - side.sign * Decimal("0.05")))
            target = instrument.round_price(entry * (1 + side.sign * Decimal("0.05")))
            quantity = 10
            plan_id = plan_client_id(
                strategy="bench",
                instrument=instrument.symbol,
                side=side,
                entry_price=entry,
                stop_price=stop,
                target_price=target,
                quantity=quantity,
                signal_ts=now + index,
            )
            plan = TradePlan(
                plan_client_id=plan_id,
                strategy="bench",
                instrument=instrument.symbol,
                side=side,
                quantity=quantity,
                entry_type=OrderType.MARKET,
                entry_price=entry,
                stop_price=stop,
                target_price=target,
                signal_ts=now + index,
                ts_init=now,
            )
            if not engine.directory.tell(
                "order", SubmitBracket(plan=plan, quantity=quantity, ts_init=now)
            ):
                raise BenchError(f"order actor refused SubmitBracket {index} ({plan_id})")

        def book_ready() -> Any:
            view = engine.directory.ask("order", QueryPortfolio(), timeout_s=_ASK_TIMEOUT_S)
            open_positions = len(view.portfolio.positions)
            if open_positions == positions and view.working_orders == 2 * positions:
                return view
            return None

        opening = time.perf_counter()
        _wait_until(
            book_ready,
            timeout_s=60,
            what=f"{positions} open positions with {2 * positions} working stops and targets",
        )
        opened_s = time.perf_counter() - opening
        control = engine.control
        if control is None:
            raise BenchError("engine.control is None after start()")
        started = time.perf_counter()
        completed = control.flatten(FlattenRequest(reason="bench"))
        wall_ms = (time.perf_counter() - started) * 1000
        after = engine.directory.ask("order", QueryPortfolio(), timeout_s=_ASK_TIMEOUT_S)
        assert engine.broker is not None
        venue_open = [p for p in engine.broker.list_positions() if p.quantity != 0]
        order_actor_ms = (
            after.flatten.completed.duration_ms if after.flatten.completed is not None else None
        )
        figures = {
            "positions": positions,
            "instruments": instruments,
            "open_s": opened_s,
            "flatten_wall_ms": wall_ms,
            "flatten_control_ms": completed.duration_ms,
            "flatten_order_actor_ms": order_actor_ms,
            "positions_closed": completed.positions_closed,
            "orders_cancelled": completed.orders_cancelled,
            "remaining_positions": len(after.portfolio.positions),
            "remaining_working_orders": after.working_orders,
            "venue_open_positions": len(venue_open),
        }
    finally:
        market_ticker.stop()
        engine.stop()
    return figures


# =============================================================================================
# CHILD PROCESS
# =============================================================================================


def run_section(section: str, options: argparse.Namespace) -> SectionResult:
    """Run one measurement in this process and return its figures.

    Raises:
        BenchError: the engine never got ready or a drain timed out.
        ValueError: an unknown section name.
    """
    if options.pin and section == "raw":
        # Before any actor thread exists, so all of them inherit it. The engine sections pin
        # through the engine's own setting (``cpu_affinity``) instead.
        os.sched_setaffinity(0, {0})
    result = SectionResult(section=section, pinned=bool(options.pin))
    with tempfile.TemporaryDirectory(prefix=f"vigil-bench-{section}-") as directory:
        root = Path(directory)
        if section == "raw":
            result.figures = run_raw(
                count=options.raw_ticks, repeats=options.repeats, rounds=options.round_trips
            )
        elif section == "throughput":
            result.figures = run_throughput(
                count=options.engine_ticks,
                batches=options.batches,
                repeats=options.engine_repeats,
                instruments=options.instruments,
                pinned=bool(options.pin),
                root=root,
            )
        elif section == "latency":
            result.figures = run_latency(
                rate=options.rate,
                seconds=options.latency_seconds,
                instruments=options.instruments,
                pinned=bool(options.pin),
                root=root,
            )
        elif section == "flatten":
            result.figures = run_flatten(
                positions=options.positions,
                instruments=10,
                pinned=bool(options.pin),
                root=root,
            )
        else:
            raise ValueError(f"unknown section {section!r}; choose from {SECTIONS}")
    return result


def _child_main(options: argparse.Namespace) -> int:
    result = run_section(options.section, options)
    line = json.dumps(
        {"section": result.section, "pinned": result.pinned, "figures": result.figures},
        default=str,
    )
    print(RESULT_MARKER + line, flush=True)
    return 0


# =============================================================================================
# PARENT: orchestration and the report
# =============================================================================================


@dataclass
class _Outcome:
    label: str
    result: SectionResult | None
    error: str | None = None
    seconds: float = 0.0


def _spawn(section: str, *, pin: bool, options: argparse.Namespace) -> _Outcome:
    label = f"{section} ({'pinned to CPU 0' if pin else 'unpinned'})"
    command = [
        sys.executable,
        "-m",
        "tools.bench",
        "--section",
        section,
        "--raw-ticks",
        str(options.raw_ticks),
        "--repeats",
        str(options.repeats),
        "--round-trips",
        str(options.round_trips),
        "--engine-ticks",
        str(options.engine_ticks),
        "--batches",
        *(str(batch) for batch in options.batches),
        "--engine-repeats",
        str(options.engine_repeats),
        "--instruments",
        str(options.instruments),
        "--rate",
        str(options.rate),
        "--latency-seconds",
        str(options.latency_seconds),
        "--positions",
        str(options.positions),
    ]
    if pin:
        command.append("--pin")
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_CHILD_TIMEOUT_S,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        return _Outcome(label, None, f"timed out after {error.timeout} s", _CHILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            data = json.loads(line[len(RESULT_MARKER) :])
            return _Outcome(
                label,
                SectionResult(
                    section=data["section"], pinned=data["pinned"], figures=data["figures"]
                ),
                None,
                seconds,
            )
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-25:])
    return _Outcome(
        label, None, f"exit status {completed.returncode}, no result line:\n{tail}", seconds
    )


def _machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} logical, {usable} usable",
        "python": platform.python_version(),
        "pykka": importlib.metadata.version("pykka"),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    # Nearest rank: the smallest value with at least pct % of the samples at or below it.
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def _summary(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": _percentile(ordered, 50),
        "p99": _percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
    }


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _report(outcome: _Outcome, raw: dict[bool, float]) -> list[tuple[str, str]]:
    """Print the labelled lines of one outcome; return its rows for the summary table."""
    if outcome.result is None:
        print(f"  {outcome.label}: FAILED: {outcome.error}")
        return [(outcome.label, "FAILED")]
    section = outcome.result.section
    pinned = outcome.result.pinned
    tag = "pinned" if pinned else "unpinned"
    f = outcome.result.figures
    rows: list[tuple[str, str]] = []
    if section == "raw":
        raw[pinned] = f["ticks_per_s_median"]
        print(
            f"  [1] raw pykka limit, {tag}: {_number(f['ticks_per_s_median'])} ticks/s "
            f"(median of {f['repeats']} runs of {f['ticks']:,} ticks through 4 actors; "
            f"best {_number(f['ticks_per_s_best'])}, worst {_number(f['ticks_per_s_worst'])}; "
            f"run times {f['elapsed_s']} s)"
        )
        plain_us = 1e6 / f["plain_calls_ticks_per_s"] / _CHAIN_LENGTH
        hop_us = (f["round_trip_us_p50"] or 0) / _CHAIN_LENGTH
        print(
            f"      one tick through the idle chain ({f['round_trips']:,} trips, 4 hops): "
            f"p50 {_number(f['round_trip_us_p50'], 1)} us, "
            f"p99 {_number(f['round_trip_us_p99'], 1)} us; that is {hop_us:.1f} us per idle "
            f"hop against {plain_us:.2f} us per plain method call ({hop_us / plain_us:.0f}x)"
        )
        rows.append(
            (f"Raw pykka 4-actor chain, {tag}", f"{_number(f['ticks_per_s_median'])} ticks/s")
        )
        rows.append(
            (
                f"Raw chain one-tick trip (4 hops), {tag}",
                f"p50 {_number(f['round_trip_us_p50'], 1)} us / "
                f"p99 {_number(f['round_trip_us_p99'], 1)} us",
            )
        )
    elif section == "throughput":
        limit = raw.get(pinned)
        for run in f["runs"]:
            rows.extend(_report_throughput_run(run, f["instruments"], tag, limit))
    elif section == "latency":
        written, sent = f["tick_to_written_ms"], f["tick_to_sent_ms"]
        decided, approved = f["tick_to_decision_ms"], f["tick_to_approved_ms"]
        hist_decision = f["histogram_tick_to_decision_ms"]
        hist_order = f["histogram_order_latency_ms"]
        print(
            f"  [3] tick-to-order latency at {f['rate']:,} ticks/s, {tag} "
            f"(achieved {_number(f['achieved_rate'])} ticks/s, {f['ticks']:,} ticks, "
            f"{f['entry_orders']} entry orders from {f['plans']} plans):"
        )
        print(
            f"      tick -> order row written (write-ahead): p50 {_number(written['p50'], 2)} ms, "
            f"p99 {_number(written['p99'], 2)} ms, max {_number(written['max'], 2)} ms"
        )
        print(
            f"      tick -> broker.submit_order called:      p50 {_number(sent['p50'], 2)} ms, "
            f"p99 {_number(sent['p99'], 2)} ms, max {_number(sent['max'], 2)} ms"
        )
        print(
            f"      breakdown: tick -> strategy decision p50 {_number(decided['p50'], 2)} / "
            f"p99 {_number(decided['p99'], 2)} ms; tick -> risk approval "
            f"p50 {_number(approved['p50'], 2)} / p99 {_number(approved['p99'], 2)} ms"
        )
        print(
            f"      engine histograms: trader_tick_to_decision_ms n={hist_decision['count']} "
            f"p50~{_number(hist_decision['p50'], 2)} p99~{_number(hist_decision['p99'], 2)} ms; "
            f"trader_order_latency_ms (broker call -> ack, all legs) n={hist_order['count']} "
            f"p50~{_number(hist_order['p50'], 1)} p99~{_number(hist_order['p99'], 1)} ms"
        )
        strategies = [c for n, c in f["conflation"].items() if n.startswith("strategy:")]
        conflated = sum(c["conflated"] for c in strategies)
        offered = sum(c["offered"] for c in strategies)
        print(
            f"      ticks conflated at the strategies {conflated:,} of {offered:,} "
            f"({100 * conflated / max(offered, 1):.1f} %); risk blocks "
            f"{_compact(f['risk_blocks'])}; late pacing steps {f['late_steps']}"
        )
        rows.append(
            (
                f"Tick -> order written @ {f['rate']:,}/s, {tag}",
                f"p50 {_number(written['p50'], 2)} ms / p99 {_number(written['p99'], 2)} ms "
                f"(n={written['count']})",
            )
        )
        rows.append(
            (
                f"Tick -> broker submit @ {f['rate']:,}/s, {tag}",
                f"p50 {_number(sent['p50'], 2)} ms / p99 {_number(sent['p99'], 2)} ms",
            )
        )
    elif section == "flatten":
        print(
            f"  [4] flatten {f['positions_closed']} bracketed positions, {tag}: "
            f"{_number(f['flatten_wall_ms'], 1)} ms wall around EngineControl.flatten "
            f"(its own figure {_number(f['flatten_control_ms'], 1)} ms, order actor "
            f"{_number(f['flatten_order_actor_ms'], 1)} ms; {f['orders_cancelled']} "
            f"stops/targets cancelled; left: {f['remaining_positions']} positions, "
            f"{f['remaining_working_orders']} working orders, "
            f"{f['venue_open_positions']} venue positions; opening the book took "
            f"{f['open_s']:.2f} s)"
        )
        rows.append(
            (
                f"Flatten {f['positions_closed']} bracketed positions, {tag}",
                f"{_number(f['flatten_wall_ms'], 1)} ms",
            )
        )
    return rows


def _report_throughput_run(
    run: dict[str, Any], instruments: int, tag: str, limit: float | None
) -> list[tuple[str, str]]:
    share = f"{100 * run['ticks_per_s'] / limit:.0f} %" if limit else "n/a"
    strategy_names = [name for name in run["conflation"] if name.startswith("strategy:")]
    offered = sum(run["conflation"][name]["offered"] for name in strategy_names)
    conflated = sum(run["conflation"][name]["conflated"] for name in strategy_names)
    per_consumer = ", ".join(
        f"{name} {c['conflated']:,}/{c['offered']:,}" for name, c in run["conflation"].items()
    )
    seen = sum(stats["ticks_seen"] for stats in run["strategies"].values())
    plans = sum(stats["plans_sent"] for stats in run["strategies"].values())
    every_run = ", ".join(_number(rate) for rate in run["all_ticks_per_s"])
    print(
        f"  [2] engine pipeline throughput, batches of {run['batch']}, {tag}: "
        f"{_number(run['ticks_per_s'])} ticks/s = {share} of the raw pykka limit ({tag}); "
        f"median of {len(run['all_ticks_per_s'])} runs: {every_run}"
    )
    print("      details of the median run:")
    print(
        f"      {run['ticks']:,} ticks, {instruments} instruments, 2 strategies; feed drained "
        f"after {run['feed_s']:.2f} s (publish_ticks returned after {run['publish_s']:.2f} s), "
        f"whole pipeline idle after {run['pipeline_s']:.2f} s; {run['dropped']} dropped"
    )
    print(
        f"      ticks conflated (conflated/offered): {per_consumer}; strategies evaluated "
        f"{seen:,} ticks, sent {plans} plans; {run['orders_written']} orders written; "
        f"risk blocks {_compact(run['risk_blocks'])}"
    )
    return [
        (
            f"Engine throughput, batches of {run['batch']}, {tag}",
            f"{_number(run['ticks_per_s'])} ticks/s ({share} of raw)",
        ),
        (
            f"  ticks conflated at strategies, batches of {run['batch']}, {tag}",
            f"{conflated:,} of {offered:,} ({100 * conflated / max(offered, 1):.1f} %)",
        ),
    ]


def _compact(counts: dict[str, float]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{key} {int(value)}" for key, value in sorted(counts.items()))


def _table(rows: Sequence[tuple[str, str]]) -> str:
    left = max(len("Figure"), *(len(label) for label, _ in rows))
    right = max(len("Result"), *(len(value) for _, value in rows))
    lines = [
        f"| {'Figure'.ljust(left)} | {'Result'.ljust(right)} |",
        f"|{'-' * (left + 2)}|{'-' * (right + 2)}|",
    ]
    lines.extend(f"| {label.ljust(left)} | {value.ljust(right)} |" for label, value in rows)
    return "\n".join(lines)


def _parent_main(options: argparse.Namespace) -> int:
    machine = _machine()
    print("Vigil benchmarks (make bench)")
    for key, value in machine.items():
        print(f"  {key:7s} {value}")
    print(
        f"  params  raw {options.raw_ticks:,} ticks x{options.repeats}; engine "
        f"{options.engine_ticks:,} ticks x{options.engine_repeats} per batch size "
        f"{options.batches}, {options.instruments} instruments; latency {options.rate:,} "
        f"ticks/s for {options.latency_seconds} s; flatten {options.positions} positions"
    )
    plan: list[tuple[str, bool]] = [
        ("raw", False),
        ("raw", True),
        ("throughput", False),
        ("throughput", True),
        ("latency", False),
        ("latency", True),
        ("flatten", False),
    ]
    if options.only:
        plan = [(section, pin) for section, pin in plan if section in options.only]
    raw: dict[bool, float] = {}
    rows: list[tuple[str, str]] = []
    failures = 0
    started = time.monotonic()
    for section, pin in plan:
        print(f"\n== {section} ({'pinned to CPU 0' if pin else 'unpinned'})", flush=True)
        outcome = _spawn(section, pin=pin, options=options)
        if outcome.result is None:
            failures += 1
        rows.extend(_report(outcome, raw))
        print(f"  (took {outcome.seconds:.1f} s)", flush=True)
    total = time.monotonic() - started
    print(
        f"\nSummary ({machine['date']}; {machine['cpu']}, {machine['cores']}; "
        f"Python {machine['python']}, pykka {machine['pykka']}; total {total:.0f} s)"
    )
    print(_table(rows))
    if failures:
        print(f"\n{failures} measurement(s) crashed; see above.")
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Vigil benchmarks: pykka hop limit, engine throughput, tick-to-order "
        "latency, flatten time. Never fails on a timing.",
    )
    parser.add_argument("--raw-ticks", type=int, default=200_000, help="ticks per raw chain run")
    parser.add_argument("--repeats", type=int, default=3, help="raw chain runs (median shown)")
    parser.add_argument("--round-trips", type=int, default=2_000, help="single-tick raw trips")
    parser.add_argument("--engine-ticks", type=int, default=100_000, help="throughput ticks")
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 20, 100],
        help="ticks per publish_ticks call; one throughput run per size",
    )
    parser.add_argument(
        "--engine-repeats", type=int, default=3, help="throughput runs per batch size (median)"
    )
    parser.add_argument("--instruments", type=int, default=20, help="instruments (2 and 3)")
    parser.add_argument("--rate", type=int, default=10_000, help="paced feed rate, ticks/s")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="paced run length")
    parser.add_argument("--positions", type=int, default=50, help="positions to flatten")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, help="run only these sections (both pinnings)"
    )
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks (or, with the internal ``--section``, one measurement).

    Returns:
        0 when every measurement produced its figures, 1 when one crashed.
    """
    options = _parser().parse_args(argv)
    if options.section:
        return _child_main(options)
    return _parent_main(options)


if __name__ == "__main__":
    sys.exit(main())
