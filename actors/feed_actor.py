"""FeedActor: one per feed. Validates and normalises ticks, tracks the feed's heartbeat, and
fans each tick out to its sinks.

Accepts: ``TicksReceived`` (a batch from a feed pump or a replay).
Publishes: every valid tick to each sink (a conflating mailbox per consuming actor, and the
paper venue, which must see every price to trigger resting orders); ``FeedHeartbeat`` to the
supervisor, throttled, so staleness can be judged.

Bad market data (unknown instrument, crossed or non-positive prices, time going backwards) is
dropped, counted in ``trader_ticks_rejected_total{feed,reason}`` and logged once per reason per
minute; it never reaches a strategy. A sink that raises is logged and skipped: one consumer's
failure must not starve the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actors.base import SUPERVISOR, VigilActor
from actors.heartbeat import HeartbeatThrottle
from domain.clock import NANOS_PER_SECOND
from domain.messages import FeedHeartbeat, Tick, TicksReceived

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from domain.instruments import Instrument

__all__ = ["FeedActor", "TickSink"]

logger = logging.getLogger(__name__)

TickSink = Callable[[Tick], None]
_HEARTBEAT_EVERY_NS = NANOS_PER_SECOND // 5
_REJECT_LOG_EVERY_NS = 60 * NANOS_PER_SECOND


class FeedActor(VigilActor):
    @staticmethod
    def message_weight(message: Any) -> int:
        # The inbox is bounded in ticks, whatever the batch size of the source.
        return len(message.ticks) if isinstance(message, TicksReceived) else 1

    def __init__(
        self,
        *,
        feed: str,
        instruments: Mapping[str, Instrument],
        sinks: Sequence[TickSink],
        metrics: EngineMetrics,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._feed = feed
        self._instruments = dict(instruments)
        self._sinks = list(sinks)
        self._metrics = metrics
        self._ticks_counter = metrics.ticks_total.labels(feed=feed)
        self._last_tick: dict[str, Tick] = {}
        self._heartbeat = HeartbeatThrottle(_HEARTBEAT_EVERY_NS)
        self._last_data_ns: int | None = None
        self._accepted = 0
        self._rejected: dict[str, int] = {}
        self._reject_logged_ns: dict[str, int] = {}

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {TicksReceived: self.on_ticks_received}

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_ticks_received(self, batch: TicksReceived) -> None:
        now = self.clock.now_ns()
        accepted = 0
        for tick in batch.ticks:
            reason = self._rejection(tick)
            if reason is not None:
                self._reject(tick, reason, now)
                continue
            self._last_tick[tick.instrument] = tick
            accepted += 1
            for sink in self._sinks:
                try:
                    sink(tick)
                except Exception:
                    logger.exception("tick sink %r failed for %s", sink, tick.instrument)
        if accepted:
            self._accepted += accepted
            self._ticks_counter.inc(accepted)
            self._last_data_ns = now
            if self._heartbeat.due(now, now):
                self.directory.tell(SUPERVISOR, FeedHeartbeat(feed=self._feed, ts_event=now))

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "feed": self._feed,
            "accepted": self._accepted,
            "rejected": dict(self._rejected),
            "last_data_ns": self._last_data_ns,
            "last_prices": {
                symbol: {"bid": str(t.bid), "ask": str(t.ask), "ts_event": t.ts_event}
                for symbol, t in self._last_tick.items()
            },
            "mailbox_depth": self.mailbox_depth,
        }

    # ------------------------------------------------------------------ CHECKS
    def _rejection(self, tick: Tick) -> str | None:
        instrument = self._instruments.get(tick.instrument)
        if instrument is None:
            return "UNKNOWN_INSTRUMENT"
        if tick.bid <= 0 or tick.ask <= 0 or tick.last <= 0:
            return "NON_POSITIVE_PRICE"
        if tick.bid > tick.ask:
            return "CROSSED_QUOTE"
        previous = self._last_tick.get(tick.instrument)
        if previous is not None and tick.ts_event < previous.ts_event:
            return "OUT_OF_ORDER"
        return None

    def _reject(self, tick: Tick, reason: str, now: int) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._metrics.ticks_rejected_total.labels(feed=self._feed, reason=reason).inc()
        if now - self._reject_logged_ns.get(reason, -_REJECT_LOG_EVERY_NS) >= _REJECT_LOG_EVERY_NS:
            self._reject_logged_ns[reason] = now
            logger.warning(
                "feed %s rejected tick for %s: %s (bid=%s ask=%s ts=%s)",
                self._feed,
                tick.instrument,
                reason,
                tick.bid,
                tick.ask,
                tick.ts_event,
            )
