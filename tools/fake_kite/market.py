"""The fake Kite's market and order book: instruments, quotes, matching, trades, positions.

Pure bookkeeping, no I/O: the server (``server.py``) holds the lock, calls in here and sends
what comes back (order updates for postbacks, quotes for the ticker).

Quotes come from the engine's own seeded random walk (``adapters.feeds.synthetic``), one step
per ``KiteMarket.step``; positions use the paper venue's ``update_position`` (net quantity,
average price of the open quantity). The matching itself is written here rather than reused
from ``adapters/brokers/paper``: Kite's order model differs from the paper venue's (SL is a
stop-LIMIT, SL-M a stop-market triggered on the last price; a modify changes price, trigger
and type as well as quantity; IOC; statuses are Kite's), and the paper venue's latency/ack
machinery has no Kite counterpart.

Matching rules (one pass at placement and one per market step):
- MARKET fills at the touch (buy at the ask, sell at the bid).
- LIMIT fills when crossed (buy: ask <= price; sell: bid >= price) at the touch if it was
  marketable when placed (or modified), else at its limit price.
- SL / SL-M trigger on the last price (buy: last >= trigger; sell: last <= trigger), as Kite
  does; status ``TRIGGER PENDING`` until then. A triggered SL-M fills like a MARKET order, a
  triggered SL like a LIMIT at its ``price``.
- ``partial_fill_quantity`` caps one pass's fill per order (the rest waits for later passes).
- IOC: whatever the placing pass did not fill is cancelled.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from adapters.brokers.paper.venue import VenuePosition, update_position
from adapters.feeds.synthetic import SyntheticMarket
from domain.config import FeedConfig
from domain.enums import Side
from domain.instruments import Instrument
from domain.messages import Tick

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "INSTRUMENTS_CSV_HEADER",
    "IST",
    "KiteInstrument",
    "KiteMarket",
    "KiteOrder",
    "KiteTrade",
    "MarketView",
    "OrderInputError",
    "OrderStateError",
    "kite_timestamp",
    "to_paise",
]

IST = ZoneInfo("Asia/Kolkata")
INSTRUMENTS_CSV_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    "lot_size,instrument_type,segment,exchange"
)
_PAISE = Decimal(100)
_ZERO = Decimal(0)
_DEPTH_LEVELS = 5

ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("MIS", "CNC", "NRML")
VALIDITIES = ("DAY", "IOC")
TRANSACTION_TYPES = ("BUY", "SELL")
MAX_MODIFICATIONS = 25  # Kite allows 25 modifications of one order
TERMINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})


def kite_timestamp(now_ns: int) -> str:
    """Return ``now_ns`` as Kite writes times: IST, ``YYYY-MM-DD HH:MM:SS``."""
    moment = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).astimezone(IST)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class OrderInputError(Exception):
    """A request Kite refuses with an ``InputException`` (HTTP 400); nothing changed."""


class OrderStateError(Exception):
    """A modify or cancel of an order that cannot take it (``InputException``, 400)."""


@dataclass(frozen=True, kw_only=True)
class KiteInstrument:
    """One instrument of the fake's instrument list.

    Attributes:
        instrument_token: Kite's token; its low byte is the segment (1 NSE, 9 indices, ...),
            which KiteTicker reads to pick the price divisor and the ``tradable`` flag.
        exchange: ``NSE``, ``NFO``, ...
        tradingsymbol: the exchange's symbol, e.g. ``INFY``.
        name: the company or index name of the CSV.
        segment: the CSV's segment (``NSE``, ``INDICES``, ``NFO-FUT``).
        instrument_type: ``EQ``, ``FUT`` or ``INDEX`` (an index is quoted, never traded).
        lot_size, tick_size, reference_price, price_band_pct, freeze_quantity: as the
            engine's ``domain.instruments.Instrument``; ``reference_price`` is the previous
            close (the quote's ``ohlc.close``) and where the seeded walk starts.
        expiry: ``YYYY-MM-DD`` for a future, empty otherwise.
    """

    instrument_token: int
    exchange: str
    tradingsymbol: str
    name: str = ""
    segment: str = "NSE"
    instrument_type: str = "EQ"
    lot_size: int = 1
    tick_size: Decimal = Decimal("0.05")
    reference_price: Decimal = Decimal("100")
    price_band_pct: Decimal = Decimal("10")
    freeze_quantity: int = 100_000
    expiry: str = ""

    @property
    def key(self) -> str:
        """``EXCHANGE:TRADINGSYMBOL``, the form ``/quote?i=`` takes."""
        return f"{self.exchange}:{self.tradingsymbol}"

    @property
    def exchange_token(self) -> int:
        return self.instrument_token >> 8

    @property
    def is_index(self) -> bool:
        return self.instrument_type == "INDEX"

    def as_engine_instrument(self) -> Instrument:
        return Instrument(
            symbol=self.key,
            lot_size=self.lot_size,
            tick_size=self.tick_size,
            freeze_quantity=self.freeze_quantity,
            price_band_pct=self.price_band_pct,
            reference_price=self.reference_price,
            max_spread_ticks=10,
        )


# Real tokens (exchange_token << 8 | segment), so KiteTicker classifies them as Kite would.
DEFAULT_INSTRUMENTS: tuple[KiteInstrument, ...] = (
    KiteInstrument(
        instrument_token=408065,
        exchange="NSE",
        tradingsymbol="INFY",
        name="INFOSYS",
        reference_price=Decimal("1800"),
    ),
    KiteInstrument(
        instrument_token=738561,
        exchange="NSE",
        tradingsymbol="RELIANCE",
        name="RELIANCE INDUSTRIES",
        reference_price=Decimal("2900"),
    ),
    KiteInstrument(
        instrument_token=779521,
        exchange="NSE",
        tradingsymbol="SBIN",
        name="STATE BANK OF INDIA",
        reference_price=Decimal("800"),
    ),
    KiteInstrument(
        instrument_token=256265,
        exchange="NSE",
        tradingsymbol="NIFTY 50",
        name="NIFTY 50",
        segment="INDICES",
        instrument_type="INDEX",
        tick_size=Decimal("0.05"),
        reference_price=Decimal("24000"),
    ),
)


@dataclass(kw_only=True)
class KiteOrder:
    """One order as the fake keeps it; ``as_kite()`` gives Kite's field names."""

    order_id: str
    exchange_order_id: str | None
    instrument: KiteInstrument
    transaction_type: str
    order_type: str
    product: str
    validity: str
    quantity: int
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    placed_by: str
    status: str = "OPEN"
    status_message: str | None = None
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    average_price: Decimal = _ZERO
    is_triggered: bool = False
    modified: bool = False
    modification_count: int = 0
    order_timestamp: str = ""
    exchange_timestamp: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending_quantity(self) -> int:
        if self.status in TERMINAL_STATUSES:
            return 0
        return self.quantity - self.filled_quantity

    @property
    def side(self) -> Side:
        return Side.BUY if self.transaction_type == "BUY" else Side.SELL

    def as_kite(self) -> dict[str, Any]:
        return {
            "placed_by": self.placed_by,
            "order_id": self.order_id,
            "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None,
            "status": self.status,
            "status_message": self.status_message,
            "status_message_raw": self.status_message,
            "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_timestamp,
            "exchange_timestamp": self.exchange_timestamp,
            "variety": "regular",
            "modified": self.modified,
            "exchange": self.instrument.exchange,
            "tradingsymbol": self.instrument.tradingsymbol,
            "instrument_token": self.instrument.instrument_token,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "validity_ttl": 0,
            "product": self.product,
            "quantity": self.quantity,
            "disclosed_quantity": 0,
            "price": float(self.price),
            "trigger_price": float(self.trigger_price),
            "average_price": float(self.average_price),
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": float(self.market_protection),
            "meta": {},
            "tag": self.tag,
            "tags": [self.tag] if self.tag else [],
            "guid": f"fake-{self.order_id}",
        }


@dataclass(frozen=True, kw_only=True)
class KiteTrade:
    """One fill; ``as_kite()`` gives Kite's field names."""

    trade_id: str
    order: KiteOrder
    quantity: int
    price: Decimal
    fill_timestamp: str

    def as_kite(self) -> dict[str, Any]:
        instrument = self.order.instrument
        return {
            "trade_id": self.trade_id,
            "order_id": self.order.order_id,
            "exchange_order_id": self.order.exchange_order_id,
            "tradingsymbol": instrument.tradingsymbol,
            "exchange": instrument.exchange,
            "instrument_token": instrument.instrument_token,
            "transaction_type": self.order.transaction_type,
            "product": self.order.product,
            "average_price": float(self.price),
            "quantity": self.quantity,
            "fill_timestamp": self.fill_timestamp,
            "order_timestamp": self.fill_timestamp,
            "exchange_timestamp": self.fill_timestamp,
        }


@dataclass
class _Day:
    """Session statistics of one instrument (the quote's OHLC, volume, VWAP)."""

    open: Decimal
    high: Decimal
    low: Decimal
    volume: int = 0
    notional: Decimal = _ZERO
    last_quantity: int = 0
    last_trade_ns: int = 0

    def add(self, tick: Tick) -> None:
        self.high = max(self.high, tick.last)
        self.low = min(self.low, tick.last)
        self.volume += tick.volume
        self.notional += tick.last * tick.volume
        self.last_quantity = tick.volume
        self.last_trade_ns = tick.ts_event

    @property
    def average_price(self) -> Decimal:
        if self.volume == 0:
            return self.open
        return (self.notional / self.volume).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, kw_only=True)
class DepthLevel:
    price: Decimal
    quantity: int
    orders: int

    def as_kite(self) -> dict[str, Any]:
        return {"price": float(self.price), "quantity": self.quantity, "orders": self.orders}


@dataclass(frozen=True, kw_only=True)
class MarketView:
    """Everything the quote endpoint and the ticker say about one instrument, at one step.

    Prices in rupees (``Decimal``); the ticker writes them in paise.
    """

    instrument: KiteInstrument
    last_price: Decimal
    last_quantity: int
    average_price: Decimal
    volume: int
    buy_quantity: int
    sell_quantity: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    last_trade_ns: int
    timestamp_ns: int
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]

    @property
    def net_change(self) -> Decimal:
        return self.last_price - self.close

    def as_quote(self) -> dict[str, Any]:
        """The ``GET /quote`` entry, with Kite's field names."""
        lower, upper = self.instrument.as_engine_instrument().band()
        return {
            "instrument_token": self.instrument.instrument_token,
            "timestamp": kite_timestamp(self.timestamp_ns),
            "last_trade_time": kite_timestamp(self.last_trade_ns),
            "last_price": float(self.last_price),
            "last_quantity": self.last_quantity,
            "buy_quantity": self.buy_quantity,
            "sell_quantity": self.sell_quantity,
            "volume": self.volume,
            "average_price": float(self.average_price),
            "oi": 0,
            "oi_day_high": 0,
            "oi_day_low": 0,
            "net_change": float(self.net_change),
            "lower_circuit_limit": float(lower),
            "upper_circuit_limit": float(upper),
            "ohlc": {
                "open": float(self.open),
                "high": float(self.high),
                "low": float(self.low),
                "close": float(self.close),
            },
            "depth": {
                "buy": [level.as_kite() for level in self.bids],
                "sell": [level.as_kite() for level in self.asks],
            },
        }


@dataclass
class _PositionBook:
    instrument: KiteInstrument
    product: str
    net: VenuePosition
    buy_quantity: int = 0
    buy_value: Decimal = _ZERO
    sell_quantity: int = 0
    sell_value: Decimal = _ZERO


class KiteMarket:
    """The fake's market state. Not thread-safe: the server serialises every call.

    Args:
        instruments: the instrument list (tokens unique, keys unique).
        seed: seed of the random walk; same seed and same calls, same prices.
        volatility_bps: the walk's per-step standard deviation in basis points.
        user_id: ``placed_by`` of every order.
        now_ns: the time of the opening quotes.
    """

    def __init__(
        self,
        instruments: Sequence[KiteInstrument],
        *,
        seed: int,
        volatility_bps: float,
        user_id: str,
        now_ns: int,
    ) -> None:
        self.instruments: dict[str, KiteInstrument] = {item.key: item for item in instruments}
        if len(self.instruments) != len(instruments):
            raise ValueError("fake kite: duplicate EXCHANGE:TRADINGSYMBOL in the instrument list")
        self.by_token: dict[int, KiteInstrument] = {
            item.instrument_token: item for item in instruments
        }
        if len(self.by_token) != len(instruments):
            raise ValueError("fake kite: duplicate instrument_token in the instrument list")
        self.user_id = user_id
        self._walk = SyntheticMarket(
            [item.as_engine_instrument() for item in instruments],
            FeedConfig(
                seed=seed,
                volatility_bps=volatility_bps,
                spread_blowout_probability=0.0,
                band_hit_probability=0.0,
            ),
        )
        self.ticks: dict[str, Tick] = {}
        self._days: dict[str, _Day] = {}
        self.orders: dict[str, KiteOrder] = {}
        self.trades: list[KiteTrade] = []
        self._positions: dict[tuple[str, str], _PositionBook] = {}
        self._order_seq = itertools.count(1)
        self._trade_seq = itertools.count(1)
        self.partial_fill_quantity: int | None = None
        self._outbox: list[dict[str, Any]] = []
        self.now_ns = now_ns
        self.step(now_ns)

    # -----------------------------------------------------------------------------------------
    # MARKET
    # -----------------------------------------------------------------------------------------

    def step(self, now_ns: int) -> None:
        """Move every instrument one step, then give each working order a matching chance."""
        self.now_ns = now_ns
        for tick in self._walk.next_ticks(now_ns):
            self.ticks[tick.instrument] = tick
            day = self._days.get(tick.instrument)
            if day is None:
                day = self._days[tick.instrument] = _Day(
                    open=tick.last, high=tick.last, low=tick.last
                )
            day.add(tick)
        for order in list(self.orders.values()):
            if order.status not in TERMINAL_STATUSES:
                self._match(order)

    def drain_updates(self) -> list[dict[str, Any]]:
        """The postbacks recorded since the last call, in order: one per status change, fill
        or modify. Each is the order's fields (as ``GET /orders``) plus ``user_id``,
        ``unfilled_quantity``, ``app_id`` and ``checksum`` (empty, as over the websocket);
        ``status`` is ``UPDATE`` for a modify and for a fill that leaves quantity open (the
        order book says ``OPEN`` then)."""
        updates, self._outbox = self._outbox, []
        return updates

    def view(self, instrument: KiteInstrument) -> MarketView:
        """The instrument's quote, OHLC and 5+5 depth now (depth sizes derive from the touch)."""
        tick = self.ticks[instrument.key]
        day = self._days[instrument.key]
        tick_size = instrument.tick_size
        bids = tuple(
            DepthLevel(
                price=tick.bid - tick_size * level,
                quantity=tick.bid_size * (level + 1),
                orders=level + 1,
            )
            for level in range(_DEPTH_LEVELS)
        )
        asks = tuple(
            DepthLevel(
                price=tick.ask + tick_size * level,
                quantity=tick.ask_size * (level + 1),
                orders=level + 1,
            )
            for level in range(_DEPTH_LEVELS)
        )
        if instrument.is_index:  # an index has no book
            bids = asks = ()
        return MarketView(
            instrument=instrument,
            last_price=tick.last,
            last_quantity=0 if instrument.is_index else day.last_quantity,
            average_price=_ZERO if instrument.is_index else day.average_price,
            volume=0 if instrument.is_index else day.volume,
            buy_quantity=sum(level.quantity for level in bids),
            sell_quantity=sum(level.quantity for level in asks),
            open=day.open,
            high=day.high,
            low=day.low,
            close=instrument.reference_price,
            last_trade_ns=day.last_trade_ns,
            timestamp_ns=self.now_ns,
            bids=bids,
            asks=asks,
        )

    # -----------------------------------------------------------------------------------------
    # ORDERS
    # -----------------------------------------------------------------------------------------

    def place(self, fields: dict[str, str], *, reject_reason: str | None = None) -> KiteOrder:
        """Validate and place a regular order and return it (postbacks: ``drain_updates``).

        ``reject_reason`` makes the order REJECTED with that ``status_message`` (an RMS
        rejection: the call itself succeeds, as on Kite).

        Raises:
            OrderInputError: a missing or bad field; nothing changed.
        """
        instrument = self._instrument(fields)
        transaction_type = _choice(fields, "transaction_type", TRANSACTION_TYPES)
        order_type = _choice(fields, "order_type", ORDER_TYPES)
        product = _choice(fields, "product", PRODUCTS)
        validity = _choice(fields, "validity", VALIDITIES, default="DAY")
        quantity = _positive_int(fields, "quantity")
        price = _price(fields, "price", instrument, required=order_type in ("LIMIT", "SL"))
        trigger_price = _price(
            fields, "trigger_price", instrument, required=order_type in ("SL", "SL-M")
        )
        market_protection = _decimal(fields, "market_protection", default=_ZERO)
        if order_type in ("MARKET", "SL-M") and market_protection == 0:
            raise OrderInputError(
                "Market protection is required for MARKET and SL-M orders: "
                "`market_protection` must be non-zero (-1 for automatic, or a percentage)."
            )
        if market_protection != -1 and not 0 <= market_protection <= 100:
            raise OrderInputError("`market_protection` must be -1 or between 0 and 100.")
        tag = fields.get("tag") or None
        if tag is not None and (len(tag) > 20 or not tag.isalnum() or not tag.isascii()):
            raise OrderInputError("`tag` must be alphanumeric and at most 20 characters.")
        if instrument.is_index:
            raise OrderInputError(f"Instrument {instrument.key} is an index and not tradable.")
        if quantity % instrument.lot_size != 0:
            raise OrderInputError(
                f"Quantity should be a multiple of the lot size {instrument.lot_size}."
            )
        seq = next(self._order_seq)
        stamp = kite_timestamp(self.now_ns)
        order = KiteOrder(
            order_id=f"{_order_day(self.now_ns)}{seq:09d}",
            exchange_order_id=None,
            instrument=instrument,
            transaction_type=transaction_type,
            order_type=order_type,
            product=product,
            validity=validity,
            quantity=quantity,
            price=price,
            trigger_price=trigger_price,
            market_protection=market_protection,
            tag=tag,
            placed_by=self.user_id,
            order_timestamp=stamp,
        )
        self.orders[order.order_id] = order
        if reject_reason is None and quantity > instrument.freeze_quantity:
            reject_reason = (
                f"Quantity {quantity} exceeds the freeze quantity {instrument.freeze_quantity}."
            )
        if reject_reason is not None:
            order.status = "REJECTED"
            order.status_message = reject_reason
            order.cancelled_quantity = 0
            self._record(order)
            return order
        order.exchange_order_id = f"1100000000{seq:06d}"
        order.exchange_timestamp = stamp
        order.status = "TRIGGER PENDING" if order_type in ("SL", "SL-M") else "OPEN"
        self._record(order)
        self._match(order, is_taker=True)
        if order.validity == "IOC" and order.status not in TERMINAL_STATUSES:
            self._cancel_rest(order, "IOC order: unfilled quantity cancelled.")
        return order

    def modify(self, order_id: str, fields: dict[str, str]) -> KiteOrder:
        """Change quantity, price, trigger_price or order_type of a working order.

        Raises:
            OrderStateError: unknown or terminal order; nothing changed.
            OrderInputError: a bad field; nothing changed.
        """
        order = self._working(order_id, "modified")
        if order.modification_count >= MAX_MODIFICATIONS:
            raise OrderInputError(
                f"Maximum allowed order modifications ({MAX_MODIFICATIONS}) exceeded "
                f"for order {order_id}."
            )
        order_type = _choice(fields, "order_type", ORDER_TYPES, default=order.order_type)
        quantity = _positive_int(fields, "quantity") if fields.get("quantity") else order.quantity
        if quantity % order.instrument.lot_size != 0 or quantity <= order.filled_quantity:
            raise OrderInputError(
                f"Quantity {quantity} must be a multiple of the lot size "
                f"{order.instrument.lot_size} and above the filled {order.filled_quantity}."
            )
        price = (
            _price(fields, "price", order.instrument, required=True)
            if fields.get("price")
            else order.price
        )
        trigger_price = (
            _price(fields, "trigger_price", order.instrument, required=True)
            if fields.get("trigger_price")
            else order.trigger_price
        )
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise OrderInputError(f"`price` is required for a {order_type} order.")
        if order_type in ("SL", "SL-M") and trigger_price <= 0:
            raise OrderInputError(f"`trigger_price` is required for a {order_type} order.")
        order.order_type = order_type
        order.quantity = quantity
        order.price = price
        order.trigger_price = trigger_price
        order.modified = True
        order.modification_count += 1
        if order_type in ("MARKET", "LIMIT"):
            order.is_triggered = False
            order.status = "OPEN"
        elif not order.is_triggered:
            order.status = "TRIGGER PENDING"
        self._record(order, postback_status="UPDATE")
        self._match(order, is_taker=True)
        return order

    def cancel(self, order_id: str) -> KiteOrder:
        """Cancel a working order (its unfilled quantity).

        Raises:
            OrderStateError: unknown or terminal order; nothing changed.
        """
        order = self._working(order_id, "cancelled")
        self._cancel_rest(order, None)
        return order

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        """``GET /portfolio/positions``: net and day (the same here: the fake has one day)."""
        rows = [self._position_row(book) for book in self._positions.values()]
        return {"net": rows, "day": [dict(row) for row in rows]}

    def order_trades(self, order_id: str) -> list[KiteTrade]:
        return [trade for trade in self.trades if trade.order.order_id == order_id]

    # -----------------------------------------------------------------------------------------
    # MATCHING
    # -----------------------------------------------------------------------------------------

    def _match(self, order: KiteOrder, *, is_taker: bool = False) -> None:
        # is_taker: the order was marketable when it arrived (placed, modified or just
        # triggered), so a crossed limit fills at the touch; a resting one at its price.
        tick = self.ticks[order.instrument.key]
        if order.order_type in ("SL", "SL-M") and not order.is_triggered:
            touched = (
                tick.last >= order.trigger_price
                if order.side is Side.BUY
                else tick.last <= order.trigger_price
            )
            if not touched:
                return
            order.is_triggered = True
            order.status = "OPEN"
            is_taker = True
            self._record(order)
        touch = tick.ask if order.side is Side.BUY else tick.bid
        if touch <= 0:
            return
        if order.order_type in ("LIMIT", "SL"):
            crossed = touch <= order.price if order.side is Side.BUY else touch >= order.price
            if not crossed:
                return
            price = touch if is_taker else order.price
        else:
            price = touch
        quantity = order.quantity - order.filled_quantity
        if self.partial_fill_quantity is not None:
            quantity = min(quantity, self.partial_fill_quantity)
        self._fill(order, quantity, price)

    def _fill(self, order: KiteOrder, quantity: int, price: Decimal) -> None:
        filled = order.filled_quantity + quantity
        order.average_price = (
            (order.average_price * order.filled_quantity + price * quantity) / filled
        ).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        order.filled_quantity = filled
        stamp = kite_timestamp(self.now_ns)
        order.exchange_timestamp = stamp
        if filled >= order.quantity:
            order.status = "COMPLETE"
        self.trades.append(
            KiteTrade(
                trade_id=f"{next(self._trade_seq):08d}",
                order=order,
                quantity=quantity,
                price=price,
                fill_timestamp=stamp,
            )
        )
        key = (order.instrument.key, order.product)
        book = self._positions.get(key)
        if book is None:
            book = self._positions[key] = _PositionBook(
                instrument=order.instrument,
                product=order.product,
                net=VenuePosition(instrument=order.instrument.key),
            )
        book.net = update_position(book.net, order.side, quantity, price, now_ns=self.now_ns)
        if order.side is Side.BUY:
            book.buy_quantity += quantity
            book.buy_value += price * quantity
        else:
            book.sell_quantity += quantity
            book.sell_value += price * quantity
        # The order book says OPEN while a partial fill rests; its postback says UPDATE.
        self._record(order, postback_status=None if order.status == "COMPLETE" else "UPDATE")

    def _cancel_rest(self, order: KiteOrder, message: str | None) -> None:
        order.cancelled_quantity = order.quantity - order.filled_quantity
        order.status = "CANCELLED"
        order.status_message = message
        order.exchange_timestamp = kite_timestamp(self.now_ns)
        self._record(order)

    def _record(self, order: KiteOrder, *, postback_status: str | None = None) -> None:
        state = order.as_kite()
        order.history.append(state)
        # A postback is the order's fields plus a few of its own (user_id, the legacy
        # unfilled_quantity, app_id, checksum: empty over the websocket).
        postback = {
            **state,
            "user_id": self.user_id,
            "unfilled_quantity": state["pending_quantity"],
            "app_id": 0,
            "checksum": "",
        }
        if postback_status is not None:
            postback["status"] = postback_status
        self._outbox.append(postback)

    # -----------------------------------------------------------------------------------------
    # HELPERS
    # -----------------------------------------------------------------------------------------

    def _instrument(self, fields: dict[str, str]) -> KiteInstrument:
        exchange = fields.get("exchange", "")
        tradingsymbol = fields.get("tradingsymbol", "")
        if not exchange:
            raise OrderInputError("Missing `exchange`.")
        if not tradingsymbol:
            raise OrderInputError("Missing `tradingsymbol`.")
        instrument = self.instruments.get(f"{exchange}:{tradingsymbol}")
        if instrument is None:
            raise OrderInputError(f"Invalid `tradingsymbol` {exchange}:{tradingsymbol}.")
        return instrument

    def _working(self, order_id: str, verb: str) -> KiteOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise OrderStateError(f"Couldn't find that `order_id` ({order_id}).")
        if order.status in TERMINAL_STATUSES:
            raise OrderStateError(
                f"Order {order_id} cannot be {verb}: its status is {order.status}."
            )
        return order

    def _position_row(self, book: _PositionBook) -> dict[str, Any]:
        last = self.ticks[book.instrument.key].last
        quantity = book.net.quantity
        pnl = book.sell_value - book.buy_value + quantity * last
        unrealised = (last - book.net.average_price) * quantity if quantity else _ZERO
        return {
            "tradingsymbol": book.instrument.tradingsymbol,
            "exchange": book.instrument.exchange,
            "instrument_token": book.instrument.instrument_token,
            "product": book.product,
            "quantity": quantity,
            "overnight_quantity": 0,
            "multiplier": 1,
            "average_price": float(book.net.average_price),
            "close_price": float(book.instrument.reference_price),
            "last_price": float(last),
            "value": float(book.sell_value - book.buy_value),
            "pnl": float(pnl),
            "m2m": float(pnl),
            "unrealised": float(unrealised),
            "realised": float(book.net.realized_pnl),
            "buy_quantity": book.buy_quantity,
            "buy_price": float(_average(book.buy_value, book.buy_quantity)),
            "buy_value": float(book.buy_value),
            "sell_quantity": book.sell_quantity,
            "sell_price": float(_average(book.sell_value, book.sell_quantity)),
            "sell_value": float(book.sell_value),
            "day_buy_quantity": book.buy_quantity,
            "day_buy_price": float(_average(book.buy_value, book.buy_quantity)),
            "day_buy_value": float(book.buy_value),
            "day_sell_quantity": book.sell_quantity,
            "day_sell_price": float(_average(book.sell_value, book.sell_quantity)),
            "day_sell_value": float(book.sell_value),
        }


def _average(value: Decimal, quantity: int) -> Decimal:
    if quantity == 0:
        return _ZERO
    return (value / quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def _order_day(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns / 1e9, tz=UTC).astimezone(IST).strftime("%y%m%d")


def _choice(
    fields: dict[str, str], name: str, allowed: Sequence[str], *, default: str | None = None
) -> str:
    value = fields.get(name) or default
    if value is None:
        raise OrderInputError(f"Missing `{name}`.")
    if value not in allowed:
        raise OrderInputError(f"Invalid `{name}` {value!r}: one of {', '.join(allowed)}.")
    return value


def _positive_int(fields: dict[str, str], name: str) -> int:
    raw = fields.get(name)
    if not raw:
        raise OrderInputError(f"Missing `{name}`.")
    try:
        value = int(raw)
    except ValueError:
        raise OrderInputError(f"Invalid `{name}` {raw!r}: a whole number.") from None
    if value <= 0:
        raise OrderInputError(f"Invalid `{name}` {value}: must be positive.")
    return value


def _decimal(fields: dict[str, str], name: str, *, default: Decimal) -> Decimal:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise OrderInputError(f"Invalid `{name}` {raw!r}: a number.") from None
    if not value.is_finite():
        raise OrderInputError(f"Invalid `{name}` {raw!r}: a finite number.")
    return value


def _price(
    fields: dict[str, str], name: str, instrument: KiteInstrument, *, required: bool
) -> Decimal:
    value = _decimal(fields, name, default=_ZERO)
    if value < 0:
        raise OrderInputError(f"Invalid `{name}` {value}: must not be negative.")
    if required and value == 0:
        raise OrderInputError(f"Missing `{name}`.")
    if value and value % instrument.tick_size != 0:
        raise OrderInputError(
            f"Invalid `{name}` {value}: not a multiple of the tick size {instrument.tick_size}."
        )
    return value


def to_paise(price: Decimal) -> int:
    """Rupees to the ticker's integer paise."""
    return int((price * _PAISE).to_integral_value(rounding=ROUND_HALF_EVEN))
