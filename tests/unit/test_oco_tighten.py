"""Tightening a stop (the 15:20 schedule): the price rule and the cancel-and-replace."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.oco import (
    BracketStatus,
    CancelLeg,
    MoveStop,
    PlaceLeg,
    is_protected,
    on_order_update,
    tighten_stop,
    tightened_stop_price,
    working_leg_ids,
)
from tests.unit.test_oco import ENTRY, STOP, STOP_1, TARGET, Book

TICK = Decimal("0.05")


def test_break_even_for_a_long_rounds_up_to_a_tick_below_the_bid() -> None:
    price = tightened_stop_price(
        side=Side.BUY,
        current_stop=Decimal("98"),
        average_entry=Decimal("100.02"),
        bid=Decimal("101"),
        ask=Decimal("101.05"),
        tick_size=TICK,
        mode="break_even",
    )
    assert price == Decimal("100.05")


def test_break_even_above_the_bid_leaves_a_losing_long_stop_alone() -> None:
    # The long is under water: a stop at break-even would trigger at once.
    assert (
        tightened_stop_price(
            side=Side.BUY,
            current_stop=Decimal("98"),
            average_entry=Decimal("100"),
            bid=Decimal("99.50"),
            ask=Decimal("99.55"),
            tick_size=TICK,
            mode="break_even",
        )
        is None
    )


def test_a_stop_at_the_bid_would_trigger_at_once_so_it_is_not_moved() -> None:
    assert (
        tightened_stop_price(
            side=Side.BUY,
            current_stop=Decimal("98"),
            average_entry=Decimal("100"),
            bid=Decimal("100"),
            ask=Decimal("100.05"),
            tick_size=TICK,
            mode="break_even",
        )
        is None
    )


def test_a_trail_for_a_short_sits_above_the_ask() -> None:
    price = tightened_stop_price(
        side=Side.SELL,
        current_stop=Decimal("104"),
        average_entry=Decimal("102"),
        bid=Decimal("100.95"),
        ask=Decimal("101"),
        tick_size=TICK,
        mode="trail",
        trail_ticks=10,
    )
    assert price == Decimal("101.50")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="TIGHTEN_MODE"):
        tightened_stop_price(
            side=Side.BUY,
            current_stop=Decimal("98"),
            average_entry=Decimal("100"),
            bid=Decimal("101"),
            ask=Decimal("101.05"),
            tick_size=TICK,
            mode="loosen",
        )


_PRICES = st.integers(min_value=1, max_value=100_000).map(lambda ticks: ticks * TICK)


@settings(max_examples=400, deadline=None)
@given(
    side=st.sampled_from([Side.BUY, Side.SELL]),
    stop=_PRICES,
    entry=st.decimals(min_value=1, max_value=5000, places=4),
    bid=_PRICES,
    spread=st.integers(min_value=1, max_value=5),
    mode=st.sampled_from(["break_even", "trail"]),
    trail=st.integers(min_value=1, max_value=50),
)
def test_a_tightened_stop_only_moves_toward_the_price_and_never_triggers_at_once(
    side: Side,
    stop: Decimal,
    entry: Decimal,
    bid: Decimal,
    spread: int,
    mode: str,
    trail: int,
) -> None:
    ask = bid + spread * TICK
    price = tightened_stop_price(
        side=side,
        current_stop=stop,
        average_entry=entry,
        bid=bid,
        ask=ask,
        tick_size=TICK,
        mode=mode,
        trail_ticks=trail,
    )
    if price is None:
        return
    assert price % TICK == 0
    if side is Side.BUY:
        assert stop < price < bid
    else:
        assert ask < price < stop


def open_long() -> Book:
    book = Book(entry_price=Decimal("100"), stop_price=Decimal("98"))
    book.fill(ENTRY, 10, "100")
    assert book.b.status is BracketStatus.OPEN
    return book


def test_tighten_cancels_the_stop_then_replaces_it_at_the_new_price() -> None:
    book = open_long()
    actions = tighten_stop(book.b, book.orders, Decimal("100"), book.tick())
    assert actions == [CancelLeg(client_order_id=STOP)]
    book.execute(actions)
    # While the cancel is pending: no second stop, the target keeps working.
    assert book.update() == []
    assert set(working_leg_ids(book.b, book.orders)) == {STOP, TARGET}
    placed = book.broker_says(STOP, OrderStatus.CANCELLED)
    assert placed == [
        PlaceLeg(
            leg=LegKind.STOP,
            client_order_id=STOP_1,
            side=Side.SELL,
            order_type=OrderType.STOP,
            quantity=10,
            trigger_price=Decimal("100"),
        )
    ]
    book.broker_says(STOP_1, OrderStatus.ACCEPTED)
    assert is_protected(book.b, book.orders)
    # Again: the stop is already there.
    assert tighten_stop(book.b, book.orders, Decimal("100"), book.tick()) == []


def test_tighten_leaves_a_bracket_without_a_working_stop_alone() -> None:
    book = Book()  # entry working, nothing filled: no stop yet
    assert tighten_stop(book.b, book.orders, Decimal("99"), book.tick()) == []
    assert book.b.stop_price == Decimal("98")
    flattening = open_long()
    flattening.flatten("operator")
    before = flattening.b.stop_price
    assert tighten_stop(flattening.b, flattening.orders, Decimal("99"), flattening.tick()) == []
    assert flattening.b.stop_price == before


def test_with_levels_on_the_position_the_new_stop_goes_first_and_supersedes_the_old() -> None:
    # IG: the stop is the position's one level. Cancelling first would leave it without a
    # stop for a round trip; the replacement moves the level in one request instead.
    book = open_long()
    book.levels_on_position = True
    book.broker_says(STOP, OrderStatus.ACCEPTED)
    actions = tighten_stop(
        book.b, book.orders, Decimal("100"), book.tick(), levels_on_position=True
    )
    assert actions == [
        PlaceLeg(
            leg=LegKind.STOP,
            client_order_id=STOP_1,
            side=Side.SELL,
            order_type=OrderType.STOP,
            quantity=10,
            trigger_price=Decimal("100"),
        )
    ]
    book.execute(actions)
    assert book.update() == []  # the old stop is not cancelled: the venue supersedes it
    # A second tighten while the move is unanswered asks nothing.
    assert (
        tighten_stop(book.b, book.orders, Decimal("100.5"), book.tick(), levels_on_position=True)
        == []
    )
    book.broker_says(STOP_1, OrderStatus.ACCEPTED)
    assert book.broker_says(STOP, OrderStatus.CANCELLED) == []  # superseded at the venue
    assert set(working_leg_ids(book.b, book.orders)) == {STOP_1, TARGET}
    assert is_protected(book.b, book.orders)


def test_with_levels_on_the_position_a_refused_move_leaves_the_old_stop_protecting() -> None:
    book = open_long()
    book.levels_on_position = True
    book.broker_says(STOP, OrderStatus.ACCEPTED)
    book.execute(
        tighten_stop(book.b, book.orders, Decimal("100"), book.tick(), levels_on_position=True)
    )
    book.broker_says(STOP_1, OrderStatus.REJECTED, "ATTACHED_ORDER_LEVEL_ERROR")
    assert STOP in working_leg_ids(book.b, book.orders)  # the old level still at the venue


def test_a_stop_the_broker_changes_in_place_is_moved_in_one_request_never_cancelled() -> None:
    # Kite: PUT the working SL-M's trigger. No round trip without a stop, no second stop.
    book = open_long()
    book.stop_in_place = True
    book.broker_says(STOP, OrderStatus.ACCEPTED)
    actions = tighten_stop(book.b, book.orders, Decimal("100"), book.tick(), stop_in_place=True)
    assert actions == [MoveStop(client_order_id=STOP, trigger_price=Decimal("100"))]
    assert book.b.stop_price == Decimal("100")
    # Until the broker has taken it the bracket asks again (the order layer answers that from
    # the move it has in flight, or sends it again after a restart or a refusal).
    assert on_order_update(book.b, book.orders, book.tick(), stop_in_place=True) == actions
    book.execute(actions)  # the broker took it: the books follow
    assert book.update() == []
    assert book.orders[STOP].trigger_price == Decimal("100")
    assert set(working_leg_ids(book.b, book.orders)) == {STOP, TARGET}
    assert is_protected(book.b, book.orders)


def test_a_stop_not_accepted_yet_is_not_moved() -> None:
    book = open_long()  # the stop is SUBMITTED: the broker has not answered its placing
    assert tighten_stop(book.b, book.orders, Decimal("100"), book.tick(), stop_in_place=True) == []
    assert book.b.stop_price == Decimal("98")


def test_a_stop_moved_in_place_then_resized_keeps_its_new_trigger() -> None:
    book = open_long()
    book.stop_in_place = True
    book.broker_says(STOP, OrderStatus.ACCEPTED)
    book.broker_says(TARGET, OrderStatus.ACCEPTED)
    book.execute(tighten_stop(book.b, book.orders, Decimal("100"), book.tick(), stop_in_place=True))
    book.fill(TARGET, 4, "104")  # the target partly fills: the stop shrinks to the rest
    stop = book.orders[STOP]
    assert (stop.quantity, stop.trigger_price) == (6, Decimal("100"))
