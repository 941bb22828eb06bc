"""FeedActor: one per feed. Validates and normalises ticks, tracks the feed's heartbeat, and
fans each tick out to its sinks.

Accepts: ``TicksReceived`` (a batch from a feed pump or a replay).
Publishes: every valid tick to each sink (a conflating mailbox per consuming actor, and the
paper venue, which must see every price to trigger resting orders); ``FeedHeartbeat`` to the
supervisor, throttled (``heartbeat_interval_ns``: 200 ms, or 1/25 of the staleness limit when
that is longer), so staleness can be judged.

Bad market data is decided by ``domain.market_data.tick_rejection`` (NaN, sNaN, infinities,
zero or negative prices, absurd magnitudes or precision, crossed quotes, bad sizes or
timestamps, time going backwards, unknown instruments, things that are not ticks at all), once:
a batch marked ``validated`` by a source that applied it already (the CSV reader) is checked
here only for an unknown instrument and for time going backwards. A
rejected tick is dropped before any sink sees it, counted in
``trader_ticks_rejected_total{feed,reason}`` and ``snapshot()["rejected"]``, and logged at most
once per reason per minute (with how many were dropped since the last line). Nothing in a
batch can make this actor raise: the sinks (the paper venue, the risk and order actors'
conflators, every strategy's) are only ever handed ticks that passed the check. A sink that
raises is logged and skipped: one consumer's failure must not starve the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actors.base import SUPERVISOR, VigilActor
from actors.heartbeat import HeartbeatThrottle
from domain.clock import NANOS_PER_SECOND
from domain.market_data import TickRejection, tick_rejection
from domain.messages import DrainTicks, FeedHeartbeat, Tick, TicksReceived

if TYPE_CHECKING:
    from actors.mailbox import FeedDoor
    from adapters.metrics import EngineMetrics
    from domain.instruments import Instrument

__all__ = ["FeedActor", "TickSink", "heartbeat_interval_ns"]

logger = logging.getLogger(__name__)

TickSink = Callable[[Tick], None]
_HEARTBEAT_EVERY_NS = NANOS_PER_SECOND // 5
_DRAIN = DrainTicks()
# The supervisor's view of the feed may lag by this share of its staleness limit.
_HEARTBEATS_PER_STALE_LIMIT = 25


def heartbeat_interval_ns(marketdata_stale_s: float) -> int:
    """How often the feed tells the supervisor about fresh data: every 200 ms, or 1/25 of the
    staleness limit when that is longer (a replay's limit is a year: it needs no heartbeat per
    200 ms of replayed time, each a wake-up of the supervisor's thread)."""
    return max(
        _HEARTBEAT_EVERY_NS,
        int(marketdata_stale_s * NANOS_PER_SECOND) // _HEARTBEATS_PER_STALE_LIMIT,
    )


_REJECT_LOG_EVERY_NS = 60 * NANOS_PER_SECOND


class FeedActor(VigilActor):
    @staticmethod
    def message_weight(message: Any) -> int:
        # The inbox is bounded in ticks, whatever the batch size of the source. A malformed
        # batch weighs 1 and is rejected by the handler, not by the sender's tell.
        if isinstance(message, TicksReceived):
            try:
                return max(1, len(message.ticks))
            except TypeError:
                return 1
        return 1

    def __init__(
        self,
        *,
        feed: str,
        instruments: Mapping[str, Instrument],
        sinks: Sequence[TickSink],
        metrics: EngineMetrics,
        heartbeat_every_ns: int = _HEARTBEAT_EVERY_NS,
        door: FeedDoor | None = None,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._door = door
        self._round = max(1, len(instruments))
        self._door_conflated_seen = 0 if door is None else door.conflated
        self._feed = feed
        self._instruments = dict(instruments)
        self._sinks = list(sinks)
        self._metrics = metrics
        self._ticks_counter = metrics.ticks_total.labels(feed=feed)
        self._last_tick: dict[str, Tick] = {}
        self._heartbeat = HeartbeatThrottle(heartbeat_every_ns)
        self._last_data_ns: int | None = None
        self._accepted = 0
        self._rejected: dict[str, int] = {}
        self._reject_logged_ns: dict[str, int] = {}
        self._rejected_since_log: dict[str, int] = {}

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {TicksReceived: self.on_ticks_received, DrainTicks: self.on_drain_ticks}

    def on_start(self) -> None:
        super().on_start()
        self.on_drain_ticks(_DRAIN)  # what reached the door while this actor was down

    def _handle_receive(self, message: Any) -> Any:
        if self._door is not None and type(message) is not DrainTicks:
            # Anything else (a query, a batch told directly) comes after what reached the door
            # before it, as it would through the inbox.
            self._take_everything()
        return super()._handle_receive(message)

    def on_drain_ticks(self, _wake: DrainTicks) -> None:
        """The live feed's door has ticks (``actors.mailbox.FeedDoor``): take a round in, and
        come back for the next after the strategies had theirs (a turn that fanned out several
        rounds made them conflate ticks they could have handled)."""
        if self._take_round() and not self.directory.tell(self.name, _DRAIN):
            # Could not come back later (the inbox refused the tell): take the rest now rather
            # than leave the door's wake-up pending with nobody to answer it.
            self._take_everything()

    def _take_everything(self) -> None:
        while self._take_round():
            pass

    def _take_round(self) -> bool:
        """Take in one round of quotes from the door; whether more wait."""
        door = self._door
        if door is None:
            return False
        batch, more = door.drain(limit=self._round)
        dropped = door.conflated - self._door_conflated_seen
        if dropped:
            self._door_conflated_seen += dropped
            self._metrics.ticks_conflated_total.labels(consumer=self.name).inc(dropped)
        if batch is not None:
            self.on_ticks_received(batch)
        return more

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_ticks_received(self, batch: TicksReceived) -> None:
        now = self.clock.now_ns()
        try:
            ticks = tuple(batch.ticks)
        except TypeError:
            # Not even a sequence: nothing in it can be trusted, but the actor must live on.
            self._reject(batch, TickRejection.NOT_A_TICK, now)
            return
        accepted = 0
        checked = batch.validated is True
        for tick in ticks:
            if checked and type(tick) is Tick and tick.instrument in self._instruments:
                # The source held it to tick_rejection already: only what it could not know.
                previous = self._last_tick.get(tick.instrument)
                reason = (
                    TickRejection.OUT_OF_ORDER
                    if previous is not None and tick.ts_event < previous.ts_event
                    else None
                )
            else:
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
    def _rejection(self, tick: Any) -> TickRejection | None:
        symbol = getattr(tick, "instrument", None)
        # An unhashable "symbol" must not raise out of the lookup.
        instrument = self._instruments.get(symbol) if isinstance(symbol, str) else None
        previous = self._last_tick.get(symbol) if instrument is not None else None
        return tick_rejection(tick, instrument, previous)

    # ------------------------------------------------------------------ DENIALS
    def _reject(self, tick: Any, reason: TickRejection, now: int) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._metrics.ticks_rejected_total.labels(feed=self._feed, reason=reason.value).inc()
        self._rejected_since_log[reason] = self._rejected_since_log.get(reason, 0) + 1
        last_logged = self._reject_logged_ns.get(reason)
        if last_logged is not None and now - last_logged < _REJECT_LOG_EVERY_NS:
            return
        self._reject_logged_ns[reason] = now
        dropped = self._rejected_since_log.pop(reason)
        logger.warning(
            "feed %s rejected a tick: %s (instrument=%s bid=%s ask=%s last=%s ts_event=%s); "
            "%d rejected for this reason since the last such line, %d in all",
            self._feed,
            reason.value,
            _shown(tick, "instrument"),
            _shown(tick, "bid"),
            _shown(tick, "ask"),
            _shown(tick, "last"),
            _shown(tick, "ts_event"),
            dropped,
            self._rejected[reason],
            extra={"event": "TICK_REJECTED", "feed": self._feed, "reason": reason.value},
        )


def _shown(tick: Any, field: str) -> str:
    # Garbage can be arbitrarily long (a megabyte "price"); the log gets a bounded repr.
    try:
        text = repr(getattr(tick, field, None))
    except Exception:
        return "<unprintable>"
    return text if len(text) <= 40 else text[:37] + "..."
