"""Properties of the entry rules over random plans, portfolios and limits."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.config import RiskConfig
from domain.enums import DenialCode, OrderType, Side
from domain.instruments import Instrument
from domain.messages.market import Tick
from domain.messages.orders import PortfolioUpdated, PositionView, TradePlan
from domain.risk import Approval, Denial, RiskState, evaluate_entry, heat_cap_rupees

S = 1_000_000_000
NOW = 1_700_000_000 * S
TICK = Decimal("0.05")


def _ticks(low: int, high: int) -> st.SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda n: n * TICK)


def _percent(low: str, high: str) -> st.SearchStrategy[Decimal]:
    return st.decimals(Decimal(low), Decimal(high), places=2, allow_nan=False)


instruments = st.builds(
    Instrument,
    symbol=st.just("NIFTY"),
    lot_size=st.sampled_from([1, 15, 25, 50, 75]),
    tick_size=st.just(TICK),
    freeze_quantity=st.integers(1, 5_000),
    price_band_pct=st.just(Decimal("30")),
    reference_price=st.just(Decimal("100")),
    max_spread_ticks=st.just(20),
)

limits_strategy = st.builds(
    RiskConfig,
    capital_rupees=st.integers(10_000, 10_000_000).map(Decimal),
    per_trade_risk_pct=_percent("0.01", "5"),
    portfolio_heat_cap_pct=_percent("0.05", "20"),
    max_order_size=st.integers(1, 3_000),
    max_concurrent_positions=st.integers(3, 10),
    per_symbol_exposure_cap_rupees=st.integers(1_000, 2_000_000).map(Decimal),
    max_trades_per_hour=st.integers(1, 50),
    max_daily_loss_pct=_percent("0.5", "10"),
)


@st.composite
def plans(draw: st.DrawFn) -> TradePlan:
    side = draw(st.sampled_from(Side))
    entry = draw(_ticks(1_700, 2_300))  # 85.00 .. 115.00, the band is 70.00 .. 130.00
    stop_distance = draw(_ticks(1, 320))
    target_distance = draw(_ticks(1, 320))
    return TradePlan(
        plan_client_id=draw(st.sampled_from(["P-1", "P-2", "P-3"])),
        strategy=draw(st.sampled_from(["orb", "ema"])),
        instrument="NIFTY",
        side=side,
        quantity=draw(st.integers(-5, 10_000)),
        entry_type=draw(st.sampled_from([OrderType.MARKET, OrderType.LIMIT])),
        entry_price=entry,
        stop_price=entry - side.sign * stop_distance,
        target_price=entry + side.sign * target_distance,
        signal_ts=NOW - S,
        ts_init=NOW,
    )


@st.composite
def quotes(draw: st.DrawFn, plan: TradePlan) -> Tick:
    bid = plan.entry_price - draw(_ticks(0, 30))
    return Tick(
        instrument="NIFTY",
        bid=bid,
        ask=bid + draw(_ticks(1, 21)),
        last=plan.entry_price,
        ts_event=NOW,
        ts_init=NOW,
    )


positions = st.builds(
    PositionView,
    position_id=st.sampled_from(["A", "B", "C"]),
    strategy=st.sampled_from(["orb", "other", "x", "y", "z"]),
    instrument=st.sampled_from(["NIFTY", "BANKNIFTY"]),
    side=st.sampled_from(Side),
    quantity=st.integers(1, 2_000),
    average_price=_ticks(1_700, 2_300),
    stop_price=st.none(),
    target_price=st.none(),
    realized_pnl=st.just(Decimal(0)),
    unrealized_pnl=st.just(Decimal(0)),
    risk_amount=_ticks(0, 200_000),
)


@st.composite
def portfolios(draw: st.DrawFn) -> PortfolioUpdated:
    open_positions = tuple(draw(st.lists(positions, max_size=2)))
    return PortfolioUpdated(
        positions=open_positions,
        working_entry_count=draw(st.integers(0, 2)),
        realized_pnl_today=draw(st.integers(-20_000, 50_000).map(Decimal)),
        unrealized_pnl=draw(st.integers(-50_000, 50_000).map(Decimal)),
        heat=sum((p.risk_amount for p in open_positions), Decimal(0)),
        ts_event=NOW,
    )


states = st.builds(
    RiskState,
    recent_plans=st.lists(
        st.tuples(st.sampled_from(["P-1", "P-9"]), st.integers(NOW - 600 * S, NOW)), max_size=2
    ).map(tuple),
    entry_times_ns=st.lists(st.integers(NOW - 7_200 * S, NOW), max_size=60).map(tuple),
)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[TradePlan, Instrument, Tick, PortfolioUpdated, RiskConfig, RiskState]:
    plan = draw(plans())
    return (
        plan,
        draw(instruments),
        draw(quotes(plan)),
        draw(portfolios()),
        draw(limits_strategy),
        draw(states),
    )


_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(scenarios())
def test_an_approval_never_breaks_a_limit(
    scenario: tuple[TradePlan, Instrument, Tick, PortfolioUpdated, RiskConfig, RiskState],
) -> None:
    plan, instrument, quote, portfolio, limits, state = scenario
    decision, _ = evaluate_entry(
        plan,
        instrument=instrument,
        quote=quote,
        portfolio=portfolio,
        limits=limits,
        state=state,
        now_ns=NOW,
    )
    event(decision.code.value if isinstance(decision, Denial) else "APPROVED")
    if isinstance(decision, Denial):
        return
    quantity = decision.quantity
    new_risk = quantity * abs(plan.entry_price - plan.stop_price)
    exposure = sum(
        (p.quantity * p.average_price for p in portfolio.positions if p.instrument == "NIFTY"),
        Decimal(0),
    )
    assert 0 < quantity <= plan.quantity
    assert quantity % instrument.lot_size == 0
    assert quantity <= limits.max_order_size
    assert quantity <= instrument.freeze_quantity
    assert new_risk <= limits.capital_rupees * limits.per_trade_risk_pct / 100
    assert portfolio.heat + new_risk <= heat_cap_rupees(limits)
    assert exposure + quantity * plan.entry_price <= limits.per_symbol_exposure_cap_rupees


@_SETTINGS
@given(scenarios())
def test_only_an_approval_records_and_a_repeat_of_it_is_a_duplicate(
    scenario: tuple[TradePlan, Instrument, Tick, PortfolioUpdated, RiskConfig, RiskState],
) -> None:
    plan, instrument, quote, portfolio, limits, state = scenario

    def decide(at_state: RiskState) -> tuple[Approval | Denial, RiskState]:
        return evaluate_entry(
            plan,
            instrument=instrument,
            quote=quote,
            portfolio=portfolio,
            limits=limits,
            state=at_state,
            now_ns=NOW,
        )

    decision, after = decide(state)
    if isinstance(decision, Denial):
        assert set(after.recent_plans) <= set(state.recent_plans)
        assert set(after.entry_times_ns) <= set(state.entry_times_ns)
        return
    assert after.recent_plans[-1] == (plan.plan_client_id, NOW)
    assert after.entry_times_ns[-1] == NOW
    assert set(after.recent_plans[:-1]) <= set(state.recent_plans)
    assert set(after.entry_times_ns[:-1]) <= set(state.entry_times_ns)
    repeat, after_repeat = decide(after)
    assert isinstance(repeat, Denial)
    assert repeat.code is DenialCode.DUPLICATE_PLAN
    assert after_repeat == after
