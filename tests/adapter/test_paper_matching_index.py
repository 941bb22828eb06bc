"""The indexed books (``matching.IndexedBooks``) match exactly as the reference linear scan
(``venue.step``): on random books, requests, quotes and time steps, every pass gives the same
changed orders, fills, positions and reports, and the books stay equal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.brokers.paper.matching import IndexedBooks
from adapters.brokers.paper.venue import (
    VenueBooks,
    VenueRejection,
    VenueRules,
    receive_order,
    request_cancel,
    request_modify,
    step,
)
from domain.enums import OrderType, Side
from domain.instruments import Instrument
from domain.messages import OrderRequest, Tick

SYMBOLS = ("AAA", "BBB", "CCC")
INSTRUMENTS = {
    symbol: Instrument(
        symbol=symbol,
        lot_size=lot,
        tick_size=Decimal("0.05"),
        freeze_quantity=1000,
        reference_price=Decimal("100"),
    )
    for symbol, lot in zip(SYMBOLS, (1, 1, 2), strict=True)
}
MS = 1_000_000
TICK = Decimal("0.05")

# Prices on a narrow grid around 100 (so quotes often land exactly on a limit or a trigger)
# and a few off the tick grid (fills round to ticks).
prices = st.one_of(
    st.integers(min_value=-4, max_value=4).map(lambda steps: Decimal(100) + steps * TICK),
    st.sampled_from([Decimal("99.93"), Decimal("100.03"), Decimal("100.5")]),
)
submits = st.tuples(
    st.just("submit"),
    st.sampled_from(SYMBOLS),
    st.sampled_from(list(Side)),
    st.sampled_from([OrderType.MARKET, OrderType.LIMIT, OrderType.STOP]),
    st.integers(min_value=0, max_value=6),  # quantity (0 and odd lots are refused on CCC)
    prices,
)
cancels = st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=30))
modifies = st.tuples(st.just("modify"), st.integers(min_value=0, max_value=30), st.integers(0, 8))
ticks = st.tuples(
    st.just("tick"),
    st.sampled_from(SYMBOLS),
    prices,
    st.sampled_from([Decimal(0), TICK, TICK, 2 * TICK, Decimal("0.5")]),
    st.sampled_from(["both", "both", "both", "no_bid", "no_ask"]),
)
waits = st.tuples(st.just("wait"), st.integers(min_value=0, max_value=3))
passes = st.tuples(st.just("pass"))
operations = st.lists(
    st.one_of(submits, submits, cancels, modifies, ticks, ticks, ticks, waits, passes),
    min_size=20,
    max_size=120,
)
rule_sets = st.builds(
    VenueRules,
    latency_ns=st.sampled_from([0, 1 * MS, 2 * MS]),
    slippage_ticks=st.sampled_from([0, 1]),
    partial_fill_max=st.sampled_from([None, 1, 2]),
)


def make_tick(symbol: str, bid: Decimal, spread: Decimal, shape: str, now_ns: int) -> Tick:
    ask = bid + spread
    return Tick(
        instrument=symbol,
        bid=Decimal(0) if shape == "no_bid" else bid,
        ask=Decimal(0) if shape == "no_ask" else ask,
        last=bid,
        ts_event=now_ns,
        ts_init=now_ns,
    )


def outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except VenueRejection as rejection:
        return ("rejected", rejection.code)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets, script=operations)
def test_indexed_matching_gives_exactly_the_linear_scans_changes(
    rules: VenueRules, script: list[tuple[Any, ...]]
) -> None:
    reference = VenueBooks()
    indexed = IndexedBooks(VenueBooks(), instruments=INSTRUMENTS, rules=rules)
    now_ns = 1_000 * MS
    ids: list[str] = []
    for number, operation in enumerate(script):
        kind = operation[0]
        if kind == "submit":
            _, symbol, side, order_type, quantity, price = operation
            request = OrderRequest(
                client_order_id=f"C{number}",
                instrument=symbol,
                side=side,
                order_type=order_type,
                quantity=quantity,
                price=price if order_type is OrderType.LIMIT else None,
                trigger_price=price if order_type is OrderType.STOP else None,
            )
            expected = outcome(
                receive_order,
                reference,
                request,
                instruments=INSTRUMENTS,
                rules=rules,
                now_ns=now_ns,
            )
            actual = outcome(indexed.receive, request, now_ns=now_ns)
            if isinstance(expected, tuple) and expected[0] == "rejected":
                assert actual == expected
            else:
                reference, order = expected
                assert actual == order
                ids.append(order.client_order_id)
        elif kind in ("cancel", "modify"):
            if not ids:
                continue
            client_order_id = ids[operation[1] % len(ids)]
            if kind == "cancel":
                reference, order = request_cancel(
                    reference, client_order_id, rules=rules, now_ns=now_ns
                )
                assert indexed.cancel(client_order_id, now_ns=now_ns) == order
            else:
                quantity = operation[2]
                expected = outcome(
                    request_modify,
                    reference,
                    client_order_id,
                    quantity,
                    instruments=INSTRUMENTS,
                    rules=rules,
                    now_ns=now_ns,
                )
                actual = outcome(indexed.modify, client_order_id, quantity, now_ns=now_ns)
                if isinstance(expected, tuple) and expected[0] == "rejected":
                    assert actual == expected
                else:
                    reference, order = expected
                    assert actual == order
        elif kind == "wait":
            now_ns += operation[1] * MS
        else:
            tick = None
            if kind == "tick":
                _, symbol, bid, spread, shape = operation
                tick = make_tick(symbol, bid, spread, shape, now_ns)
            result = step(reference, now_ns=now_ns, instruments=INSTRUMENTS, rules=rules, tick=tick)
            changes = indexed.step(now_ns=now_ns, tick=tick)
            assert changes.reports == result.reports
            assert changes.fills == result.fills
            assert changes.orders == result.orders
            assert changes.positions == result.positions
            reference = result.books
        assert indexed.snapshot() == reference


def test_a_tick_looks_only_at_the_orders_its_quote_can_cross() -> None:
    # 200 resting orders far from the market: a quote that crosses none of them hands no order
    # to the matching rules (the reference would evaluate all 200).
    rules = VenueRules()
    books = IndexedBooks(VenueBooks(), instruments=INSTRUMENTS, rules=rules)
    for index in range(200):
        side = Side.BUY if index % 2 else Side.SELL
        books.receive(
            OrderRequest(
                client_order_id=f"R{index}",
                instrument="AAA",
                side=side,
                order_type=OrderType.LIMIT,
                quantity=1,
                price=Decimal("90") if side is Side.BUY else Decimal("110"),
            ),
            now_ns=0,
        )
    books.step(now_ns=0)
    matched: list[str] = []
    original_match = _spy_on_match(matched)
    try:
        books.step(now_ns=1, tick=make_tick("AAA", Decimal("100"), Decimal("0.05"), "both", 1))
        assert matched == []
        changes = books.step(
            now_ns=2, tick=make_tick("AAA", Decimal("89.95"), Decimal("0.05"), "both", 2)
        )
        assert sorted(matched) == sorted(f"R{index}" for index in range(1, 200, 2))
        assert len(changes.fills) == 100
    finally:
        _restore_match(original_match)


def _spy_on_match(matched: list[str]) -> Any:
    from adapters.brokers.paper import venue

    original = venue.MatchingPass.match

    def spy(self: Any, order: Any) -> None:
        matched.append(order.client_order_id)
        original(self, order)

    venue.MatchingPass.match = spy  # type: ignore[method-assign]
    return original


def _restore_match(original: Any) -> None:
    from adapters.brokers.paper import venue

    venue.MatchingPass.match = original  # type: ignore[method-assign]
