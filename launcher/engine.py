"""The composition root: builds adapters and the supervised actor tree from an EngineConfig.

``Engine`` is what ``python -m launcher`` runs and what actor and end-to-end tests build. Tests
pass a ``ManualClock`` and ``run_ticker=False``/``run_feed=False`` and drive time and ticks
themselves with ``fire_timer()`` and ``publish_ticks()``.

Start order: storage (migrated to head), metrics, the broker (``broker.kind``: the paper
venue, whose books survive a crash, or Kite Connect, which connects, loads its instruments and
opens its ticker; with ``feed.kind: kite`` the ticker's ticks enter where a pump's batches would,
once the actors run), then the supervisor, which starts its children in dependency order: risk,
order (its first portfolio goes to the running risk actor),
strategies, feed, watchdog, kill switch (publishes the trading state to the already-running
consumers), leader (publishes leadership), scheduler (``scheduler.enabled``: the trading day),
admin HTTP. Stop order is the reverse.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pykka

from actors.admin_http_actor import AdminHttpActor
from actors.base import SUPERVISOR
from actors.broker_gateway import BrokerGateway, BrokerRateLimit, build_broker_gateway
from actors.control import EngineControl
from actors.directory import ActorDirectory
from actors.dispatcher import Dispatcher
from actors.feed_actor import FeedActor, TickSink, heartbeat_interval_ns
from actors.kill_switch_actor import KillSwitchActor
from actors.leader_actor import LeaderActor, new_lease_holder
from actors.mailbox import FeedDoor, QuoteBoard, TickChannel, TickConflator, TickQueue
from actors.order_actor import OrderActor
from actors.risk_actor import RiskActor
from actors.scheduler_actor import SCHEDULER, SchedulerActor
from actors.strategy_actor import StrategyActor
from actors.supervisor import ChildSpec, Supervisor
from actors.trading_gate import TradingGate
from actors.watchdog_actor import WATCHDOG, WatchdogActor
from adapters.brokers.base import BrokerError, connect_with_retry
from adapters.brokers.faults import FaultyBroker
from adapters.brokers.ig import IgBroker
from adapters.brokers.kite import KiteBroker
from adapters.brokers.paper.broker import PaperBroker
from adapters.calendars import CalendarUnavailable, load_schedule
from adapters.clock import WallClock
from adapters.feeds.pump import FeedPump, build_tick_source
from adapters.logs import log_event
from adapters.metrics import ORDER_LATENCY_BUCKETS_MS, EngineMetrics
from adapters.storage.database import Database
from adapters.storage.day_figures import DayFiguresRecorder
from adapters.storage.journal import OrderJournal
from adapters.storage.repositories import EngineStart, UnitOfWork
from adapters.storage.write_behind import WriteBehind
from adapters.ticker import Ticker
from domain.calendar import exchange_zone, trading_day
from domain.instruments import Instrument
from domain.messages import (
    OrderAckObserved,
    QuerySnapshot,
    Tick,
    TicksReceived,
    TimerFired,
)
from domain.strategies import build_strategy
from launcher.config import config_sha
from launcher.preflight import (
    StartupError,
    check_admin_exposure,
    check_admin_port,
    check_order_journal,
    open_database,
)
from launcher.provenance import git_sha

if TYPE_CHECKING:
    from adapters.brokers.base import BrokerPort
    from domain.clock import Clock
    from domain.config import EngineConfig

__all__ = ["Engine", "feed_actor_name", "strategy_actor_name"]

logger = logging.getLogger(__name__)
# The live feed door keeps every item until more than this many wait (then the newest quote
# per instrument): rounds of quotes per instrument, and a floor for small universes.
_FEED_DOOR_ROUNDS = 4
_FEED_DOOR_MIN_KEEP = 64
# How often the day figures are stored: what a SIGKILL can lose at most.
_DAY_FIGURES_FLUSH_S = 1.0


def strategy_actor_name(strategy: str) -> str:
    return f"strategy:{strategy}"


def feed_actor_name(feed: str) -> str:
    return f"feed:{feed}"


class Engine:
    """One engine instance: one broker account, one actor tree.

    Args:
        config: the validated configuration.
        clock: time source; the wall clock unless a test passes a manual one.
        run_ticker: drive timers from a background thread (production).
        run_feed: run the configured market-data pump (production and ``make paper``).
        run_http: start the admin HTTP actor.
        broker_partial_fill_max: let the paper venue fill at most this much per pass.
        broker_faults: put a ``FaultyBroker`` between the order actor and the venue
            (``engine.faults``) for fault drills.
        venue_writer_thread: the paper venue writes behind on its own thread; False for a
            replay, which has it write between ticks (``PaperBroker.write_pending``).
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Clock | None = None,
        run_ticker: bool = True,
        run_feed: bool = True,
        run_http: bool = True,
        broker_partial_fill_max: int | None = None,
        broker_faults: bool = False,
        venue_writer_thread: bool = True,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or WallClock()
        self.config_sha = config_sha(config)
        self._run_ticker = run_ticker
        self._run_feed = run_feed
        self._run_http = run_http
        self._broker_partial_fill_max = broker_partial_fill_max
        self._broker_faults = broker_faults
        self._venue_writer_thread = venue_writer_thread
        self.faults: FaultyBroker | None = None
        self.instruments: dict[str, Instrument] = {
            item.symbol: Instrument(**item.model_dump()) for item in config.instruments
        }
        self.strategy_names = [s.name for s in config.strategies]
        self.feed_name = config.feed.name
        self.directory = ActorDirectory()
        # One process, one lease identity: a second process with the same instance_id stands by.
        self.lease_holder = new_lease_holder(config.instance_id)
        self.gate = TradingGate()
        self.metrics = EngineMetrics(
            instance_id=config.instance_id,
            strategies=self.strategy_names,
            feeds=[self.feed_name],
            queues=["order", "risk", *map(strategy_actor_name, self.strategy_names)],
            config_sha=self.config_sha,
        )
        self.database: Database | None = None
        # The order actor's write-ahead journal and write-behind: the engine's, so that they
        # outlive a restart of the order actor (its next incarnation flushes, then loads).
        self.order_journal: OrderJournal | None = None
        self.order_store: WriteBehind | None = None
        # The trading day is the local date in the exchange's zone (scheduler.timezone), for
        # PnL today, the day figures and the post-close report alike.
        self.exchange_tz = exchange_zone(config.scheduler.timezone)
        # Signals, approvals, blocks, max heat and ack latencies per trading day: counted in
        # memory by the risk actor and the ack listener, stored as deltas off the hot path.
        self.day_figures: DayFiguresRecorder | None = None
        self.git_sha = "unknown"
        # The paper venue (broker.kind paper) or Kite Connect (broker.kind kite).
        # Or IG (broker.kind ig).
        self.broker: PaperBroker | KiteBroker | IgBroker | None = None
        self.gateway: BrokerGateway | None = None
        self.control: EngineControl | None = None
        self._supervisor: pykka.ActorRef[Any] | None = None
        self._pump: FeedPump | None = None
        self._ticker: Ticker | None = None
        self._http_bound = threading.Event()
        self.http_port: int | None = None
        self._conflators: dict[str, TickChannel] = {}
        # A replayed file is history: its strategies get every tick (TickQueue), and the feed
        # waits for them instead of overwriting (see _deliver_batch).
        self._lossless: list[TickQueue] = []
        # A live feed's ticks wait at a door that keeps only the newest quote per instrument
        # once the feed actor falls behind (actors.mailbox.FeedDoor); a replay has none.
        self.feed_door: FeedDoor | None = None
        # Actors on the shared dispatcher that take TimerFired (fire_dispatcher_timer).
        self._dispatcher_timer_children: list[str] = []
        # The hot-path actors' shared thread (config.dispatcher == "shared"), else None.
        self.dispatcher: Dispatcher | None = (
            Dispatcher("hot-path") if config.dispatcher == "shared" else None
        )
        self._started = False
        # The broker request queue's depth, for the watchdog's rate-limit tripwire: the
        # gateway's ``queue_depth`` once it is built (0 before: never a growing backlog).
        self.broker_queue_depth: Callable[[], int] = lambda: 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Pre-flight, then build and start everything; return once it runs.

        Raises:
            StartupError: a pre-flight check failed (admin port taken, database unusable);
                nothing was started and no lease was taken.
        """
        config = self.config
        # Pre-flight, before the lease can be taken: a process that cannot serve its port or
        # open its database must not lead (a standby could have), and says why in one line.
        if self._run_http:
            check_admin_exposure(config.http)
            check_admin_port(config.http)
        if config.scheduler.enabled:
            # The exchange calendar must load before anything starts: a scheduler that cannot
            # tell a session from a holiday must not trade (one line, not a restart loop).
            try:
                load_schedule(config.scheduler, self._today())
            except CalendarUnavailable as error:
                raise StartupError(str(error)) from error
        database = open_database(config.database_url)
        if config.cpu_affinity:
            os.sched_setaffinity(0, set(config.cpu_affinity))
        log_event(
            logger,
            "START",
            f"Vigil {config.instance_id} starting in {config.mode.value} mode",
            instance_id=config.instance_id,
            mode=config.mode.value,
            config_sha=self.config_sha,
        )
        self.database = database
        self.order_journal = OrderJournal(database)
        check_order_journal(self.order_journal)
        self.order_store = WriteBehind(database, lease_holder=self.lease_holder)
        self.order_store.start()
        self._record_start(database)
        self.day_figures = DayFiguresRecorder(
            database,
            latency_bounds_ms=ORDER_LATENCY_BUCKETS_MS,
            tz=self.exchange_tz,
            flush_interval_s=_DAY_FIGURES_FLUSH_S,
            lease_holder=self.lease_holder,
        )
        self.day_figures.start()
        if config.broker.kind == "kite":
            self.broker = KiteBroker(
                config=config.kite,
                instruments=self.instruments,
                clock=self.clock,
                on_token_expired=self._on_kite_token_expired,
            )
            try:
                account = connect_with_retry(self.broker, config.broker.connect_retry_s)
            except (BrokerError, ValueError) as error:
                # One line for the operator (an expired token says how to log in), and nothing
                # left running: start() has not reached the point where stop() tears down.
                self.broker.close()
                self.day_figures.stop()
                self.order_store.stop()
                self.order_journal.close()
                database.dispose()
                raise StartupError(f"Kite connect failed: {error}") from error
        elif config.broker.kind == "ig":
            try:
                self.broker = IgBroker(
                    config=config.ig, instruments=self.instruments, clock=self.clock
                )
                account = connect_with_retry(self.broker, config.broker.connect_retry_s)
            except (BrokerError, ValueError) as error:
                # As for Kite: one line for the operator, nothing left running.
                if self.broker is not None:
                    self.broker.close()
                self.day_figures.stop()
                self.order_store.stop()
                self.order_journal.close()
                database.dispose()
                raise StartupError(f"IG connect failed: {error}") from error
        else:
            self.broker = PaperBroker(
                config=config.paper_broker,
                instruments=self.instruments,
                database=self.database,
                clock=self.clock,
                partial_fill_max=self._broker_partial_fill_max,
                # Another process may share these venue tables: only the leader's venue acts,
                # and it reloads the books when this process takes over (the order actor
                # tells it).
                follow_leadership=True,
                writer_thread=self._venue_writer_thread,
            )
            account = self.broker.connect()
        logger.info("broker %s connected: account %s", self.broker.name, account.account_id)
        self.broker.set_report_sink(lambda report: self.directory.tell("order", report))
        # The order actor talks to the broker through the port; a fault drill wraps it.
        order_broker: BrokerPort = self.broker
        if self._broker_faults:
            self.faults = order_broker = FaultyBroker(self.broker)
        self._order_broker = order_broker
        # Broker I/O off the order actor's thread. "auto": the paper venue is in process and
        # never blocks, so it is called inline (a thread hand-off would cost more than the
        # call); any real broker goes through the threaded gateway, and so does any broker
        # with a rate limit (the order actor's thread must never wait for a token).
        broker_config = config.broker
        gateway_mode = broker_config.gateway
        if gateway_mode == "auto":
            in_process = broker_config.kind == "paper" and not broker_config.is_rate_limited
            gateway_mode = "inline" if in_process else "thread"
        self.gateway = build_broker_gateway(
            gateway_mode,
            order_broker,
            deliver=lambda outcome: self.directory.tell("order", outcome),
            clock=self.clock,
            gate=self.gate,
            metrics=self.metrics,
            workers=broker_config.gateway_workers,
            rate_limit=BrokerRateLimit(
                per_second=broker_config.rate_limit_per_s,
                per_minute=broker_config.rate_limit_per_min,
            ),
            rate_limit_retries=broker_config.rate_limit_retries,
            backoff_s=broker_config.rate_limit_backoff_s,
            backoff_max_s=broker_config.rate_limit_backoff_max_s,
            flatten_reserve=broker_config.flatten_reserve,
        )
        self.broker_queue_depth = self.gateway.queue_depth
        # The watchdog's latency tripwire sees every ack latency the order actor observes.
        self.metrics.listen_to_order_latency(
            lambda latency_ms: self.directory.tell(
                WATCHDOG, OrderAckObserved(latency_ms=latency_ms, ts_event=self.clock.now_ns())
            )
        )
        # The day's ack latency histogram sees the same observations (in memory: no waiting).
        day_figures = self.day_figures
        self.metrics.listen_to_order_latency(
            lambda latency_ms: day_figures.observe_ack(latency_ms, self.clock.now_ns())
        )
        self.control = EngineControl(
            directory=self.directory,
            clock=self.clock,
            config=config,
            config_sha=self.config_sha,
            metrics=self.metrics,
            # POST /execution/connect and the pre-live check connect on the HTTP thread.
            broker=order_broker,
        )
        if self.dispatcher is not None:
            self.dispatcher.start()
        supervisor = Supervisor.start(
            name=SUPERVISOR,
            clock=self.clock,
            directory=self.directory,
            mailbox_capacity=config.mailbox_capacity,
            children=self._child_specs(),
            metrics=self.metrics,
            supervision=config.supervision,
            heartbeats=config.heartbeats,
            leader=config.leader,
            feeds=[self.feed_name],
            logs_dir=config.logs_dir,
        )
        self._supervisor = supervisor
        self._started = True  # from here on stop() has something to tear down
        self.directory.register(SUPERVISOR, supervisor)
        started = supervisor.proxy().start_children().get(timeout=30)
        # An ask is answered only after on_start: when these return, every child is up (its
        # recovery done, its first state published), so start() means "running".
        for name in started:
            self.directory.ask(name, QuerySnapshot(), timeout_s=30)
        if self._run_http and not self._http_bound.wait(10):
            raise RuntimeError("admin HTTP server did not start within 10 s; see the log")
        if self._run_feed and config.feed.kind == "kite":
            # The ticker pushes: its ticks go through the same door as a pump's batches (the
            # config guarantees the broker is Kite's: the ticker shares its session).
            assert isinstance(self.broker, KiteBroker)
            self.broker.set_tick_sink(
                lambda ticks: self._deliver_batch(
                    TicksReceived(feed=self.feed_name, ticks=tuple(ticks))
                )
            )
        elif self._run_feed and config.feed.kind == "ig":
            # IG's MARKET items on the broker's Lightstreamer session (the config guarantees
            # the broker is IG's), through the same door as a pump's batches.
            assert isinstance(self.broker, IgBroker)
            self.broker.set_tick_sink(
                lambda ticks: self._deliver_batch(
                    TicksReceived(feed=self.feed_name, ticks=tuple(ticks))
                )
            )
        elif self._run_feed:
            self._pump = FeedPump(
                name=self.feed_name,
                sink=self._deliver_batch,
                # A restarted paper session resumes its synthetic market where it traded last.
                source=build_tick_source(
                    config.feed,
                    self.instruments,
                    start_prices=self.broker.last_trade_prices(),
                    # A replayed row that is not a tick is skipped; it counts as a rejection.
                    on_bad_row=lambda _: self.metrics.ticks_rejected_total.labels(
                        feed=self.feed_name, reason="BAD_ROW"
                    ).inc(),
                ),
                clock=self.clock,
                speed=config.feed.replay_speed,
            )
            self._pump.start()
        if self._run_ticker:
            self._ticker = Ticker(
                name="engine-timer",
                interval_s=config.heartbeats.timer_interval_ms / 1000,
                callback=self.fire_timer,
            )
            self._ticker.start()
        self.fire_timer()

    def stop(self) -> None:
        if not self._started:
            if self.dispatcher is not None:
                self.dispatcher.stop()  # a start that failed after starting it
            return
        self._started = False
        if self._ticker is not None:
            self._ticker.stop()
        if self._pump is not None:
            self._pump.stop()
        if self._supervisor is not None:
            try:
                self._supervisor.proxy().stop_children().get(timeout=30)
            except Exception:
                logger.exception("stopping children failed")
            self._supervisor.stop(block=True, timeout=10)
            self.directory.unregister(SUPERVISOR)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.gateway is not None:
            # After the order actor: nothing more is handed over; what is still queued stays
            # in flight in the books and recovery settles it.
            self.gateway.stop()
        if self.order_store is not None:
            self.order_store.stop()
        if self.day_figures is not None:
            # After every actor that counts has stopped: the last figures are stored.
            self.day_figures.stop()
        if self.order_journal is not None:
            self.order_journal.close()
        if self.broker is not None:
            self.broker.close()
        if self.database is not None:
            self.database.dispose()
        log_event(logger, "STOP", f"Vigil {self.config.instance_id} stopped")

    def _record_start(self, database: Database) -> None:
        # Which config and code this process runs, per start: the post-close report lists
        # every config SHA that ran on a day (not the file's SHA at report time).
        self.git_sha = git_sha()
        now = self.clock.now_ns()
        with UnitOfWork(database) as uow:
            uow.engine_starts.record(
                EngineStart(
                    ts_ns=now,
                    trading_day=trading_day(now, self.exchange_tz),
                    instance_id=self.config.instance_id,
                    lease_holder=self.lease_holder,
                    config_sha=self.config_sha,
                    git_sha=self.git_sha,
                    mode=self.config.mode.value,
                    timezone=str(self.exchange_tz),
                )
            )

    # ------------------------------------------------------------------ driving
    def fire_timer(self) -> None:
        """One heartbeat: the venue's clock work, then the supervisor's fan-out."""
        now = self.clock.now_ns()
        if self.broker is not None:
            try:
                self.broker.on_time(now)
            except Exception:
                logger.exception("paper venue time step failed")
        self.directory.tell(SUPERVISOR, TimerFired(now_ns=now))

    def publish_ticks(self, ticks: Sequence[Tick]) -> bool:
        """Hand a batch to the feed actor as the pump would."""
        return self._deliver_batch(TicksReceived(feed=self.feed_name, ticks=tuple(ticks)))

    def stall_feed(self) -> None:
        if self._pump is not None:
            self._pump.stall()

    def resume_feed(self) -> None:
        if self._pump is not None:
            self._pump.resume()

    @property
    def pump(self) -> FeedPump | None:
        return self._pump

    def conflator(self, consumer: str) -> TickChannel:
        return self._conflators[consumer]

    def fire_dispatcher_timer(self) -> None:
        """The timer work of the shared dispatcher's actors only, from the dispatcher's own
        thread: the venue's clock step, then ``TimerFired`` to the actors on it that take
        timers. A replay drives time with this (tools/replay.py): nothing crosses a thread, so
        where the timer lands among the ticks is decided by the replay, not by scheduling."""
        now = self.clock.now_ns()
        if self.broker is not None:
            self.broker.on_time(now)
        for name in self._dispatcher_timer_children:
            self.directory.tell(name, TimerFired(now_ns=now))

    # ------------------------------------------------------------------ wiring
    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock.now_ns() // 1_000_000_000, tz=UTC).date()

    def _deliver_batch(self, batch: TicksReceived) -> bool:
        door = self.feed_door
        if door is not None and isinstance(batch.ticks, tuple | list):
            door.offer(batch)
            return True
        # A replayed file waits for its slowest strategy instead of being conflated; a
        # strategy that stays down (restarting) gets the batch after the put timeout anyway.
        for channel in self._lossless:
            if not channel.wait_for_room(self.config.feed_mailbox_ticks, timeout_s=5.0):
                logger.warning(
                    "replay: %s has %d ticks pending; delivering anyway",
                    channel.consumer,
                    channel.pending_count,
                )
        return self.directory.tell(feed_actor_name(self.feed_name), batch)

    def _make_conflator(
        self, consumer: str, instruments: frozenset[str] | None = None
    ) -> TickConflator:
        conflator = TickConflator(
            consumer=consumer,
            wake=lambda wake: self.directory.tell(consumer, wake),
            instruments=instruments,
        )
        self._conflators[consumer] = conflator
        return conflator

    def _make_quote_board(self, consumer: str) -> QuoteBoard:
        board = QuoteBoard(consumer=consumer)
        self._conflators[consumer] = board
        return board

    def _make_tick_channel(self, consumer: str, instruments: frozenset[str]) -> TickChannel:
        """A strategy's channel: every tick of a replayed file, the latest of a live feed."""
        if self.config.feed.kind != "csv":
            return self._make_conflator(consumer, instruments)
        channel = TickQueue(
            consumer=consumer,
            wake=lambda wake: self.directory.tell(consumer, wake),
            instruments=instruments,
        )
        self._conflators[consumer] = channel
        self._lossless.append(channel)
        return channel

    def _child_specs(self) -> list[ChildSpec]:
        config = self.config
        assert self.database is not None and self.broker is not None
        database, broker, metrics = self.database, self.broker, self.metrics
        journal, write_behind = self.order_journal, self.order_store
        assert journal is not None and write_behind is not None
        order_broker = self._order_broker
        base = {
            "clock": self.clock,
            "directory": self.directory,
            "mailbox_capacity": config.mailbox_capacity,
        }
        # Feed, strategies and risk (and order, if configured) on the shared dispatcher.
        hot = {**base, "dispatcher": self.dispatcher}
        order_base = hot if config.dispatcher_includes_order else base
        self._dispatcher_timer_children = (
            ["order"] if self.dispatcher is not None and config.dispatcher_includes_order else []
        )
        if config.scheduler.enabled and self._dispatcher_timer_children:
            # With the order actor on the dispatcher (a replay), the scheduler runs there too:
            # the replay's clock drives it, and what it tells the kill switch is waited for.
            self._dispatcher_timer_children.append(SCHEDULER)
        # Order and risk only need the latest quote when something else happens (a plan, a
        # report, a timer): they read a board instead of being woken on every tick.
        order_conflator = self._make_quote_board("order")
        risk_conflator = self._make_quote_board("risk")
        specs: list[ChildSpec] = [
            ChildSpec(
                name="risk",
                start=lambda: RiskActor.start(
                    name="risk",
                    limits=config.risk,
                    live_max_order_size=config.live.live_max_order_size,
                    database=database,
                    instruments=self.instruments,
                    conflator=risk_conflator,
                    metrics=metrics,
                    day_figures=self.day_figures,
                    **hot,
                ),
            ),
            ChildSpec(
                name="order",
                start=lambda: OrderActor.start(
                    name="order",
                    database=database,
                    journal=journal,
                    write_behind=write_behind,
                    broker=order_broker,
                    instruments=self.instruments,
                    conflator=order_conflator,
                    metrics=metrics,
                    instance_id=config.instance_id,
                    lease_holder=self.lease_holder,
                    gate=self.gate,
                    reconciliation=config.reconciliation,
                    orders=config.orders,
                    gateway=self.gateway,
                    exchange_tz=self.exchange_tz,
                    # The scheduler finds positions carried past the hard flat from it.
                    portfolio_subscribers=(
                        "risk",
                        *((SCHEDULER,) if config.scheduler.enabled else ()),
                    ),
                    **order_base,
                ),
                receives_timer=True,
            ),
        ]
        # The feed actor hands its sinks only ticks that passed tick_rejection, which covers the
        # venue's own quote check: the venue does not check them twice.
        sinks: list[TickSink] = [
            broker.on_validated_tick,
            order_conflator.offer,
            risk_conflator.offer,
        ]
        for strategy_config in config.strategies:
            name = strategy_actor_name(strategy_config.name)
            traded = frozenset(strategy_config.instruments)
            conflator = self._make_tick_channel(name, traded)
            sinks.append(conflator.offer)  # the channel takes only the traded instruments
            specs.append(
                ChildSpec(
                    name=name,
                    start=_strategy_starter(
                        name,
                        strategy_config,
                        self.instruments,
                        config,
                        traded,
                        conflator,
                        metrics,
                        hot,
                    ),
                )
            )
        feed_name = feed_actor_name(self.feed_name)
        if config.feed.kind != "csv":
            self.feed_door = FeedDoor(
                feed=self.feed_name,
                # Bounds the wait at the door: a few rounds of quotes, ~1-2 ms of work.
                keep=max(_FEED_DOOR_MIN_KEEP, _FEED_DOOR_ROUNDS * len(self.instruments)),
                wake=lambda wake: self.directory.tell(feed_name, wake),
            )
        door = self.feed_door
        specs.append(
            ChildSpec(
                name=feed_name,
                start=lambda: FeedActor.start(
                    name=feed_name,
                    feed=self.feed_name,
                    instruments=self.instruments,
                    sinks=sinks,
                    metrics=metrics,
                    heartbeat_every_ns=heartbeat_interval_ns(config.heartbeats.marketdata_stale_s),
                    door=door,
                    **{**hot, "mailbox_capacity": config.feed_mailbox_ticks},
                ),
            )
        )
        specs.append(
            ChildSpec(
                name=WATCHDOG,
                start=lambda: WatchdogActor.start(
                    name=WATCHDOG,
                    config=config.watchdog,
                    database=database,
                    metrics=metrics,
                    instance_id=config.instance_id,
                    # Read through the engine, so a test (or the wiring) can swap the source.
                    queue_depth=lambda: self.broker_queue_depth(),
                    **base,
                ),
                receives_timer=True,
            )
        )
        specs.append(
            ChildSpec(
                name="kill_switch",
                start=lambda: KillSwitchActor.start(
                    name="kill_switch",
                    database=database,
                    metrics=metrics,
                    instance_id=config.instance_id,
                    initial_mode=config.mode,
                    auto_arm_paper=config.auto_arm_paper,
                    live_gates=config.live,
                    subscribers=("order", "risk", SUPERVISOR, WATCHDOG)
                    + ((SCHEDULER,) if config.scheduler.enabled else ()),
                    gate=self.gate,
                    config=config,
                    **base,
                ),
                receives_timer=True,
            )
        )
        specs.append(
            ChildSpec(
                name="leader",
                start=lambda: LeaderActor.start(
                    name="leader",
                    database=database,
                    metrics=metrics,
                    instance_id=config.instance_id,
                    lease_holder=self.lease_holder,
                    config=config.leader,
                    # The kill switch: leadership is one of the LIVE gates.
                    subscribers=("order", SUPERVISOR, "kill_switch"),
                    **base,
                ),
                receives_timer=True,
            )
        )
        if config.scheduler.enabled:
            specs.append(
                ChildSpec(
                    name=SCHEDULER,
                    start=lambda: SchedulerActor.start(
                        name=SCHEDULER,
                        config=config.scheduler,
                        metrics=metrics,
                        load_schedule=lambda today: load_schedule(config.scheduler, today),
                        **order_base,
                    ),
                    receives_timer=True,
                )
            )
        if self._run_http:
            assert self.control is not None
            control = self.control
            specs.append(
                ChildSpec(
                    name="admin_http",
                    start=lambda: AdminHttpActor.start(
                        name="admin_http",
                        control=control,
                        config=config.http,
                        on_bound=self._on_http_bound,
                        rehearsal=config.rehearsal,
                        **base,
                    ),
                )
            )
        return specs

    def _on_kite_token_expired(self, detail: str) -> None:
        """Kite refused the session. The adapter reports it through the report sink, so the
        order actor pauses entries (``BROKER_AUTH``) until a new token works; exits and
        cancels stay in flight for reconciliation, never retried in a loop. This line is the
        operator's, once per refused token."""
        log_event(
            logger,
            "KITE_TOKEN_EXPIRED",
            "Kite access token refused: entries paused until a new token works. Log in again "
            "with `python -m tools.kite_login` (it writes kite.access_token_file, read at the "
            "next request; with KITE_ACCESS_TOKEN instead, restart)",
            level=logging.ERROR,
            detail=detail[:300],
        )

    def _on_http_bound(self, port: int) -> None:
        self.http_port = port
        self._http_bound.set()


def _strategy_starter(
    name: str,
    strategy_config: Any,
    instruments: dict[str, Instrument],
    config: EngineConfig,
    traded: frozenset[str],
    conflator: TickChannel,
    metrics: EngineMetrics,
    base: dict[str, Any],
) -> Callable[[], pykka.ActorRef[Any]]:
    # A fresh strategy object per incarnation: a restart rebuilds indicators from market data.
    def start() -> pykka.ActorRef[Any]:
        return StrategyActor.start(
            name=name,
            strategy=build_strategy(strategy_config, instruments, config.risk),
            instruments=traded,
            conflator=conflator,
            metrics=metrics,
            **base,
        )

    return start
