"""Pre-trade entry rules: each denial with its figures, the order of checks, sizing, windows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.config import RiskConfig
from domain.enums import DenialCode, OrderType, Side
from domain.instruments import Instrument
from domain.messages.market import Tick
from domain.messages.orders import PortfolioUpdated, PositionView, TradePlan
from domain.risk import (
    TRADES_PER_HOUR_WINDOW_NS,
    Approval,
    Denial,
    RiskState,
    daily_loss_breached,
    daily_loss_limit_rupees,
    evaluate_entry,
    heat_breached,
    heat_cap_rupees,
)

S = 1_000_000_000
NOW = 1_700_000_000 * S
D = Decimal

# Defaults: capital 1,000,000 -> per-trade 2,500.00, heat cap 10,000.00, daily loss 20,000.00.
# Band of NIFTY is [90.00, 110.00]; max spread 20 ticks of 0.05 = 1.00.


def make_instrument(**overrides: Any) -> Instrument:
    fields: dict[str, Any] = {
        "symbol": "NIFTY",
        "lot_size": 25,
        "tick_size": D("0.05"),
        "freeze_quantity": 1800,
        "price_band_pct": D("10"),
        "reference_price": D("100"),
        "max_spread_ticks": 20,
    }
    fields.update(overrides)
    return Instrument(**fields)


def make_plan(**overrides: Any) -> TradePlan:
    fields: dict[str, Any] = {
        "plan_client_id": "P-1",
        "strategy": "orb",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": 100,
        "entry_type": OrderType.LIMIT,
        "entry_price": D("100"),
        "stop_price": D("99"),
        "target_price": D("102"),
        "signal_ts": NOW - S,
        "ts_init": NOW,
    }
    fields.update(overrides)
    return TradePlan(**fields)


def make_quote(**overrides: Any) -> Tick:
    fields: dict[str, Any] = {
        "instrument": "NIFTY",
        "bid": D("99.95"),
        "ask": D("100.05"),
        "last": D("100"),
        "ts_event": NOW,
        "ts_init": NOW,
    }
    fields.update(overrides)
    return Tick(**fields)


def make_position(**overrides: Any) -> PositionView:
    fields: dict[str, Any] = {
        "position_id": "P-open",
        "strategy": "other",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": 50,
        "average_price": D("100"),
        "stop_price": D("98"),
        "target_price": D("104"),
        "realized_pnl": D("0"),
        "unrealized_pnl": D("0"),
        "risk_amount": D("100"),
    }
    fields.update(overrides)
    return PositionView(**fields)


def make_portfolio(**overrides: Any) -> PortfolioUpdated:
    fields: dict[str, Any] = {
        "positions": (),
        "working_entry_count": 0,
        "realized_pnl_today": D("0"),
        "unrealized_pnl": D("0"),
        "heat": D("0"),
        "ts_event": NOW,
    }
    fields.update(overrides)
    return PortfolioUpdated(**fields)


_NO_QUOTE = object()


def evaluate(
    plan: TradePlan | None = None,
    *,
    instrument: Instrument | None = None,
    quote: Any = None,
    portfolio: PortfolioUpdated | None = None,
    limits: RiskConfig | None = None,
    state: RiskState | None = None,
    now_ns: int = NOW,
) -> tuple[Approval | Denial, RiskState]:
    return evaluate_entry(
        plan or make_plan(),
        instrument=instrument or make_instrument(),
        quote=None if quote is _NO_QUOTE else (quote or make_quote()),
        portfolio=portfolio or make_portfolio(),
        limits=limits or RiskConfig(),
        state=state or RiskState(),
        now_ns=now_ns,
    )


def denial_of(result: tuple[Approval | Denial, RiskState]) -> Denial:
    decision, _ = result
    assert isinstance(decision, Denial), f"expected a denial, was {decision!r}"
    return decision


def approval_of(result: tuple[Approval | Denial, RiskState]) -> Approval:
    decision, _ = result
    assert isinstance(decision, Approval), f"expected an approval, was {decision!r}"
    return decision


class TestApproval:
    def test_approves_a_sound_plan_with_its_quantity_unchanged(self) -> None:
        approval = approval_of(evaluate())
        assert approval == Approval(quantity=100, detail="")

    def test_records_the_plan_id_and_entry_time_on_approval(self) -> None:
        _, state = evaluate()
        assert state == RiskState(recent_plans=(("P-1", NOW),), entry_times_ns=(NOW,))

    def test_records_nothing_on_denial(self) -> None:
        result = evaluate(quote=_NO_QUOTE)
        assert denial_of(result).code is DenialCode.NO_QUOTE
        assert result[1] == RiskState()

    def test_approves_a_sell_with_stop_above_and_target_below(self) -> None:
        plan = make_plan(side=Side.SELL, stop_price=D("101"), target_price=D("98"))
        assert approval_of(evaluate(plan)).quantity == 100


class TestDuplicatePlan:
    def test_denies_the_same_plan_id_inside_the_dedupe_window(self) -> None:
        _, state = evaluate()
        denial = denial_of(evaluate(state=state, now_ns=NOW + 299 * S))
        assert denial.code is DenialCode.DUPLICATE_PLAN
        assert denial.detail == f"plan_client_id=P-1 first_seen_ns={NOW}"

    def test_a_duplicate_never_records_twice_nor_extends_its_window(self) -> None:
        _, state = evaluate()
        _, after_duplicate = evaluate(state=state, now_ns=NOW + 100 * S)
        assert after_duplicate.recent_plans == (("P-1", NOW),)
        assert after_duplicate.entry_times_ns == (NOW,)

    def test_accepts_the_same_plan_id_once_the_dedupe_window_expired(self) -> None:
        _, state = evaluate()
        decision, new_state = evaluate(state=state, now_ns=NOW + 300 * S)
        assert isinstance(decision, Approval)
        assert new_state.recent_plans == (("P-1", NOW + 300 * S),)

    def test_prunes_expired_plan_ids_even_when_denying(self) -> None:
        _, state = evaluate()
        _, pruned = evaluate(state=state, quote=_NO_QUOTE, now_ns=NOW + 301 * S)
        assert pruned.recent_plans == ()
        assert pruned.entry_times_ns == (NOW,)

    def test_a_different_plan_id_is_not_a_duplicate(self) -> None:
        _, state = evaluate()
        portfolio = make_portfolio()
        plan = make_plan(plan_client_id="P-2")
        assert isinstance(evaluate(plan, state=state, portfolio=portfolio)[0], Approval)


class TestInvalidPlan:
    @pytest.mark.parametrize(
        ("overrides", "rule"),
        [
            ({"quantity": 0}, "quantity_not_positive"),
            ({"quantity": -25}, "quantity_not_positive"),
            ({"stop_price": D("0")}, "price_not_positive"),
            ({"entry_price": D("-1")}, "price_not_positive"),
            ({"entry_type": OrderType.STOP}, "entry_type_STOP_not_market_or_limit"),
            ({"stop_price": D("100")}, "buy_stop_not_below_entry"),
            ({"stop_price": D("101")}, "buy_stop_not_below_entry"),
            ({"target_price": D("99.5")}, "buy_target_not_above_entry"),
            ({"side": Side.SELL}, "sell_stop_not_above_entry"),
            (
                {"side": Side.SELL, "stop_price": D("101"), "target_price": D("100")},
                "sell_target_not_below_entry",
            ),
        ],
    )
    def test_denies_a_plan_with_a_broken_shape(self, overrides: dict[str, Any], rule: str) -> None:
        plan = make_plan(**overrides)
        denial = denial_of(evaluate(plan))
        assert denial.code is DenialCode.INVALID_PLAN
        assert denial.detail.startswith(f"rule={rule} side={plan.side.value}")
        assert f"entry={plan.entry_price} stop={plan.stop_price}" in denial.detail


class TestUnknownInstrument:
    def test_denies_a_plan_for_another_instrument(self) -> None:
        denial = denial_of(evaluate(make_plan(instrument="BANKNIFTY")))
        assert denial.code is DenialCode.UNKNOWN_INSTRUMENT
        assert denial.detail == "instrument=BANKNIFTY expected=NIFTY"


class TestQuote:
    def test_denies_when_there_is_no_quote(self) -> None:
        denial = denial_of(evaluate(quote=_NO_QUOTE))
        assert (denial.code, denial.detail) == (DenialCode.NO_QUOTE, "instrument=NIFTY")

    def test_denies_when_the_quote_is_for_another_instrument(self) -> None:
        denial = denial_of(evaluate(quote=make_quote(instrument="BANKNIFTY")))
        assert denial.code is DenialCode.NO_QUOTE
        assert denial.detail == "instrument=NIFTY quote_instrument=BANKNIFTY"

    def test_denies_when_the_quote_has_no_bid(self) -> None:
        denial = denial_of(evaluate(quote=make_quote(bid=D("0"))))
        assert denial.code is DenialCode.NO_QUOTE
        assert denial.detail == "instrument=NIFTY bid=0 ask=100.05"

    def test_denies_a_spread_wider_than_max_spread_ticks(self) -> None:
        denial = denial_of(evaluate(quote=make_quote(bid=D("99.45"), ask=D("100.50"))))
        assert denial.code is DenialCode.SPREAD_BLOWOUT
        assert denial.detail == (
            "bid=99.45 ask=100.50 spread=1.05 max_spread=1.00 max_spread_ticks=20 tick_size=0.05"
        )

    def test_accepts_a_spread_of_exactly_max_spread_ticks(self) -> None:
        quote = make_quote(bid=D("99.50"), ask=D("100.50"))
        assert isinstance(evaluate(quote=quote)[0], Approval)


class TestFreezeBand:
    @pytest.mark.parametrize(
        ("plan_overrides", "quote_overrides", "figure"),
        [
            (
                {"entry_price": D("110.05"), "stop_price": D("109"), "target_price": D("112")},
                {"bid": D("110.00"), "ask": D("110.10")},
                "entry=110.05",
            ),
            ({"stop_price": D("89.95")}, {}, "stop=89.95"),
            ({"target_price": D("110.05")}, {}, "target=110.05"),
            ({}, {"bid": D("89.95"), "ask": D("90.05")}, "bid=89.95"),
            ({}, {"bid": D("110.00"), "ask": D("110.10")}, "ask=110.10"),
        ],
    )
    def test_denies_a_price_or_quote_outside_the_band(
        self, plan_overrides: dict[str, Any], quote_overrides: dict[str, Any], figure: str
    ) -> None:
        result = evaluate(make_plan(**plan_overrides), quote=make_quote(**quote_overrides))
        denial = denial_of(result)
        assert denial.code is DenialCode.FREEZE_BAND
        assert denial.detail == f"{figure} band_lower=90.00 band_upper=110.00"

    def test_accepts_prices_exactly_on_the_band_edges(self) -> None:
        plan = make_plan(stop_price=D("90.00"), target_price=D("110.00"), quantity=25)
        assert isinstance(evaluate(plan)[0], Approval)


class TestDailyLoss:
    def test_denies_entries_once_the_daily_loss_reaches_the_limit(self) -> None:
        portfolio = make_portfolio(realized_pnl_today=D("-15000"), unrealized_pnl=D("-5000"))
        denial = denial_of(evaluate(portfolio=portfolio))
        assert denial.code is DenialCode.DAILY_LOSS_LIMIT
        assert denial.detail == (
            "pnl_today=-20000.00 realized=-15000.00 unrealized=-5000.00 limit=-20000.00"
        )

    def test_allows_entries_just_above_the_daily_loss_limit(self) -> None:
        portfolio = make_portfolio(realized_pnl_today=D("-19999.99"))
        assert isinstance(evaluate(portfolio=portfolio)[0], Approval)

    def test_daily_loss_breached_is_none_while_within_the_limit(self) -> None:
        portfolio = make_portfolio(realized_pnl_today=D("5000"), unrealized_pnl=D("-24999.99"))
        assert daily_loss_breached(portfolio, RiskConfig()) is None

    def test_daily_loss_limit_is_a_positive_amount_of_capital(self) -> None:
        limits = RiskConfig(capital_rupees=D("500000"), max_daily_loss_pct=D("1.5"))
        assert daily_loss_limit_rupees(limits) == D("7500")


class TestHeatBreached:
    def test_heat_cap_is_a_percentage_of_capital(self) -> None:
        assert heat_cap_rupees(RiskConfig()) == D("10000")

    def test_reports_heat_above_the_cap(self) -> None:
        denial = heat_breached(make_portfolio(heat=D("10000.01")), RiskConfig())
        assert denial == Denial(code=DenialCode.HEAT_CAP, detail="heat=10000.01 cap=10000.00")

    def test_heat_equal_to_the_cap_is_not_a_breach(self) -> None:
        assert heat_breached(make_portfolio(heat=D("10000")), RiskConfig()) is None


class TestPositionOpen:
    def test_denies_a_second_bracket_for_the_same_strategy_and_instrument(self) -> None:
        portfolio = make_portfolio(positions=(make_position(strategy="orb"),))
        denial = denial_of(evaluate(portfolio=portfolio))
        assert denial.code is DenialCode.POSITION_OPEN
        assert denial.detail == (
            "strategy=orb instrument=NIFTY open_position=P-open open_quantity=50"
        )

    def test_denies_while_the_same_strategy_has_a_working_entry_in_the_instrument(self) -> None:
        portfolio = make_portfolio(working_entry_count=1, working_entries=(("orb", "NIFTY"),))
        denial = denial_of(evaluate(portfolio=portfolio))
        assert denial.code is DenialCode.POSITION_OPEN
        assert denial.detail == "strategy=orb instrument=NIFTY working_entry=yes"

    def test_allows_another_strategy_in_the_same_instrument(self) -> None:
        portfolio = make_portfolio(
            positions=(make_position(strategy="other"),),
            working_entry_count=1,
            working_entries=(("orb", "BANKNIFTY"),),
        )
        assert isinstance(evaluate(portfolio=portfolio)[0], Approval)


class TestConcurrentPositions:
    def test_denies_when_positions_plus_working_entries_reach_the_maximum(self) -> None:
        positions = tuple(
            make_position(position_id=f"P-{n}", instrument=f"X{n}", risk_amount=D("0"))
            for n in range(4)
        )
        portfolio = make_portfolio(positions=positions, working_entry_count=2)
        denial = denial_of(evaluate(portfolio=portfolio))
        assert denial.code is DenialCode.MAX_CONCURRENT_POSITIONS
        assert denial.detail == "open_positions=4 working_entries=2 max=6"

    def test_allows_one_below_the_maximum(self) -> None:
        portfolio = make_portfolio(working_entry_count=5)
        assert isinstance(evaluate(portfolio=portfolio)[0], Approval)


class TestTradesPerHour:
    def _after_entries(self, count: int, *, start_ns: int) -> RiskState:
        return RiskState(entry_times_ns=tuple(start_ns + n * S for n in range(count)))

    def test_denies_once_the_rolling_hour_holds_the_maximum(self) -> None:
        limits = RiskConfig(max_trades_per_hour=3)
        state = self._after_entries(3, start_ns=NOW - 600 * S)
        denial = denial_of(evaluate(limits=limits, state=state))
        assert denial.code is DenialCode.TRADES_PER_HOUR
        assert denial.detail == "entries_last_hour=3 max=3"

    def test_an_entry_leaves_the_rolling_hour_exactly_one_hour_later(self) -> None:
        limits = RiskConfig(max_trades_per_hour=3)
        state = self._after_entries(3, start_ns=NOW - 600 * S)
        oldest = NOW - 600 * S
        one_hour_later = oldest + TRADES_PER_HOUR_WINDOW_NS
        denied = evaluate(limits=limits, state=state, now_ns=one_hour_later - 1)
        assert denial_of(denied).code is DenialCode.TRADES_PER_HOUR
        decision, new_state = evaluate(limits=limits, state=state, now_ns=one_hour_later)
        assert isinstance(decision, Approval)
        assert new_state.entry_times_ns == (oldest + S, oldest + 2 * S, one_hour_later)


class TestSizing:
    def test_rounds_the_quantity_down_to_whole_lots(self) -> None:
        approval = approval_of(evaluate(make_plan(quantity=110)))
        assert approval == Approval(
            quantity=100, detail="requested=110 quantity=100 reduced_by=lot_size"
        )

    def test_denies_when_less_than_one_lot_was_asked(self) -> None:
        denial = denial_of(evaluate(make_plan(quantity=24)))
        assert denial.code is DenialCode.QUANTITY_ZERO_AFTER_ROUNDING
        assert denial.detail == ("requested=24 lot_size=25 max_order_size=500 freeze_quantity=1800")

    def test_caps_the_quantity_at_max_order_size_rounded_to_lots(self) -> None:
        limits = RiskConfig(max_order_size=60, per_trade_risk_pct=D("5"))
        approval = approval_of(evaluate(make_plan(quantity=200), limits=limits))
        assert approval.quantity == 50
        assert approval.detail == "requested=200 quantity=50 reduced_by=max_order_size"

    def test_caps_the_quantity_at_the_freeze_quantity_rounded_to_lots(self) -> None:
        instrument = make_instrument(freeze_quantity=90)
        approval = approval_of(evaluate(make_plan(quantity=200), instrument=instrument))
        assert approval.quantity == 75
        assert approval.detail == "requested=200 quantity=75 reduced_by=freeze_quantity"

    def test_denies_when_a_cap_is_below_one_lot(self) -> None:
        limits = RiskConfig(max_order_size=20)
        denial = denial_of(evaluate(make_plan(quantity=100), limits=limits))
        assert denial.code is DenialCode.QUANTITY_ZERO_AFTER_ROUNDING
        assert denial.detail == ("requested=100 lot_size=25 max_order_size=20 freeze_quantity=1800")


class TestPerTradeRisk:
    def test_reduces_the_quantity_to_the_largest_lot_multiple_within_the_risk_budget(
        self,
    ) -> None:
        # 2,500.00 budget / 2.00 per unit = 1,250 units -> 1,250 is 50 lots: fits exactly.
        plan = make_plan(quantity=1500, stop_price=D("98"), target_price=D("104"))
        limits = RiskConfig(max_order_size=5000, portfolio_heat_cap_pct=D("5"))
        instrument = make_instrument(freeze_quantity=5000)
        approval = approval_of(evaluate(plan, limits=limits, instrument=instrument))
        assert approval.quantity == 1250
        assert approval.detail == "requested=1500 quantity=1250 reduced_by=per_trade_risk"

    def test_rounds_the_risk_fitting_quantity_down_to_lots(self) -> None:
        # 2,500.00 / 3.00 = 833.3 units -> 825 (33 lots).
        plan = make_plan(quantity=1000, stop_price=D("97"), target_price=D("104"))
        limits = RiskConfig(max_order_size=5000, portfolio_heat_cap_pct=D("5"))
        assert approval_of(evaluate(plan, limits=limits)).quantity == 825

    def test_denies_when_not_even_one_lot_fits_the_risk_budget(self) -> None:
        # One lot of 25 at 9.00 per unit risks 225.00 against a 100.00 budget.
        plan = make_plan(quantity=25, stop_price=D("91"), target_price=D("105"))
        limits = RiskConfig(per_trade_risk_pct=D("0.01"))
        denial = denial_of(evaluate(plan, limits=limits))
        assert denial.code is DenialCode.PER_TRADE_RISK
        assert denial.detail == ("risk=225.00 limit=100.00 quantity=25 risk_per_unit=9 lot_size=25")


class TestHeatCap:
    def test_denies_an_entry_that_would_push_heat_above_the_cap(self) -> None:
        # 100 x 1.00 = 100.00 of new risk on 9,950.00 of heat against a 10,000.00 cap.
        portfolio = make_portfolio(heat=D("9950"))
        denial = denial_of(evaluate(portfolio=portfolio))
        assert denial.code is DenialCode.HEAT_CAP
        assert denial.detail == "heat=9950.00 new_risk=100.00 heat_after=10050.00 cap=10000.00"

    def test_allows_an_entry_that_brings_heat_exactly_to_the_cap(self) -> None:
        portfolio = make_portfolio(heat=D("9900"))
        assert isinstance(evaluate(portfolio=portfolio)[0], Approval)


class TestPerSymbolExposure:
    def test_denies_when_the_instrument_notional_would_exceed_the_cap(self) -> None:
        # 50 x 100 open + 100 x 100 new = 15,000.00 against 12,000.00.
        limits = RiskConfig(per_symbol_exposure_cap_rupees=D("12000"))
        portfolio = make_portfolio(
            positions=(
                make_position(),
                make_position(position_id="P-elsewhere", instrument="BANKNIFTY", quantity=900),
            )
        )
        denial = denial_of(evaluate(portfolio=portfolio, limits=limits))
        assert denial.code is DenialCode.PER_SYMBOL_EXPOSURE
        assert denial.detail == (
            "instrument=NIFTY exposure=5000.00 new_notional=10000.00 "
            "exposure_after=15000.00 cap=12000.00"
        )

    def test_counts_the_unfilled_part_of_working_entries(self) -> None:
        # No position yet, but another strategy's entry for 6,000.00 is working in NIFTY.
        limits = RiskConfig(per_symbol_exposure_cap_rupees=D("12000"))
        portfolio = make_portfolio(
            working_entry_notional=(("NIFTY", D("6000")), ("BANKNIFTY", D("90000")))
        )
        denial = denial_of(evaluate(portfolio=portfolio, limits=limits))
        assert denial.code is DenialCode.PER_SYMBOL_EXPOSURE
        assert "exposure=6000.00" in denial.detail

    def test_allows_notional_exactly_at_the_cap(self) -> None:
        limits = RiskConfig(per_symbol_exposure_cap_rupees=D("15000"))
        portfolio = make_portfolio(positions=(make_position(),))
        assert isinstance(evaluate(portfolio=portfolio, limits=limits)[0], Approval)


class TestOrderOfChecks:
    """Each step breaks one more rule than the next; the earliest broken rule must win."""

    def test_the_first_failing_check_wins(self) -> None:
        _, seen = evaluate()
        limits = RiskConfig(
            max_concurrent_positions=1,
            max_trades_per_hour=1,
            max_order_size=10,
            per_symbol_exposure_cap_rupees=D("1"),
        )
        mine = (make_position(strategy="orb"),)  # also fills the one concurrent slot
        layers: list[tuple[DenialCode, dict[str, Any]]] = [
            (DenialCode.DUPLICATE_PLAN, {"state": seen}),
            (DenialCode.INVALID_PLAN, {"plan": make_plan(stop_price=D("100.5"))}),
            (DenialCode.UNKNOWN_INSTRUMENT, {"instrument": make_instrument(symbol="OTHER")}),
            (DenialCode.NO_QUOTE, {"quote": _NO_QUOTE}),
            (DenialCode.SPREAD_BLOWOUT, {"quote": make_quote(bid=D("88"), ask=D("100.05"))}),
            (DenialCode.FREEZE_BAND, {"quote": make_quote(bid=D("89.5"), ask=D("89.9"))}),
            (
                DenialCode.DAILY_LOSS_LIMIT,
                {"portfolio": make_portfolio(positions=mine, realized_pnl_today=D("-50000"))},
            ),
            (DenialCode.POSITION_OPEN, {"portfolio": make_portfolio(positions=mine)}),
            (
                DenialCode.MAX_CONCURRENT_POSITIONS,
                {"portfolio": make_portfolio(positions=(make_position(),))},
            ),
            (DenialCode.TRADES_PER_HOUR, {"state": RiskState(entry_times_ns=(NOW,))}),
            (DenialCode.QUANTITY_ZERO_AFTER_ROUNDING, {}),
        ]
        base: dict[str, Any] = {"limits": limits}
        # Apply from the last layer to the first so that each call carries every later fault.
        expectations: list[tuple[DenialCode, dict[str, Any]]] = []
        accumulated = dict(base)
        for code, kwargs in reversed(layers):
            accumulated = {**accumulated, **kwargs}
            expectations.append((code, dict(accumulated)))
        for code, kwargs in expectations:
            assert denial_of(evaluate(**kwargs)).code is code, code

    def test_per_trade_risk_is_checked_after_sizing_and_before_heat(self) -> None:
        plan = make_plan(quantity=25, stop_price=D("91"), target_price=D("105"))
        limits = RiskConfig(per_trade_risk_pct=D("0.01"))
        portfolio = make_portfolio(heat=D("99999"))
        assert denial_of(evaluate(plan, limits=limits, portfolio=portfolio)).code is (
            DenialCode.PER_TRADE_RISK
        )

    def test_heat_is_checked_before_per_symbol_exposure(self) -> None:
        limits = RiskConfig(per_symbol_exposure_cap_rupees=D("1"))
        portfolio = make_portfolio(heat=D("99999"))
        assert denial_of(evaluate(portfolio=portfolio, limits=limits)).code is (DenialCode.HEAT_CAP)

    def test_sizing_reduces_quantity_before_heat_and_exposure_are_measured(self) -> None:
        # 400 x 1.00 = 400.00 would break the 300.00 heat room; capped to 100 it fits.
        limits = RiskConfig(max_order_size=100)
        portfolio = make_portfolio(heat=D("9700"))
        approval = approval_of(
            evaluate(make_plan(quantity=400), limits=limits, portfolio=portfolio)
        )
        assert approval.quantity == 100
