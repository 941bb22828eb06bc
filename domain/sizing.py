"""Position sizing: how many units a plan may trade for a given risk to its stop."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

__all__ = ["risk_based_quantity"]


def risk_based_quantity(
    *,
    capital: Decimal,
    risk_pct: Decimal,
    entry: Decimal,
    stop: Decimal,
    lot_size: int,
    max_quantity: int,
) -> int:
    """Return the largest whole-lot quantity whose loss to the stop stays within the budget.

    The budget is ``capital * risk_pct / 100`` rupees; each unit loses ``|entry - stop|``.
    The result is floored to whole lots (rounding must never add risk) and then capped at
    ``max_quantity``, itself floored to whole lots.

    Args:
        capital: account capital, rupees, >= 0.
        risk_pct: percent of capital one plan may lose, >= 0.
        entry: expected entry price.
        stop: stop-loss price.
        lot_size: units per lot, > 0.
        max_quantity: cap in units, >= 0.

    Returns:
        A multiple of ``lot_size``; 0 when the stop distance is 0 or one lot is already too
        much.

    Raises:
        ValueError: on a non-positive lot size or a negative capital, percent or cap.
    """
    if lot_size <= 0:
        raise ValueError(f"lot_size must be positive: lot_size={lot_size}")
    if capital < 0 or risk_pct < 0 or max_quantity < 0:
        raise ValueError(
            f"sizing inputs must not be negative: capital={capital} risk_pct={risk_pct} "
            f"max_quantity={max_quantity}"
        )
    per_unit = abs(entry - stop)
    if per_unit == 0:
        return 0
    budget = capital * risk_pct / Decimal(100)
    units = int((budget / per_unit).to_integral_value(rounding=ROUND_FLOOR))
    lots = min(units // lot_size, max_quantity // lot_size)
    return lots * lot_size
