"""The paper venue's live books: mutable, indexed, pure (no I/O, no locks, no clock).

``venue.step`` is the reference pass: it copies the books and scans every working order, so a
pass costs O(working orders) (about 100 us at 200 orders). ``IndexedBooks`` runs the same
``venue.MatchingPass`` (the same rules, fill prices, partial fills, latency and lifecycles)
over its own mappings in place, and offers it only the orders the pass can touch:

- **Due actions** (acks, modifies, cancels) come from a heap of due times. Entries are never
  removed early; one whose order no longer has that due time is dropped when it comes up.
- **Matching** asks a per-instrument trigger index for the orders the instrument's quote can
  cross. Per instrument it keeps four lists sorted by price (buy limits: fill when
  ask <= limit; sell limits: bid >= limit; untriggered buy stops: trigger when ask >= trigger;
  untriggered sell stops: bid <= trigger), so the crossed ones are one ``bisect`` away, plus
  the orders any quote may fill (MARKET, triggered STOP). Only acknowledged orders are indexed.
- **Which instruments a pass looks at**: the instrument of the pass's tick, and every
  instrument one of whose orders changed in this pass or the previous one (an ack, a partial
  fill, a modify, a trigger). An order whose quote and fields have not changed since a pass
  that gave it its chance, and left it alone, cannot fill now either; the reference scan
  would find nothing there.

The index only narrows the candidates: each is still matched by ``MatchingPass.match``, which
decides. Candidates are matched in order sequence, as the reference does, so trade ids and
report order are the same. ``tests/adapter/test_paper_matching_index.py`` checks, on random
books, requests and quotes, that every pass gives exactly the reference's changes and reports.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping
from decimal import Decimal

from adapters.brokers.paper.venue import (
    ACK,
    ACTION_RANK,
    CANCEL,
    MODIFY,
    DueAction,
    MatchingPass,
    PassChanges,
    VenueBooks,
    VenueOrder,
    VenuePosition,
    VenueRejection,
    VenueRules,
    cancel_requested,
    due_actions_of,
    modify_requested,
    new_order,
)
from domain.enums import OrderType, Side
from domain.instruments import Instrument
from domain.messages import OrderRequest, Tick

__all__ = ["IndexedBooks"]

_Entry = tuple[Decimal, int, str]  # (price, seq, client_order_id): sorts by price, then age

_NO_CHANGES = PassChanges()

# Buckets of the trigger index.
_BUY_LIMITS, _SELL_LIMITS, _BUY_STOPS, _SELL_STOPS, _ANY_QUOTE = range(5)


class _Levels:
    """Orders of one bucket sorted by (price, seq), with the prices in a plain list of their
    own so that a quote finds its boundary with a C-level ``bisect`` and no key function."""

    __slots__ = ("ids", "keys", "prices")

    def __init__(self) -> None:
        self.keys: list[tuple[Decimal, int]] = []
        self.prices: list[Decimal] = []
        self.ids: list[str] = []

    def add(self, entry: _Entry) -> None:
        price, seq, client_order_id = entry
        position = bisect.bisect_left(self.keys, (price, seq))
        self.keys.insert(position, (price, seq))
        self.prices.insert(position, price)
        self.ids.insert(position, client_order_id)

    def remove(self, entry: _Entry) -> None:
        price, seq, client_order_id = entry
        position = bisect.bisect_left(self.keys, (price, seq))
        if position < len(self.ids) and self.ids[position] == client_order_id:
            del self.keys[position]
            del self.prices[position]
            del self.ids[position]

    def at_or_above(self, price: Decimal) -> list[str]:
        start = bisect.bisect_left(self.prices, price)
        return self.ids[start:] if start < len(self.ids) else []

    def at_or_below(self, price: Decimal) -> list[str]:
        end = bisect.bisect_right(self.prices, price)
        return self.ids[:end] if end else []


class _InstrumentIndex:
    """The acknowledged working orders of one instrument, by what crosses them."""

    __slots__ = ("any_quote", "levels")

    def __init__(self) -> None:
        # levels[bucket] for the four priced buckets; any_quote: ids any quote may fill.
        self.levels = (_Levels(), _Levels(), _Levels(), _Levels())
        self.any_quote: set[str] = set()

    def crossed(self, quote: Tick) -> list[str]:
        """Ids of the orders ``quote`` may fill or trigger (a superset; ``match`` decides)."""
        found = list(self.any_quote) if self.any_quote else []
        buy_limits, sell_limits, buy_stops, sell_stops = self.levels
        ask, bid = quote.ask, quote.bid
        # An empty side (price <= 0) fills and triggers nothing on that side.
        if ask > 0:
            if buy_limits.ids:
                found += buy_limits.at_or_above(ask)  # buy limit fills when ask <= limit
            if buy_stops.ids:
                found += buy_stops.at_or_below(ask)  # buy stop triggers when ask >= trigger
        if bid > 0:
            if sell_limits.ids:
                found += sell_limits.at_or_below(bid)  # sell limit fills when bid >= limit
            if sell_stops.ids:
                found += sell_stops.at_or_above(bid)  # sell stop triggers when bid <= trigger
        return found


def _placement(order: VenueOrder) -> tuple[int, _Entry | None] | None:
    """Where ``order`` belongs in its instrument's index, or ``None`` (not matchable yet, or
    no longer working)."""
    if not order.is_accepted or order.status.is_terminal:
        return None
    if order.order_type is OrderType.LIMIT and order.price is not None:
        bucket = _BUY_LIMITS if order.side is Side.BUY else _SELL_LIMITS
        return bucket, (order.price, order.seq, order.client_order_id)
    if (
        order.order_type is OrderType.STOP
        and not order.is_triggered
        and order.trigger_price is not None
    ):
        bucket = _BUY_STOPS if order.side is Side.BUY else _SELL_STOPS
        return bucket, (order.trigger_price, order.seq, order.client_order_id)
    return _ANY_QUOTE, None


class IndexedBooks:
    """The venue's books, changed in place, with a trigger index and a due-time heap.

    Args:
        books: the starting books (e.g. loaded from storage); copied, not kept.
        instruments: the tradable instruments by symbol.
        rules: latency, slippage and the partial-fill cap.

    Not thread-safe: the caller serialises every call (``PaperBroker`` holds its lock).
    """

    def __init__(
        self, books: VenueBooks, *, instruments: Mapping[str, Instrument], rules: VenueRules
    ) -> None:
        self._instruments = instruments
        self._rules = rules
        self.working: dict[str, VenueOrder] = {}
        self.positions: dict[str, VenuePosition] = dict(books.positions)
        self.quotes: dict[str, Tick] = dict(books.quotes)
        self.next_order_seq = books.next_order_seq
        self.next_trade_seq = books.next_trade_seq
        self._index: dict[str, _InstrumentIndex] = {}
        self._placed: dict[str, tuple[str, int, _Entry | None]] = {}
        self._due: list[DueAction] = []
        self._queued: dict[tuple[str, str], int] = {}  # (kind, id) -> due_ns in the heap
        # Instruments whose orders changed since their last matching chance: the next pass
        # looks at them even without a tick (every instrument at first: nothing was matched).
        self._dirty: set[str] = set(self.quotes)
        for order in sorted(books.working.values(), key=lambda item: item.seq):
            self._put(order)

    # -----------------------------------------------------------------------------------------
    # VIEWS
    # -----------------------------------------------------------------------------------------

    def snapshot(self) -> VenueBooks:
        """Return an immutable copy of the books."""
        return VenueBooks(
            working=dict(self.working),
            positions=dict(self.positions),
            quotes=dict(self.quotes),
            next_order_seq=self.next_order_seq,
            next_trade_seq=self.next_trade_seq,
        )

    # -----------------------------------------------------------------------------------------
    # REQUESTS (same rules as venue.receive_order / request_cancel / request_modify)
    # -----------------------------------------------------------------------------------------

    def receive(self, request: OrderRequest, *, now_ns: int) -> VenueOrder:
        """Put a new order on the book as received (not yet acknowledged).

        Raises:
            VenueRejection: a bad request or a working duplicate; the books are unchanged.
        """
        existing = self.working.get(request.client_order_id)
        if existing is not None:
            raise VenueRejection(
                "DUPLICATE_CLIENT_ORDER_ID",
                f"client_order_id={request.client_order_id} "
                f"venue_order_id={existing.venue_order_id} status={existing.status.value}",
                client_order_id=request.client_order_id,
            )
        order = new_order(
            request,
            seq=self.next_order_seq,
            instruments=self._instruments,
            rules=self._rules,
            now_ns=now_ns,
        )
        self.next_order_seq += 1
        self._put(order)
        return order

    def cancel(self, client_order_id: str, *, now_ns: int) -> VenueOrder | None:
        """Schedule a cancel; ``None`` when there is nothing to do (see ``cancel_requested``)."""
        order = cancel_requested(
            self.working.get(client_order_id), rules=self._rules, now_ns=now_ns
        )
        if order is not None:
            self._put(order)
        return order

    def modify(self, client_order_id: str, quantity: int, *, now_ns: int) -> VenueOrder:
        """Schedule a quantity change.

        Raises:
            VenueRejection: as ``venue.request_modify``; the books are unchanged.
        """
        order = modify_requested(
            self.working.get(client_order_id),
            client_order_id,
            quantity,
            instruments=self._instruments,
            rules=self._rules,
            now_ns=now_ns,
        )
        self._put(order)
        return order

    def set_quote(self, tick: Tick) -> None:
        """Take a quote without matching (a passive venue keeps its quotes current)."""
        if tick.instrument in self._instruments:
            self.quotes[tick.instrument] = tick
            self._dirty.add(tick.instrument)

    # -----------------------------------------------------------------------------------------
    # PASSES
    # -----------------------------------------------------------------------------------------

    def step(self, *, now_ns: int, tick: Tick | None = None) -> PassChanges:
        """Run one pass at ``now_ns``, as ``venue.step`` does, changing these books in place."""
        has_due = bool(self._due) and self._due[0][0] <= now_ns
        if not has_due:
            # The common tick: nothing due, and (usually) no order the quote crosses. Then the
            # pass changes nothing but the quote, and no pass state need be built.
            if tick is not None and tick.instrument in self._instruments:
                self.quotes[tick.instrument] = tick
                self._dirty.add(tick.instrument)
            if not self._candidates(self._dirty):
                self._dirty = set()
                return _NO_CHANGES
            tick = None  # applied above
        touched: set[str] = set()

        def on_store(order: VenueOrder) -> None:
            self._place(order)
            touched.add(order.instrument)

        run = MatchingPass(
            working=self.working,
            positions=self.positions,
            quotes=self.quotes,
            next_trade_seq=self.next_trade_seq,
            now_ns=now_ns,
            instruments=self._instruments,
            rules=self._rules,
            on_store=on_store,
        )
        if has_due:
            run.apply_due(self._pop_due(now_ns))
        if tick is not None and tick.instrument in self._instruments:
            self.quotes[tick.instrument] = tick
            self._dirty.add(tick.instrument)
        candidates = self._candidates(self._dirty | touched)
        if candidates:
            orders = [self.working[client_order_id] for client_order_id in candidates]
            orders.sort(key=lambda order: order.seq)
            run.match_all(orders)
        self.next_trade_seq = run.next_trade_seq
        # An order changed in this pass may be crossable by the same quote in the next one (a
        # partial fill, a modify, an ack that filled at once): look there again.
        self._dirty = touched
        return run.changes()

    def _candidates(self, instruments: set[str]) -> set[str]:
        """Ids of the orders the current quotes of ``instruments`` may cross."""
        candidates: set[str] = set()
        for instrument in instruments:
            index = self._index.get(instrument)
            quote = self.quotes.get(instrument)
            if index is not None and quote is not None:
                candidates.update(index.crossed(quote))
        return candidates

    def _pop_due(self, now_ns: int) -> list[DueAction]:
        # Take every entry due by now and keep those still true of the books before the pass
        # (what the reference computes up front), once each, in the reference's order.
        due: dict[tuple[str, str], DueAction] = {}
        while self._due and self._due[0][0] <= now_ns:
            entry = heapq.heappop(self._due)
            due_ns, _rank, _seq, kind, client_order_id = entry
            if self._queued.get((kind, client_order_id)) == due_ns:
                del self._queued[(kind, client_order_id)]
            order = self.working.get(client_order_id)
            if order is not None and entry in due_actions_of(order, now_ns):
                due[(kind, client_order_id)] = entry
        return sorted(due.values())

    # -----------------------------------------------------------------------------------------
    # INDEX UPKEEP
    # -----------------------------------------------------------------------------------------

    def _put(self, order: VenueOrder) -> None:
        """A request changed ``order`` (outside a pass): store it, index it, queue its dues."""
        self.working[order.client_order_id] = order
        self._place(order)

    def _place(self, order: VenueOrder) -> None:
        client_order_id = order.client_order_id
        for kind, due_ns in (
            (ACK, None if order.is_accepted else order.ack_due_ns),
            (MODIFY, order.modify_due_ns),
            (CANCEL, order.cancel_due_ns),
        ):
            # Queued once per due time; an entry whose order moved on (filled, cancelled, a
            # later modify) is dropped when it comes up.
            if due_ns is not None and self._queued.get((kind, client_order_id)) != due_ns:
                self._queued[(kind, client_order_id)] = due_ns
                heapq.heappush(
                    self._due, (due_ns, ACTION_RANK[kind], order.seq, kind, client_order_id)
                )
        placement = _placement(order)
        previous = self._placed.get(client_order_id)
        wanted = None if placement is None else (order.instrument, *placement)
        if previous == wanted:
            return
        if previous is not None:
            self._unindex(client_order_id, previous)
        if wanted is None:
            self._placed.pop(client_order_id, None)
            return
        instrument, bucket, entry = wanted
        index = self._index.get(instrument)
        if index is None:
            index = self._index[instrument] = _InstrumentIndex()
        if bucket == _ANY_QUOTE:
            index.any_quote.add(client_order_id)
        else:
            assert entry is not None
            index.levels[bucket].add(entry)
        self._placed[client_order_id] = wanted

    def _unindex(self, client_order_id: str, placed: tuple[str, int, _Entry | None]) -> None:
        instrument, bucket, entry = placed
        index = self._index[instrument]
        if bucket == _ANY_QUOTE:
            index.any_quote.discard(client_order_id)
            return
        assert entry is not None
        index.levels[bucket].remove(entry)
