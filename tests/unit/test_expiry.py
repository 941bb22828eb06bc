"""Entries expire by age (the TTL) and by trading day; other legs never do."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.clock import NANOS_PER_SECOND
from domain.enums import LegKind, OrderType, Side
from domain.expiry import entry_expiry, entry_trading_day
from domain.orders import Order


def at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * NANOS_PER_SECOND


def order(created_ns: int, leg: LegKind = LegKind.ENTRY) -> Order:
    return Order(
        client_order_id="PXE",
        plan_client_id="PX",
        strategy="orb",
        instrument="NIFTY",
        leg=leg,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=50,
        price=Decimal("100"),
        ts_created=created_ns,
        ts_updated=created_ns,
    )


def test_an_entry_lives_for_its_ttl() -> None:
    created = at(2026, 11, 30, 4, 0)  # 09:30 IST
    entry = order(created)
    assert entry_expiry(entry, now_ns=created + 119 * NANOS_PER_SECOND, ttl_s=120) is None
    assert entry_expiry(entry, now_ns=created + 840 * NANOS_PER_SECOND, ttl_s=120) == (
        "EXPIRED: entry_ttl_s=120 age_s=840.0"
    )


def test_an_entry_from_an_earlier_trading_day_expires_whatever_its_age() -> None:
    created = at(2026, 11, 27, 18, 29)  # 23:59 IST on 27 November
    entry = order(created)
    assert entry_trading_day(entry) == "2026-11-27"
    assert entry_expiry(entry, now_ns=at(2026, 11, 27, 18, 31), ttl_s=3600) == (
        "EXPIRED: trading day 2026-11-27 is over"
    )


@pytest.mark.parametrize("leg", [LegKind.STOP, LegKind.TARGET, LegKind.EXIT])
def test_legs_that_reduce_exposure_never_expire(leg: LegKind) -> None:
    created = at(2026, 11, 27, 4, 0)
    assert entry_expiry(order(created, leg), now_ns=at(2026, 11, 30, 4, 0), ttl_s=1) is None
