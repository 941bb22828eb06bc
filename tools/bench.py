"""Benchmarks (``make bench``): eight figures, each next to its target from issue 6.

1. ``chain``     the raw pykka limit: 4 threaded actors in a chain, and the same chain on the
                 shared dispatcher (``actors/dispatcher.py``; "not built" while it is absent).
2. ``intake``    feed intake ticks/s, strategy evaluations/s and conflation %, side by side.
3. ``latency``   tick -> broker submit call at 10,000 ticks/s, for a lone plan and for a
                 bar-close burst (20 instruments x 2 strategies): p50/p99/max.
4. ``flatten``   flatten of 50 bracketed positions: median and p95 of 10 runs.
5. ``overload``  the feed offered twice what figure 2 took in, for 60 s: tick -> submit p99
                 and the peak depth of every inbox.
6. ``recovery``  100 open positions and 100,000 historical orders in storage: ``python -m
                 launcher`` started to ``/ready`` answering 200.
7. ``rss``       resident memory after 100k and after 1M ticks in one engine; the growth.
8. ``replay``    1M seeded quotes (``tools.quotes``) through ``python -m tools.replay FILE
                 --json``, twice: ticks/s, evaluations, orders, and whether the digests match
                 ("not built" while ``tools/replay.py`` is absent).

``python -m tools.bench`` runs them in that order, prints labelled lines as each lands, a
summary table (figure, measured, target) at the end, and writes every number to one JSON file
under ``bench/results/`` named by the UTC time and the host. ``--tiny`` runs every section at a
toy size (the smoke test's mode: it proves the code runs, its numbers mean nothing).

Timings never fail the run: the exit status is 0 unless a measurement crashed or hung past
its deadline (1). Each section runs in a fresh child process (``--section NAME``), so one
engine's threads, metrics registry and SQLite file never disturb the next measurement; a child
prints exactly one ``BENCH_RESULT {json}`` line on stdout, and its stderr is shown only when
it fails.

No engine code is changed to take these figures: the bench only adds pass-through taps on the
engine instance (``engine.directory.tell`` and ``engine.broker.submit_order``) and reads the
inbox sizes of the running actors. What each figure means and how it is taken is written up
in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pykka
import yaml

from adapters.clock import WallClock
from adapters.feeds.synthetic import SyntheticMarket
from adapters.logs import configure_logging
from adapters.storage.database import Database
from adapters.storage.tables import orders
from adapters.ticker import Ticker
from domain.config import EngineConfig, FeedConfig
from domain.enums import LegKind, OrderStatus, OrderType, PauseCause, Side, TradingState
from domain.instruments import Instrument
from domain.messages import QuerySnapshot, SubmitBracket, Tick, TradePlan
from domain.messages.api import FlattenRequest
from domain.messages.control import ResumeEntries
from domain.messages.queries import QueryPortfolio
from domain.plans import client_order_id, plan_client_id
from launcher.engine import Engine, strategy_actor_name
from tools._launcher import EngineProcess, free_port
from tools.quotes import instruments_from_config, write_quotes

__all__ = [
    "SECTIONS",
    "TARGETS",
    "BenchError",
    "Sizes",
    "main",
    "run_section",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
RESULT_MARKER = "BENCH_RESULT "
SECTIONS = ("chain", "intake", "latency", "flatten", "overload", "recovery", "rss", "replay")

TARGETS = {
    "chain": "- (the limit the engine is compared to)",
    "intake": "- (says what each rate counts)",
    "lone": "p50 <= 150 us",
    "burst": "p50 <= 1 ms, p99 <= 3 ms",
    "flatten": "<= 100 ms",
    "overload": "p99 <= 5 ms, inboxes bounded",
    "recovery": "<= 3 s",
    "rss": "growth <= 5 %",
    "replay": ">= 40,000 ticks/s, every tick evaluated, digests equal",
}
"""Issue 6's targets, printed next to each figure (never enforced)."""

_CHAIN_LENGTH = 4
_TIMER_EVERY_S = 0.1  # the production ticker's default (heartbeats.timer_interval_ms)
_ASK_TIMEOUT_S = 5.0
_READY_STABLE_S = 0.3
_DEPTH_SAMPLE_S = 0.01


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is. ``FULL`` is ``make bench``; ``TINY`` the smoke test."""

    chain_ticks: int
    chain_repeats: int
    round_trips: int
    intake_ticks: int
    intake_repeats: int
    intake_batch: int
    instruments: int
    rate: int
    lone_seconds: float
    burst_seconds: float
    flatten_positions: int
    flatten_runs: int
    overload_seconds: float
    overload_fallback_rate: int
    recovery_positions: int
    recovery_orders: int
    recovery_starts: int
    rss_first: int
    rss_total: int
    replay_rows: int
    child_timeout_s: float


FULL = Sizes(
    chain_ticks=200_000,
    chain_repeats=3,
    round_trips=2_000,
    intake_ticks=100_000,
    intake_repeats=3,
    intake_batch=20,
    instruments=20,
    rate=10_000,
    lone_seconds=30.0,
    burst_seconds=15.0,
    flatten_positions=50,
    flatten_runs=10,
    overload_seconds=60.0,
    overload_fallback_rate=40_000,
    recovery_positions=100,
    recovery_orders=100_000,
    recovery_starts=3,
    rss_first=100_000,
    rss_total=1_000_000,
    # The 1M quotes: two runs take ~2-3 min since reconciliation's scheduled runs cost
    # O(open orders), not O(the day's orders) (docs/benchmarks.md).
    replay_rows=1_000_000,
    child_timeout_s=420.0,
)
TINY = Sizes(
    chain_ticks=2_000,
    chain_repeats=1,
    round_trips=20,
    intake_ticks=2_000,
    intake_repeats=1,
    intake_batch=20,
    instruments=4,
    rate=1_000,
    lone_seconds=1.5,
    burst_seconds=1.5,
    flatten_positions=4,
    flatten_runs=2,
    overload_seconds=1.5,
    overload_fallback_rate=2_000,
    recovery_positions=2,
    recovery_orders=1_000,
    recovery_starts=1,
    rss_first=1_000,
    rss_total=4_000,
    replay_rows=2_000,
    child_timeout_s=90.0,
)


class BenchError(RuntimeError):
    """A measurement could not be taken (the engine never became ready, a drain timed out)."""


# =============================================================================================
# 1. THE RAW PYKKA CHAIN, THREADED AND ON THE SHARED DISPATCHER
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
        if self._count >= self._expected:
            self._done.set()


@dataclass(frozen=True)
class _Chain:
    """How to start a 4-actor chain (the last one sets the event at the ``expected``-th
    message) and how to stop it."""

    start: Callable[[int, threading.Event], list[pykka.ActorRef[Any]]]
    stop: Callable[[Sequence[pykka.ActorRef[Any]]], None]


def _threaded_chain(expected: int, done: threading.Event) -> list[pykka.ActorRef[Any]]:
    """Four actors, a thread each: 1-3 forward, 4 sets ``done`` at the ``expected``-th."""
    refs: list[pykka.ActorRef[Any]] = [_Counter.start(expected, done)]
    for _ in range(_CHAIN_LENGTH - 1):
        refs.insert(0, _Forwarder.start(refs[0]))
    return refs


def _shared_chain() -> tuple[_Chain | None, str]:
    """The same chain with the four actors' loops on one shared dispatcher thread, or None and
    why not.

    The dispatcher is built in parallel with this bench (issue 6). Until ``actors/
    dispatcher.py`` exists the figure says "not built". The chain uses only what the dispatcher
    asks of any pykka actor (an inbox from ``Dispatcher.create_inbox``, ``Dispatcher.attach``
    instead of a thread of its own), so bare actors are compared with bare actors."""
    if importlib.util.find_spec("actors.dispatcher") is None:
        return None, "not built (actors/dispatcher.py does not exist)"
    module = importlib.import_module("actors.dispatcher")
    dispatcher_type = getattr(module, "Dispatcher", None)
    if dispatcher_type is None or not all(
        hasattr(dispatcher_type, method) for method in ("create_inbox", "attach", "start", "stop")
    ):
        return None, (
            "not measured: actors.dispatcher.Dispatcher lacks create_inbox/attach/start/stop "
            "(tools/bench.py _shared_chain must learn its API)"
        )

    class _OnDispatcher(pykka.ThreadingActor):
        def __init__(self, dispatcher: Any, capacity: int) -> None:
            self._dispatcher = dispatcher  # before super(): pykka creates the inbox there
            self._capacity = capacity
            super().__init__()

        def _create_actor_inbox(self) -> Any:  # type: ignore[override]
            # Room for the whole run: pykka's own inbox (the threaded chain's) is unbounded.
            return self._dispatcher.create_inbox(
                actor_name=type(self).__name__, capacity=self._capacity, put_timeout_s=60.0
            )

        def _start_actor_loop(self) -> None:
            self._dispatcher.attach(self)

    class _SharedForwarder(_OnDispatcher):
        def __init__(self, next_actor: pykka.ActorRef[Any], dispatcher: Any, capacity: int):
            super().__init__(dispatcher, capacity)
            self._next = next_actor

        def on_receive(self, message: Any) -> None:
            self._next.tell(message)

    class _SharedCounter(_OnDispatcher):
        def __init__(
            self, expected: int, done: threading.Event, dispatcher: Any, capacity: int
        ) -> None:
            super().__init__(dispatcher, capacity)
            self._expected = expected
            self._done = done
            self._count = 0

        def on_receive(self, message: Any) -> None:
            self._count += 1
            if self._count >= self._expected:
                self._done.set()

    dispatchers: list[Any] = []

    def start(expected: int, done: threading.Event) -> list[pykka.ActorRef[Any]]:
        dispatcher = dispatcher_type(name="bench-chain")
        dispatcher.start()
        dispatchers.append(dispatcher)
        capacity = max(expected, 1) + 10
        refs: list[pykka.ActorRef[Any]] = [
            _SharedCounter.start(expected, done, dispatcher, capacity)
        ]
        for _ in range(_CHAIN_LENGTH - 1):
            refs.insert(0, _SharedForwarder.start(refs[0], dispatcher, capacity))
        return refs

    def stop(refs: Sequence[pykka.ActorRef[Any]]) -> None:
        _stop_chain(refs)
        while dispatchers:
            dispatchers.pop().stop()

    return _Chain(start, stop), "built"


def _stop_chain(refs: Sequence[pykka.ActorRef[Any]]) -> None:
    for ref in refs:
        ref.stop(block=True, timeout=10)


def _chain_throughput(chain: _Chain, ticks: Sequence[Tick], count: int) -> float:
    done = threading.Event()
    refs = chain.start(count, done)
    try:
        started = time.perf_counter()
        for index in range(count):
            refs[0].tell(ticks[index % len(ticks)])
        if not done.wait(120):
            raise BenchError(f"the chain did not deliver {count} ticks within 120 s")
        return count / (time.perf_counter() - started)
    finally:
        chain.stop(refs)


def _chain_trips_us(chain: _Chain, ticks: Sequence[Tick], rounds: int) -> list[float]:
    # One tick at a time through the idle chain: four hops with wake-ups, what a lone quote
    # sees (a saturated chain batches the wake-ups away). The counter, expecting 1, sets the
    # event on every message, so one chain serves every round.
    arrived = threading.Event()
    refs = chain.start(1, arrived)
    samples: list[float] = []
    try:
        for index in range(rounds):
            arrived.clear()
            started = time.perf_counter_ns()
            refs[0].tell(ticks[index % len(ticks)])
            if not arrived.wait(5):
                raise BenchError(f"chain round trip {index} took more than 5 s")
            samples.append((time.perf_counter_ns() - started) / 1000)
    finally:
        chain.stop(refs)
    return samples


def _measure_chain(
    chain: _Chain, ticks: Sequence[Tick], *, count: int, repeats: int, rounds: int
) -> dict[str, Any]:
    _chain_throughput(chain, ticks, min(count, 20_000))  # warm-up: threads, allocator
    rates = sorted(_chain_throughput(chain, ticks, count) for _ in range(repeats))
    trips = sorted(_chain_trips_us(chain, ticks, rounds))
    return {
        "ticks_per_s": statistics.median(rates),
        "all_ticks_per_s": rates,
        "trip_us_p50": _percentile(trips, 50),
        "trip_us_p99": _percentile(trips, 99),
    }


def run_chain(sizes: Sizes) -> dict[str, Any]:
    """Figure 1: ticks/s through the 4-actor chain (median of ``chain_repeats`` runs of
    ``chain_ticks``) and one tick's trip through the idle chain, threaded and shared."""
    ticks = _sample_ticks(_bench_instruments(20), steps=50)
    measure = {
        "count": sizes.chain_ticks,
        "repeats": sizes.chain_repeats,
        "rounds": sizes.round_trips,
    }
    figures: dict[str, Any] = {
        "ticks": sizes.chain_ticks,
        "repeats": sizes.chain_repeats,
        "round_trips": sizes.round_trips,
        "threaded": _measure_chain(_Chain(_threaded_chain, _stop_chain), ticks, **measure),
    }
    shared, status = _shared_chain()
    figures["shared_status"] = status
    if shared is not None:
        figures["shared"] = _measure_chain(shared, ticks, **measure)
    return figures


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


def _market(instruments: Sequence[Instrument], *, volatility_bps: float) -> SyntheticMarket:
    return SyntheticMarket(instruments, _feed_config(volatility_bps=volatility_bps))


def _sample_ticks(instruments: Sequence[Instrument], *, steps: int) -> list[Tick]:
    market = _market(instruments, volatility_bps=2.0)
    ticks: list[Tick] = []
    for step in range(steps):
        ticks.extend(market.next_ticks(step + 1))
    return ticks


def _rounds(instruments: Sequence[Instrument], *, steps: int) -> list[list[Tick]]:
    """``steps`` rounds of one tick per instrument (restamped when sent)."""
    market = _market(instruments, volatility_bps=2.0)
    return [market.next_ticks(step + 1) for step in range(steps)]


def _orb(symbols: Sequence[str], name: str = "orb_1") -> dict[str, Any]:
    # 1 s bars, 3-bar windows: a 1-bar opening range, then two bars that may break out of it.
    return {
        "name": name,
        "kind": "orb",
        "instruments": list(symbols),
        "bar_interval_s": 1,
        "params": {
            "range_bars": 1,
            "window_bars": 3,
            "atr_period": 2,
            "stop_atr": 1.0,
            "target_atr": 1.5,
        },
    }


def _ema(symbols: Sequence[str], name: str = "ema_1") -> dict[str, Any]:
    return {
        "name": name,
        "kind": "ema_pullback",
        "instruments": list(symbols),
        "bar_interval_s": 1,
        "params": {
            "fast_period": 2,
            "slow_period": 4,
            "atr_period": 2,
            "stop_atr": 1.0,
            "target_atr": 1.5,
            "cooldown_bars": 0,
        },
    }


def _both_strategies(instruments: Sequence[Instrument]) -> list[dict[str, Any]]:
    """ORB and EMA pullback over every instrument: all bars close on the same second, so
    their plans arrive as a burst (up to 2 x instruments)."""
    symbols = [instrument.symbol for instrument in instruments]
    return [_orb(symbols), _ema(symbols)]


def _engine_config(
    root: Path,
    *,
    instruments: Sequence[Instrument],
    strategies: Sequence[dict[str, Any]],
    volatility_bps: float,
) -> EngineConfig:
    """A PAPER engine on SQLite in ``root``, with risk limits loose enough that plans become
    orders and a venue with no simulated latency (the figures are the engine's own cost)."""
    data = {
        "instance_id": "vigil-bench",
        "mode": "PAPER",
        "auto_arm_paper": True,
        "database_url": f"sqlite:///{root / 'data' / 'vigil.db'}",
        "data_dir": str(root / "data"),
        "logs_dir": str(root / "logs"),
        "log_level": "INFO",
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
        "strategies": list(strategies),
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
        "paper_broker": {"latency_ms": 0},
        "http": {"port": 0, "flatten_timeout_s": 60},
    }
    return EngineConfig.model_validate(data)


def _make_engine(config: EngineConfig, *, run_ticker: bool = False) -> Engine:
    # The production level (INFO) into a file: logging is part of the engine's cost, but the
    # bench's stdout stays readable.
    configure_logging(logs_dir=config.logs_dir, level=config.log_level, stream=False)
    return Engine(config, clock=WallClock(), run_ticker=run_ticker, run_feed=False, run_http=False)


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


def _trading_ready(engine: Engine) -> bool:
    snapshot = engine.directory.ask("order", QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)
    leadership = snapshot.get("leadership") or {}
    trading = snapshot.get("trading") or {}
    return bool(
        leadership.get("is_leader")
        and trading.get("armed")
        and trading.get("state") == TradingState.ACTIVE.value
        and not trading.get("pause_causes")
    )


def _wait_ready(engine: Engine, *, warm_up: Callable[[], None] | None = None) -> None:
    """Wait until the order actor holds the leader lease and sees trading ACTIVE, armed and
    unpaused, for a few timer rounds in a row (the supervisor's first checks can assert and
    clear a pause just after an early look said "ready"). ``warm_up`` publishes a round of
    ticks at each timer tick, so every instrument has a fresh quote before the measurement."""

    def tick() -> None:
        if warm_up is not None:
            warm_up()
        engine.fire_timer()

    ready_since: list[float] = []

    def stable() -> bool:
        if not _trading_ready(engine):
            ready_since.clear()
            return False
        if not ready_since:
            ready_since.append(time.monotonic())
        return time.monotonic() - ready_since[0] >= _READY_STABLE_S

    _wait_until(
        stable, timeout_s=30, what="leader lease and ACTIVE, armed, unpaused trading", every=tick
    )


def _feed_accepted(engine: Engine) -> int:
    """Ticks the feed is done with: taken in by the feed actor, or dropped at the live feed's
    door because newer quotes of their instruments overtook them (``_door_conflated``)."""
    value = engine.metrics.registry.get_sample_value(
        "trader_ticks_total", {"feed": engine.feed_name}
    )
    return int(value or 0) + _door_conflated(engine)


def _door_conflated(engine: Engine) -> int:
    door = engine.feed_door
    return 0 if door is None else door.conflated


def _consumers(engine: Engine) -> list[str]:
    return ["order", "risk", *map(strategy_actor_name, engine.strategy_names)]


def _conflation(engine: Engine) -> dict[str, tuple[int, int]]:
    """(offered, conflated) per conflating consumer."""
    return {
        name: (engine.conflator(name).offered, engine.conflator(name).conflated)
        for name in _consumers(engine)
    }


def _inbox_depth(ref: pykka.ActorRef[Any]) -> int | None:
    """What waits in a running actor's inbox (its bounded weight: ticks for the feed actor,
    messages for the others), read from outside: an ``ask`` would queue behind the very
    backlog it measures."""
    inbox = getattr(ref, "actor_inbox", None)
    load = getattr(inbox, "load", None)  # a BoundedInbox's weight: ticks for the feed
    if isinstance(load, int):
        return load
    qsize = getattr(inbox, "qsize", None)
    return int(qsize()) if callable(qsize) else None


def _actors_idle(engine: Engine) -> bool:
    for name in _consumers(engine):
        if engine.conflator(name).pending_count:
            return False
        ref = engine.directory.get(name)
        if ref is not None and _inbox_depth(ref):
            return False
    return True


def _wait_idle(engine: Engine, *, timeout_s: float = 60) -> None:
    _wait_until(
        lambda: _actors_idle(engine),
        timeout_s=timeout_s,
        what="strategies, risk and order to drain",
        every=engine.fire_timer,
    )


def _strategy_totals(engine: Engine) -> tuple[int, int]:
    """(ticks evaluated, plans sent) over every strategy actor, from their snapshots."""
    evaluated = plans = 0
    for name in engine.strategy_names:
        snapshot = engine.directory.ask(
            strategy_actor_name(name), QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S
        )
        evaluated += int(snapshot["ticks_seen"])
        plans += int(snapshot["plans_sent"])
    return evaluated, plans


def _restamp(ticks: Sequence[Tick], now_ns: int) -> list[Tick]:
    return [msgspec.structs.replace(tick, ts_event=now_ns, ts_init=now_ns) for tick in ticks]


class _Taps:
    """Pass-through observers on the directory and the broker (nothing is replaced or faked):
    the triggering tick's time of each plan, and the moment the broker's ``submit_order`` is
    called for each order."""

    def __init__(self) -> None:
        self.tick_ns: dict[str, int] = {}  # plan id -> its triggering tick's ts_init
        self.sent_ns: dict[str, int] = {}  # client order id -> broker.submit_order called
        self.active = True

    def install(self, engine: Engine) -> None:
        directory_tell = engine.directory.tell

        def tell(name: str, message: object) -> bool:
            if isinstance(message, TradePlan) and self.active:
                self.tick_ns.setdefault(message.plan_client_id, message.ts_init)
            return directory_tell(name, message)

        engine.directory.tell = tell  # type: ignore[method-assign]

    def install_broker(self, engine: Engine) -> None:
        assert engine.broker is not None
        submit_order = engine.broker.submit_order

        def submit(request: Any) -> Any:
            self.sent_ns.setdefault(request.client_order_id, time.time_ns())
            return submit_order(request)

        engine.broker.submit_order = submit  # type: ignore[method-assign]

    def tick_to_submit_ms(self) -> list[float]:
        """Per entry order sent: the triggering tick's ts_init -> its broker submit call.
        Only entries: stops and targets are placed on the entry's fill, not on a tick."""
        samples = []
        for plan_id, tick_ns in self.tick_ns.items():
            sent = self.sent_ns.get(client_order_id(plan_id, LegKind.ENTRY))
            if sent is not None:
                samples.append((sent - tick_ns) / 1e6)
        return samples


class _DepthSampler:
    """Samples every registered actor's inbox and every conflator's pending count each
    ``_DEPTH_SAMPLE_S`` on a thread of its own; keeps the peaks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-depths", daemon=True)

    def __enter__(self) -> _DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(_DEPTH_SAMPLE_S):
            for name, ref in self._engine.directory.items():
                depth = _inbox_depth(ref)
                if depth is not None:
                    self.peaks[name] = max(self.peaks.get(name, 0), depth)
            for name in _consumers(self._engine):
                pending = self._engine.conflator(name).pending_count
                key = f"{name} (conflated ticks)"
                self.peaks[key] = max(self.peaks.get(key, 0), pending)


def _ping_pong(index: int, length: int) -> int:
    """0, 1, ..., length - 1, length - 2, ..., 1, 0, 1, ...: replaying pre-generated rounds
    forwards then backwards keeps every price path continuous (no jump back to the start)."""
    if length < 2:
        return 0
    position = index % (2 * length - 2)
    return position if position < length else 2 * length - 2 - position


def _paced(
    engine: Engine,
    rounds: Sequence[Sequence[Tick]],
    *,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Publish one round (a tick per instrument) every ``len(round) / rate`` s for
    ``seconds``, each tick stamped with the wall clock as it is sent, and the timer every
    100 ms; then wait for the feed to take in what it accepted and the actors to drain.

    ``publish_ticks`` waits for room when the feed's bounded inbox is full (backpressure), so
    a feed that cannot keep up holds the publisher back: the run still ends after ``seconds``
    of wall time, with fewer ticks sent, and ``offered_rate`` says what was achieved."""
    per_round = len(rounds[0])
    interval_s = per_round / rate
    steps = max(1, int(seconds / interval_s))
    before = _feed_accepted(engine)
    door_before = _door_conflated(engine)
    refused = late = 0
    started = time.perf_counter()
    next_timer = started + _TIMER_EVERY_S
    sent_rounds = 0
    for index in range(steps):
        due = started + index * interval_s
        now = time.perf_counter()
        if now - started >= seconds:
            break
        if due > now:
            time.sleep(due - now)  # pacing the feed, not synchronising
        elif now - due > interval_s:
            late += 1
        if not engine.publish_ticks(
            _restamp(rounds[_ping_pong(index, len(rounds))], time.time_ns())
        ):
            refused += per_round
        sent_rounds += 1
        if time.perf_counter() >= next_timer:
            engine.fire_timer()
            next_timer = time.perf_counter() + _TIMER_EVERY_S
    paced_s = time.perf_counter() - started
    offered = sent_rounds * per_round
    _wait_until(
        lambda: _feed_accepted(engine) >= before + offered - refused,
        timeout_s=120,
        what=f"the feed actor to take in {offered - refused} ticks",
        every=engine.fire_timer,
    )
    _wait_idle(engine)
    return {
        "offered": offered,
        "refused": refused,
        "offered_rate": offered / paced_s,
        "late_rounds": late,
        "dropped_at_door": _door_conflated(engine) - door_before,
        "rounds": sent_rounds,
        "rounds_asked": steps,
    }


# =============================================================================================
# 2. FEED INTAKE, STRATEGY EVALUATIONS, CONFLATION
# =============================================================================================


def run_intake(sizes: Sizes, root: Path) -> dict[str, Any]:
    """Figure 2: ``intake_ticks`` pre-generated ticks through ``publish_ticks`` in batches of
    ``intake_batch`` as fast as it accepts them, ``intake_repeats`` times on fresh engines.
    Intake = ticks the feed actor took in / time until it had; evaluations = ticks the
    strategies evaluated (their ``ticks_seen``) / time until they were idle; conflation = the
    share of ticks offered to the strategies that a newer quote overwrote unseen."""
    universe = _bench_instruments(sizes.instruments)
    steps = max(1, sizes.intake_ticks // len(universe))
    # Stamped as if the market ticked at 10,000 ticks/s and ended a second ago, so bars close
    # and the strategies evaluate, plan and trade while we measure.
    step_ns = 1_000_000_000 * len(universe) // 10_000
    start_ns = time.time_ns() - steps * step_ns - 1_000_000_000
    market = _market(universe, volatility_bps=2.0)
    flat = [tick for step in range(steps) for tick in market.next_ticks(start_ns + step * step_ns)]
    runs = [
        _intake_run(flat, sizes=sizes, universe=universe, root=root / f"run-{attempt}")
        for attempt in range(sizes.intake_repeats)
    ]
    runs.sort(key=lambda run: run["intake_ticks_per_s"])
    median = dict(runs[len(runs) // 2])
    median["all_intake_ticks_per_s"] = [run["intake_ticks_per_s"] for run in runs]
    median["repeats"] = sizes.intake_repeats
    return median


def _intake_run(
    flat: Sequence[Tick], *, sizes: Sizes, universe: Sequence[Instrument], root: Path
) -> dict[str, Any]:
    batch = sizes.intake_batch
    chunks = [flat[index : index + batch] for index in range(0, len(flat), batch)]
    config = _engine_config(
        root, instruments=universe, strategies=_both_strategies(universe), volatility_bps=2.0
    )
    engine = _make_engine(config)
    engine.start()
    try:
        # Warm-up ticks are stamped before the measured ones, so none is out of order.
        warm_market = _market(universe, volatility_bps=2.0)
        warm_ns = [flat[0].ts_event - 1_000_000_000]

        def warm_up() -> None:
            warm_ns[0] += 1000
            engine.publish_ticks(warm_market.next_ticks(warm_ns[0]))

        _wait_ready(engine, warm_up=warm_up)
        _wait_idle(engine, timeout_s=30)
        before = _feed_accepted(engine)
        door_before = _door_conflated(engine)
        conflation_before = _conflation(engine)
        evaluated_before, plans_before = _strategy_totals(engine)
        refused = 0
        started = time.perf_counter()
        next_timer = started + _TIMER_EVERY_S
        door = engine.feed_door
        for ticks in chunks:
            if door is not None:
                # As fast as the feed actor takes ticks in, none dropped at the live door: a
                # publisher that outran it would only measure the door's conflation.
                door.wait_for_room(door.keep - len(ticks) + 1, timeout_s=5)
            while not engine.publish_ticks(ticks):
                refused += 1  # the feed's bounded inbox is full: back off, offer it again
                time.sleep(0.0005)
            if time.perf_counter() >= next_timer:
                engine.fire_timer()
                next_timer = time.perf_counter() + _TIMER_EVERY_S
        _wait_until(
            lambda: _feed_accepted(engine) >= before + len(flat),
            timeout_s=180,
            what=f"the feed actor to take in {len(flat)} ticks",
            every=engine.fire_timer,
        )
        fed_s = time.perf_counter() - started
        # Live quotes the feed actor never took in: newer ones of their instruments overtook
        # them at the door while it was behind (what it sustains is what it took in).
        door_dropped = _door_conflated(engine) - door_before
        _wait_idle(engine)
        idle_s = time.perf_counter() - started
        evaluated, plans = _strategy_totals(engine)
        evaluated -= evaluated_before
        plans -= plans_before
        offered = conflated = 0
        for name, (now_offered, now_conflated) in _conflation(engine).items():
            if name.startswith("strategy:"):
                offered += now_offered - conflation_before[name][0]
                conflated += now_conflated - conflation_before[name][1]
        return {
            "ticks": len(flat),
            "batch": batch,
            "instruments": len(universe),
            "strategies": len(engine.strategy_names),
            "intake_ticks_per_s": (len(flat) - door_dropped) / fed_s,
            "offered_ticks_per_s": len(flat) / fed_s,
            "dropped_at_door": door_dropped,
            "feed_s": fed_s,
            "pipeline_s": idle_s,
            "offered_to_strategies": offered,
            "evaluations": evaluated,
            "evaluations_per_s": evaluated / idle_s,
            "conflated": conflated,
            "conflation_pct": 100 * conflated / max(offered, 1),
            "plans": plans,
            "refused_batches": refused,
        }
    finally:
        engine.stop()


# =============================================================================================
# 3. TICK -> BROKER SUBMIT, LONE PLAN AND BAR-CLOSE BURST
# =============================================================================================


def run_latency(sizes: Sizes, root: Path) -> dict[str, Any]:
    """Figure 3: the feed paced at ``rate`` ticks/s over ``instruments`` instruments. Lone: one
    EMA pullback strategy on one instrument (a plan at a time, nothing else in the order
    path). Burst: ORB and EMA pullback on every instrument (all bars close together). Per
    entry: its triggering tick's ``ts_init`` (the wall clock as the bench sent it) -> the
    broker's ``submit_order`` call."""
    universe = _bench_instruments(sizes.instruments)
    lone = _latency_run(
        universe,
        strategies=[_ema([universe[0].symbol])],
        rate=sizes.rate,
        seconds=sizes.lone_seconds,
        root=root / "lone",
    )
    burst = _latency_run(
        universe,
        strategies=_both_strategies(universe),
        rate=sizes.rate,
        seconds=sizes.burst_seconds,
        root=root / "burst",
    )
    return {"rate": sizes.rate, "instruments": len(universe), "lone": lone, "burst": burst}


def _latency_run(
    universe: Sequence[Instrument],
    *,
    strategies: Sequence[dict[str, Any]],
    rate: float,
    seconds: float,
    root: Path,
    depths: bool = False,
) -> dict[str, Any]:
    rounds = _rounds(universe, steps=2_000)
    config = _engine_config(root, instruments=universe, strategies=strategies, volatility_bps=2.0)
    engine = _make_engine(config)
    taps = _Taps()
    taps.install(engine)
    engine.start()
    try:
        taps.install_broker(engine)
        warm_market = _market(universe, volatility_bps=2.0)
        _wait_ready(
            engine, warm_up=lambda: engine.publish_ticks(warm_market.next_ticks(time.time_ns()))
        )
        _wait_idle(engine, timeout_s=30)
        taps.tick_ns.clear()
        taps.sent_ns.clear()
        if depths:
            with _DepthSampler(engine) as sampler:
                pacing = _paced(engine, rounds, rate=rate, seconds=seconds)
            pacing["peak_depths"] = dict(sorted(sampler.peaks.items()))
            pacing["mailbox_capacity"] = config.mailbox_capacity
            pacing["feed_mailbox_ticks"] = config.feed_mailbox_ticks
        else:
            pacing = _paced(engine, rounds, rate=rate, seconds=seconds)
        taps.active = False
        samples = taps.tick_to_submit_ms()
        return {
            **pacing,
            "plans": len(taps.tick_ns),
            "tick_to_submit_ms": _summary(samples),
        }
    finally:
        engine.stop()


# =============================================================================================
# 4. FLATTEN 50 BRACKETED POSITIONS
# =============================================================================================


def _open_brackets(
    engine: Engine, universe: Sequence[Instrument], quotes: dict[str, Tick], count: int
) -> None:
    """Tell the order actor ``count`` market-entry brackets (stop and target 5 % away, which
    a quiet market never reaches), round-robin over ``universe``, alternating BUY and SELL."""
    now = time.time_ns()
    for index in range(count):
        instrument = universe[index % len(universe)]
        side = Side.BUY if index % 2 == 0 else Side.SELL
        entry = instrument.round_price(quotes[instrument.symbol].mid)
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


def _wait_book(engine: Engine, positions: int) -> None:
    def book_ready() -> bool:
        view = engine.directory.ask("order", QueryPortfolio(), timeout_s=_ASK_TIMEOUT_S)
        return bool(
            len(view.portfolio.positions) == positions and view.working_orders == 2 * positions
        )

    _wait_until(
        book_ready,
        timeout_s=120,
        what=f"{positions} open positions with {2 * positions} working stops and targets",
    )


class _QuietMarket:
    """A background thread publishing a round of quiet ticks every 10 ms (1,000 ticks/s over
    10 instruments), keeping the last quote of each instrument."""

    def __init__(self, engine: Engine, universe: Sequence[Instrument]) -> None:
        self._engine = engine
        self._market = _market(universe, volatility_bps=0.2)
        self._lock = threading.Lock()
        self._last: dict[str, Tick] = {}
        self._count = len(universe)
        self._ticker = Ticker(name="bench-market", interval_s=0.01, callback=self._step)

    def _step(self) -> None:
        ticks = self._market.next_ticks(time.time_ns())
        with self._lock:
            self._last.update((tick.instrument, tick) for tick in ticks)
        self._engine.publish_ticks(ticks)

    def quotes(self) -> dict[str, Tick]:
        _wait_until(
            lambda: len(self._last) == self._count, timeout_s=10, what="a quote per instrument"
        )
        with self._lock:
            return dict(self._last)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()


def run_flatten(sizes: Sizes, root: Path) -> dict[str, Any]:
    """Figure 4: in one engine with the production ticker and a quiet market, ``flatten_runs``
    times: open ``flatten_positions`` brackets, time ``EngineControl.flatten`` (pause entries,
    ``FlattenAll``, return once the order actor reports flat), lift the FLATTEN pause."""
    universe = _bench_instruments(10)
    config = _engine_config(root, instruments=universe, strategies=[], volatility_bps=0.2)
    engine = _make_engine(config, run_ticker=True)
    engine.start()
    market = _QuietMarket(engine, universe)
    market.start()
    runs: list[dict[str, Any]] = []
    try:
        for _ in range(sizes.flatten_runs):
            _wait_ready(engine)
            _open_brackets(engine, universe, market.quotes(), sizes.flatten_positions)
            _wait_book(engine, sizes.flatten_positions)
            control = engine.control
            if control is None:
                raise BenchError("engine.control is None after start()")
            started = time.perf_counter()
            completed = control.flatten(FlattenRequest(reason="bench"))
            wall_ms = (time.perf_counter() - started) * 1000
            after = engine.directory.ask("order", QueryPortfolio(), timeout_s=_ASK_TIMEOUT_S)
            runs.append(
                {
                    "wall_ms": wall_ms,
                    "positions_closed": completed.positions_closed,
                    "orders_cancelled": completed.orders_cancelled,
                    "left_positions": len(after.portfolio.positions),
                    "left_working_orders": after.working_orders,
                }
            )
            # The FLATTEN pause keeps the book flat until lifted; the next round needs entries.
            engine.directory.ask(
                "kill_switch", ResumeEntries(cause=PauseCause.FLATTEN), timeout_s=_ASK_TIMEOUT_S
            )
    finally:
        market.stop()
        engine.stop()
    walls = sorted(run["wall_ms"] for run in runs)
    return {
        "positions": sizes.flatten_positions,
        "runs": runs,
        "median_ms": statistics.median(walls),
        "p95_ms": _percentile(walls, 95),
        "max_ms": walls[-1],
    }


# =============================================================================================
# 5. OVERLOAD
# =============================================================================================


def run_overload(sizes: Sizes, root: Path, *, rate: float) -> dict[str, Any]:
    """Figure 5: the burst set-up (2 strategies on every instrument) with the feed offered
    ``rate`` ticks/s (twice figure 2's intake) for ``overload_seconds``; tick -> submit for
    every entry, and the peak of every inbox and conflator sampled every 10 ms."""
    universe = _bench_instruments(sizes.instruments)
    figures = _latency_run(
        universe,
        strategies=_both_strategies(universe),
        rate=rate,
        seconds=sizes.overload_seconds,
        root=root,
        depths=True,
    )
    figures["target_rate"] = rate
    figures["seconds"] = sizes.overload_seconds
    return figures


# =============================================================================================
# 6. RECOVERY
# =============================================================================================


def run_recovery(sizes: Sizes, root: Path) -> dict[str, Any]:
    """Figure 6: an engine opens ``recovery_positions`` real brackets and stops; then
    ``recovery_orders`` historical (terminal) orders are bulk-inserted into the orders table;
    then ``python -m launcher`` on that database is timed from process start to ``/ready``
    answering 200, ``recovery_starts`` times. As many starts of the same config on an empty
    database first: the baseline that separates process start-up from recovery."""
    universe = _bench_instruments(10)
    empty_root = root / "empty"
    empty_root.mkdir()
    empty_config = _engine_config(
        empty_root, instruments=universe, strategies=[], volatility_bps=0.2
    )
    empty_path = empty_root / "recovery.yaml"
    empty_path.write_text(yaml.safe_dump(empty_config.model_dump(mode="json")))
    empty_starts = [_time_to_ready(empty_root, empty_path) for _ in range(sizes.recovery_starts)]
    config = _engine_config(root, instruments=universe, strategies=[], volatility_bps=0.2)
    engine = _make_engine(config, run_ticker=True)
    engine.start()
    market = _QuietMarket(engine, universe)
    market.start()
    try:
        _wait_ready(engine)
        _open_brackets(engine, universe, market.quotes(), sizes.recovery_positions)
        _wait_book(engine, sizes.recovery_positions)
    finally:
        market.stop()
        engine.stop()
    build_started = time.perf_counter()
    _insert_history(config.database_url, sizes.recovery_orders, universe)
    build_s = time.perf_counter() - build_started
    config_path = root / "recovery.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    starts = [_time_to_ready(root, config_path) for _ in range(sizes.recovery_starts)]
    seconds = sorted(start["ready_s"] for start in starts)
    return {
        "positions": sizes.recovery_positions,
        "historical_orders": sizes.recovery_orders,
        "build_s": build_s,
        "starts": starts,
        "empty_database_starts": empty_starts,
        "empty_ready_s_median": statistics.median(start["ready_s"] for start in empty_starts),
        "ready_s_median": statistics.median(seconds),
        "ready_s_max": seconds[-1],
    }


def _insert_history(database_url: str, count: int, universe: Sequence[Instrument]) -> None:
    """``count`` terminal orders of closed brackets (entry filled, one exit filled, the other
    cancelled), in chunks of 10,000 rows per executemany."""
    database = Database.from_url(database_url)
    legs = [
        (LegKind.ENTRY, OrderType.MARKET, OrderStatus.FILLED),
        (LegKind.STOP, OrderType.STOP, OrderStatus.CANCELLED),
        (LegKind.TARGET, OrderType.LIMIT, OrderStatus.FILLED),
    ]
    start_ns = time.time_ns() - 30 * 86_400 * 1_000_000_000  # a month ago
    try:
        rows: list[dict[str, Any]] = []
        for index in range(count):
            bracket, leg_index = divmod(index, len(legs))
            leg, order_type, status = legs[leg_index]
            instrument = universe[bracket % len(universe)]
            price = instrument.reference_price
            filled = status is OrderStatus.FILLED
            side = Side.BUY if (bracket + (leg is not LegKind.ENTRY)) % 2 == 0 else Side.SELL
            ts = start_ns + index * 1_000_000
            rows.append(
                {
                    "client_order_id": f"hist{bracket:09d}{leg.value[0]}",
                    "plan_client_id": f"hist{bracket:09d}",
                    "strategy": "history",
                    "instrument": instrument.symbol,
                    "leg": leg.value,
                    "side": side.value,
                    "order_type": order_type.value,
                    "quantity": 10,
                    "price": price if order_type is OrderType.LIMIT else None,
                    "trigger_price": price if order_type is OrderType.STOP else None,
                    "status": status.value,
                    "filled_quantity": 10 if filled else 0,
                    "average_fill_price": price if filled else None,
                    "broker_order_id": f"histb{index:09d}",
                    "epoch": 1,
                    "reason": "",
                    "created_ns": ts,
                    "updated_ns": ts,
                }
            )
            if len(rows) == 10_000:
                with database.transaction() as connection:
                    connection.execute(orders.insert(), rows)
                rows = []
        if rows:
            with database.transaction() as connection:
                connection.execute(orders.insert(), rows)
    finally:
        database.dispose()


def _time_to_ready(root: Path, config_path: Path) -> dict[str, Any]:
    """Start ``python -m launcher``; seconds from the start to ``/health`` answering (the HTTP
    server is up) and to ``/ready`` answering 200; then stop it with SIGTERM."""
    process = EngineProcess(root, config_path, free_port())
    process.start()
    try:
        health_s = _poll_status(process, "/health") - process.started_at
        ready_s = _poll_status(process, "/ready") - process.started_at
    finally:
        process.terminate()
        process.close()
    return {"health_s": health_s, "ready_s": ready_s}


def _poll_status(process: EngineProcess, path: str) -> float:
    """``time.monotonic()`` when ``GET path`` first answered 200."""
    deadline = time.monotonic() + 60
    while True:
        if not process.alive():
            raise BenchError(f"the engine exited before {path} said 200: {process.stderr_tail()}")
        try:
            if process.client.get(path, timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() >= deadline:
            raise BenchError(f"the engine did not answer {path} 200 within 60 s")
        time.sleep(0.01)  # polling an HTTP endpoint


# =============================================================================================
# 7. RSS GROWTH
# =============================================================================================


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError("no VmRSS in /proc/self/status")


def run_rss(sizes: Sizes, root: Path) -> dict[str, Any]:
    """Figure 7: one engine (the burst set-up) takes ticks as fast as it accepts them, freshly
    generated and stamped with the wall clock; RSS is read once the pipeline is idle after
    ``rss_first`` ticks and again after ``rss_total``."""
    universe = _bench_instruments(sizes.instruments)
    config = _engine_config(
        root, instruments=universe, strategies=_both_strategies(universe), volatility_bps=2.0
    )
    engine = _make_engine(config)
    engine.start()
    market = _market(universe, volatility_bps=2.0)
    try:
        _wait_ready(engine, warm_up=lambda: engine.publish_ticks(market.next_ticks(time.time_ns())))
        before = _feed_accepted(engine)
        readings: dict[str, Any] = {}
        sent = 0
        started = time.perf_counter()
        next_timer = started
        for checkpoint in (sizes.rss_first, sizes.rss_total):
            while sent < checkpoint:
                ticks = market.next_ticks(time.time_ns())
                while not engine.publish_ticks(ticks):
                    time.sleep(0.0005)  # the feed's bounded inbox is full: back off
                sent += len(ticks)
                if time.perf_counter() >= next_timer:
                    engine.fire_timer()
                    next_timer = time.perf_counter() + _TIMER_EVERY_S
            _wait_until(
                lambda expected=before + sent: _feed_accepted(engine) >= expected,
                timeout_s=120,
                what=f"the feed actor to take in {sent} ticks",
                every=engine.fire_timer,
            )
            _wait_idle(engine)
            readings[str(checkpoint)] = {
                "ticks": sent,
                "rss_bytes": _rss_bytes(),
                "seconds": time.perf_counter() - started,
            }
        first = readings[str(sizes.rss_first)]["rss_bytes"]
        last = readings[str(sizes.rss_total)]["rss_bytes"]
        _, plans = _strategy_totals(engine)
        return {
            "readings": readings,
            "first_ticks": sizes.rss_first,
            "total_ticks": sizes.rss_total,
            "rss_first_mb": first / 2**20,
            "rss_total_mb": last / 2**20,
            "growth_pct": 100 * (last - first) / first,
            "plans": plans,
        }
    finally:
        engine.stop()


# =============================================================================================
# 8. REPLAY
# =============================================================================================


_REPLAY_KEYS = (
    "ticks",
    "seconds",
    "ticks_per_s",
    "evaluations",
    "orders",
    "fills",
    "pnl",
    "digest",
)


def run_replay(sizes: Sizes, root: Path, *, timeout_s: float) -> dict[str, Any]:
    """Figure 8: ``replay_rows`` seeded quotes over configs/paper.yaml's 4 instruments, written
    by ``tools.quotes``, replayed twice by ``python -m tools.replay FILE --json`` (the EMA and
    ORB strategies through the engine's actors, a tick evaluated for every tick read)."""
    if not (REPO_ROOT / "tools" / "replay.py").exists():
        return {"built": False, "rows": sizes.replay_rows}
    quotes = root / "quotes.csv"
    write_started = time.perf_counter()
    write_quotes(
        quotes,
        rows=sizes.replay_rows,
        seed=1,
        instruments=instruments_from_config(REPO_ROOT / "configs" / "paper.yaml"),
    )
    runs = [_replay_once(quotes, timeout_s=timeout_s / 2 - 10) for _ in range(2)]
    return {
        "built": True,
        "rows": sizes.replay_rows,
        "generate_s": time.perf_counter() - write_started,
        "runs": runs,
        "digests_match": runs[0]["digest"] == runs[1]["digest"],
    }


def _replay_once(quotes: Path, *, timeout_s: float) -> dict[str, Any]:
    # From the repository root, like ``make``: the tool may read configs/ by a relative path.
    completed = subprocess.run(
        [sys.executable, "-m", "tools.replay", str(quotes), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    for line in reversed(completed.stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "digest" in data:
            missing = [key for key in _REPLAY_KEYS if key not in data]
            if missing:
                raise BenchError(f"tools.replay --json line lacks {missing}: {line}")
            return data
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
    raise BenchError(
        f"tools.replay exited {completed.returncode} without a JSON line with a digest:\n{tail}"
    )


# =============================================================================================
# CHILD PROCESS
# =============================================================================================


def run_section(section: str, sizes: Sizes, *, overload_rate: float | None = None) -> Any:
    """Run one measurement in this process and return its figures (JSON-serialisable).

    Raises:
        BenchError: the engine never got ready, a drain timed out, a tool misbehaved.
        ValueError: an unknown section name.
    """
    # ignore_cleanup_errors: a figure already taken must not be lost because a thread of the
    # stopped engine wrote one more file into logs/ while the directory was being removed
    # (seen once in a loaded smoke run of the overload section).
    with tempfile.TemporaryDirectory(
        prefix=f"vigil-bench-{section}-", ignore_cleanup_errors=True
    ) as directory:
        root = Path(directory)
        if section == "chain":
            return run_chain(sizes)
        if section == "intake":
            return run_intake(sizes, root)
        if section == "latency":
            return run_latency(sizes, root)
        if section == "flatten":
            return run_flatten(sizes, root)
        if section == "overload":
            return run_overload(sizes, root, rate=overload_rate or sizes.overload_fallback_rate)
        if section == "recovery":
            return run_recovery(sizes, root)
        if section == "rss":
            return run_rss(sizes, root)
        if section == "replay":
            return run_replay(sizes, root, timeout_s=sizes.child_timeout_s)
    raise ValueError(f"unknown section {section!r}; choose from {SECTIONS}")


def _sizes(options: argparse.Namespace) -> Sizes:
    sizes = TINY if options.tiny else FULL
    if options.replay_rows is not None:
        # Two runs at a pessimistic 1,500 ticks/s, and the quotes written first.
        timeout_s = max(sizes.child_timeout_s, 60.0 + 2 * options.replay_rows / 1_500)
        sizes = dataclasses.replace(
            sizes, replay_rows=options.replay_rows, child_timeout_s=timeout_s
        )
    return sizes


def _child_main(options: argparse.Namespace) -> int:
    sizes = _sizes(options)
    figures = run_section(options.section, sizes, overload_rate=options.overload_rate)
    print(RESULT_MARKER + json.dumps(figures, default=str), flush=True)
    return 0


# =============================================================================================
# PARENT: orchestration, the report, the JSON file
# =============================================================================================


@dataclass
class _Outcome:
    section: str
    figures: Any = None
    error: str | None = None
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    rows: list[tuple[str, str, str]] = field(default_factory=list)


def _spawn(section: str, *, sizes: Sizes, tiny: bool, overload_rate: float | None) -> _Outcome:
    command = [sys.executable, "-m", "tools.bench", "--section", section]
    if tiny:
        command.append("--tiny")
    command += ["--replay-rows", str(sizes.replay_rows)]
    if overload_rate is not None:
        command += ["--overload-rate", f"{overload_rate:.0f}"]
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=sizes.child_timeout_s,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        return _Outcome(section, error=f"hung: no result after {error.timeout:.0f} s")
    seconds = time.monotonic() - started
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return _Outcome(
                section, figures=json.loads(line[len(RESULT_MARKER) :]), seconds=seconds
            )
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-25:])
    return _Outcome(
        section,
        error=f"crashed: exit status {completed.returncode}, no result line:\n{tail}",
        seconds=seconds,
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
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable",
        "load_at_start": load,
        "python": platform.python_version(),
        "pykka": importlib.metadata.version("pykka"),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "engine_dispatcher": _engine_dispatcher_setting(),
    }


def _engine_dispatcher_setting() -> str:
    """The engine's default ``dispatcher`` setting (shared thread or a thread per actor), which
    the engine figures (2-7) ran with; the bench's configs do not set it."""
    setting = EngineConfig.model_fields.get("dispatcher")
    if setting is None:
        return "threads (no dispatcher setting in this tree)"
    return str(setting.default)


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


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ms(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "no entry order reached the broker"
    return (
        f"p50 {_n(summary['p50'], 2)} / p99 {_n(summary['p99'], 2)} / max "
        f"{_n(summary['max'], 2)} ms (n={summary['count']})"
    )


def _describe(outcome: _Outcome) -> None:
    """Fill ``outcome.lines`` (printed as it lands) and ``outcome.rows`` (the summary table:
    figure, measured, target)."""
    section, f = outcome.section, outcome.figures
    target = TARGETS.get(section, "")
    lines, rows = outcome.lines, outcome.rows
    if f is None:
        lines.append(f"FAILED ({outcome.error})")
        rows.append((f"{SECTIONS.index(section) + 1}. {section}", "FAILED", target or "-"))
        return
    if section == "chain":
        t = f["threaded"]
        lines.append(
            f"[1] raw pykka chain, 4 threaded actors: {_n(t['ticks_per_s'])} ticks/s (median of "
            f"{f['repeats']} x {f['ticks']:,}; all {[round(r) for r in t['all_ticks_per_s']]}); "
            f"one tick through the idle chain p50 {_n(t['trip_us_p50'], 1)} us, p99 "
            f"{_n(t['trip_us_p99'], 1)} us"
        )
        rows.append(
            (
                "1. raw chain, 4 threaded actors",
                f"{_n(t['ticks_per_s'])} ticks/s; idle trip p50 {_n(t['trip_us_p50'], 1)} us",
                target,
            )
        )
        shared = f.get("shared")
        if shared is None:
            lines.append(f"[1] shared-dispatcher chain: {f['shared_status']}")
            rows.append(("1. chain on the shared dispatcher", f["shared_status"], target))
        else:
            lines.append(
                f"[1] shared-dispatcher chain, 4 actors on one thread: "
                f"{_n(shared['ticks_per_s'])} ticks/s; one tick p50 "
                f"{_n(shared['trip_us_p50'], 1)} us, p99 {_n(shared['trip_us_p99'], 1)} us"
            )
            rows.append(
                (
                    "1. chain on the shared dispatcher",
                    f"{_n(shared['ticks_per_s'])} ticks/s; idle trip p50 "
                    f"{_n(shared['trip_us_p50'], 1)} us",
                    target,
                )
            )
    elif section == "intake":
        lines.append(
            f"[2] {f['ticks']:,} ticks, {f['instruments']} instruments x {f['strategies']} "
            f"strategies, batches of {f['batch']} (median of {f['repeats']}; intake of all "
            f"runs {[round(r) for r in f['all_intake_ticks_per_s']]}):"
        )
        lines.append(
            f"    feed intake {_n(f['intake_ticks_per_s'])} ticks/s (ticks the feed actor took "
            f"in) | strategy evaluations {_n(f['evaluations_per_s'])}/s ({f['evaluations']:,} "
            f"ticks evaluated until idle after {f['pipeline_s']:.2f} s) | conflated "
            f"{f['conflation_pct']:.1f} % ({f['conflated']:,} of {f['offered_to_strategies']:,} "
            f"offered to the strategies overwritten unseen); {f['plans']} plans"
        )
        rows.append(
            (
                "2. feed intake / strategy evaluations / conflated",
                f"{_n(f['intake_ticks_per_s'])} ticks/s / {_n(f['evaluations_per_s'])} evals/s "
                f"/ {f['conflation_pct']:.1f} %",
                target,
            )
        )
    elif section == "latency":
        for kind, label in (("lone", "lone plan (1 strategy, 1 instrument)"), ("burst", "")):
            run = f[kind]
            label = label or f"bar-close burst ({f['instruments']} instruments x 2 strategies)"
            lines.append(
                f"[3] tick -> broker submit, {label}, at {_n(run['offered_rate'])} ticks/s "
                f"({run['plans']} plans): {_ms(run['tick_to_submit_ms'])}; "
                f"{run['refused']} ticks refused, {run['late_rounds']} late rounds"
            )
            rows.append(
                (f"3. tick -> broker submit, {kind}", _ms(run["tick_to_submit_ms"]), TARGETS[kind])
            )
    elif section == "flatten":
        walls = ", ".join(f"{run['wall_ms']:.0f}" for run in f["runs"])
        left = sum(run["left_positions"] + run["left_working_orders"] for run in f["runs"])
        lines.append(
            f"[4] flatten {f['positions']} bracketed positions, {len(f['runs'])} runs: median "
            f"{_n(f['median_ms'], 1)} ms, p95 {_n(f['p95_ms'], 1)} ms (all: {walls} ms); "
            f"{left} positions or orders left over in all runs"
        )
        rows.append(
            (
                f"4. flatten {f['positions']} positions",
                f"median {_n(f['median_ms'], 1)} / p95 {_n(f['p95_ms'], 1)} ms",
                target,
            )
        )
    elif section == "overload":
        depths = ", ".join(f"{name} {depth:,}" for name, depth in f["peak_depths"].items())
        lines.append(
            f"[5] overload: {_n(f['target_rate'])} ticks/s asked (2x figure 2's intake) for "
            f"{f['seconds']:.0f} s; offered {_n(f['offered_rate'])} ticks/s, "
            f"{f.get('dropped_at_door', 0):,} of {f['offered']:,} dropped at the live feed's "
            f"door (overtaken by newer quotes of their instruments), {f['refused']:,} refused; "
            f"tick -> submit {_ms(f['tick_to_submit_ms'])}"
        )
        lines.append(
            f"    peak depths (inbox weight: ticks for the feed, messages elsewhere; and ticks "
            f"waiting in each conflator): {depths}; bounds: "
            f"mailbox_capacity {f['mailbox_capacity']:,}, feed_mailbox_ticks "
            f"{f['feed_mailbox_ticks']:,}"
        )
        top = max(
            (item for item in f["peak_depths"].items() if "conflated" not in item[0]),
            key=lambda item: item[1],
            default=("none", 0),
        )
        rows.append(
            (
                "5. overload, tick -> submit",
                f"p99 {_n(f['tick_to_submit_ms']['p99'], 2)} ms (n="
                f"{f['tick_to_submit_ms']['count']}); deepest inbox {top[0]} {top[1]:,}",
                target,
            )
        )
    elif section == "recovery":
        all_starts = ", ".join(f"{start['ready_s']:.2f}" for start in f["starts"])
        health = ", ".join(f"{start['health_s']:.2f}" for start in f["starts"])
        empty = ", ".join(f"{start['ready_s']:.2f}" for start in f["empty_database_starts"])
        lines.append(
            f"[6] recovery: {f['positions']} open positions + {f['historical_orders']:,} "
            f"historical orders (inserted in {f['build_s']:.1f} s); python -m launcher -> "
            f"/ready 200: median {f['ready_s_median']:.2f} s (starts: {all_starts} s; /health "
            f"answered after {health} s); on an empty database: /ready after "
            f"{empty} s"
        )
        rows.append(
            (
                "6. recovery, start -> /ready 200",
                f"{f['ready_s_median']:.2f} s (empty database: {f['empty_ready_s_median']:.2f} s)",
                target,
            )
        )
    elif section == "rss":
        lines.append(
            f"[7] RSS after {f['first_ticks']:,} ticks {f['rss_first_mb']:.1f} MiB, after "
            f"{f['total_ticks']:,} {f['rss_total_mb']:.1f} MiB: growth {f['growth_pct']:+.1f} % "
            f"({f['plans']} plans on the way)"
        )
        rows.append(
            (
                "7. RSS growth",
                f"{f['rss_first_mb']:.0f} -> {f['rss_total_mb']:.0f} MiB "
                f"({f['growth_pct']:+.1f} %)",
                target,
            )
        )
    elif section == "replay":
        if not f["built"]:
            lines.append("[8] replay: not built (tools/replay.py does not exist)")
            rows.append((f"8. replay of {f['rows']:,} quotes", "not built", target))
            return
        first, second = f["runs"]
        lines.append(
            f"[8] replay of {f['rows']:,} quotes, twice: {_n(first['ticks_per_s'])} and "
            f"{_n(second['ticks_per_s'])} ticks/s; {first['ticks']:,} ticks, "
            f"{first['evaluations']:,} evaluations, {first['orders']} orders, {first['fills']} "
            f"fills, PnL {first['pnl']}; digests {'match' if f['digests_match'] else 'DIFFER'} "
            f"({str(first['digest'])[:16]}... / {str(second['digest'])[:16]}...)"
        )
        rows.append(
            (
                f"8. replay of {f['rows']:,} quotes",
                f"{_n(first['ticks_per_s'])} ticks/s, {first['evaluations']:,} evals of "
                f"{first['ticks']:,} ticks ({first['evaluations'] / max(first['ticks'], 1):.2f} "
                f"per tick), {first['orders']} orders, digests "
                f"{'match' if f['digests_match'] else 'DIFFER'}",
                target,
            )
        )


def _table(rows: Sequence[tuple[str, str, str]]) -> str:
    header = ("Figure", "Measured", "Target (issue 6)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [
        "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)) + " |",
        "|" + "|".join("-" * (width + 2) for width in widths) + "|",
    ]
    lines.extend(
        "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"
        for row in rows
    )
    return "\n".join(lines)


def _parent_main(options: argparse.Namespace) -> int:
    sizes = _sizes(options)
    machine = _machine()
    print(f"Vigil benchmarks ({'tiny sizes: smoke only' if options.tiny else 'make bench'})")
    for key, value in machine.items():
        print(f"  {key:17s} {value}")
    sections = [section for section in SECTIONS if not options.only or section in options.only]
    outcomes: list[_Outcome] = []
    overload_rate: float | None = options.overload_rate
    started = time.monotonic()
    for section in sections:
        print(f"\n== {SECTIONS.index(section) + 1}. {section}", flush=True)
        outcome = _spawn(
            section,
            sizes=sizes,
            tiny=options.tiny,
            overload_rate=overload_rate if section == "overload" else None,
        )
        if section == "intake" and outcome.figures and overload_rate is None:
            overload_rate = 2 * outcome.figures["intake_ticks_per_s"]
        _describe(outcome)
        for line in outcome.lines:
            print(f"  {line}")
        print(f"  (took {outcome.seconds:.1f} s)", flush=True)
        outcomes.append(outcome)
    total = time.monotonic() - started
    rows = [row for outcome in outcomes for row in outcome.rows]
    print(
        f"\nSummary ({machine['date']}; {machine['cpu']}, {machine['cores']}; load at start "
        f"{machine['load_at_start']}; Python {machine['python']}, pykka {machine['pykka']}; "
        f"total {total:.0f} s)"
    )
    print(_table(rows))
    path = _write_results(options.results_dir, machine, sizes, outcomes, total)
    print(f"\nAll figures: {path}")
    failures = [outcome.section for outcome in outcomes if outcome.figures is None]
    if failures:
        print(f"{len(failures)} measurement(s) crashed or hung: {', '.join(failures)}")
        return 1
    return 0


def _write_results(
    directory: Path,
    machine: dict[str, str],
    sizes: Sizes,
    outcomes: Sequence[_Outcome],
    total_s: float,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}-{machine['host']}.json"
    document = {
        "machine": machine,
        "sizes": dataclasses.asdict(sizes),
        "total_s": total_s,
        "targets": TARGETS,
        "sections": {
            outcome.section: {
                "figures": outcome.figures,
                "error": outcome.error,
                "seconds": outcome.seconds,
                "summary": [list(row) for row in outcome.rows],
            }
            for outcome in outcomes
        },
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Vigil benchmarks: the eight figures of issue 6, each next to its target. "
        "Never fails on a timing; exit 1 only when a measurement crashed or hung.",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, help="run only these sections (in bench order)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="toy sizes: proves every section runs (smoke test)"
    )
    parser.add_argument(
        "--overload-rate",
        type=float,
        help="ticks/s offered in the overload section (default: twice the measured intake)",
    )
    parser.add_argument(
        "--replay-rows",
        type=int,
        help="quotes in the replay figure (default 1,000,000, the issue's figure)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON file of the run goes (default bench/results/)",
    )
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks (or, with the internal ``--section``, one measurement).

    Returns:
        0 when every measurement produced its figures, 1 when one crashed or hung.
    """
    options = _parser().parse_args(argv)
    if options.section:
        return _child_main(options)
    return _parent_main(options)


if __name__ == "__main__":
    sys.exit(main())
