"""The order actor's portfolio projection: what the books are worth and risk, for risk and the API.

Not an actor: a helper the ``OrderActor`` owns and calls on its own thread. It reads the shared
``OrderBook`` and holds what only the projection needs: the latest mark of each instrument,
realized PnL of brackets closed today and the trading day it belongs to (rolled at the IST day
boundary from storage). It builds ``PositionView``s and ``PortfolioUpdated``, publishes the
latter to the subscribers (risk) and sets the position and rupee gauges.

``FlattenStatus`` and ``PortfolioView`` are the answers to ``FlattenAll`` and ``QueryPortfolio``
(re-exported by ``actors.order_actor``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from adapters.logs import log_event
from adapters.storage.repositories import UnitOfWork
from domain import oco
from domain.calendar import start_of_trading_day_ns, trading_day
from domain.messages import FlattenCompleted, PortfolioUpdated, PositionView, Tick
from domain.positions import Position, flat, unrealized_pnl

if TYPE_CHECKING:
    from actors.order_book import OrderBook
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.clock import Clock

__all__ = ["FlattenStatus", "PortfolioProjection", "PortfolioView"]

# The order actor's log lines keep one logger name, whichever module writes them.
logger = logging.getLogger("actors.order_actor")


class FlattenStatus(msgspec.Struct, frozen=True, kw_only=True):
    reason: str | None
    in_progress: bool
    positions_at_start: int
    orders_at_start: int
    remaining_positions: int
    remaining_working_orders: int
    started_ns: int | None
    completed: FlattenCompleted | None


class PortfolioView(msgspec.Struct, frozen=True, kw_only=True):
    portfolio: PortfolioUpdated
    working_orders: int
    flatten: FlattenStatus


class PortfolioProjection:
    """Positions, heat and PnL derived from one order actor's books.

    Args:
        book: the actor's books, shared by reference.
        database: where realized PnL of closed brackets is read back.
        metrics: the position and rupee gauges.
        clock: stamps each ``PortfolioUpdated``.
        tell: sends a message to an actor by name (the actor's directory).
        subscribers: actors told every ``PortfolioUpdated``.
    """

    def __init__(
        self,
        book: OrderBook,
        *,
        database: Database,
        metrics: EngineMetrics,
        clock: Clock,
        tell: Callable[[str, object], bool],
        subscribers: Iterable[str],
    ) -> None:
        self._book = book
        self._database = database
        self._metrics = metrics
        self._clock = clock
        self._tell = tell
        self._subscribers = tuple(subscribers)
        self.marks: dict[str, Tick] = {}
        # Realized PnL of brackets finished today; open brackets' realized part is added live.
        self.realized_today = Decimal(0)
        self.trading_day = ""

    def on_ticks(self, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            self.marks[tick.instrument] = tick

    def mark_price(self, instrument: str) -> Decimal | None:
        tick = self.marks.get(instrument)
        return tick.mid if tick is not None else None

    def position_views(self) -> list[PositionView]:
        views = []
        for bracket in self._book.brackets.values():
            if bracket.open_quantity <= 0:
                continue
            position = self._book.positions.get(bracket.plan_client_id) or flat(bracket.instrument)
            mark = self.mark_price(bracket.instrument)
            unrealized = unrealized_pnl(position, mark) if mark is not None else Decimal(0)
            views.append(
                PositionView(
                    position_id=bracket.plan_client_id,
                    strategy=bracket.strategy,
                    instrument=bracket.instrument,
                    side=bracket.side,
                    quantity=bracket.open_quantity,
                    average_price=position.average_price,
                    stop_price=bracket.stop_price,
                    target_price=bracket.target_price,
                    realized_pnl=position.realized_pnl,
                    unrealized_pnl=unrealized,
                    risk_amount=abs(position.average_price - bracket.stop_price)
                    * bracket.open_quantity,
                )
            )
        return views

    def portfolio(self) -> PortfolioUpdated:
        book = self._book
        positions = tuple(self.position_views())
        pending = [b for b in book.brackets.values() if b.status is oco.BracketStatus.PENDING_ENTRY]
        # The unfilled part of every working entry (a partly filled one too) can become a
        # position at any moment: its risk and notional count before it does.
        unfilled = [
            (bracket, order.remaining_quantity)
            for bracket in book.brackets.values()
            if (order := book.orders.get(bracket.entry_order_id)) is not None
            and order.status.is_working
            and order.remaining_quantity > 0
        ]
        # Every active bracket's realized part counts, flat or not (a stopped-out bracket still
        # cancelling its target has realized its loss already).
        realized_open = sum((p.realized_pnl for p in book.positions.values()), Decimal(0))
        return PortfolioUpdated(
            positions=positions,
            working_entry_count=len(pending),
            working_entries=tuple((b.strategy, b.instrument) for b in pending),
            working_plan_ids=tuple(b.plan_client_id for b in book.brackets.values()),
            working_entry_notional=tuple(
                (bracket.instrument, bracket.entry_price * quantity)
                for bracket, quantity in unfilled
            ),
            realized_pnl_today=self.realized_today + realized_open,
            unrealized_pnl=sum((p.unrealized_pnl for p in positions), Decimal(0)),
            heat=sum((p.risk_amount for p in positions), Decimal(0))
            + sum(
                (abs(b.entry_price - b.stop_price) * quantity for b, quantity in unfilled),
                Decimal(0),
            ),
            ts_event=self._clock.now_ns(),
        )

    def publish(self) -> None:
        portfolio = self.portfolio()
        for subscriber in self._subscribers:
            self._tell(subscriber, portfolio)
        counts: dict[str, int] = {}
        for position in portfolio.positions:
            counts[position.strategy] = counts.get(position.strategy, 0) + 1
        # Strategies missing from counts go to 0, so no gauge sticks at a stale count.
        self._metrics.set_positions_open(counts)
        self._metrics.set_rupees(
            heat=portfolio.heat,
            daily_pnl=portfolio.realized_pnl_today,
            unrealized_pnl=portfolio.unrealized_pnl,
        )

    def book_closed(self, position: Position) -> None:
        """A finished bracket's position leaves the book: its PnL is realized today."""
        self.realized_today += position.realized_pnl

    def reload_realized(self, uow: UnitOfWork, now: int) -> None:
        """Realized PnL of the brackets closed since the start of ``now``'s trading day."""
        self.realized_today = uow.positions.realized_closed_since(start_of_trading_day_ns(now))

    def roll_trading_day(self, now: int) -> None:
        day = trading_day(now)
        if day == self.trading_day:
            return
        with UnitOfWork(self._database) as uow:
            self.reload_realized(uow, now)
        if self.trading_day:
            log_event(
                logger,
                "DAILY_RESET",
                f"trading day {day} starts; realized PnL today reset",
                trading_day=day,
            )
        self.trading_day = day
