"""Pure IG REST/streaming wire mappings: our ids to dealReferences, requests to JSON bodies,
IG's confirms, positions and stream updates to the engine's reports, error answers to the
port's exceptions.

No I/O, no clock, no threads: arrival times come in as ``now_ns``.

dealReference. Our client order ids (``domain.plans.client_order_id``) are ``P`` + 19 lowercase
hex digits + a leg letter (E, S, T, X) + an optional sequence: at most 24 characters of
``[0-9a-zA-Z]``, so each is a valid IG ``dealReference`` (``[A-Za-z0-9_-]{1,30}``) as it is:
no codec, and after a restart IG's positions and confirms map back to our ids by reading it.
The first 20 characters (``P`` + hex) name the plan, so all legs of one bracket share a plan
key (``plan_key``) and the adapter keeps one IG deal per plan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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
    "DEAL_REFERENCE",
    "IgActivity",
    "IgAuthRefused",
    "IgConfirm",
    "IgDeal",
    "IgMarketRef",
    "activity_from_json",
    "amend_levels_body",
    "close_position_body",
    "confirm_from_json",
    "deal_from_position",
    "error_from_response",
    "ig_history_time",
    "is_deal_reference",
    "leg_of",
    "market_update_to_tick",
    "open_position_body",
    "plan_key",
    "positions_by_instrument",
    "session_password",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEAL_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,30}")
_CLIENT_ORDER_ID = re.compile(r"(P[0-9a-f]{19})([ESTX])([1-9][0-9]*)?")
# IG's rate-limit refusals: 403 with error.public-api.exceeded-{account,api-key,
# account-trading,account-historical-data}-allowance. Never an auth failure.
_ALLOWANCE = re.compile(r"error\.public-api\.exceeded-[a-z-]*allowance")
_AUTH_CODES = (
    "error.security.client-token-invalid",
    "error.security.oauth-token-invalid",
    "error.security.invalid-details",
    "error.security.account-token-invalid",
    "error.security.client-token-missing",
    "error.security.authentication.failure",
    "error.security.api-key-disabled",
    "error.security.api-key-invalid",
    "error.security.account-suspended",
    "invalid.input.not-valid.api-key",
)
# A confirm's dealStatus/status or an OPU status that means the deal is gone.
_CLOSED = ("DELETED", "CLOSED", "FULLY_CLOSED")


class IgAuthRefused(BrokerAuthExpired):
    """IG refused our session or credentials (401 ``error.security.*``). Nothing was placed.
    The client re-logs in once on a lapsed token; this is raised when the login itself is
    refused (wrong identifier/password/API key, disabled key): an operator must act."""


def is_deal_reference(value: str) -> bool:
    return DEAL_REFERENCE.fullmatch(value) is not None


def plan_key(client_order_id: str) -> str | None:
    """The plan part of one of our ids (``P`` + 19 hex), or None for any other id."""
    match = _CLIENT_ORDER_ID.fullmatch(client_order_id)
    return match.group(1) if match else None


def leg_of(client_order_id: str) -> str | None:
    """The leg letter (E, S, T, X) of one of our ids, or None for any other id."""
    match = _CLIENT_ORDER_ID.fullmatch(client_order_id)
    return match.group(2) if match else None


def session_password(cst: str, security_token: str) -> str:
    """The Lightstreamer password IG expects: ``CST-<cst>|XST-<token>``."""
    return f"CST-{cst}|XST-{security_token}"


class IgMarketRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one configured instrument trades at IG."""

    epic: str
    expiry: str = "-"  # "-" for cash/DFB markets, e.g. "DEC-26" for futures
    currency: str = "GBP"


def _number(value: Decimal) -> float | int:
    # IG's JSON takes numbers; Decimal -> the exact short literal via float of its text.
    normalized = value.normalize()
    return int(normalized) if normalized == normalized.to_integral_value() else float(normalized)


def open_position_body(
    request: OrderRequest,
    market: IgMarketRef,
    *,
    stop_level: Decimal | None = None,
    limit_level: Decimal | None = None,
) -> dict[str, Any]:
    """``POST /positions/otc`` v2 for an ENTRY: a MARKET deal under our id as dealReference.

    ``forceOpen`` is always true: each plan opens its own deal (IG would otherwise net a SELL
    against another plan's BUY), and IG requires it when stop/limit levels are attached.

    Raises:
        BrokerRejected: not a MARKET order, a bad quantity, or an id IG cannot take.
    """
    cid = request.client_order_id
    if not is_deal_reference(cid):
        raise BrokerRejected(
            f"IG_BAD_DEAL_REFERENCE: {cid!r} is not [A-Za-z0-9_-]{{1,30}}", client_order_id=cid
        )
    if request.order_type is not OrderType.MARKET:
        raise BrokerRejected(
            f"IG_UNSUPPORTED_ORDER_TYPE: an entry at IG is a MARKET deal, got "
            f"{request.order_type.value}",
            client_order_id=cid,
        )
    if request.quantity <= 0:
        raise BrokerRejected(f"INVALID_QUANTITY: quantity={request.quantity}", client_order_id=cid)
    body: dict[str, Any] = {
        "epic": market.epic,
        "expiry": market.expiry,
        "direction": request.side.value,
        "size": request.quantity,
        "orderType": "MARKET",
        "currencyCode": market.currency,
        "forceOpen": True,
        "guaranteedStop": False,
        "dealReference": cid,
    }
    if stop_level is not None:
        body["stopLevel"] = _number(stop_level)
    if limit_level is not None:
        body["limitLevel"] = _number(limit_level)
    return body


def close_position_body(deal_id: str, side: Side, size: int, deal_reference: str) -> dict[str, Any]:
    """``POST /positions/otc`` with ``_method: DELETE`` (v1): close ``size`` of one deal at
    market. ``side`` is the closing direction (the opposite of the deal's)."""
    return {
        "dealId": deal_id,
        "direction": side.value,
        "size": size,
        "orderType": "MARKET",
        "dealReference": deal_reference,
    }


def amend_levels_body(stop_level: Decimal | None, limit_level: Decimal | None) -> dict[str, Any]:
    """``PUT /positions/otc/{dealId}`` v2: the position's stop and limit after the change.
    IG replaces both levels, so the one not being changed must be sent as it is (None
    removes it)."""
    return {
        "stopLevel": None if stop_level is None else _number(stop_level),
        "limitLevel": None if limit_level is None else _number(limit_level),
        "guaranteedStop": False,
        "trailingStop": False,
    }


def _decimal(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _size(value: object) -> int:
    number = _decimal(value)
    return int(number) if number is not None else 0


def ig_time_ns(value: object) -> int | None:
    """IG's UTC timestamps (``2026-11-30T09:15:00``, with optional fraction/``Z``) or epoch
    milliseconds, as epoch ns; None when unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) * 1_000_000
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "").replace(" ", "T").replace("/", "-")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: a float timestamp loses the milliseconds' last digits.
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000


class IgConfirm(msgspec.Struct, frozen=True, kw_only=True):
    """A deal confirmation (``GET /confirms/{ref}`` or the TRADE stream's CONFIRMS)."""

    deal_reference: str
    deal_id: str
    accepted: bool
    status: str  # OPEN, AMENDED, DELETED, ...
    reason: str
    direction: Side | None
    size: int
    level: Decimal | None
    epic: str
    ts_ns: int | None
    stop_level: Decimal | None = None
    limit_level: Decimal | None = None


def confirm_from_json(data: Mapping[str, Any]) -> IgConfirm:
    """Read a confirm. Raises ValueError when it names no dealReference."""
    reference = str(data.get("dealReference") or "")
    if not reference:
        raise ValueError(f"IG confirm without dealReference: keys {sorted(data)}")
    direction = str(data.get("direction") or "").upper()
    return IgConfirm(
        deal_reference=reference,
        deal_id=str(data.get("dealId") or ""),
        accepted=str(data.get("dealStatus") or "").upper() == "ACCEPTED",
        status=str(data.get("status") or "").upper(),
        reason=str(data.get("reason") or ""),
        direction=Side(direction) if direction in ("BUY", "SELL") else None,
        size=_size(data.get("size")),
        level=_decimal(data.get("level")),
        epic=str(data.get("epic") or ""),
        ts_ns=ig_time_ns(data.get("date")),
        stop_level=_decimal(data.get("stopLevel")),
        limit_level=_decimal(data.get("limitLevel")),
    )


def confirm_status_report(
    confirm: IgConfirm, instrument: str, quantity: int, now_ns: int
) -> OrderStatusReport:
    """The status of a MARKET deal from its confirm: FILLED when accepted (IG fills a market
    deal whole or refuses it), REJECTED with IG's reason otherwise."""
    return OrderStatusReport(
        client_order_id=confirm.deal_reference,
        broker_order_id=confirm.deal_id,
        instrument=instrument,
        status=OrderStatus.FILLED if confirm.accepted else OrderStatus.REJECTED,
        quantity=quantity,
        filled_quantity=(confirm.size or quantity) if confirm.accepted else 0,
        reason="" if confirm.accepted else confirm.reason,
        ts_event=confirm.ts_ns or now_ns,
    )


def confirm_fill(
    confirm: IgConfirm, instrument: str, side: Side, quantity: int, now_ns: int
) -> FillReport | None:
    """The execution of an accepted MARKET deal; the trade id is the deal id (plus our
    reference, so a close that shares the position's deal id stays a separate fill)."""
    if not confirm.accepted or confirm.level is None:
        return None
    return FillReport(
        trade_id=f"{confirm.deal_id}:{confirm.deal_reference}",
        client_order_id=confirm.deal_reference,
        broker_order_id=confirm.deal_id,
        instrument=instrument,
        side=confirm.direction or side,
        quantity=confirm.size or quantity,
        price=confirm.level,
        ts_event=confirm.ts_ns or now_ns,
    )


class IgDeal(msgspec.Struct, frozen=True, kw_only=True):
    """One open position at IG (a line of ``GET /positions`` v2)."""

    deal_id: str
    deal_reference: str
    epic: str
    direction: Side
    size: int
    level: Decimal
    stop_level: Decimal | None
    limit_level: Decimal | None
    created_ns: int | None


def deal_from_position(item: Mapping[str, Any]) -> IgDeal:
    """Read ``{"position": {...}, "market": {...}}``. Raises ValueError when unusable."""
    position = item.get("position")
    market = item.get("market")
    if not isinstance(position, Mapping):
        raise ValueError("IG position line without 'position'")
    epic = str((market or {}).get("epic") or position.get("epic") or "")
    direction = str(position.get("direction") or "").upper()
    level = _decimal(position.get("level"))
    if direction not in ("BUY", "SELL") or level is None or not epic:
        raise ValueError(
            f"IG position {position.get('dealId')!r}: direction={direction!r} level={level} "
            f"epic={epic!r}"
        )
    return IgDeal(
        deal_id=str(position.get("dealId") or ""),
        deal_reference=str(position.get("dealReference") or ""),
        epic=epic,
        direction=Side(direction),
        size=_size(position.get("size")),
        level=level,
        stop_level=_decimal(position.get("stopLevel")),
        limit_level=_decimal(position.get("limitLevel")),
        created_ns=ig_time_ns(position.get("createdDateUTC") or position.get("createdDate")),
    )


class IgActivity(msgspec.Struct, frozen=True, kw_only=True):
    """One line of IG's account activity (``GET /history/activity`` v3, ``detailed=true``).

    ``deal_id`` is the activity's deal; ``deal_ids`` also holds the deals its actions name
    (``details.actions[].affectedDealId``: at IG a close is its own deal whose action names the
    position it closed). ``deal_reference`` is the request's (ours for our deals and exits;
    IG's own for a stop or limit it triggered)."""

    deal_id: str
    deal_ids: frozenset[str]
    deal_reference: str
    epic: str
    direction: Side
    size: int
    level: Decimal
    is_close: bool
    ts_ns: int | None


_CLOSE_ACTIONS = ("POSITION_CLOSED", "POSITION_PARTIALLY_CLOSED")


def activity_from_json(item: Mapping[str, Any]) -> IgActivity:
    """Read one activity. Raises ValueError when it is not an accepted position deal with a
    level, a size and a direction (working-order and amendment lines among them)."""
    details = item.get("details")
    if not isinstance(details, Mapping):
        raise ValueError(f"IG activity {item.get('dealId')!r} without details (detailed=true)")
    actions = [a for a in (details.get("actions") or []) if isinstance(a, Mapping)]
    kinds = {str(a.get("actionType") or "").upper() for a in actions}
    description = str(item.get("description") or "").lower()
    is_close = bool(kinds & set(_CLOSE_ACTIONS)) or "closed" in description
    opened = "POSITION_OPENED" in kinds or "opened" in description or "filled" in description
    direction = str(details.get("direction") or "").upper()
    level = _decimal(details.get("level"))
    status = str(item.get("status") or "ACCEPTED").upper()
    if (
        status != "ACCEPTED"
        or not (is_close or opened)
        or direction not in ("BUY", "SELL")
        or level is None
    ):
        raise ValueError(
            f"IG activity {item.get('dealId')!r} is not a position's open or close "
            f"({item.get('description')!r}, status {status})"
        )
    deal_id = str(item.get("dealId") or "")
    affected = {str(a.get("affectedDealId")) for a in actions if a.get("affectedDealId")}
    return IgActivity(
        deal_id=deal_id,
        deal_ids=frozenset({deal_id} | affected),
        deal_reference=str(details.get("dealReference") or ""),
        epic=str(item.get("epic") or ""),
        direction=Side(direction),
        size=_size(details.get("size")),
        level=level,
        is_close=is_close,
        ts_ns=ig_time_ns(item.get("date")),
    )


def ig_history_time(ts_ns: int) -> str:
    """The ``from`` of IG's history requests: ``yyyy-MM-ddTHH:mm:ss`` (UTC)."""
    moment = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def positions_by_instrument(
    deals: list[IgDeal], symbol_by_epic: Mapping[str, str], now_ns: int
) -> list[PositionReport]:
    """Net IG's deals per configured instrument: signed size and size-weighted average level.
    Deals in epics this engine does not trade are left out."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for deal in deals:
        symbol = symbol_by_epic.get(deal.epic)
        if symbol is None:
            continue
        signed = deal.size if deal.direction is Side.BUY else -deal.size
        quantity, notional = totals.get(symbol, (0, Decimal(0)))
        totals[symbol] = (quantity + signed, notional + deal.level * deal.size)
    reports = []
    for symbol, (quantity, notional) in sorted(totals.items()):
        gross = sum(
            d.size for d in deals if symbol_by_epic.get(d.epic) == symbol
        )  # average over the deals' sizes, whatever their direction
        average = notional / gross if gross else Decimal(0)
        reports.append(
            PositionReport(
                instrument=symbol, quantity=quantity, average_price=average, ts_event=now_ns
            )
        )
    return reports


def market_update_to_tick(
    instrument: str, fields: Mapping[str, str | None], *, now_ns: int
) -> Tick | None:
    """A ``MARKET:{epic}`` update (BID OFFER UPDATE_TIME MARKET_STATE) as a ``Tick``; None
    when the market is not tradeable or a price is missing. ``UPDATE_TIME`` is a time of day
    (UK), so the tick is dated on arrival."""
    state = (fields.get("MARKET_STATE") or "TRADEABLE").upper()
    if state not in ("TRADEABLE", "EDIT"):
        return None
    bid = _decimal(fields.get("BID"))
    offer = _decimal(fields.get("OFFER"))
    if bid is None or offer is None or bid <= 0 or offer < bid:
        return None
    return Tick(
        instrument=instrument,
        bid=bid,
        ask=offer,
        last=(bid + offer) / 2,
        ts_event=now_ns,
        ts_init=now_ns,
    )


def error_from_response(
    http_status: int,
    body: object,
    *,
    client_order_id: str | None = None,
    what: str = "request",
) -> BrokerError:
    """The port exception for an IG error answer.

    - 403 (or any status) with ``error.public-api.exceeded-*-allowance``: ``BrokerRateLimited``
      (IG's rate limit; never an auth failure; IG sends no Retry-After);
    - 401, or an ``error.security.*`` code: ``IgAuthRefused`` (the caller re-logs in once);
    - 5xx, or no ``errorCode`` on a 5xx: ``BrokerUnavailable`` (the outcome is unknown);
    - any other 4xx: ``BrokerRejected`` with IG's ``errorCode``.
    """
    code = ""
    if isinstance(body, Mapping):
        code = str(body.get("errorCode") or "")
    detail = f"{what}: http_status={http_status} errorCode={code or '-'}"
    if _ALLOWANCE.search(code):
        return BrokerRateLimited(f"IG_RATE_LIMITED: {detail}", client_order_id=client_order_id)
    if http_status == 401 or code.startswith("error.security.") or code in _AUTH_CODES:
        return IgAuthRefused(f"IG_AUTH_REFUSED: {detail}", client_order_id=client_order_id)
    if http_status >= 500 or http_status < 400:
        return BrokerUnavailable(f"IG_UNAVAILABLE: {detail}", client_order_id=client_order_id)
    return BrokerRejected(f"IG_REJECTED: {code or detail}", client_order_id=client_order_id)


def account_is_live(*, is_real_live_base: bool, session: Mapping[str, Any] | None) -> bool:
    """LIVE when the base is IG's live gateway, or (a fake rehearsing LIVE) when the session
    answer says the login has live accounts and no demo ones (``hasActiveLiveAccounts``)."""
    if is_real_live_base:
        return True
    if not session:
        return False
    return session.get("hasActiveLiveAccounts") is True and not session.get("hasActiveDemoAccounts")
