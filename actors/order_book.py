"""The order actor's books: orders, OCO brackets, positions and the trade ids already booked.

Plain state, no I/O: the ``OrderActor`` owns one ``OrderBook`` and shares it by reference with
its collaborators (``actors.order_execution``, ``actors.order_reconciliation``,
``actors.order_portfolio``), all called on the actor's own thread, so nothing here needs a
lock. Storage stays the truth; this is what the running incarnation manages.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from adapters.storage.repositories import PositionRow
from domain import oco

if TYPE_CHECKING:
    from domain.orders import Order
    from domain.positions import Position

__all__ = ["ACTIVE", "OrderBook", "position_row"]

# Finished orders kept in memory for late reports (an EXIT's status after its fill closed the
# bracket): reading them back from the tables would wait for the write-behind.
_FINISHED_KEPT = 10_000

# Bracket states the actor still manages; any other is finished and leaves the book.
ACTIVE = (oco.BracketStatus.PENDING_ENTRY, oco.BracketStatus.OPEN, oco.BracketStatus.FLATTENING)


class OrderBook:
    """Active brackets by plan id, their orders by client order id, the position each bracket
    holds (rebuilt from fills), every trade id booked (a fill is applied once), and the latest
    orders of finished brackets (``finished``, bounded)."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.brackets: dict[str, oco.Bracket] = {}
        self.positions: dict[str, Position] = {}
        self.trade_ids: set[str] = set()
        self.finished: OrderedDict[str, Order] = OrderedDict()

    def retire_order(self, client_order_id: str) -> None:
        """Move an order of a finished bracket out of the book, into ``finished``."""
        order = self.orders.pop(client_order_id, None)
        if order is None:
            return
        self.finished[client_order_id] = order
        self.finished.move_to_end(client_order_id)
        while len(self.finished) > _FINISHED_KEPT:
            self.finished.popitem(last=False)

    def bracket_orders(self, bracket: oco.Bracket) -> dict[str, Order]:
        """The orders of ``bracket`` that are in the book."""
        return {
            order_id: self.orders[order_id]
            for order_id in oco.bracket_orders(bracket)
            if order_id in self.orders
        }

    def working_order_count(self) -> int:
        return sum(1 for o in self.orders.values() if o.status.is_working)

    def open_position_count(self) -> int:
        return sum(1 for b in self.brackets.values() if b.open_quantity > 0)

    def has_working_orders(self) -> bool:
        """Whether any order is working (stops at the first: a flatten asks after each
        report)."""
        return any(o.status.is_working for o in self.orders.values())

    def has_open_positions(self) -> bool:
        """Whether any bracket holds an open quantity (stops at the first)."""
        return any(b.open_quantity > 0 for b in self.brackets.values())


def position_row(bracket: oco.Bracket, position: Position, now: int) -> PositionRow:
    """The stored row of a bracket's position."""
    return PositionRow(
        position_id=bracket.plan_client_id,
        strategy=bracket.strategy,
        instrument=bracket.instrument,
        side=bracket.side,
        quantity=bracket.open_quantity,
        average_price=position.average_price,
        realized_pnl=position.realized_pnl,
        # CLOSED only once the bracket is finished: "realized today" reads closed rows and
        # must not count a bracket whose PnL is still in memory.
        status="OPEN" if bracket.status in ACTIVE else "CLOSED",
        updated_ns=now,
    )
