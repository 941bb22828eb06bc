"""Two processes' paper venues over one database: only the leader's acts, a takeover reloads
the books, and a storage conflict is reported instead of failing the same way forever."""

from __future__ import annotations

import pytest

from adapters.brokers.base import BrokerUnavailable
from adapters.brokers.paper import PaperBroker
from adapters.storage.database import Database
from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.enums import OrderStatus, OrderType, Side
from tests.adapter.test_paper_broker import (
    Recorder,
    make_broker,
    quote,
    request,
    settled,
    tick_now,
)

pytest_plugins = ["tests.adapter.paper_fixtures"]


def take_lease(database: Database, holder: str, now_ns: int) -> int:
    with UnitOfWork(database) as uow:
        lease = uow.lease.acquire_or_renew(instance_id=holder, now_ns=now_ns, ttl_ns=1_000)
    assert lease.is_leader
    return lease.epoch


def two_venues(
    database: Database, clock: ManualClock
) -> tuple[tuple[PaperBroker, Recorder], tuple[PaperBroker, Recorder]]:
    first = make_broker(database, clock, follow_leadership=True)
    second = make_broker(database, clock, follow_leadership=True)
    return first, second


def test_a_venue_with_a_stale_order_counter_reloads_its_books_instead_of_failing_forever(
    database: Database, clock: ManualClock
) -> None:
    (first, _), (second, _) = make_broker(database, clock), make_broker(database, clock)
    quote(first, clock, "100.00", "100.05")
    first.submit_order(request("A1", quantity=50))
    settled(first)
    # The second venue's counter still says 1: its insert collides with A1's venue order id.
    quote(second, clock, "100.00", "100.05")
    second.submit_order(request("B1", quantity=50))
    second.submit_order(request("B2", quantity=50))
    tick_now(second, clock)
    statuses = {r.client_order_id: r.status for r in second.list_orders()}
    assert statuses["B1"] is OrderStatus.FILLED
    assert statuses["B2"] is OrderStatus.FILLED


def test_a_passive_venue_refuses_requests_and_matches_nothing_until_it_leads(
    database: Database, clock: ManualClock
) -> None:
    (leader, _), (standby, standby_reports) = two_venues(database, clock)
    epoch = take_lease(database, "a#1", now_ns=0)
    leader.on_leadership(True, epoch)
    standby.on_leadership(False, epoch)
    quote(leader, clock, "100.00", "100.05")
    leader.submit_order(request("ENTRY", quantity=50))
    tick_now(leader, clock)
    stop = request(
        "STOP", side=Side.SELL, order_type=OrderType.STOP, quantity=50, trigger_price="99.00"
    )
    leader.submit_order(stop)
    tick_now(leader, clock)

    with pytest.raises(BrokerUnavailable, match=r"^VENUE_PASSIVE"):
        standby.submit_order(request("X1", quantity=50))
    quote(standby, clock, "98.90", "98.95")  # through the stop: the standby must not fill it
    tick_now(standby, clock)
    assert not standby_reports.fills()
    assert {r.client_order_id: r.status for r in leader.list_orders()}["STOP"] is (
        OrderStatus.ACCEPTED
    )
    assert [p.quantity for p in standby.list_positions()] == [50]  # read from storage

    # The leader dies; the standby takes over at epoch 2 with the books the leader left.
    later = take_lease(database, "b#2", now_ns=10_000)
    standby.on_leadership(True, later)
    quote(standby, clock, "98.90", "98.95")
    (stop_fill,) = standby_reports.fills()
    assert (stop_fill.client_order_id, stop_fill.trade_id) == ("STOP", "PT00000002")
    standby.submit_order(request("X1", quantity=50))  # its order counter is current
    tick_now(standby, clock)
    assert standby.list_positions()[0].quantity == 50


def test_a_deposed_leaders_venue_cannot_write_after_the_takeover(
    database: Database, clock: ManualClock
) -> None:
    (old, old_reports), (new, _) = two_venues(database, clock)
    old.on_leadership(True, take_lease(database, "a#1", now_ns=0))
    quote(old, clock, "100.00", "100.05")
    # The new leader takes the lease; the old process has not noticed yet.
    new.on_leadership(True, take_lease(database, "b#2", now_ns=10_000))
    # The old venue takes the request into memory (a request does not wait for storage) and
    # even fills it there, but its writer is fenced out: nothing is stored, nothing reported.
    old.submit_order(request("LATE", quantity=50))
    tick_now(old, clock)
    assert old_reports.order_reports() == []
    assert "LATE" not in {r.client_order_id for r in new.list_orders()}
    assert not old.snapshot()["is_active"]
    with pytest.raises(BrokerUnavailable, match=r"^VENUE_PASSIVE"):
        old.submit_order(request("LATER", quantity=50))
    # The new leader's venue never heard of it: the order actor may send it again there.
    quote(new, clock, "100.00", "100.05")
    new.submit_order(request("LATE", quantity=50))
    tick_now(new, clock)
    assert {r.client_order_id: r.status for r in new.list_orders()}["LATE"] is (OrderStatus.FILLED)
