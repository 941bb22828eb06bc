"""Each fault knob of the fake Kite server, through the Python API and the ``/_fake/`` admin
path, over real sockets: what the client sees and what the fake's books then say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websocket

from domain.clock import ManualClock
from tests.helpers import wait_until
from tools.fake_kite import FakeKite
from tools.fake_kite.testing import KiteHttp, TickerSocket

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite(seed=9, clock=ManualClock(), rate_clock=ManualClock(0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token(fake: FakeKite) -> str:
    return fake.create_session()


@pytest.fixture
def kite(fake: FakeKite, token: str) -> Iterator[KiteHttp]:
    client = KiteHttp(fake.base_url, fake.api_key, token)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ticker(fake: FakeKite, token: str) -> Iterator[TickerSocket]:
    socket = TickerSocket(fake.ws_url, fake.api_key, token)
    try:
        yield socket
    finally:
        socket.close()


def resting_limit(kite: KiteHttp) -> tuple[int, dict]:
    return kite.place(order_type="LIMIT", price="1000", market_protection=None)


def test_fail_next_answers_5xx_and_places_nothing(kite: KiteHttp, fake: FakeKite) -> None:
    fake.fail_next(2, status=503, category="order")
    assert kite.call("GET", "/orders")[0] == 200  # another category passes
    for _ in range(2):
        status, body = resting_limit(kite)
        assert (status, body["error_type"]) == (503, "NetworkException")
    assert fake.orders() == []
    fake.fail_next(status=500)
    status, body = kite.call("GET", "/orders")
    assert (status, body["error_type"], body["data"]) == (500, "GeneralException", None)
    assert resting_limit(kite)[0] == 200
    assert len(fake.orders()) == 1


def test_rate_limit_next_answers_429_bursts(kite: KiteHttp, fake: FakeKite) -> None:
    fake.rate_limit_next(3)
    for _ in range(3):
        status, body = kite.call("GET", "/user/profile")
        assert (status, body["error_type"], body["message"]) == (
            429,
            "NetworkException",
            "Too many requests",
        )
    assert kite.call("GET", "/user/profile")[0] == 200


def test_a_held_answer_times_out_but_the_order_is_placed(kite: KiteHttp, fake: FakeKite) -> None:
    fake.hold_next(seconds=1.5, placed=True)
    with pytest.raises(httpx.ReadTimeout):
        resting_limit_with_timeout(kite, 0.3)
    # The order is on the book at once; only the answer was late.
    (order,) = fake.orders()
    assert order["status"] == "OPEN"
    wait_until(lambda: fake.request_log("order"), timeout_s=10, message="the late answer")
    assert fake.request_log("order")[0].status == 200


def test_a_held_answer_times_out_and_the_order_is_not_placed(
    kite: KiteHttp, fake: FakeKite
) -> None:
    fake.hold_next(seconds=1.0, placed=False)
    with pytest.raises(httpx.ReadTimeout):
        resting_limit_with_timeout(kite, 0.3)
    wait_until(lambda: fake.request_log("order"), timeout_s=10, message="the late answer")
    assert fake.request_log("order")[0].status == 504
    assert fake.orders() == []


def resting_limit_with_timeout(kite: KiteHttp, timeout_s: float) -> None:
    kite.client.post(
        "/orders/regular",
        data={"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
              "quantity": "1", "product": "MIS", "order_type": "LIMIT", "price": "1000"},
        timeout=timeout_s,
    )  # fmt: skip


def test_dropped_postbacks_are_not_sent(
    kite: KiteHttp, fake: FakeKite, ticker: TickerSocket
) -> None:
    fake.drop_postbacks(1)
    kite.place(quantity=2)
    ticker.pump_until(lambda: any(p["status"] == "COMPLETE" for p in ticker.postbacks()))
    assert [p["status"] for p in ticker.postbacks()] == ["COMPLETE"]
    assert [p["status"] for p in fake.postbacks_dropped] == ["OPEN"]


def test_duplicated_postbacks_come_twice(
    kite: KiteHttp, fake: FakeKite, ticker: TickerSocket
) -> None:
    fake.duplicate_postbacks(1)
    kite.place(quantity=2)
    ticker.pump_until(lambda: any(p["status"] == "COMPLETE" for p in ticker.postbacks()))
    assert [p["status"] for p in ticker.postbacks()] == ["OPEN", "OPEN", "COMPLETE"]
    assert ticker.postbacks()[0] == ticker.postbacks()[1]


def test_drop_sockets_closes_the_ticker_and_a_new_one_connects(
    fake: FakeKite, ticker: TickerSocket, token: str
) -> None:
    wait_until(lambda: fake.socket_count() == 1, timeout_s=10, message="socket registered")
    assert fake.drop_sockets() == 1
    ticker.pump_until(lambda: ticker.closed)
    wait_until(lambda: fake.socket_count() == 0, timeout_s=10, message="socket gone")
    again = TickerSocket(fake.ws_url, fake.api_key, token)
    again.send({"a": "subscribe", "v": [408065]})
    again.pump_until(lambda: bool(again.frames))
    again.close()


def test_an_expired_token_is_refused_everywhere_until_a_new_login(
    kite: KiteHttp, fake: FakeKite, ticker: TickerSocket, token: str
) -> None:
    wait_until(lambda: fake.socket_count() == 1, timeout_s=10, message="socket registered")
    fake.expire_token()
    for method, path in (("GET", "/orders"), ("GET", "/user/margins"), ("POST", "/orders/regular")):
        status, body = kite.call(method, path, {})
        assert (status, body["error_type"], body["message"]) == (
            403,
            "TokenException",
            "Incorrect `api_key` or `access_token`.",
        ), path
    ticker.pump_until(lambda: ticker.closed)
    with pytest.raises(websocket.WebSocketBadStatusException):
        TickerSocket(fake.ws_url, fake.api_key, token)
    request_token = fake.issue_request_token()
    status, body = KiteHttp(fake.base_url, fake.api_key, None).call(
        "POST",
        "/session/token",
        {"api_key": fake.api_key, "request_token": request_token,
         "checksum": fake.checksum(request_token)},
    )  # fmt: skip
    assert status == 200
    fresh = KiteHttp(fake.base_url, fake.api_key, body["data"]["access_token"])
    assert fresh.call("GET", "/orders")[0] == 200
    fresh.close()


def test_partial_fills_fill_a_capped_quantity_per_pass(
    kite: KiteHttp, fake: FakeKite, ticker: TickerSocket
) -> None:
    fake.set_partial_fill(2)
    _, body = kite.place(quantity=5)
    order_id = body["data"]["order_id"]
    (order,) = fake.orders()
    assert (order["status"], order["filled_quantity"], order["pending_quantity"]) == ("OPEN", 2, 3)
    fake.advance(1.0)
    fake.advance(1.0)
    (order,) = fake.orders()
    assert (order["status"], order["filled_quantity"]) == ("COMPLETE", 5)
    assert [trade["quantity"] for trade in fake.trades()] == [2, 2, 1]
    ticker.pump_until(lambda: any(p["status"] == "COMPLETE" for p in ticker.postbacks()))
    assert [(p["status"], p["filled_quantity"]) for p in ticker.postbacks()] == [
        ("OPEN", 0),
        ("UPDATE", 2),
        ("UPDATE", 4),
        ("COMPLETE", 5),
    ]
    assert {p["order_id"] for p in ticker.postbacks()} == {order_id}


def test_rejections_carry_their_reason(
    kite: KiteHttp, fake: FakeKite, ticker: TickerSocket
) -> None:
    fake.reject_next(reason="Insufficient funds. Required margin is 95417.84")
    status, body = kite.place(quantity=3, tag="rej1")
    assert status == 200  # Kite answers with an order id; the RMS rejects after
    (order,) = fake.orders()
    assert order["order_id"] == body["data"]["order_id"]
    assert order["status"] == "REJECTED"
    assert order["status_message"] == "Insufficient funds. Required margin is 95417.84"
    assert (order["filled_quantity"], order["pending_quantity"]) == (0, 0)
    assert fake.trades() == []
    assert fake.positions() == {"net": [], "day": []}
    ticker.pump_until(lambda: bool(ticker.postbacks()))
    assert ticker.postbacks()[0]["status"] == "REJECTED"
    assert kite.place(quantity=3)[0] == 200
    assert fake.orders()[-1]["status"] == "COMPLETE"


def test_the_account_type_shows_in_profile_and_margins(kite: KiteHttp, fake: FakeKite) -> None:
    assert kite.call("GET", "/user/profile")[1]["data"]["meta"]["account_type"] == "LIVE"
    assert kite.call("GET", "/user/margins")[1]["data"]["equity"]["enabled"] is True
    fake.set_account_type("DEMO")
    assert kite.call("GET", "/user/profile")[1]["data"]["meta"]["account_type"] == "DEMO"
    assert kite.call("GET", "/user/margins/equity")[1]["data"]["enabled"] is False
    with pytest.raises(ValueError):
        fake.set_account_type("PAPER")


def test_clear_faults_cancels_pending_faults(kite: KiteHttp, fake: FakeKite) -> None:
    fake.fail_next(5)
    fake.rate_limit_next(5)
    fake.reject_next(5)
    fake.set_partial_fill(1)
    fake.clear_faults()
    assert kite.place(quantity=3)[0] == 200
    assert fake.orders()[0]["status"] == "COMPLETE"


def test_the_admin_path_sets_faults_and_moves_the_market(kite: KiteHttp, fake: FakeKite) -> None:
    admin = httpx.Client(base_url=fake.base_url, timeout=10)
    answer = admin.post("/_fake/faults/fail_next", json={"count": 1, "status": 502})
    assert answer.status_code == 200
    status, body = kite.call("GET", "/orders")
    assert (status, body["error_type"]) == (502, "NetworkException")
    assert admin.post("/_fake/faults/no_such_fault", json={}).status_code == 404
    assert admin.post("/_fake/faults/fail_next", json={"status": 418}).status_code == 400
    assert admin.post("/_fake/faults/fail_next", json={"colour": 1}).status_code == 400
    before = fake.clock.now_ns()
    assert admin.post("/_fake/advance", json={"seconds": 2}).status_code == 200
    assert fake.clock.now_ns() == before + 2_000_000_000
    assert admin.get("/_fake/state").json()["account_type"] == "LIVE"
    logged = admin.get("/_fake/requests").json()
    assert [(row["path"], row["status"]) for row in logged] == [("/orders", 502)]
    request_token = admin.post("/_fake/request_token").json()["request_token"]
    assert len(request_token) == 32
    admin.close()


def test_the_command_line_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.fake_kite", "--port", "0", "--seed", "4"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("fake kite: REST http://127.0.0.1:"), first
        base_url = first.split()[3]
        state = httpx.get(f"{base_url}/_fake/state", timeout=10).json()
        assert state["base_url"] == base_url
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_an_abrupt_drop_cuts_the_socket_without_a_close_frame(
    fake: FakeKite, ticker: TickerSocket
) -> None:
    wait_until(lambda: fake.socket_count() == 1, timeout_s=10, message="socket registered")
    assert fake.drop_sockets(abrupt=True) == 1
    ticker.pump_until(lambda: ticker.closed)
    wait_until(lambda: fake.socket_count() == 0, timeout_s=10, message="socket gone")


def test_daily_token_expiry_logs_out_at_six_in_the_morning() -> None:
    # 2026-01-05 05:59:00 IST
    clock = ManualClock(1_767_572_940 * 1_000_000_000)
    with FakeKite(clock=clock, daily_token_expiry=True) as fake:
        kite = KiteHttp(fake.base_url, fake.api_key, fake.create_session())
        fake.advance(59.0)
        assert kite.call("GET", "/orders")[0] == 200
        fake.advance(1.0)  # 06:00:00
        status, body = kite.call("GET", "/orders")
        assert (status, body["error_type"]) == (403, "TokenException")
        # A token issued after 06:00 lives until 06:00 the next day.
        fresh = KiteHttp(fake.base_url, fake.api_key, fake.create_session())
        fake.advance(23 * 3600.0 + 59 * 60)
        assert fresh.call("GET", "/orders")[0] == 200
        fake.advance(60.0)
        assert fresh.call("GET", "/orders")[0] == 403
        kite.close()
        fresh.close()
