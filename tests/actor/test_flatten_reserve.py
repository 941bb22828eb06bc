"""The broker gateway's flatten reserve (issue 9: a flatten is never starved by the entries
before it).

At Kite's 10 requests/s and 200/min, 50 brackets opened within a minute used 150 of the
minute's requests and the flatten after them waited for the minute to roll (54.9 s to flat).
The gateway now keeps, out of the entries' reach, the part of the per-minute budget a flatten
of what the engine holds would need. Three levels:

- ``requests_to_flatten``: what the books would cost to flatten;
- the gateway alone over a recording broker double: an entry that would eat into the reserve
  waits and goes once the reserve shrinks; cancels, exits and protective legs are never held;
- the whole engine, the threaded gateway in front of a paper venue that is itself a
  rate-limited broker (it counts what arrives): a burst of entries, then a flatten that is
  flat within the bound the per-second limit alone sets, and entries held back that go once
  positions close.

The limiters run on wall time (as a broker's do); the engine's clock is a manual one; nothing
waits on a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from actors.broker_gateway import (
    BrokerRateLimit,
    ThreadedBrokerGateway,
    fresh_bracket_requests,
    requests_to_flatten,
)
from adapters.metrics import EngineMetrics
from domain import oco
from domain.clock import ManualClock
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.orders import Order
from domain.plans import client_order_id
from tests.actor.conftest import Desk
from tests.actor.test_broker_gateway import Outbox, RecordingBroker, order_request
from tests.actor.test_broker_queue_limits import (
    RISK_FOR_A_FLOOD,
    flat,
    flatten_the_operators_way,
    flood,
)
from tests.helpers import wait_until

# ------------------------------------------------------------------ books for the counting


def _order(plan_id: str, leg: LegKind, status: OrderStatus, sequence: int = 0) -> Order:
    return Order(
        client_order_id=client_order_id(plan_id, leg, sequence),
        plan_client_id=plan_id,
        strategy="s",
        instrument="AAA",
        leg=leg,
        side=Side.BUY if leg is LegKind.ENTRY else Side.SELL,
        order_type=OrderType.MARKET,
        quantity=10,
        status=status,
    )


def fresh(plan_id: str) -> tuple[oco.Bracket, dict[str, Order]]:
    """A bracket whose entry was handed to the broker and has not filled."""
    entry = _order(plan_id, LegKind.ENTRY, OrderStatus.SUBMITTED)
    bracket = oco.Bracket(
        plan_client_id=plan_id,
        strategy="s",
        instrument="AAA",
        side=Side.BUY,
        planned_quantity=10,
        entry_price=Decimal("100"),
        stop_price=Decimal("99"),
        target_price=Decimal("102"),
        entry_order_id=entry.client_order_id,
    )
    return bracket, {entry.client_order_id: entry}


def protected(plan_id: str) -> tuple[oco.Bracket, dict[str, Order]]:
    """An open position with its stop and target working."""
    bracket, orders = fresh(plan_id)
    orders[bracket.entry_order_id].status = OrderStatus.FILLED
    bracket.status = oco.BracketStatus.OPEN
    bracket.entry_filled = 10
    for leg in (LegKind.STOP, LegKind.TARGET):
        order = _order(plan_id, leg, OrderStatus.ACCEPTED)
        orders[order.client_order_id] = order
    bracket.stop_order_id = client_order_id(plan_id, LegKind.STOP)
    bracket.target_order_id = client_order_id(plan_id, LegKind.TARGET)
    return bracket, orders


def books(*parts: tuple[oco.Bracket, dict[str, Order]]) -> tuple[list[oco.Bracket], dict]:
    orders: dict[str, Order] = {}
    for _, its_orders in parts:
        orders.update(its_orders)
    return [bracket for bracket, _ in parts], orders


class TestRequestsToFlatten:
    def test_a_fresh_bracket_may_still_need_its_legs_their_cancels_its_cancel_and_an_exit(
        self,
    ) -> None:
        assert requests_to_flatten(*books(fresh("p1"))) == 6 == fresh_bracket_requests()

    def test_a_protected_position_needs_two_cancels_and_an_exit(self) -> None:
        assert requests_to_flatten(*books(protected("p1"), protected("p2"))) == 6

    def test_a_closed_bracket_and_one_whose_exit_works_after_its_cancels_need_nothing_more(
        self,
    ) -> None:
        closed, closed_orders = protected("p1")
        closed.status = oco.BracketStatus.CLOSED
        exiting, exiting_orders = protected("p2")
        exiting.status = oco.BracketStatus.FLATTENING
        for leg_id in (exiting.stop_order_id, exiting.target_order_id):
            assert leg_id is not None
            exiting_orders[leg_id].status = OrderStatus.CANCELLED
        exit_order = _order("p2", LegKind.EXIT, OrderStatus.SUBMITTED, sequence=1)
        exiting_orders[exit_order.client_order_id] = exit_order
        exiting.exit_order_ids = (exit_order.client_order_id,)
        assert requests_to_flatten(*books((closed, closed_orders), (exiting, exiting_orders))) == 0

    def test_levels_on_the_position_cost_their_submit_and_no_cancel(self) -> None:
        # IG: the stop and target ride the exit.
        brackets, orders = books(fresh("p1"), protected("p2"))
        assert requests_to_flatten(brackets, orders, levels_on_position=True) == 4 + 1
        assert fresh_bracket_requests(levels_on_position=True) == 4

    def test_a_stop_made_the_exit_saves_the_exit_but_not_a_stop_being_cancelled(self) -> None:
        # Kite: the target's cancel and the stop's turn to MARKET; no separate exit.
        brackets, orders = books(fresh("p1"), protected("p2"))
        assert requests_to_flatten(brackets, orders, stop_in_place=True) == 5 + 2
        assert fresh_bracket_requests(stop_in_place=True) == 5
        cancelling, its_orders = protected("p3")
        assert cancelling.stop_order_id is not None
        its_orders[cancelling.stop_order_id].status = OrderStatus.PENDING_CANCEL
        assert requests_to_flatten(*books((cancelling, its_orders)), stop_in_place=True) == 3


# ------------------------------------------------------------------ the gateway alone


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


def sample(engine_metrics: EngineMetrics, name: str) -> float:
    value = engine_metrics.registry.get_sample_value(name, {})
    return 0.0 if value is None else value


class TestTheGatewayKeepsTheReserve:
    def test_an_entry_that_would_eat_into_the_reserve_waits_while_protective_legs_go(
        self, gateways: Any
    ) -> None:
        """12 requests a minute. One protected position (3 to flatten). The first entry fits
        (1 + its bracket's 6 + 3 <= 12). The second would leave 11 - 1 = 10 for a reserve of
        3 + 6 + its own 6: it waits. A stop, a target, an exit and a cancel go meanwhile (they
        may use the reserve). Once the books say the positions closed, the entry goes."""
        broker, outbox = RecordingBroker(), Outbox()
        engine_metrics = EngineMetrics(instance_id="vigil-test", strategies=[], feeds=[])
        gateway = gateways(
            broker,
            outbox,
            workers=1,
            metrics=engine_metrics,
            rate_limit=BrokerRateLimit(per_minute=12),
        )
        held = protected("p0")
        first, second = fresh("p1"), fresh("p2")
        gateway.update_flatten_reserve(*books(held, first))
        gateway.submit(order_request(first[0].entry_order_id), leg=LegKind.ENTRY)
        wait_until(lambda: len(broker.finished_ns) == 1, message="the first entry sent")

        gateway.update_flatten_reserve(*books(held, first, second))
        gateway.submit(order_request(second[0].entry_order_id), leg=LegKind.ENTRY)
        wait_until(
            lambda: gateway.snapshot()["flatten_reserve"]["holding_entries"],
            message="the second entry held for the reserve",
        )
        gateway.submit(order_request("p1S"), leg=LegKind.STOP)
        gateway.submit(order_request("p1T"), leg=LegKind.TARGET)
        gateway.submit(order_request("p0X1"), leg=LegKind.EXIT)
        gateway.cancel("p0S", leg=LegKind.STOP)
        wait_until(lambda: len(broker.finished_ns) == 5, message="legs, exit and cancel sent")
        assert ("submit", "p2E") not in broker.calls
        snapshot = gateway.snapshot()["flatten_reserve"]
        assert snapshot["entries_waiting"] == 1 and snapshot["entries_held_total"] == 1
        assert sample(engine_metrics, "trader_broker_entries_held_for_reserve") == 1
        assert sample(engine_metrics, "trader_broker_flatten_reserve") > 0

        # Both positions closed: only the waiting entry's bracket is left in the books.
        gateway.update_flatten_reserve(*books(second))
        wait_until(lambda: ("submit", "p2E") in broker.calls, message="the entry sent")
        assert broker.calls[-1] == ("submit", "p2E")
        assert not gateway.snapshot()["flatten_reserve"]["holding_entries"]
        assert sample(engine_metrics, "trader_broker_entries_held_for_reserve") == 0
        assert outbox.messages == []

    @pytest.mark.parametrize(
        ("rate_limit", "reserve"),
        [(BrokerRateLimit(per_second=100), True), (BrokerRateLimit(per_minute=12), False)],
        ids=["no per-minute limit", "switched off"],
    )
    def test_entries_are_never_held_without_a_per_minute_limit_or_with_it_switched_off(
        self, gateways: Any, rate_limit: BrokerRateLimit, reserve: bool
    ) -> None:
        broker = RecordingBroker()
        gateway = gateways(
            broker, Outbox(), workers=1, rate_limit=rate_limit, flatten_reserve=reserve
        )
        gateway.update_flatten_reserve(*books(*(protected(f"p{i}") for i in range(4))))
        gateway.submit(order_request("e1"), leg=LegKind.ENTRY)
        wait_until(lambda: broker.calls == [("submit", "e1")], message="the entry sent")
        assert gateway.snapshot()["flatten_reserve"] == {"enabled": False}


# ------------------------------------------------------------------ the whole engine
PER_SECOND, PER_MINUTE = 20, 40
LIMITS = {"rate_limit_per_s": PER_SECOND, "rate_limit_per_min": PER_MINUTE}
PLANS = 10


def burst_settled(desk: Desk, plans: int) -> Callable[[], bool]:
    """Every plan's bracket is protected or its entry waits in the gateway; nothing runs."""
    gateway = desk.engine.gateway
    assert gateway is not None

    def settled() -> bool:
        view = desk.portfolio()
        positions = len(view.portfolio.positions)
        waiting = gateway.queue_depths()["entry"]
        snapshot = gateway.snapshot()
        return (
            positions + waiting == plans
            and view.working_orders == 2 * positions + waiting
            and gateway.queue_depth() == waiting
            and not snapshot["running"]
            # Entries still queued are held for the reserve, not merely not taken yet (right
            # after the flood all ten wait for a worker).
            and (waiting == 0 or snapshot["flatten_reserve"]["holding_entries"])
        )

    return settled


def test_a_flatten_right_after_a_burst_of_entries_is_bound_by_the_per_second_limit_alone(
    desk_factory: Callable[..., Desk],
) -> None:
    """The venue and the gateway allow 20 requests a second and 40 a minute. Ten entries
    arrive at once. Without the reserve all ten open (10 entries + 20 legs: 30 of the
    minute's 40) and the flatten's 30 requests find 10 left: the rest wait for the minute to
    roll, a minute. With it, the entries stop where the minute still holds a flatten of what
    is open; the flatten is flat within what 20 requests a second allow, every request of it
    counted at the venue, none refused, never more than 40 in a minute."""
    desk = desk_factory(broker=LIMITS, paper_broker=LIMITS, risk=RISK_FOR_A_FLOOD)
    desk.ready_to_trade()
    engine = desk.engine
    venue = engine.broker
    assert venue is not None
    flood(desk, PLANS)
    desk.settle(burst_settled(desk, PLANS), timeout_s=20, what="the burst protected or waiting")
    positions = len(desk.portfolio().portfolio.positions)
    # As many as the minute holds with a flatten of them kept free: the k-th entry needs 1 +
    # its bracket's 6 + 3 for each protected position, after the 3 each of those used: the
    # reserve follows the books down as entries fill (a stale count would stop at 4).
    assert positions == (PER_MINUTE - 7) // 6 + 1 == 6

    arrived_before = len(venue.request_arrivals())
    started = time.monotonic()
    flatten_the_operators_way(desk)
    # A minute's roll would take up to 60 s: far more than this.
    desk.settle(lambda: flat(desk), timeout_s=20, what="flat and nothing working")
    took_s = time.monotonic() - started

    flatten_requests = venue.request_arrivals()[arrived_before:]
    assert all(accepted for *_, accepted in flatten_requests)
    assert {kind for _, kind, _, _ in flatten_requests} == {"cancel", "submit"}
    # 2 cancels and 1 exit per position, nothing else (the waiting entries were withheld).
    assert len(flatten_requests) == 3 * positions
    # The per-second limit alone: 3N requests at 20/s, two rounds (cancels, then exits after
    # their confirmations), plus scheduling on a loaded machine.
    bound_s = 3 * positions / PER_SECOND + 5
    assert flatten_requests[-1][0] - flatten_requests[0][0] <= bound_s, flatten_requests
    assert took_s <= bound_s, took_s
    counted = venue.request_rates()
    assert counted is not None
    assert counted["max_requests_in_60s"] <= PER_MINUTE, counted
    assert counted["max_requests_in_1s"] <= PER_SECOND, counted
    assert counted["rate_limited_total"] == 0, counted


def test_entries_held_for_the_reserve_go_once_positions_close(
    desk_factory: Callable[..., Desk],
) -> None:
    """Same limits; the burst leaves entries waiting for the reserve. The targets fill: the
    stops are cancelled, the positions close, and the waiting entries go (no minute roll:
    within seconds), still never past the venue's limits, and their protective legs follow."""
    desk = desk_factory(broker=LIMITS, paper_broker=LIMITS, risk=RISK_FOR_A_FLOOD)
    desk.ready_to_trade()
    engine = desk.engine
    gateway, venue = engine.gateway, engine.broker
    assert gateway is not None and venue is not None
    entries = flood(desk, PLANS)
    desk.settle(burst_settled(desk, PLANS), timeout_s=20, what="the burst protected or waiting")
    waiting = gateway.queue_depths()["entry"]
    assert waiting >= 1, "no entry waited for the reserve"
    assert gateway.snapshot()["flatten_reserve"]["holding_entries"]
    sent_before = set(venue.submission_counts())
    held = [entry for entry in entries if entry not in sent_before]
    assert len(held) == waiting

    desk.quote("AAA", "102.50", "102.60")  # every target fills; the stops are cancelled
    wait_until(
        lambda: set(held) & set(venue.submission_counts()),
        timeout_s=15,
        message="a held entry sent once positions closed",
    )
    counted = venue.request_rates()
    assert counted is not None
    assert counted["max_requests_in_60s"] <= PER_MINUTE, counted
    assert counted["rate_limited_total"] == 0, counted
