"""The order entity and its state machine.

(Data shape fixed here; transition logic to be completed in this module.)
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from domain.enums import LegKind, OrderStatus, OrderType, Side

__all__ = ["Order"]


class Order(msgspec.Struct, kw_only=True):
    """One broker order as the engine tracks it. An entity: mutable, identified by
    ``client_order_id``."""

    client_order_id: str
    plan_client_id: str
    strategy: str
    instrument: str
    leg: LegKind
    side: Side
    order_type: OrderType
    quantity: int
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    status: OrderStatus = OrderStatus.PENDING_SUBMIT
    filled_quantity: int = 0
    average_fill_price: Decimal | None = None
    broker_order_id: str | None = None
    epoch: int = 0
    reason: str = ""
    ts_created: int = 0
    ts_updated: int = 0

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity
