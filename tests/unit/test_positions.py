"""Position arithmetic: increases, reductions, closes, flips, and exact PnL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.enums import Side
from domain.positions import Position, apply_fill, flat, unrealized_pnl

__all__: list[str] = []

D = Decimal


def test_a_flat_position_has_nothing_open_or_realized() -> None:
    position = flat("NIFTY")
    assert position.quantity == 0
    assert position.realized_pnl == 0
    assert unrealized_pnl(position, D("123")) == 0


def test_buys_increase_a_long_and_average_its_price() -> None:
    position = apply_fill(flat("NIFTY"), Side.BUY, 2, D("100"))
    position = apply_fill(position, Side.BUY, 2, D("101"))
    assert position.quantity == 4
    assert position.average_price == D("100.5")
    assert position.realized_pnl == 0


def test_a_sale_reduces_a_long_and_realizes_against_the_average() -> None:
    position = apply_fill(flat("NIFTY"), Side.BUY, 4, D("100.5"))
    position = apply_fill(position, Side.SELL, 1, D("102"))
    assert position.quantity == 3
    assert position.average_price == D("100.5")
    assert position.realized_pnl == D("1.5")


def test_a_buy_back_reduces_a_short_and_realizes_the_fall_as_profit() -> None:
    position = apply_fill(flat("NIFTY"), Side.SELL, 3, D("100"))
    position = apply_fill(position, Side.BUY, 2, D("98.5"))
    assert position.quantity == -1
    assert position.realized_pnl == D("3")
    assert unrealized_pnl(position, D("99")) == D("1")


def test_a_full_close_leaves_the_position_flat_with_the_pnl_realized() -> None:
    position = apply_fill(flat("NIFTY"), Side.BUY, 3, D("100"))
    position = apply_fill(position, Side.SELL, 3, D("99"))
    assert position.quantity == 0
    assert position.average_price == 0
    assert position.realized_pnl == D("-3")


def test_a_fill_through_zero_closes_and_opens_the_rest_the_other_way() -> None:
    position = apply_fill(flat("NIFTY"), Side.BUY, 2, D("100"))
    position = apply_fill(position, Side.SELL, 5, D("101"))
    assert position.quantity == -3
    assert position.average_price == D("101")
    assert position.realized_pnl == D("2")


def test_a_partial_close_of_an_uneven_average_loses_nothing_on_the_full_close() -> None:
    # Average 100.0833..., not a finite decimal; the round trip must still be exact cash.
    position = apply_fill(flat("NIFTY"), Side.BUY, 1, D("100.05"))
    position = apply_fill(position, Side.BUY, 2, D("100.10"))
    position = apply_fill(position, Side.SELL, 1, D("101"))
    position = apply_fill(position, Side.SELL, 2, D("101"))
    assert position.quantity == 0
    assert position.realized_pnl == D("303") - D("300.25")


def test_a_position_from_a_broker_report_without_cost_basis_uses_its_average() -> None:
    position = Position(
        instrument="NIFTY", quantity=-2, average_price=D("100"), realized_pnl=D("0")
    )
    assert unrealized_pnl(position, D("99")) == D("2")
    position = apply_fill(position, Side.BUY, 2, D("99"))
    assert position.realized_pnl == D("2")


def test_refuses_a_fill_quantity_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="quantity=0"):
        apply_fill(flat("NIFTY"), Side.BUY, 0, D("100"))


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 9), st.integers(1, 4000)),
        max_size=40,
    ),
    mark_ticks=st.integers(1, 4000),
)
def test_realized_plus_unrealized_always_equals_the_cash_flow_exactly(
    fills: list[tuple[Side, int, int]], mark_ticks: int
) -> None:
    tick = D("0.05")
    position = flat("NIFTY")
    cash = D(0)
    net = 0
    for side, quantity, ticks in fills:
        price = ticks * tick
        position = apply_fill(position, side, quantity, price)
        cash -= side.sign * quantity * price
        net += side.sign * quantity
        assert position.quantity == net
    mark = mark_ticks * tick
    assert position.realized_pnl + unrealized_pnl(position, mark) == cash + net * mark
    if net == 0:
        assert position.realized_pnl == cash
