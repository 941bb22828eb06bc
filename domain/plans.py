"""Deterministic identifiers for plans and their order legs."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from domain.enums import LegKind, Side

__all__ = ["client_order_id", "plan_client_id"]


def plan_client_id(
    *,
    strategy: str,
    instrument: str,
    side: Side,
    entry_price: Decimal,
    stop_price: Decimal,
    target_price: Decimal,
    quantity: int,
    signal_ts: int,
) -> str:
    """Hash the parts of a plan that define it: the same signal always gives the same id."""
    canonical = "|".join(
        (
            strategy,
            instrument,
            side.value,
            _canonical_decimal(entry_price),
            _canonical_decimal(stop_price),
            _canonical_decimal(target_price),
            str(quantity),
            str(signal_ts),
        )
    )
    return "P" + hashlib.sha256(canonical.encode()).hexdigest()[:19]


def client_order_id(plan_id: str, leg: LegKind, sequence: int = 0) -> str:
    """The id of one leg of a plan. ``sequence`` distinguishes repeated EXIT orders.

    At most 24 characters, which fits the Kite ``tag`` (20 is its limit for tags, so brokers
    with shorter fields map it in their adapter) and IG ``dealReference``.
    """
    suffix = {LegKind.ENTRY: "E", LegKind.STOP: "S", LegKind.TARGET: "T", LegKind.EXIT: "X"}[leg]
    return f"{plan_id}{suffix}{sequence}" if sequence else f"{plan_id}{suffix}"


def _canonical_decimal(value: Decimal) -> str:
    normalized = value.normalize()
    return format(normalized, "f")
