"""``KiteBroker`` against the local fake Kite (tools/fake_kite) over real sockets: REST over
HTTP, the ticker over a websocket. The remote broker is the only thing replaced; the market
clock is manual (``fake.advance``), waits are on conditions with deadlines."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.brokers.base import BrokerRateLimited, BrokerRejected, BrokerReport, BrokerUnavailable
from adapters.brokers.kite import KiteBroker, KiteTokenExpired, encode_tag
from domain.clock import ManualClock
from domain.config import KiteConfig
from domain.enums import OrderStatus, OrderType, Side
from domain.instruments import Instrument
from domain.messages import (
    BrokerSessionChanged,
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    Tick,
)
from tests.helpers import wait_until
from tools.fake_kite import FakeKite

pytestmark = pytest.mark.timeout(60)

T0 = 1_796_012_345 * 1_000_000_000  # 2026-11-30 (a Monday), 11:49 IST
PLAN = "P0123456789abcdef012"
INSTRUMENTS = {
    "INFY": Instrument(symbol="INFY", reference_price=Decimal("1800")),
    "RELIANCE": Instrument(symbol="RELIANCE", reference_price=Decimal("2900")),
}


class Collected:
    """What the broker handed to its sinks, from its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reports: list[BrokerReport] = []
        self.ticks: list[Tick] = []
        self.token_expired: list[str] = []

    def report(self, report: BrokerReport) -> None:
        with self._lock:
            self.reports.append(report)

    def tick_batch(self, ticks: list[Tick]) -> None:
        with self._lock:
            self.ticks.extend(ticks)

    def sessions(self) -> list[tuple[bool, str]]:
        with self._lock:
            return [
                (r.valid, r.detail) for r in self.reports if isinstance(r, BrokerSessionChanged)
            ]

    def statuses(self, client_order_id: str) -> list[OrderStatusReport]:
        with self._lock:
            return [
                r
                for r in self.reports
                if isinstance(r, OrderStatusReport) and r.client_order_id == client_order_id
            ]

    def fills(self, client_order_id: str | None = None) -> list[FillReport]:
        with self._lock:
            return [
                r
                for r in self.reports
                if isinstance(r, FillReport)
                and (client_order_id is None or r.client_order_id == client_order_id)
            ]

    def heartbeats(self) -> int:
        with self._lock:
            return sum(isinstance(r, OrderStreamHeartbeat) for r in self.reports)

    def last_status(self, client_order_id: str) -> OrderStatus | None:
        statuses = self.statuses(client_order_id)
        return statuses[-1].status if statuses else None


@pytest.fixture
def market_clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def fake(market_clock: ManualClock) -> Iterator[FakeKite]:
    server = FakeKite(clock=market_clock, heartbeat_interval_s=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def collected() -> Collected:
    return Collected()


@pytest.fixture
def make_broker(
    fake: FakeKite, market_clock: ManualClock, collected: Collected
) -> Iterator[Callable[..., KiteBroker]]:
    brokers: list[KiteBroker] = []

    def build(**overrides: Any) -> KiteBroker:
        settings: dict[str, Any] = {
            "api_key": SecretStr(fake.api_key),
            "access_token": SecretStr(fake.create_session()),
            "rest_base_url": fake.base_url,
            "ws_base_url": fake.ws_url,
            "request_timeout_s": 1.0,
            "ticker_backoff_initial_s": 0.05,
            "ticker_backoff_max_s": 0.5,
        }
        settings.update(overrides)
        broker = KiteBroker(
            config=KiteConfig(**settings),
            instruments=INSTRUMENTS,
            clock=market_clock,
            on_token_expired=collected.token_expired.append,
            tick_sink=collected.tick_batch,
        )
        brokers.append(broker)
        sockets_before = fake.socket_count()
        broker.connect()
        broker.set_report_sink(collected.report)
        assert broker.ticker is not None
        assert broker.ticker.connected.wait(10), "the ticker did not connect"
        # The fake registers the socket in its handler, which can lag the client's handshake:
        # a fault that closes "every socket" must find this one.
        wait_until(lambda: fake.socket_count() > sockets_before, message="the fake's socket")
        return broker

    yield build
    for broker in brokers:
        broker.close()


def order(suffix: str, order_type: OrderType, **overrides: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": PLAN + suffix,
        "instrument": "INFY",
        "side": Side.BUY,
        "order_type": order_type,
        "quantity": 5,
    }
    fields.update(overrides)
    return OrderRequest(**fields)


def orders_with_tag(fake: FakeKite, client_order_id: str) -> list[dict[str, Any]]:
    tag = encode_tag(client_order_id)
    return [o for o in fake.orders() if o.get("tag") == tag]


class TestConnect:
    def test_connect_reports_the_user_and_the_fakes_account_type(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        live = make_broker()
        fake.set_account_type("DEMO")
        demo = make_broker()

        assert live.account is not None and demo.account is not None
        assert live.account.account_id == "FK0001"
        assert live.account.is_live is True
        assert live.account.balance > 0
        assert demo.account.is_live is False

    def test_an_instrument_kite_does_not_list_is_refused_at_connect(
        self, fake: FakeKite, market_clock: ManualClock
    ) -> None:
        broker = KiteBroker(
            config=KiteConfig(
                api_key=SecretStr(fake.api_key),
                access_token=SecretStr(fake.create_session()),
                rest_base_url=fake.base_url,
                ws_base_url=fake.ws_url,
            ),
            instruments={"NOPE": Instrument(symbol="NOPE")},
            clock=market_clock,
            start_ticker=False,
        )
        try:
            with pytest.raises(BrokerRejected, match="KITE_UNKNOWN_INSTRUMENTS"):
                broker.connect()
        finally:
            broker.close()


class TestOrders:
    def test_a_market_entry_fills_and_every_list_agrees(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.advance(1)

        broker.submit_order(order("E", OrderType.MARKET))

        wait_until(lambda: collected.last_status(PLAN + "E") is OrderStatus.FILLED)
        (fill,) = collected.fills(PLAN + "E")
        assert fill.quantity == 5 and fill.side is Side.BUY
        listed = {r.client_order_id: r for r in broker.list_orders()}
        assert listed[PLAN + "E"].status is OrderStatus.FILLED
        assert [f.trade_id for f in broker.list_fills()] == [fill.trade_id]
        assert broker.list_fills(since_ns=fill.ts_event + 1) == []
        (position,) = broker.list_positions()
        assert (position.instrument, position.quantity) == ("INFY", 5)
        (kite_order,) = orders_with_tag(fake, PLAN + "E")
        assert kite_order["product"] == "MIS" and kite_order["validity"] == "DAY"
        assert Decimal(str(kite_order["market_protection"])) > 0

    def test_a_manual_order_on_the_account_is_not_ours_and_costs_one_order_list(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        broker = make_broker()
        fake.advance(1)
        manual = httpx.post(
            f"{fake.base_url}/orders/regular",
            data={
                "exchange": "NSE",
                "tradingsymbol": "INFY",
                "transaction_type": "BUY",
                "quantity": "1",
                "product": "MIS",
                "order_type": "MARKET",
                "market_protection": "2",
                "tag": "manual",
            },
            headers={
                "X-Kite-Version": "3",
                "Authorization": f"token {fake.api_key}:{fake.create_session()}",
            },
        )
        assert manual.status_code == 200, manual.text

        assert broker.list_orders() == []
        assert broker.list_fills() == []
        before = len([r for r in fake.request_log() if r.path == "/orders"])
        assert broker.list_fills() == []
        assert len([r for r in fake.request_log() if r.path == "/orders"]) == before

    def test_stop_and_target_work_then_one_is_cancelled_and_the_other_resized(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.advance(1)
        last = Decimal(str(fake.quote("NSE:INFY")["last_price"]))
        stop = order("S", OrderType.STOP, side=Side.SELL, trigger_price=last - 50)
        target = order("T", OrderType.LIMIT, side=Side.SELL, price=last + 50)

        broker.submit_order(stop)
        broker.submit_order(target)

        open_ids = {r.client_order_id for r in broker.list_open_orders()}
        assert open_ids == {PLAN + "S", PLAN + "T"}
        (kite_stop,) = orders_with_tag(fake, PLAN + "S")
        assert kite_stop["order_type"] == "SL-M" and kite_stop["status"] == "TRIGGER PENDING"

        broker.cancel_order(PLAN + "T")
        wait_until(lambda: collected.last_status(PLAN + "T") is OrderStatus.CANCELLED)
        broker.cancel_order(PLAN + "T")  # cancelling a finished order is not an error
        broker.cancel_order(PLAN + "X9")  # nor one Kite never had
        broker.modify_order(PLAN + "S", quantity=10)

        assert orders_with_tag(fake, PLAN + "S")[0]["quantity"] == 10
        assert {r.client_order_id for r in broker.list_open_orders()} == {PLAN + "S"}

    def test_a_second_submit_of_a_placed_id_is_refused_without_a_request(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        broker = make_broker()
        broker.submit_order(order("E", OrderType.MARKET))
        before = len(fake.request_log("order"))

        with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
            broker.submit_order(order("E", OrderType.MARKET))

        assert len(fake.request_log("order")) == before
        assert len(orders_with_tag(fake, PLAN + "E")) == 1

    def test_a_kite_rejection_arrives_as_a_rejected_status_with_its_reason(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.reject_next(reason="RMS: margin exceeds")

        broker.submit_order(order("E", OrderType.MARKET))

        wait_until(lambda: collected.last_status(PLAN + "E") is OrderStatus.REJECTED)
        assert "margin exceeds" in collected.statuses(PLAN + "E")[-1].reason

    def test_an_input_error_is_a_definitive_rejection_with_kites_message(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        broker = make_broker()

        with pytest.raises(BrokerRejected, match=r"KITE_REJECTED.*InputException"):
            broker.submit_order(order("E", OrderType.LIMIT, price=Decimal("0")))
        with pytest.raises(BrokerRejected, match="UNKNOWN_ORDER"):
            broker.modify_order(PLAN + "T", quantity=5)  # Kite has no such order


class TestFaults:
    def test_an_expired_token_raises_once_per_call_calls_back_once_and_never_loops(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.expire_token()
        before = len(fake.request_log())

        for _ in range(2):
            with pytest.raises(KiteTokenExpired, match=r"python -m tools\.kite_login"):
                broker.submit_order(order("E", OrderType.MARKET))
        with pytest.raises(KiteTokenExpired):
            broker.list_orders()  # a read is not retried on an expired token either

        rest_requests = [r for r in fake.request_log()[before:] if r.path != "/ws"]
        assert len(rest_requests) == 3
        wait_until(lambda: len(collected.token_expired) >= 1)
        assert len(collected.token_expired) == 1  # the REST side and the ticker: one call
        assert orders_with_tag(fake, PLAN + "E") == []
        assert broker.token_expired
        # The engine hears it once through the report sink (it pauses entries: BROKER_AUTH).
        [(valid, detail)] = wait_until(collected.sessions)
        assert not valid and "tools.kite_login" in detail

    def test_a_new_login_written_to_the_token_file_is_picked_up_without_a_restart(
        self,
        fake: FakeKite,
        make_broker: Callable[..., KiteBroker],
        collected: Collected,
        tmp_path: Path,
    ) -> None:
        token_file = tmp_path / "kite_access_token"
        token_file.write_text(fake.create_session() + "\n")
        broker = make_broker(access_token=None, access_token_file=str(token_file))
        assert broker.ticker is not None
        fake.expire_token()
        with pytest.raises(KiteTokenExpired):
            broker.list_orders()
        wait_until(lambda: not broker.ticker.connected.is_set())  # type: ignore[union-attr]

        token_file.write_text(fake.create_session() + "\n")  # what tools.kite_login --write does

        broker.submit_order(order("E", OrderType.MARKET))
        assert not broker.token_expired
        assert len(orders_with_tag(fake, PLAN + "E")) == 1
        wait_until(lambda: broker.ticker.connections_total >= 2)  # type: ignore[union-attr]
        assert len(collected.token_expired) == 1
        # Refused once, then back: the engine's BROKER_AUTH pause ends with no operator resume.
        sessions = wait_until(lambda: len(collected.sessions()) == 2 and collected.sessions())
        assert [valid for valid, _ in sessions] == [False, True]

    def test_a_429_is_rate_limited_and_places_nothing(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        broker = make_broker()
        fake.rate_limit_next(category="order")

        with pytest.raises(BrokerRateLimited):
            broker.submit_order(order("E", OrderType.MARKET))

        assert orders_with_tag(fake, PLAN + "E") == []
        broker.submit_order(order("E", OrderType.MARKET))  # the same request may go again
        assert len(orders_with_tag(fake, PLAN + "E")) == 1

    def test_a_5xx_is_unknown_and_a_resend_places_once(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker]
    ) -> None:
        broker = make_broker()
        fake.fail_next(status=503, category="order")

        with pytest.raises(BrokerUnavailable):
            broker.submit_order(order("E", OrderType.MARKET))
        broker.submit_order(order("E", OrderType.MARKET))  # the list says absent: placed

        assert len(orders_with_tag(fake, PLAN + "E")) == 1

    def test_a_lost_answer_is_unknown_the_list_settles_it_and_a_resend_is_not_placed_twice(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker(request_timeout_s=0.3)
        fake.hold_next(seconds=1.5, placed=True)

        with pytest.raises(BrokerUnavailable, match="KITE_TIMEOUT"):
            broker.submit_order(order("E", OrderType.MARKET))

        # Reconciliation: the order list decides (matched by tag).
        listed = {r.client_order_id for r in broker.list_orders()}
        assert PLAN + "E" in listed
        with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
            broker.submit_order(order("E", OrderType.MARKET))
        assert len(orders_with_tag(fake, PLAN + "E")) == 1

    def test_an_unanswered_submit_kite_does_not_list_makes_cancel_unknown_for_a_while(
        self,
        fake: FakeKite,
        make_broker: Callable[..., KiteBroker],
        market_clock: ManualClock,
    ) -> None:
        broker = make_broker(request_timeout_s=0.3)
        fake.hold_next(seconds=1.0, placed=False)  # never placed, the answer is late

        with pytest.raises(BrokerUnavailable, match="KITE_TIMEOUT"):
            broker.submit_order(order("E", OrderType.MARKET))

        # It may still appear: "nothing to cancel" would be a guess.
        with pytest.raises(BrokerUnavailable, match="KITE_ORDER_NOT_LISTED_YET"):
            broker.cancel_order(PLAN + "E")
        market_clock.advance(60)  # past the window the list's silence is conclusive
        broker.cancel_order(PLAN + "E")
        assert orders_with_tag(fake, PLAN + "E") == []

    def test_duplicated_postbacks_give_one_fill_and_dropped_ones_are_closed_by_the_lists(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.advance(1)
        fake.duplicate_postbacks(10)

        broker.submit_order(order("E", OrderType.MARKET))
        wait_until(lambda: collected.last_status(PLAN + "E") is OrderStatus.FILLED)
        assert len(collected.fills(PLAN + "E")) == 1

        fake.drop_postbacks(10)
        broker.submit_order(order("X1", OrderType.MARKET, side=Side.SELL))
        fills = broker.list_fills()
        assert {f.client_order_id for f in fills} == {PLAN + "E", PLAN + "X1"}
        assert collected.fills(PLAN + "X1") == []  # no postback arrived: only the list knew
        assert broker.list_positions()[0].quantity == 0

    def test_partial_fills_arrive_with_kites_trade_ids(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        fake.advance(1)
        fake.set_partial_fill(2)

        broker.submit_order(order("E", OrderType.MARKET))
        for _ in range(3):
            fake.advance(1)

        wait_until(lambda: sum(f.quantity for f in collected.fills(PLAN + "E")) == 5)
        wait_until(lambda: collected.last_status(PLAN + "E") is OrderStatus.FILLED)
        trade_ids = {f.trade_id for f in collected.fills(PLAN + "E")}
        assert trade_ids == {f.trade_id for f in broker.list_fills()}
        assert len(trade_ids) == len(collected.fills(PLAN + "E"))


class TestTicker:
    def test_ticks_flow_with_depth_and_heartbeats_keep_the_order_stream_alive(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        wait_until(lambda: collected.heartbeats() >= 2)
        wait_until(lambda: fake.subscriptions() and "full" in fake.subscriptions()[0].values())

        fake.advance(1)

        wait_until(lambda: {t.instrument for t in collected.ticks} == {"INFY", "RELIANCE"})
        tick = collected.ticks[-1]
        assert tick.bid < tick.ask and tick.bid_size > 0
        assert broker.ticker is not None and broker.ticker.garbage_total == 0

    def test_a_dropped_socket_reconnects_and_ticks_come_back(
        self, fake: FakeKite, make_broker: Callable[..., KiteBroker], collected: Collected
    ) -> None:
        broker = make_broker()
        assert broker.ticker is not None
        assert fake.drop_sockets() == 1

        wait_until(lambda: broker.ticker is not None and broker.ticker.connections_total >= 2)
        wait_until(lambda: fake.subscriptions() and "full" in fake.subscriptions()[0].values())
        seen = len(collected.ticks)
        fake.advance(1)
        wait_until(lambda: len(collected.ticks) > seen)
