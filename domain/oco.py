"""The OCO bracket: entry, stop and target kept consistent with the position.

(Data shape fixed here; the rules are to be completed in this module.)
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum

import msgspec

from domain.enums import LegKind, OrderType, Side

__all__ = ["Bracket", "BracketAction", "BracketStatus", "CancelLeg", "PlaceLeg", "ResizeLeg"]


class BracketStatus(str, Enum):
    PENDING_ENTRY = "PENDING_ENTRY"  # entry working, nothing filled yet
    OPEN = "OPEN"  # some position open, siblings working
    FLATTENING = "FLATTENING"  # cancelling siblings, then exiting at market
    CLOSED = "CLOSED"  # flat and every leg dead
    CANCELLED = "CANCELLED"  # entry died unfilled


class Bracket(msgspec.Struct, kw_only=True):
    """An entity keyed by ``plan_client_id``."""

    plan_client_id: str
    strategy: str
    instrument: str
    side: Side  # the entry side; stop and target are the opposite side
    planned_quantity: int
    entry_price: Decimal
    stop_price: Decimal
    target_price: Decimal
    status: BracketStatus = BracketStatus.PENDING_ENTRY
    entry_order_id: str = ""
    stop_order_id: str | None = None
    target_order_id: str | None = None
    exit_order_ids: tuple[str, ...] = ()
    entry_filled: int = 0
    exit_filled: int = 0
    flatten_reason: str | None = None
    ts_opened: int = 0
    ts_updated: int = 0

    @property
    def open_quantity(self) -> int:
        return self.entry_filled - self.exit_filled


class PlaceLeg(msgspec.Struct, frozen=True, kw_only=True):
    leg: LegKind
    client_order_id: str
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None


class ResizeLeg(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    quantity: int  # the new total quantity of the order (filled part included)


class CancelLeg(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str


BracketAction = PlaceLeg | ResizeLeg | CancelLeg
