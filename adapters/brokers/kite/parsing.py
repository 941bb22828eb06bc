"""Pure Kite Connect v3 wire mappings: our ids to Kite tags and back, requests to form fields,
Kite's order/trade/position dicts to the engine's reports, error envelopes to the port's
exceptions, the instruments CSV, and the ticker's binary frames to ``Tick``.

No I/O, no clock, no threads: everything here is a function of its arguments (arrival times
come in as ``now_ns``), so the REST client, the ticker and the tests share one mapping.

The tag codec. Kite's ``tag`` holds at most 20 alphanumeric characters; our client order ids
(``domain.plans``) are ``P`` + 19 lowercase hex digits + a leg letter (E, S, T, X) + an
optional sequence (digits, no leading zero), up to 24 characters. The tag keeps the leg and
the sequence as they are and writes the 76-bit hex part as 15 base-36 digits (36**15 > 16**19),
so ``tag = <15 base36><leg><sequence>``: 16 characters plus up to 4 sequence digits. The mapping
is stateless and reversible, so after a restart Kite's order list maps back to our ids with no
table; decoding is case-insensitive for the base-36 part (in case a tag comes back upper-cased)
and strict everywhere else, so a tag someone else set (a manual order) decodes to None.
"""

from __future__ import annotations

import csv
import io
import math
import re
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from adapters.brokers.base import (
    BrokerAuthExpired,
    BrokerError,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
)
from domain.enums import OrderStatus, OrderType, Side
from domain.messages import FillReport, OrderRequest, OrderStatusReport, PositionReport, Tick

__all__ = [
    "IST",
    "KITE_OPEN_STATUSES",
    "KiteInstrument",
    "KiteTokenExpired",
    "ParsedFrame",
    "decode_tag",
    "encode_tag",
    "error_from_response",
    "fill_from_trade",
    "kite_timestamp_ns",
    "login_instructions",
    "market_order_fields",
    "order_form",
    "packet_to_tick",
    "parse_binary_frame",
    "parse_instruments_csv",
    "position_from_kite",
    "status_from_order",
    "stop_move_fields",
]

IST = timezone(timedelta(hours=5, minutes=30))

MAX_TAG_LENGTH = 20
_HEX_DIGITS = 19
_BASE36_DIGITS = 15
_BASE36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_SEQUENCE_DIGITS = MAX_TAG_LENGTH - _BASE36_DIGITS - 1
_CLIENT_ORDER_ID = re.compile(r"P([0-9a-f]{19})([ESTX])([1-9][0-9]*)?")
_TAG = re.compile(r"([0-9a-zA-Z]{15})([ESTX])([1-9][0-9]{0,3})?")


class KiteTokenExpired(BrokerAuthExpired):
    """Kite refused the session (HTTP 403, ``TokenException``): the access token expired (at
    06:00 IST the next day) or was revoked. Nothing was placed; every later call fails the
    same way until an operator logs in again (``python -m tools.kite_login``). A
    ``BrokerAuthExpired``: the broker gateway withholds an entry refused so and keeps any other
    request in flight (never "rejected": it was not refused on its merits), never retrying it."""


_LOGIN_AGAIN = (
    "log in again with `python -m tools.kite_login` and put the new access token where "
    "kite.access_token_file (or KITE_ACCESS_TOKEN) points"
)


def login_instructions(detail: str) -> str:
    """``detail`` of a refused Kite session, with what the operator must do (once)."""
    return detail if "tools.kite_login" in detail else f"{detail}; {_LOGIN_AGAIN}"


# ---------------------------------------------------------------------------------- tags
def encode_tag(client_order_id: str) -> str:
    """Map one of our client order ids to a Kite tag (at most 20 alphanumerics).

    Raises:
        BrokerRejected: ``UNMAPPABLE_CLIENT_ORDER_ID`` when the id is not of the form
            ``domain.plans.client_order_id`` makes, or its sequence has more than 4 digits;
            raised before any request, so nothing reached Kite.
    """
    match = _CLIENT_ORDER_ID.fullmatch(client_order_id)
    if match is None or len(match.group(3) or "") > _MAX_SEQUENCE_DIGITS:
        raise BrokerRejected(
            f"UNMAPPABLE_CLIENT_ORDER_ID: client_order_id={client_order_id!r} cannot travel in "
            f"a Kite tag (expected 'P' + 19 lowercase hex + E/S/T/X + an optional sequence of "
            f"at most {_MAX_SEQUENCE_DIGITS} digits)",
            client_order_id=client_order_id,
        )
    value = int(match.group(1), 16)
    digits = []
    for _ in range(_BASE36_DIGITS):
        value, digit = divmod(value, 36)
        digits.append(_BASE36_ALPHABET[digit])
    return "".join(reversed(digits)) + match.group(2) + (match.group(3) or "")


def decode_tag(tag: object) -> str | None:
    """Our client order id from a Kite tag, or None when the tag is not one of ours."""
    if not isinstance(tag, str):
        return None
    match = _TAG.fullmatch(tag)
    if match is None:
        return None
    value = int(match.group(1).lower(), 36)
    if value >= 16**_HEX_DIGITS:
        return None
    return f"P{value:019x}{match.group(2)}{match.group(3) or ''}"


def tag_of_order(order: Mapping[str, Any]) -> str | None:
    """Our client order id carried by a Kite order dict (``tag``, or one of ``tags``)."""
    client_order_id = decode_tag(order.get("tag"))
    if client_order_id is not None:
        return client_order_id
    tags = order.get("tags")
    if isinstance(tags, list):
        for tag in tags:
            client_order_id = decode_tag(tag)
            if client_order_id is not None:
                return client_order_id
    return None


__all__ += ["MAX_TAG_LENGTH", "tag_of_order"]


# ---------------------------------------------------------------------------------- times
def kite_timestamp_ns(value: object) -> int | None:
    """Epoch ns of a Kite timestamp (``"2026-11-30 09:15:02"``, IST, or ISO with an offset);
    None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=IST)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


# ---------------------------------------------------------------------------------- orders
# Kite's order statuses that are still working (the rest: COMPLETE, CANCELLED, REJECTED and
# their variants). Kite lists intermediate states an order passes through in milliseconds.
KITE_OPEN_STATUSES = frozenset(
    {
        "OPEN",
        "TRIGGER PENDING",
        "OPEN PENDING",
        "VALIDATION PENDING",
        "PUT ORDER REQ RECEIVED",
        "MODIFY VALIDATION PENDING",
        "MODIFY PENDING",
        "MODIFIED",
        "CANCEL PENDING",
        "AMO REQ RECEIVED",
    }
)
# Received but not yet at the exchange: no acknowledgement yet.
_KITE_NOT_YET_ACKNOWLEDGED = frozenset(
    {"PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "AMO REQ RECEIVED"}
)


class OrderMapping(msgspec.Struct, frozen=True, kw_only=True):
    """Where one of our instruments trades at Kite, and how an order is sent there."""

    exchange: str
    tradingsymbol: str
    lot_size: int = 1
    product: str = "MIS"
    market_protection: Decimal = Decimal("2")


__all__ += ["OrderMapping"]


_ORDER_TYPES = {OrderType.MARKET: "MARKET", OrderType.LIMIT: "LIMIT", OrderType.STOP: "SL-M"}


def order_form(request: OrderRequest, mapping: OrderMapping) -> dict[str, str]:
    """The form fields of ``POST /orders/regular`` for ``request``.

    MARKET and SL-M carry ``market_protection`` (required non-zero since April 2026); the
    tag carries our id (``encode_tag``). Quantity is in units and must be whole lots.

    Raises:
        BrokerRejected: before any request, for an id that cannot become a tag, a quantity
            that is not a positive whole number of lots, or a missing price or trigger.
    """
    cid = request.client_order_id
    tag = encode_tag(cid)
    if request.quantity <= 0 or request.quantity % mapping.lot_size:
        raise BrokerRejected(
            f"INVALID_QUANTITY: quantity={request.quantity} is not a positive multiple of the "
            f"lot size {mapping.lot_size} of {mapping.exchange}:{mapping.tradingsymbol}",
            client_order_id=cid,
        )
    if mapping.market_protection <= 0:
        raise BrokerRejected(
            "INVALID_MARKET_PROTECTION: Kite requires a non-zero market_protection for MARKET "
            f"and SL-M orders: market_protection={mapping.market_protection}",
            client_order_id=cid,
        )
    form = {
        "exchange": mapping.exchange,
        "tradingsymbol": mapping.tradingsymbol,
        "transaction_type": request.side.value,
        "quantity": str(request.quantity),
        "product": mapping.product,
        "order_type": _ORDER_TYPES[request.order_type],
        "validity": "DAY",
        "tag": tag,
    }
    if request.order_type is OrderType.LIMIT:
        if request.price is None:
            raise BrokerRejected(
                f"MISSING_PRICE: LIMIT order {cid} has no price", client_order_id=cid
            )
        form["price"] = _decimal_text(request.price)
    else:
        form["market_protection"] = _decimal_text(mapping.market_protection)
    if request.order_type is OrderType.STOP:
        if request.trigger_price is None:
            raise BrokerRejected(
                f"MISSING_TRIGGER_PRICE: STOP order {cid} has no trigger_price",
                client_order_id=cid,
            )
        form["trigger_price"] = _decimal_text(request.trigger_price)
    return form


def market_order_fields(mapping: OrderMapping) -> dict[str, str]:
    """The fields of ``PUT /orders/regular/{id}`` that make a working order a MARKET one
    (a flatten's SL-M stop made its exit), ``market_protection`` included."""
    return {"order_type": "MARKET", "market_protection": _decimal_text(mapping.market_protection)}


def stop_move_fields(mapping: OrderMapping, trigger_price: Decimal) -> dict[str, str]:
    """The fields of ``PUT /orders/regular/{id}`` that move a working SL-M's trigger."""
    return {
        "order_type": "SL-M",
        "trigger_price": _decimal_text(trigger_price),
        "market_protection": _decimal_text(mapping.market_protection),
    }


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def status_from_order(
    order: Mapping[str, Any], instrument: str, *, client_order_id: str, now_ns: int
) -> OrderStatusReport:
    """An ``OrderStatusReport`` from a Kite order dict (a line of ``GET /orders``, the last
    entry of ``GET /orders/{id}`` or a postback's ``data``)."""
    status = str(order.get("status") or "").upper()
    quantity = _int(order.get("quantity"))
    filled = _int(order.get("filled_quantity"))
    if status == "COMPLETE":
        mapped = OrderStatus.FILLED
    elif status.startswith("CANCELLED"):
        mapped = OrderStatus.CANCELLED
    elif status == "REJECTED":
        mapped = OrderStatus.REJECTED
    elif filled > 0:
        mapped = OrderStatus.PARTIALLY_FILLED
    elif status in _KITE_NOT_YET_ACKNOWLEDGED:
        mapped = OrderStatus.SUBMITTED
    else:
        mapped = OrderStatus.ACCEPTED
    ts_event = (
        kite_timestamp_ns(order.get("exchange_update_timestamp"))
        or kite_timestamp_ns(order.get("exchange_timestamp"))
        or kite_timestamp_ns(order.get("order_timestamp"))
        or now_ns
    )
    reason = order.get("status_message") or ""
    # What the order rests at now (a stop dragged in Kite's own app shows here): reconciliation
    # compares it with ours. Kite sends 0 for a price the order type does not use.
    order_type = str(order.get("order_type") or "").upper()
    price = _decimal(order.get("price")) if order_type in ("LIMIT", "SL") else None
    trigger = _decimal(order.get("trigger_price")) if order_type in ("SL", "SL-M") else None
    return OrderStatusReport(
        client_order_id=client_order_id,
        broker_order_id=str(order.get("order_id") or ""),
        instrument=instrument,
        status=mapped,
        quantity=quantity,
        filled_quantity=filled,
        reason=str(reason) if mapped in (OrderStatus.REJECTED, OrderStatus.CANCELLED) else "",
        ts_event=ts_event,
        price=price if price else None,
        trigger_price=trigger if trigger else None,
    )


def fill_from_trade(
    trade: Mapping[str, Any], instrument: str, *, client_order_id: str, now_ns: int
) -> FillReport:
    """A ``FillReport`` from a line of ``GET /trades`` or ``GET /orders/{id}/trades``; the
    trade id is Kite's, so a fill learnt from both is booked once.

    Raises:
        ValueError: the trade has no id, no usable quantity or price, or an unknown side.
    """
    trade_id = trade.get("trade_id")
    if not trade_id:
        raise ValueError(f"KITE_TRADE_WITHOUT_ID: {dict(trade)!r}")
    quantity = _int(trade.get("quantity") if "quantity" in trade else trade.get("filled"))
    price = _decimal(trade.get("average_price"))
    if quantity <= 0 or price is None or price <= 0:
        raise ValueError(f"KITE_TRADE_UNUSABLE: trade_id={trade_id} quantity={quantity} {price=}")
    side = Side(str(trade.get("transaction_type")))
    ts_event = (
        kite_timestamp_ns(trade.get("fill_timestamp"))
        or kite_timestamp_ns(trade.get("exchange_timestamp"))
        or kite_timestamp_ns(trade.get("order_timestamp"))
        or now_ns
    )
    return FillReport(
        trade_id=str(trade_id),
        client_order_id=client_order_id,
        broker_order_id=str(trade.get("order_id") or ""),
        instrument=instrument,
        side=side,
        quantity=quantity,
        price=price,
        ts_event=ts_event,
    )


def position_from_kite(position: Mapping[str, Any], instrument: str, now_ns: int) -> PositionReport:
    """A ``PositionReport`` from a line of ``GET /portfolio/positions`` (``net``)."""
    return PositionReport(
        instrument=instrument,
        quantity=_int(position.get("quantity")),
        average_price=_decimal(position.get("average_price")) or Decimal(0),
        ts_event=now_ns,
    )


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _decimal(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def account_is_live(*, is_real_base: bool, profile: object) -> bool:
    """Whether the account behind a session is LIVE (real money, or presented as such).

    Zerodha's own base URL is always LIVE. Elsewhere (the fake) the profile says so in
    ``meta.account_type``; anything but ``"LIVE"`` there, or no profile, is not LIVE.
    """
    if is_real_base:
        return True
    if not isinstance(profile, Mapping):
        return False
    meta = profile.get("meta")
    return isinstance(meta, Mapping) and meta.get("account_type") == "LIVE"


__all__ += ["account_is_live"]


# ---------------------------------------------------------------------------------- errors
_REJECTING_ERROR_TYPES = frozenset(
    {
        "InputException",
        "OrderException",
        "MarginException",
        "HoldingException",
        "UserException",
        "PermissionException",
    }
)


def error_from_response(
    http_status: int,
    body: object,
    *,
    retry_after: str | None = None,
    client_order_id: str | None = None,
    what: str = "request",
) -> BrokerError:
    """The port exception for a Kite error answer (``http_status`` >= 400, or an envelope
    whose ``status`` is ``error``).

    - 429, or ``NetworkException`` "Too many requests": ``BrokerRateLimited`` (Retry-After if
      it is a finite, non-negative number of seconds);
    - 403 or ``TokenException``: ``KiteTokenExpired``;
    - a 4xx with ``InputException``, ``OrderException`` and the like, or any other 4xx:
      ``BrokerRejected`` with Kite's message;
    - 5xx, ``NetworkException``, ``DataException``, ``GeneralException``, or a body that is not
      Kite's envelope on a 5xx: ``BrokerUnavailable`` (the outcome is unknown).
    """
    message, error_type = "", ""
    if isinstance(body, Mapping):
        message = str(body.get("message") or "")
        error_type = str(body.get("error_type") or "")
    detail = f"{what}: http_status={http_status} error_type={error_type or '-'} {message}".strip()
    too_many = "too many requests" in message.lower()
    if http_status == 429 or (error_type == "NetworkException" and too_many):
        return BrokerRateLimited(
            f"KITE_RATE_LIMITED: {detail}",
            client_order_id=client_order_id,
            retry_after_s=_retry_after_s(retry_after),
        )
    if http_status == 403 or error_type == "TokenException":
        return KiteTokenExpired(
            login_instructions(f"KITE_TOKEN_EXPIRED: {detail}"), client_order_id=client_order_id
        )
    if http_status >= 500 or error_type in {
        "NetworkException",
        "DataException",
        "GeneralException",
    }:
        return BrokerUnavailable(f"KITE_UNAVAILABLE: {detail}", client_order_id=client_order_id)
    if error_type in _REJECTING_ERROR_TYPES or 400 <= http_status < 500:
        return BrokerRejected(f"KITE_REJECTED: {detail}", client_order_id=client_order_id)
    # An error envelope with a 2xx status and an unknown type: we cannot tell, so unknown.
    return BrokerUnavailable(f"KITE_UNAVAILABLE: {detail}", client_order_id=client_order_id)


def _retry_after_s(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# ---------------------------------------------------------------------------------- instruments
class KiteInstrument(msgspec.Struct, frozen=True, kw_only=True):
    """One row of Kite's instruments CSV, the fields the adapter uses."""

    instrument_token: int
    exchange: str
    tradingsymbol: str
    lot_size: int
    tick_size: Decimal


def parse_instruments_csv(text: str) -> dict[tuple[str, str], KiteInstrument]:
    """Kite's instruments CSV (``GET /instruments[/<exchange>]``) keyed by (exchange,
    tradingsymbol). Rows with an unusable token, lot size or tick size are skipped.

    Raises:
        ValueError: the header lacks a column the adapter needs.
    """
    reader = csv.DictReader(io.StringIO(text))
    needed = {"instrument_token", "tradingsymbol", "lot_size", "tick_size", "exchange"}
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"KITE_INSTRUMENTS_CSV: missing columns {sorted(missing)}")
    result: dict[tuple[str, str], KiteInstrument] = {}
    for row in reader:
        try:
            token = int(row["instrument_token"])
            lot_size = int(row["lot_size"] or 1)
            tick_size = Decimal(row["tick_size"])
        except (ValueError, InvalidOperation, TypeError):
            continue
        if token <= 0 or lot_size <= 0 or not tick_size.is_finite() or tick_size <= 0:
            continue
        key = (row["exchange"], row["tradingsymbol"])
        result[key] = KiteInstrument(
            instrument_token=token,
            exchange=row["exchange"],
            tradingsymbol=row["tradingsymbol"],
            lot_size=lot_size,
            tick_size=tick_size,
        )
    return result


# ---------------------------------------------------------------------------------- ticker frames
LTP_PACKET_BYTES = 8
INDEX_QUOTE_PACKET_BYTES = 28
INDEX_FULL_PACKET_BYTES = 32
QUOTE_PACKET_BYTES = 44
FULL_PACKET_BYTES = 184
_PACKET_SIZES = frozenset(
    {
        LTP_PACKET_BYTES,
        INDEX_QUOTE_PACKET_BYTES,
        INDEX_FULL_PACKET_BYTES,
        QUOTE_PACKET_BYTES,
        FULL_PACKET_BYTES,
    }
)
# Segment (the token's low byte) -> price divisor: paise for most, finer for currencies.
_SEGMENT_CDS, _SEGMENT_BCD, _SEGMENT_INDICES = 3, 6, 9
_DEPTH_OFFSET = 64
_DEPTH_ENTRY_BYTES = 12
_DEPTH_LEVELS = 5
_MAX_PRICE_UNITS = 2**31 - 1  # a price this large is garbage, not a quote


class Packet(msgspec.Struct, frozen=True, kw_only=True):
    """One decoded ticker packet, prices already divided into rupees."""

    instrument_token: int
    last_price: Decimal
    mode: str  # "ltp", "quote", "full", "index_quote", "index_full"
    volume: int = 0
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_size: int = 0
    ask_size: int = 0
    exchange_ts_s: int | None = None


class ParsedFrame(msgspec.Struct, frozen=True, kw_only=True):
    """What one binary websocket message held."""

    heartbeat: bool = False
    packets: tuple[Packet, ...] = ()
    garbage: int = 0  # packets (or the whole frame) that could not be decoded


__all__ += ["FULL_PACKET_BYTES", "LTP_PACKET_BYTES", "QUOTE_PACKET_BYTES", "Packet"]


def parse_binary_frame(data: bytes) -> ParsedFrame:
    """Decode one binary ticker message: a 1-byte heartbeat, or a uint16 packet count then,
    per packet, a uint16 length and the packet (big-endian).

    Never raises: a frame shorter than its header or its stated lengths, a packet of an
    unknown length, or one with impossible values counts as garbage and yields nothing (the
    good packets before it in the frame are kept).
    """
    if len(data) == 1:
        return ParsedFrame(heartbeat=True)
    if len(data) < 2:
        return ParsedFrame(garbage=1)
    (count,) = struct.unpack_from(">H", data, 0)
    offset = 2
    packets: list[Packet] = []
    garbage = 0
    for _ in range(count):
        if offset + 2 > len(data):
            garbage += 1
            break
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if offset + length > len(data):
            garbage += 1
            break
        packet = _parse_packet(data[offset : offset + length])
        offset += length
        if packet is None:
            garbage += 1
        else:
            packets.append(packet)
    if offset != len(data) and garbage == 0:
        garbage += 1  # trailing bytes the header did not announce
    return ParsedFrame(packets=tuple(packets), garbage=garbage)


def _divisor(token: int) -> int:
    segment = token & 0xFF
    if segment == _SEGMENT_CDS:
        return 10_000_000
    if segment == _SEGMENT_BCD:
        return 10_000
    return 100


def _price(units: int, divisor: int) -> Decimal:
    return Decimal(units) / divisor


def _parse_packet(packet: bytes) -> Packet | None:
    length = len(packet)
    if length not in _PACKET_SIZES:
        return None
    token, last_units = struct.unpack_from(">II", packet, 0)
    if token == 0 or last_units == 0 or last_units > _MAX_PRICE_UNITS:
        return None
    divisor = _divisor(token)
    last = _price(last_units, divisor)
    is_index = token & 0xFF == _SEGMENT_INDICES
    if length == LTP_PACKET_BYTES:
        return Packet(instrument_token=token, last_price=last, mode="ltp")
    if length in (INDEX_QUOTE_PACKET_BYTES, INDEX_FULL_PACKET_BYTES):
        if not is_index:
            return None
        exchange_ts = None
        if length == INDEX_FULL_PACKET_BYTES:
            (exchange_ts,) = struct.unpack_from(">I", packet, 28)
        return Packet(
            instrument_token=token,
            last_price=last,
            mode="index_full" if exchange_ts is not None else "index_quote",
            exchange_ts_s=exchange_ts or None,
        )
    if is_index:
        return None
    (volume,) = struct.unpack_from(">I", packet, 16)
    if length == QUOTE_PACKET_BYTES:
        return Packet(instrument_token=token, last_price=last, mode="quote", volume=volume)
    (exchange_ts,) = struct.unpack_from(">I", packet, 60)
    levels = [
        struct.unpack_from(">IIH", packet, _DEPTH_OFFSET + index * _DEPTH_ENTRY_BYTES)
        for index in range(2 * _DEPTH_LEVELS)
    ]
    bid_quantity, bid_units, _ = levels[0]
    ask_quantity, ask_units, _ = levels[_DEPTH_LEVELS]
    if bid_units > _MAX_PRICE_UNITS or ask_units > _MAX_PRICE_UNITS:
        return None
    return Packet(
        instrument_token=token,
        last_price=last,
        mode="full",
        volume=volume,
        bid=_price(bid_units, divisor) if bid_units else None,
        ask=_price(ask_units, divisor) if ask_units else None,
        bid_size=bid_quantity,
        ask_size=ask_quantity,
        exchange_ts_s=exchange_ts or None,
    )


def packet_to_tick(packet: Packet, instrument: str, *, now_ns: int) -> Tick | None:
    """A ``Tick`` for ``instrument`` from a decoded packet, or None when it has no usable
    two-sided quote (a full packet with an empty side of the book, or a crossed one).

    Bid and ask come from the best depth level of a full packet; LTP, quote and index packets
    have no depth, so their bid and ask are the last price (an index or an LTP-only
    subscription). ``ts_event`` is the exchange timestamp of a full packet, else ``now_ns``.
    """
    if packet.mode == "full":
        if packet.bid is None or packet.ask is None or packet.bid > packet.ask:
            return None
        bid, ask = packet.bid, packet.ask
    else:
        bid = ask = packet.last_price
    ts_event = packet.exchange_ts_s * 1_000_000_000 if packet.exchange_ts_s is not None else now_ns
    return Tick(
        instrument=instrument,
        bid=bid,
        ask=ask,
        last=packet.last_price,
        bid_size=packet.bid_size,
        ask_size=packet.ask_size,
        volume=packet.volume,
        ts_event=ts_event,
        ts_init=now_ns,
    )


def subscribe_messages(tokens: Iterable[int], mode: str) -> list[str]:
    """The two text messages that subscribe ``tokens`` and set their mode."""
    listed = sorted(set(tokens))
    return [
        msgspec.json.encode({"a": "subscribe", "v": listed}).decode(),
        msgspec.json.encode({"a": "mode", "v": [mode, listed]}).decode(),
    ]


__all__ += ["subscribe_messages"]
