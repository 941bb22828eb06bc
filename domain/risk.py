"""Pre-trade risk rules for entries: pure functions over a plan, the market and the portfolio.

This module owns the decision "may this ENTRY go to the order layer, and with what quantity".
It never sees exits: the RiskActor routes exits around these rules, because an exit must never
be blocked by an entry limit. Nothing here reads the clock, logs or does I/O; time arrives as
``now_ns`` (epoch nanoseconds) and the only memory between calls that can change a decision
is the immutable ``RiskState`` that ``evaluate_entry`` takes and returns. (Figures derived
from immutable config, an instrument's band and the percent-of-capital limits, are memoised
per object: they cost ~7 us of Decimal arithmetic per plan otherwise.)

Prices stay Decimal here, as in the messages: each plan does a few dozen Decimal operations
(~10 us in all), and converting its prices to integer ticks would cost about as much as it
saved. tests/unit/test_fast_path_equivalence.py holds the rules to their pre-memo decisions.

Every refusal is a ``Denial`` whose ``code`` is the metric label and HTTP error, and whose
``detail`` carries the figures as space-separated ``key=value`` pairs, rupee amounts with two
decimals (``heat_after=12500.00 cap=10000.00``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

import msgspec

from domain.enums import DenialCode, OrderType, Side

if TYPE_CHECKING:
    from domain.config import RiskConfig
    from domain.instruments import Instrument
    from domain.messages.market import Tick
    from domain.messages.orders import PortfolioUpdated, TradePlan

__all__ = [
    "TRADES_PER_HOUR_WINDOW_NS",
    "Approval",
    "Denial",
    "RiskState",
    "daily_loss_breached",
    "daily_loss_limit_rupees",
    "evaluate_entry",
    "heat_breached",
    "heat_cap_rupees",
]

TRADES_PER_HOUR_WINDOW_NS = 3_600 * 1_000_000_000
"""Length of the rolling window behind ``max_trades_per_hour``: one hour in nanoseconds."""

_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")
_NS_PER_S = 1_000_000_000
# Memos of pure functions of immutable config, so each plan skips ~7 us of Decimal arithmetic
# (band() alone is ~3 us). An entry is used only for the very objects it was computed from
# (``is``): an equal Decimal with another exponent (1.0 vs 1.00) or an equal instrument
# would give the same decision but could print its figures differently.
_MEMO_MAX = 4096
_instrument_figures: dict[Instrument, tuple[Instrument, Decimal, Decimal, Decimal]] = {}
_percentages: dict[tuple[Decimal, Decimal], tuple[Decimal, Decimal, Decimal]] = {}


class Denial(msgspec.Struct, frozen=True, kw_only=True):
    """A refusal before the broker: an UPPER_SNAKE code and ``key=value`` figures."""

    code: DenialCode
    detail: str


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """An approved entry.

    Attributes:
        quantity: the quantity to send, after lot rounding and caps. It may be smaller than
            the plan's: the max order size, the freeze quantity and the per-trade risk budget
            reduce it rather than deny it, as long as at least one lot remains.
        detail: empty when the plan's quantity went through unchanged; otherwise
            ``requested=... quantity=... reduced_by=<rule>[,<rule>...]`` for the logs.
    """

    quantity: int
    detail: str = ""


class RiskState(msgspec.Struct, frozen=True, kw_only=True):
    """What the entry rules remember between plans. Immutable: each call returns a new one.

    Attributes:
        recent_plans: ``(plan_client_id, ts_ns)`` of approved plans inside the dedupe window.
        entry_times_ns: times of approved entries inside the rolling hour.
    """

    recent_plans: tuple[tuple[str, int], ...] = ()
    entry_times_ns: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------------
# LIMITS
# ---------------------------------------------------------------------------------------------


def heat_cap_rupees(limits: RiskConfig) -> Decimal:
    """Return the portfolio heat cap: ``capital * portfolio_heat_cap_pct / 100`` rupees."""
    return _percent_of(limits.capital_rupees, limits.portfolio_heat_cap_pct)


def daily_loss_limit_rupees(limits: RiskConfig) -> Decimal:
    """Return the daily loss limit as a positive amount: ``capital * max_daily_loss_pct / 100``."""
    return _percent_of(limits.capital_rupees, limits.max_daily_loss_pct)


def _per_trade_risk_limit_rupees(limits: RiskConfig) -> Decimal:
    return _percent_of(limits.capital_rupees, limits.per_trade_risk_pct)


def _percent_of(capital: Decimal, percent: Decimal) -> Decimal:
    key = (capital, percent)
    memo = _percentages.get(key)
    if memo is not None and memo[0] is capital and memo[1] is percent:
        return memo[2]
    amount = capital * percent / _HUNDRED
    if len(_percentages) >= _MEMO_MAX:
        _percentages.clear()  # a bound, not an eviction policy: configs are few
    _percentages[key] = (capital, percent, amount)
    return amount


def _figures_of(instrument: Instrument) -> tuple[Decimal, Decimal, Decimal]:
    """``(band lower, band upper, max spread)`` of ``instrument``."""
    memo = _instrument_figures.get(instrument)
    if memo is not None and memo[0] is instrument:
        return memo[1], memo[2], memo[3]
    lower, upper = instrument.band()
    max_spread = instrument.max_spread_ticks * instrument.tick_size
    if len(_instrument_figures) >= _MEMO_MAX:
        _instrument_figures.clear()  # a bound, not an eviction policy: instruments are few
    _instrument_figures[instrument] = (instrument, lower, upper, max_spread)
    return lower, upper, max_spread


# ---------------------------------------------------------------------------------------------
# PORTFOLIO TRIPWIRES (also used by the kill switch and auto-flatten)
# ---------------------------------------------------------------------------------------------


def daily_loss_breached(portfolio: PortfolioUpdated, limits: RiskConfig) -> Denial | None:
    """Return a DAILY_LOSS_LIMIT denial when today's realized plus unrealized PnL has reached
    ``-daily_loss_limit_rupees`` (reaching the limit counts as a breach), else None."""
    pnl = portfolio.realized_pnl_today + portfolio.unrealized_pnl
    limit = daily_loss_limit_rupees(limits)
    if pnl > -limit:
        return None
    return Denial(
        code=DenialCode.DAILY_LOSS_LIMIT,
        detail=_figures(
            pnl_today=_rupees(pnl),
            realized=_rupees(portfolio.realized_pnl_today),
            unrealized=_rupees(portfolio.unrealized_pnl),
            limit=_rupees(-limit),
        ),
    )


def heat_breached(portfolio: PortfolioUpdated, limits: RiskConfig) -> Denial | None:
    """Return a HEAT_CAP denial when the portfolio's heat is above the cap (equal is allowed),
    else None. This is the auto-flatten trigger; entries use the stricter check in
    ``evaluate_entry``, which adds the new plan's risk first."""
    cap = heat_cap_rupees(limits)
    if portfolio.heat <= cap:
        return None
    return Denial(
        code=DenialCode.HEAT_CAP,
        detail=_figures(heat=_rupees(portfolio.heat), cap=_rupees(cap)),
    )


# ---------------------------------------------------------------------------------------------
# PRE-TRADE CHECKS
# ---------------------------------------------------------------------------------------------


def evaluate_entry(
    plan: TradePlan,
    *,
    instrument: Instrument,
    quote: Tick | None,
    portfolio: PortfolioUpdated,
    limits: RiskConfig,
    state: RiskState,
    now_ns: int,
    live: bool = False,
    live_max_order_size: Decimal | None = None,
) -> tuple[Approval | Denial, RiskState]:
    """Run every pre-trade check for an ENTRY; the first failure wins.

    The checks, in order, and the code each one denies with:

    1. DUPLICATE_PLAN: the same ``plan_client_id`` was approved less than
       ``dedupe_window_s`` ago.
    2. INVALID_PLAN: quantity <= 0; a price <= 0; an entry type other than MARKET or LIMIT;
       for a BUY not ``stop < entry < target``, for a SELL not ``stop > entry > target``.
    3. UNKNOWN_INSTRUMENT: ``plan.instrument`` is not ``instrument.symbol``.
    4. NO_QUOTE: no quote, a quote for another instrument, or a bid or ask <= 0.
    5. SPREAD_BLOWOUT: ``ask - bid > max_spread_ticks * tick_size``.
    6. FREEZE_BAND: entry, stop or target outside ``instrument.band()`` (bounds inclusive),
       or the quote's bid or ask outside it.
    7. DAILY_LOSS_LIMIT: see ``daily_loss_breached``.
    8. POSITION_OPEN: this strategy already has an open position or a working entry in this
       instrument (one bracket per strategy and instrument).
    9. MAX_CONCURRENT_POSITIONS: open positions + working entries >= the maximum.
    10. TRADES_PER_HOUR: approved entries in the rolling last hour >= the maximum.
    11. Sizing: the quantity is rounded down to whole lots, then capped at ``max_order_size``
        and at ``freeze_quantity`` (each rounded down to whole lots). A cap reduces the
        quantity instead of denying; QUANTITY_ZERO_AFTER_ROUNDING when nothing is left.
    12. PER_TRADE_RISK: ``quantity * |entry - stop|`` above ``capital * per_trade_risk_pct /
        100``. The quantity is reduced to the largest whole-lot quantity that fits; denied
        only when not even one lot fits.
    13. LIVE_MAX_ORDER_SIZE (only when ``live``): the quantity after sizing above
        ``live_max_order_size``, or that limit unset (in LIVE a limit has no default). It
        denies rather than reduces: the runbook's hard ceiling on one LIVE order.
    14. HEAT_CAP: ``portfolio.heat + quantity * |entry - stop|`` above the heat cap.
    15. PER_SYMBOL_EXPOSURE: notional of open positions and working entries in the
        instrument plus ``quantity * entry`` above ``per_symbol_exposure_cap_rupees``.

    Risk and notional use the plan's ``entry_price`` (the reference price of a MARKET entry).

    Args:
        plan: the strategy's plan; only entries come here.
        instrument: the exchange rules of ``plan.instrument``.
        quote: the latest quote of the instrument, or None when there is none.
        portfolio: the order layer's latest portfolio.
        limits: the risk configuration.
        state: what earlier calls remembered.
        now_ns: the decision time, epoch nanoseconds.
        live: the engine is in mode LIVE: ``live_max_order_size`` applies.
        live_max_order_size: ``LIVE_MAX_ORDER_SIZE``, in units of order quantity.

    Returns:
        The decision and the new state. Expired entries are always pruned from the state. On
        approval the state also records the plan id (dedupe) and ``now_ns`` (trades per
        hour); on a denial nothing is recorded, so a duplicate never records twice and never
        extends its own window.
    """
    state = _pruned(state, limits=limits, now_ns=now_ns)

    denial = (
        _check_duplicate(plan, state)
        or _check_plan_shape(plan)
        or _check_instrument(plan, instrument)
        or _check_quote(plan, quote)
        or _check_spread(quote, instrument)
        or _check_band(plan, quote, instrument)
        or daily_loss_breached(portfolio, limits)
        or _check_position_open(plan, portfolio)
        or _check_concurrent(portfolio, limits)
        or _check_trades_per_hour(state, limits)
    )
    if denial is not None:
        return denial, state

    sized = _size(plan, instrument=instrument, limits=limits)
    if isinstance(sized, Denial):
        return sized, state
    quantity, reduced_by = sized

    if live:
        denial = _check_live_order_size(quantity, live_max_order_size)
        if denial is not None:
            return denial, state

    denial = _check_heat(plan, quantity, portfolio, limits) or _check_exposure(
        plan, quantity, portfolio, limits
    )
    if denial is not None:
        return denial, state

    detail = ""
    if reduced_by:
        detail = _figures(
            requested=plan.quantity, quantity=quantity, reduced_by=",".join(reduced_by)
        )
    recorded = RiskState(
        recent_plans=(*state.recent_plans, (plan.plan_client_id, now_ns)),
        entry_times_ns=(*state.entry_times_ns, now_ns),
    )
    return Approval(quantity=quantity, detail=detail), recorded


def _pruned(state: RiskState, *, limits: RiskConfig, now_ns: int) -> RiskState:
    dedupe_ns = round(limits.dedupe_window_s * _NS_PER_S)
    hour_ago = now_ns - TRADES_PER_HOUR_WINDOW_NS
    # Usually nothing has expired since the last plan: keep the state instead of copying it.
    if all(now_ns - ts < dedupe_ns for _plan_id, ts in state.recent_plans) and all(
        ts > hour_ago for ts in state.entry_times_ns
    ):
        return state
    return RiskState(
        recent_plans=tuple(
            (plan_id, ts) for plan_id, ts in state.recent_plans if now_ns - ts < dedupe_ns
        ),
        entry_times_ns=tuple(
            ts for ts in state.entry_times_ns if now_ns - ts < TRADES_PER_HOUR_WINDOW_NS
        ),
    )


def _check_duplicate(plan: TradePlan, state: RiskState) -> Denial | None:
    for plan_id, ts in state.recent_plans:
        if plan_id == plan.plan_client_id:
            return Denial(
                code=DenialCode.DUPLICATE_PLAN,
                detail=_figures(plan_client_id=plan_id, first_seen_ns=ts),
            )
    return None


def _check_plan_shape(plan: TradePlan) -> Denial | None:
    def invalid(rule: str) -> Denial:
        return Denial(
            code=DenialCode.INVALID_PLAN,
            detail=_figures(
                rule=rule,
                side=plan.side.value,
                quantity=plan.quantity,
                entry=plan.entry_price,
                stop=plan.stop_price,
                target=plan.target_price,
            ),
        )

    if plan.quantity <= 0:
        return invalid("quantity_not_positive")
    if min(plan.entry_price, plan.stop_price, plan.target_price) <= 0:
        return invalid("price_not_positive")
    if plan.entry_type not in (OrderType.MARKET, OrderType.LIMIT):
        return invalid(f"entry_type_{plan.entry_type.value}_not_market_or_limit")
    # A stop at the entry would mean zero risk per unit: unsizeable, so it is invalid too.
    if plan.side is Side.BUY:
        if plan.stop_price >= plan.entry_price:
            return invalid("buy_stop_not_below_entry")
        if plan.target_price <= plan.entry_price:
            return invalid("buy_target_not_above_entry")
    else:
        if plan.stop_price <= plan.entry_price:
            return invalid("sell_stop_not_above_entry")
        if plan.target_price >= plan.entry_price:
            return invalid("sell_target_not_below_entry")
    return None


def _check_instrument(plan: TradePlan, instrument: Instrument) -> Denial | None:
    if plan.instrument == instrument.symbol:
        return None
    return Denial(
        code=DenialCode.UNKNOWN_INSTRUMENT,
        detail=_figures(instrument=plan.instrument, expected=instrument.symbol),
    )


def _check_quote(plan: TradePlan, quote: Tick | None) -> Denial | None:
    if quote is None:
        return Denial(code=DenialCode.NO_QUOTE, detail=_figures(instrument=plan.instrument))
    if quote.instrument != plan.instrument:
        return Denial(
            code=DenialCode.NO_QUOTE,
            detail=_figures(instrument=plan.instrument, quote_instrument=quote.instrument),
        )
    if quote.bid <= 0 or quote.ask <= 0:
        return Denial(
            code=DenialCode.NO_QUOTE,
            detail=_figures(instrument=plan.instrument, bid=quote.bid, ask=quote.ask),
        )
    return None


def _check_spread(quote: Tick | None, instrument: Instrument) -> Denial | None:
    assert quote is not None  # _check_quote ran first
    max_spread = _figures_of(instrument)[2]
    if quote.ask - quote.bid <= max_spread:  # Tick.spread, without the property call
        return None
    return Denial(
        code=DenialCode.SPREAD_BLOWOUT,
        detail=_figures(
            bid=quote.bid,
            ask=quote.ask,
            spread=quote.spread,
            max_spread=max_spread,
            max_spread_ticks=instrument.max_spread_ticks,
            tick_size=instrument.tick_size,
        ),
    )


def _check_band(plan: TradePlan, quote: Tick | None, instrument: Instrument) -> Denial | None:
    assert quote is not None  # _check_quote ran first
    lower, upper, _max_spread = _figures_of(instrument)
    if (
        lower <= plan.entry_price <= upper
        and lower <= plan.stop_price <= upper
        and lower <= plan.target_price <= upper
        and lower <= quote.bid <= upper
        and lower <= quote.ask <= upper
    ):
        return None  # the usual case, without building the named list below
    prices = (
        ("entry", plan.entry_price),
        ("stop", plan.stop_price),
        ("target", plan.target_price),
        ("bid", quote.bid),
        ("ask", quote.ask),
    )
    for name, price in prices:
        if not lower <= price <= upper:
            return Denial(
                code=DenialCode.FREEZE_BAND,
                detail=_figures(
                    **{name: price},
                    # band() arithmetic drops trailing zeros; show the bounds in whole ticks
                    band_lower=lower.quantize(instrument.tick_size),
                    band_upper=upper.quantize(instrument.tick_size),
                ),
            )
    return None


def _check_position_open(plan: TradePlan, portfolio: PortfolioUpdated) -> Denial | None:
    for position in portfolio.positions:
        if position.strategy == plan.strategy and position.instrument == plan.instrument:
            return Denial(
                code=DenialCode.POSITION_OPEN,
                detail=_figures(
                    strategy=plan.strategy,
                    instrument=plan.instrument,
                    open_position=position.position_id,
                    open_quantity=position.quantity,
                ),
            )
    if (plan.strategy, plan.instrument) in portfolio.working_entries:
        return Denial(
            code=DenialCode.POSITION_OPEN,
            detail=_figures(
                strategy=plan.strategy, instrument=plan.instrument, working_entry="yes"
            ),
        )
    return None


def _check_concurrent(portfolio: PortfolioUpdated, limits: RiskConfig) -> Denial | None:
    open_positions = len(portfolio.positions)
    in_use = open_positions + portfolio.working_entry_count
    if in_use < limits.max_concurrent_positions:
        return None
    return Denial(
        code=DenialCode.MAX_CONCURRENT_POSITIONS,
        detail=_figures(
            open_positions=open_positions,
            working_entries=portfolio.working_entry_count,
            max=limits.max_concurrent_positions,
        ),
    )


def _check_trades_per_hour(state: RiskState, limits: RiskConfig) -> Denial | None:
    entries = len(state.entry_times_ns)
    if entries < limits.max_trades_per_hour:
        return None
    return Denial(
        code=DenialCode.TRADES_PER_HOUR,
        detail=_figures(entries_last_hour=entries, max=limits.max_trades_per_hour),
    )


def _size(
    plan: TradePlan, *, instrument: Instrument, limits: RiskConfig
) -> tuple[int, list[str]] | Denial:
    reduced_by: list[str] = []
    quantity = instrument.round_quantity_down(plan.quantity)
    if quantity < plan.quantity:
        reduced_by.append("lot_size")
    for rule, cap in (
        ("max_order_size", instrument.round_quantity_down(limits.max_order_size)),
        ("freeze_quantity", instrument.round_quantity_down(instrument.freeze_quantity)),
    ):
        if quantity > cap:
            quantity = cap
            reduced_by.append(rule)
    if quantity <= 0:
        return Denial(
            code=DenialCode.QUANTITY_ZERO_AFTER_ROUNDING,
            detail=_figures(
                requested=plan.quantity,
                lot_size=instrument.lot_size,
                max_order_size=limits.max_order_size,
                freeze_quantity=instrument.freeze_quantity,
            ),
        )

    risk_per_unit = abs(plan.entry_price - plan.stop_price)
    limit = _per_trade_risk_limit_rupees(limits)
    if quantity * risk_per_unit > limit:
        fitting = instrument.round_quantity_down(int(limit // risk_per_unit))
        if fitting <= 0:
            return Denial(
                code=DenialCode.PER_TRADE_RISK,
                detail=_figures(
                    risk=_rupees(instrument.lot_size * risk_per_unit),
                    limit=_rupees(limit),
                    quantity=instrument.lot_size,
                    risk_per_unit=risk_per_unit,
                    lot_size=instrument.lot_size,
                ),
            )
        quantity = fitting
        reduced_by.append("per_trade_risk")
    return quantity, reduced_by


def _check_live_order_size(quantity: int, limit: Decimal | None) -> Denial | None:
    if limit is not None and quantity <= limit:
        return None
    return Denial(
        code=DenialCode.LIVE_MAX_ORDER_SIZE,
        detail=_figures(quantity=quantity, live_max_order_size="unset" if limit is None else limit),
    )


def _check_heat(
    plan: TradePlan, quantity: int, portfolio: PortfolioUpdated, limits: RiskConfig
) -> Denial | None:
    new_risk = quantity * abs(plan.entry_price - plan.stop_price)
    heat_after = portfolio.heat + new_risk
    cap = heat_cap_rupees(limits)
    if heat_after <= cap:
        return None
    return Denial(
        code=DenialCode.HEAT_CAP,
        detail=_figures(
            heat=_rupees(portfolio.heat),
            new_risk=_rupees(new_risk),
            heat_after=_rupees(heat_after),
            cap=_rupees(cap),
        ),
    )


def _check_exposure(
    plan: TradePlan, quantity: int, portfolio: PortfolioUpdated, limits: RiskConfig
) -> Denial | None:
    # Summed in the same order as sum(positions) + sum(working): Decimal addition in the
    # default context is exact at these magnitudes, so the order cannot change a decision.
    positions_notional = Decimal(0)
    for position in portfolio.positions:
        if position.instrument == plan.instrument:
            positions_notional += position.quantity * position.average_price
    working_notional = Decimal(0)
    for instrument, notional in portfolio.working_entry_notional:
        if instrument == plan.instrument:
            working_notional += notional
    existing = positions_notional + working_notional
    new = quantity * plan.entry_price
    cap = limits.per_symbol_exposure_cap_rupees
    if existing + new <= cap:
        return None
    return Denial(
        code=DenialCode.PER_SYMBOL_EXPOSURE,
        detail=_figures(
            instrument=plan.instrument,
            exposure=_rupees(existing),
            new_notional=_rupees(new),
            exposure_after=_rupees(existing + new),
            cap=_rupees(cap),
        ),
    )


# ---------------------------------------------------------------------------------------------
# FORMATTING
# ---------------------------------------------------------------------------------------------


def _rupees(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _figures(**figures: object) -> str:
    return " ".join([f"{key}={value}" for key, value in figures.items()])
