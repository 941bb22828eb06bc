"""The broker request queue under the broker's rate limit (issue 8, acceptance 3).

Two levels, as in test_broker_gateway: the gateway alone over a recording broker double
(tokens in priority order, calls in progress counted, a 429 backed off and retried, an entry
the kill switch stops costs no token, depth and wait metrics), and the whole engine with the
threaded gateway in front of a paper venue that is itself a rate-limited broker (a flood of
entries, then a flatten: the flatten's cancels and exits go out and no queued entry does, and
the venue never counts more than its limit; a venue that says 429 gets every request retried).

The limiter runs on wall time inside the gateway (as a broker's limit does): the limits here
are small so each test takes a second or two; nothing waits on a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from actors.broker_gateway import (
    BrokerRateLimit,
    ThreadedBrokerGateway,
    build_broker_gateway,
)
from actors.trading_gate import TradingGate
from adapters.brokers.base import BrokerRateLimited
from adapters.metrics import EngineMetrics
from domain.clock import ManualClock
from domain.config import BrokerConfig
from domain.enums import DenialCode, LegKind, Mode, PauseCause, TradingState
from domain.messages import (
    BrokerRequestFailed,
    BrokerRequestWithheld,
    FlattenAll,
    PauseEntries,
    QuerySnapshot,
    TradingStateChanged,
)
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_broker_gateway import Outbox, RecordingBroker, order_request
from tests.helpers import wait_until

NANOS_PER_SECOND = 1_000_000_000


class RateLimitedBroker(RecordingBroker):
    """The recording double, answering chosen calls with a 429 a given number of times."""

    def __init__(self) -> None:
        super().__init__()
        self.rate_limited: dict[tuple[str, str], list[float | None]] = {}
        self.every_start_ns: list[tuple[str, str, int]] = []

    def _call(self, method: str, client_order_id: str) -> None:
        self.every_start_ns.append((method, client_order_id, time.perf_counter_ns()))
        super()._call(method, client_order_id)
        pending = self.rate_limited.get((method, client_order_id))
        if pending:
            retry_after_s = pending.pop(0)
            raise BrokerRateLimited(
                f"RATE_LIMITED: {method} {client_order_id}", retry_after_s=retry_after_s
            )


class TimedOutbox(Outbox):
    def __init__(self) -> None:
        super().__init__()
        self.delivered_ns: list[int] = []

    def deliver(self, message: object) -> bool:
        self.delivered_ns.append(time.perf_counter_ns())
        return super().deliver(message)


def metrics() -> EngineMetrics:
    return EngineMetrics(instance_id="vigil-test", strategies=[], feeds=[])


def sample(engine_metrics: EngineMetrics, name: str, **labels: str) -> float:
    value = engine_metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def gate_in(state: TradingState) -> TradingGate:
    gate = TradingGate()
    gate.decide(
        TradingStateChanged(
            state=state,
            mode=Mode.PAPER,
            armed=True,
            pause_causes=(PauseCause.FLATTEN,) if state is TradingState.REDUCING else (),
            halt_reason=None,
            ts_event=1,
        )
    )
    return gate


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


# ------------------------------------------------------------------ the limiter alone
class TestBrokerRateLimit:
    def test_a_call_in_progress_holds_its_token_until_it_returns(self) -> None:
        limit = BrokerRateLimit(per_second=2)
        assert limit.wait_s() == 0
        limit.take()
        limit.take()
        assert limit.wait_s() > 0  # two in progress: a third would make three in a second
        limit.release(sent=False)  # one was never sent (a withheld entry): its token is back
        assert limit.wait_s() == 0

    def test_the_minute_window_binds_when_the_second_window_has_room(self) -> None:
        limit = BrokerRateLimit(per_second=100, per_minute=5)
        for _ in range(5):
            limit.take()
            limit.release(sent=True)
        assert 58 < limit.wait_s() <= 60
        assert limit.describe() == "100/s, 5/min"

    def test_a_pause_holds_every_token(self) -> None:
        limit = BrokerRateLimit()
        limit.pause(30)
        assert 29 < limit.wait_s() <= 30

    def test_the_inline_gateway_refuses_a_rate_limit_in_config_and_when_built(self) -> None:
        with pytest.raises(ValidationError, match="inline"):
            BrokerConfig(gateway="inline", rate_limit_per_s=10)
        with pytest.raises(ValueError, match="inline broker gateway cannot honour"):
            build_broker_gateway(
                "inline",
                RecordingBroker(),
                deliver=Outbox().deliver,
                clock=ManualClock(),
                rate_limit=BrokerRateLimit(per_second=10),
            )
        assert BrokerConfig().rate_limit_per_s is None  # unlimited by default (paper venue)


# ------------------------------------------------------------------ the gateway alone
class TestTokensInPriorityOrder:
    def test_an_exit_and_a_cancel_take_the_next_tokens_before_entries_queued_earlier(
        self, gateways: Any
    ) -> None:
        """Three calls a second: three entries use the second's tokens (the third still in
        the broker), two more entries queue, then an exit and a cancel. When the window has
        room again the exit, then the cancel, then the entries go; no four calls start
        within a second."""
        broker, outbox, engine_metrics = RecordingBroker(), Outbox(), metrics()
        gateway = gateways(
            broker,
            outbox,
            workers=1,
            metrics=engine_metrics,
            rate_limit=BrokerRateLimit(per_second=3),
        )
        release = broker.hold("e3")
        for name in ("e1", "e2", "e3"):
            gateway.submit(order_request(name), leg=LegKind.ENTRY)
        assert broker.entered["e3"].wait(10)
        gateway.submit(order_request("e4"), leg=LegKind.ENTRY)
        gateway.submit(order_request("e5"), leg=LegKind.ENTRY)
        gateway.submit(order_request("x1"), leg=LegKind.EXIT)
        gateway.cancel("c1", leg=LegKind.STOP)
        assert gateway.queue_depth() == 4
        assert gateway.queue_depths() == {"close": 1, "cancel": 1, "protective": 0, "entry": 2}
        assert sample(engine_metrics, "trader_broker_queue_depth", priority="entry") == 2
        assert sample(engine_metrics, "trader_broker_queue_depth", priority="cancel") == 1
        release.set()
        calls = wait_calls(broker, 7)
        assert calls[3:] == [("submit", "x1"), ("cancel", "c1"), ("submit", "e4"), ("submit", "e5")]
        started = sorted(broker.started_ns.values())
        finished = sorted(broker.finished_ns.values())
        for index in range(3, len(started)):
            # The fourth call starts a full second after the first of the three before it
            # returned (its token was dated then): at most three in any second at the broker.
            assert started[index] - finished[index - 3] >= NANOS_PER_SECOND - 2_000_000
        assert gateway.queue_depth() == 0
        assert sample(engine_metrics, "trader_broker_queue_depth", priority="entry") == 0
        # The token wait is observed for every call: the first three found a token free, the
        # cancel waited for the window's first second to pass, the last entry for the next.
        assert sample(engine_metrics, "trader_rate_limit_wait_ms_count") == 7
        assert sample(engine_metrics, "trader_rate_limit_wait_ms_sum") > 500


class TestRateLimitedByTheBroker:
    def test_a_429_pauses_every_request_for_the_retry_after_and_sends_it_again(
        self, gateways: Any
    ) -> None:
        broker, outbox, engine_metrics = RateLimitedBroker(), Outbox(), metrics()
        broker.rate_limited[("submit", "s1")] = [0.3]
        gateway = gateways(broker, outbox, workers=1, metrics=engine_metrics)
        gateway.submit(order_request("s1"), leg=LegKind.STOP)
        wait_until(lambda: gateway.snapshot()["rate_limited_total"] == 1, message="429")
        gateway.cancel("c1", leg=LegKind.TARGET)  # during the pause: waits, then goes first
        wait_until(lambda: len(broker.every_start_ns) == 3, message="three calls")
        (_, _, refused_ns), cancel, retry = broker.every_start_ns
        # The cancel came during the pause: it waited for it, then went before the retry.
        assert cancel[:2] == ("cancel", "c1") and retry[:2] == ("submit", "s1")
        assert cancel[2] - refused_ns >= 0.3 * NANOS_PER_SECOND
        wait_until(lambda: gateway.queue_depth() == 0 and not gateway.snapshot()["running"])
        assert outbox.messages == []  # went through on the retry: nothing to report
        assert sample(engine_metrics, "trader_retries_total", type="rate_limit") == 1

    @pytest.mark.parametrize("asked_s", [86_400.0, float("inf"), float("nan")])
    def test_a_broker_retry_after_is_bounded_by_the_back_off_cap(
        self, gateways: Any, asked_s: float
    ) -> None:
        # A day-long (or garbage) Retry-After would hold every cancel and exit back with it.
        broker, outbox = RateLimitedBroker(), Outbox()
        broker.rate_limited[("submit", "x1")] = [asked_s]
        gateway = gateways(broker, outbox, workers=1, backoff_max_s=0.2)
        gateway.submit(order_request("x1"), leg=LegKind.EXIT)
        wait_until(lambda: len(broker.every_start_ns) == 2, timeout_s=5, message="the retry")
        (_, _, refused_ns), (_, _, retried_ns) = broker.every_start_ns
        assert retried_ns - refused_ns < 2 * NANOS_PER_SECOND

    def test_a_request_still_refused_after_its_retries_is_reported_as_an_unknown_outcome(
        self, gateways: Any
    ) -> None:
        """No retry-after: the back-off doubles (10, 20 ms); after two retries the cancel is
        reported failed like an unanswered call, so the order stays in flight."""
        broker, outbox, engine_metrics = RateLimitedBroker(), Outbox(), metrics()
        broker.rate_limited[("cancel", "c1")] = [None, None, None]
        gateway = gateways(
            broker,
            outbox,
            workers=1,
            metrics=engine_metrics,
            rate_limit_retries=2,
            backoff_s=0.01,
        )
        gateway.cancel("c1", leg=LegKind.TARGET)
        wait_until(lambda: outbox.messages, message="the failure reported")
        [failed] = outbox.messages
        assert isinstance(failed, BrokerRequestFailed) and not failed.rejected
        assert failed.error.startswith("BROKER_RATE_LIMITED: RATE_LIMITED: cancel c1")
        assert "attempts=3" in failed.error
        assert broker.calls == [("cancel", "c1")] * 3
        assert sample(engine_metrics, "trader_retries_total", type="rate_limit") == 2


class TestEntriesTheKillSwitchStops:
    def test_a_stopped_entry_costs_no_token_and_the_cancel_behind_it_is_not_sent(
        self, gateways: Any
    ) -> None:
        """One call a second, all used: an entry queued behind, with the flatten's cancel for
        it, is withheld at once (no token, no broker call) and its cancel dropped, also one
        handed over later; the protective leg gets the next token."""
        broker, outbox = RecordingBroker(), TimedOutbox()
        gateway = gateways(
            broker,
            outbox,
            workers=2,
            gate=gate_in(TradingState.REDUCING),
            rate_limit=BrokerRateLimit(per_second=1),
        )
        gateway.cancel("c0", leg=LegKind.STOP)
        wait_calls(broker, 1)
        gateway.submit(order_request("s1"), leg=LegKind.STOP)
        gateway.submit(order_request("e1"), leg=LegKind.ENTRY)
        gateway.cancel("e1", leg=LegKind.ENTRY)
        wait_until(lambda: outbox.messages, message="the entry withheld")
        [withheld] = outbox.messages
        assert isinstance(withheld, BrokerRequestWithheld) and withheld.client_order_id == "e1"
        assert withheld.code is DenialCode.TRADING_PAUSED
        # At once, not when the window had room for one more call (a second after c0).
        assert outbox.delivered_ns[0] - broker.finished_ns[("cancel", "c0")] < NANOS_PER_SECOND / 2
        gateway.cancel("e1", leg=LegKind.ENTRY)  # the order actor's late cancel: dropped too
        assert wait_calls(broker, 2) == [("cancel", "c0"), ("submit", "s1")]
        wait_until(lambda: gateway.queue_depth() == 0, message="queue empty")
        assert gateway.snapshot()["cancels_dropped_total"] == 2
        assert broker.calls == [("cancel", "c0"), ("submit", "s1")]


# ------------------------------------------------------------------ the whole engine
def flood(desk: Desk, plans: int) -> list[str]:
    """Entries on one instrument from as many strategies (one bracket per strategy and
    instrument), handed to the risk actor at once."""
    return [
        desk.send_plan(instrument="AAA", strategy=f"flood_{index}").plan_client_id + "E"
        for index in range(plans)
    ]


def flatten_the_operators_way(desk: Desk) -> None:
    """What POST /flatten does: the FLATTEN pause first (stored, decided into the gate), then
    the order actor's flatten."""
    engine = desk.engine
    engine.directory.ask(
        "kill_switch", PauseEntries(cause=PauseCause.FLATTEN, detail="drill"), timeout_s=5
    )
    engine.directory.ask(
        "order", FlattenAll(reason="drill", ts_init=desk.clock.now_ns()), timeout_s=5
    )


def flat(desk: Desk) -> bool:
    view = desk.portfolio()
    return not view.portfolio.positions and view.working_orders == 0


RISK_FOR_A_FLOOD = {"max_concurrent_positions": 500, "max_trades_per_hour": 5000}


def test_a_flatten_goes_out_ahead_of_a_flood_of_entries_and_the_broker_limit_holds(
    desk_factory: Callable[..., Desk],
) -> None:
    """Acceptance 3. The venue allows 20 requests a second, and so does the gateway. A
    position is open; 60 entries flood the queue (a second's tokens go to the first ones, the
    rest wait); then the operator flattens. The flatten's cancels and the exit reach the venue;
    no entry still queued at the flatten does; the venue never counted more than 20 requests
    in a second, nor refused one."""
    limits = {"rate_limit_per_s": 20, "rate_limit_per_min": 1200}
    desk = desk_factory(broker=limits, paper_broker=limits, risk=RISK_FOR_A_FLOOD)
    desk.ready_to_trade()
    engine = desk.engine
    gateway, venue = engine.gateway, engine.broker
    assert gateway is not None and venue is not None
    assert gateway.mode == "thread"  # "auto" with a rate limit never runs inline
    position = open_position(desk, instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    legs = desk.working_legs(position)
    stop_id, target_id = legs["STOP"][0].client_order_id, legs["TARGET"][0].client_order_id

    entries = flood(desk, 60)
    wait_until(
        lambda: gateway.queue_depths()["entry"] >= 20,
        message="entries waiting in the gateway for tokens",
    )
    engine.directory.ask(
        "kill_switch", PauseEntries(cause=PauseCause.FLATTEN, detail="drill"), timeout_s=5
    )
    # An entry that passed the kill switch's gate before the pause may still be on its way:
    # it is running in the gateway now. Nothing else may reach the venue from here on.
    running_at_pause = set(gateway.snapshot()["running"])
    arrived_before = len(venue.request_arrivals())
    engine.directory.ask(
        "order", FlattenAll(reason="drill", ts_init=desk.clock.now_ns()), timeout_s=5
    )
    desk.settle(lambda: flat(desk), timeout_s=30, what="flat and nothing working")

    after = venue.request_arrivals()[arrived_before:]
    entries_after = [i for _, kind, i, _ in after if kind == "submit" and i in set(entries)]
    assert set(entries_after) <= running_at_pause, entries_after
    assert ("cancel", stop_id) in {(kind, i) for _, kind, i, _ in after}
    assert ("cancel", target_id) in {(kind, i) for _, kind, i, _ in after}
    exits = [i for _, kind, i, _ in after if kind == "submit" and i.startswith(position + "X")]
    assert exits, "the position's exit never reached the venue"
    sent = venue.submission_counts()
    queued_at_flatten = [e for e in entries if e not in sent]
    assert len(queued_at_flatten) >= 20  # they were withheld, never sent
    denials = engine.directory.ask("order", QuerySnapshot(), timeout_s=5)["recent_denials"]
    assert {d["code"] for d in denials} == {"TRADING_PAUSED"}
    counted = venue.request_rates()
    assert counted is not None
    assert counted["max_requests_in_1s"] <= 20, counted
    assert counted["max_requests_in_60s"] <= 1200, counted
    assert counted["rate_limited_total"] == 0, counted


def test_a_venue_that_says_429_gets_every_request_again_and_a_flatten_still_completes(
    desk_factory: Callable[..., Desk],
) -> None:
    """The venue allows 5 requests a second; the gateway has no limit of its own and sends a
    burst of 10 entries: the venue refuses what is over, the gateway waits its retry-after and
    sends those again; each entry reaches the venue once, none is reported failed. Then the
    first exits of the flatten are refused twice more (a 429 without a retry-after): backed
    off and retried, the flatten completes."""
    desk = desk_factory(
        broker_faults=True,
        broker={"gateway": "thread", "rate_limit_backoff_s": 0.05},
        paper_broker={"rate_limit_per_s": 5},
        risk=RISK_FOR_A_FLOOD,
    )
    desk.ready_to_trade()
    engine = desk.engine
    gateway, venue, faults = engine.gateway, engine.broker, engine.faults
    assert gateway is not None and venue is not None and faults is not None
    position = open_position(desk, instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    entries = flood(desk, 10)
    wait_until(
        lambda: all(venue.submission_counts().get(entry) == 1 for entry in entries),
        timeout_s=20,
        message="every entry at the venue",
    )
    counted = venue.request_rates()
    assert counted is not None and counted["rate_limited_total"] >= 1
    retries = engine.metrics.retries_total.labels(type="rate_limit")._value.get()
    assert retries == counted["rate_limited_total"]  # each 429 was retried
    assert gateway.snapshot()["failures_total"] == 0

    faults.rate_limit_next("submit_order", times=2)
    flatten_the_operators_way(desk)
    desk.settle(lambda: flat(desk), timeout_s=30, what="flat and nothing working")
    assert [name for name, loss, _ in faults.lost] == ["submit_order", "submit_order"]
    # Only exits were submitted after the flatten (the entries had filled): 429s on exits.
    assert all(args[0].client_order_id[len(position)] == "X" for _, _, args in faults.lost)
    assert engine.metrics.retries_total.labels(type="rate_limit")._value.get() >= retries + 2


def test_the_queue_depth_and_token_wait_reach_the_metrics_endpoint(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(broker={"rate_limit_per_s": 5}, risk=RISK_FOR_A_FLOOD)
    desk.ready_to_trade()
    engine = desk.engine
    assert engine.gateway is not None
    flood(desk, 12)
    wait_until(lambda: engine.gateway.queue_depth() > 0, message="entries queued")  # type: ignore[union-attr]
    text = engine.metrics.render().decode()
    assert 'trader_broker_queue_depth{priority="entry"}' in text
    wait_until(lambda: engine.gateway.queue_depth() == 0, timeout_s=20, message="drained")  # type: ignore[union-attr]
    waited = engine.metrics.registry.get_sample_value("trader_rate_limit_wait_ms_sum")
    assert waited is not None and waited > 0
