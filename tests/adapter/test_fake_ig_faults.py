"""The fake IG server's allowances and fault knobs: each one as IG would show it on the wire."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from domain.clock import ManualClock
from tools.fake_ig import Allowances, FakeIG
from tools.fake_ig.testing import IgHttp

pytestmark = pytest.mark.timeout(60)

EPIC = "IX.D.FTSE.DAILY.IP"
START_NS = 1_767_603_600 * 1_000_000_000
TRADING_LIMIT = {"errorCode": "error.public-api.exceeded-account-trading-allowance"}
ACCOUNT_LIMIT = {"errorCode": "error.public-api.exceeded-account-allowance"}
KEY_LIMIT = {"errorCode": "error.public-api.exceeded-api-key-allowance"}


def _server(**kwargs: object) -> FakeIG:
    kwargs.setdefault("allowances", Allowances.unlimited())
    server = FakeIG(seed=9, clock=ManualClock(START_NS), **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = _server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ig(fake: FakeIG) -> Iterator[IgHttp]:
    client = IgHttp(fake.base_url, fake.api_key)
    client.login(fake.username, fake.password)
    try:
        yield client
    finally:
        client.close()


def test_default_allowances_are_igs_published_ones() -> None:
    assert Allowances() == Allowances(
        trading_per_minute=100, account_per_minute=30, api_key_per_minute=60
    )


def test_allowances_answer_403_per_kind_count_per_rolling_minute_and_refusals_are_free() -> None:
    rate_clock = ManualClock(START_NS)
    server = _server(
        rate_clock=rate_clock,
        allowances=Allowances(trading_per_minute=2, account_per_minute=2, api_key_per_minute=7),
    )
    client = IgHttp(server.base_url, server.api_key)
    try:
        client.login(server.username, server.password)  # api key: 1
        assert client.deal(dealReference="a")[0] == 200  # 2
        assert client.deal(dealReference="b")[0] == 200  # 3
        assert client.deal(dealReference="c") == (403, TRADING_LIMIT)
        assert "c" not in server.confirms() and len(server.positions()) == 2
        assert client.call("GET", "/accounts")[0] == 200  # 4
        assert client.call("GET", "/positions", version="2")[0] == 200  # 5
        assert client.call("GET", "/accounts") == (403, ACCOUNT_LIMIT)
        rate_clock.advance(60.0)  # the minute rolls over
        assert client.deal(dealReference="c")[0] == 200  # the key's window restarts: 1
        credentials = {"identifier": server.username, "password": server.password}
        for _ in range(6):  # logins count on the key only (no account yet): 2..7
            assert client.call("POST", "/session", credentials, version="2")[0] == 200
        assert client.call("POST", "/session", credentials, version="2") == (403, KEY_LIMIT)
        refused = [r.error_code for r in server.request_log() if r.status == 403]
        assert refused == [TRADING_LIMIT["errorCode"], ACCOUNT_LIMIT["errorCode"],
                           KEY_LIMIT["errorCode"]]  # fmt: skip
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("trading", TRADING_LIMIT), ("account", ACCOUNT_LIMIT), ("api-key", KEY_LIMIT)],
)
def test_rate_limit_next_answers_the_allowance_403_and_deals_nothing(
    fake: FakeIG, ig: IgHttp, kind: str, expected: dict[str, str]
) -> None:
    fake.rate_limit_next(2, kind=kind, category="trading")
    assert ig.call("GET", "/accounts")[0] == 200  # another category passes
    assert ig.deal(dealReference="r1") == (403, expected)
    assert ig.deal(dealReference="r1") == (403, expected)
    assert fake.positions() == []
    assert ig.deal(dealReference="r1") == (200, {"dealReference": "r1"})
    assert len(fake.positions()) == 1


def test_fail_next_answers_5xx_before_dealing(fake: FakeIG, ig: IgHttp) -> None:
    fake.fail_next(1, status=503, category="trading")
    assert ig.deal(dealReference="f1") == (503, {"errorCode": "system.error"})
    assert fake.positions() == [] and fake.confirms() == {}
    assert ig.deal(dealReference="f1")[0] == 200
    with pytest.raises(ValueError, match="5xx"):
        fake.fail_next(status=404)


def test_delay_confirms_answers_404_that_many_times_then_the_confirm(
    fake: FakeIG, ig: IgHttp
) -> None:
    fake.delay_confirms(2)
    ig.deal(dealReference="slow")
    not_found = (404, {"errorCode": "error.confirms.deal-not-found"})
    assert ig.confirm("slow") == not_found
    assert ig.confirm("slow") == not_found
    status, confirm = ig.confirm("slow")
    assert status == 200 and confirm["dealStatus"] == "ACCEPTED"
    assert ig.confirm("never-dealt") == not_found


def test_lose_confirms_deals_but_the_confirm_never_comes(fake: FakeIG, ig: IgHttp) -> None:
    fake.lose_confirms(1)
    ig.deal(dealReference="lost")
    for _ in range(5):
        assert ig.confirm("lost") == (404, {"errorCode": "error.confirms.deal-not-found"})
    (position,) = ig.call("GET", "/positions", version="2")[1]["positions"]
    assert position["position"]["dealReference"] == "lost"
    fields = [(e.field, e.payload["dealReference"]) for e in fake.stream_events]
    assert fields == [("OPU", "lost")]  # no CONFIRMS on the stream either
    ig.deal(dealReference="found")  # only the next deal was lost
    assert ig.confirm("found")[0] == 200


def test_reject_next_rejects_in_the_confirm(fake: FakeIG, ig: IgHttp) -> None:
    fake.reject_next(reason="INSUFFICIENT_FUNDS")
    ig.deal(dealReference="poor")
    confirm = ig.confirm("poor")[1]
    assert (confirm["dealStatus"], confirm["reason"]) == ("REJECTED", "INSUFFICIENT_FUNDS")
    assert fake.positions() == []


def test_a_closed_market_rejects_deals(fake: FakeIG, ig: IgHttp) -> None:
    fake.set_market_status(EPIC, "CLOSED")
    ig.deal(dealReference="shut")
    assert ig.confirm("shut")[1]["reason"] == "MARKET_CLOSED_WITH_EDITS"
    assert ig.call("GET", f"/markets/{EPIC}", version="3")[1]["snapshot"]["marketStatus"] == (
        "CLOSED"
    )


def test_expire_tokens_answers_client_token_invalid_until_a_new_login(
    fake: FakeIG, ig: IgHttp
) -> None:
    fake.expire_tokens()
    assert ig.call("GET", "/positions", version="2") == (
        401, {"errorCode": "error.security.client-token-invalid"},
    )  # fmt: skip
    assert ig.deal(dealReference="x")[0] == 401
    assert fake.positions() == []
    ig.login(fake.username, fake.password)
    assert ig.call("GET", "/positions", version="2")[0] == 200


def test_token_lifetime_expires_tokens_by_market_clock_age() -> None:
    server = _server(token_lifetime_s=3600)
    client = IgHttp(server.base_url, server.api_key)
    try:
        client.login(server.username, server.password)
        server.advance(3599)
        assert client.call("GET", "/accounts")[0] == 200
        server.advance(1)
        assert client.call("GET", "/accounts")[1] == {
            "errorCode": "error.security.client-token-invalid"
        }
    finally:
        client.close()
        server.stop()


def test_clear_faults_removes_every_pending_fault(fake: FakeIG, ig: IgHttp) -> None:
    fake.fail_next(3)
    fake.rate_limit_next(3)
    fake.delay_confirms(5)
    fake.lose_confirms(2)
    fake.reject_next(2)
    fake.clear_faults()
    assert ig.deal(dealReference="clean")[0] == 200
    assert ig.confirm("clean")[1]["dealStatus"] == "ACCEPTED"


def test_admin_http_sets_knobs_and_reports_state(fake: FakeIG, ig: IgHttp) -> None:
    admin = httpx.Client(base_url=fake.root_url, timeout=10)
    try:
        answer = admin.post("/_fake/faults/fail_next", json={"count": 1, "status": 502})
        assert answer.json() == {"ok": True}
        assert ig.call("GET", "/accounts")[0] == 502
        assert admin.post("/_fake/faults/nope").status_code == 404
        assert admin.post("/_fake/faults/fail_next", json={"status": 200}).status_code == 400
        assert admin.post("/_fake/quote", json={"epic": EPIC, "bid": "7600"}).status_code == 200
        assert admin.post("/_fake/advance", json={"seconds": 1}).status_code == 200
        state = admin.get("/_fake/state").json()
        assert state["quotes"][EPIC] == fake.quote(EPIC)
        assert state["environment"] == "DEMO"
        requests = admin.get("/_fake/requests").json()
        assert [r["status"] for r in requests][-1] == 502
        admin.post("/_fake/faults/set_environment", json={"environment": "LIVE"})
        assert ig.login(fake.username, fake.password)["hasActiveLiveAccounts"] is True
    finally:
        admin.close()


def test_fail_after_next_deals_but_answers_5xx_and_a_retry_with_the_reference_deals_nothing(
    fake: FakeIG, ig: IgHttp
) -> None:
    fake.fail_after_next(1, status=504)
    assert ig.deal(dealReference="lost-answer") == (504, {"errorCode": "system.error"})
    assert len(fake.positions()) == 1
    assert ig.confirm("lost-answer")[1]["dealStatus"] == "ACCEPTED"
    assert ig.deal(dealReference="lost-answer") == (200, {"dealReference": "lost-answer"})
    assert len(fake.positions()) == 1
    with pytest.raises(ValueError, match="5xx"):
        fake.fail_after_next(status=403)
