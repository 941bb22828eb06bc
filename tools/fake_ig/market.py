"""The fake IG's market and books: seeded quotes, OTC positions with broker-side stop and limit,
working orders, deal confirmations and the activity history.

Pure state, no I/O: ``FakeIG`` (server.py) holds one ``IgMarket`` behind its lock and turns what
the methods return into REST answers and TRADE-stream updates. Prices are ``Decimal``; the walk
is a seeded ``random.Random`` so a seed gives the same quotes every run.

Matching rules (what IG does, simplified):
- A MARKET deal fills at once: BUY at the offer, SELL at the bid. A LIMIT deal (``level``) fills
  only if the market is at or better than ``level`` now, else it is rejected (IG's "fill or
  kill" for OTC limit deals).
- The stop and the limit live ON the position. A BUY position closes at the bid when the bid
  falls to its stop or rises to its limit; a SELL position closes at the offer when the offer
  rises to its stop or falls to its limit. Checked at every price change.
- A working order (``LIMIT`` or ``STOP`` type, GOOD_TILL_CANCELLED) opens a position when the
  market reaches its level, with its stop/limit distances attached.
- Closing (``close``) sells/buys ``size`` of the position at the current bid/offer; a partial
  close leaves the rest open.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "DEAL_REFERENCE",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_INSTRUMENTS",
    "DealRejected",
    "IgAccount",
    "IgInstrument",
    "IgMarket",
    "Position",
    "Quote",
    "RequestInvalid",
    "TradeEvent",
    "WorkingOrder",
    "ig_time",
]

DEAL_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,30}")
_NS = 1_000_000_000


class RequestInvalid(Exception):
    """A request IG refuses outright (HTTP 400 with this ``errorCode``); nothing changes."""

    def __init__(self, error_code: str, status: int = 400) -> None:
        super().__init__(error_code)
        self.error_code = error_code
        self.status = status


class DealRejected(Exception):
    """A deal IG accepts for processing but rejects: the confirm says REJECTED, ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class IgInstrument:
    """One IG market (an OTC CFD or spread bet on an index or FX pair)."""

    epic: str
    name: str
    bid: Decimal
    spread: Decimal
    currency: str = "GBP"
    min_deal_size: Decimal = Decimal("0.5")
    min_stop_distance: Decimal = Decimal("4")
    instrument_type: str = "INDICES"
    tick: Decimal = Decimal("0.1")


@dataclass(frozen=True, kw_only=True)
class IgAccount:
    """One account of the login; ``account_type`` is CFD, SPREADBET or PHYSICAL."""

    account_id: str
    account_name: str
    account_type: str = "CFD"
    currency: str = "GBP"
    preferred: bool = False
    balance: Decimal = Decimal("10000")


DEFAULT_INSTRUMENTS: tuple[IgInstrument, ...] = (
    IgInstrument(epic="IX.D.FTSE.DAILY.IP", name="FTSE 100", bid=Decimal("7500.0"),
                 spread=Decimal("1.0")),
    IgInstrument(epic="IX.D.DAX.DAILY.IP", name="Germany 40", bid=Decimal("16000.0"),
                 spread=Decimal("1.2"), currency="EUR", min_stop_distance=Decimal("6")),
    IgInstrument(epic="CS.D.GBPUSD.TODAY.IP", name="GBP/USD", bid=Decimal("12650.0"),
                 spread=Decimal("0.9"), currency="USD", instrument_type="CURRENCIES",
                 min_stop_distance=Decimal("2")),
)  # fmt: skip

DEFAULT_ACCOUNTS: tuple[IgAccount, ...] = (
    IgAccount(account_id="ABC123", account_name="CFD", account_type="CFD", preferred=True),
    IgAccount(account_id="XYZ789", account_name="Spread bet", account_type="SPREADBET"),
)


def ig_time(now_ns: int) -> str:
    """IG's ``yyyy-MM-ddTHH:mm:ss.SSS`` (UTC)."""
    moment = datetime.fromtimestamp(now_ns / _NS, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@dataclass
class Quote:
    bid: Decimal
    offer: Decimal
    high: Decimal
    low: Decimal
    open: Decimal
    update_ns: int
    market_status: str = "TRADEABLE"


@dataclass
class Position:
    deal_id: str
    deal_reference: str
    account_id: str
    epic: str
    direction: str
    size: Decimal
    level: Decimal
    currency: str
    stop_level: Decimal | None
    limit_level: Decimal | None
    guaranteed_stop: bool
    created_ns: int

    def as_ig(self) -> dict[str, Any]:
        """The ``position`` object of ``GET /positions`` v2."""
        return {
            "contractSize": 1.0,
            "createdDate": ig_time(self.created_ns).replace("T", " ")[:19].replace("-", "/"),
            "createdDateUTC": ig_time(self.created_ns)[:19],
            "dealId": self.deal_id,
            "dealReference": self.deal_reference,
            "size": float(self.size),
            "direction": self.direction,
            "limitLevel": _f(self.limit_level),
            "level": float(self.level),
            "currency": self.currency,
            "controlledRisk": self.guaranteed_stop,
            "stopLevel": _f(self.stop_level),
            "trailingStep": None,
            "trailingStopDistance": None,
            "limitedRiskPremium": None,
        }


@dataclass
class WorkingOrder:
    deal_id: str
    deal_reference: str
    account_id: str
    epic: str
    direction: str
    size: Decimal
    level: Decimal
    order_type: str  # LIMIT or STOP
    currency: str
    stop_distance: Decimal | None
    limit_distance: Decimal | None
    guaranteed_stop: bool
    created_ns: int

    def as_ig(self) -> dict[str, Any]:
        return {
            "dealId": self.deal_id,
            "direction": self.direction,
            "epic": self.epic,
            "orderSize": float(self.size),
            "orderLevel": float(self.level),
            "timeInForce": "GOOD_TILL_CANCELLED",
            "goodTillDate": None,
            "goodTillDateISO": None,
            "createdDate": ig_time(self.created_ns).replace("T", " ")[:19].replace("-", "/"),
            "createdDateUTC": ig_time(self.created_ns)[:19],
            "guaranteedStop": self.guaranteed_stop,
            "orderType": self.order_type,
            "stopDistance": _f(self.stop_distance),
            "limitDistance": _f(self.limit_distance),
            "currencyCode": self.currency,
            "dma": False,
            "limitedRiskPremium": None,
            "dealReference": self.deal_reference,
        }


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _decimal(body: dict[str, Any], name: str, *, required: bool = False) -> Decimal | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise RequestInvalid(f"validation.null-not-allowed.request.{name}")
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise RequestInvalid(f"validation.invalid.request.{name}") from None
    if not number.is_finite():
        raise RequestInvalid(f"validation.invalid.request.{name}")
    return number


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


@dataclass
class TradeEvent:
    """One update for the TRADE stream of ``account_id``: ``field`` is CONFIRMS, OPU or WOU."""

    account_id: str
    field: str
    payload: dict[str, Any]


@dataclass
class IgMarket:
    """Quotes, books and confirms of every account of one login (see the module docstring)."""

    instruments: tuple[IgInstrument, ...]
    accounts: tuple[IgAccount, ...]
    seed: int
    now_ns: int
    volatility_bps: float = 2.0
    quotes: dict[str, Quote] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    working_orders: dict[str, WorkingOrder] = field(default_factory=dict)
    confirms: dict[str, dict[str, Any]] = field(default_factory=dict)
    activity: list[dict[str, Any]] = field(default_factory=list)
    events: list[TradeEvent] = field(default_factory=list)
    reject_reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._next_id = 1
        self._by_epic = {instrument.epic: instrument for instrument in self.instruments}
        for instrument in self.instruments:
            offer = instrument.bid + instrument.spread
            self.quotes[instrument.epic] = Quote(
                bid=instrument.bid, offer=offer, high=offer, low=instrument.bid,
                open=instrument.bid, update_ns=self.now_ns,
            )  # fmt: skip

    # --- lookups -----------------------------------------------------------------------------

    def instrument(self, epic: str) -> IgInstrument:
        try:
            return self._by_epic[epic]
        except KeyError:
            raise RequestInvalid(
                "error.service.marketdata.instrument.epic.unavailable", 404
            ) from None

    def account(self, account_id: str) -> IgAccount | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def market_details(self, epic: str) -> dict[str, Any]:
        """``GET /markets/{epic}`` v3: instrument, dealingRules, snapshot."""
        instrument = self.instrument(epic)
        self.quotes[epic]
        return {
            "instrument": {
                "epic": epic,
                "expiry": "-",
                "name": instrument.name,
                "type": instrument.instrument_type,
                "lotSize": 1.0,
                "unit": "AMOUNT",
                "currencies": [
                    {
                        "code": instrument.currency,
                        "symbol": instrument.currency,
                        "baseExchangeRate": 1.0,
                        "exchangeRate": 1.0,
                        "isDefault": True,
                    }
                ],
                "marginFactor": 5,
                "marginFactorUnit": "PERCENTAGE",
                "streamingPricesAvailable": True,
                "forceOpenAllowed": True,
                "stopsLimitsAllowed": True,
                "controlledRiskAllowed": True,
                "contractSize": "1",
            },
            "dealingRules": {
                "minDealSize": {"unit": "POINTS", "value": float(instrument.min_deal_size)},
                "minNormalStopOrLimitDistance": {
                    "unit": "POINTS",
                    "value": float(instrument.min_stop_distance),
                },
                "minControlledRiskStopDistance": {
                    "unit": "POINTS",
                    "value": float(instrument.min_stop_distance * 2),
                },
                "minStepDistance": {"unit": "POINTS", "value": float(instrument.tick)},
                "maxStopOrLimitDistance": {"unit": "PERCENTAGE", "value": 75.0},
                "marketOrderPreference": "AVAILABLE_DEFAULT_ON",
                "trailingStopsPreference": "AVAILABLE",
            },
            "snapshot": self.snapshot(epic),
        }

    def snapshot(self, epic: str) -> dict[str, Any]:
        quote = self.quotes[epic]
        change = quote.bid - quote.open
        return {
            "marketStatus": quote.market_status,
            "netChange": float(change),
            "percentageChange": float(round(change / quote.open * 100, 2)),
            "updateTime": ig_time(quote.update_ns)[11:19],
            "delayTime": 0,
            "bid": float(quote.bid),
            "offer": float(quote.offer),
            "high": float(quote.high),
            "low": float(quote.low),
            "decimalPlacesFactor": 1,
            "scalingFactor": 1,
            "controlledRiskExtraSpread": 1,
        }

    def market_fields(self, epic: str) -> dict[str, str]:
        """The MARKET stream's fields (BID OFFER UPDATE_TIME MARKET_STATE) as IG sends them."""
        quote = self.quotes[epic]
        state = {"TRADEABLE": "TRADEABLE", "CLOSED": "CLOSED", "EDITS_ONLY": "EDIT"}
        return {
            "BID": str(quote.bid),
            "OFFER": str(quote.offer),
            "UPDATE_TIME": ig_time(quote.update_ns)[11:19],
            "MARKET_STATE": state.get(quote.market_status, quote.market_status),
        }

    def open_positions(self, account_id: str) -> list[dict[str, Any]]:
        """``GET /positions`` v2: each position with its market's snapshot."""
        answer = []
        for position in self.positions.values():
            if position.account_id != account_id:
                continue
            instrument = self.instrument(position.epic)
            snap = self.snapshot(position.epic)
            market = {
                "instrumentName": instrument.name, "expiry": "-", "epic": position.epic,
                "instrumentType": instrument.instrument_type, "lotSize": 1.0,
                "high": snap["high"], "low": snap["low"],
                "percentageChange": snap["percentageChange"], "netChange": snap["netChange"],
                "bid": snap["bid"], "offer": snap["offer"], "updateTime": snap["updateTime"],
                "updateTimeUTC": snap["updateTime"], "delayTime": 0,
                "streamingPricesAvailable": True, "marketStatus": snap["marketStatus"],
                "scalingFactor": 1,
            }  # fmt: skip
            answer.append({"position": position.as_ig(), "market": market})
        return answer

    # --- dealing -----------------------------------------------------------------------------

    def _new_deal_id(self) -> str:
        deal_id = f"DIAAAA{self.seed:02d}{self._next_id:08d}"
        self._next_id += 1
        return deal_id

    def new_deal_reference(self) -> str:
        reference = f"FAKEREF{self._next_id:010d}"
        self._next_id += 1
        return reference

    def _confirm(
        self, *, account_id: str, reference: str, epic: str, direction: str, size: Decimal,
        status: str | None, deal_status: str, reason: str, deal_id: str, level: Decimal | None,
        stop_level: Decimal | None = None, limit_level: Decimal | None = None,
        affected: list[dict[str, str]] | None = None, profit: Decimal | None = None,
        currency: str | None = None, guaranteed: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        confirm = {
            "date": ig_time(self.now_ns),
            "status": status,
            "reason": reason,
            "dealStatus": deal_status,
            "epic": epic,
            "expiry": "-",
            "dealReference": reference,
            "dealId": deal_id,
            "affectedDeals": affected or [],
            "level": _f(level),
            "size": float(size),
            "direction": direction,
            "stopLevel": _f(stop_level),
            "limitLevel": _f(limit_level),
            "stopDistance": None,
            "limitDistance": None,
            "guaranteedStop": guaranteed,
            "trailingStop": False,
            "profit": _f(profit),
            "profitCurrency": currency if profit is not None else None,
        }
        self.confirms[reference] = confirm
        self.events.append(TradeEvent(account_id, "CONFIRMS", confirm))
        return confirm

    def _opu(self, position: Position, status: str, *, size: Decimal | None = None) -> None:
        self.events.append(
            TradeEvent(
                position.account_id,
                "OPU",
                {
                    "dealReference": position.deal_reference,
                    "dealId": position.deal_id,
                    "direction": position.direction,
                    "epic": position.epic,
                    "expiry": "-",
                    "status": status,
                    "dealStatus": "ACCEPTED",
                    "level": float(position.level),
                    "size": float(position.size if size is None else size),
                    "stopLevel": _f(position.stop_level),
                    "limitLevel": _f(position.limit_level),
                    "guaranteedStop": position.guaranteed_stop,
                    "currency": position.currency,
                    "timestamp": ig_time(self.now_ns),
                    "channel": "PublicRestOTC",
                },
            )
        )

    def _wou(self, order: WorkingOrder, status: str) -> None:
        payload = order.as_ig()
        payload.update({"status": status, "dealStatus": "ACCEPTED", "size": float(order.size),
                        "level": float(order.level),
                        "timestamp": ig_time(self.now_ns)})  # fmt: skip
        self.events.append(TradeEvent(order.account_id, "WOU", payload))

    def _levels(
        self, instrument: IgInstrument, direction: str, entry: Decimal, body: dict[str, Any]
    ) -> tuple[Decimal | None, Decimal | None]:
        """The stop and limit levels a deal asks for (level or distance from ``entry``)."""
        sign = Decimal(1) if direction == "BUY" else Decimal(-1)
        stop_level = _decimal(body, "stopLevel")
        stop_distance = _decimal(body, "stopDistance")
        limit_level = _decimal(body, "limitLevel")
        limit_distance = _decimal(body, "limitDistance")
        if stop_level is not None and stop_distance is not None:
            raise RequestInvalid("validation.mutual-exclusive-value.request.stopLevel")
        if limit_level is not None and limit_distance is not None:
            raise RequestInvalid("validation.mutual-exclusive-value.request.limitLevel")
        if stop_distance is not None:
            stop_level = entry - sign * stop_distance
        if limit_distance is not None:
            limit_level = entry + sign * limit_distance
        minimum = instrument.min_stop_distance
        if stop_level is not None and sign * (entry - stop_level) < minimum:
            raise DealRejected("ATTACHED_ORDER_LEVEL_ERROR")
        if limit_level is not None and sign * (limit_level - entry) < minimum:
            raise DealRejected("ATTACHED_ORDER_LEVEL_ERROR")
        return stop_level, limit_level

    def open_position(self, account_id: str, body: dict[str, Any]) -> str:
        """``POST /positions/otc``: validate, open (or reject) and record the confirm.

        Returns the deal reference. A deal reference already used by this login returns at
        once without dealing again (the first deal's confirm stays).

        Raises:
            RequestInvalid: a malformed request (400): nothing is recorded.
        """
        reference = body.get("dealReference")
        if reference is not None:
            if not isinstance(reference, str) or not DEAL_REFERENCE.fullmatch(reference):
                raise RequestInvalid("validation.pattern.invalid.request.dealReference")
            if reference in self.confirms:
                return reference
        direction = body.get("direction")
        if direction not in ("BUY", "SELL"):
            raise RequestInvalid("validation.null-not-allowed.request.direction"
                                 if direction is None else
                                 "validation.invalid.request.direction")  # fmt: skip
        epic = body.get("epic")
        if not isinstance(epic, str) or not epic:
            raise RequestInvalid("validation.null-not-allowed.request.epic")
        instrument = self.instrument(epic)
        if body.get("expiry") is None:
            raise RequestInvalid("validation.null-not-allowed.request.expiry")
        size = _decimal(body, "size", required=True)
        assert size is not None
        order_type = body.get("orderType")
        if order_type not in ("MARKET", "LIMIT", "QUOTE"):
            raise RequestInvalid("validation.null-not-allowed.request.orderType")
        level = _decimal(body, "level")
        if order_type == "LIMIT" and level is None:
            raise RequestInvalid("validation.null-not-allowed.request.level")
        if not body.get("currencyCode"):
            raise RequestInvalid("validation.null-not-allowed.request.currencyCode")
        has_bracket = any(
            body.get(name) is not None
            for name in ("stopLevel", "stopDistance", "limitLevel", "limitDistance")
        )
        force_open = _bool(body, "forceOpen")
        if has_bracket and not force_open:
            raise RequestInvalid("validation.invalid.request.forceOpen")
        guaranteed = _bool(body, "guaranteedStop")
        if guaranteed and body.get("stopLevel") is None and body.get("stopDistance") is None:
            raise RequestInvalid("validation.null-not-allowed.request.stopLevel")
        reference = reference or self.new_deal_reference()
        deal_id = self._new_deal_id()
        quote = self.quotes[epic]
        price = quote.offer if direction == "BUY" else quote.bid
        try:
            if self.reject_reasons:
                raise DealRejected(self.reject_reasons.pop(0))
            if quote.market_status != "TRADEABLE":
                raise DealRejected("MARKET_CLOSED_WITH_EDITS")
            if size < instrument.min_deal_size:
                raise DealRejected("MINIMUM_ORDER_SIZE_ERROR")
            if order_type == "LIMIT" and level is not None:
                better = price <= level if direction == "BUY" else price >= level
                if not better:
                    raise DealRejected("LIMIT_ORDER_WRONG_SIDE_OF_MARKET")
            stop_level, limit_level = self._levels(instrument, direction, price, body)
        except DealRejected as rejected:
            self._confirm(account_id=account_id, reference=reference, epic=epic,
                          direction=direction, size=size, status=None, deal_status="REJECTED",
                          reason=rejected.reason, deal_id=deal_id, level=None)  # fmt: skip
            return reference
        if not force_open:
            opposite = [p for p in self.positions.values() if p.account_id == account_id
                        and p.epic == epic and p.direction != direction]  # fmt: skip
            if opposite:  # netting: this deal reduces the oldest opposite position
                self._net(opposite, account_id, reference, deal_id, direction, size, price)
                return reference
        position = Position(
            deal_id=deal_id, deal_reference=reference, account_id=account_id, epic=epic,
            direction=direction, size=size, level=price, currency=str(body["currencyCode"]),
            stop_level=stop_level, limit_level=limit_level, guaranteed_stop=guaranteed,
            created_ns=self.now_ns,
        )  # fmt: skip
        self.positions[deal_id] = position
        self._confirm(account_id=account_id, reference=reference, epic=epic,
                      direction=direction, size=size, status="OPEN", deal_status="ACCEPTED",
                      reason="SUCCESS", deal_id=deal_id, level=price, stop_level=stop_level,
                      limit_level=limit_level, guaranteed=guaranteed,
                      affected=[{"dealId": deal_id, "status": "OPENED"}])  # fmt: skip
        self._opu(position, "OPEN")
        self._record_activity(position, "POSITION", "Position opened", price, size, reference)
        return reference

    def _net(
        self, opposite: list[Position], account_id: str, reference: str, deal_id: str,
        direction: str, size: Decimal, price: Decimal,
    ) -> None:  # fmt: skip
        left = size
        affected = []
        for position in opposite:
            if left <= 0:
                break
            take = min(left, position.size)
            self._reduce(position, take, price, reference)
            affected.append({"dealId": position.deal_id,
                             "status": "FULLY_CLOSED" if position.size == 0
                             else "PARTIALLY_CLOSED"})  # fmt: skip
            left -= take
        first = opposite[0]
        self._confirm(account_id=account_id, reference=reference, epic=first.epic,
                      direction=direction, size=size, status="CLOSED", deal_status="ACCEPTED",
                      reason="SUCCESS", deal_id=deal_id, level=price, affected=affected,
                      currency=first.currency, profit=Decimal(0))  # fmt: skip

    def _reduce(self, position: Position, size: Decimal, price: Decimal, reference: str) -> Decimal:
        """Close ``size`` of ``position`` at ``price``; return the profit."""
        sign = Decimal(1) if position.direction == "BUY" else Decimal(-1)
        profit = sign * (price - position.level) * size
        position.size -= size
        if position.size <= 0:
            del self.positions[position.deal_id]
            self._opu(position, "DELETED", size=Decimal(0))
        else:
            self._opu(position, "UPDATED")
        self._record_activity(position, "POSITION", "Position/s closed", price, size, reference)
        return profit

    def close_position(self, account_id: str, body: dict[str, Any]) -> str:
        """``POST /positions/otc`` with ``_method: DELETE``: close (part of) a position.

        Raises:
            RequestInvalid: malformed (400) or no such deal (404
                ``error.service.otc.position.not-found``... as a REJECTED confirm on IG; the
                fake answers the confirm with ``reason`` ``UNKNOWN``).
        """
        reference = body.get("dealReference")
        if reference is not None:
            if not isinstance(reference, str) or not DEAL_REFERENCE.fullmatch(reference):
                raise RequestInvalid("validation.pattern.invalid.request.dealReference")
            if reference in self.confirms:
                return reference
        reference = reference or self.new_deal_reference()
        direction = body.get("direction")
        if direction not in ("BUY", "SELL"):
            raise RequestInvalid("validation.null-not-allowed.request.direction")
        size = _decimal(body, "size", required=True)
        assert size is not None
        if body.get("orderType") not in ("MARKET", "LIMIT", "QUOTE"):
            raise RequestInvalid("validation.null-not-allowed.request.orderType")
        deal_id = body.get("dealId")
        position = self.positions.get(str(deal_id)) if deal_id is not None else None
        if position is None and deal_id is None and body.get("epic"):
            position = next((p for p in self.positions.values() if p.account_id == account_id
                             and p.epic == body["epic"]
                             and p.direction != direction), None)  # fmt: skip
        closing_id = self._new_deal_id()
        if position is None or position.account_id != account_id:
            self._confirm(account_id=account_id, reference=reference, epic=str(body.get("epic")),
                          direction=direction, size=size, status=None, deal_status="REJECTED",
                          reason="UNKNOWN", deal_id=closing_id, level=None)  # fmt: skip
            return reference
        if direction == position.direction or size > position.size:
            self._confirm(account_id=account_id, reference=reference, epic=position.epic,
                          direction=direction, size=size, status=None, deal_status="REJECTED",
                          reason="POSITION_NOT_AVAILABLE_TO_CLOSE", deal_id=closing_id,
                          level=None)  # fmt: skip
            return reference
        quote = self.quotes[position.epic]
        price = quote.bid if position.direction == "BUY" else quote.offer
        profit = self._reduce(position, size, price, reference)
        self._confirm(account_id=account_id, reference=reference, epic=position.epic,
                      direction=direction, size=size, status="CLOSED", deal_status="ACCEPTED",
                      reason="SUCCESS", deal_id=position.deal_id, level=price, profit=profit,
                      currency=position.currency,
                      affected=[{"dealId": position.deal_id,
                                 "status": "FULLY_CLOSED" if position.size <= 0
                                 else "PARTIALLY_CLOSED"}])  # fmt: skip
        return reference

    def amend_position(self, account_id: str, deal_id: str, body: dict[str, Any]) -> str:
        """``PUT /positions/otc/{dealId}``: set the stop and limit levels (None removes one)."""
        position = self.positions.get(deal_id)
        if position is None or position.account_id != account_id:
            raise RequestInvalid("error.service.otc.position.not-found", 404)
        reference = self.new_deal_reference()
        stop_level = _decimal(body, "stopLevel")
        limit_level = _decimal(body, "limitLevel")
        instrument = self.instrument(position.epic)
        quote = self.quotes[position.epic]
        mark = quote.bid if position.direction == "BUY" else quote.offer
        sign = Decimal(1) if position.direction == "BUY" else Decimal(-1)
        minimum = instrument.min_stop_distance
        bad = (stop_level is not None and sign * (mark - stop_level) < minimum) or (
            limit_level is not None and sign * (limit_level - mark) < minimum
        )
        if bad:
            self._confirm(account_id=account_id, reference=reference, epic=position.epic,
                          direction=position.direction, size=position.size, status=None,
                          deal_status="REJECTED", reason="ATTACHED_ORDER_LEVEL_ERROR",
                          deal_id=deal_id, level=None)  # fmt: skip
            return reference
        position.stop_level = stop_level
        position.limit_level = limit_level
        self._confirm(account_id=account_id, reference=reference, epic=position.epic,
                      direction=position.direction, size=position.size, status="AMENDED",
                      deal_status="ACCEPTED", reason="SUCCESS", deal_id=deal_id,
                      level=position.level, stop_level=stop_level, limit_level=limit_level,
                      affected=[{"dealId": deal_id, "status": "AMENDED"}])  # fmt: skip
        self._opu(position, "UPDATED")
        return reference

    def create_working_order(self, account_id: str, body: dict[str, Any]) -> str:
        """``POST /workingorders/otc`` v2: a LIMIT or STOP order resting at ``level``."""
        reference = body.get("dealReference")
        if reference is not None:
            if not isinstance(reference, str) or not DEAL_REFERENCE.fullmatch(reference):
                raise RequestInvalid("validation.pattern.invalid.request.dealReference")
            if reference in self.confirms:
                return reference
        reference = reference or self.new_deal_reference()
        direction = body.get("direction")
        if direction not in ("BUY", "SELL"):
            raise RequestInvalid("validation.null-not-allowed.request.direction")
        epic = str(body.get("epic") or "")
        instrument = self.instrument(epic)
        size = _decimal(body, "size", required=True)
        level = _decimal(body, "level", required=True)
        assert size is not None and level is not None
        order_type = body.get("type")
        if order_type not in ("LIMIT", "STOP"):
            raise RequestInvalid("validation.null-not-allowed.request.type")
        deal_id = self._new_deal_id()
        if size < instrument.min_deal_size:
            self._confirm(account_id=account_id, reference=reference, epic=epic,
                          direction=direction, size=size, status=None, deal_status="REJECTED",
                          reason="MINIMUM_ORDER_SIZE_ERROR", deal_id=deal_id,
                          level=None)  # fmt: skip
            return reference
        order = WorkingOrder(
            deal_id=deal_id, deal_reference=reference, account_id=account_id, epic=epic,
            direction=direction, size=size, level=level, order_type=order_type,
            currency=str(body.get("currencyCode") or instrument.currency),
            stop_distance=_decimal(body, "stopDistance"),
            limit_distance=_decimal(body, "limitDistance"),
            guaranteed_stop=_bool(body, "guaranteedStop"), created_ns=self.now_ns,
        )  # fmt: skip
        self.working_orders[deal_id] = order
        self._confirm(account_id=account_id, reference=reference, epic=epic, direction=direction,
                      size=size, status="OPEN", deal_status="ACCEPTED", reason="SUCCESS",
                      deal_id=deal_id, level=level,
                      affected=[{"dealId": deal_id, "status": "OPENED"}])  # fmt: skip
        self._wou(order, "OPEN")
        return reference

    def delete_working_order(self, account_id: str, deal_id: str) -> str:
        order = self.working_orders.get(deal_id)
        if order is None or order.account_id != account_id:
            raise RequestInvalid("error.service.workingorder.not-found", 404)
        del self.working_orders[deal_id]
        reference = self.new_deal_reference()
        self._confirm(account_id=account_id, reference=reference, epic=order.epic,
                      direction=order.direction, size=order.size, status="DELETED",
                      deal_status="ACCEPTED", reason="SUCCESS", deal_id=deal_id,
                      level=order.level,
                      affected=[{"dealId": deal_id, "status": "DELETED"}])  # fmt: skip
        self._wou(order, "DELETED")
        return reference

    def _record_activity(
        self, position: Position, kind: str, description: str, level: Decimal, size: Decimal,
        reference: str,
    ) -> None:  # fmt: skip
        self.activity.append({
            "date": ig_time(self.now_ns)[:19],
            "epic": position.epic,
            "period": "-",
            "dealId": position.deal_id,
            "channel": "PUBLIC_WEB_API",
            "type": kind,
            "status": "ACCEPTED",
            "description": description,
            "details": {"dealReference": reference, "direction": position.direction,
                        "size": float(size), "level": float(level),
                        "stopLevel": _f(position.stop_level),
                        "limitLevel": _f(position.limit_level),
                        "currency": position.currency,
                        "actions": [{"actionType": self._action(description, position),
                                     "affectedDealId": position.deal_id}]},
            "accountId": position.account_id,
        })  # fmt: skip

    @staticmethod
    def _action(description: str, position: Position) -> str:
        """IG's ``details.actions[].actionType`` for an open or a close of ``position``."""
        if "closed" not in description:
            return "POSITION_OPENED"
        return "POSITION_CLOSED" if position.size <= 0 else "POSITION_PARTIALLY_CLOSED"

    # --- prices ------------------------------------------------------------------------------

    def step(self, now_ns: int) -> list[str]:
        """One step of the seeded walk for every market; return the epics that changed."""
        self.now_ns = now_ns
        for instrument in self.instruments:
            quote = self.quotes[instrument.epic]
            move = Decimal(str(self._random.gauss(0.0, self.volatility_bps / 10_000)))
            bid = (quote.bid * (1 + move)).quantize(instrument.tick)
            self._set_quote(instrument.epic, bid, bid + instrument.spread)
        return [instrument.epic for instrument in self.instruments]

    def set_quote(self, epic: str, bid: Decimal, offer: Decimal | None, now_ns: int) -> None:
        """Move one market to ``bid`` (and ``offer``, default bid + spread) and match."""
        self.now_ns = now_ns
        instrument = self.instrument(epic)
        self._set_quote(epic, bid, offer if offer is not None else bid + instrument.spread)

    def set_market_status(self, epic: str, status: str) -> None:
        self.instrument(epic)
        self.quotes[epic].market_status = status

    def _set_quote(self, epic: str, bid: Decimal, offer: Decimal) -> None:
        quote = self.quotes[epic]
        quote.bid, quote.offer, quote.update_ns = bid, offer, self.now_ns
        quote.high, quote.low = max(quote.high, offer), min(quote.low, bid)
        self._trigger_brackets(epic)
        self._trigger_working_orders(epic)

    def _trigger_brackets(self, epic: str) -> None:
        quote = self.quotes[epic]
        for position in [p for p in self.positions.values() if p.epic == epic]:
            if position.direction == "BUY":
                mark = quote.bid
                stop_hit = position.stop_level is not None and mark <= position.stop_level
                limit_hit = position.limit_level is not None and mark >= position.limit_level
            else:
                mark = quote.offer
                stop_hit = position.stop_level is not None and mark >= position.stop_level
                limit_hit = position.limit_level is not None and mark <= position.limit_level
            if not (stop_hit or limit_hit):
                continue
            reference = self.new_deal_reference()
            size = position.size
            profit = self._reduce(position, size, mark, reference)
            closing = "SELL" if position.direction == "BUY" else "BUY"
            self._confirm(account_id=position.account_id, reference=reference, epic=epic,
                          direction=closing, size=size, status="CLOSED",
                          deal_status="ACCEPTED", reason="SUCCESS", deal_id=position.deal_id,
                          level=mark, profit=profit, currency=position.currency,
                          affected=[{"dealId": position.deal_id,
                                     "status": "FULLY_CLOSED"}])  # fmt: skip
            self.activity[-1]["description"] = "Position/s closed: " + (
                "stop" if stop_hit else "limit"
            )

    def _trigger_working_orders(self, epic: str) -> None:
        quote = self.quotes[epic]
        for order in [o for o in self.working_orders.values() if o.epic == epic]:
            price = quote.offer if order.direction == "BUY" else quote.bid
            below = price <= order.level
            reached = below if (order.direction == "BUY") == (order.order_type == "LIMIT") else (
                price >= order.level)  # fmt: skip
            if not reached:
                continue
            del self.working_orders[order.deal_id]
            self._wou(order, "DELETED")
            sign = Decimal(1) if order.direction == "BUY" else Decimal(-1)
            position = Position(
                deal_id=order.deal_id, deal_reference=order.deal_reference,
                account_id=order.account_id, epic=epic, direction=order.direction,
                size=order.size, level=price, currency=order.currency,
                stop_level=None if order.stop_distance is None
                else price - sign * order.stop_distance,
                limit_level=None if order.limit_distance is None
                else price + sign * order.limit_distance,
                guaranteed_stop=order.guaranteed_stop, created_ns=self.now_ns,
            )  # fmt: skip
            self.positions[position.deal_id] = position
            self._opu(position, "OPEN")
            self._record_activity(position, "POSITION", "Order filled", price, order.size,
                                  order.deal_reference)  # fmt: skip

    def take_events(self) -> list[TradeEvent]:
        events, self.events = self.events, []
        return events
