"""The broker gateway: the order actor's requests go to the broker here, never on its thread.

A real broker takes ~200 ms to answer a request. Called on the order actor's thread, that
would stall every decision behind it: the next instrument's plan, a cancel, a fill. So the
order actor hands each request (submit, cancel, modify) to a gateway and goes on; it learns
the outcome as a message (``domain.messages.gateway``), told to it by name through the
engine's directory:

- a submit or cancel that went through: no message (the broker's own reports follow);
- a modify that went through: ``BrokerRequestCompleted`` (the books resize the leg only now);
- a refusal (``BrokerRejected``) or no answer (``BrokerUnavailable``, or any other exception,
  which is an unknown outcome too: the broker may have acted): ``BrokerRequestFailed``;
- an entry not sent because the kill switch's decision (``TradingGate``, read right before the
  broker call) no longer allows entries: ``BrokerRequestWithheld``. The order actor's last gate
  runs at hand-over; this keeps "no entry reaches the broker once a stop is acknowledged" true
  for an entry that waited in the queue meanwhile. Exits, protective legs and cancels only
  reduce exposure and are never withheld.

Two gateways, one behaviour:

- ``ThreadedBrokerGateway``: a priority queue served by worker threads. Cancels go first, then
  exits and protective legs (they only reduce exposure), then entries; FIFO within a priority
  (where the automatic-safety issue adds its rate limits). Requests for one
  ``client_order_id`` run one at a time and in the order they were handed over (a cancel never
  overtakes its submit); a cancel queued behind its order's submit lends it its priority.
  A request identical to one still waiting for the same order is not queued twice.
- ``InlineBrokerGateway``: calls the broker on the caller's thread, for a venue that never
  blocks (the in-process paper venue): no thread hand-off on the order path, the outcome still
  comes back as a message, so the order actor has one code path for both.

Threads and failures: ``submit``/``cancel``/``modify`` are called on the order actor's thread;
the threaded gateway's broker calls and outcome messages happen on its workers. A worker never
dies of a broker error. ``stop()`` stops taking requests, drops what is still queued (those
orders stay in flight in the books: storage has them as written ahead, and recovery settles
them from the broker's order list, never as rejected), lets the running calls finish (up to a
timeout) and returns how many requests were left. A request handed over after ``stop()`` is
dropped the same way. An outcome the order actor cannot take (stopped, restarting) is logged
and lost; the order stays in flight and reconciliation settles it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from domain.enums import DenialCode, LegKind
from domain.messages import (
    BrokerRequestCompleted,
    BrokerRequestFailed,
    BrokerRequestKind,
    BrokerRequestWithheld,
)

if TYPE_CHECKING:
    from actors.trading_gate import TradingGate
    from adapters.brokers.base import BrokerPort
    from adapters.metrics import EngineMetrics
    from domain.clock import Clock
    from domain.messages import OrderRequest

__all__ = [
    "BrokerGateway",
    "BrokerPriority",
    "GatewayMode",
    "InlineBrokerGateway",
    "ThreadedBrokerGateway",
    "build_broker_gateway",
    "request_priority",
]

logger = logging.getLogger(__name__)

GatewayMode = Literal["thread", "inline"]
Deliver = Callable[[object], bool]
QUEUE_NAME = "broker_gateway"


class BrokerPriority(IntEnum):
    """Lower goes first."""

    CANCEL = 0
    PROTECTIVE = 1  # stops, targets and exits: they only ever reduce exposure
    ENTRY = 2


def request_priority(kind: BrokerRequestKind, leg: LegKind) -> BrokerPriority:
    if kind is BrokerRequestKind.CANCEL:
        return BrokerPriority.CANCEL
    return BrokerPriority.ENTRY if leg is LegKind.ENTRY else BrokerPriority.PROTECTIVE


@dataclass(slots=True, eq=False)
class _Request:
    kind: BrokerRequestKind
    client_order_id: str
    priority: int
    sequence: int
    call: Callable[[], None]
    quantity: int | None
    report_success: bool
    is_entry: bool = False
    queued_ns: int = field(default_factory=time.perf_counter_ns)
    taken: bool = False


class BrokerGateway:
    """What the order actor calls; subclasses decide where the broker call runs.

    Args:
        broker: the broker port.
        deliver: tells the order actor an outcome message; returns False if it could not.
        clock: stamps ``ts_event`` on outcomes.
        gate: the kill switch's decision, re-read right before an entry's broker call (None:
            entries are not re-checked).
        metrics: the gateway's queue depth and wait time (``trader_queue_depth{queue=
            "broker_gateway"}``, ``trader_rate_limit_wait_ms``).
    """

    mode: GatewayMode

    def __init__(
        self,
        broker: BrokerPort,
        *,
        deliver: Deliver,
        clock: Clock,
        gate: TradingGate | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self._broker = broker
        self._gate = gate
        self._deliver = deliver
        self._clock = clock
        self._metrics = metrics
        self._sequence = itertools.count()
        # Workers count concurrently; the snapshot reads under the same lock.
        self._counts_lock = threading.Lock()
        self.calls_total = 0
        self.failures_total = 0

    # ------------------------------------------------------------------ COMMANDS
    def submit(self, request: OrderRequest, *, leg: LegKind) -> None:
        """Send ``request`` to the broker; a failure comes back as ``BrokerRequestFailed``."""
        broker = self._broker
        self._hand_over(
            BrokerRequestKind.SUBMIT,
            request.client_order_id,
            leg,
            lambda: broker.submit_order(request),
        )

    def cancel(self, client_order_id: str, *, leg: LegKind) -> None:
        """Cancel an order at the broker; a failure comes back as ``BrokerRequestFailed``."""
        broker = self._broker
        self._hand_over(
            BrokerRequestKind.CANCEL,
            client_order_id,
            leg,
            lambda: broker.cancel_order(client_order_id),
        )

    def modify(self, client_order_id: str, *, quantity: int, leg: LegKind) -> None:
        """Change an order's total quantity; the outcome comes back either way:
        ``BrokerRequestCompleted`` or ``BrokerRequestFailed``."""
        broker = self._broker
        self._hand_over(
            BrokerRequestKind.MODIFY,
            client_order_id,
            leg,
            lambda: broker.modify_order(client_order_id, quantity=quantity),
            quantity=quantity,
            report_success=True,
        )

    def stop(self, timeout_s: float = 5.0) -> int:
        """Stop taking requests; returns how many were dropped (they stay in flight)."""
        return 0

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        with self._counts_lock:
            return {
                "mode": self.mode,
                "calls_total": self.calls_total,
                "failures_total": self.failures_total,
            }

    # ------------------------------------------------------------------ INTERNALS
    def _hand_over(
        self,
        kind: BrokerRequestKind,
        client_order_id: str,
        leg: LegKind,
        call: Callable[[], None],
        *,
        quantity: int | None = None,
        report_success: bool = False,
    ) -> None:
        raise NotImplementedError

    def _carry_out(self, request: _Request) -> None:
        if request.is_entry and self._gate is not None:
            denial = self._gate.entry_denial(self._clock.now_ns())
            if denial is not None:
                self._withhold(request, *denial)
                return
        started_ns = time.perf_counter_ns()
        queued_us = (started_ns - request.queued_ns) // 1000
        rejected: bool | None = None
        try:
            request.call()
        except BrokerRejected as error:
            rejected, text = True, str(error)
        except BrokerUnavailable as error:
            rejected, text = False, str(error)
        except Exception as error:
            # A bug or a surprise in the adapter: the broker may have acted, so the outcome is
            # unknown (never "rejected"); the order stays in flight and reconciliation settles it.
            logger.exception(
                "broker %s of %s raised unexpectedly; outcome unknown",
                request.kind.value,
                request.client_order_id,
            )
            rejected, text = False, f"BROKER_ERROR: {error!r}"
        call_us = (time.perf_counter_ns() - started_ns) // 1000
        with self._counts_lock:
            self.calls_total += 1
            self.failures_total += rejected is not None
        if rejected is None:
            if not request.report_success:
                return
            outcome: object = BrokerRequestCompleted(
                client_order_id=request.client_order_id,
                request=request.kind,
                quantity=request.quantity,
                queued_us=queued_us,
                call_us=call_us,
                ts_event=self._clock.now_ns(),
            )
        else:
            outcome = BrokerRequestFailed(
                client_order_id=request.client_order_id,
                request=request.kind,
                rejected=rejected,
                error=text,
                quantity=request.quantity,
                queued_us=queued_us,
                call_us=call_us,
                ts_event=self._clock.now_ns(),
            )
        self._tell(outcome)

    def _withhold(self, request: _Request, code: DenialCode, detail: str) -> None:
        self._tell(
            BrokerRequestWithheld(
                client_order_id=request.client_order_id,
                request=request.kind,
                code=code,
                detail=detail,
                ts_event=self._clock.now_ns(),
            )
        )

    def _tell(self, outcome: object) -> None:
        if not self._deliver(outcome):
            logger.warning(
                "broker gateway could not tell the order actor %r; the order stays in flight "
                "until reconciliation settles it",
                outcome,
            )


class InlineBrokerGateway(BrokerGateway):
    """Calls the broker on the caller's thread; outcomes still come back as messages."""

    mode: GatewayMode = "inline"

    def _hand_over(
        self,
        kind: BrokerRequestKind,
        client_order_id: str,
        leg: LegKind,
        call: Callable[[], None],
        *,
        quantity: int | None = None,
        report_success: bool = False,
    ) -> None:
        self._carry_out(
            _Request(
                kind=kind,
                client_order_id=client_order_id,
                priority=request_priority(kind, leg),
                sequence=0,
                call=call,
                quantity=quantity,
                report_success=report_success,
                is_entry=kind is BrokerRequestKind.SUBMIT and leg is LegKind.ENTRY,
            )
        )


class ThreadedBrokerGateway(BrokerGateway):
    """A priority queue in front of the broker, served by ``workers`` threads.

    Args:
        workers: how many broker calls may be in progress at once (for different orders; one
            order's requests always run one at a time, in order).
        (the rest as ``BrokerGateway``)
    """

    mode: GatewayMode = "thread"

    def __init__(
        self,
        broker: BrokerPort,
        *,
        deliver: Deliver,
        clock: Clock,
        gate: TradingGate | None = None,
        metrics: EngineMetrics | None = None,
        workers: int = 4,
        name: str = "broker-gateway",
    ) -> None:
        super().__init__(broker, deliver=deliver, clock=clock, gate=gate, metrics=metrics)
        if workers < 1:
            raise ValueError(f"a threaded broker gateway needs workers >= 1, was {workers}")
        self._ready = threading.Condition(threading.Lock())
        # Guarded by _ready: the heap holds (priority, sequence, request) for the first waiting
        # request of each order that has none running (stale entries are skipped: ``taken``);
        # _waiting holds every order's waiting requests in the order they were handed over.
        self._heap: list[tuple[int, int, _Request]] = []
        self._waiting: dict[str, deque[_Request]] = {}
        self._running: set[str] = set()
        self._depth = 0
        self._is_stopping = False
        self.dropped_total = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> int:
        with self._ready:
            if self._is_stopping:
                return 0
            self._is_stopping = True
            dropped = self._depth
            left = [r.client_order_id for lane in self._waiting.values() for r in lane]
            self._heap.clear()
            self._waiting.clear()
            self._depth = 0
            self.dropped_total += dropped
            self._ready.notify_all()
        self._set_depth(0)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        still_running = [t.name for t in self._threads if t.is_alive()]
        if dropped or still_running:
            logger.warning(
                "broker gateway stopped: %d queued requests not sent (their orders stay in "
                "flight; recovery settles them): %s; workers still in a broker call: %s",
                dropped,
                ", ".join(left[:20]),
                still_running,
            )
        return dropped

    def snapshot(self) -> dict[str, Any]:
        with self._ready:
            return {
                **super().snapshot(),
                "workers": len(self._threads),
                "queued": self._depth,
                "running": sorted(self._running),
                "dropped_total": self.dropped_total,
                "stopping": self._is_stopping,
            }

    # ------------------------------------------------------------------ INTERNALS
    def _hand_over(
        self,
        kind: BrokerRequestKind,
        client_order_id: str,
        leg: LegKind,
        call: Callable[[], None],
        *,
        quantity: int | None = None,
        report_success: bool = False,
    ) -> None:
        with self._ready:
            if self._is_stopping:
                self.dropped_total += 1
                logger.warning(
                    "broker gateway stopped: %s of %s not sent (stays in flight)",
                    kind.value,
                    client_order_id,
                )
                return
            lane = self._waiting.setdefault(client_order_id, deque())
            if any(r.kind is kind and r.quantity == quantity for r in lane):
                # Already waiting: a second identical request would change nothing at the broker
                # (a repeated submit is refused as a duplicate, a repeated cancel is a no-op).
                return
            request = _Request(
                kind=kind,
                client_order_id=client_order_id,
                priority=request_priority(kind, leg),
                sequence=next(self._sequence),
                call=call,
                quantity=quantity,
                report_success=report_success,
                is_entry=kind is BrokerRequestKind.SUBMIT and leg is LegKind.ENTRY,
            )
            lane.append(request)
            self._depth += 1
            depth = self._depth
            if client_order_id not in self._running:
                head = lane[0]
                if head is request or request.priority < head.priority:
                    # The first request of its order, or one that must go sooner than the one
                    # it waits behind (a cancel behind its entry's submit): the head goes ahead
                    # at this priority, keeping its own place in the FIFO.
                    heapq.heappush(self._heap, (request.priority, head.sequence, head))
                    self._ready.notify()
        self._set_depth(depth)

    def _work(self) -> None:
        while True:
            with self._ready:
                request = self._take()
                while request is None and not self._is_stopping:
                    self._ready.wait()
                    request = self._take()
                if request is None:
                    return
                depth = self._depth
            self._set_depth(depth)
            if self._metrics is not None:
                waited_ms = (time.perf_counter_ns() - request.queued_ns) / 1e6
                self._metrics.rate_limit_wait_ms.observe(waited_ms)
            try:
                self._carry_out(request)
            finally:
                self._finish(request)

    def _take(self) -> _Request | None:
        # Called with _ready held.
        if self._is_stopping:
            return None
        while self._heap:
            _, _, request = heapq.heappop(self._heap)
            if request.taken:
                continue
            request.taken = True
            lane = self._waiting[request.client_order_id]
            assert lane[0] is request
            lane.popleft()
            self._depth -= 1
            self._running.add(request.client_order_id)
            return request
        return None

    def _finish(self, request: _Request) -> None:
        with self._ready:
            key = request.client_order_id
            self._running.discard(key)
            lane = self._waiting.get(key)
            if not lane:
                self._waiting.pop(key, None)
                return
            head = lane[0]
            priority = min(r.priority for r in lane)
            heapq.heappush(self._heap, (priority, head.sequence, head))
            self._ready.notify()

    def _set_depth(self, depth: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(queue=QUEUE_NAME).set(depth)


def build_broker_gateway(
    mode: GatewayMode,
    broker: BrokerPort,
    *,
    deliver: Deliver,
    clock: Clock,
    gate: TradingGate | None = None,
    metrics: EngineMetrics | None = None,
    workers: int = 4,
) -> BrokerGateway:
    """The gateway ``mode`` names, over ``broker``. The inline gateway needs no ``gate``: it
    runs right after the order actor's own last gate, on its thread."""
    if mode == "inline":
        return InlineBrokerGateway(broker, deliver=deliver, clock=clock, metrics=metrics)
    return ThreadedBrokerGateway(
        broker, deliver=deliver, clock=clock, gate=gate, metrics=metrics, workers=workers
    )
