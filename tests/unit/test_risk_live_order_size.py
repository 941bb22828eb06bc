"""LIVE_MAX_ORDER_SIZE in the pure entry rules (domain/risk.py): LIVE only, after sizing,
denies rather than reduces, and an unset limit blocks every LIVE entry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.config import RiskConfig
from domain.enums import DenialCode
from domain.risk import Approval, Denial, RiskState, evaluate_entry
from tests.unit.test_risk import NOW, make_instrument, make_plan, make_portfolio, make_quote


def evaluate(quantity: int, **live: Any) -> Approval | Denial:
    decision, _state = evaluate_entry(
        make_plan(quantity=quantity),  # NIFTY in lots of 25, 1.00 to the stop
        instrument=make_instrument(),
        quote=make_quote(),
        portfolio=make_portfolio(),
        limits=RiskConfig(),
        state=RiskState(),
        now_ns=NOW,
        **live,
    )
    return decision


def test_a_live_entry_above_the_limit_is_denied_with_both_figures() -> None:
    decision = evaluate(125, live=True, live_max_order_size=Decimal("100"))
    assert decision == Denial(
        code=DenialCode.LIVE_MAX_ORDER_SIZE, detail="quantity=125 live_max_order_size=100"
    )


def test_a_live_entry_at_the_limit_passes() -> None:
    assert evaluate(100, live=True, live_max_order_size=Decimal("100")) == Approval(quantity=100)


def test_the_limit_applies_to_the_quantity_after_lot_rounding() -> None:
    # 110 rounds down to 100 (lots of 25): within a limit of 100.
    decision = evaluate(110, live=True, live_max_order_size=Decimal("100"))
    assert isinstance(decision, Approval) and decision.quantity == 100


def test_a_fractional_limit_below_one_unit_blocks_everything() -> None:
    # The SOLAT runbook's example is 0.5 (IG sizes); Vigil's quantities are whole units.
    decision = evaluate(25, live=True, live_max_order_size=Decimal("0.5"))
    assert isinstance(decision, Denial) and decision.code is DenialCode.LIVE_MAX_ORDER_SIZE


def test_an_unset_limit_blocks_every_live_entry() -> None:
    decision = evaluate(25, live=True, live_max_order_size=None)
    assert decision == Denial(
        code=DenialCode.LIVE_MAX_ORDER_SIZE, detail="quantity=25 live_max_order_size=unset"
    )


def test_outside_live_the_limit_does_not_apply() -> None:
    assert evaluate(125, live_max_order_size=Decimal("100")) == Approval(quantity=125)
    assert evaluate(125) == Approval(quantity=125)
