"""``python -m tools.replay FILE [--config PATH] [--json]``: a recorded file as a backtest.

Runs the engine (PAPER venue, a fresh temporary SQLite database unless ``--database-url``, no
HTTP, no ticker, no pump) over a CSV of quotes (the ``csv`` feed format, see
adapters/feeds/csv_replay.py) and prints what happened: ticks, seconds, ticks/s, strategy
evaluations (every tick of a strategy's instruments is evaluated: no conflation), orders,
fills, realized PnL and the sha256 digest of the order stream (each order's client id, side,
quantity, prices, status and fills, in creation order; then each fill). Two runs of one file
with one config print the same digest. ``--json`` prints ONE line of JSON with the keys
``ticks, seconds, ticks_per_s, evaluations, orders, fills, pnl, digest`` (and a few more).
``--generate N`` first writes N seeded synthetic quotes over the config's instruments to FILE.

How a replay is deterministic (docs/architecture.md, "Replay"):
- the hot-path actors (feed, strategies, risk, order) and the paper venue run on the shared
  dispatcher's thread, and the replay feeds the next tick only when that thread has nothing
  left to do (``Dispatcher.run_when_idle``): each tick is processed to quiescence, in one
  order, with no thread hand-off;
- the paper venue has no writer thread here: when the dispatcher is idle the replay has it
  write its batch and deliver the batch's reports (``PaperBroker.write_pending``), which are
  processed to quiescence before the next timer or tick;
- time is a ``ManualClock`` set to each tick's ``ts_event``; timers (the venue's latency, the
  order actor's expiry and reconciliation passes) fire on the replay's clock every
  ``heartbeats.timer_interval_ms`` of replay time, on the same thread (at most
  ``_MAX_TIMERS_PER_GAP`` in one gap between ticks: a night's gap is one jump, not 500,000
  timers);
- a message that leaves the dispatcher for an actor on its own thread (the kill switch, after a
  loss limit) is waited for (an ask, answered after it) before the next tick, so its answer
  lands at the same place in every run;
- the scheduler (``scheduler.enabled``) runs on the dispatcher with the order actor and gets
  its timers from the replay's clock, so a file from pre-open to close goes through the
  session's pause, the 15:20 tighten and the 15:25 flat at their places in the file;
- the leader lease and the staleness watchdogs are wall-clock safety for a live feed: the
  replay takes the lease once with a TTL longer than any file, and the supervisor gets no
  timers once the replay runs (it stays up to record a crash; a crash fails the replay).

``replay_file(path, *, config=None)`` does the same in-process and returns a ``ReplayResult``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec
from sqlalchemy import select

from actors.base import SUPERVISOR
from adapters.feeds.csv_replay import CsvTickReplay, TickDataError
from adapters.feeds.synthetic import SyntheticMarket
from adapters.storage.database import Database
from adapters.storage.tables import fills, orders, positions
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.config import EngineConfig
from domain.enums import Mode, PauseCause
from domain.instruments import Instrument
from domain.messages import QuerySnapshot, QueryTradingState, Tick, TicksReceived
from launcher.config import ConfigError, load_config
from launcher.engine import Engine, feed_actor_name, strategy_actor_name

__all__ = ["ReplayError", "ReplayResult", "replay_file", "write_synthetic_csv"]

logger = logging.getLogger(__name__)

_MAX_TIMERS_PER_GAP = 50
_READY_TIMEOUT_S = 30.0
_ASK_TIMEOUT_S = 30.0
# Longer than any recorded file: the lease is safety for live trading, not for a backtest.
_REPLAY_LEASE_TTL_S = 10.0 * 365 * 24 * 3600


class ReplayError(RuntimeError):
    """The replay could not run or did not finish cleanly (the message says why)."""


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did. ``digest`` is equal for two runs of one file and config."""

    ticks: int
    seconds: float
    ticks_per_s: float
    evaluations: int
    expected_evaluations: int
    strategies: int
    orders: int
    fills: int
    pnl: str
    digest: str
    rejected: int = 0
    timers: int = 0
    evaluations_by_strategy: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# THE DRIVER (runs on the dispatcher thread)
# ---------------------------------------------------------------------------------------------


class _ReplayDriver:
    """The dispatcher's idle step: one timer or one tick per call, each to quiescence."""

    def __init__(self, engine: Engine, clock: ManualClock, source: Iterator[Tick]) -> None:
        assert engine.dispatcher is not None
        self._engine = engine
        self._dispatcher = engine.dispatcher
        self._clock = clock
        self._source = source
        # The CSV reader checked every tick: the feed actor need not check them again.
        self._validated = getattr(source, "validates_ticks", False) is True
        self._feed = feed_actor_name(engine.feed_name)
        self._interval_ns = engine.config.heartbeats.timer_interval_ms * 1_000_000
        self._next_timer_ns = clock.now_ns() + self._interval_ns
        self._timers_in_gap = 0
        self._pending: Tick | None = None
        self.ticks = 0
        self.timers = 0
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def step(self) -> bool:
        try:
            return self._step()
        except BaseException as error:
            self.error = error
            self.finished.set()
            return False

    def _step(self) -> bool:
        if self._dispatcher.egress:
            self._wait_for_egress()
            return True
        assert self._engine.broker is not None
        if self._engine.broker.write_pending():
            return True  # the venue's reports are queued: processed before anything else
        tick = self._pending
        if tick is None:
            tick = next(self._source, None)
            if tick is None:
                self.finished.set()
                return False
            self._pending = tick
        if self._next_timer_ns <= tick.ts_event:
            self._fire_timer()
            return True
        self._pending = None
        self._timers_in_gap = 0
        if tick.ts_event > self._clock.now_ns():
            self._clock.set(tick.ts_event)
        stamped = tick if tick.ts_init == tick.ts_event else _restamped(tick)
        self._engine.directory.tell(
            self._feed, TicksReceived(feed=self._feed, ticks=(stamped,), validated=self._validated)
        )
        self.ticks += 1
        return True

    def _fire_timer(self) -> None:
        due = self._next_timer_ns
        self._clock.set(max(due, self._clock.now_ns()))
        self._engine.fire_dispatcher_timer()
        self.timers += 1
        self._timers_in_gap += 1
        self._next_timer_ns = due + self._interval_ns
        if self._timers_in_gap >= _MAX_TIMERS_PER_GAP and self._pending is not None:
            # A long gap (a night, a halt): nothing happens in it but timers; resume the
            # cadence just before the next tick.
            gap = self._pending.ts_event - self._next_timer_ns
            if gap > 0:
                self._next_timer_ns += (gap // self._interval_ns) * self._interval_ns

    def _wait_for_egress(self) -> None:
        names = sorted(self._dispatcher.egress - {SUPERVISOR})
        self._dispatcher.egress.clear()
        for name in names:
            # Answered after what we told it; whatever it told our actors is queued by then.
            self._engine.directory.ask(name, QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)


def _restamped(tick: Tick) -> Tick:
    return msgspec.structs.replace(tick, ts_init=tick.ts_event)


# ---------------------------------------------------------------------------------------------
# THE REPLAY
# ---------------------------------------------------------------------------------------------


def replay_config(
    path: str | Path,
    base: EngineConfig | str | Path | None = None,
    *,
    database_url: str,
    work_dir: Path,
) -> EngineConfig:
    """``base`` (a config, a YAML path, or configs/paper.yaml) made into a replay of ``path``."""
    if base is None or isinstance(base, (str, Path)):
        base = load_config(base, environ={}, dotenv_path=None)
    data = base.model_dump(mode="python")
    data.update(
        mode=Mode.PAPER,
        auto_arm_paper=True,
        database_url=database_url,
        data_dir=str(work_dir / "data"),
        logs_dir=str(work_dir / "logs"),
        dispatcher="shared",
        dispatcher_includes_order=True,
        cpu_affinity=None,
    )
    data["feed"] = {**data["feed"], "kind": "csv", "csv_path": str(path), "replay_speed": 0}
    # The staleness watchdogs are wall-clock safety for a live feed (the supervisor gets no
    # timers in a replay): a limit longer than any file also spares the supervisor's thread a
    # feed heartbeat per 200 ms of replayed time.
    data["heartbeats"] = {**data["heartbeats"], "marketdata_stale_s": _REPLAY_LEASE_TTL_S}
    data["leader"] = {
        **data["leader"],
        "lease_ttl_s": _REPLAY_LEASE_TTL_S,
        "renew_interval_s": _REPLAY_LEASE_TTL_S / 2,
    }
    return EngineConfig.model_validate(data)


def replay_file(
    path: str | Path,
    *,
    config: EngineConfig | str | Path | None = None,
    database_url: str | None = None,
) -> ReplayResult:
    """Replay ``path`` through the engine as a backtest; see the module docstring.

    Args:
        path: a CSV of quotes (adapters/feeds/csv_replay.py format).
        config: the engine config (or a YAML path); default configs/paper.yaml. Its feed,
            mode, database and dispatcher settings are replaced by the replay's.
        database_url: keep the books here; default a fresh SQLite file, deleted afterwards.

    Raises:
        ReplayError: the file is missing, unreadable or has no valid tick, the engine did not
            get ready to trade, or an actor crashed during the replay.
        ConfigError: ``config`` names a YAML file that does not load.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="vigil-replay-") as scratch:
        work_dir = Path(scratch)
        url = database_url or f"sqlite:///{work_dir / 'replay.db'}"
        engine_config = replay_config(path, config, database_url=url, work_dir=work_dir)
        instruments = {
            item.symbol: Instrument(**item.model_dump()) for item in engine_config.instruments
        }
        rejected = [0]

        def count_bad_row(_: object) -> None:
            rejected[0] += 1

        try:
            first = next(iter(CsvTickReplay(path, instruments, on_bad_row=count_bad_row)), None)
        except (OSError, TickDataError) as error:
            raise ReplayError(f"REPLAY_UNREADABLE: {path}: {error}") from error
        if first is None:
            raise ReplayError(f"REPLAY_EMPTY: {path} has no valid tick")
        rejected[0] = 0
        source = CsvTickReplay(path, instruments, on_bad_row=count_bad_row)
        clock = ManualClock(start_ns=first.ts_event - NANOS_PER_SECOND)
        engine = Engine(
            engine_config,
            clock=clock,
            run_ticker=False,
            run_feed=False,
            run_http=False,
            venue_writer_thread=False,
        )
        engine.start()
        try:
            _wait_until_ready(engine)
            driver = _ReplayDriver(engine, clock, source)
            assert engine.dispatcher is not None
            started = time.perf_counter()
            engine.dispatcher.run_when_idle(driver.step)
            while not driver.finished.wait(1.0):
                _check_alive(engine)
            if driver.error is not None:
                raise ReplayError(f"REPLAY_FAILED: {driver.error!r}") from driver.error
            # The last tick's consequences: one more ask through every hot actor.
            for name in engine.directory.names():
                if name != SUPERVISOR:
                    engine.directory.ask(name, QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)
            seconds = time.perf_counter() - started
            _check_alive(engine)
            evaluations = {
                name: engine.directory.ask(
                    strategy_actor_name(name), QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S
                )["ticks_seen"]
                for name in engine.strategy_names
            }
            ticks = driver.ticks
            timers = driver.timers
        finally:
            engine.stop()
        expected = _expected_evaluations(path, engine_config, instruments)
        digest, order_count, fill_count, pnl = _books(url)
    return ReplayResult(
        ticks=ticks,
        seconds=round(seconds, 3),
        ticks_per_s=round(ticks / seconds, 1) if seconds > 0 else 0.0,
        evaluations=sum(evaluations.values()),
        expected_evaluations=expected,
        strategies=len(engine_config.strategies),
        orders=order_count,
        fills=fill_count,
        pnl=str(pnl),
        digest=digest,
        rejected=rejected[0],
        timers=timers,
        evaluations_by_strategy=evaluations,
    )


def _wait_until_ready(engine: Engine) -> None:
    """Fire timers (the clock stands still) until the lease is held, trading is ACTIVE and
    armed, and the order actor has taken over the lease's epoch."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        engine.fire_timer()
        view = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=_ASK_TIMEOUT_S)
        state = view.state
        order = engine.directory.ask("order", QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)
        leadership = order.get("leadership")
        # A file that starts before the session opens (the scheduler on) waits with entries
        # paused for OUTSIDE_SESSION only: that is ready too, the replay's clock opens it.
        if (
            (
                state.state.value == "ACTIVE"
                or (
                    set(state.pause_causes) == {PauseCause.OUTSIDE_SESSION}
                    and state.state.value == "REDUCING"
                )
            )
            and state.armed
            and leadership is not None
            and order.get("taken_over_epoch") == leadership["epoch"]
        ):
            _settle(engine)
            return
        if time.monotonic() > deadline:
            raise ReplayError(
                f"REPLAY_NOT_READY: trading state {state.state.value} "
                f"armed={state.armed} leadership={leadership} within {_READY_TIMEOUT_S}s"
            )
        time.sleep(0.01)  # a retry pace for a start-up poll, not a synchronisation


def _settle(engine: Engine) -> None:
    """Let the start-up's last timer finish everywhere before the first tick: the supervisor
    first (its fan-out is then queued), then the actors it told, then everything else, so no
    start-up message lands among the replay's ticks at a place that depends on scheduling."""
    names = [SUPERVISOR, "kill_switch", "leader"]
    names += [name for name in engine.directory.names() if name not in names]
    for name in names:
        engine.directory.ask(name, QuerySnapshot(), timeout_s=_ASK_TIMEOUT_S)


def _check_alive(engine: Engine) -> None:
    dead = [name for name in engine.directory.names() if not engine.directory.is_alive(name)]
    if dead:
        raise ReplayError(f"REPLAY_ACTOR_DIED: {', '.join(sorted(dead))} (see the log)")


def _expected_evaluations(
    path: Path, config: EngineConfig, instruments: dict[str, Instrument]
) -> int:
    per_instrument: dict[str, int] = {}
    for tick in CsvTickReplay(path, instruments):
        per_instrument[tick.instrument] = per_instrument.get(tick.instrument, 0) + 1
    return sum(
        per_instrument.get(symbol, 0)
        for strategy in config.strategies
        for symbol in strategy.instruments
    )


def _books(url: str) -> tuple[str, int, int, Decimal]:
    """Digest, order count, fill count and realized PnL, read from the stopped engine's
    database (everything written behind has been flushed by its stop)."""
    database = Database.from_url(url, migrate=False)
    try:
        with database.engine.connect() as connection:
            order_rows = connection.execute(
                select(orders).order_by(orders.c.created_ns, orders.c.id)
            ).all()
            fill_rows = connection.execute(
                select(fills).order_by(fills.c.ts_event_ns, fills.c.id)
            ).all()
            realized = connection.execute(select(positions.c.realized_pnl)).scalars().all()
    finally:
        database.dispose()
    digest = hashlib.sha256()
    for row in order_rows:
        digest.update(
            "|".join(
                str(value)
                for value in (
                    row.client_order_id,
                    row.side,
                    row.order_type,
                    row.quantity,
                    row.price,
                    row.trigger_price,
                    row.status,
                    row.filled_quantity,
                    row.average_fill_price,
                )
            ).encode()
            + b"\n"
        )
    for row in fill_rows:
        digest.update(
            f"fill|{row.client_order_id}|{row.side}|{row.quantity}|{row.price}|"
            f"{row.ts_event_ns}\n".encode()
        )
    pnl = sum((Decimal(value) for value in realized), Decimal(0))
    return digest.hexdigest(), len(order_rows), len(fill_rows), pnl


# ---------------------------------------------------------------------------------------------
# A FILE TO REPLAY
# ---------------------------------------------------------------------------------------------


def write_synthetic_csv(
    path: str | Path, ticks: int, config: EngineConfig | str | Path | None = None
) -> None:
    """Write ``ticks`` seeded synthetic quotes over the config's instruments (round-robin,
    ``feed.tick_interval_ms`` apart per instrument) to ``path`` in the csv feed format."""
    if config is None or isinstance(config, (str, Path)):
        config = load_config(config, environ={}, dotenv_path=None)
    listed = [Instrument(**item.model_dump()) for item in config.instruments]
    market = SyntheticMarket(listed, config.feed)
    step_ns = config.feed.tick_interval_ms * 1_000_000
    now_ns = 1_767_325_500 * NANOS_PER_SECOND  # 2026-01-02T03:45:00Z, 09:15 IST
    written = 0
    with Path(path).open("w", encoding="utf-8") as out:
        out.write("ts,instrument,bid,ask,last,volume\n")
        while written < ticks:
            now_ns += step_ns
            for tick in market.next_ticks(now_ns):
                if written == ticks:
                    break
                out.write(
                    f"{now_ns},{tick.instrument},{tick.bid},{tick.ask},{tick.last},{tick.volume}\n"
                )
                written += 1


# ---------------------------------------------------------------------------------------------
# COMMAND LINE
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("file", type=Path, help="CSV of quotes (csv feed format)")
    parser.add_argument("--config", type=Path, default=None, help="engine YAML (default: paper)")
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    parser.add_argument("--database-url", default=None, help="keep the books here")
    parser.add_argument(
        "--generate", type=int, default=None, metavar="N", help="first write N synthetic quotes"
    )
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if options.generate is not None:
            write_synthetic_csv(options.file, options.generate, options.config)
        result = replay_file(options.file, config=options.config, database_url=options.database_url)
    except (ReplayError, ConfigError, OSError) as error:
        print(f"replay failed: {error}", file=sys.stderr)
        return 1
    if options.json:
        print(result.as_json())
        return 0
    print(f"ticks            {result.ticks}")
    print(f"seconds          {result.seconds}")
    print(f"ticks/s          {result.ticks_per_s}")
    print(
        f"evaluations      {result.evaluations} (expected {result.expected_evaluations}: "
        f"every tick of {result.strategies} strategies' instruments)"
    )
    print(f"orders           {result.orders}")
    print(f"fills            {result.fills}")
    print(f"realized PnL     {result.pnl}")
    print(f"digest           {result.digest}")
    return 0 if result.evaluations == result.expected_evaluations else 2


if __name__ == "__main__":
    sys.exit(main())
