"""Kite Connect v3 wire formats the fake writes: ticker binary frames and the instruments CSV.

Binary frames (all big-endian): an unsigned int16 packet count, then per packet an unsigned
int16 length and the packet. Prices are integer paise (KiteTicker divides by 100 for the NSE
and index segments). Packet layouts:

- LTP (8 bytes): token, last price.
- Index quote (28 bytes): token, last, high, low, open, close, change (close to last, in
  hundredths of a percent); index full (32 bytes): the same plus the exchange timestamp.
- Quote (44 bytes): token, last, last traded quantity, average traded price, volume, total
  buy quantity, total sell quantity, open, high, low, close.
- Full (184 bytes): the quote, then last trade time, OI, OI day high, OI day low, exchange
  timestamp (epoch seconds), then 10 depth entries of 12 bytes (5 bids, then 5 asks):
  quantity int32, price int32, orders int16, 2 bytes padding.

A heartbeat is a 1-byte binary frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from decimal import Decimal

from tools.fake_kite.market import (
    INSTRUMENTS_CSV_HEADER,
    DepthLevel,
    KiteInstrument,
    MarketView,
    to_paise,
)

__all__ = [
    "HEARTBEAT",
    "MODES",
    "PACKET_LENGTHS",
    "encode_frame",
    "encode_packet",
    "instruments_csv",
]

MODES = ("ltp", "quote", "full")
HEARTBEAT = b"\x00"
# (mode, is_index) -> packet length
PACKET_LENGTHS = {
    ("ltp", False): 8,
    ("ltp", True): 8,
    ("quote", False): 44,
    ("quote", True): 28,
    ("full", False): 184,
    ("full", True): 32,
}
_DEPTH_ENTRY = struct.Struct(">iiH2x")
_NO_LEVEL = DepthLevel(price=Decimal(0), quantity=0, orders=0)


def encode_packet(view: MarketView, mode: str) -> bytes:
    """Return one packet for ``view`` in ``mode`` (``ltp``, ``quote`` or ``full``)."""
    token = view.instrument.instrument_token
    last = to_paise(view.last_price)
    if mode == "ltp":
        return struct.pack(">Ii", token, last)
    seconds = view.timestamp_ns // 1_000_000_000
    if view.instrument.is_index:
        close = to_paise(view.close)
        change = 0 if close == 0 else round((last - close) * 10_000 / close)
        packet = struct.pack(
            ">Iiiiiii",
            token,
            last,
            to_paise(view.high),
            to_paise(view.low),
            to_paise(view.open),
            close,
            change,
        )
        return packet + struct.pack(">i", seconds) if mode == "full" else packet
    packet = struct.pack(
        ">Iiiiiiiiiii",
        token,
        last,
        view.last_quantity,
        to_paise(view.average_price),
        view.volume,
        view.buy_quantity,
        view.sell_quantity,
        to_paise(view.open),
        to_paise(view.high),
        to_paise(view.low),
        to_paise(view.close),
    )
    if mode == "quote":
        return packet
    packet += struct.pack(">iiiii", view.last_trade_ns // 1_000_000_000, 0, 0, 0, seconds)
    for levels in (view.bids, view.asks):
        padded = list(levels[:5]) + [_NO_LEVEL] * (5 - len(levels[:5]))
        for level in padded:
            packet += _DEPTH_ENTRY.pack(level.quantity, to_paise(level.price), level.orders)
    return packet


def encode_frame(packets: Sequence[bytes]) -> bytes:
    """Return one binary frame carrying ``packets``."""
    parts = [struct.pack(">H", len(packets))]
    for packet in packets:
        parts.append(struct.pack(">H", len(packet)))
        parts.append(packet)
    return b"".join(parts)


def instruments_csv(instruments: Iterable[KiteInstrument], last_prices: dict[str, str]) -> str:
    """The instruments dump as Kite serves it: plain CSV with Kite's header, one row each."""
    lines = [INSTRUMENTS_CSV_HEADER]
    for item in instruments:
        name = item.name.replace(",", " ")
        lines.append(
            ",".join(
                (
                    str(item.instrument_token),
                    str(item.exchange_token),
                    item.tradingsymbol,
                    name,
                    last_prices.get(item.key, "0"),
                    item.expiry,
                    "0",
                    str(item.tick_size),
                    str(item.lot_size),
                    item.instrument_type,
                    item.segment,
                    item.exchange,
                )
            )
        )
    return "\n".join(lines) + "\n"
