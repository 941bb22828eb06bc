"""The paper venue's books live in memory and its own writer persists them behind: a request
never waits for storage, a report is never delivered before the batch holding it has
committed, and what never committed is forgotten after a crash (taken again under the same
id), while what did commit is reloaded and its ids stay refused as duplicates.

Storage is made unavailable the way an operator could break it: the venue's table is renamed
away (every write to it fails) and renamed back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.brokers.paper import PaperBroker, venue_fills, venue_orders
from adapters.storage.database import Database
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.enums import OrderStatus, OrderType
from domain.messages import FillReport, Tick
from tests.adapter.test_paper_broker import (
    Recorder,
    make_broker,
    quote,
    request,
    settled,
    tick_now,
)
from tests.helpers import wait_until

pytest_plugins = ["tests.adapter.paper_fixtures"]


class StorageOutage:
    """Takes one venue table away (writes to it fail) until ``restore``."""

    def __init__(self, database: Database, table: str) -> None:
        self._database = database
        self._table = table
        self.is_down = False

    def start(self) -> None:
        with self._database.transaction() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {self._table} RENAME TO {self._table}_away")
        self.is_down = True

    def restore(self) -> None:
        if self.is_down:
            with self._database.transaction() as connection:
                connection.exec_driver_sql(
                    f"ALTER TABLE {self._table}_away RENAME TO {self._table}"
                )
            self.is_down = False


@pytest.fixture
def outage(database: Database) -> Iterator[StorageOutage]:
    outages: list[StorageOutage] = []

    def make(table: str) -> StorageOutage:
        outages.append(StorageOutage(database, table))
        return outages[-1]

    yield make  # type: ignore[misc]
    for each in outages:
        each.restore()


def write_failures(broker: PaperBroker) -> int:
    return int(broker.snapshot()["write_behind"]["write_failures"])


def stored_trade_ids(database: Database) -> set[str]:
    with database.transaction() as connection:
        return set(connection.execute(select(venue_fills.c.trade_id)).scalars())


def stored_client_order_ids(database: Database) -> set[str]:
    with database.transaction() as connection:
        return set(connection.execute(select(venue_orders.c.client_order_id)).scalars())


def test_no_report_reaches_the_sink_before_its_batch_has_committed(
    database: Database, clock: ManualClock, outage: object
) -> None:
    broker, recorder = make_broker(database, clock)
    quote(broker, clock, "100.00", "100.05")
    fills_down = outage("venue_fills")  # type: ignore[operator]
    fills_down.start()

    broker.submit_order(request("C1", quantity=50))
    broker.on_time(clock.now_ns())  # acks and fills C1 in memory
    wait_until(lambda: write_failures(broker) >= 1, message="the writer hit the outage")
    # Matched, but not durable: nothing reported, and no list that would
    # leave out what the venue took (an incomplete list makes a reconciliation resend).
    assert broker.snapshot()["positions"][0]["quantity"] == 50
    assert recorder.reports == []
    with pytest.raises(BrokerUnavailable, match=r"^VENUE_STORAGE_BEHIND: list_fills"):
        broker.list_fills()
    clock.advance(nanos=NANOS_PER_SECOND)
    broker.on_time(clock.now_ns())  # a heartbeat waits behind the unwritten batch too
    assert recorder.reports == []

    fills_down.restore()
    assert settled(broker)
    assert [type(report).__name__ for report in recorder.reports] == [
        "OrderStatusReport",  # ACCEPTED
        "FillReport",
        "OrderStatusReport",  # FILLED
        "OrderStreamHeartbeat",  # the first on_time's
        "OrderStreamHeartbeat",  # a second later
    ]
    assert stored_trade_ids(database) == {"PT00000001"}
    assert [fill.trade_id for fill in broker.list_fills()] == ["PT00000001"]


def test_a_request_returns_without_waiting_for_storage(
    database: Database, clock: ManualClock, outage: object
) -> None:
    broker, _ = make_broker(database, clock)
    orders_down = outage("venue_orders")  # type: ignore[operator]
    orders_down.start()
    started = time.perf_counter()
    broker.submit_order(request("C1", order_type=OrderType.LIMIT, price="90"))
    broker.cancel_order("C1")
    elapsed_s = time.perf_counter() - started
    # Storage is down and the requests still answer (the old venue raised
    # STORAGE_UNAVAILABLE here after a failed transaction); generous bound for a loaded box.
    assert elapsed_s < 0.5
    wait_until(lambda: write_failures(broker) >= 1, message="the writer hit the outage")
    orders_down.restore()
    assert settled(broker)
    assert stored_client_order_ids(database) == {"C1"}


def test_a_crash_before_the_batch_commits_forgets_the_request_and_keeps_what_committed(
    database: Database, clock: ManualClock, outage: object
) -> None:
    broker, recorder = make_broker(database, clock)
    quote(broker, clock, "100.00", "100.05")
    broker.submit_order(request("KEPT", quantity=50))
    tick_now(broker, clock)
    assert [fill.client_order_id for fill in recorder.fills()] == ["KEPT"]

    orders_down = outage("venue_orders")  # type: ignore[operator]
    orders_down.start()
    broker.submit_order(request("LOST", quantity=50))
    broker.on_time(clock.now_ns())
    wait_until(lambda: write_failures(broker) >= 1, message="the writer hit the outage")
    broker.close()  # the process dies with LOST's batch unwritten
    assert [fill.client_order_id for fill in recorder.fills()] == ["KEPT"]
    orders_down.restore()

    reborn, reborn_reports = make_broker(database, clock)
    # KEPT was committed: reloaded, and its id is still taken.
    assert [(f.client_order_id, f.trade_id) for f in reborn.list_fills()] == [
        ("KEPT", "PT00000001")
    ]
    assert [p.quantity for p in reborn.list_positions()] == [50]
    with pytest.raises(BrokerRejected, match=r"^DUPLICATE_CLIENT_ORDER_ID.*status=FILLED"):
        reborn.submit_order(request("KEPT", quantity=50))
    # LOST never committed: the venue never received it, so a resend under the same id is
    # a new order, and its trade id follows the last stored one.
    reborn.submit_order(request("LOST", quantity=50))
    quote(reborn, clock, "100.00", "100.05")
    tick_now(reborn, clock)
    (lost_fill,) = reborn_reports.fills()
    assert (lost_fill.client_order_id, lost_fill.trade_id) == ("LOST", "PT00000002")
    assert reborn.submission_counts() == {"KEPT": 2, "LOST": 1}


def test_an_earlier_sessions_order_id_stays_refused_after_a_restart(
    database: Database, clock: ManualClock
) -> None:
    broker, _ = make_broker(database, clock)
    quote(broker, clock, "100.00", "100.05")
    broker.submit_order(request("OLD", quantity=50))
    tick_now(broker, clock)
    broker.close()

    clock.advance(nanos=3 * 86_400 * NANOS_PER_SECOND)  # days later: not in today's lists
    reborn, _ = make_broker(database, clock)
    assert reborn.list_orders() == []
    with pytest.raises(BrokerRejected, match=r"^DUPLICATE_CLIENT_ORDER_ID: client_order_id=OLD"):
        reborn.submit_order(request("OLD", quantity=50))
    assert settled(reborn).submission_counts() == {"OLD": 2}
    reborn.close()
    again, _ = make_broker(database, clock)
    assert again.submission_counts() == {"OLD": 2}  # the refused resend was counted in storage


PRICE_FIELDS = {"price", "trigger_price", "average_fill_price", "average_price", "realized_pnl"}


def exact(value: Any) -> Any:
    """A snapshot's prices as numbers (storage may keep 100.05 for 100.05000000)."""
    if isinstance(value, list):
        return [exact(item) for item in value]
    if isinstance(value, dict):
        return {
            key: Decimal(item) if key in PRICE_FIELDS and item is not None else exact(item)
            for key, item in value.items()
        }
    return value


def test_the_books_reload_from_disk_as_they_were(database: Database, clock: ManualClock) -> None:
    broker, _ = make_broker(database, clock, partial_fill_max=50)
    quote(broker, clock, "100.00", "100.05")
    broker.submit_order(request("PART", quantity=150))
    broker.submit_order(request("REST", order_type=OrderType.LIMIT, price="95", quantity=50))
    stop = request("STOP", order_type=OrderType.STOP, trigger_price="101", quantity=50)
    broker.submit_order(stop)
    tick_now(broker, clock)  # PART fills 50 of 150
    broker.modify_order("REST", quantity=100)
    broker.close()
    before = broker.snapshot()

    reborn, recorder = make_broker(database, clock, partial_fill_max=50)
    after = reborn.snapshot()
    for key in ("working_orders", "positions", "next_order_seq", "next_trade_seq"):
        assert exact(after[key]) == exact(before[key]), key
    assert {r.client_order_id: r.status for r in reborn.list_orders()} == {
        "PART": OrderStatus.PARTIALLY_FILLED,
        "REST": OrderStatus.ACCEPTED,
        "STOP": OrderStatus.ACCEPTED,
    }
    # And it carries on from there: the modify falls due, PART finishes, the stop triggers.
    quote(reborn, clock, "101.00", "101.05")
    tick_now(reborn, clock)
    tick_now(reborn, clock)
    statuses = {r.client_order_id: r.status for r in reborn.list_orders()}
    assert statuses["PART"] is OrderStatus.FILLED
    assert statuses["STOP"] is OrderStatus.FILLED
    assert [r.quantity for r in recorder.statuses("REST")][-1] == 100
    assert all(isinstance(fill, FillReport) for fill in recorder.fills())
    assert next(fill.trade_id for fill in recorder.fills()) == "PT00000002"


def test_a_sink_that_calls_flush_does_not_deadlock(database: Database, clock: ManualClock) -> None:
    holder: dict[str, PaperBroker] = {}
    recorder = Recorder()

    def sink(report: object) -> None:
        holder["broker"].flush()  # on the writer thread: returns at once
        recorder(report)  # type: ignore[arg-type]

    broker, _ = make_broker(database, clock, sink=sink)
    holder["broker"] = broker
    quote(broker, clock, "100.00", "100.05")
    broker.submit_order(request("C1", quantity=50))
    tick_now(broker, clock)
    assert len(recorder.fills()) == 1


def test_reports_go_out_on_the_venues_writer_thread_never_on_the_callers(
    database: Database, clock: ManualClock
) -> None:
    # The feed thread calls on_tick and the order actor's thread the requests: neither may
    # be the one that runs the sink (the old venue delivered on whichever thread drove it).
    delivered_on: list[str] = []

    def sink(report: object) -> None:
        delivered_on.append(threading.current_thread().name)

    broker, _ = make_broker(database, clock, sink=sink)
    quote(broker, clock, "100.00", "100.05")
    broker.submit_order(request("C1", quantity=50))
    broker.on_tick(  # the order fills on this thread's call, and is reported elsewhere
        Tick(
            instrument="NIFTY",
            bid=Decimal("100.00"),
            ask=Decimal("100.05"),
            last=Decimal("100.00"),
            ts_event=clock.now_ns(),
            ts_init=clock.now_ns(),
        )
    )
    settled(broker)
    assert len(delivered_on) == 3  # ACCEPTED, the fill, FILLED
    assert set(delivered_on) == {"paper-venue-writer"}
    assert threading.current_thread().name not in delivered_on
