"""The fake IG server's REST wire format: headers, session tokens, account switch, deals,
dealReference idempotency, confirms, closes, amends, working orders, markets and activity."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from domain.clock import ManualClock
from tests.helpers import wait_until
from tools.fake_ig import Allowances, FakeIG
from tools.fake_ig.testing import IgHttp

pytestmark = pytest.mark.timeout(60)

EPIC = "IX.D.FTSE.DAILY.IP"
START_NS = 1_767_603_600 * 1_000_000_000


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG(seed=5, clock=ManualClock(START_NS), allowances=Allowances.unlimited())
    server.start()
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


def test_session_tokens_come_in_headers_and_the_body_names_accounts_and_stream(
    fake: FakeIG,
) -> None:
    client = IgHttp(fake.base_url, fake.api_key)
    body = client.login(fake.username, fake.password)
    assert client.last_headers is not None
    cst = client.last_headers["CST"]
    assert fake.active_account(cst) == "ABC123"
    assert body["currentAccountId"] == "ABC123"
    assert body["lightstreamerEndpoint"] == fake.lightstreamer_url
    assert {a["accountId"] for a in body["accounts"]} == {"ABC123", "XYZ789"}
    assert body["hasActiveDemoAccounts"] is True and body["hasActiveLiveAccounts"] is False
    assert client.call("GET", "/session")[1]["accountId"] == "ABC123"
    status, _ = client.call("DELETE", "/session")
    assert status == 204
    assert client.call("GET", "/accounts") == (
        401, {"errorCode": "error.security.client-token-invalid"},
    )  # fmt: skip
    client.close()


def test_bad_credentials_and_missing_headers_answer_igs_error_codes(fake: FakeIG) -> None:
    client = IgHttp(fake.base_url, fake.api_key)
    status, body = client.call(
        "POST", "/session", {"identifier": fake.username, "password": "wrong"}, version="2"
    )
    assert (status, body) == (401, {"errorCode": "error.security.invalid-details"})
    assert client.call("GET", "/accounts") == (
        401, {"errorCode": "error.security.client-token-missing"},
    )  # fmt: skip
    no_key = IgHttp(fake.base_url, None)
    assert no_key.call("GET", "/accounts") == (
        403, {"errorCode": "error.security.api-key-missing"},
    )  # fmt: skip
    wrong_key = IgHttp(fake.base_url, "not-the-key")
    assert wrong_key.call("GET", "/accounts")[1] == {"errorCode": "error.security.api-key-invalid"}
    for one in (client, no_key, wrong_key):
        one.close()


def test_put_session_switches_the_active_account_and_deals_follow_it(
    fake: FakeIG, ig: IgHttp
) -> None:
    status, body = ig.call("PUT", "/session", {"accountId": "XYZ789", "defaultAccount": False})
    assert status == 200 and body["dealingEnabled"] is True
    assert ig.call("GET", "/session")[1]["accountId"] == "XYZ789"
    assert ig.call("PUT", "/session", {"accountId": "XYZ789"}) == (
        412, {"errorCode": "error.switch.accountId-must-be-different"},
    )  # fmt: skip
    assert ig.call("PUT", "/session", {"accountId": "NOPE"})[0] == 401
    _, answer = ig.deal(dealReference="onXYZ")
    assert fake.positions("XYZ789")[0]["position"]["dealReference"] == "onXYZ"
    assert fake.positions("ABC123") == []
    assert (
        ig.call("GET", "/positions", version="2")[1]["positions"][0]["position"]["dealReference"]
        == answer["dealReference"]
    )


def test_a_deal_answers_only_its_reference_and_the_confirm_tells_the_outcome(
    fake: FakeIG, ig: IgHttp
) -> None:
    status, body = ig.deal(dealReference="vigil-0001_a", stopDistance=10, limitDistance=20)
    assert (status, body) == (200, {"dealReference": "vigil-0001_a"})
    status, confirm = ig.confirm("vigil-0001_a")
    assert status == 200
    assert confirm["dealStatus"] == "ACCEPTED" and confirm["reason"] == "SUCCESS"
    assert confirm["status"] == "OPEN"
    assert confirm["level"] == 7501.0  # the offer
    assert (confirm["stopLevel"], confirm["limitLevel"]) == (7491.0, 7521.0)
    (entry,) = ig.call("GET", "/positions", version="2")[1]["positions"]
    assert entry["position"]["dealId"] == confirm["dealId"]
    assert entry["market"]["bid"] == 7500.0
    assert ig.call("GET", f"/positions/{confirm['dealId']}", version="2") == (200, entry)
    assert ig.call("GET", "/positions/NOPE", version="2")[0] == 404


def test_a_repeated_deal_reference_does_not_open_a_second_deal(fake: FakeIG, ig: IgHttp) -> None:
    assert ig.deal(dealReference="same-ref")[1] == {"dealReference": "same-ref"}
    assert ig.deal(dealReference="same-ref", size=3)[1] == {"dealReference": "same-ref"}
    (position,) = fake.positions()
    assert position["position"]["size"] == 1.0
    assert ig.confirm("same-ref")[1]["size"] == 1.0


@pytest.mark.parametrize(
    ("fields", "error_code"),
    [
        ({"dealReference": "has space"}, "validation.pattern.invalid.request.dealReference"),
        ({"dealReference": "x" * 31}, "validation.pattern.invalid.request.dealReference"),
        ({"direction": "UP"}, "validation.invalid.request.direction"),
        ({"stopDistance": 10, "forceOpen": False}, "validation.invalid.request.forceOpen"),
        ({"stopDistance": 10, "stopLevel": 7000},
         "validation.mutual-exclusive-value.request.stopLevel"),
        ({"size": "lots"}, "validation.invalid.request.size"),
        ({"currencyCode": ""}, "validation.null-not-allowed.request.currencyCode"),
    ],
)  # fmt: skip
def test_malformed_deals_are_400_and_deal_nothing(
    fake: FakeIG, ig: IgHttp, fields: dict[str, object], error_code: str
) -> None:
    status, body = ig.deal(**fields)
    assert (status, body) == (400, {"errorCode": error_code})
    assert fake.positions() == [] and fake.confirms() == {}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"size": 0.1}, "MINIMUM_ORDER_SIZE_ERROR"),
        ({"stopDistance": 2}, "ATTACHED_ORDER_LEVEL_ERROR"),
        ({"orderType": "LIMIT", "level": 7400}, "LIMIT_ORDER_WRONG_SIDE_OF_MARKET"),
    ],
)
def test_deals_against_the_dealing_rules_are_rejected_in_the_confirm(
    fake: FakeIG, ig: IgHttp, fields: dict[str, object], reason: str
) -> None:
    _, body = ig.deal(dealReference="rej", **fields)
    assert body == {"dealReference": "rej"}
    confirm = ig.confirm("rej")[1]
    assert (confirm["dealStatus"], confirm["reason"]) == ("REJECTED", reason)
    assert fake.positions() == []


def test_close_through_method_delete_and_amend_through_put(fake: FakeIG, ig: IgHttp) -> None:
    ig.deal(dealReference="open1", size=2, stopDistance=10)
    deal_id = ig.confirm("open1")[1]["dealId"]
    status, body = ig.call(
        "PUT", f"/positions/otc/{deal_id}", {"stopLevel": 7480, "limitLevel": 7550}, version="2"
    )
    assert status == 200
    amended = ig.confirm(body["dealReference"])[1]
    assert amended["status"] == "AMENDED" and amended["stopLevel"] == 7480.0
    assert fake.positions()[0]["position"]["limitLevel"] == 7550.0
    close = {"dealId": deal_id, "direction": "SELL", "size": 1, "orderType": "MARKET",
             "dealReference": "close1"}  # fmt: skip
    assert ig.call("POST", "/positions/otc", close, override="DELETE")[1] == {
        "dealReference": "close1"
    }
    partial = ig.confirm("close1")[1]
    assert partial["status"] == "CLOSED"
    assert partial["affectedDeals"] == [{"dealId": deal_id, "status": "PARTIALLY_CLOSED"}]
    assert fake.positions()[0]["position"]["size"] == 1.0
    ig.call("POST", "/positions/otc", close | {"dealReference": "close2"}, override="DELETE")
    assert ig.confirm("close2")[1]["affectedDeals"][0]["status"] == "FULLY_CLOSED"
    assert fake.positions() == []
    # the activity history reconciles the deals: the open and both closes
    activities = ig.call("GET", "/history/activity", version="3")[1]["activities"]
    assert [a["details"]["dealReference"] for a in activities] == ["open1", "close1", "close2"]
    assert {a["dealId"] for a in activities} == {deal_id}


def test_a_broker_side_stop_and_limit_close_the_position_when_crossed(
    fake: FakeIG, ig: IgHttp
) -> None:
    ig.deal(dealReference="long", stopDistance=10, limitDistance=20)  # 7501: stop 7491, lim 7521
    ig.deal(dealReference="short", direction="SELL", stopDistance=10)  # 7500: stop 7510
    fake.set_quote(EPIC, Decimal("7495.0"))
    assert len(fake.positions()) == 2
    fake.set_quote(EPIC, Decimal("7491.0"))  # the long's stop; the short's offer is 7492
    (left,) = fake.positions()
    assert left["position"]["dealReference"] == "short"
    long_close = [c for c in fake.confirms().values() if c["status"] == "CLOSED"]
    assert long_close[0]["level"] == 7491.0 and long_close[0]["direction"] == "SELL"
    fake.set_quote(EPIC, Decimal("7509.0"))  # offer 7510: the short's stop
    assert fake.positions() == []
    events = [(e.field, e.payload["status"]) for e in fake.stream_events]
    assert events.count(("OPU", "DELETED")) == 2


def test_a_working_order_rests_then_opens_a_position_when_reached(fake: FakeIG, ig: IgHttp) -> None:
    order = {"epic": EPIC, "expiry": "-", "direction": "BUY", "size": 1, "level": 7450,
             "type": "LIMIT", "currencyCode": "GBP", "timeInForce": "GOOD_TILL_CANCELLED",
             "guaranteedStop": False, "stopDistance": 10, "dealReference": "wo1"}  # fmt: skip
    assert ig.call("POST", "/workingorders/otc", order, version="2")[1] == {"dealReference": "wo1"}
    (resting,) = ig.call("GET", "/workingorders", version="2")[1]["workingOrders"]
    assert resting["workingOrderData"]["orderLevel"] == 7450.0
    fake.set_quote(EPIC, Decimal("7449.0"))  # offer 7450
    assert fake.working_orders() == []
    (position,) = fake.positions()
    assert position["position"]["level"] == 7450.0
    assert position["position"]["stopLevel"] == 7440.0
    order2 = order | {"dealReference": "wo2", "level": 7300}
    ig.call("POST", "/workingorders/otc", order2, version="2")
    deal_id = ig.confirm("wo2")[1]["dealId"]
    status, body = ig.call("POST", f"/workingorders/otc/{deal_id}", {}, override="DELETE")
    assert status == 200 and ig.confirm(body["dealReference"])[1]["status"] == "DELETED"
    assert fake.working_orders() == []
    wou = [e.payload["status"] for e in fake.stream_events if e.field == "WOU"]
    assert wou == ["OPEN", "DELETED", "OPEN", "DELETED"]  # filled, then cancelled
    opu = [e.payload["status"] for e in fake.stream_events if e.field == "OPU"]
    assert opu == ["OPEN"]


def test_markets_v3_give_dealing_rules_and_the_snapshot(fake: FakeIG, ig: IgHttp) -> None:
    status, market = ig.call("GET", f"/markets/{EPIC}", version="3")
    assert status == 200
    assert market["instrument"]["epic"] == EPIC
    assert market["dealingRules"]["minDealSize"]["value"] == 0.5
    assert market["dealingRules"]["minNormalStopOrLimitDistance"]["value"] == 4.0
    assert market["snapshot"] == fake.quote(EPIC)
    assert (market["snapshot"]["bid"], market["snapshot"]["offer"]) == (7500.0, 7501.0)
    assert ig.call("GET", "/markets/NOPE", version="3")[0] == 404
    fake.advance(1.0)
    assert ig.call("GET", f"/markets/{EPIC}", version="3")[1]["snapshot"] == fake.quote(EPIC)


def test_the_request_log_records_method_overrides_accounts_and_versions(
    fake: FakeIG, ig: IgHttp
) -> None:
    ig.deal(dealReference="logged")
    deal_id = ig.confirm("logged")[1]["dealId"]
    close = {"dealId": deal_id, "direction": "SELL", "size": 1, "orderType": "MARKET"}
    ig.call("POST", "/positions/otc", close, override="DELETE")
    trading = fake.request_log("trading")
    assert [(r.method, r.path, r.version, r.account_id) for r in trading] == [
        ("POST", "/positions/otc", "2", "ABC123"),
        ("DELETE", "/positions/otc", "1", "ABC123"),
    ]
    assert trading[0].body["dealReference"] == "logged"


def test_step_interval_moves_the_market_by_itself_for_demos() -> None:
    server = FakeIG(seed=2, step_interval_s=0.02, allowances=Allowances.unlimited())
    server.start()
    try:
        first = server.quote(EPIC)["bid"]
        wait_until(lambda: server.quote(EPIC)["bid"] != first, timeout_s=10, message="a step")
    finally:
        server.stop()
