"""IG wire mappings (adapters/brokers/ig/parsing.py): payloads shaped as IG's REST reference
documents them (POST /positions/otc, GET /confirms/{dealReference}, GET /positions v2, error
bodies, the MARKET stream item)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.brokers.base import BrokerRateLimited, BrokerRejected, BrokerUnavailable
from adapters.brokers.ig.parsing import (
    IgAuthRefused,
    IgMarketRef,
    account_is_live,
    amend_levels_body,
    close_position_body,
    confirm_fill,
    confirm_from_json,
    confirm_status_report,
    deal_from_position,
    error_from_response,
    is_deal_reference,
    leg_of,
    market_update_to_tick,
    open_position_body,
    plan_key,
    positions_by_instrument,
    session_password,
)
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages import OrderRequest
from domain.plans import client_order_id

pytestmark = pytest.mark.timeout(30)

PLAN = "P0123456789abcdef012"
MARKET = IgMarketRef(epic="IX.D.FTSE.DAILY.IP", expiry="DFB", currency="GBP")


def _request(leg: LegKind = LegKind.ENTRY, **kwargs: object) -> OrderRequest:
    fields: dict[str, object] = {
        "client_order_id": client_order_id(PLAN, leg),
        "instrument": "FTSE",
        "side": Side.BUY,
        "order_type": OrderType.MARKET,
        "quantity": 2,
    }
    fields.update(kwargs)
    return OrderRequest(**fields)  # type: ignore[arg-type]


@given(
    plan_hex=st.text(alphabet="0123456789abcdef", min_size=19, max_size=19),
    leg=st.sampled_from(list(LegKind)),
    sequence=st.integers(min_value=0, max_value=9999),
)
def test_every_client_order_id_is_a_valid_deal_reference_and_names_its_plan(
    plan_hex: str, leg: LegKind, sequence: int
) -> None:
    cid = client_order_id(f"P{plan_hex}", leg, sequence)
    assert is_deal_reference(cid)
    assert plan_key(cid) == f"P{plan_hex}"
    assert leg_of(cid) == cid[20]


def test_deal_reference_rules() -> None:
    assert is_deal_reference("a_b-C9")
    assert not is_deal_reference("x" * 31)
    assert not is_deal_reference("has space")
    assert not is_deal_reference("")
    assert plan_key("manual-order") is None and leg_of("manual-order") is None


def test_entry_body_carries_our_id_as_deal_reference_and_force_open() -> None:
    body = open_position_body(
        _request(), MARKET, stop_level=Decimal("7450.5"), limit_level=Decimal("7600")
    )
    assert body == {
        "epic": "IX.D.FTSE.DAILY.IP",
        "expiry": "DFB",
        "direction": "BUY",
        "size": 2,
        "orderType": "MARKET",
        "currencyCode": "GBP",
        "forceOpen": True,
        "guaranteedStop": False,
        "dealReference": f"{PLAN}E",
        "stopLevel": 7450.5,
        "limitLevel": 7600,
    }


def test_entry_body_refuses_what_ig_cannot_deal() -> None:
    with pytest.raises(BrokerRejected, match="IG_UNSUPPORTED_ORDER_TYPE"):
        open_position_body(_request(order_type=OrderType.LIMIT, price=Decimal(1)), MARKET)
    with pytest.raises(BrokerRejected, match="INVALID_QUANTITY"):
        open_position_body(_request(quantity=0), MARKET)
    with pytest.raises(BrokerRejected, match="IG_BAD_DEAL_REFERENCE"):
        open_position_body(_request(client_order_id="not valid!"), MARKET)


def test_close_and_amend_bodies() -> None:
    assert close_position_body("DIAAAA1", Side.SELL, 2, f"{PLAN}X") == {
        "dealId": "DIAAAA1",
        "direction": "SELL",
        "size": 2,
        "orderType": "MARKET",
        "dealReference": f"{PLAN}X",
    }
    # IG replaces both levels: the one kept is sent as it is, None removes one.
    assert amend_levels_body(Decimal("7450.0"), None) == {
        "stopLevel": 7450,
        "limitLevel": None,
        "guaranteedStop": False,
        "trailingStop": False,
    }


CONFIRM_ACCEPTED = {
    "date": "2026-11-30T10:15:01.123",
    "status": "OPEN",
    "reason": "SUCCESS",
    "dealStatus": "ACCEPTED",
    "epic": "IX.D.FTSE.DAILY.IP",
    "expiry": "DFB",
    "dealReference": f"{PLAN}E",
    "dealId": "DIAAAAB1",
    "affectedDeals": [{"dealId": "DIAAAAB1", "status": "OPENED"}],
    "level": 7510.4,
    "size": 2,
    "direction": "BUY",
    "stopLevel": None,
    "limitLevel": None,
    "guaranteedStop": False,
    "trailingStop": False,
    "profit": None,
    "profitCurrency": None,
}


def test_an_accepted_confirm_is_a_filled_entry_with_one_fill() -> None:
    confirm = confirm_from_json(CONFIRM_ACCEPTED)
    assert confirm.accepted and confirm.deal_id == "DIAAAAB1"
    report = confirm_status_report(confirm, "FTSE", 2, now_ns=1)
    assert report.status is OrderStatus.FILLED and report.filled_quantity == 2
    assert report.client_order_id == f"{PLAN}E" and report.broker_order_id == "DIAAAAB1"
    fill = confirm_fill(confirm, "FTSE", Side.BUY, 2, now_ns=1)
    assert fill is not None
    assert (fill.price, fill.quantity, fill.side) == (Decimal("7510.4"), 2, Side.BUY)
    assert fill.trade_id == f"DIAAAAB1:{PLAN}E"
    ig_date = datetime(2026, 11, 30, 10, 15, 1, 123000, tzinfo=UTC)
    assert fill.ts_event == int(ig_date.timestamp()) * 10**9 + 123_000_000  # IG's date, UTC


def test_a_rejected_confirm_carries_igs_reason_and_no_fill() -> None:
    confirm = confirm_from_json(
        {**CONFIRM_ACCEPTED, "dealStatus": "REJECTED", "reason": "INSUFFICIENT_FUNDS"}
    )
    report = confirm_status_report(confirm, "FTSE", 2, now_ns=1)
    assert report.status is OrderStatus.REJECTED and report.reason == "INSUFFICIENT_FUNDS"
    assert confirm_fill(confirm, "FTSE", Side.BUY, 2, now_ns=1) is None
    with pytest.raises(ValueError, match="dealReference"):
        confirm_from_json({"dealStatus": "ACCEPTED"})


POSITIONS = {
    "positions": [
        {
            "position": {
                "contractSize": 1.0,
                "createdDate": "2026/11/30 10:15:01:000",
                "createdDateUTC": "2026-11-30T10:15:01",
                "dealId": "DIAAAAB1",
                "dealReference": f"{PLAN}E",
                "size": 2,
                "direction": "BUY",
                "limitLevel": 7600,
                "level": 7510,
                "currency": "GBP",
                "controlledRisk": False,
                "stopLevel": 7450,
                "trailingStep": None,
                "trailingStopDistance": None,
            },
            "market": {"epic": "IX.D.FTSE.DAILY.IP", "bid": 7512, "offer": 7513},
        },
        {
            "position": {
                "dealId": "DIAAAAB2",
                "dealReference": "manual",
                "size": 1,
                "direction": "SELL",
                "level": 7520,
                "stopLevel": None,
                "limitLevel": None,
            },
            "market": {"epic": "IX.D.FTSE.DAILY.IP"},
        },
        {
            "position": {"dealId": "X", "size": 5, "direction": "BUY", "level": 1},
            "market": {"epic": "CS.D.EURUSD.TODAY.IP"},
        },
    ]
}


def test_positions_read_levels_and_net_per_instrument() -> None:
    deals = [deal_from_position(item) for item in POSITIONS["positions"]]
    first = deals[0]
    assert (first.stop_level, first.limit_level) == (Decimal(7450), Decimal(7600))
    assert first.deal_reference == f"{PLAN}E"
    reports = positions_by_instrument(deals, {"IX.D.FTSE.DAILY.IP": "FTSE"}, now_ns=5)
    assert len(reports) == 1  # EURUSD is not ours
    assert reports[0].instrument == "FTSE" and reports[0].quantity == 1
    assert reports[0].average_price == (Decimal(7510) * 2 + Decimal(7520)) / 3
    with pytest.raises(ValueError):
        deal_from_position({"position": {"dealId": "Z", "direction": "UP", "level": 1}})


def test_rate_limits_are_never_auth_failures() -> None:
    for code in (
        "error.public-api.exceeded-account-allowance",
        "error.public-api.exceeded-api-key-allowance",
        "error.public-api.exceeded-account-trading-allowance",
        "error.public-api.exceeded-account-historical-data-allowance",
    ):
        error = error_from_response(403, {"errorCode": code}, client_order_id="c")
        assert type(error) is BrokerRateLimited, code
        assert error.client_order_id == "c"


def test_error_mapping() -> None:
    auth = error_from_response(401, {"errorCode": "error.security.client-token-invalid"})
    assert isinstance(auth, IgAuthRefused)
    assert isinstance(auth, BrokerUnavailable)  # a BrokerAuthExpired: nothing was placed
    refused = error_from_response(400, {"errorCode": "validation.null-not-allowed.request"})
    assert type(refused) is BrokerRejected
    assert "validation.null-not-allowed.request" in str(refused)
    assert type(error_from_response(503, None)) is BrokerUnavailable
    assert type(error_from_response(500, {"errorCode": "system.error"})) is BrokerUnavailable
    invalid = error_from_response(403, {"errorCode": "error.security.invalid-details"})
    assert isinstance(invalid, IgAuthRefused)


def test_market_update_to_tick() -> None:
    tick = market_update_to_tick(
        "FTSE",
        {
            "BID": "7512.5",
            "OFFER": "7513.5",
            "UPDATE_TIME": "10:15:01",
            "MARKET_STATE": "TRADEABLE",
        },
        now_ns=9,
    )
    assert tick is not None
    assert (tick.bid, tick.ask, tick.ts_event) == (Decimal("7512.5"), Decimal("7513.5"), 9)
    closed = {"BID": "1", "OFFER": "2", "MARKET_STATE": "CLOSED"}
    assert market_update_to_tick("FTSE", closed, now_ns=9) is None
    crossed = {"BID": "3", "OFFER": "2", "MARKET_STATE": "TRADEABLE"}
    assert market_update_to_tick("FTSE", crossed, now_ns=9) is None
    assert market_update_to_tick("FTSE", {"BID": None, "OFFER": "2"}, now_ns=9) is None


def test_session_password_and_liveness() -> None:
    assert session_password("abc", "xyz") == "CST-abc|XST-xyz"
    assert account_is_live(is_real_live_base=True, session=None)
    demo = {"hasActiveDemoAccounts": True, "hasActiveLiveAccounts": False}
    assert not account_is_live(is_real_live_base=False, session=demo)
    live = {"hasActiveDemoAccounts": False, "hasActiveLiveAccounts": True}
    assert account_is_live(is_real_live_base=False, session=live)


def test_config_ties_the_ig_feed_to_the_ig_broker_and_its_stream() -> None:
    from launcher.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "demo_ig.yaml"
    config = load_config(path, environ={}, dotenv_path=None)
    assert (config.broker.kind, config.feed.kind, config.ig.stream) == ("ig", "ig", True)
    assert not config.ig.is_live_base and not config.rehearsal
    data = config.model_dump(mode="json")
    assert "fakeigpassword" not in str(data)  # secrets are not dumped
    with pytest.raises(ValueError, match=r"ig\.stream"):
        config.model_validate(
            {**config.model_dump(), "ig": {**config.ig.model_dump(), "stream": False}}
        )
    without_epics = {**config.ig.model_dump(), "instruments": {}}
    with pytest.raises(ValueError, match="epic"):
        config.model_validate({**config.model_dump(), "ig": without_epics})
