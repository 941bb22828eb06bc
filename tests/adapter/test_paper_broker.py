"""The paper broker behaves like a venue: asynchronous acks and fills after the latency,
resting stops and targets, its own books in SQLite that survive a restart, and reports
delivered outside its lock in event order."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from adapters.brokers.base import (
    BrokerRejected,
    BrokerReport,
    BrokerUnavailable,
)
from adapters.brokers.paper import VENUE_TABLES, PaperBroker
from adapters.storage.database import Database, create_database_engine, upgrade_schema
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.config import PaperBrokerConfig
from domain.enums import OrderStatus, OrderType, Side
from domain.instruments import Instrument
from domain.messages import (
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    Tick,
)

pytest_plugins = ["tests.adapter.paper_fixtures"]

SYMBOL = "NIFTY"
INSTRUMENTS = {
    SYMBOL: Instrument(
        symbol=SYMBOL,
        lot_size=50,
        tick_size=Decimal("0.05"),
        freeze_quantity=1800,
        reference_price=Decimal("20000"),
    )
}
MS = 1_000_000
JOIN_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------
# FIXTURES AND BUILDERS
# ---------------------------------------------------------------------------------------------


class Recorder:
    """A report sink that keeps everything it was given, in order."""

    def __init__(self) -> None:
        self.reports: list[BrokerReport] = []
        self._lock = threading.Lock()

    def __call__(self, report: BrokerReport) -> None:
        with self._lock:
            self.reports.append(report)

    def statuses(self, client_order_id: str | None = None) -> list[OrderStatusReport]:
        with self._lock:
            return [
                report
                for report in self.reports
                if isinstance(report, OrderStatusReport)
                and (client_order_id is None or report.client_order_id == client_order_id)
            ]

    def fills(self) -> list[FillReport]:
        with self._lock:
            return [report for report in self.reports if isinstance(report, FillReport)]

    def heartbeats(self) -> list[OrderStreamHeartbeat]:
        with self._lock:
            return [report for report in self.reports if isinstance(report, OrderStreamHeartbeat)]

    def order_reports(self) -> list[BrokerReport]:
        with self._lock:
            return [r for r in self.reports if not isinstance(r, OrderStreamHeartbeat)]


def make_broker(
    database: Database,
    clock: ManualClock,
    *,
    latency_ms: int = 0,
    slippage_ticks: int = 0,
    sink: Any = None,
    **options: Any,
) -> tuple[PaperBroker, Recorder]:
    broker = PaperBroker(
        config=PaperBrokerConfig(latency_ms=latency_ms, slippage_ticks=slippage_ticks),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
        **options,
    )
    recorder = Recorder()
    broker.set_report_sink(sink or recorder)
    broker.connect()
    return broker, recorder


def request(
    client_order_id: str = "C1",
    *,
    side: Side = Side.BUY,
    order_type: OrderType = OrderType.MARKET,
    quantity: int = 50,
    price: str | None = None,
    trigger_price: str | None = None,
    instrument: str = SYMBOL,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        instrument=instrument,
        side=side,
        order_type=order_type,
        quantity=quantity,
        price=None if price is None else Decimal(price),
        trigger_price=None if trigger_price is None else Decimal(trigger_price),
    )


def settled(broker: PaperBroker) -> PaperBroker:
    """Wait until the venue's writer has committed, and delivered the reports of, everything
    done so far (reports reach the sink only after their batch commits)."""
    assert broker.flush(timeout_s=JOIN_TIMEOUT_S), "the venue's writer did not catch up"
    return broker


def quote(broker: PaperBroker, clock: ManualClock, bid: str, ask: str) -> None:
    """A quote for ``SYMBOL``; returns once what it caused has been reported."""
    now_ns = clock.now_ns()
    broker.on_tick(
        Tick(
            instrument=SYMBOL,
            bid=Decimal(bid),
            ask=Decimal(ask),
            last=Decimal(bid),
            ts_event=now_ns,
            ts_init=now_ns,
        )
    )
    settled(broker)


def tick_now(broker: PaperBroker, clock: ManualClock) -> None:
    """Let the venue's time pass; returns once what it caused has been reported."""
    broker.on_time(clock.now_ns())
    settled(broker)


def status_of(broker: PaperBroker, client_order_id: str) -> OrderStatusReport:
    (report,) = [r for r in settled(broker).list_orders() if r.client_order_id == client_order_id]
    return report


# ---------------------------------------------------------------------------------------------
# SUBMIT
# ---------------------------------------------------------------------------------------------


class TestSubmitOrder:
    def test_acknowledges_only_once_the_latency_has_passed(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=20)
        submitted_ns = clock.now_ns()
        broker.submit_order(request(order_type=OrderType.LIMIT, price="19000"))

        tick_now(broker, clock)
        clock.advance(nanos=19 * MS)
        tick_now(broker, clock)
        assert recorder.statuses() == []
        assert status_of(broker, "C1").status is OrderStatus.SUBMITTED

        clock.advance(nanos=1 * MS)
        tick_now(broker, clock)
        (ack,) = recorder.statuses()
        assert ack.status is OrderStatus.ACCEPTED
        assert ack.ts_event == submitted_ns + 20 * MS
        assert ack.broker_order_id.startswith("PO")

    def test_emits_nothing_inside_submit_even_with_zero_latency(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=0)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request())
        assert recorder.order_reports() == []

        tick_now(broker, clock)
        assert [r.status for r in recorder.statuses()] == [
            OrderStatus.ACCEPTED,
            OrderStatus.FILLED,
        ]

    def test_refuses_a_duplicate_client_order_id_without_a_second_order_and_counts_it(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        broker.submit_order(request("DUP", order_type=OrderType.LIMIT, price="90"))

        with pytest.raises(BrokerRejected, match=r"^DUPLICATE_CLIENT_ORDER_ID") as raised:
            broker.submit_order(request("DUP", order_type=OrderType.LIMIT, price="95"))

        assert raised.value.client_order_id == "DUP"
        assert broker.submission_counts() == {"DUP": 2}
        assert len(settled(broker).list_orders()) == 1
        tick_now(broker, clock)
        assert len(recorder.statuses("DUP")) == 1  # one ack, for the one order

    def test_refuses_a_client_order_id_that_already_filled(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("ONCE"))
        tick_now(broker, clock)
        assert status_of(broker, "ONCE").status is OrderStatus.FILLED

        with pytest.raises(BrokerRejected, match=r"DUPLICATE_CLIENT_ORDER_ID.*status=FILLED"):
            broker.submit_order(request("ONCE"))
        tick_now(broker, clock)
        assert len(recorder.fills()) == 1
        assert broker.submission_counts()["ONCE"] == 2

    @pytest.mark.parametrize(
        ("bad_request", "code"),
        [
            (request(instrument="BANKNIFTY"), "UNKNOWN_INSTRUMENT"),
            (request(quantity=0), "INVALID_QUANTITY"),
            (request(quantity=-50), "INVALID_QUANTITY"),
            (request(quantity=75), "NOT_LOT_MULTIPLE"),
            (request(quantity=1850), "FREEZE_QUANTITY"),
            (request(order_type=OrderType.LIMIT), "MISSING_LIMIT_PRICE"),
            (request(order_type=OrderType.STOP), "MISSING_TRIGGER_PRICE"),
            (request(order_type=OrderType.LIMIT, price="-1"), "INVALID_PRICE"),
            (request(""), "INVALID_CLIENT_ORDER_ID"),
        ],
    )
    def test_refuses_a_bad_request_with_its_code_and_changes_nothing(
        self, database: Database, clock: ManualClock, bad_request: OrderRequest, code: str
    ) -> None:
        broker, recorder = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        before = broker.snapshot()

        with pytest.raises(BrokerRejected, match=f"^{code}: ") as raised:
            broker.submit_order(bad_request)

        assert f"client_order_id={bad_request.client_order_id}" in str(raised.value)
        tick_now(broker, clock)
        assert broker.list_orders() == []
        assert recorder.order_reports() == []
        after = broker.snapshot()
        assert after["working_orders"] == before["working_orders"] == []
        assert after["next_order_seq"] == before["next_order_seq"]

    def test_is_unavailable_before_connect_and_after_close(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker = PaperBroker(
            config=PaperBrokerConfig(),
            instruments=INSTRUMENTS,
            database=database,
            clock=clock,
        )
        with pytest.raises(BrokerUnavailable, match="NOT_CONNECTED"):
            broker.submit_order(request())
        account = broker.connect()
        assert account.account_id == "PAPER-0001"
        assert account.is_live is False
        assert account.balance == Decimal("1000000")
        broker.close()
        with pytest.raises(BrokerUnavailable, match="PAPER_VENUE_CLOSED"):
            broker.submit_order(request())


# ---------------------------------------------------------------------------------------------
# MATCHING
# ---------------------------------------------------------------------------------------------


class TestMatching:
    def test_fills_a_market_buy_at_the_ask_plus_slippage(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, slippage_ticks=2)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request(quantity=100))
        tick_now(broker, clock)

        (fill,) = recorder.fills()
        assert fill.price == Decimal("100.15")
        assert fill.quantity == 100
        assert fill.side is Side.BUY
        assert fill.trade_id == "PT00000001"
        assert recorder.statuses()[-1].status is OrderStatus.FILLED
        assert recorder.statuses()[-1].filled_quantity == 100

    def test_fills_a_market_sell_at_the_bid_minus_slippage(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, slippage_ticks=1)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request(side=Side.SELL))
        tick_now(broker, clock)

        (fill,) = recorder.fills()
        assert fill.price == Decimal("99.95")
        (position,) = broker.list_positions()
        assert position.quantity == -50
        assert position.average_price == Decimal("99.95")

    def test_holds_a_market_order_until_the_first_quote_arrives(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        broker.submit_order(request())
        tick_now(broker, clock)
        clock.advance(5)
        tick_now(broker, clock)
        assert [r.status for r in recorder.statuses()] == [OrderStatus.ACCEPTED]

        quote(broker, clock, "101.00", "101.10")
        (fill,) = recorder.fills()
        assert fill.price == Decimal("101.10")

    def test_triggers_a_sell_stop_when_the_bid_touches_and_fills_at_the_bid_with_slippage(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, slippage_ticks=1)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(
            request("STOP", side=Side.SELL, order_type=OrderType.STOP, trigger_price="99.00")
        )
        tick_now(broker, clock)
        quote(broker, clock, "99.05", "99.10")
        assert recorder.fills() == []

        quote(broker, clock, "98.90", "98.95")  # gapped through the trigger
        (fill,) = recorder.fills()
        assert fill.price == Decimal("98.85")
        assert fill.client_order_id == "STOP"
        assert status_of(broker, "STOP").status is OrderStatus.FILLED

    def test_triggers_a_buy_stop_when_the_ask_touches(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("BSTOP", order_type=OrderType.STOP, trigger_price="101"))
        tick_now(broker, clock)
        quote(broker, clock, "100.90", "100.95")
        assert recorder.fills() == []
        quote(broker, clock, "100.95", "101.00")
        (fill,) = recorder.fills()
        assert fill.price == Decimal("101.00")

    def test_fills_a_resting_target_at_its_limit_price_when_the_bid_reaches_it(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(
            request("TGT", side=Side.SELL, order_type=OrderType.LIMIT, price="102.00")
        )
        tick_now(broker, clock)
        quote(broker, clock, "101.95", "102.00")
        assert recorder.fills() == []

        quote(broker, clock, "102.30", "102.35")  # through the limit: the maker gets its price
        (fill,) = recorder.fills()
        assert fill.price == Decimal("102.00")
        assert fill.side is Side.SELL

    def test_fills_a_marketable_limit_at_the_touch_never_worse_than_its_limit(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, slippage_ticks=3)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("LIM", order_type=OrderType.LIMIT, price="100.50"))
        tick_now(broker, clock)
        (fill,) = recorder.fills()
        assert fill.price == Decimal("100.05")  # no slippage on a limit

    def test_stores_each_fill_before_reporting_it(
        self, database: Database, clock: ManualClock
    ) -> None:
        seen: list[tuple[str, bool, int]] = []
        fills_table, positions_table = VENUE_TABLES[1], VENUE_TABLES[2]

        def sink(report: BrokerReport) -> None:
            if isinstance(report, FillReport):
                # Committed: another connection sees the fill and the position it made.
                with database.transaction() as connection:
                    stored = set(connection.execute(select(fills_table.c.trade_id)).scalars())
                    position = connection.execute(select(positions_table.c.quantity)).scalar()
                seen.append((report.trade_id, report.trade_id in stored, position))

        broker, _ = make_broker(database, clock, sink=sink)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request(quantity=100))
        tick_now(broker, clock)
        assert seen == [("PT00000001", True, 100)]

    def test_caps_each_fill_with_partial_fill_max_and_finishes_over_later_passes(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, partial_fill_max=50)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("PART", quantity=150))
        tick_now(broker, clock)
        assert [f.quantity for f in recorder.fills()] == [50]
        assert status_of(broker, "PART").status is OrderStatus.PARTIALLY_FILLED

        clock.advance(nanos=MS)
        tick_now(broker, clock)
        quote(broker, clock, "100.05", "100.10")

        fills = recorder.fills()
        assert [f.quantity for f in fills] == [50, 50, 50]
        assert [f.trade_id for f in fills] == ["PT00000001", "PT00000002", "PT00000003"]
        assert [(r.status, r.filled_quantity) for r in recorder.statuses("PART")] == [
            (OrderStatus.ACCEPTED, 0),
            (OrderStatus.PARTIALLY_FILLED, 50),
            (OrderStatus.PARTIALLY_FILLED, 100),
            (OrderStatus.FILLED, 150),
        ]
        (position,) = broker.list_positions()
        assert position.quantity == 150
        assert position.average_price == Decimal("100.06666667")

    def test_nets_positions_and_books_realized_pnl_into_the_balance(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.00")
        broker.submit_order(request("B1", quantity=100))
        tick_now(broker, clock)
        quote(broker, clock, "110.00", "110.00")
        broker.submit_order(request("S1", side=Side.SELL, quantity=150))
        tick_now(broker, clock)

        (position,) = broker.list_positions()
        assert (position.quantity, position.average_price) == (-50, Decimal("110.00"))
        broker.close()
        reopened, _ = make_broker(database, clock)
        assert reopened.connect().balance == Decimal("1000000") + Decimal("1000.00")
        (position,) = reopened.list_positions()
        assert (position.quantity, position.average_price) == (-50, Decimal("110.00"))


# ---------------------------------------------------------------------------------------------
# CANCEL AND MODIFY
# ---------------------------------------------------------------------------------------------


class TestCancelOrder:
    def test_cancels_a_resting_order_once_the_latency_has_passed(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=20)
        broker.submit_order(request("R", order_type=OrderType.LIMIT, price="90"))
        clock.advance(nanos=20 * MS)
        tick_now(broker, clock)
        broker.cancel_order("R")
        clock.advance(nanos=19 * MS)
        tick_now(broker, clock)
        assert status_of(broker, "R").status is OrderStatus.ACCEPTED

        clock.advance(nanos=1 * MS)
        tick_now(broker, clock)
        cancelled = recorder.statuses("R")[-1]
        assert cancelled.status is OrderStatus.CANCELLED
        assert status_of(broker, "R").status is OrderStatus.CANCELLED
        quote(broker, clock, "80", "80.05")
        assert recorder.fills() == []

    def test_cancel_of_a_filled_or_unknown_order_is_a_quiet_no_op(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("F"))
        tick_now(broker, clock)
        count = len(recorder.order_reports())

        broker.cancel_order("F")
        broker.cancel_order("NEVER-SEEN")
        clock.advance(1)
        tick_now(broker, clock)
        assert len(recorder.order_reports()) == count
        assert status_of(broker, "F").status is OrderStatus.FILLED

    def test_a_cancel_due_before_the_crossing_tick_wins(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=10)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("T", side=Side.SELL, order_type=OrderType.LIMIT, price="101"))
        clock.advance(nanos=10 * MS)
        tick_now(broker, clock)
        broker.cancel_order("T")
        clock.advance(nanos=10 * MS)  # the cancel is due now, and so is this tick

        quote(broker, clock, "101.50", "101.55")
        assert recorder.fills() == []
        assert status_of(broker, "T").status is OrderStatus.CANCELLED

    def test_a_fill_due_before_the_cancel_wins(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=20)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("M"))  # ack and fill due at +20 ms
        clock.advance(nanos=10 * MS)
        broker.cancel_order("M")  # due at +30 ms
        clock.advance(nanos=30 * MS)
        tick_now(broker, clock)  # both due in one pass: the earlier one decides

        assert [r.status for r in recorder.statuses("M")] == [
            OrderStatus.ACCEPTED,
            OrderStatus.FILLED,
        ]
        assert len(recorder.fills()) == 1

    def test_a_cancel_keeps_what_already_filled(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock, partial_fill_max=50)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("P", quantity=100))
        tick_now(broker, clock)
        broker.cancel_order("P")
        clock.advance(nanos=MS)
        tick_now(broker, clock)

        final = status_of(broker, "P")
        assert (final.status, final.filled_quantity) == (OrderStatus.CANCELLED, 50)
        assert broker.list_positions()[0].quantity == 50


class TestModifyOrder:
    def test_changes_the_quantity_once_the_latency_has_passed(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=5)
        broker.submit_order(
            request("S", side=Side.SELL, order_type=OrderType.STOP, trigger_price="95")
        )
        clock.advance(nanos=5 * MS)
        tick_now(broker, clock)
        broker.modify_order("S", quantity=100)
        tick_now(broker, clock)
        assert status_of(broker, "S").quantity == 50

        clock.advance(nanos=5 * MS)
        tick_now(broker, clock)
        modified = recorder.statuses("S")[-1]
        assert (modified.status, modified.quantity) == (OrderStatus.ACCEPTED, 100)
        quote(broker, clock, "94.90", "94.95")
        assert [f.quantity for f in recorder.fills()] == [100]

    def test_refuses_a_modify_that_is_not_above_the_filled_quantity(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock, partial_fill_max=50)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("P", quantity=150))
        tick_now(broker, clock)
        with pytest.raises(BrokerRejected, match=r"^MODIFY_BELOW_FILLED: .*filled_quantity=50"):
            broker.modify_order("P", quantity=50)
        with pytest.raises(BrokerRejected, match=r"^NOT_LOT_MULTIPLE"):
            broker.modify_order("P", quantity=120)
        assert status_of(broker, "P").quantity == 150

    def test_refuses_a_modify_of_an_order_that_is_not_working(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock)
        with pytest.raises(BrokerRejected, match=r"^ORDER_NOT_WORKING: client_order_id=GHOST"):
            broker.modify_order("GHOST", quantity=50)

    def test_a_modify_overtaken_by_fills_is_refused_with_a_status_report(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, latency_ms=10, partial_fill_max=50)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("P", quantity=150))
        clock.advance(nanos=10 * MS)
        tick_now(broker, clock)  # ack + 50
        broker.modify_order("P", quantity=100)  # due in 10 ms
        clock.advance(nanos=5 * MS)
        tick_now(broker, clock)  # +50 = 100 filled
        clock.advance(nanos=5 * MS)
        tick_now(broker, clock)  # modify due: 100 is not above 100 filled

        refused = [r for r in recorder.statuses("P") if r.reason.startswith("MODIFY_REJECTED")]
        assert len(refused) == 1
        assert refused[0].quantity == 150
        assert status_of(broker, "P").status is OrderStatus.FILLED


# ---------------------------------------------------------------------------------------------
# THREADS AND THE SINK
# ---------------------------------------------------------------------------------------------


class TestReportDelivery:
    def test_a_sink_that_calls_back_into_the_broker_does_not_deadlock(
        self, database: Database, clock: ManualClock
    ) -> None:
        holder: dict[str, PaperBroker] = {}
        seen: list[BrokerReport] = []

        def sink(report: BrokerReport) -> None:
            seen.append(report)
            broker = holder["broker"]
            broker.list_orders()
            broker.list_fills()
            broker.snapshot()
            broker.on_time(clock.now_ns())  # re-entrant: must queue, not block

        broker, _ = make_broker(database, clock, sink=sink)
        holder["broker"] = broker

        def drive() -> None:
            quote(broker, clock, "100.00", "100.05")
            broker.submit_order(request())
            tick_now(broker, clock)

        worker = threading.Thread(target=drive, daemon=True)
        worker.start()
        worker.join(JOIN_TIMEOUT_S)
        assert not worker.is_alive(), "the broker deadlocked calling its sink"
        kinds = [type(r).__name__ for r in seen if not isinstance(r, OrderStreamHeartbeat)]
        assert kinds == ["OrderStatusReport", "FillReport", "OrderStatusReport"]

    def test_a_sink_that_raises_does_not_stop_later_reports(
        self, database: Database, clock: ManualClock
    ) -> None:
        delivered: list[BrokerReport] = []

        def sink(report: BrokerReport) -> None:
            delivered.append(report)
            if isinstance(report, OrderStatusReport) and report.status is OrderStatus.ACCEPTED:
                raise RuntimeError("actor is dead")

        broker, _ = make_broker(database, clock, sink=sink)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request())
        tick_now(broker, clock)
        assert any(isinstance(r, FillReport) for r in delivered)

    def test_reports_keep_event_order_when_several_threads_drive_the_broker(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock, partial_fill_max=50)
        quote(broker, clock, "100.00", "100.05")
        order_ids = [f"O{index}" for index in range(20)]
        start = threading.Barrier(3)

        def submitter() -> None:
            start.wait()
            for client_order_id in order_ids:
                broker.submit_order(request(client_order_id, quantity=150))

        def ticker() -> None:
            start.wait()
            for step in range(200):
                quote(broker, clock, "100.00", "100.05" if step % 2 else "100.10")

        def timer() -> None:
            start.wait()
            for _ in range(200):
                clock.advance(nanos=MS)
                tick_now(broker, clock)

        threads = [threading.Thread(target=fn, daemon=True) for fn in (submitter, ticker, timer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads)
        for _ in range(5):  # let every order finish its partial fills
            clock.advance(nanos=MS)
            tick_now(broker, clock)

        trade_ids = [fill.trade_id for fill in recorder.fills()]
        assert trade_ids == sorted(trade_ids)
        assert len(set(trade_ids)) == len(trade_ids) == 60
        for client_order_id in order_ids:
            updates = recorder.statuses(client_order_id)
            assert updates[0].status is OrderStatus.ACCEPTED
            filled = [update.filled_quantity for update in updates]
            assert filled == sorted(filled)
            assert updates[-1].status is OrderStatus.FILLED
        assert [f.trade_id for f in broker.list_fills()] == trade_ids


# ---------------------------------------------------------------------------------------------
# RESTART
# ---------------------------------------------------------------------------------------------


class TestRestart:
    def test_a_new_broker_on_the_same_books_triggers_a_resting_stop_and_continues_trade_ids(
        self, database_url: str, clock: ManualClock
    ) -> None:
        first_database = Database(create_database_engine(database_url))
        broker, recorder = make_broker(first_database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("ENTRY", quantity=100))
        broker.submit_order(
            request(
                "STOP",
                side=Side.SELL,
                order_type=OrderType.STOP,
                quantity=100,
                trigger_price="98.00",
            )
        )
        tick_now(broker, clock)
        assert [f.trade_id for f in recorder.fills()] == ["PT00000001"]
        # The crash: no close(), the engine is simply gone.
        first_database.dispose()

        clock.advance(30)
        second_database = Database(create_database_engine(database_url))
        try:
            reborn, recorder = make_broker(second_database, clock)
            orders = {r.client_order_id: r for r in reborn.list_orders()}
            assert orders["STOP"].status is OrderStatus.ACCEPTED
            assert orders["ENTRY"].status is OrderStatus.FILLED
            (position,) = reborn.list_positions()
            assert (position.quantity, position.average_price) == (100, Decimal("100.05"))

            quote(reborn, clock, "97.95", "98.00")
            (stop_fill,) = recorder.fills()
            assert stop_fill.trade_id == "PT00000002"
            assert stop_fill.client_order_id == "STOP"
            assert reborn.list_positions() == []
            assert [f.trade_id for f in reborn.list_fills()] == ["PT00000001", "PT00000002"]
            with pytest.raises(BrokerRejected, match=r"^DUPLICATE_CLIENT_ORDER_ID"):
                reborn.submit_order(request("ENTRY", quantity=100))
            assert reborn.submission_counts() == {"ENTRY": 2, "STOP": 1}
        finally:
            second_database.dispose()

    def test_an_order_received_before_a_crash_is_acknowledged_after_restart(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock, latency_ms=50)
        broker.submit_order(request("INFLIGHT", order_type=OrderType.LIMIT, price="90"))
        broker.close()

        clock.advance(1)
        reborn, recorder = make_broker(database, clock, latency_ms=50)
        assert status_of(reborn, "INFLIGHT").status is OrderStatus.SUBMITTED
        tick_now(reborn, clock)
        assert [r.status for r in recorder.statuses("INFLIGHT")] == [OrderStatus.ACCEPTED]
        broker_order_ids = {r.broker_order_id for r in reborn.list_orders()}
        reborn.submit_order(request("NEXT", order_type=OrderType.LIMIT, price="90"))
        assert {r.broker_order_id for r in settled(reborn).list_orders()} - broker_order_ids == {
            "PO00000002"
        }

    def test_the_last_traded_price_per_instrument_survives_a_restart(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("FIRST"))
        tick_now(broker, clock)
        quote(broker, clock, "101.00", "101.05")
        broker.submit_order(request("SECOND"))
        tick_now(broker, clock)
        broker.close()
        reborn, _ = make_broker(database, clock)
        prices = reborn.last_trade_prices()
        assert len(prices) == 1 and next(iter(prices.values())) == Decimal("101.05")

    def test_lists_todays_orders_and_fills_and_keeps_older_working_orders(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, _ = make_broker(database, clock)
        quote(broker, clock, "100.00", "100.05")
        broker.submit_order(request("DAY1-FILLED"))
        broker.submit_order(
            request("DAY1-GTC", side=Side.SELL, order_type=OrderType.LIMIT, price="120")
        )
        tick_now(broker, clock)
        clock.advance(86_400)  # the next trading day

        assert [r.client_order_id for r in broker.list_orders()] == ["DAY1-GTC"]
        assert broker.list_fills() == []
        assert broker.list_positions()[0].quantity == 50


# ---------------------------------------------------------------------------------------------
# HEARTBEAT
# ---------------------------------------------------------------------------------------------


class TestHeartbeat:
    def test_emits_an_order_stream_heartbeat_at_most_every_500_ms(
        self, database: Database, clock: ManualClock
    ) -> None:
        broker, recorder = make_broker(database, clock)
        start_ns = clock.now_ns()
        for _ in range(21):  # a 100 ms timer over two seconds
            tick_now(broker, clock)
            clock.advance(nanos=100 * MS)

        assert [hb.ts_event - start_ns for hb in recorder.heartbeats()] == [
            0,
            500 * MS,
            1000 * MS,
            1500 * MS,
            2000 * MS,
        ]

    def test_sends_no_heartbeat_before_connect(
        self, database: Database, clock: ManualClock
    ) -> None:
        recorder = Recorder()
        broker = PaperBroker(
            config=PaperBrokerConfig(), instruments=INSTRUMENTS, database=database, clock=clock
        )
        broker.set_report_sink(recorder)
        broker.on_time(clock.now_ns())
        assert recorder.reports == []
        broker.connect()
        broker.on_time(clock.now_ns() + NANOS_PER_SECOND)
        settled(broker)
        assert len(recorder.heartbeats()) == 1


# ---------------------------------------------------------------------------------------------
# POSTGRESQL
# ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_keeps_exact_books_on_postgresql_across_a_restart(
    postgres_url: str, clock: ManualClock
) -> None:
    upgrade_schema(postgres_url)
    first = Database(create_database_engine(postgres_url))
    with first.transaction() as connection:  # the server is shared by the session's tests
        for table in reversed(VENUE_TABLES):
            connection.execute(table.delete())
    try:
        broker, recorder = make_broker(first, clock, slippage_ticks=1)
        quote(broker, clock, "19999.95", "20000.05")
        broker.submit_order(request("PG-ENTRY", quantity=150))
        broker.submit_order(
            request(
                "PG-TARGET",
                side=Side.SELL,
                order_type=OrderType.LIMIT,
                quantity=150,
                price="20100.35",
            )
        )
        tick_now(broker, clock)
        assert [f.price for f in recorder.fills()] == [Decimal("20000.10")]
    finally:
        first.dispose()

    second = Database(create_database_engine(postgres_url))
    try:
        reborn, recorder = make_broker(second, clock)
        assert reborn.list_positions()[0].average_price == Decimal("20000.10")
        quote(reborn, clock, "20100.40", "20100.45")
        (fill,) = recorder.fills()
        assert (fill.trade_id, fill.price) == ("PT00000002", Decimal("20100.35"))
        assert reborn.connect().balance == Decimal("1000000") + Decimal("100.25") * 150
    finally:
        second.dispose()
