"""Kite Connect v3 wire mappings (adapters/brokers/kite/parsing.py), against payloads shaped as
the public Kite Connect v3 documentation shows them: pure functions, no sockets."""

from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.brokers.base import BrokerRateLimited, BrokerRejected, BrokerUnavailable
from adapters.brokers.kite.parsing import (
    IST,
    MAX_TAG_LENGTH,
    KiteTokenExpired,
    OrderMapping,
    account_is_live,
    decode_tag,
    encode_tag,
    error_from_response,
    fill_from_trade,
    kite_timestamp_ns,
    order_form,
    packet_to_tick,
    parse_binary_frame,
    parse_instruments_csv,
    position_from_kite,
    status_from_order,
    tag_of_order,
)
from domain.config import BrokerConfig, EngineConfig, InstrumentConfig
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages import OrderRequest
from domain.plans import client_order_id, plan_client_id

pytestmark = pytest.mark.timeout(60)

D = Decimal
INFY_TOKEN = 408065  # NSE equity: segment byte 1
NIFTY_INDEX_TOKEN = 256265  # NSE indices: segment byte 9
PLAN = "P0123456789abcdef012"
NSE_INFY = OrderMapping(exchange="NSE", tradingsymbol="INFY", market_protection=D("2"))


def request(order_type: OrderType, **overrides: object) -> OrderRequest:
    fields: dict[str, object] = {
        "client_order_id": PLAN + "E",
        "instrument": "INFY",
        "side": Side.BUY,
        "order_type": order_type,
        "quantity": 10,
    }
    fields.update(overrides)
    return OrderRequest(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ tags
class TestTags:
    @settings(max_examples=500, deadline=None)
    @given(
        hex_part=st.text(alphabet="0123456789abcdef", min_size=19, max_size=19),
        leg=st.sampled_from(list(LegKind)),
        sequence=st.integers(min_value=0, max_value=9999),
    )
    def test_every_id_the_plans_make_round_trips_through_a_tag_of_at_most_20(
        self, hex_part: str, leg: LegKind, sequence: int
    ) -> None:
        cid = client_order_id("P" + hex_part, leg, sequence)

        tag = encode_tag(cid)

        assert len(tag) <= MAX_TAG_LENGTH
        assert tag.isalnum() and tag.isascii()
        assert decode_tag(tag) == cid
        assert decode_tag(tag.upper()) == cid  # a tag that comes back upper-cased still maps

    def test_a_real_plan_id_round_trips(self) -> None:
        plan = plan_client_id(
            strategy="orb",
            instrument="INFY",
            side=Side.BUY,
            entry_price=D("1500.05"),
            stop_price=D("1490"),
            target_price=D("1520"),
            quantity=10,
            signal_ts=1,
        )
        for leg in LegKind:
            cid = client_order_id(plan, leg, 3)
            assert len(cid) <= 24
            assert decode_tag(encode_tag(cid)) == cid

    @pytest.mark.parametrize(
        "cid",
        [
            "P0123456789ABCDEF012E",  # upper-case hex: would not come back the same
            PLAN + "E10000",  # a sequence of 5 digits does not fit in 20 characters
            PLAN + "E0",  # a leading zero would not come back
            PLAN + "Q",  # not a leg
            "P0123E",  # too short
            "manual-order",
            "",
        ],
    )
    def test_an_id_that_cannot_be_a_tag_is_refused_before_any_request(self, cid: str) -> None:
        with pytest.raises(BrokerRejected, match="UNMAPPABLE_CLIENT_ORDER_ID") as raised:
            encode_tag(cid)
        assert raised.value.client_order_id == cid

    @pytest.mark.parametrize(
        "tag",
        [None, "", "mytag", "abc", 12345, "zzzzzzzzzzzzzzzE", "0123456789abcdeE00", "a" * 21],
    )
    def test_a_tag_that_is_not_ours_decodes_to_none(self, tag: object) -> None:
        assert decode_tag(tag) is None

    def test_an_order_with_our_tag_in_the_tags_list_maps_back(self) -> None:
        tag = encode_tag(PLAN + "S")
        assert tag_of_order({"tag": None, "tags": ["desk", tag]}) == PLAN + "S"
        assert tag_of_order({"tag": "desk", "tags": ["desk"]}) is None


# ------------------------------------------------------------------ order form
class TestOrderForm:
    def test_a_market_entry_is_a_kite_market_order_with_market_protection(self) -> None:
        form = order_form(request(OrderType.MARKET), NSE_INFY)

        assert form == {
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": "BUY",
            "quantity": "10",
            "product": "MIS",
            "order_type": "MARKET",
            "validity": "DAY",
            "tag": encode_tag(PLAN + "E"),
            "market_protection": "2",
        }

    def test_a_limit_target_carries_its_price_and_no_market_protection(self) -> None:
        form = order_form(
            request(
                OrderType.LIMIT, side=Side.SELL, price=D("1520.50"), client_order_id=PLAN + "T"
            ),
            NSE_INFY,
        )

        assert form["order_type"] == "LIMIT"
        assert form["price"] == "1520.5"
        assert form["transaction_type"] == "SELL"
        assert "market_protection" not in form

    def test_a_stop_is_an_sl_m_with_its_trigger_and_market_protection(self) -> None:
        form = order_form(
            request(
                OrderType.STOP, side=Side.SELL, trigger_price=D("1490"), client_order_id=PLAN + "S"
            ),
            NSE_INFY,
        )

        assert form["order_type"] == "SL-M"
        assert form["trigger_price"] == "1490"
        assert form["market_protection"] == "2"
        assert "price" not in form

    def test_a_quantity_that_is_not_whole_lots_is_refused(self) -> None:
        lots_of_50 = OrderMapping(exchange="NFO", tradingsymbol="NIFTY26DECFUT", lot_size=50)
        with pytest.raises(BrokerRejected, match="INVALID_QUANTITY"):
            order_form(request(OrderType.MARKET, quantity=75), lots_of_50)

    def test_a_limit_without_price_and_a_stop_without_trigger_are_refused(self) -> None:
        with pytest.raises(BrokerRejected, match="MISSING_PRICE"):
            order_form(request(OrderType.LIMIT), NSE_INFY)
        with pytest.raises(BrokerRejected, match="MISSING_TRIGGER_PRICE"):
            order_form(request(OrderType.STOP), NSE_INFY)


# ------------------------------------------------------------------ reports
def kite_order(**overrides: object) -> dict[str, object]:
    """A line of GET /orders as the docs show it."""
    order: dict[str, object] = {
        "placed_by": "XX0000",
        "order_id": "261130000000123",
        "exchange_order_id": "1100000000005678",
        "parent_order_id": None,
        "status": "OPEN",
        "status_message": None,
        "status_message_raw": None,
        "order_timestamp": "2026-11-30 09:15:02",
        "exchange_update_timestamp": "2026-11-30 09:15:03",
        "exchange_timestamp": "2026-11-30 09:15:03",
        "variety": "regular",
        "modified": False,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "instrument_token": INFY_TOKEN,
        "order_type": "LIMIT",
        "transaction_type": "BUY",
        "validity": "DAY",
        "product": "MIS",
        "quantity": 10,
        "disclosed_quantity": 0,
        "price": 1500,
        "trigger_price": 0,
        "average_price": 0,
        "filled_quantity": 0,
        "pending_quantity": 10,
        "cancelled_quantity": 0,
        "market_protection": 0,
        "meta": {},
        "tag": encode_tag(PLAN + "E"),
        "tags": [encode_tag(PLAN + "E")],
        "guid": "abc",
    }
    order.update(overrides)
    return order


class TestReports:
    @pytest.mark.parametrize(
        ("status", "filled", "expected"),
        [
            ("OPEN", 0, OrderStatus.ACCEPTED),
            ("TRIGGER PENDING", 0, OrderStatus.ACCEPTED),
            ("OPEN", 4, OrderStatus.PARTIALLY_FILLED),
            ("UPDATE", 0, OrderStatus.ACCEPTED),  # a postback's status after a modify
            ("UPDATE", 4, OrderStatus.PARTIALLY_FILLED),  # ... or a partial fill
            ("PUT ORDER REQ RECEIVED", 0, OrderStatus.SUBMITTED),
            ("VALIDATION PENDING", 0, OrderStatus.SUBMITTED),
            ("COMPLETE", 10, OrderStatus.FILLED),
            ("CANCELLED", 4, OrderStatus.CANCELLED),
            ("REJECTED", 0, OrderStatus.REJECTED),
        ],
    )
    def test_kite_statuses_map_to_ours(
        self, status: str, filled: int, expected: OrderStatus
    ) -> None:
        report = status_from_order(
            kite_order(status=status, filled_quantity=filled),
            "INFY",
            client_order_id=PLAN + "E",
            now_ns=1,
        )

        assert report.status is expected
        assert report.filled_quantity == filled
        assert report.broker_order_id == "261130000000123"
        assert report.ts_event == kite_timestamp_ns("2026-11-30 09:15:03")

    def test_a_rejection_keeps_kites_reason(self) -> None:
        report = status_from_order(
            kite_order(status="REJECTED", status_message="Insufficient funds"),
            "INFY",
            client_order_id=PLAN + "E",
            now_ns=1,
        )
        assert report.reason == "Insufficient funds"

    @pytest.mark.parametrize(
        ("order_type", "price", "trigger", "expected"),
        [
            ("SL-M", 0, 1498.5, (None, Decimal("1498.5"))),
            ("LIMIT", 1520.05, 0, (Decimal("1520.05"), None)),
            ("SL", 1497, 1498, (Decimal("1497"), Decimal("1498"))),
            ("MARKET", 0, 0, (None, None)),
        ],
    )
    def test_the_price_and_trigger_kite_holds_are_reported_for_reconciliation(
        self, order_type: str, price: float, trigger: float, expected: tuple
    ) -> None:
        report = status_from_order(
            kite_order(status="OPEN", order_type=order_type, price=price, trigger_price=trigger),
            "INFY",
            client_order_id=PLAN + "S",
            now_ns=1,
        )
        assert (report.price, report.trigger_price) == expected

    def test_kite_times_are_ist(self) -> None:
        expected = datetime(2026, 11, 30, 9, 15, 2, tzinfo=IST).timestamp()
        assert kite_timestamp_ns("2026-11-30 09:15:02") == int(expected) * 1_000_000_000
        assert kite_timestamp_ns("garbage") is None
        assert kite_timestamp_ns(None) is None

    def test_a_trade_is_a_fill_with_kites_trade_id(self) -> None:
        trade = {
            "trade_id": "10000000",
            "order_id": "261130000000123",
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "instrument_token": INFY_TOKEN,
            "product": "MIS",
            "average_price": 1500.05,
            "quantity": 10,
            "exchange_order_id": "1100000000005678",
            "transaction_type": "BUY",
            "fill_timestamp": "2026-11-30 09:15:04",
            "order_timestamp": "09:15:02",
            "exchange_timestamp": "2026-11-30 09:15:04",
        }

        fill = fill_from_trade(trade, "INFY", client_order_id=PLAN + "E", now_ns=1)

        assert fill.trade_id == "10000000"
        assert fill.price == D("1500.05")
        assert fill.quantity == 10
        assert fill.side is Side.BUY
        assert fill.ts_event == kite_timestamp_ns("2026-11-30 09:15:04")

    def test_a_trade_without_id_or_quantity_is_refused(self) -> None:
        with pytest.raises(ValueError, match="KITE_TRADE_WITHOUT_ID"):
            fill_from_trade({"quantity": 1}, "INFY", client_order_id=PLAN + "E", now_ns=1)
        with pytest.raises(ValueError, match="KITE_TRADE_UNUSABLE"):
            fill_from_trade(
                {"trade_id": "1", "quantity": 0, "average_price": 1, "transaction_type": "BUY"},
                "INFY",
                client_order_id=PLAN + "E",
                now_ns=1,
            )

    def test_a_net_position_line_is_a_signed_position(self) -> None:
        line = {
            "tradingsymbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "quantity": -10,
            "average_price": 1500.5,
        }
        report = position_from_kite(line, "INFY", 7)
        assert (report.quantity, report.average_price, report.ts_event) == (-10, D("1500.5"), 7)


# ------------------------------------------------------------------ errors
class TestErrors:
    def test_a_429_is_rate_limited_with_retry_after(self) -> None:
        error = error_from_response(
            429,
            {"status": "error", "message": "Too many requests", "error_type": "NetworkException"},
            retry_after="2",
        )
        assert isinstance(error, BrokerRateLimited)
        assert error.retry_after_s == 2.0

    def test_too_many_requests_as_a_network_exception_is_rate_limited(self) -> None:
        error = error_from_response(
            503,
            {"status": "error", "message": "Too many requests", "error_type": "NetworkException"},
        )
        assert isinstance(error, BrokerRateLimited)
        assert error.retry_after_s is None

    @pytest.mark.parametrize("retry_after", ["inf", "nan", "-1", "soon", "Wed, 21 Oct 2026"])
    def test_a_retry_after_that_is_not_a_number_of_seconds_is_ignored(
        self, retry_after: str
    ) -> None:
        error = error_from_response(429, None, retry_after=retry_after)
        assert isinstance(error, BrokerRateLimited)
        assert error.retry_after_s is None

    def test_a_token_exception_is_token_expired_and_says_how_to_log_in(self) -> None:
        error = error_from_response(
            403,
            {
                "status": "error",
                "message": "Incorrect `api_key` or `access_token`.",
                "error_type": "TokenException",
                "data": None,
            },
        )
        assert isinstance(error, KiteTokenExpired)
        assert isinstance(error, BrokerUnavailable)  # nothing placed: the order stays in flight
        assert "python -m tools.kite_login" in str(error)

    @pytest.mark.parametrize("error_type", ["InputException", "OrderException", "MarginException"])
    def test_a_refusal_on_the_merits_is_rejected_with_kites_message(self, error_type: str) -> None:
        error = error_from_response(
            400,
            {"status": "error", "message": "Invalid `tradingsymbol`", "error_type": error_type},
            client_order_id=PLAN + "E",
        )
        assert type(error) is BrokerRejected
        assert "Invalid `tradingsymbol`" in str(error)
        assert error.client_order_id == PLAN + "E"

    @pytest.mark.parametrize(
        ("http_status", "body"),
        [
            (500, {"status": "error", "message": "oops", "error_type": "GeneralException"}),
            (502, None),
            (503, {"status": "error", "message": "down", "error_type": "NetworkException"}),
            (504, "<html>gateway timeout</html>"),
        ],
    )
    def test_a_server_error_is_unknown(self, http_status: int, body: object) -> None:
        error = error_from_response(http_status, body)
        assert type(error) is BrokerUnavailable


# ------------------------------------------------------------------ instruments
class TestInstrumentsCsv:
    def test_the_csv_maps_exchange_and_symbol_to_token_lot_and_tick(self) -> None:
        text = (
            "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
            "tick_size,lot_size,instrument_type,segment,exchange\n"
            f"{INFY_TOKEN},1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n"
            "13161474,51412,NIFTY26DECFUT,NIFTY,0,2026-12-31,0,0.1,75,FUT,NFO-FUT,NFO\n"
            "bad,1,BROKEN,,0,,0,0.05,1,EQ,NSE,NSE\n"
        )

        rows = parse_instruments_csv(text)

        assert rows[("NSE", "INFY")].instrument_token == INFY_TOKEN
        assert rows[("NFO", "NIFTY26DECFUT")].lot_size == 75
        assert rows[("NFO", "NIFTY26DECFUT")].tick_size == D("0.1")
        assert ("NSE", "BROKEN") not in rows

    def test_a_csv_without_the_needed_columns_is_refused(self) -> None:
        with pytest.raises(ValueError, match="missing columns"):
            parse_instruments_csv("a,b\n1,2\n")


# ------------------------------------------------------------------ ticker frames
def frame(*packets: bytes) -> bytes:
    body = b"".join(struct.pack(">H", len(packet)) + packet for packet in packets)
    return struct.pack(">H", len(packets)) + body


def full_packet(
    token: int = INFY_TOKEN,
    last: int = 150_005,
    bid: tuple[int, int] = (150_000, 40),
    ask: tuple[int, int] = (150_010, 25),
    exchange_ts: int = 1_796_012_345,
) -> bytes:
    quote = struct.pack(
        ">IIIIIIIIIII",
        token,
        last,
        5,
        150_002,
        123_456,
        1000,
        900,
        149_000,
        151_000,
        148_500,
        149_500,
    )
    extra = struct.pack(">IIIII", exchange_ts - 1, 0, 0, 0, exchange_ts)
    bids = [struct.pack(">IIH2x", bid[1], bid[0], 3)] + [
        struct.pack(">IIH2x", 10, max(bid[0] - 5 * level, 0), 1) for level in range(1, 5)
    ]
    asks = [struct.pack(">IIH2x", ask[1], ask[0], 2)] + [
        struct.pack(">IIH2x", 10, ask[0] + 5 * level, 1) for level in range(1, 5)
    ]
    packet = quote + extra + b"".join(bids) + b"".join(asks)
    assert len(packet) == 184
    return packet


def quote_packet(token: int = INFY_TOKEN, last: int = 150_005) -> bytes:
    return struct.pack(
        ">IIIIIIIIIII",
        token,
        last,
        5,
        150_002,
        123_456,
        1000,
        900,
        149_000,
        151_000,
        148_500,
        149_500,
    )


class TestFrames:
    def test_a_full_packet_gives_bid_and_ask_from_the_best_level_and_the_exchange_time(
        self,
    ) -> None:
        parsed = parse_binary_frame(frame(full_packet()))

        assert parsed.garbage == 0 and not parsed.heartbeat
        (packet,) = parsed.packets
        tick = packet_to_tick(packet, "INFY", now_ns=42)
        assert tick is not None
        assert (tick.bid, tick.ask, tick.last) == (D("1500"), D("1500.1"), D("1500.05"))
        assert (tick.bid_size, tick.ask_size, tick.volume) == (40, 25, 123_456)
        assert tick.ts_event == 1_796_012_345 * 1_000_000_000
        assert tick.ts_init == 42

    def test_quote_and_ltp_packets_quote_the_last_price_at_arrival_time(self) -> None:
        parsed = parse_binary_frame(frame(quote_packet(), struct.pack(">II", INFY_TOKEN, 150_100)))

        quote, ltp = parsed.packets
        quote_tick = packet_to_tick(quote, "INFY", now_ns=99)
        ltp_tick = packet_to_tick(ltp, "INFY", now_ns=99)
        assert quote_tick is not None and ltp_tick is not None
        assert quote_tick.bid == quote_tick.ask == quote_tick.last == D("1500.05")
        assert quote_tick.volume == 123_456 and quote_tick.ts_event == 99
        assert ltp_tick.last == D("1501")

    def test_index_packets_of_28_and_32_bytes(self) -> None:
        index_quote = struct.pack(
            ">IIIIIII", NIFTY_INDEX_TOKEN, 2_400_000, 2_410_000, 2_390_000, 2_395_000, 2_398_000, 8
        )
        index_full = index_quote + struct.pack(">I", 1_796_012_345)

        quote, full = parse_binary_frame(frame(index_quote, index_full)).packets

        assert quote.mode == "index_quote" and quote.last_price == D("24000")
        assert full.mode == "index_full" and full.exchange_ts_s == 1_796_012_345

    def test_a_one_byte_message_is_a_heartbeat(self) -> None:
        parsed = parse_binary_frame(b"\x00")
        assert parsed.heartbeat and parsed.packets == () and parsed.garbage == 0

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            struct.pack(">H", 2) + struct.pack(">H", 8) + struct.pack(">II", INFY_TOKEN, 1),
            struct.pack(">H", 1) + struct.pack(">H", 50) + b"\x01" * 50,  # unknown length
            struct.pack(">H", 1) + struct.pack(">H", 184) + b"\x01" * 10,  # short of its length
            frame(struct.pack(">II", INFY_TOKEN, 0)),  # a zero price
            frame(struct.pack(">Ii", INFY_TOKEN, -100)),  # a negative price
            frame(struct.pack(">II", 0, 100)),  # no instrument
            frame(struct.pack(">II", INFY_TOKEN, 100)) + b"\x00\x00",  # trailing bytes
            frame(quote_packet(token=NIFTY_INDEX_TOKEN)),  # an index in a 44-byte packet
        ],
    )
    def test_garbage_is_counted_and_never_a_tick(self, data: bytes) -> None:
        parsed = parse_binary_frame(data)
        assert parsed.garbage >= 1
        assert not parsed.heartbeat

    def test_a_full_packet_with_an_empty_or_crossed_book_makes_no_tick(self) -> None:
        empty_bid = parse_binary_frame(frame(full_packet(bid=(0, 0)))).packets[0]
        crossed = parse_binary_frame(frame(full_packet(bid=(150_020, 1)))).packets[0]
        assert packet_to_tick(empty_bid, "INFY", now_ns=1) is None
        assert packet_to_tick(crossed, "INFY", now_ns=1) is None

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=400))
    def test_any_bytes_parse_without_raising(self, data: bytes) -> None:
        parsed = parse_binary_frame(data)
        for packet in parsed.packets:
            tick = packet_to_tick(packet, "INFY", now_ns=1)
            if tick is not None:
                assert tick.bid <= tick.ask and tick.last > 0


class TestAccountType:
    def test_the_real_base_is_live_whatever_the_profile_says(self) -> None:
        assert account_is_live(is_real_base=True, profile={"meta": {"account_type": "DEMO"}})

    def test_elsewhere_only_a_profile_saying_live_is_live(self) -> None:
        assert account_is_live(is_real_base=False, profile={"meta": {"account_type": "LIVE"}})
        assert not account_is_live(is_real_base=False, profile={"meta": {"account_type": "DEMO"}})
        assert not account_is_live(is_real_base=False, profile={"user_id": "AB1234"})
        assert not account_is_live(is_real_base=False, profile=None)


class TestKiteConfig:
    def test_defaults_are_the_real_base_urls_and_a_paper_engine_still_loads(self) -> None:
        config = EngineConfig(instruments=(InstrumentConfig(symbol="INFY"),))

        assert config.broker.kind == "paper"
        assert config.kite.rest_base_url == "https://api.kite.trade"
        assert config.kite.ws_base_url == "wss://ws.kite.trade"
        assert config.kite.is_real_base
        assert not config.rehearsal

    def test_a_kite_feed_needs_the_kite_broker(self) -> None:
        with pytest.raises(ValueError, match=r"feed\.kind 'kite' needs broker\.kind 'kite'"):
            EngineConfig(instruments=(InstrumentConfig(symbol="INFY"),), feed={"kind": "kite"})

    def test_kite_cannot_run_on_the_inline_gateway(self) -> None:
        with pytest.raises(ValueError, match=r"cannot serve broker\.kind 'kite'"):
            BrokerConfig(kind="kite", gateway="inline")

    def test_a_kite_instrument_mapping_must_name_a_configured_symbol(self) -> None:
        with pytest.raises(ValueError, match=r"kite\.instruments: unknown symbols"):
            EngineConfig(
                instruments=(InstrumentConfig(symbol="INFY"),),
                kite={"instruments": {"NIFTY": {"exchange": "NFO"}}},
            )

    def test_rehearsal_is_declared_only_off_the_real_base(self) -> None:
        instruments = (InstrumentConfig(symbol="INFY"),)
        fake = EngineConfig(
            instruments=instruments,
            broker={"kind": "kite"},
            kite={"live_account": True, "rest_base_url": "http://127.0.0.1:5010"},
        )
        real = EngineConfig(
            instruments=instruments, broker={"kind": "kite"}, kite={"live_account": True}
        )
        assert fake.rehearsal is True
        assert real.rehearsal is False  # the real base is never a rehearsal

    def test_secrets_are_hidden_in_the_config(self) -> None:
        config = EngineConfig(
            instruments=(InstrumentConfig(symbol="INFY"),),
            kite={"api_key": "key-123", "access_token": "token-456"},
        )
        assert "token-456" not in repr(config) and "token-456" not in str(config.model_dump())
