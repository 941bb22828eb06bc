"""Entries expire; resends go through the database fence; retry loops stop and escalate.

All on a manual clock. A "written ahead, never sent" entry is made the way it happens: the
submit is lost on the way to the venue (``FaultyBroker``), so storage holds PENDING_SUBMIT and
the venue has nothing, and the engine stops before it settles the order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import update

from actors.base import SUPERVISOR
from adapters.storage.repositories import UnitOfWork
from adapters.storage.tables import leader_lease
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.enums import OrderStatus, OrderType, Side
from domain.messages import FlattenAll, QuerySnapshot, TradePlan
from domain.plans import plan_client_id
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.helpers import make_config

SETTLE_S = 3.5  # past the order actor's in-flight settle delay


def build(
    tmp_path: Path,
    clock: ManualClock,
    engine_factory: Callable[..., Engine],
    *,
    faults: bool = True,
    **overrides: Any,
) -> Desk:
    config = make_config(tmp_path, strategies=[], **overrides)
    desk = Desk(engine_factory(config, broker_faults=faults), clock)
    desk.ready_to_trade()
    return desk


def lose_an_entry(desk: Desk) -> str:
    """An entry written ahead whose submit never reached the venue; returns its client id."""
    assert desk.engine.faults is not None
    desk.engine.faults.lose_next("submit_order", loss="request")
    plan = desk.send_plan()
    desk.settle(lambda: desk.engine.faults.lost, what="entry lost")  # type: ignore[union-attr]
    [entry] = desk.orders_for(plan.plan_client_id)
    assert entry.status is OrderStatus.PENDING_SUBMIT
    return entry.client_order_id


def stored(desk: Desk, client_order_id: str) -> Any:
    assert desk.engine.database is not None
    desk.flush_storage()  # the order actor's rows follow its books by milliseconds
    with UnitOfWork(desk.engine.database) as uow:
        return uow.orders.get(client_order_id)


def pass_time(desk: Desk, seconds: float, *, step_s: float = 0.5) -> None:
    """Let ``seconds`` pass in small steps with fresh quotes, each step answered by every
    actor (a ping queued behind the timer, its pong behind that) before the next, so that
    nothing looks unresponsive or stale just because the clock ran ahead of the threads."""
    names = ("order", "risk", "kill_switch", "leader")
    for _ in range(round(seconds / step_s)):
        desk.clock.advance(step_s)
        desk.quote("AAA", "100.00", "100.10")
        desk.quote("BBB", "200.00", "200.10")
        desk.engine.fire_timer()
        desk.engine.directory.ask(SUPERVISOR, QuerySnapshot(), timeout_s=5)
        for name in names:
            desk.engine.directory.ask(name, QuerySnapshot(), timeout_s=5)
        desk.engine.directory.ask(SUPERVISOR, QuerySnapshot(), timeout_s=5)


def venue_saw(desk: Desk, client_order_id: str) -> bool:
    assert desk.engine.broker is not None
    return client_order_id in desk.engine.broker.submission_counts()


def test_an_unsent_entry_found_14_minutes_later_at_a_restart_is_settled_expired_never_sent(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    first = build(tmp_path, clock, engine_factory)
    entry_id = lose_an_entry(first)
    first.engine.stop()  # before the in-flight settle pass could resend it

    clock.advance(14 * 60)
    again = build(tmp_path, clock, engine_factory, faults=False)
    order = again.settle(
        lambda: (o := stored(again, entry_id)) is not None and o.status.is_terminal and o,
        what="the old entry settled",
    )
    assert order.status is OrderStatus.CANCELLED
    assert order.reason.startswith("EXPIRED: entry_ttl_s=120 age_s=840")
    assert not venue_saw(again, entry_id)
    assert not again.portfolio().portfolio.positions


def test_an_entry_from_yesterday_is_settled_at_the_next_days_start(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # 23:59 IST: one minute before the trading day ends; a long TTL so only the day counts.
    clock.set(int(datetime(2026, 1, 1, 18, 29, tzinfo=UTC).timestamp()) * NANOS_PER_SECOND)
    first = build(tmp_path, clock, engine_factory, orders={"entry_ttl_s": 3600})
    entry_id = lose_an_entry(first)
    first.engine.stop()

    clock.advance(2 * 60)  # 00:01 IST, 2 January
    again = build(tmp_path, clock, engine_factory, faults=False, orders={"entry_ttl_s": 3600})
    order = again.settle(
        lambda: (o := stored(again, entry_id)) is not None and o.status.is_terminal and o,
        what="yesterday's entry settled",
    )
    assert order.status is OrderStatus.CANCELLED
    assert order.reason == "EXPIRED: trading day 2026-01-01 is over"
    assert not venue_saw(again, entry_id)


def test_a_working_entry_past_its_ttl_is_cancelled_at_the_broker(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    desk = build(tmp_path, clock, engine_factory, faults=False, orders={"entry_ttl_s": 30})
    values: dict[str, Any] = {
        "strategy": "orb_1",
        "instrument": "AAA",
        "side": Side.BUY,
        "entry_price": Decimal("99.50"),  # a limit below the market: it rests
        "stop_price": Decimal("98.50"),
        "target_price": Decimal("101.50"),
        "quantity": 10,
        "signal_ts": clock.now_ns(),
    }
    plan = TradePlan(
        plan_client_id=plan_client_id(**values),
        entry_type=OrderType.LIMIT,
        ts_init=clock.now_ns(),
        **values,
    )
    desk.engine.directory.tell("risk", plan)
    entry_id = plan.plan_client_id + "E"
    desk.settle(
        lambda: (o := stored(desk, entry_id)) is not None and o.status is OrderStatus.ACCEPTED,
        what="entry resting",
    )
    pass_time(desk, 31)  # half a minute of quotes above the limit
    order = desk.settle(
        lambda: (o := stored(desk, entry_id)).status is OrderStatus.CANCELLED and o,
        what="expired entry cancelled",
    )
    assert desk.engine.broker is not None
    [venue] = [r for r in desk.engine.broker.list_orders() if r.client_order_id == entry_id]
    assert venue.status is OrderStatus.CANCELLED
    assert order.filled_quantity == 0
    assert desk.engine.database is not None
    desk.flush_storage()
    with UnitOfWork(desk.engine.database) as uow:
        [event] = uow.events.list_recent(event="ENTRY_EXPIRED")
    assert event.payload["reason"].startswith("EXPIRED: entry_ttl_s=30")


def test_a_resend_by_an_instance_whose_lease_was_taken_is_refused_by_the_database_fence(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # A long renew interval: in memory this instance still believes it leads.
    desk = build(
        tmp_path, clock, engine_factory, leader={"lease_ttl_s": 60, "renew_interval_s": 30}
    )
    entry_id = lose_an_entry(desk)
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:  # another process takes the lease
        uow.connection.execute(
            update(leader_lease).values(holder="thief#0001", epoch=leader_lease.c.epoch + 1)
        )
    desk.step(SETTLE_S)  # the in-flight settle pass finds the venue never saw it: resend
    snapshot = desk.settle(
        lambda: (
            (s := desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5))[
                "recent_denials"
            ]
            and s
        ),
        what="the resend denied",
    )
    [denial] = snapshot["recent_denials"]
    assert (denial["client_order_id"], denial["code"]) == (entry_id, "STALE_EPOCH")
    assert "holder=thief#0001" in denial["detail"]
    assert not venue_saw(desk, entry_id)
    assert stored(desk, entry_id).epoch == 1  # the row was not re-stamped either


def test_a_resize_the_broker_keeps_refusing_stops_after_max_attempts_and_flattens(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    config = make_config(tmp_path, strategies=[], orders={"max_attempts": 3})
    desk = Desk(engine_factory(config, broker_faults=True, broker_partial_fill_max=4), clock)
    desk.ready_to_trade()
    assert desk.engine.faults is not None
    desk.engine.faults.refuse_next("modify_order", times=1000)
    plan = desk.send_plan(quantity=10)
    plan_id = plan.plan_client_id
    # The entry fills 4 at a time; each fill asks to resize the siblings, which the broker
    # refuses, and the consistency pass asks again every second.
    desk.settle(lambda: "STOP" in desk.working_legs(plan_id), what="siblings placed")
    pass_time(desk, 10)
    desk.settle(lambda: not desk.working_legs(plan_id), what="bracket flattened")
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flat")
    refused = [call for call in desk.engine.faults.lost if call[0] == "modify_order"]
    # Each protective leg tried max_attempts times at most before the bracket was flattened.
    assert 3 <= len(refused) <= 2 * 3
    legs = {o.leg.value for o in desk.orders_for(plan_id)}
    assert "EXIT" in legs
    assert desk.engine.database is not None
    desk.flush_storage()
    with UnitOfWork(desk.engine.database) as uow:
        gave_up = uow.events.list_recent(event="RESIZE_GAVE_UP")
        failed = uow.events.list_recent(event="PROTECTION_FAILED")
    assert gave_up
    assert "max_attempts=3" in gave_up[0].payload["detail"]
    del failed
    # No more attempts after giving up.
    pass_time(desk, 5)
    assert len([c for c in desk.engine.faults.lost if c[0] == "modify_order"]) == len(refused)


def test_an_entry_the_venue_never_gets_is_resent_at_most_max_attempts_times(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    desk = build(tmp_path, clock, engine_factory, orders={"max_attempts": 3})
    assert desk.engine.faults is not None
    desk.engine.faults.lose_next("submit_order", loss="request", times=1000)
    plan = desk.send_plan()
    entry_id = plan.plan_client_id + "E"
    desk.settle(lambda: desk.engine.faults.lost, what="entry lost")  # type: ignore[union-attr]
    pass_time(desk, 20)  # an in-flight settle pass (and a resend) every 3 s
    order = desk.settle(
        lambda: (o := stored(desk, entry_id)).status.is_terminal and o, what="given up"
    )
    assert order.status is OrderStatus.CANCELLED
    assert order.reason.startswith("GAVE_UP:")
    sends = [call for call in desk.engine.faults.lost if call[0] == "submit_order"]
    assert len(sends) == 1 + 3  # the first send and max_attempts resends
    assert desk.engine.database is not None
    desk.flush_storage()
    with UnitOfWork(desk.engine.database) as uow:
        [event] = uow.events.list_recent(event="RESEND_GAVE_UP")
    assert "max_attempts=3" in event.payload["detail"]
    pass_time(desk, 5)
    assert len([c for c in desk.engine.faults.lost if c[0] == "submit_order"]) == len(sends)


def test_a_cancel_by_an_instance_whose_lease_was_taken_is_refused_by_the_database_fence(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # Cancels only reduce exposure, but a deposed leader cancelling a stop that the new
    # leader manages would leave a position unprotected: they are fenced like every send.
    desk = build(
        tmp_path, clock, engine_factory, leader={"lease_ttl_s": 60, "renew_interval_s": 30}
    )
    plan = desk.send_plan(quantity=10)
    plan_id = plan.plan_client_id

    def acknowledged() -> dict[str, list[OrderStatus]]:
        return {
            leg: [o.status for o in orders] for leg, orders in desk.working_legs(plan_id).items()
        }

    protected = {"STOP": [OrderStatus.ACCEPTED], "TARGET": [OrderStatus.ACCEPTED]}
    desk.settle(lambda: acknowledged() == protected, what="stop and target acknowledged")
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:  # another process takes the lease
        uow.connection.execute(
            update(leader_lease).values(holder="thief#0001", epoch=leader_lease.c.epoch + 1)
        )
    # The flatten cancels both siblings first: the fence refuses each, nothing is written.
    desk.engine.directory.ask("order", FlattenAll(reason="drill", ts_init=0), timeout_s=5)
    assert acknowledged() == protected
    assert desk.engine.broker is not None
    at_venue = {
        r.client_order_id[-1]: r.status.value
        for r in desk.engine.broker.list_orders()
        if r.client_order_id.startswith(plan_id)
    }
    assert at_venue == {"E": "FILLED", "S": "ACCEPTED", "T": "ACCEPTED"}
    assert all(o.epoch == 1 for o in desk.orders_for(plan_id))
