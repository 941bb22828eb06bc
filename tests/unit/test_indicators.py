"""EMA, Wilder ATR and risk-based sizing against hand-computed values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.indicators import Atr, Ema
from domain.sizing import risk_based_quantity

D = Decimal


class TestEma:
    def test_is_none_until_period_values_then_seeds_with_their_average(self) -> None:
        ema = Ema(3)

        assert ema.update(D("10")) is None
        assert ema.update(D("11")) is None
        assert ema.update(D("12")) == D("11")

    def test_follows_alpha_two_over_period_plus_one_after_the_seed(self) -> None:
        ema = Ema(3)
        for price in ("10", "11", "12"):
            ema.update(D(price))

        # alpha = 0.5: 11 + 0.5 * (13 - 11) = 12, then 12 + 0.5 * (10 - 12) = 11
        assert ema.update(D("13")) == D("12")
        assert ema.update(D("10")) == D("11")
        assert ema.value == D("11")

    def test_period_one_is_the_price_itself(self) -> None:
        ema = Ema(1)

        assert ema.update(D("101.5")) == D("101.5")
        assert ema.update(D("99")) == D("99")

    def test_refuses_a_period_below_one(self) -> None:
        with pytest.raises(ValueError, match="period=0"):
            Ema(0)


class TestAtr:
    def test_seeds_with_the_average_true_range_then_smooths_like_wilder(self) -> None:
        atr = Atr(3)

        # TR1 = 12 - 10 = 2 (no previous close)
        assert atr.update(D("12"), D("10"), D("11")) is None
        # TR2 = max(13 - 11, |13 - 11|, |11 - 11|) = 2
        assert atr.update(D("13"), D("11"), D("12")) is None
        # TR3 = max(12 - 9, |12 - 12|, |9 - 12|) = 3; ATR = (2 + 2 + 3) / 3
        assert atr.update(D("12"), D("9"), D("10")) == D(7) / D(3)
        # TR4 = max(16 - 14, |16 - 10|, |14 - 10|) = 6 (a gap up counts)
        # ATR = (7/3 * 2 + 6) / 3 = 32/9
        assert atr.update(D("16"), D("14"), D("15")) == (D(7) / D(3) * 2 + 6) / 3
        assert atr.value is not None
        assert abs(atr.value - D(32) / D(9)) < D("1e-20")

    def test_refuses_a_bar_whose_high_is_below_its_low(self) -> None:
        with pytest.raises(ValueError, match="high=9 low=10"):
            Atr(3).update(D("9"), D("10"), D("9.5"))


class TestRiskBasedQuantity:
    def test_floors_the_budget_over_the_stop_distance_to_whole_lots(self) -> None:
        # budget = 1,000,000 * 0.1 % = 1000; per unit 12.5 -> 80 units -> 1 lot of 50
        quantity = risk_based_quantity(
            capital=D("1000000"),
            risk_pct=D("0.1"),
            entry=D("24000"),
            stop=D("23987.5"),
            lot_size=50,
            max_quantity=500,
        )

        assert quantity == 50

    def test_is_zero_when_one_lot_already_risks_more_than_the_budget(self) -> None:
        quantity = risk_based_quantity(
            capital=D("1000000"),
            risk_pct=D("0.1"),
            entry=D("24000"),
            stop=D("23970"),
            lot_size=50,
            max_quantity=500,
        )

        assert quantity == 0

    def test_is_zero_when_the_stop_equals_the_entry(self) -> None:
        quantity = risk_based_quantity(
            capital=D("1000000"),
            risk_pct=D("1"),
            entry=D("100"),
            stop=D("100"),
            lot_size=1,
            max_quantity=500,
        )

        assert quantity == 0

    def test_caps_at_the_max_quantity_rounded_down_to_lots(self) -> None:
        quantity = risk_based_quantity(
            capital=D("1000000"),
            risk_pct=D("1"),
            entry=D("100"),
            stop=D("99.95"),
            lot_size=15,
            max_quantity=100,
        )

        assert quantity == 90

    def test_works_for_a_short_whose_stop_is_above_the_entry(self) -> None:
        # budget 1000; per unit 3 -> 333 units
        quantity = risk_based_quantity(
            capital=D("1000000"),
            risk_pct=D("0.1"),
            entry=D("1800"),
            stop=D("1803"),
            lot_size=1,
            max_quantity=500,
        )

        assert quantity == 333

    def test_refuses_a_non_positive_lot_size(self) -> None:
        with pytest.raises(ValueError, match="lot_size=0"):
            risk_based_quantity(
                capital=D("1000"),
                risk_pct=D("1"),
                entry=D("10"),
                stop=D("9"),
                lot_size=0,
                max_quantity=10,
            )
