"""The broker gateway: broker calls off the order actor's thread, outcomes back as messages.

Two levels: the gateway alone over a recording broker double (priorities, per-order order,
parallelism, stop, outcomes), and the whole engine with the threaded gateway in front of the
paper venue (a broker that does not answer never stalls the order actor; a stop with requests
queued leaves their orders in flight, never rejected).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.broker_gateway import InlineBrokerGateway, ThreadedBrokerGateway
from actors.trading_gate import TradingGate
from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.enums import DenialCode, LegKind, Mode, OrderStatus, OrderType, Side, TradingState
from domain.messages import (
    BrokerRequestCompleted,
    BrokerRequestFailed,
    BrokerRequestKind,
    BrokerRequestWithheld,
    FlattenAll,
    OrderRequest,
    QueryOrders,
    QuerySnapshot,
    TradingStateChanged,
    TripKillSwitch,
)
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config, wait_until


def order_request(client_order_id: str, instrument: str = "AAA") -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        instrument=instrument,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=10,
        price=None,
        trigger_price=None,
    )


class RecordingBroker:
    """A broker double: records each call in the order it started, can hold the calls of
    chosen orders until released, sleep in submits (a slow broker), or raise."""

    def __init__(self, submit_delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.started_ns: dict[tuple[str, str], int] = {}
        self.finished_ns: dict[tuple[str, str], int] = {}
        self.raises: dict[tuple[str, str], Exception] = {}
        self.holds: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._submit_delay_s = submit_delay_s

    def hold(self, client_order_id: str) -> threading.Event:
        self.entered[client_order_id] = threading.Event()
        release = self.holds[client_order_id] = threading.Event()
        return release

    def _call(self, method: str, client_order_id: str) -> None:
        key = (method, client_order_id)
        with self._lock:
            self.calls.append(key)
            self.started_ns[key] = time.perf_counter_ns()
        release = self.holds.pop(client_order_id, None)
        if release is not None:
            self.entered[client_order_id].set()
            assert release.wait(10), f"{key} was never released"
        if method == "submit" and self._submit_delay_s:
            time.sleep(self._submit_delay_s)  # the slow broker this double stands for
        with self._lock:
            self.finished_ns[key] = time.perf_counter_ns()
        error = self.raises.get(key)
        if error is not None:
            raise error

    def submit_order(self, request: OrderRequest) -> None:
        self._call("submit", request.client_order_id)

    def cancel_order(self, client_order_id: str) -> None:
        self._call("cancel", client_order_id)

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: int,
        to_market: bool = False,
        trigger_price: Decimal | None = None,
    ) -> None:
        what = "market" if to_market else "move" if trigger_price is not None else "modify"
        self._call(f"{what}:{quantity}", client_order_id)


class Outbox:
    """Where the gateway delivers outcomes (the order actor's place)."""

    def __init__(self) -> None:
        self.messages: list[object] = []
        self.accepting = True

    def deliver(self, message: object) -> bool:
        self.messages.append(message)
        return self.accepting


@pytest.fixture
def gateways() -> Any:
    built: list[ThreadedBrokerGateway] = []

    def build(broker: Any, outbox: Outbox, **kwargs: Any) -> ThreadedBrokerGateway:
        gateway = ThreadedBrokerGateway(
            broker, deliver=outbox.deliver, clock=ManualClock(), **kwargs
        )
        built.append(gateway)
        return gateway

    yield build
    for gateway in built:
        gateway.stop(timeout_s=2)


def wait_calls(broker: RecordingBroker, count: int) -> list[tuple[str, str]]:
    wait_until(lambda: len(broker.finished_ns) >= count, timeout_s=10, message=f"{count} calls")
    return list(broker.calls)


class TestPriorities:
    def test_closing_requests_go_first_then_cancels_then_protective_legs_then_entries(
        self, gateways: Any
    ) -> None:
        # FIFO within each priority. An exit and a stop made a market order close a position
        # now: a flatten sends them only once their bracket's cancels are answered, so they
        # pass the other brackets' cancels still waiting.
        broker, outbox = RecordingBroker(), Outbox()
        gateway = gateways(broker, outbox, workers=1)
        release = broker.hold("busy")
        gateway.submit(order_request("busy"), leg=LegKind.ENTRY)
        assert broker.entered["busy"].wait(10)
        # Queued while the only worker is inside the broker:
        gateway.submit(order_request("entry-1"), leg=LegKind.ENTRY)
        gateway.submit(order_request("exit-1"), leg=LegKind.EXIT)
        gateway.submit(order_request("entry-2"), leg=LegKind.ENTRY)
        gateway.cancel("working-1", leg=LegKind.TARGET)
        gateway.modify("stop-1", quantity=5, leg=LegKind.STOP)
        gateway.turn_to_market("stop-2", quantity=5, leg=LegKind.STOP)
        gateway.move_stop("stop-3", quantity=5, trigger_price=Decimal("99"), leg=LegKind.STOP)
        gateway.cancel("working-2", leg=LegKind.ENTRY)
        assert gateway.snapshot()["queued"] == 8
        assert gateway.queue_depths() == {"close": 2, "cancel": 2, "protective": 2, "entry": 2}
        release.set()
        assert wait_calls(broker, 9) == [
            ("submit", "busy"),
            ("submit", "exit-1"),
            ("market:5", "stop-2"),
            ("cancel", "working-1"),
            ("cancel", "working-2"),
            ("modify:5", "stop-1"),
            ("move:5", "stop-3"),
            ("submit", "entry-1"),
            ("submit", "entry-2"),
        ]

    def test_a_cancel_never_overtakes_its_own_submit_and_lends_it_its_priority(
        self, gateways: Any
    ) -> None:
        broker, outbox = RecordingBroker(), Outbox()
        gateway = gateways(broker, outbox, workers=1)
        release = broker.hold("busy")
        gateway.submit(order_request("busy"), leg=LegKind.ENTRY)
        assert broker.entered["busy"].wait(10)
        gateway.submit(order_request("first-entry"), leg=LegKind.ENTRY)
        gateway.submit(order_request("cancelled-entry"), leg=LegKind.ENTRY)
        gateway.cancel("cancelled-entry", leg=LegKind.ENTRY)
        release.set()
        assert wait_calls(broker, 4) == [
            ("submit", "busy"),
            ("submit", "cancelled-entry"),  # goes ahead with its cancel's priority
            ("cancel", "cancelled-entry"),  # but only after its submit
            ("submit", "first-entry"),
        ]

    def test_an_identical_request_still_waiting_for_the_same_order_is_not_queued_twice(
        self, gateways: Any
    ) -> None:
        broker, outbox = RecordingBroker(), Outbox()
        gateway = gateways(broker, outbox, workers=1)
        release = broker.hold("busy")
        gateway.submit(order_request("busy"), leg=LegKind.ENTRY)
        assert broker.entered["busy"].wait(10)
        gateway.cancel("leg", leg=LegKind.STOP)
        gateway.cancel("leg", leg=LegKind.STOP)
        gateway.modify("other", quantity=4, leg=LegKind.STOP)
        gateway.modify("other", quantity=6, leg=LegKind.STOP)  # a different change: kept
        release.set()
        assert wait_calls(broker, 4) == [
            ("submit", "busy"),
            ("cancel", "leg"),
            ("modify:4", "other"),
            ("modify:6", "other"),
        ]


class TestConcurrency:
    def test_a_slow_broker_answer_delays_neither_the_caller_nor_other_orders(
        self, gateways: Any
    ) -> None:
        """200 ms per submit, as a real broker takes: the caller hands over in microseconds
        and the second instrument's submit and a cancel start while the first is still in the
        broker; the first order's own cancel waits for its submit."""
        broker, outbox = RecordingBroker(submit_delay_s=0.2), Outbox()
        gateway = gateways(broker, outbox, workers=4)
        started = time.perf_counter_ns()
        gateway.submit(order_request("first", "AAA"), leg=LegKind.ENTRY)
        gateway.submit(order_request("second", "BBB"), leg=LegKind.ENTRY)
        gateway.cancel("working", leg=LegKind.TARGET)
        gateway.cancel("first", leg=LegKind.ENTRY)
        handed_over_ms = (time.perf_counter_ns() - started) / 1e6
        wait_calls(broker, 4)
        first_done = broker.finished_ns[("submit", "first")]
        assert broker.started_ns[("submit", "second")] < first_done
        assert broker.started_ns[("cancel", "working")] < first_done
        assert broker.started_ns[("cancel", "first")] >= first_done
        # The deadline: far below one broker answer (the inline call would take >= 200 ms).
        assert handed_over_ms < 100, f"handing four requests over took {handed_over_ms:.1f} ms"


class TestOutcomes:
    def test_failures_come_back_as_messages_and_successes_only_for_modifies(
        self, gateways: Any
    ) -> None:
        broker, outbox = RecordingBroker(), Outbox()
        broker.raises[("submit", "refused")] = BrokerRejected("INVALID_QUANTITY: q=0")
        broker.raises[("submit", "lost")] = BrokerUnavailable("BROKER_TIMEOUT: lost")
        broker.raises[("cancel", "stuck")] = BrokerRejected("ORDER_NOT_CANCELLABLE: x")
        broker.raises[("modify:3", "bug")] = RuntimeError("adapter bug")
        gateway = gateways(broker, outbox, workers=1)
        gateway.submit(order_request("refused"), leg=LegKind.ENTRY)
        gateway.submit(order_request("lost"), leg=LegKind.STOP)
        gateway.submit(order_request("fine"), leg=LegKind.TARGET)
        gateway.cancel("stuck", leg=LegKind.STOP)
        gateway.modify("bug", quantity=3, leg=LegKind.STOP)
        gateway.modify("resized", quantity=7, leg=LegKind.TARGET)
        wait_until(lambda: len(outbox.messages) == 5, message="five outcomes")
        by_id = {m.client_order_id: m for m in outbox.messages}  # type: ignore[attr-defined]
        assert "fine" not in by_id  # a submit that went through: the broker's reports follow
        refused = by_id["refused"]
        assert isinstance(refused, BrokerRequestFailed) and refused.rejected
        assert refused.request is BrokerRequestKind.SUBMIT
        assert refused.error.startswith("INVALID_QUANTITY")
        lost = by_id["lost"]
        assert isinstance(lost, BrokerRequestFailed) and not lost.rejected
        stuck = by_id["stuck"]
        assert isinstance(stuck, BrokerRequestFailed) and stuck.rejected
        assert stuck.request is BrokerRequestKind.CANCEL
        bug = by_id["bug"]  # an unexpected error: the broker may have acted, so unknown
        assert isinstance(bug, BrokerRequestFailed) and not bug.rejected and bug.quantity == 3
        resized = by_id["resized"]
        assert isinstance(resized, BrokerRequestCompleted) and resized.quantity == 7
        assert gateway.snapshot()["failures_total"] == 4

    def test_an_entry_queued_when_the_kill_switch_stops_entries_is_withheld_not_sent(
        self, gateways: Any
    ) -> None:
        broker, outbox, gate = RecordingBroker(), Outbox(), TradingGate()
        gate.decide(
            TradingStateChanged(
                state=TradingState.ACTIVE,
                mode=Mode.PAPER,
                armed=True,
                pause_causes=(),
                halt_reason=None,
                ts_event=1,
            )
        )
        gateway = gateways(broker, outbox, workers=1, gate=gate)
        release = broker.hold("busy")
        gateway.submit(order_request("busy"), leg=LegKind.ENTRY)
        assert broker.entered["busy"].wait(10)
        gateway.submit(order_request("queued-entry"), leg=LegKind.ENTRY)
        gateway.submit(order_request("queued-exit"), leg=LegKind.EXIT)
        gate.decide(
            TradingStateChanged(
                state=TradingState.HALTED,
                mode=Mode.PAPER,
                armed=True,
                pause_causes=(),
                halt_reason="DRILL",
                ts_event=2,
            )
        )
        release.set()
        wait_until(lambda: outbox.messages, message="the entry withheld")
        wait_calls(broker, 2)
        assert ("submit", "queued-entry") not in broker.calls
        assert ("submit", "queued-exit") in broker.calls  # exits go on while halted
        [withheld] = outbox.messages
        assert isinstance(withheld, BrokerRequestWithheld)
        assert withheld.client_order_id == "queued-entry"
        assert withheld.code is DenialCode.KILL_SWITCH_ACTIVE

    def test_the_inline_gateway_calls_on_the_callers_thread_and_still_answers_by_message(
        self,
    ) -> None:
        broker, outbox = RecordingBroker(), Outbox()
        broker.raises[("submit", "refused")] = BrokerRejected("INVALID_PRICE: p=-1")
        gateway = InlineBrokerGateway(broker, deliver=outbox.deliver, clock=ManualClock())
        gateway.submit(order_request("refused"), leg=LegKind.ENTRY)
        assert broker.calls == [("submit", "refused")]  # done before submit() returned
        [failed] = outbox.messages
        assert isinstance(failed, BrokerRequestFailed) and failed.rejected


class TestStop:
    def test_stop_drops_what_is_queued_lets_the_running_call_finish_and_refuses_new_work(
        self, gateways: Any
    ) -> None:
        broker, outbox = RecordingBroker(), Outbox()
        broker.raises[("submit", "busy")] = BrokerRejected("INVALID_QUANTITY: q=0")
        gateway = gateways(broker, outbox, workers=1)
        release = broker.hold("busy")
        gateway.submit(order_request("busy"), leg=LegKind.ENTRY)
        assert broker.entered["busy"].wait(10)
        for name in ("a", "b", "c"):
            gateway.submit(order_request(name), leg=LegKind.ENTRY)
        dropped: list[int] = []
        stopper = threading.Thread(target=lambda: dropped.append(gateway.stop(timeout_s=10)))
        stopper.start()
        wait_until(lambda: gateway.snapshot()["stopping"], message="stopping")
        release.set()
        stopper.join(10)
        assert dropped == [3]
        gateway.submit(order_request("late"), leg=LegKind.ENTRY)
        assert broker.calls == [("submit", "busy")]
        # The running call's outcome is still told; the dropped ones tell nothing (in flight).
        assert [m.client_order_id for m in outbox.messages] == ["busy"]  # type: ignore[attr-defined]
        assert gateway.snapshot()["dropped_total"] == 4


# ------------------------------------------------------------------ the whole engine
def engine_statuses(engine: Engine, plan_id: str) -> dict[str, OrderStatus]:
    assert engine.database is not None
    with UnitOfWork(engine.database) as uow:
        return {o.leg.value: o.status for o in uow.orders.list_for_plan(plan_id)}


def venue_status(desk: Desk, client_order_id: str) -> str | None:
    assert desk.engine.broker is not None
    for report in desk.engine.broker.list_orders():
        if report.client_order_id == client_order_id:
            return report.status.value
    return None


@pytest.fixture
def threaded(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(broker_faults=True, broker={"gateway": "thread", "gateway_workers": 4})
    desk.ready_to_trade()
    return desk


def test_a_broker_that_does_not_answer_stalls_neither_other_plans_nor_cancels(
    threaded: Desk,
) -> None:
    """The first entry's submit is held inside the broker (an answer slower than any real
    broker's 200 ms); meanwhile another plan reaches the broker, a flatten is answered and its
    cancels reach the broker. On the old path the order actor sat inside that call."""
    engine = threaded.engine
    assert engine.faults is not None and engine.broker is not None
    working = open_position(
        threaded, instrument="BBB", entry="200.10", stop="199.00", target="202.00"
    )
    legs = threaded.working_legs(working)
    stop_id, target_id = legs["STOP"][0].client_order_id, legs["TARGET"][0].client_order_id
    held = engine.faults.hold_next("submit_order")
    first = threaded.send_plan(instrument="AAA")
    assert held.entered.wait(10), "the first entry never reached the broker"
    started = time.monotonic()
    # Another strategy: one strategy holds one position per instrument.
    second = threaded.send_plan(
        instrument="BBB", entry="200.20", stop="199.10", target="202.10", strategy="ema_1"
    )
    second_entry = second.plan_client_id + "E"
    wait_until(
        lambda: second_entry in engine.broker.submission_counts(),  # type: ignore[union-attr]
        timeout_s=5,
        message="the second plan's entry at the broker while the first is held",
    )
    plan_to_broker_s = time.monotonic() - started
    status = engine.directory.ask(
        "order", FlattenAll(reason="drill", ts_init=threaded.clock.now_ns()), timeout_s=5
    )
    assert status.in_progress
    threaded.settle(
        lambda: (
            venue_status(threaded, stop_id) == "CANCELLED"
            and venue_status(threaded, target_id) == "CANCELLED"
        ),
        timeout_s=5,
        what="the flatten's cancels done at the broker while the first submit is held",
    )
    assert not held._released.is_set() and first.plan_client_id + "E" not in (
        engine.broker.submission_counts()
    )
    held.release()
    # The first entry's submit goes on, its cancel after it: flat, nothing left working.
    threaded.settle(
        lambda: (
            not threaded.portfolio().portfolio.positions
            and threaded.portfolio().working_orders == 0
        ),
        what="flat and nothing working",
    )
    # Its cancel went after its submit (a market entry may fill first; the flatten exits it).
    assert venue_status(threaded, first.plan_client_id + "E") in ("CANCELLED", "FILLED")
    assert plan_to_broker_s < 5


def test_a_refusal_through_the_threaded_gateway_rejects_the_entry_and_ends_its_bracket(
    threaded: Desk,
) -> None:
    engine = threaded.engine
    assert engine.faults is not None
    engine.faults.refuse_next("submit_order")
    plan = threaded.send_plan()
    threaded.settle(
        lambda: engine_statuses(engine, plan.plan_client_id).get("ENTRY") is OrderStatus.REJECTED,
        what="entry rejected",
    )
    threaded.settle(lambda: threaded.portfolio().working_orders == 0, what="bracket ended")


def test_an_entry_queued_in_the_gateway_at_stop_stays_in_flight_and_recovery_settles_it(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    config = make_config(
        tmp_path, strategies=[], broker={"gateway": "thread", "gateway_workers": 1}
    )
    engine = engine_factory(config, broker_faults=True)
    desk = Desk(engine, clock)
    desk.ready_to_trade()
    assert engine.faults is not None and engine.gateway is not None
    held = engine.faults.hold_next("submit_order")
    first = desk.send_plan(instrument="AAA")
    assert held.entered.wait(10)
    queued = desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    queued_entry = queued.plan_client_id + "E"
    wait_until(
        lambda: engine.gateway.snapshot()["queued"] == 1,  # type: ignore[union-attr]
        message="the second entry queued behind the held one (one worker)",
    )
    stopper = threading.Thread(target=engine.stop)
    stopper.start()
    wait_until(lambda: engine.gateway.snapshot()["stopping"], message="gateway stopping")  # type: ignore[union-attr]
    held.release()
    stopper.join(30)
    assert not stopper.is_alive()
    # Never sent, never "rejected": written ahead, so still maybe-sent in storage.
    assert engine_statuses(engine, queued.plan_client_id) == {"ENTRY": OrderStatus.PENDING_SUBMIT}
    assert engine.broker is not None
    assert queued_entry not in engine.broker.submission_counts()

    restarted = engine_factory(config)
    again = Desk(restarted, clock)
    again.ready_to_trade()
    # The takeover resends it under the same id (the broker never saw it); it fills.
    again.settle(
        lambda: set(again.working_legs(queued.plan_client_id)) == {"STOP", "TARGET"},
        what="the queued entry sent after the restart and its bracket formed",
    )
    assert restarted.broker is not None
    assert restarted.broker.submission_counts()[queued_entry] == 1
    assert first.plan_client_id + "E" in restarted.broker.submission_counts()


def test_an_entry_waiting_in_the_gateway_when_the_kill_switch_halts_never_reaches_the_broker(
    desk_factory: Callable[..., Desk],
) -> None:
    """The order actor's last gate passed the entry before the HALT, but it was still queued
    behind a slow call: the gateway re-reads the kill switch's decision right before the call,
    withholds it, and the order actor denies and settles it as never sent."""
    desk = desk_factory(broker_faults=True, broker={"gateway": "thread", "gateway_workers": 1})
    desk.ready_to_trade()
    engine = desk.engine
    assert engine.faults is not None and engine.gateway is not None and engine.broker is not None
    held = engine.faults.hold_next("submit_order")
    desk.send_plan(instrument="AAA")
    assert held.entered.wait(10)
    queued = desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    wait_until(
        lambda: engine.gateway.snapshot()["queued"] == 1,  # type: ignore[union-attr]
        message="the second entry queued in the gateway",
    )
    engine.directory.ask("kill_switch", TripKillSwitch(reason="OPERATOR_DRILL"), timeout_s=5)
    held.release()
    [entry] = desk.settle(
        lambda: [
            o for o in desk.orders_for(queued.plan_client_id) if o.status is OrderStatus.CANCELLED
        ],
        what="the withheld entry settled",
    )
    assert entry.reason.startswith("NEVER_REACHED_BROKER: withheld by the gateway")
    assert queued.plan_client_id + "E" not in engine.broker.submission_counts()
    denials = engine.directory.ask("order", QuerySnapshot(), timeout_s=5)["recent_denials"]
    assert [d["code"] for d in denials] == ["KILL_SWITCH_ACTIVE"]


class QueuedBehindHeldSubmit:
    """A threaded gateway with one worker whose first entry's broker call is held, and a second
    plan's entry queued behind it; the clock may jump (nothing else goes stale meanwhile)."""

    def __init__(
        self,
        tmp_path: Path,
        clock: ManualClock,
        engine_factory: Callable[..., Engine],
        *,
        latencies: list[float] | None = None,
    ) -> None:
        config = make_config(
            tmp_path,
            strategies=[],
            broker={"gateway": "thread", "gateway_workers": 1},
            heartbeats={
                "marketdata_stale_s": 600,
                "order_stream_stale_s": 600,
                "actor_ping_timeout_s": 600,
            },
            leader={"lease_ttl_s": 600, "renew_interval_s": 1, "grace_s": 0},
        )
        self.engine = engine = engine_factory(config, broker_faults=True)
        if latencies is not None:
            engine.metrics.listen_to_order_latency(latencies.append)
        self.desk = desk = Desk(engine, clock)
        desk.ready_to_trade()
        assert engine.faults is not None and engine.gateway is not None
        self.held = engine.faults.hold_next("submit_order", max_hold_s=60)
        self.first = desk.send_plan(instrument="AAA")
        assert self.held.entered.wait(10)
        self.queued = desk.send_plan(
            instrument="BBB", entry="200.10", stop="199.00", target="202.00"
        )
        gateway = engine.gateway
        wait_until(
            lambda: gateway.snapshot()["queued"] == 1,
            message="the second entry queued behind the held one (one worker)",
        )

    def release_and_protect(self) -> None:
        self.held.release()
        for plan in (self.first, self.queued):
            self.desk.settle(
                lambda plan=plan: (
                    set(self.desk.working_legs(plan.plan_client_id)) == {"STOP", "TARGET"}
                ),
                what=f"{plan.plan_client_id} protected",
            )


def test_orders_queued_in_the_gateway_past_the_settle_delay_are_neither_settled_nor_resent(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # At a broker's rate limit a burst waits in the gateway longer than the in-flight settle
    # delay (50 brackets at Kite's 10/s). The broker has not seen those orders yet: their
    # absence from its order list must not settle them or send them again (that resent them
    # until RESEND_GAVE_UP HALTed the engine).
    rig = QueuedBehindHeldSubmit(tmp_path, clock, engine_factory)
    engine, desk, queued = rig.engine, rig.desk, rig.queued
    # Well past the settle delay, several in-flight and scheduled passes.
    for _ in range(5):
        desk.step(engine.config.orders.in_flight_settle_s + 1.0)
        engine.directory.ask("order", QuerySnapshot(), timeout_s=10)
    # The order actor's own books (storage is written behind them, and may lag under load).
    statuses = {
        o.leg.value: o.status
        for o in engine.directory.ask("order", QueryOrders(), timeout_s=10)
        if o.plan_client_id == queued.plan_client_id
    }
    in_flight = (OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED)
    assert list(statuses) == ["ENTRY"] and statuses["ENTRY"] in in_flight, statuses
    assert desk.trading().state.state is not TradingState.HALTED
    rig.release_and_protect()
    assert engine.broker is not None
    counts = engine.broker.submission_counts()
    sent = {k: v for k, v in counts.items() if k.startswith(queued.plan_client_id)}
    assert sent == dict.fromkeys(sent, 1) and len(sent) == 3, sent


def test_the_ack_latency_counts_from_the_broker_call_not_from_the_wait_in_the_gateway(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # A burst at the broker's rate limit waits in the gateway; that wait is ours (the queue
    # has its own tripwire) and must not read as a slow broker, which would trip the latency
    # tripwire and flatten (a 50-bracket burst at Kite's 10/s read as p95 3 s).
    latencies: list[float] = []
    rig = QueuedBehindHeldSubmit(tmp_path, clock, engine_factory, latencies=latencies)
    rig.desk.step(3.0)  # the first call is slow (3 s at the broker); the second only waits
    rig.release_and_protect()
    # Two entries and four legs acked (an entry's fill may overtake its ack: counted once
    # either way). Only the held call took 3 s; the queued entry's wait is not in its figure.
    wait_until(lambda: len(latencies) == 6, message=f"six acks observed: {latencies}")
    assert [ms >= 3000 for ms in latencies].count(True) == 1, latencies
