"""The fake Kite server's REST side over real sockets: envelope, errors, session, orders,
matching, positions, rate limits. The market runs on a manual clock; the rate limits on a
manual rate clock, so "eleven orders in one second" is exact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from domain.clock import ManualClock
from tools.fake_kite import FakeKite, RateLimits
from tools.fake_kite.market import INSTRUMENTS_CSV_HEADER
from tools.fake_kite.testing import KiteHttp

MARKET_OPEN_NS = 1_767_584_700 * 1_000_000_000  # 2026-01-05 09:15:00 IST


@pytest.fixture
def rate_clock() -> ManualClock:
    return ManualClock(0)


@pytest.fixture
def fake(rate_clock: ManualClock) -> Iterator[FakeKite]:
    server = FakeKite(seed=3, clock=ManualClock(MARKET_OPEN_NS), rate_clock=rate_clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kite(fake: FakeKite) -> Iterator[KiteHttp]:
    client = KiteHttp(fake.base_url, fake.api_key, fake.create_session())
    try:
        yield client
    finally:
        client.close()


def _touch(fake: FakeKite, key: str = "NSE:INFY") -> tuple[Decimal, Decimal, Decimal]:
    quote = fake.quote(key)
    depth = quote["depth"]
    return (
        Decimal(str(depth["buy"][0]["price"])),
        Decimal(str(depth["sell"][0]["price"])),
        Decimal(str(quote["last_price"])),
    )


class TestEnvelopeAndErrors:
    def test_success_is_wrapped_in_the_kite_envelope(self, kite: KiteHttp) -> None:
        status, body = kite.call("GET", "/user/profile")
        assert status == 200
        assert body["status"] == "success"
        assert body["data"]["user_id"] == "FK0001"

    def test_a_missing_version_header_is_an_input_exception(self, fake: FakeKite) -> None:
        token = fake.create_session()
        response = httpx.get(
            f"{fake.base_url}/user/profile",
            headers={"Authorization": f"token {fake.api_key}:{token}"},
        )
        assert response.status_code == 400
        assert response.json()["error_type"] == "InputException"
        assert response.json()["data"] is None

    def test_a_bad_access_token_is_a_token_exception_403(self, fake: FakeKite) -> None:
        client = KiteHttp(fake.base_url, fake.api_key, "not-a-token")
        status, body = client.call("GET", "/orders")
        assert status == 403
        assert body == {
            "status": "error",
            "message": "Incorrect `api_key` or `access_token`.",
            "error_type": "TokenException",
            "data": None,
        }

    def test_an_unknown_order_is_an_input_exception(self, kite: KiteHttp) -> None:
        status, body = kite.call("DELETE", "/orders/regular/999")
        assert (status, body["error_type"]) == (400, "InputException")

    def test_unknown_route_is_an_error_envelope_not_a_traceback(self, kite: KiteHttp) -> None:
        status, body = kite.call("GET", "/no/such/route")
        assert status == 404
        assert body["status"] == "error"
        assert body["error_type"] == "GeneralException"


class TestSession:
    def test_the_checksum_exchange_gives_a_working_access_token(self, fake: FakeKite) -> None:
        request_token = fake.issue_request_token()
        checksum = hashlib.sha256(
            (fake.api_key + request_token + fake.api_secret).encode()
        ).hexdigest()
        anonymous = KiteHttp(fake.base_url, fake.api_key, None)
        status, body = anonymous.call(
            "POST",
            "/session/token",
            {"api_key": fake.api_key, "request_token": request_token, "checksum": checksum},
        )
        assert status == 200
        session = body["data"]
        assert session["user_id"] == fake.user_id
        client = KiteHttp(fake.base_url, fake.api_key, session["access_token"])
        assert client.call("GET", "/user/margins")[0] == 200
        # A request token works once.
        status, body = anonymous.call(
            "POST",
            "/session/token",
            {"api_key": fake.api_key, "request_token": request_token, "checksum": checksum},
        )
        assert (status, body["error_type"]) == (403, "TokenException")
        # Logging out invalidates the token.
        logout = {"api_key": fake.api_key, "access_token": session["access_token"]}
        client.call("DELETE", "/session/token", logout)
        assert client.call("GET", "/user/profile")[0] == 403

    def test_a_wrong_checksum_is_a_token_exception(self, fake: FakeKite) -> None:
        request_token = fake.issue_request_token()
        wrong = hashlib.sha256((fake.api_key + request_token + "guess").encode()).hexdigest()
        status, body = KiteHttp(fake.base_url, fake.api_key, None).call(
            "POST",
            "/session/token",
            {"api_key": fake.api_key, "request_token": request_token, "checksum": wrong},
        )
        assert (status, body["error_type"], body["message"]) == (
            403,
            "TokenException",
            "Invalid `checksum`.",
        )

    def test_the_login_url_hands_out_a_request_token(self, fake: FakeKite) -> None:
        response = httpx.get(f"{fake.login_url}&redirect_url=http://127.0.0.1:1/cb")
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith("http://127.0.0.1:1/cb?request_token=")
        assert location.endswith("&action=login&status=success")


class TestOrders:
    def test_market_protection_is_required_for_market_and_sl_m(self, kite: KiteHttp) -> None:
        for order_type, extra in (("MARKET", {}), ("SL-M", {"trigger_price": "1900"})):
            for protection in (None, 0):
                status, body = kite.place(
                    order_type=order_type, market_protection=protection, **extra
                )
                assert (status, body["error_type"]) == (400, "InputException"), order_type
                assert "market_protection" in body["message"]
        # A LIMIT needs none.
        status, _body = kite.place(order_type="LIMIT", price="1000", market_protection=None)
        assert status == 200

    def test_nothing_is_placed_on_an_input_exception(self, kite: KiteHttp, fake: FakeKite) -> None:
        bad = [
            {"tag": "has space"},
            {"tag": "x" * 21},
            {"quantity": 0},
            {"product": "BO"},
            {"order_type": "LIMIT"},  # no price
            {"order_type": "LIMIT", "price": "1000.03"},  # off the tick grid
            {"tradingsymbol": "NOPE"},
            {"tradingsymbol": "NIFTY 50"},  # an index
            {"transaction_type": "HOLD"},
        ]
        for fields in bad:
            status, body = kite.place(**fields)
            assert (status, body["error_type"]) == (400, "InputException"), fields
        assert fake.orders() == []

    def test_a_market_order_fills_at_the_touch(self, kite: KiteHttp, fake: FakeKite) -> None:
        bid, ask, _last = _touch(fake)
        status, body = kite.place(quantity=3, tag="abc123")
        assert status == 200
        order_id = body["data"]["order_id"]
        _, orders = kite.call("GET", "/orders")
        (order,) = orders["data"]
        assert order["order_id"] == order_id
        assert order["status"] == "COMPLETE"
        assert order["average_price"] == float(ask)
        assert (order["filled_quantity"], order["pending_quantity"]) == (3, 0)
        assert order["tag"] == "abc123"
        assert order["order_timestamp"] == "2026-01-05 09:15:00"
        _, sell = kite.place(transaction_type="SELL", quantity=3)
        _, trades = kite.call("GET", f"/orders/{sell['data']['order_id']}/trades")
        assert [trade["average_price"] for trade in trades["data"]] == [float(bid)]
        _, positions = kite.call("GET", "/portfolio/positions")
        (row,) = positions["data"]["net"]
        assert row["quantity"] == 0
        assert row["pnl"] == float((bid - ask) * 3)
        assert positions["data"]["day"] == positions["data"]["net"]

    def test_a_resting_limit_fills_at_its_price_once_crossed(
        self, kite: KiteHttp, fake: FakeKite
    ) -> None:
        _bid, ask, _last = _touch(fake)
        price = ask - Decimal("0.05")
        _, body = kite.place(order_type="LIMIT", price=str(price), market_protection=None)
        order_id = body["data"]["order_id"]
        for _ in range(10_000):
            status = next(o for o in fake.orders() if o["order_id"] == order_id)["status"]
            if status == "COMPLETE":
                break
            fake.advance(1.0)
        _, history = kite.call("GET", f"/orders/{order_id}")
        assert [step["status"] for step in history["data"]] == ["OPEN", "COMPLETE"]
        assert history["data"][-1]["average_price"] == float(price)

    def test_a_stop_market_waits_in_trigger_pending(self, kite: KiteHttp, fake: FakeKite) -> None:
        _bid, _ask, last = _touch(fake)
        trigger = last - Decimal("1")
        _, body = kite.place(transaction_type="SELL", order_type="SL-M", trigger_price=str(trigger))
        order_id = body["data"]["order_id"]
        (order,) = fake.orders()
        assert order["status"] == "TRIGGER PENDING"
        for _ in range(10_000):
            (order,) = fake.orders()
            if order["status"] != "TRIGGER PENDING":
                break
            fake.advance(1.0)
        assert order["status"] == "COMPLETE"
        _, history = kite.call("GET", f"/orders/{order_id}")
        assert [step["status"] for step in history["data"]] == [
            "TRIGGER PENDING",
            "OPEN",
            "COMPLETE",
        ]

    def test_modify_and_cancel_a_resting_order(self, kite: KiteHttp, fake: FakeKite) -> None:
        _, body = kite.place(order_type="LIMIT", price="1000", quantity=5, market_protection=None)
        order_id = body["data"]["order_id"]
        status, _ = kite.call(
            "PUT", f"/orders/regular/{order_id}", {"quantity": 8, "price": "1001"}
        )
        assert status == 200
        status, _ = kite.call("DELETE", f"/orders/regular/{order_id}")
        assert status == 200
        (order,) = fake.orders()
        assert (order["status"], order["quantity"], order["price"]) == ("CANCELLED", 8, 1001.0)
        assert order["cancelled_quantity"] == 8
        assert order["modified"] is True
        status, body = kite.call("DELETE", f"/orders/regular/{order_id}")
        assert (status, body["error_type"]) == (400, "InputException")

    def test_an_ioc_limit_that_does_not_cross_is_cancelled(
        self, kite: KiteHttp, fake: FakeKite
    ) -> None:
        kite.place(order_type="LIMIT", price="1000", validity="IOC", market_protection=None)
        (order,) = fake.orders()
        assert order["status"] == "CANCELLED"


class TestMarketData:
    def test_quote_has_ohlc_and_five_levels_each_side(self, kite: KiteHttp, fake: FakeKite) -> None:
        fake.rate_clock.advance(1.0)  # type: ignore[attr-defined]
        status, body = kite.call("GET", "/quote", {"i": ["NSE:INFY", "NSE:NOPE"]})
        assert status == 200
        quote = body["data"]["NSE:INFY"]
        assert set(body["data"]) == {"NSE:INFY"}
        assert len(quote["depth"]["buy"]) == len(quote["depth"]["sell"]) == 5
        assert quote["ohlc"]["close"] == 1800.0
        assert quote["depth"]["buy"][0]["price"] < quote["depth"]["sell"][0]["price"]
        assert quote == fake.quote("NSE:INFY")

    def test_instruments_are_the_kite_csv(self, kite: KiteHttp, fake: FakeKite) -> None:
        response = kite.client.get("/instruments/NSE")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        lines = response.text.strip().split("\n")
        assert lines[0] == INSTRUMENTS_CSV_HEADER
        assert lines[1].startswith("408065,1594,INFY,INFOSYS,")
        assert len(lines) == 1 + len(fake.market.instruments)


class TestRateLimits:
    def test_the_eleventh_order_request_in_a_second_is_429(
        self, kite: KiteHttp, fake: FakeKite, rate_clock: ManualClock
    ) -> None:
        for _ in range(10):
            assert kite.place(order_type="LIMIT", price="1000", market_protection=None)[0] == 200
        status, body = kite.place(order_type="LIMIT", price="1000", market_protection=None)
        assert status == 429
        assert (body["error_type"], body["message"]) == ("NetworkException", "Too many requests")
        assert len(fake.orders()) == 10
        assert fake.order_requests_per_second_max() == 11
        rate_clock.advance(1.0)
        assert kite.place(order_type="LIMIT", price="1000", market_protection=None)[0] == 200

    def test_two_hundred_order_requests_a_minute(
        self, kite: KiteHttp, fake: FakeKite, rate_clock: ManualClock
    ) -> None:
        for second in range(20):
            for _ in range(10):
                status, _ = kite.place(order_type="LIMIT", price="1000", market_protection=None)
                assert status == 200, second
            rate_clock.advance(1.0)
        assert kite.place(order_type="LIMIT", price="1000", market_protection=None)[0] == 429
        rate_clock.advance(40.0)
        assert kite.place(order_type="LIMIT", price="1000", market_protection=None)[0] == 200
        assert fake.order_requests_per_minute_max() == 201

    def test_one_quote_request_a_second(
        self, kite: KiteHttp, fake: FakeKite, rate_clock: ManualClock
    ) -> None:
        assert kite.call("GET", "/quote", {"i": "NSE:INFY"})[0] == 200
        assert kite.call("GET", "/quote", {"i": "NSE:INFY"})[0] == 429
        rate_clock.advance(1.0)
        assert kite.call("GET", "/quote", {"i": "NSE:INFY"})[0] == 200
        assert fake.quote_requests_per_second_max() == 2
        log = fake.request_log("quote")
        assert [record.status for record in log] == [200, 429, 200]

    def test_unlimited_switches_the_limits_off(self) -> None:
        with FakeKite(clock=ManualClock(), rate_clock=ManualClock(0),
                      rate_limits=RateLimits.unlimited()) as fake:  # fmt: skip
            kite = KiteHttp(fake.base_url, fake.api_key, fake.create_session())
            for _ in range(15):
                status, _ = kite.place(order_type="LIMIT", price="1000", market_protection=None)
                assert status == 200
            kite.close()


class TestStopLimitAndModifyLimit:
    def test_a_stop_limit_triggers_then_rests_as_a_limit(
        self, kite: KiteHttp, fake: FakeKite
    ) -> None:
        _bid, _ask, last = _touch(fake)
        trigger = last + Decimal("1")
        price = trigger + Decimal("0.5")
        _, body = kite.place(
            order_type="SL", trigger_price=str(trigger), price=str(price), market_protection=None
        )
        order_id = body["data"]["order_id"]
        for _ in range(10_000):
            (order,) = fake.orders()
            if order["status"] != "TRIGGER PENDING":
                break
            fake.advance(1.0)
        _, history = kite.call("GET", f"/orders/{order_id}")
        statuses = [step["status"] for step in history["data"]]
        assert statuses[:2] == ["TRIGGER PENDING", "OPEN"]
        (order,) = fake.orders()
        if order["status"] == "COMPLETE":  # filled at once at the touch, never above the limit
            assert order["average_price"] <= float(price)

    def test_the_twenty_sixth_modification_is_refused(
        self, kite: KiteHttp, rate_clock: ManualClock
    ) -> None:
        _, body = kite.place(order_type="LIMIT", price="1000", market_protection=None)
        order_id = body["data"]["order_id"]
        for count in range(25):
            rate_clock.advance(1.0)  # within Kite's 10 order requests a second
            price = Decimal(1000) - Decimal("0.05") * count
            status, _ = kite.call("PUT", f"/orders/regular/{order_id}", {"price": str(price)})
            assert status == 200, count
        status, body = kite.call("PUT", f"/orders/regular/{order_id}", {"price": "990"})
        assert (status, body["error_type"]) == (400, "InputException")
        assert "modifications" in body["message"]
