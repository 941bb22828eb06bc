"""RiskActor: every trade plan passes here before it can become an order.

Accepts: ``TradePlan``, ``PortfolioUpdated`` (from the order actor), ``TradingStateChanged``
(from the kill switch), ``DrainTicks`` (latest quotes; the engine gives it a ``QuoteBoard``,
which never sends one: the quotes are picked up when a plan needs one), ``ReloadRiskWindows``
(from the order actor when this process takes over leadership); answers ``QueryRisk`` and
``QueryLastPortfolio`` (the order actor's last published portfolio, for ``/status`` while the
order actor cannot answer).
Publishes: ``SubmitBracket`` to the order actor for an approved plan; ``RiskBlocked`` is
recorded, logged and counted in ``trader_risk_blocks_total{reason}``. A breach of the daily
loss limit, or portfolio heat above its cap, is the runbook's "flatten(reason=risk_cap) and
HALT": the kill switch is tripped (reason ``DAILY_LOSS_LIMIT`` or ``HEAT_CAP``) with a flatten
whose reason is ``risk_cap``; it stores the HALT and the FLATTEN pause in one transaction, then
tells ``FlattenAll``.
Tripwire reports to the watchdog (which makes the episode, TRIPWIRE event, audit row, metric
and ``/status`` cause): ``TripwireConditionChanged(RISK_CAP)`` when either breach begins or
ends, and ``MarketQualityRejected`` for each FREEZE_BAND or SPREAD_BLOWOUT denial.

Trips cannot be lost: both go through a ``SafetyOutbox``, re-sent every second until the kill
switch's published state shows them in force and stored; the "already tripped today" latch is
set only then. A storage error while rebuilding the rolling windows at start does not stop the
actor: every plan is blocked (``TRADING_PAUSED``) until the windows load, so the safety trips
keep working while storage is down.

Day figures (``adapters.storage.day_figures``, given as ``day_figures``): every plan received
is counted (per strategy), then exactly one of approved (per strategy) or blocked (per denial
code); every portfolio's heat is handed over for the day's high-water mark. In memory only:
the recorder stores them on its own thread, never on this one.

Approved plans the order actor has not yet reflected in a ``PortfolioUpdated`` are counted as
pending, so two plans in quick succession cannot both squeeze under a limit. Exits never come
here: they are the order actor's, and entry limits never block them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from actors.base import VigilActor
from actors.safety_outbox import SafetyOutbox
from adapters.logs import log_event
from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import DenialCode, Mode, TradingState, TripwireRule
from domain.messages import (
    DrainTicks,
    MarketQualityRejected,
    PortfolioUpdated,
    QueryLastPortfolio,
    QueryRisk,
    ReloadRiskWindows,
    RiskBlocked,
    SubmitBracket,
    Tick,
    TradePlan,
    TradingStateChanged,
    TripKillSwitch,
    TripwireConditionChanged,
)
from domain.messages.api import RiskView
from domain.risk import (
    Approval,
    Denial,
    RiskState,
    daily_loss_breached,
    daily_loss_limit_rupees,
    evaluate_entry,
    heat_breached,
    heat_cap_rupees,
)

if TYPE_CHECKING:
    from actors.mailbox import TickChannel
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from adapters.storage.day_figures import DayFiguresRecorder
    from domain.config import RiskConfig
    from domain.instruments import Instrument

__all__ = ["RiskActor"]

logger = logging.getLogger(__name__)

_PENDING_EXPIRY_NS = 10 * NANOS_PER_SECOND
_HOUR_NS = 3600 * NANOS_PER_SECOND
_DAILY_LOSS_TRIP = "daily_loss"
_RISK_CAP_FLATTEN = "risk_cap"
_MARKET_QUALITY_CODES = (DenialCode.FREEZE_BAND, DenialCode.SPREAD_BLOWOUT)


class _PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    plan_client_id: str
    strategy: str
    instrument: str
    risk_amount: Decimal
    ts_ns: int


class RiskActor(VigilActor):
    # The kill switch publishes to every subscriber from its own thread: a full inbox here must
    # never stall it (nor drop the state that confirms a pending trip).
    unbounded_messages: ClassVar[tuple[type, ...]] = (
        *VigilActor.unbounded_messages,
        TradingStateChanged,
    )

    def __init__(
        self,
        *,
        limits: RiskConfig,
        database: Database,
        instruments: Mapping[str, Instrument],
        conflator: TickChannel,
        metrics: EngineMetrics,
        live_max_order_size: Decimal | None = None,
        order_actor: str = "order",
        kill_switch_actor: str = "kill_switch",
        watchdog_actor: str = "watchdog",
        day_figures: DayFiguresRecorder | None = None,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._limits = limits
        # Counts the day's signals, approvals, blocks and heat in memory (stored off-thread).
        self._day_figures = day_figures
        self._watchdog_actor = watchdog_actor
        # The RISK_CAP tripwire condition as last told to the watchdog (None: not breached).
        self._risk_cap_reported: str | None = None
        self._risk_cap_codes: tuple[str, ...] = ()
        # LIVE_MAX_ORDER_SIZE: applies only while the kill switch says mode LIVE (unset there
        # blocks every entry: in LIVE a limit has no default).
        self._live_max_order_size = live_max_order_size
        self._database = database
        self._instruments = dict(instruments)
        self._conflator = conflator
        self._metrics = metrics
        self._order_actor = order_actor
        self._kill_switch_actor = kill_switch_actor
        self._quotes: dict[str, Tick] = {}
        self._portfolio = PortfolioUpdated(
            positions=(),
            working_entry_count=0,
            realized_pnl_today=Decimal(0),
            unrealized_pnl=Decimal(0),
            heat=Decimal(0),
            ts_event=0,
        )
        self._trading: TradingStateChanged | None = None
        self._state = RiskState()
        self._pending: dict[str, _PendingApproval] = {}
        # _portfolio_with_pending()'s result, until the portfolio or the pending approvals
        # change: a plan after a plan with nothing new in between reuses it.
        self._portfolio_with_pending_memo: PortfolioUpdated | None = None
        # The counter child of each denial code: labels() costs a lock and a validation.
        self._block_counters: dict[str, Any] = {}
        self._blocks: dict[str, int] = {}
        self._last_blocks: deque[RiskBlocked] = deque(maxlen=50)
        self._risk_cap_flatten_sent = False
        self._daily_loss_tripped = False
        self._windows_loaded = False
        self._windows_error_logged = False
        self._outbox = SafetyOutbox(
            directory=self.directory, owner=self.name, target=kill_switch_actor
        )

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            TradePlan: self.on_trade_plan,
            PortfolioUpdated: self.on_portfolio_updated,
            TradingStateChanged: self.on_trading_state_changed,
            DrainTicks: self.on_drain_ticks,
            QueryRisk: lambda _query: self.risk_view(),
            # A takeover: the previous leader's entries count against our windows too.
            ReloadRiskWindows: lambda _command: self._rebuild_windows(),
            QueryLastPortfolio: lambda _query: self._portfolio,
        }

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        self.on_drain_ticks(DrainTicks())
        self._rebuild_windows()

    def _rebuild_windows(self) -> None:
        # The rolling windows (trades per hour, plan dedupe) outlive a restart: rebuilt from
        # the entries storage holds, so a crash cannot reset a limit. Until they are, every
        # plan is blocked; the actor itself stays up (its trips must work with storage down).
        now = self.clock.now_ns()
        dedupe_ns = int(self._limits.dedupe_window_s * NANOS_PER_SECOND)
        try:
            with UnitOfWork(self._database) as uow:
                entries = uow.orders.entries_since(now - max(_HOUR_NS, dedupe_ns))
        except Exception as error:
            if not self._windows_error_logged:  # once, not on every portfolio update
                logger.error("risk windows could not be rebuilt from storage: %r", error)
                self._windows_error_logged = True
            return
        self._state = RiskState(
            recent_plans=tuple((plan, ts) for plan, ts in entries if ts > now - dedupe_ns),
            entry_times_ns=tuple(ts for _plan, ts in entries if ts > now - _HOUR_NS),
        )
        self._windows_loaded = True
        self._windows_error_logged = False

    # ------------------------------------------------------------------ COMMAND HANDLERS
    def on_trade_plan(self, plan: TradePlan) -> None:
        now = self.clock.now_ns()
        if self._day_figures is not None:
            self._day_figures.count_signal(plan.strategy, now)
        gate = self._trading_gate()
        if gate is not None:
            self._block(plan, gate, now)
            return
        instrument = self._instruments.get(plan.instrument)
        if instrument is None:
            self._block(
                plan,
                Denial(code=DenialCode.UNKNOWN_INSTRUMENT, detail=f"instrument={plan.instrument}"),
                now,
            )
            return
        self._expire_pending(now)
        self.on_drain_ticks(DrainTicks())  # the latest quotes, read now (a board never wakes us)
        decision, state = evaluate_entry(
            plan,
            instrument=instrument,
            quote=self._quotes.get(plan.instrument),
            portfolio=self._portfolio_with_pending(),
            limits=self._limits,
            state=self._state,
            now_ns=now,
            live=self._trading is not None and self._trading.mode is Mode.LIVE,
            live_max_order_size=self._live_max_order_size,
        )
        self._state = state
        if isinstance(decision, Denial):
            self._block(plan, decision, now)
            return
        self._approve(plan, decision, now)

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_portfolio_updated(self, portfolio: PortfolioUpdated) -> None:
        self._portfolio = portfolio
        if self._day_figures is not None:
            self._day_figures.see_heat(portfolio.heat, portfolio.ts_event)
        self._portfolio_with_pending_memo = None
        if not self._windows_loaded:
            self._rebuild_windows()
        self._outbox.retry(self.clock.now_ns())
        if self._pending:  # usually empty: skip the sets, built from every open position
            self._retire_pending(portfolio)
        self._check_portfolio_limits(portfolio)

    def on_trading_state_changed(self, state: TradingStateChanged) -> None:
        self._trading = state
        confirmed = self._outbox.acknowledge(state)
        # The latches are set only once the kill switch has the trip in force and stored.
        if _DAILY_LOSS_TRIP in confirmed:
            self._daily_loss_tripped = True
        if _RISK_CAP_FLATTEN in confirmed:
            self._risk_cap_flatten_sent = True
        if state.state is TradingState.ACTIVE and not self._outbox.is_pending(_RISK_CAP_FLATTEN):
            self._risk_cap_flatten_sent = False
        self._outbox.retry(self.clock.now_ns())
        if self._risk_cap_reported is not None:
            # Idempotent: a restarted watchdog learns the breach that still holds.
            self._tell_watchdog_risk_cap(self._risk_cap_reported, state.ts_event)

    def on_drain_ticks(self, _wake: DrainTicks) -> None:
        for tick in self._conflator.drain():
            self._quotes[tick.instrument] = tick

    # ------------------------------------------------------------------ QUERIES
    def risk_view(self) -> RiskView:
        now = self.clock.now_ns()
        limits = {key: str(value) for key, value in self._limits.model_dump(mode="json").items()}
        limit = self._live_max_order_size
        limits["live_max_order_size"] = "unset" if limit is None else str(limit)
        return RiskView(
            limits=limits,
            heat_rupees=self._portfolio.heat,
            heat_cap_rupees=heat_cap_rupees(self._limits),
            daily_pnl=self._portfolio.realized_pnl_today + self._portfolio.unrealized_pnl,
            daily_loss_limit_rupees=daily_loss_limit_rupees(self._limits),
            open_positions=len(self._portfolio.positions),
            trades_last_hour=sum(1 for ts in self._state.entry_times_ns if ts > now - _HOUR_NS),
            blocks=dict(self._blocks),
            last_blocks=list(self._last_blocks),
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "risk": msgspec.to_builtins(self.risk_view()),
            "pending_approvals": msgspec.to_builtins(list(self._pending.values())),
            "trading": msgspec.to_builtins(self._trading) if self._trading else None,
            "quotes": len(self._quotes),
            "windows_loaded": self._windows_loaded,
            "daily_loss_tripped": self._daily_loss_tripped,
            "risk_cap_flatten_sent": self._risk_cap_flatten_sent,
            "pending_safety_commands": self._outbox.snapshot(),
            "mailbox_depth": self.mailbox_depth,
        }

    # ------------------------------------------------------------------ CHECKS
    def _trading_gate(self) -> Denial | None:
        trading = self._trading
        if trading is None:
            return Denial(code=DenialCode.TRADING_PAUSED, detail="trading_state=unknown")
        if self._portfolio.ts_event == 0:
            # Just (re)started: limits checked against an empty book would pass anything.
            return Denial(code=DenialCode.TRADING_PAUSED, detail="portfolio=unknown")
        if not self._windows_loaded:
            return Denial(code=DenialCode.TRADING_PAUSED, detail="risk_windows=not_loaded")
        if trading.state is TradingState.HALTED:
            if trading.halt_reason == DenialCode.DAILY_LOSS_LIMIT.value:
                # Tripped by the daily loss limit: the operator reads that limit and today's
                # figures, the same reason a plan gets before the kill switch's HALT arrives.
                breach = daily_loss_breached(self._portfolio, self._limits)
                if breach is not None:
                    return breach
            return Denial(
                code=DenialCode.KILL_SWITCH_ACTIVE, detail=f"halt_reason={trading.halt_reason}"
            )
        if trading.state is TradingState.REDUCING:
            causes = ",".join(cause.value for cause in trading.pause_causes)
            return Denial(code=DenialCode.TRADING_PAUSED, detail=f"pause_causes={causes}")
        if not trading.armed:
            return Denial(code=DenialCode.NOT_ARMED, detail=f"mode={trading.mode.value}")
        return None

    def _portfolio_with_pending(self) -> PortfolioUpdated:
        if not self._pending:
            return self._portfolio
        if self._portfolio_with_pending_memo is not None:
            return self._portfolio_with_pending_memo
        pending = list(self._pending.values())
        self._portfolio_with_pending_memo = msgspec.structs.replace(
            self._portfolio,
            working_entry_count=self._portfolio.working_entry_count + len(pending),
            working_entries=self._portfolio.working_entries
            + tuple((p.strategy, p.instrument) for p in pending),
            heat=self._portfolio.heat + sum((p.risk_amount for p in pending), Decimal(0)),
        )
        return self._portfolio_with_pending_memo

    def _retire_pending(self, portfolio: PortfolioUpdated) -> None:
        # The order actor handles our tells in order, so anything it reports as working or open
        # is no longer pending here.
        known = {position.position_id for position in portfolio.positions}
        known.update(portfolio.working_plan_ids)
        for plan_id in [p for p in self._pending if p in known]:
            del self._pending[plan_id]
        self._pending = {
            plan_id: pending
            for plan_id, pending in self._pending.items()
            if pending.ts_ns > portfolio.ts_event - _PENDING_EXPIRY_NS
        }

    def _expire_pending(self, now: int) -> None:
        if not self._pending:
            return
        expired = [p for p, a in self._pending.items() if a.ts_ns <= now - _PENDING_EXPIRY_NS]
        for plan_id in expired:
            del self._pending[plan_id]
        if expired:
            self._portfolio_with_pending_memo = None

    def _check_portfolio_limits(self, portfolio: PortfolioUpdated) -> None:
        now = self.clock.now_ns()
        breach = daily_loss_breached(portfolio, self._limits)
        if breach is None:
            if not self._outbox.is_pending(_DAILY_LOSS_TRIP):
                self._daily_loss_tripped = False  # a new trading day (or a recovery) re-arms it
        elif not self._daily_loss_tripped and not self._outbox.is_pending(_DAILY_LOSS_TRIP):
            log_event(
                logger,
                "RISK_LIMIT",
                f"daily loss limit breached: {breach.detail}",
                level=logging.CRITICAL,
                code=breach.code.value,
                detail=breach.detail,
            )
            self._outbox.send(
                _DAILY_LOSS_TRIP,
                TripKillSwitch(
                    reason=breach.code.value,
                    detail=breach.detail,
                    flatten=True,
                    flatten_reason=_RISK_CAP_FLATTEN,
                ),
                now_ns=now,
            )
        heat = heat_breached(portfolio, self._limits)
        if (
            heat is not None
            and not self._risk_cap_flatten_sent
            and not self._outbox.is_pending(_RISK_CAP_FLATTEN)
        ):
            log_event(
                logger,
                "RISK_LIMIT",
                f"portfolio heat above cap, flattening: {heat.detail}",
                level=logging.CRITICAL,
                code=heat.code.value,
                detail=heat.detail,
            )
            self._outbox.send(
                _RISK_CAP_FLATTEN,
                TripKillSwitch(
                    reason=heat.code.value,
                    detail=heat.detail,
                    flatten=True,
                    flatten_reason=_RISK_CAP_FLATTEN,
                ),
                now_ns=now,
            )
        self._report_risk_cap(breach, heat, now)

    def _report_risk_cap(self, breach: Denial | None, heat: Denial | None, now: int) -> None:
        breaches = [d for d in (breach, heat) if d is not None]
        codes = tuple(d.code.value for d in breaches)
        # Told when which limit is breached changes, not on every mark (the figures move).
        if codes == self._risk_cap_codes:
            return
        self._risk_cap_codes = codes
        figures = "; ".join(f"{d.code.value} {d.detail}" for d in breaches)
        self._risk_cap_reported = figures or None
        self._tell_watchdog_risk_cap(self._risk_cap_reported, now)

    def _tell_watchdog_risk_cap(self, figures: str | None, now: int) -> None:
        self.directory.tell(
            self._watchdog_actor,
            TripwireConditionChanged(
                rule=TripwireRule.RISK_CAP,
                active=figures is not None,
                detail=figures or "",
                ts_event=now,
            ),
        )

    # ------------------------------------------------------------------ DENIALS
    def _block(self, plan: TradePlan, denial: Denial, now: int) -> None:
        blocked = RiskBlocked(
            plan_client_id=plan.plan_client_id,
            strategy=plan.strategy,
            instrument=plan.instrument,
            code=denial.code,
            detail=denial.detail,
            ts_event=now,
        )
        self._blocks[denial.code.value] = self._blocks.get(denial.code.value, 0) + 1
        if self._day_figures is not None:
            self._day_figures.count_blocked(denial.code.value, now)
        self._last_blocks.append(blocked)
        counter = self._block_counters.get(denial.code.value)
        if counter is None:
            counter = self._metrics.risk_blocks_total.labels(reason=denial.code.value)
            self._block_counters[denial.code.value] = counter
        counter.inc()
        if denial.code in _MARKET_QUALITY_CODES:
            self.directory.tell(
                self._watchdog_actor,
                MarketQualityRejected(
                    code=denial.code, instrument=plan.instrument, detail=denial.detail, ts_event=now
                ),
            )
            log_event(
                logger,
                denial.code.value,
                f"{plan.strategy} {plan.instrument}: {denial.detail}",
                level=logging.WARNING,
                plan_client_id=plan.plan_client_id,
            )
        else:
            logger.info(
                "risk blocked %s %s %s: %s %s",
                plan.plan_client_id,
                plan.strategy,
                plan.instrument,
                denial.code.value,
                denial.detail,
            )

    # ------------------------------------------------------------------ EGRESS
    def _approve(self, plan: TradePlan, approval: Approval, now: int) -> None:
        command = SubmitBracket(plan=plan, quantity=approval.quantity, ts_init=now)
        if not self.directory.tell(self._order_actor, command):
            self._block(
                plan,
                Denial(code=DenialCode.BACKPRESSURE, detail="order actor unavailable or full"),
                now,
            )
            return
        if self._day_figures is not None:
            self._day_figures.count_approved(plan.strategy, now)
        self._portfolio_with_pending_memo = None
        self._pending[plan.plan_client_id] = _PendingApproval(
            plan_client_id=plan.plan_client_id,
            strategy=plan.strategy,
            instrument=plan.instrument,
            risk_amount=abs(plan.entry_price - plan.stop_price) * approval.quantity,
            ts_ns=now,
        )
