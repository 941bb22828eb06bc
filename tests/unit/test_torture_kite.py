"""The checks of ``python -m tools.torture_kite`` on hand-made reads of Kite and of the engine,
so that a check that can never fail would be noticed (the tool itself runs for minutes per
trial and is not part of the suite; see docs/torture.md)."""

from __future__ import annotations

from typing import Any

from tools.torture_kite import KiteView, kite_violations


def order(
    tag: str, order_type: str, status: str, quantity: int = 200, filled: int = 0, side: str = "SELL"
) -> dict:
    return {
        "tag": tag,
        "tradingsymbol": "INFY",
        "transaction_type": side,
        "order_type": order_type,
        "status": status,
        "quantity": quantity,
        "filled_quantity": filled,
    }


def kinds(found: list[dict[str, Any]]) -> list[str]:
    return [violation["kind"] for violation in found]


def test_a_protected_position_the_engine_holds_too_is_clean() -> None:
    view = KiteView(
        net={"INFY": 200},
        orders=[
            order("aE", "MARKET", "COMPLETE", filled=200),
            order("aS", "SL-M", "TRIGGER PENDING"),
            order("aT", "LIMIT", "OPEN"),
        ],
    )
    assert kite_violations(view, {"INFY": 200}, [], flatten_unfinished_at_kill=False) == []


def test_the_takeover_bug_reads_as_drift_and_an_unprotected_short() -> None:
    # What the first Kite trials found: both exits filled, the engine still long.
    view = KiteView(
        net={"INFY": -200},
        orders=[
            order("aE", "MARKET", "COMPLETE", filled=200),
            order("aS", "SL-M", "COMPLETE", filled=200),
            order("aT", "LIMIT", "COMPLETE", filled=200),
        ],
    )
    found = kite_violations(view, {}, ["RECONCILE_DRIFT"], flatten_unfinished_at_kill=False)
    assert kinds(found) == ["position_drift", "unprotected_position", "drift_pause"]


def test_a_client_id_placed_twice_is_reported() -> None:
    view = KiteView(
        net={}, orders=[order("aE", "MARKET", "COMPLETE"), order("aE", "MARKET", "REJECTED")]
    )
    assert kinds(kite_violations(view, {}, [], flatten_unfinished_at_kill=False)) == [
        "duplicate_client_id"
    ]


def test_a_killed_flatten_must_end_flat_with_its_pause_kept() -> None:
    left = KiteView(net={}, orders=[order("aT", "LIMIT", "OPEN")])
    found = kite_violations(left, {}, ["OPERATOR"], flatten_unfinished_at_kill=True)
    assert kinds(found) == ["flatten_unfinished", "flatten_pause_lost"]
    done = KiteView(net={}, orders=[order("aT", "LIMIT", "CANCELLED")])
    assert kite_violations(done, {}, ["FLATTEN"], flatten_unfinished_at_kill=True) == []


def test_stops_of_opposite_brackets_on_one_symbol_add_up_signed() -> None:
    view = KiteView(
        net={"INFY": 100},
        orders=[
            order("aS", "SL-M", "TRIGGER PENDING", quantity=200, side="SELL"),  # long 200
            order("bS", "SL-M", "TRIGGER PENDING", quantity=100, side="BUY"),  # short 100
        ],
    )
    assert kite_violations(view, {"INFY": 100}, [], flatten_unfinished_at_kill=False) == []
