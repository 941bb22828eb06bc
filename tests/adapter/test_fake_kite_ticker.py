"""The fake Kite ticker over a real websocket: frame layout (decoded here with a reference
decoder written from the public docs, ``struct`` only), subscribe/mode/unsubscribe,
heartbeats, postbacks, errors and the handshake's token check."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from domain.clock import ManualClock
from tools.fake_kite import FakeKite, MarketView
from tools.fake_kite.testing import KiteHttp, TickerSocket
from tools.fake_kite.wire import encode_frame, encode_packet

INFY, RELIANCE, SBIN, NIFTY = 408065, 738561, 779521, 256265


def decode_frame(frame: bytes) -> list[bytes]:
    """int16 packet count, then per packet int16 length + packet; nothing left over."""
    (count,) = struct.unpack_from(">H", frame, 0)
    offset, packets = 2, []
    for _ in range(count):
        (length,) = struct.unpack_from(">H", frame, offset)
        packets.append(frame[offset + 2 : offset + 2 + length])
        offset += 2 + length
    assert offset == len(frame), f"frame has {len(frame) - offset} trailing bytes"
    return packets


def decode_packet(packet: bytes) -> dict[str, Any]:
    """Integers as sent (prices in paise)."""
    token, last = struct.unpack_from(">Ii", packet, 0)
    out: dict[str, Any] = {"token": token, "last": last, "length": len(packet)}
    if len(packet) == 8:
        return out
    if len(packet) in (28, 32):
        high, low, open_, close, change = struct.unpack_from(">iiiii", packet, 8)
        out.update(high=high, low=low, open=open_, close=close, change=change)
        if len(packet) == 32:
            (out["timestamp"],) = struct.unpack_from(">i", packet, 28)
        return out
    assert len(packet) in (44, 184), len(packet)
    fields = struct.unpack_from(">iiiiiiiii", packet, 8)
    names = ("ltq", "atp", "volume", "buy_qty", "sell_qty", "open", "high", "low", "close")
    out.update(zip(names, fields, strict=True))
    if len(packet) == 184:
        ltt, oi, oi_high, oi_low, stamp = struct.unpack_from(">iiiii", packet, 44)
        out.update(ltt=ltt, oi=oi, oi_high=oi_high, oi_low=oi_low, timestamp=stamp)
        entries = [struct.unpack_from(">iiH2x", packet, 64 + 12 * index) for index in range(10)]
        out["bids"] = entries[:5]
        out["asks"] = entries[5:]
    return out


def paise(value: Any) -> int:
    return int(value * 100)


def expected(view: MarketView, mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {"token": view.instrument.instrument_token,
                           "last": paise(view.last_price)}  # fmt: skip
    if mode == "ltp":
        return {**out, "length": 8}
    seconds = view.timestamp_ns // 1_000_000_000
    if view.instrument.is_index:
        close = paise(view.close)
        out.update(
            length=28 if mode == "quote" else 32,
            high=paise(view.high),
            low=paise(view.low),
            open=paise(view.open),
            close=close,
            change=round((out["last"] - close) * 10_000 / close),
        )
        if mode == "full":
            out["timestamp"] = seconds
        return out
    out.update(
        length=44 if mode == "quote" else 184,
        ltq=view.last_quantity,
        atp=paise(view.average_price),
        volume=view.volume,
        buy_qty=view.buy_quantity,
        sell_qty=view.sell_quantity,
        open=paise(view.open),
        high=paise(view.high),
        low=paise(view.low),
        close=paise(view.close),
    )
    if mode == "full":
        out.update(
            ltt=view.last_trade_ns // 1_000_000_000, oi=0, oi_high=0, oi_low=0, timestamp=seconds
        )
        out["bids"] = [(lv.quantity, paise(lv.price), lv.orders) for lv in view.bids]
        out["asks"] = [(lv.quantity, paise(lv.price), lv.orders) for lv in view.asks]
    return out


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite(seed=5, clock=ManualClock(), heartbeat_interval_s=0.05)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token(fake: FakeKite) -> str:
    return fake.create_session()


@pytest.fixture
def ticker(fake: FakeKite, token: str) -> Iterator[TickerSocket]:
    socket = TickerSocket(fake.ws_url, fake.api_key, token)
    try:
        yield socket
    finally:
        socket.close()


def latest(socket: TickerSocket) -> dict[int, dict[str, Any]]:
    packets: dict[int, dict[str, Any]] = {}
    for frame in socket.frames:
        for packet in decode_frame(frame):
            decoded = decode_packet(packet)
            packets[decoded["token"]] = decoded
    return packets


def test_every_packet_layout_round_trips_through_the_reference_decoder(fake: FakeKite) -> None:
    for token in (INFY, NIFTY):
        view = fake.market_view(token)
        for mode in ("ltp", "quote", "full"):
            (packet,) = decode_frame(encode_frame([encode_packet(view, mode)]))
            assert decode_packet(packet) == expected(view, mode), (token, mode)
    assert decode_frame(encode_frame([])) == []


def test_subscribe_defaults_to_quote_then_mode_switches(
    fake: FakeKite, ticker: TickerSocket
) -> None:
    ticker.send({"a": "subscribe", "v": [INFY, RELIANCE, SBIN, NIFTY, 12345]})
    ticker.pump_until(lambda: len(latest(ticker)) == 4)
    for token, packet in latest(ticker).items():
        assert packet == expected(fake.market_view(token), "quote")
    ticker.send({"a": "mode", "v": ["full", [INFY, NIFTY]]})
    ticker.send({"a": "mode", "v": ["ltp", [SBIN]]})
    modes = {INFY: "full", NIFTY: "full", SBIN: "ltp", RELIANCE: "quote"}

    def in_their_modes() -> bool:
        packets = latest(ticker)
        return all(
            packets[t]["length"] == expected(fake.market_view(t), m)["length"]
            for t, m in modes.items()
        )

    ticker.pump_until(in_their_modes)
    assert fake.subscriptions() == [modes]
    # The market moves: one frame carries every subscribed token in its mode.
    frames_before = len(ticker.frames)
    fake.advance(1.0)
    ticker.pump_until(lambda: len(ticker.frames) > frames_before)
    (frame,) = ticker.frames[frames_before:]
    packets = {decode_packet(p)["token"]: decode_packet(p) for p in decode_frame(frame)}
    assert packets == {t: expected(fake.market_view(t), m) for t, m in modes.items()}
    ticker.send({"a": "unsubscribe", "v": [RELIANCE, SBIN, NIFTY]})
    ticker.pump_until(lambda: fake.subscriptions() == [{INFY: "full"}])


def test_heartbeats_are_one_byte_frames(ticker: TickerSocket) -> None:
    ticker.pump_until(lambda: ticker.heartbeats >= 2)


def test_order_changes_come_as_text_postbacks(
    fake: FakeKite, ticker: TickerSocket, token: str
) -> None:
    kite = KiteHttp(fake.base_url, fake.api_key, token)
    _, body = kite.place(quantity=2, tag="pb1")
    order_id = body["data"]["order_id"]
    ticker.pump_until(lambda: len(ticker.postbacks()) >= 2)
    assert [p["status"] for p in ticker.postbacks()] == ["OPEN", "COMPLETE"]
    assert {p["order_id"] for p in ticker.postbacks()} == {order_id}
    (order,) = fake.orders()
    last = ticker.postbacks()[-1]
    assert {key: last[key] for key in order} == order
    assert (last["user_id"], last["unfilled_quantity"]) == (fake.user_id, 0)
    assert all(text["type"] == "order" for text in ticker.texts)
    kite.close()


def test_a_bad_message_gets_a_text_error(fake: FakeKite, ticker: TickerSocket) -> None:
    ticker.send({"a": "dance", "v": []})
    ticker.pump_until(lambda: any(t.get("type") == "error" for t in ticker.texts))
    fake.send_ws_error("custom trouble")
    ticker.pump_until(lambda: {"type": "error", "data": "custom trouble"} in ticker.texts)


def test_the_handshake_refuses_a_bad_token_with_403(fake: FakeKite) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        TickerSocket(fake.ws_url, fake.api_key, "not-a-token")
    assert refused.value.status_code == 403


def test_the_root_path_takes_the_ticker_too(fake: FakeKite, token: str) -> None:
    socket = TickerSocket(fake.base_url.replace("http", "ws") + "/", fake.api_key, token)
    socket.send({"a": "subscribe", "v": [INFY]})
    socket.pump_until(lambda: bool(socket.frames))
    socket.close()


def test_a_modify_posts_back_update_and_a_cancel_cancelled(
    fake: FakeKite, ticker: TickerSocket, token: str
) -> None:
    kite = KiteHttp(fake.base_url, fake.api_key, token)
    _, body = kite.place(order_type="LIMIT", price="1000", quantity=2, market_protection=None)
    order_id = body["data"]["order_id"]
    kite.call("PUT", f"/orders/regular/{order_id}", {"quantity": 3})
    kite.call("DELETE", f"/orders/regular/{order_id}")
    ticker.pump_until(lambda: len(ticker.postbacks()) >= 3)
    assert [(p["status"], p["quantity"]) for p in ticker.postbacks()] == [
        ("OPEN", 2),
        ("UPDATE", 3),
        ("CANCELLED", 3),
    ]
    # The order book itself never says UPDATE.
    _, history = kite.call("GET", f"/orders/{order_id}")
    assert [step["status"] for step in history["data"]] == ["OPEN", "OPEN", "CANCELLED"]
    kite.close()
