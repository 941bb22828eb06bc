"""Intent before action: the kill switch's decisions are stored before anything acts on them,
hold in memory when storage fails, and cannot be lost by a dead kill switch or a full inbox.

A "crash image" is a consistent copy of the SQLite database taken (through sqlite's backup API)
at the moment the first flatten action reaches the venue: exactly what a SIGKILL at that
moment would leave on disk. A second engine started on it shows what a restart would do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from pykka._envelope import Envelope

from actors.directory import ActorDirectory
from actors.kill_switch_actor import KillSwitchActor
from actors.mailbox import MailboxFull
from actors.trading_gate import TradingGate
from adapters.http.app import ControlError
from adapters.metrics import EngineMetrics
from adapters.storage.database import Database
from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.config import LiveGateConfig
from domain.enums import Mode, OrderType, PauseCause, Side, TradingState
from domain.messages import (
    ArmTrading,
    BrokerErrorObserved,
    DisarmTrading,
    InjectFault,
    PauseEntries,
    QuerySnapshot,
    QueryTradingState,
    ResetKillSwitch,
    ResumeEntries,
    RevokeLive,
    SetMode,
    SubmitBracket,
    TradePlan,
    TripKillSwitch,
)
from domain.messages.api import FlattenRequest, PauseRequest
from domain.plans import plan_client_id
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config, wait_until

# ---------------------------------------------------------------------------------------------
# HELPERS
# ---------------------------------------------------------------------------------------------


class StorageOutage:
    """Makes every new database connection fail, as a full or dead disk does (the process
    edge: SQLAlchemy's engine), until ``end``."""

    def __init__(self, database: Database) -> None:
        self._engine = database.engine
        self.attempts = 0

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("disk I/O error (drill)"))

    def start(self) -> StorageOutage:
        self._engine.connect = self._refuse  # type: ignore[method-assign]
        return self

    def end(self) -> None:
        self._engine.__dict__.pop("connect", None)


@pytest.fixture
def outages() -> Iterator[list[StorageOutage]]:
    started: list[StorageOutage] = []
    yield started
    for outage in started:
        outage.end()


def storage_outage(desk: Desk, outages: list[StorageOutage]) -> StorageOutage:
    assert desk.engine.database is not None
    outage = StorageOutage(desk.engine.database).start()
    outages.append(outage)
    return outage


def sqlite_path(engine: Engine) -> Path:
    return Path(engine.config.database_url.removeprefix("sqlite:///"))


def crash_image_at_first(
    engine: Engine, method: str, image: Path, monkeypatch: pytest.MonkeyPatch
) -> threading.Event:
    """At the first call of the venue's ``method``, copy the database to ``image`` before the
    venue sees the call: the disk as a SIGKILL at that instant would leave it."""
    assert engine.broker is not None
    real = getattr(engine.broker, method)
    taken = threading.Event()
    source = sqlite_path(engine)

    def copy_then_call(*args: Any, **kwargs: Any) -> Any:
        if not taken.is_set():
            with sqlite3.connect(source) as src, sqlite3.connect(image) as dst:
                src.backup(dst)
            taken.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.broker, method, copy_then_call)
    return taken


def _plan(desk: Desk, *, entry: str) -> TradePlan:
    values: dict[str, Any] = {
        "strategy": "orb_1",
        "instrument": "BBB",
        "side": Side.BUY,
        "entry_price": Decimal(entry),
        "stop_price": Decimal("199"),
        "target_price": Decimal("202"),
        "quantity": 10,
        "signal_ts": desk.clock.now_ns(),
    }
    return TradePlan(
        plan_client_id=plan_client_id(**values),
        entry_type=OrderType.MARKET,
        ts_init=desk.clock.now_ns(),
        **values,
    )


def restarts(engine: Engine, name: str) -> int:
    """Restarts the supervisor counted, once the new incarnation is running (else -1)."""
    supervisor = engine.directory.get("supervisor")
    assert supervisor is not None
    health = supervisor.proxy().actor_health().get(timeout=5)[name]
    return health["restarts"] if health["alive"] else -1


def control_view(engine: Engine) -> Any:
    return engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=5)


# ---------------------------------------------------------------------------------------------
# FINDING 3: FLATTEN IS CRASH-ATOMIC
# ---------------------------------------------------------------------------------------------


def _operator_flatten(desk: Desk) -> None:
    assert desk.engine.control is not None
    done = threading.Thread(
        target=desk.engine.control.flatten, args=(FlattenRequest(reason="drill"),), daemon=True
    )
    done.start()
    desk.settle(lambda: not done.is_alive(), what="POST /flatten answered")


def _kill_switch_with_flatten(desk: Desk) -> None:
    desk.engine.directory.ask(
        "kill_switch", TripKillSwitch(reason="DRILL", flatten=True), timeout_s=5
    )


@pytest.mark.parametrize(
    ("flatten", "expected_state"),
    [(_operator_flatten, TradingState.REDUCING), (_kill_switch_with_flatten, TradingState.HALTED)],
    ids=["operator_flatten", "kill_switch_with_flatten"],
)
def test_a_crash_as_the_flatten_starts_restarts_with_the_flatten_pause_and_finishes_it(
    tmp_path: Path,
    clock: ManualClock,
    desk_factory: Callable[..., Desk],
    engine_factory: Callable[..., Engine],
    monkeypatch: pytest.MonkeyPatch,
    flatten: Callable[[Desk], None],
    expected_state: TradingState,
) -> None:
    first = desk_factory()
    first.ready_to_trade()
    plan_id = open_position(first, quantity=10, stop="95", target="110")
    image = tmp_path / "crash-image.db"
    taken = crash_image_at_first(first.engine, "cancel_order", image, monkeypatch)

    flatten(first)
    first.settle(taken.is_set, what="the first flatten cancel reached the venue")
    first.engine.stop()

    # The restart sees only what was on disk when the first cancel went out.
    config = make_config(
        tmp_path, strategies=[], database_url=f"sqlite:///{image}", logs_dir=str(tmp_path / "l2")
    )
    clock.advance(config.leader.lease_ttl_s + 1)  # the dead process's lease runs out
    second = Desk(engine_factory(config), clock)
    second.quote("AAA", "100.00", "100.10")
    view = second.settle(
        lambda: (
            PauseCause.FLATTEN in control_view(second.engine).state.pause_causes
            and control_view(second.engine)
        ),
        what="restarted with the FLATTEN pause",
    )
    assert view.state.state is expected_state
    # A cancel written as sent but never seen by the venue is settled after in_flight_settle_s.
    second.step(second.engine.config.orders.in_flight_settle_s + 1)
    second.settle(lambda: not second.portfolio().portfolio.positions, what="flattened")
    second.settle(lambda: not second.working_legs(plan_id), what="no sibling left working")
    assert second.engine.broker is not None
    assert all(p.quantity == 0 for p in second.engine.broker.list_positions())


# ---------------------------------------------------------------------------------------------
# FINDING 4: A HALT CANNOT BE LOST
# ---------------------------------------------------------------------------------------------


def test_a_trip_while_storage_is_down_holds_says_so_and_is_stored_when_storage_returns(
    tmp_path: Path,
    clock: ManualClock,
    desk: Desk,
    engine_factory: Callable[..., Engine],
    outages: list[StorageOutage],
) -> None:
    outage = storage_outage(desk, outages)
    # A tell, as the risk actor and the supervisor send it: a raise here used to kill the actor.
    assert desk.engine.directory.tell(
        "kill_switch", TripKillSwitch(reason="DAILY_LOSS_LIMIT", detail="drill", flatten=True)
    )
    view = desk.settle(
        lambda: (
            control_view(desk.engine).state.state is TradingState.HALTED
            and control_view(desk.engine)
        ),
        what="HALTED in memory",
    )
    assert not view.halt_persisted and not view.state.persisted
    assert PauseCause.FLATTEN in view.state.pause_causes
    assert desk.engine.control is not None
    status = desk.engine.control.status()
    assert status.trading_state is TradingState.HALTED
    assert status.halt_reason == "DAILY_LOSS_LIMIT"
    assert status.halt_persisted is False and status.control_persisted is False
    desk.step(1.0)
    desk.step(1.0)  # retried on every tick while storage is down, without crashing
    # The ticks are told, not asked: wait for the retries they cause (the order actor no longer
    # opens a connection of the engine's on every flatten step to add to the count).
    desk.settle(lambda: outage.attempts >= 3, what="storage retried on the ticks")

    outage.end()
    desk.settle(lambda: control_view(desk.engine).halt_persisted, what="HALT stored")
    supervisor = desk.engine.directory.get("supervisor")
    assert supervisor is not None
    assert supervisor.proxy().actor_health().get(timeout=5)["kill_switch"]["restarts"] == 0
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        record = uow.kill_switch.load()
        trail = [row.event for row in uow.events.list_recent(50)]
    assert record is not None and record.active and record.reason == "DAILY_LOSS_LIMIT"
    assert "KILL_SWITCH" in trail  # the audit row written late, not lost

    desk.engine.stop()
    config = desk.engine.config
    after = Desk(engine_factory(config), clock)
    view = after.settle(
        lambda: (
            control_view(after.engine).state.state is TradingState.HALTED
            and control_view(after.engine)
        ),
        what="HALT reloaded after a restart",
    )
    assert PauseCause.FLATTEN in view.state.pause_causes


def test_a_daily_loss_trip_the_kill_switch_never_received_is_sent_again(
    desk_factory: Callable[..., Desk],
) -> None:
    # 0.001 % of 1,000,000 = 10 rupees: a 1.5-rupee move on 10 shares breaches it.
    desk = desk_factory(risk={"max_daily_loss_pct": "0.001"})
    desk.ready_to_trade()
    open_position(desk, quantity=10, stop="95", target="110")
    kill_switch = desk.engine.directory.get("kill_switch")
    assert kill_switch is not None
    kill_switch.stop()  # down (as in a restart) when the breach happens: the tell fails
    desk.quote("AAA", "98.50", "98.60")
    desk.step(1.0)  # the order actor publishes the losing portfolio; risk decides the trip
    # Seen by risk (it checks the limit in the same handler) while the kill switch is still
    # dead: no further timer has fired, and the supervisor restarts it only after three.
    wait_until(
        lambda: desk.engine.control.risk().daily_pnl < -10,  # type: ignore[union-attr]
        message="risk saw the breach",
    )
    assert not desk.engine.directory.is_alive("kill_switch")
    desk.settle(lambda: restarts(desk.engine, "kill_switch") == 1, what="kill switch restarted")
    desk.step(1.0)  # risk re-sends a pending trip at most once a second
    state = desk.settle(
        lambda: (
            desk.engine.directory.is_alive("kill_switch")
            and control_view(desk.engine).state.state is TradingState.HALTED
            and control_view(desk.engine)
        ),
        what="HALTED by the re-sent trip after the kill switch restarted",
    )
    assert state.state.halt_reason == "DAILY_LOSS_LIMIT"
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flattened")


def test_a_kill_switch_that_crashes_holding_an_unstored_halt_gets_it_back(
    desk: Desk, outages: list[StorageOutage]
) -> None:
    outage = storage_outage(desk, outages)
    desk.engine.directory.ask("kill_switch", TripKillSwitch(reason="OPERATOR_DRILL"), timeout_s=5)
    assert not control_view(desk.engine).halt_persisted
    desk.engine.directory.tell("kill_switch", InjectFault(detail="crash with an unstored HALT"))
    desk.settle(lambda: restarts(desk.engine, "kill_switch") == 1, what="kill switch restarted")
    outage.end()
    desk.step(1.0)  # the supervisor re-sends at most once a second
    view = desk.settle(
        lambda: (
            control_view(desk.engine).halt_persisted
            and control_view(desk.engine).state.state is TradingState.HALTED
            and control_view(desk.engine)
        ),
        what="the restarted kill switch holds the HALT, stored",
    )
    assert view.state.halt_reason == "OPERATOR_DRILL"


@pytest.mark.parametrize(
    "command",
    [
        TripKillSwitch(reason="DRILL"),
        PauseEntries(cause=PauseCause.OPERATOR, detail="drill"),
        ResumeEntries(cause=PauseCause.OPERATOR),
        ResetKillSwitch(),
        DisarmTrading(reason="drill"),
        RevokeLive(reason="drill"),
        BrokerErrorObserved(error="REJECTED drill", ts_event=1),
    ],
    ids=lambda command: type(command).__name__,
)
def test_safety_commands_are_never_refused_by_a_full_kill_switch_inbox(
    monkeypatch: pytest.MonkeyPatch, command: object
) -> None:
    monkeypatch.setattr(KillSwitchActor, "put_timeout_s", 0.05)
    # Built, not started: only its inbox is exercised.
    actor = KillSwitchActor(
        name="kill_switch",
        clock=ManualClock(),
        directory=ActorDirectory(),
        mailbox_capacity=1,
        database=None,  # type: ignore[arg-type]
        metrics=EngineMetrics(instance_id="t", strategies=[], feeds=[], queues=[], config_sha="x"),
        instance_id="t",
        initial_mode=Mode.PAPER,
        auto_arm_paper=True,
        live_gates=LiveGateConfig(),
        subscribers=(),
        gate=TradingGate(),
    )
    inbox = actor.actor_inbox
    inbox.put(Envelope(SetMode(mode=Mode.PAPER)))  # full now
    with pytest.raises(MailboxFull):
        inbox.put(Envelope(SetMode(mode=Mode.PAPER)))  # an ordinary command is refused
    inbox.put(Envelope(command))  # taken at once, capacity or not
    assert inbox.qsize() == 2


# ---------------------------------------------------------------------------------------------
# FINDING 7: A DISARM SURVIVES A RESTART; NOTHING PASSES AN ACKNOWLEDGED DECISION
# ---------------------------------------------------------------------------------------------


def test_an_operator_disarm_survives_a_kill_switch_restart_and_an_engine_restart(
    tmp_path: Path, clock: ManualClock, desk: Desk, engine_factory: Callable[..., Engine]
) -> None:
    desk.engine.directory.ask("kill_switch", DisarmTrading(reason="drill"), timeout_s=5)
    desk.engine.directory.tell("kill_switch", InjectFault(detail="restart"))
    desk.settle(
        lambda: restarts(desk.engine, "kill_switch") == 1 and control_view(desk.engine).loaded,
        what="kill switch restarted",
    )
    assert control_view(desk.engine).state.armed is False

    desk.engine.stop()
    after = Desk(engine_factory(desk.engine.config), clock)
    after.quote("AAA", "100.00", "100.10")
    after.settle(lambda: control_view(after.engine).loaded, what="state loaded")
    assert control_view(after.engine).state.armed is False
    blocked = after.send_plan()
    after.settle(
        lambda: (
            after.engine.control.risk().blocks.get("NOT_ARMED", 0)  # type: ignore[union-attr]
            + after.engine.control.risk().blocks.get("TRADING_PAUSED", 0)  # type: ignore[union-attr]
            >= 1
        ),
        what="entry refused",
    )
    assert after.orders_for(blocked.plan_client_id) == []
    view = after.engine.directory.ask("kill_switch", ArmTrading(), timeout_s=5)
    assert view.state.armed


def test_a_reset_is_audited_and_leaves_the_engine_disarmed(desk: Desk) -> None:
    desk.engine.directory.ask("kill_switch", TripKillSwitch(reason="DRILL"), timeout_s=5)
    view = desk.engine.directory.ask(
        "kill_switch", ResetKillSwitch(operator="asha", reason="root cause fixed"), timeout_s=5
    )
    assert view.state.state is TradingState.ACTIVE and not view.state.armed
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        rows = [r.payload for r in uow.events.list_recent(20, event="KILL_SWITCH")]
        record = uow.kill_switch.load()
    assert record is not None and not record.active
    assert {"operator": "asha", "reset_reason": "root cause fixed", "active": False}.items() <= (
        rows[0].items()
    )


@pytest.mark.parametrize(
    "decision",
    [
        TripKillSwitch(reason="DRILL"),
        PauseEntries(cause=PauseCause.OPERATOR, detail="drill"),
        DisarmTrading(reason="drill"),
    ],
    ids=["halt", "pause", "disarm"],
)
def test_no_entry_reaches_the_broker_after_a_decision_is_acknowledged_whatever_was_queued(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, decision: object
) -> None:
    engine = desk.engine
    assert engine.broker is not None
    real_submit = engine.broker.submit_order
    inside = threading.Event()
    release = threading.Event()
    submitted: list[Any] = []

    def held_submit(request: Any) -> None:
        submitted.append(request)
        if len(submitted) == 1:
            inside.set()
            assert release.wait(10)
        real_submit(request)

    monkeypatch.setattr(engine.broker, "submit_order", held_submit)
    first = desk.send_plan()
    desk.settle(inside.is_set, what="the first entry is inside the broker call")
    # Entries queued behind it in the order actor's inbox, already approved by risk.
    for n in range(3):
        plan = _plan(desk, entry=f"200.{10 + n}")
        assert engine.directory.tell(
            "order", SubmitBracket(plan=plan, quantity=10, ts_init=desk.clock.now_ns())
        )
    view = engine.directory.ask("kill_switch", decision, timeout_s=5)
    assert not view.state.entries_allowed  # acknowledged
    release.set()
    desk.settle(lambda: desk.working_legs(first.plan_client_id), what="the first one went on")
    # An ask queued behind the three is answered only after they were handled.
    engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
    late = [request for request in submitted if request.instrument == "BBB"]
    assert late == [], f"entries sent after {decision} was acknowledged: {late}"


def test_an_operator_pause_while_storage_is_down_holds_and_a_resume_is_refused_until_stored(
    clock: ManualClock,
    desk: Desk,
    engine_factory: Callable[..., Engine],
    outages: list[StorageOutage],
) -> None:
    outage = storage_outage(desk, outages)
    assert desk.engine.control is not None
    status = desk.engine.control.pause(PauseRequest(reason="lunch"))
    assert status.trading_state is TradingState.REDUCING and not status.control_persisted
    # Loosening is stored first: with storage down the resume is refused and changes nothing.
    with pytest.raises(ControlError) as refused:
        desk.engine.control.resume()
    assert refused.value.status == 503 and refused.value.code == "STORAGE_UNAVAILABLE"
    assert control_view(desk.engine).state.state is TradingState.REDUCING

    outage.end()
    desk.settle(lambda: control_view(desk.engine).persisted, what="pause stored")
    desk.engine.stop()
    after = Desk(engine_factory(desk.engine.config), clock)
    view = after.settle(lambda: control_view(after.engine).loaded and control_view(after.engine))
    assert [p.detail for p in view.pauses if p.cause is PauseCause.OPERATOR] == ["lunch"]
