"""StrategyActor: one per strategy instance. Ticks in, trade plans out.

Accepts: ``DrainTicks`` (its conflating mailbox holds the latest tick per instrument).
Publishes: ``TradePlan`` to the risk actor.

Market data reaches it through a ``TickConflator``, so when it falls behind it sees the latest
quote per instrument rather than a backlog (each overwritten tick is counted in
``trader_ticks_conflated_total{consumer}``); when the feed is a replayed file, through a
``TickQueue`` that keeps every tick (a backtest evaluates them all: ``ticks_seen``). A plan
the risk actor cannot take (mailbox full) is dropped and counted: a plan is only worth
anything while its quote is fresh. Indicator state is rebuilt from market data after a restart
(a warm-up); nothing here must persist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.base import VigilActor
from domain.messages import DrainTicks

if TYPE_CHECKING:
    from actors.mailbox import TickChannel
    from adapters.metrics import EngineMetrics
    from domain.strategies.base import Strategy

__all__ = ["StrategyActor"]

logger = logging.getLogger(__name__)


class StrategyActor(VigilActor):
    def __init__(
        self,
        *,
        strategy: Strategy,
        instruments: frozenset[str],
        conflator: TickChannel,
        metrics: EngineMetrics,
        risk_actor: str = "risk",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._strategy = strategy
        self._instruments = instruments
        self._conflator = conflator
        self._metrics = metrics
        self._risk_actor = risk_actor
        self._conflated_reported = conflator.conflated
        self._ticks_seen = 0
        self._plans_sent = 0
        self._plans_dropped = 0
        self._last_tick_ts: int | None = None

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {DrainTicks: self.on_drain_ticks}

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        # Whatever arrived while a previous incarnation was down is still in the conflator.
        self.on_drain_ticks(DrainTicks())

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_drain_ticks(self, _wake: DrainTicks) -> None:
        ticks = self._conflator.drain()
        if self._conflator.conflated != self._conflated_reported:
            self._report_conflation()
        # Runs for every tick (a replay drains one at a time): locals, and the counters once.
        traded = self._instruments
        on_tick = self._strategy.on_tick
        for tick in ticks:
            if tick.instrument not in traded:
                continue
            self._ticks_seen += 1
            self._last_tick_ts = tick.ts_event
            plans = on_tick(tick)
            if not plans:
                continue
            decided_ns = self.clock.now_ns()
            self._metrics.tick_to_decision_ms.observe(max(0, decided_ns - tick.ts_init) / 1e6)
            for plan in plans:
                if self.directory.tell(self._risk_actor, plan):
                    self._plans_sent += 1
                else:
                    self._plans_dropped += 1
                    logger.warning(
                        "strategy %s dropped plan %s: risk actor unavailable or full",
                        self.name,
                        plan.plan_client_id,
                    )

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ticks_seen": self._ticks_seen,
            "last_tick_ts": self._last_tick_ts,
            "plans_sent": self._plans_sent,
            "plans_dropped": self._plans_dropped,
            "ticks_conflated": self._conflator.conflated,
            "mailbox_depth": self.mailbox_depth,
            "strategy": self._strategy.snapshot(),
        }

    def _report_conflation(self) -> None:
        total = self._conflator.conflated
        if total > self._conflated_reported:
            self._metrics.ticks_conflated_total.labels(consumer=self.name).inc(
                total - self._conflated_reported
            )
            self._conflated_reported = total
