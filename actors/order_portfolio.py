"""The order actor's portfolio projection: what the books are worth and risk, for risk and the API.

Not an actor: a helper the ``OrderActor`` owns and calls on its own thread. It reads the shared
``OrderBook`` and holds what only the projection needs: the latest mark of each instrument,
realized PnL of brackets closed today and the trading day it belongs to (rolled from storage at
local midnight in the exchange's zone, ``exchange_tz``: ``scheduler.timezone``, Asia/Kolkata by
default; ``domain.calendar`` is the one definition of the trading day). It builds
``PositionView``s and ``PortfolioUpdated``, publishes the latter to the subscribers (risk) and
sets the position and rupee gauges.

Incremental: each active bracket's contribution (its ``PositionView``, realized part, working
entry and its heat) is cached under a key of everything it is computed from (bracket status
and quantities, prices, the position value, the entry's status and remaining quantity, and the
instrument's mark while a position is open). A fill, a report or a mark rebuilds only the
brackets whose key changed; the totals are re-added from the cached parts (the same additions
in the same order as a full recompute, so the result is identical to the last digit:
``full_portfolio`` is that recompute, kept as the reference the tests hold it to).

Publishing to risk (``refresh``, after every change): at once whenever anything risk decides
on changed (positions and their quantities, average and stop prices, working entries and their
notional, heat, realized PnL), so risk never sees a fill's exposure late. A change of marks
alone (unrealized PnL) is coalesced: the first one asks the actor (``wake``) for a publish
after what is already in its inbox, so a burst of reports sends one portfolio, not one per
report; no clock is involved, so a replay or a manual clock sees the same publishes. An
unchanged portfolio (a stop acknowledged, a repeated report) goes out at most once a second of
clock time (a fresh ``ts_event``; risk retries its pending safety trips on each one).
``publish`` always publishes (start, ``RepublishState``, a new bracket).

Marks: the latest tick per instrument, either handed in (``on_ticks``, for a conflator's drain)
or read from a ``quotes`` channel (the engine's ``QuoteBoard``) whenever a mark is about to be
used, so a tick costs the order actor nothing until it matters and a mark is never older than a
drained conflator's would be.

``FlattenStatus`` and ``PortfolioView`` are the answers to ``FlattenAll`` and ``QueryPortfolio``
(re-exported by ``actors.order_actor``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import msgspec

from adapters.logs import log_event
from adapters.storage.repositories import UnitOfWork
from domain import oco
from domain.calendar import EXCHANGE_TZ, start_of_trading_day_ns, trading_day
from domain.clock import NANOS_PER_SECOND
from domain.enums import Side
from domain.messages import FlattenCompleted, PortfolioUpdated, PositionView, Tick
from domain.positions import Position, unrealized_pnl

if TYPE_CHECKING:
    from actors.mailbox import TickChannel
    from actors.order_book import OrderBook
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.clock import Clock
    from domain.orders import Order

__all__ = ["FlattenStatus", "PortfolioProjection", "PortfolioView"]

# The order actor's log lines keep one logger name, whichever module writes them.
logger = logging.getLogger("actors.order_actor")

# An unchanged portfolio still goes out this often (fresh ts_event; risk retries its pending
# safety trips on each one).
_UNCHANGED_EVERY_NS = NANOS_PER_SECOND
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Contribution:
    """What one active bracket adds to the portfolio, and the key it was computed from."""

    key: tuple[object, ...]
    view: PositionView | None  # None while nothing is open
    realized: Decimal  # the bracket's position's realized PnL (0 without a position)
    is_pending_entry: bool
    unfilled_quantity: int  # the working entry's unfilled part (0 if none)
    unfilled_heat: Decimal


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


def held_position(bracket: oco.Bracket, position: Position | None, entry: Order | None) -> Position:
    """The position a bracket with open quantity holds, for its view, risk and PnL.

    Its fills are normally booked already. Right after a crash they may not be: the journal
    brings back the bracket's filled quantity before reconciliation re-applies the broker's
    missed fills, so for a moment there is open quantity and no booked position. Its average
    is then the entry's average fill price if known, else the plan's entry price; an average of
    0 would make its heat (``|average - stop| x quantity``) its whole notional and trip the
    heat cap on every such recovery.
    """
    if position is not None and position.quantity != 0:
        return position
    average = (
        entry.average_fill_price
        if entry is not None and entry.average_fill_price is not None
        else bracket.entry_price
    )
    signed = bracket.open_quantity if bracket.side is Side.BUY else -bracket.open_quantity
    return Position(
        instrument=bracket.instrument,
        quantity=signed,
        average_price=average,
        realized_pnl=position.realized_pnl if position is not None else _ZERO,
    )


class PortfolioProjection:
    """Positions, heat and PnL derived from one order actor's books.

    Args:
        book: the actor's books, shared by reference.
        database: where realized PnL of closed brackets is read back.
        metrics: the position and rupee gauges.
        clock: stamps each ``PortfolioUpdated``.
        tell: sends a message to an actor by name (the actor's directory).
        subscribers: actors told every ``PortfolioUpdated``.
        wake: asks the owning actor to call ``publish`` after the messages already in its
            inbox (it tells itself ``RepublishState``); returns False if it could not, and the
            portfolio is then published at once. None: marks are published at once too.
        quotes: where the latest ticks wait (a ``QuoteBoard``); drained into ``marks`` before
            any mark is read. None: only ``on_ticks`` moves the marks.
        exchange_tz: the zone whose local midnight starts a trading day (realized PnL today).
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
        wake: Callable[[], bool] | None = None,
        quotes: TickChannel | None = None,
        exchange_tz: ZoneInfo = EXCHANGE_TZ,
    ) -> None:
        self._book = book
        self._exchange_tz = exchange_tz
        self._quotes = quotes
        self._database = database
        self._metrics = metrics
        self._clock = clock
        self._tell = tell
        self._subscribers = tuple(subscribers)
        self._wake = wake
        self._publish_asked = False
        self.marks: dict[str, Tick] = {}
        # Realized PnL of brackets finished today; open brackets' realized part is added live.
        self.realized_today = Decimal(0)
        self.trading_day = ""
        # Per active bracket (plan id): its cached part of the portfolio.
        self._contributions: dict[str, _Contribution] = {}
        self._cached: PortfolioUpdated | None = None
        # Bumped on every rebuild of the cached portfolio; the one last sent to risk had this.
        self._version = 0
        self._published_version = -1
        self._cached_realized_today: Decimal | None = None
        self._last_published: PortfolioUpdated | None = None
        self._last_published_ns: int | None = None
        self.publish_count = 0

    def on_ticks(self, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            self.marks[tick.instrument] = tick

    def _sync_marks(self) -> None:
        if self._quotes is not None:
            for tick in self._quotes.drain():
                self.marks[tick.instrument] = tick

    def mark_price(self, instrument: str) -> Decimal | None:
        self._sync_marks()
        tick = self.marks.get(instrument)
        return tick.mid if tick is not None else None

    def position_views(self) -> list[PositionView]:
        self._update()
        contributions = self._contributions
        return [
            view
            for plan_id in self._book.brackets
            if (view := contributions[plan_id].view) is not None
        ]

    def portfolio(self) -> PortfolioUpdated:
        """The portfolio now, from the cached parts of the brackets that did not change."""
        changed = self._update()
        now = self._clock.now_ns()
        cached = self._cached
        if (
            not changed
            and cached is not None
            and self._cached_realized_today == (self.realized_today)
        ):
            return msgspec.structs.replace(cached, ts_event=now)
        book = self._book
        parts = [
            (bracket, self._contributions[plan_id]) for plan_id, bracket in book.brackets.items()
        ]
        positions = tuple(part.view for _, part in parts if part.view is not None)
        pending = [bracket for bracket, part in parts if part.is_pending_entry]
        unfilled = [(bracket, part) for bracket, part in parts if part.unfilled_quantity > 0]
        portfolio = PortfolioUpdated(
            positions=positions,
            working_entry_count=len(pending),
            working_entries=tuple((b.strategy, b.instrument) for b in pending),
            working_plan_ids=tuple(book.brackets),
            working_entry_notional=tuple(
                (bracket.instrument, bracket.entry_price * part.unfilled_quantity)
                for bracket, part in unfilled
            ),
            realized_pnl_today=self.realized_today
            + sum((part.realized for _, part in parts), _ZERO),
            unrealized_pnl=sum((p.unrealized_pnl for p in positions), _ZERO),
            heat=sum((p.risk_amount for p in positions), _ZERO)
            + sum((part.unfilled_heat for _, part in unfilled), _ZERO),
            ts_event=now,
        )
        self._cached = portfolio
        self._cached_realized_today = self.realized_today
        self._version += 1
        return portfolio

    def _update(self) -> bool:
        """Rebuild the parts of the brackets whose key changed; drop those of finished
        brackets. Returns whether anything changed."""
        self._sync_marks()
        book = self._book
        contributions = self._contributions
        marks = self.marks
        changed = False
        for plan_id, bracket in book.brackets.items():
            position = book.positions.get(plan_id)
            entry = book.orders.get(bracket.entry_order_id)
            open_quantity = bracket.open_quantity
            key = (
                bracket.status,
                open_quantity,
                bracket.entry_price,
                bracket.stop_price,
                bracket.target_price,
                position,
                None if entry is None else entry.status,
                None if entry is None else entry.remaining_quantity,
                # the average of a position whose fills are not booked yet (held_position)
                None if entry is None or position is not None else entry.average_fill_price,
                marks.get(bracket.instrument) if open_quantity > 0 else None,
            )
            known = contributions.get(plan_id)
            if known is not None and known.key == key:
                continue
            contributions[plan_id] = self._contribution(bracket, position, entry, key)
            changed = True
        if len(contributions) != len(book.brackets):
            for plan_id in [p for p in contributions if p not in book.brackets]:
                del contributions[plan_id]
            changed = True
        return changed

    def _contribution(
        self,
        bracket: oco.Bracket,
        position: Position | None,
        entry: Order | None,
        key: tuple[object, ...],
    ) -> _Contribution:
        view: PositionView | None = None
        if bracket.open_quantity > 0:
            held = held_position(bracket, position, entry)
            mark = self.mark_price(bracket.instrument)
            view = PositionView(
                position_id=bracket.plan_client_id,
                strategy=bracket.strategy,
                instrument=bracket.instrument,
                side=bracket.side,
                quantity=bracket.open_quantity,
                average_price=held.average_price,
                stop_price=bracket.stop_price,
                target_price=bracket.target_price,
                realized_pnl=held.realized_pnl,
                unrealized_pnl=unrealized_pnl(held, mark) if mark is not None else _ZERO,
                risk_amount=abs(held.average_price - bracket.stop_price) * bracket.open_quantity,
            )
        # The unfilled part of a working entry (a partly filled one too) can become a position
        # at any moment: its risk and notional count before it does.
        unfilled = (
            entry.remaining_quantity
            if entry is not None and entry.status.is_working and entry.remaining_quantity > 0
            else 0
        )
        return _Contribution(
            key=key,
            view=view,
            realized=position.realized_pnl if position is not None else _ZERO,
            is_pending_entry=bracket.status is oco.BracketStatus.PENDING_ENTRY,
            unfilled_quantity=unfilled,
            unfilled_heat=abs(bracket.entry_price - bracket.stop_price) * unfilled
            if unfilled
            else _ZERO,
        )

    # ------------------------------------------------------------------ REFERENCE
    def full_position_views(self) -> list[PositionView]:
        """Every view recomputed from the books (the reference ``position_views`` equals)."""
        self._sync_marks()
        views = []
        for bracket in self._book.brackets.values():
            if bracket.open_quantity <= 0:
                continue
            position = held_position(
                bracket,
                self._book.positions.get(bracket.plan_client_id),
                self._book.orders.get(bracket.entry_order_id),
            )
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

    def full_portfolio(self) -> PortfolioUpdated:
        """The portfolio recomputed from the books (the reference ``portfolio`` equals)."""
        book = self._book
        positions = tuple(self.full_position_views())
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

    # ------------------------------------------------------------------ EGRESS
    def refresh(self) -> bool:
        """After a change: publish at once if anything risk decides on changed; a mark-only
        change once the actor's inbox has been worked through (``wake``); an unchanged
        portfolio at most once a second. Returns whether it published now."""
        portfolio = self.portfolio()
        last = self._last_published
        if self._version == self._published_version:
            pass  # nothing rebuilt since the last publish: only the once-a-second refresh
        elif last is None or _exposure(portfolio) != _exposure(last):
            self._send(portfolio)
            return True
        elif portfolio.unrealized_pnl != last.unrealized_pnl or not _marks_unchanged(
            portfolio, last
        ):
            if self._publish_asked:
                return False
            if self._wake is not None and self._wake():
                self._publish_asked = True
                return False
            self._send(portfolio)
            return True
        if portfolio.ts_event - (self._last_published_ns or 0) < _UNCHANGED_EVERY_NS:
            return False
        self._send(portfolio)
        return True

    def publish(self) -> None:
        """Publish the portfolio now, changed or not."""
        self._send(self.portfolio())

    def _send(self, portfolio: PortfolioUpdated) -> None:
        self._last_published = portfolio
        self._last_published_ns = portfolio.ts_event
        self._published_version = self._version
        self._publish_asked = False
        self.publish_count += 1
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
        self.realized_today = uow.positions.realized_closed_since(
            start_of_trading_day_ns(now, self._exchange_tz)
        )

    def roll_trading_day(self, now: int) -> None:
        """At the first call of a new trading day (in the exchange zone), reload realized PnL
        today from storage: the brackets closed since that day's local midnight."""
        day = trading_day(now, self._exchange_tz)
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


def _exposure(portfolio: PortfolioUpdated) -> tuple[object, ...]:
    # Everything in a portfolio that risk decides on, except what marks alone move.
    return (
        tuple(
            (
                p.position_id,
                p.quantity,
                p.average_price,
                p.stop_price,
                p.target_price,
                p.realized_pnl,
                p.risk_amount,
            )
            for p in portfolio.positions
        ),
        portfolio.working_entry_count,
        portfolio.working_entries,
        portfolio.working_plan_ids,
        portfolio.working_entry_notional,
        portfolio.realized_pnl_today,
        portfolio.heat,
    )


def _marks_unchanged(portfolio: PortfolioUpdated, last: PortfolioUpdated) -> bool:
    return all(
        p.unrealized_pnl == q.unrealized_pnl
        for p, q in zip(portfolio.positions, last.positions, strict=True)
    )
