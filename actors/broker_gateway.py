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
  reduce exposure and are never withheld;
- a request the broker refused for our credentials (``BrokerAuthExpired``): an entry is
  ``BrokerRequestWithheld`` (``BROKER_AUTH``: it never reached the broker), anything else
  ``BrokerRequestFailed`` as an unknown outcome (``BROKER_AUTH_EXPIRED: ...``), settled by
  reconciliation once the session is back. Never retried here.

Two gateways, one behaviour:

- ``ThreadedBrokerGateway``: a priority queue served by worker threads. What closes a position
  goes first (an exit, a stop made a market order: a flatten sends them only once their
  bracket's cancels are answered), then cancels, then protective legs (they only reduce
  exposure), then entries; FIFO within a priority.
  Requests for one ``client_order_id`` run one at a time and in the order they were handed
  over (a cancel never overtakes its submit); a cancel queued behind its order's submit lends
  it its priority. A request identical to one still waiting for the same order is not queued
  twice.
- ``InlineBrokerGateway``: calls the broker on the caller's thread, for a venue that never
  blocks (the in-process paper venue): no thread hand-off on the order path, the outcome still
  comes back as a message, so the order actor has one code path for both.

Rate limits (``BrokerRateLimit``, from ``broker.rate_limit_per_s``/``rate_limit_per_min``; the
broker's published limits: Kite Connect 10 order requests/s and 200 orders/min, IG 100
trading requests/min per account). The threaded gateway hands out a token before every broker
call, in priority order: a worker takes the request at the head of the queue only when the
limiter has room, so a cancel never waits behind an entry and a flatten's exits never wait
behind queued entries (they only wait for tokens the broker's limit has not yet given back).
The windows are ``limits``' moving windows (never more than N calls in any trailing second or
minute; stricter than a token bucket, which lets a full burst through at a window's edge), and
a call holds its token until it returns and is dated then: the broker counts a request when it
arrives, which is somewhere between our call and its answer, so dating the call at its end is
what keeps the broker's own count under the limit whatever the threads' timing (the price: a
call's duration is added to its token's time, about a sixth of the rate for 200 ms calls at
10/s). An entry the kill switch's decision stops is withheld without a token (below), and a
cancel waiting behind a withheld submit is dropped: the broker never saw that order. The inline
gateway cannot wait for tokens (it runs on the order actor's thread): a rate limit with
``gateway: inline`` is refused by the config, and ``auto`` picks the threaded gateway whenever
a limit is set.

429: a request the broker refuses for its rate limit (``BrokerRateLimited``: it did not act) is
retried, counted in ``trader_retries_total{type="rate_limit"}``: the whole threaded gateway
stops handing out tokens for the broker's ``retry_after_s`` (or ``backoff_s`` doubling per
retry of that request, up to ``backoff_max_s``; not tenacity, whose retries sleep on the
calling thread: here the request goes back to the head of its order's lane and waits its turn
in priority order, so a cancel that arrived meanwhile still goes first) and the request is sent
again, up to ``retries`` times. Then, and on the inline gateway at once, it is reported like an
unanswered call (``BrokerRequestFailed``, ``rejected=False``, ``BROKER_RATE_LIMITED: ...``): the
order stays in flight and reconciliation settles it.

The flatten reserve (``broker.flatten_reserve``, on by default; only with a per-minute limit):
entries may not use the part of the per-minute budget a flatten of everything the engine holds
would need, so a flatten right after a burst of entries is bound by the per-second limit alone,
never by a minute the entries used up (measured before it at Kite's 10/s and 200/min: 50
brackets opened within the minute, then a flatten 54.9 s to flat, waiting for the minute to
roll). The order actor tells the gateway (``update_flatten_reserve``, on its own thread, before
it hands over an order or a burst of them, and after a batch of cancels) what its books would
cost to flatten (``requests_to_flatten``: per bracket a cancel for each working leg, one exit
while it holds or may still hold a position, and, while its entry may still fill, the
protective legs to come with their own cancels: 6 for a fresh bracket, 3 for a protected
position; a broker that keeps the levels on the position (IG) needs no leg cancels). Brackets
whose entry is still queued here are not at the broker yet: they are taken out at the fresh
cost each, and an entry is taken only when the minute window still has room for it, for its own
bracket's worst case and for that reserve (plus the cancels, exits and legs waiting here).
Otherwise it waits, in FIFO order, for the window's oldest call to leave it or for the reserve
to shrink (a bracket closed: the next hand-over tells the gateway);
``trader_broker_flatten_reserve`` and ``trader_broker_entries_held_for_reserve`` show it, the
snapshot says so, and a log line marks when entries start and stop waiting for it. Cancels,
exits and protective legs use the whole budget, the reserve included (they are what it is for).
The per-second window gets no reserve: cancels and exits already take the next token before any
entry, so entries can delay a flatten by at most one second's window. What the reserve does not
count (modifies of partly filled legs, reconciliation's resends, a stop tightened by cancel and
replace, 429 retries) can still make a flatten wait for the minute.

Metrics: ``trader_rate_limit_wait_ms`` is the time a request, next in line with a worker free,
waited for its token (0 when one was free); ``trader_broker_queue_depth{priority}`` and
``trader_queue_depth{queue="broker_gateway"}`` the requests waiting; ``queue_depth()`` answers
the same for the Watchdog.

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

import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from adapters.brokers.base import (
    BrokerAuthExpired,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
)
from domain.enums import DenialCode, LegKind, OrderStatus
from domain.messages import (
    BrokerRequestCompleted,
    BrokerRequestFailed,
    BrokerRequestKind,
    BrokerRequestWithheld,
)
from domain.oco import BracketStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from actors.trading_gate import TradingGate
    from adapters.brokers.base import BrokerPort
    from adapters.metrics import EngineMetrics
    from domain.clock import Clock
    from domain.messages import OrderRequest
    from domain.oco import Bracket
    from domain.orders import Order

__all__ = [
    "BrokerGateway",
    "BrokerPriority",
    "BrokerRateLimit",
    "GatewayMode",
    "InlineBrokerGateway",
    "ThreadedBrokerGateway",
    "build_broker_gateway",
    "fresh_bracket_requests",
    "request_priority",
    "requests_to_flatten",
]

logger = logging.getLogger(__name__)

GatewayMode = Literal["thread", "inline"]
Deliver = Callable[[object], bool]
QUEUE_NAME = "broker_gateway"
# A blocked limiter is asked again at least this often (float rounding at a window's edge).
_MIN_TOKEN_WAIT_S = 0.001
# An entry held for the flatten reserve that time alone cannot free is weighed again this
# often (and whenever the reserve shrinks or a request arrives).
_RESERVE_RECHECK_S = 0.5
# How many withheld orders the gateway remembers, to drop cancels that follow them.
_WITHHELD_MEMORY = 10_000


# Submits whose call start is kept for the ack latency (unacknowledged ones age out).
_SUBMIT_STARTED_KEPT = 10_000


class BrokerPriority(IntEnum):
    """Lower goes first."""

    CLOSE = 0  # an exit, or a stop made a market order: each closes a position now
    CANCEL = 1
    PROTECTIVE = 2  # stops and targets: they only ever reduce exposure
    ENTRY = 3


def request_priority(kind: BrokerRequestKind, leg: LegKind) -> BrokerPriority:
    if kind is BrokerRequestKind.TO_MARKET or (
        kind is BrokerRequestKind.SUBMIT and leg is LegKind.EXIT
    ):
        # A flatten's closing requests come only once the bracket's cancels are answered:
        # ahead of the other brackets' cancels, each position closes as soon as it can.
        return BrokerPriority.CLOSE
    if kind is BrokerRequestKind.CANCEL:
        return BrokerPriority.CANCEL
    return BrokerPriority.ENTRY if leg is LegKind.ENTRY else BrokerPriority.PROTECTIVE


_STILL_MANAGED = (BracketStatus.PENDING_ENTRY, BracketStatus.OPEN, BracketStatus.FLATTENING)


def fresh_bracket_requests(*, levels_on_position: bool = False, stop_in_place: bool = False) -> int:
    """What a bracket whose entry has not filled yet may still ask of the broker, at most: the
    entry's cancel, its stop and target (placed on a fill; each cancelled again by a flatten
    unless the broker keeps them on the position) and one exit (``stop_in_place``: the stop
    made a market order is the exit)."""
    if levels_on_position:
        return 4
    return 5 if stop_in_place else 6


def requests_to_flatten(
    brackets: Iterable[Bracket],
    orders: Mapping[str, Order],
    *,
    levels_on_position: bool = False,
    stop_in_place: bool = False,
) -> int:
    """How many broker requests a flatten of ``brackets`` would take, at most, counting the
    protective legs an entry that may still fill would place first.

    Per bracket still managed: a cancel for each working order among its entry and current
    stop and target (one already being cancelled too: its cancel may still be on its way); one
    exit while it holds a position or its entry may still fill, unless its latest exit is
    working; and, unless it is being flattened, each missing stop or target that a fill would
    place (a submit and, later, its cancel; so is a leg booked but not yet handed to the
    gateway, PENDING_SUBMIT). ``levels_on_position`` (IG): the stop and target
    ride the exit, so they cost their submit and no cancel. ``stop_in_place`` (Kite): a stop
    that is working (not being cancelled) or will be placed is made the exit, in place of its
    cancel, so no separate exit is counted (a flatten that meets a stop the broker has not
    accepted yet costs one request more). Called on the order actor's thread over its books.
    """
    total = 0
    for bracket in brackets:
        status = bracket.status
        if status not in _STILL_MANAGED:
            continue
        entry = orders.get(bracket.entry_order_id)
        may_fill = entry is not None and entry.status.is_working
        requests = 1 if may_fill else 0
        holds = may_fill or bracket.open_quantity > 0
        legs_may_come = holds and status is not BracketStatus.FLATTENING
        stop_closes = False
        for kind, leg_id in (
            (LegKind.STOP, bracket.stop_order_id),
            (LegKind.TARGET, bracket.target_order_id),
        ):
            leg = orders.get(leg_id) if leg_id is not None else None
            if leg is not None and leg.status is OrderStatus.PENDING_SUBMIT:
                # Booked, not handed to the gateway yet: its submit is counted nowhere else.
                requests += 1 if levels_on_position else 2
            elif leg is not None and leg.status.is_working:
                requests += 0 if levels_on_position else 1
            elif legs_may_come:
                requests += 1 if levels_on_position else 2
            elif kind is LegKind.STOP:
                continue  # no stop will be there to close the position
            if kind is LegKind.STOP and (
                leg is None or leg.status is not OrderStatus.PENDING_CANCEL
            ):
                stop_closes = stop_in_place and not levels_on_position
        if holds and not stop_closes:
            exits = bracket.exit_order_ids
            latest_exit = orders.get(exits[-1]) if exits else None
            if latest_exit is None or not latest_exit.status.is_working:
                requests += 1
        total += requests
    return total


class BrokerRateLimit:
    """The broker's published request limits: at most ``per_second`` calls in any trailing
    second and ``per_minute`` in any trailing minute (None: no such limit).

    Each limit is a ``limits.MovingWindowRateLimiter`` window over its in-memory storage, on
    wall time (``time.time``, as ``limits`` reads it). A call takes a token before it starts
    (``take``) and gives it back when it has returned (``release``), which dates it in the
    windows then; calls in progress count against the limit meanwhile. Not thread-safe on its
    own: the gateway calls it with its queue lock held.
    """

    def __init__(self, *, per_second: int | None = None, per_minute: int | None = None) -> None:
        for name, value in (("per_second", per_second), ("per_minute", per_minute)):
            if value is not None and value < 1:
                raise ValueError(f"a broker rate limit needs {name} >= 1 or None, was {value}")
        self.per_second = per_second
        self.per_minute = per_minute
        self._items: list[RateLimitItem] = []
        self._minute_item: RateLimitItem | None = None
        if per_second is not None:
            self._items.append(RateLimitItemPerSecond(per_second, namespace="broker"))
        if per_minute is not None:
            self._minute_item = RateLimitItemPerMinute(per_minute, namespace="broker")
            self._items.append(self._minute_item)
        self._windows = MovingWindowRateLimiter(MemoryStorage())
        self.in_flight = 0
        self.paused_until = 0.0  # time.time(): after a 429, no token before then
        self.tokens_total = 0

    @property
    def is_limited(self) -> bool:
        return bool(self._items)

    def describe(self) -> str:
        parts = [
            f"{value}/{unit}"
            for value, unit in ((self.per_second, "s"), (self.per_minute, "min"))
            if value is not None
        ]
        return ", ".join(parts) or "unlimited"

    def wait_s(self) -> float:
        """How long until a token may be free: 0.0 when one is free now. A call that returns
        meanwhile does not free one (it is dated in the windows then); time passing does."""
        now = time.time()
        wait = self.paused_until - now
        if wait > 0:
            return max(wait, _MIN_TOKEN_WAIT_S)
        blocked = False
        for item in self._items:
            reset_at, remaining = self._windows.get_window_stats(item)
            if remaining - self.in_flight < 1:
                # The window's oldest call leaves it at reset_at; a call still in progress may
                # hold the slot beyond that: then the caller asks again.
                blocked = True
                wait = max(wait, reset_at - now)
        return max(wait, _MIN_TOKEN_WAIT_S) if blocked else 0.0

    def minute_room(self) -> tuple[int, float]:
        """How many more calls the per-minute window would take now (calls in progress
        counted), and seconds until its oldest call leaves it (the next token back by time
        alone). Only with a per-minute limit."""
        assert self._minute_item is not None
        reset_at, remaining = self._windows.get_window_stats(self._minute_item)
        return remaining - self.in_flight, max(0.0, reset_at - time.time())

    def take(self) -> None:
        self.in_flight += 1
        self.tokens_total += 1

    def release(self, *, sent: bool) -> None:
        """The call has returned (``sent``) or was not made after all (a withheld entry)."""
        self.in_flight -= 1
        if not sent:
            return
        for item in self._items:
            if not self._windows.hit(item):
                # Cannot happen while every call took a token first; the call went out anyway.
                logger.warning("broker rate limit %s overrun by a call", self.describe())

    def pause(self, seconds: float) -> None:
        """No token for ``seconds`` (the broker said 429)."""
        self.paused_until = max(self.paused_until, time.time() + seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "limits": self.describe(),
            "in_flight": self.in_flight,
            "tokens_total": self.tokens_total,
            "paused_for_s": round(max(0.0, self.paused_until - time.time()), 3),
        }


@dataclass(slots=True, eq=False)
class _Request:
    kind: BrokerRequestKind
    client_order_id: str
    priority: int  # its own; the heap may carry it sooner (a cancel behind it lends its own)
    sequence: int
    call: Callable[[], None]
    quantity: int | None
    report_success: bool
    is_entry: bool = False
    queued_ns: int = field(default_factory=time.perf_counter_ns)
    taken: bool = False
    attempts: int = 0  # broker calls made for it so far (a 429 sends it again)
    withheld: tuple[DenialCode, str] | None = None  # the kill switch's decision at take time
    holds_token: bool = False
    throttled_ns: int | None = None  # first found next in line with no token free
    token_wait_ns: int = 0
    retry: bool = False  # refused for the rate limit: back into its lane when finished
    held_for_reserve: bool = False  # an entry that waited for the flatten reserve


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
        # When each submit's broker call began (the clock's monotonic ns), for the order-ack
        # latency: measured from the call, not the hand-over, so that waiting here for a
        # rate-limit token (our own queue, watched by its own tripwire) never reads as a slow
        # broker. Bounded: an order never acknowledged must not keep its entry forever.
        self._submit_started: OrderedDict[str, int] = OrderedDict()

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

    def turn_to_market(self, client_order_id: str, *, quantity: int, leg: LegKind) -> None:
        """Make a working stop a market order for ``quantity`` (its total); the outcome comes
        back either way: ``BrokerRequestCompleted`` or ``BrokerRequestFailed``."""
        broker = self._broker
        self._hand_over(
            BrokerRequestKind.TO_MARKET,
            client_order_id,
            leg,
            lambda: broker.modify_order(client_order_id, quantity=quantity, to_market=True),
            quantity=quantity,
            report_success=True,
        )

    def move_stop(
        self, client_order_id: str, *, quantity: int, trigger_price: Decimal, leg: LegKind
    ) -> None:
        """Move a working stop's trigger in place (its size, ``quantity``, unchanged); the
        outcome comes back either way: ``BrokerRequestCompleted`` or ``BrokerRequestFailed``."""
        broker = self._broker
        self._hand_over(
            BrokerRequestKind.MOVE_STOP,
            client_order_id,
            leg,
            lambda: broker.modify_order(
                client_order_id, quantity=quantity, trigger_price=trigger_price
            ),
            quantity=quantity,
            report_success=True,
        )

    def stop(self, timeout_s: float = 5.0) -> int:
        """Stop taking requests; returns how many were dropped (they stay in flight)."""
        return 0

    @contextlib.contextmanager
    def entry_burst(self) -> Iterator[None]:
        """Hand over a burst of entries as one: no entry of it is weighed against the flatten
        reserve until the whole burst is queued (the reserve already counts all its brackets,
        so an entry weighed halfway would wait for nothing). Nothing to do inline."""
        yield

    def update_flatten_reserve(
        self,
        brackets: Iterable[Bracket],
        orders: Mapping[str, Order],
        *,
        levels_on_position: bool = False,
        stop_in_place: bool = False,
    ) -> None:
        """What a flatten of the order actor's books would cost now (``requests_to_flatten``),
        for the flatten reserve. Called on the order actor's thread, like ``submit``: before an
        order or a burst of them is handed over (an entry's own bracket included) and after
        cancels (a bracket that closed frees its share). A gateway without a reserve ignores
        it (no work)."""

    # ------------------------------------------------------------------ QUERIES
    def take_submit_started_ns(self, client_order_id: str) -> int | None:
        """When the broker call of ``client_order_id``'s latest submit began (the clock's
        monotonic ns), forgotten once taken; None if it has not begun or is forgotten."""
        with self._counts_lock:
            return self._submit_started.pop(client_order_id, None)

    def queue_depth(self) -> int:
        """How many requests wait in the queue (none running); the inline gateway has none.
        Safe from any thread (the Watchdog samples it)."""
        return 0

    def queue_depths(self) -> dict[str, int]:
        """``queue_depth()`` by priority (``cancel``, ``protective``, ``entry``)."""
        return {priority.name.lower(): 0 for priority in BrokerPriority}

    def held_order_ids(self) -> frozenset[str]:
        """Orders with a request still here (waiting for its turn or a rate-limit token, or in
        a broker call that has not returned). The broker may not have seen it yet, so its
        absence from the broker's order list says nothing: reconciliation's settle wait for
        it starts only once the gateway lets go. The inline gateway holds nothing."""
        return frozenset()

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
        denial = request.withheld
        if denial is None and request.is_entry and self._gate is not None:
            denial = self._gate.entry_denial(self._clock.now_ns())
        if denial is not None:
            request.withheld = denial
            self._call_ended(request, sent=False)
            self._withhold(request, *denial)
            return
        started_ns = time.perf_counter_ns()
        queued_us = (started_ns - request.queued_ns) // 1000
        rejected: bool | None = None
        request.attempts += 1
        if request.kind is BrokerRequestKind.SUBMIT:
            with self._counts_lock:
                started = self._submit_started
                started[request.client_order_id] = self._clock.monotonic_ns()
                started.move_to_end(request.client_order_id)
                if len(started) > _SUBMIT_STARTED_KEPT:
                    started.popitem(last=False)
        try:
            request.call()
        except BrokerRateLimited as error:
            self._call_ended(request, sent=True)
            if self._retry_later(request, error):
                return
            rejected = False
            text = f"BROKER_RATE_LIMITED: {error} (attempts={request.attempts})"
        except BrokerRejected as error:
            rejected, text = True, str(error)
        except BrokerAuthExpired as error:
            if request.is_entry:
                # Refused before the broker acted: the entry never reached it, and it must not
                # wait in flight to be sent hours later when an operator has logged in again.
                self._withhold(request, DenialCode.BROKER_AUTH, str(error))
                return
            # A stop, target, exit or cancel stays in flight: reconciliation settles (and
            # re-sends what protects a position) once the session is back.
            rejected, text = False, f"BROKER_AUTH_EXPIRED: {error}"
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
        finally:
            # Right after the call returns: the rate limit dates it now (a no-op when the
            # 429 branch already did, or without a limit).
            self._call_ended(request, sent=True)
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

    def _call_ended(self, request: _Request, *, sent: bool) -> None:
        """The broker call returned (``sent``) or will not be made; gives its token back."""

    def _retry_later(self, request: _Request, error: BrokerRateLimited) -> bool:
        """True when the gateway will send ``request`` again after the broker's 429."""
        logger.warning(
            "broker %s of %s refused for its rate limit (not retried here): %s",
            request.kind.value,
            request.client_order_id,
            error,
        )
        return False

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
        rate_limit: the broker's published limits (None: unlimited); tokens are handed out in
            priority order.
        rate_limit_retries: how many times a request refused for the rate limit (429) is sent
            again before it is reported as failed.
        backoff_s, backoff_max_s: the wait after a 429 without a retry-after: ``backoff_s``
            doubling per retry of the request, at most ``backoff_max_s``.
        flatten_reserve: keep the per-minute budget a flatten would need out of the entries'
            reach (module docstring); no effect without a per-minute limit.
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
        rate_limit: BrokerRateLimit | None = None,
        rate_limit_retries: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        flatten_reserve: bool = True,
    ) -> None:
        super().__init__(broker, deliver=deliver, clock=clock, gate=gate, metrics=metrics)
        if workers < 1:
            raise ValueError(f"a threaded broker gateway needs workers >= 1, was {workers}")
        if rate_limit_retries < 0 or backoff_s <= 0 or backoff_max_s <= 0:
            raise ValueError(
                f"rate-limit retries need retries >= 0 and backoffs > 0, was "
                f"retries={rate_limit_retries} backoff_s={backoff_s} "
                f"backoff_max_s={backoff_max_s}"
            )
        # Always one, unlimited by default: a 429 pauses it all the same.
        self._rate_limit = rate_limit if rate_limit is not None else BrokerRateLimit()
        self._rate_limit_retries = rate_limit_retries
        # The flatten reserve (module docstring): only a per-minute window can starve a
        # flatten for long. Guarded by _ready, like the queue.
        self._keeps_reserve = flatten_reserve and self._rate_limit.per_minute is not None
        self._book_flatten_requests = 0  # the books' requests_to_flatten, as last told
        self._fresh_bracket_requests = fresh_bracket_requests()
        self._entries_waiting = 0  # entry submits queued here (their brackets are in the books)
        self._holding_entries = False  # the head entry waits for the reserve
        self._bursts_open = 0  # entry bursts being handed over (entry_burst)
        self.entries_held_total = 0  # entries that waited for the reserve
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._ready = threading.Condition(threading.Lock())
        # Guarded by _ready: the heap holds (priority, sequence, request) for the first waiting
        # request of each order that has none running (stale entries are skipped: ``taken``);
        # _waiting holds every order's waiting requests in the order they were handed over.
        self._heap: list[tuple[int, int, _Request]] = []
        self._waiting: dict[str, deque[_Request]] = {}
        self._running: set[str] = set()
        self._depth = 0
        self._depth_by_priority = dict.fromkeys(BrokerPriority, 0)
        # Orders whose submit was withheld: the broker never saw them, so a cancel handed over
        # for one afterwards has nothing to cancel (oldest forgotten first).
        self._withheld_ids: OrderedDict[str, None] = OrderedDict()
        self._is_stopping = False
        self.dropped_total = 0
        self.rate_limited_total = 0
        self.cancels_dropped_total = 0
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
            self._depth_by_priority = dict.fromkeys(BrokerPriority, 0)
            self._entries_waiting = 0
            self._holding_entries = False
            self.dropped_total += dropped
            self._ready.notify_all()
        self._publish_depth()
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

    @contextlib.contextmanager
    def entry_burst(self) -> Iterator[None]:
        with self._ready:
            self._bursts_open += 1
        try:
            yield
        finally:
            with self._ready:
                self._bursts_open -= 1
                self._ready.notify_all()

    def update_flatten_reserve(
        self,
        brackets: Iterable[Bracket],
        orders: Mapping[str, Order],
        *,
        levels_on_position: bool = False,
        stop_in_place: bool = False,
    ) -> None:
        if not self._keeps_reserve:
            return
        # Counted on the caller's thread, over its own books; only the figure crosses over.
        requests = requests_to_flatten(
            brackets,
            orders,
            levels_on_position=levels_on_position,
            stop_in_place=stop_in_place,
        )
        fresh = fresh_bracket_requests(
            levels_on_position=levels_on_position, stop_in_place=stop_in_place
        )
        with self._ready:
            shrank = requests < self._book_flatten_requests
            self._book_flatten_requests = requests
            self._fresh_bracket_requests = fresh
            if shrank and self._holding_entries:
                self._ready.notify()  # the entry at the head may fit now
        self._publish_depth()

    def queue_depth(self) -> int:
        with self._ready:
            return self._depth

    def queue_depths(self) -> dict[str, int]:
        with self._ready:
            return {p.name.lower(): count for p, count in self._depth_by_priority.items()}

    def held_order_ids(self) -> frozenset[str]:
        with self._ready:
            if not self._waiting and not self._running:
                return frozenset()
            return frozenset(self._waiting).union(self._running)

    def snapshot(self) -> dict[str, Any]:
        with self._ready:
            return {
                **super().snapshot(),
                "workers": len(self._threads),
                "queued": self._depth,
                "queued_by_priority": {
                    p.name.lower(): count for p, count in self._depth_by_priority.items()
                },
                "running": sorted(self._running),
                "dropped_total": self.dropped_total,
                "stopping": self._is_stopping,
                "rate_limit": self._rate_limit.snapshot(),
                "rate_limited_total": self.rate_limited_total,
                "cancels_dropped_total": self.cancels_dropped_total,
                "flatten_reserve": self._reserve_snapshot(),
            }

    def _reserve_snapshot(self) -> dict[str, Any]:
        # Called with _ready held.
        if not self._keeps_reserve:
            return {"enabled": False}
        room, _ = self._rate_limit.minute_room()
        return {
            "enabled": True,
            "reserved_requests": self._flatten_reserve(),
            "books_flatten_requests": self._book_flatten_requests,
            "minute_room": room,
            "entries_waiting": self._entries_waiting,
            "holding_entries": self._holding_entries,
            "entries_held_total": self.entries_held_total,
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
            if client_order_id in self._withheld_ids:
                if kind is BrokerRequestKind.CANCEL:
                    # Its submit was withheld: the broker never saw the order, the order actor
                    # settles it from the withheld outcome, and the broker's limit is kept for
                    # the requests that matter (a flatten's exits).
                    self.cancels_dropped_total += 1
                    logger.info(
                        "broker gateway: cancel of %s not sent: its submit was withheld",
                        client_order_id,
                    )
                    return
                if kind is BrokerRequestKind.SUBMIT:
                    del self._withheld_ids[client_order_id]  # sent again (recovery): forget
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
            self._count_waiting(request, +1)
            if client_order_id not in self._running:
                head = lane[0]
                if head is request or request.priority < head.priority:
                    # The first request of its order, or one that must go sooner than the one
                    # it waits behind (a cancel behind its entry's submit): the head goes ahead
                    # at this priority, keeping its own place in the FIFO.
                    heapq.heappush(self._heap, (request.priority, head.sequence, head))
                    self._ready.notify()
        self._publish_depth()

    def _work(self) -> None:
        while True:
            with self._ready:
                request, wait_s = self._take()
                while request is None and not self._is_stopping:
                    # Nothing to do, or the head waits for a token: woken by a new request, a
                    # finished one, stop(), or when the limiter may have room again.
                    self._ready.wait(wait_s)
                    request, wait_s = self._take()
                if request is None:
                    return
            self._publish_depth()
            if self._metrics is not None and request.holds_token:
                self._metrics.rate_limit_wait_ms.observe(request.token_wait_ns / 1e6)
            try:
                self._carry_out(request)
            finally:
                self._finish(request)

    def _take(self) -> tuple[_Request | None, float | None]:
        # Called with _ready held. Returns the request to carry out, or None and how long to
        # wait before asking again (None: until woken).
        if self._is_stopping:
            return None, None
        heap = self._heap
        while heap:
            request = heap[0][2]
            if request.taken:
                heapq.heappop(heap)
                continue
            withheld = None
            if request.is_entry and self._gate is not None:
                # Decided before a token: an entry the kill switch stops costs no broker call,
                # so it must not hold up a flatten waiting for the broker's limit.
                withheld = self._gate.entry_denial(self._clock.now_ns())
            if withheld is None:
                wait_s = self._rate_limit.wait_s()
                if not wait_s and request.is_entry and self._keeps_reserve:
                    wait_s = self._wait_for_reserve(request)
                now_ns = time.perf_counter_ns()
                if wait_s > 0:
                    if request.throttled_ns is None:
                        request.throttled_ns = now_ns
                    return None, wait_s
                self._rate_limit.take()
                request.holds_token = True
                if request.throttled_ns is not None:
                    request.token_wait_ns = now_ns - request.throttled_ns
            heapq.heappop(heap)
            request.taken = True
            request.withheld = withheld
            lane = self._waiting[request.client_order_id]
            assert lane[0] is request
            lane.popleft()
            self._count_waiting(request, -1)
            self._running.add(request.client_order_id)
            return request, None
        return None, None

    def _flatten_reserve(self) -> int:
        # Called with _ready held: what entries must leave of the minute's budget now. The
        # books count the brackets whose entry still waits here at the fresh cost each: they
        # are not at the broker (a withheld one never will be), so they come out; the cancels,
        # exits and legs waiting here will each use a token.
        at_broker = self._book_flatten_requests - self._fresh_bracket_requests * (
            self._entries_waiting
        )
        depths = self._depth_by_priority
        waiting = depths[BrokerPriority.CANCEL] + depths[BrokerPriority.PROTECTIVE]
        return max(0, at_broker) + waiting

    def _wait_for_reserve(self, request: _Request) -> float:
        # Called with _ready held, for the entry at the head of the queue with a token free:
        # 0.0 when it may go; else how long until the minute window's oldest call leaves it.
        if self._bursts_open:
            return _RESERVE_RECHECK_S  # woken when the burst is all queued
        room, next_free_s = self._rate_limit.minute_room()
        needed = 1 + self._fresh_bracket_requests + self._flatten_reserve()
        if room >= needed:
            if self._holding_entries:
                self._holding_entries = False
                logger.info(
                    "broker gateway: entries go again (minute room %d, flatten reserve %d)",
                    room,
                    needed - 1,
                )
            return 0.0
        if not request.held_for_reserve:
            request.held_for_reserve = True
            self.entries_held_total += 1
        if not self._holding_entries:
            self._holding_entries = True
            logger.info(
                "broker gateway: %d entries wait: the per-minute budget left (%d of %s) is held "
                "for a flatten of what the engine holds (%d requests, this entry's bracket "
                "included); cancels, exits and protective legs go on",
                self._entries_waiting,
                room,
                self._rate_limit.per_minute,
                needed - 1,
            )
        # Asked again when the window's oldest call leaves it, even if time alone cannot make
        # room (a reserve over the whole minute): woken sooner by a smaller reserve or a new
        # request. An empty window frees nothing by time: not a 1 ms spin, a slow recheck.
        return next_free_s if next_free_s > _MIN_TOKEN_WAIT_S else _RESERVE_RECHECK_S

    def _call_ended(self, request: _Request, *, sent: bool) -> None:
        if not request.holds_token:
            return
        with self._ready:
            request.holds_token = False
            self._rate_limit.release(sent=sent)
            if not sent:
                self._ready.notify()  # its token is free again

    def _retry_later(self, request: _Request, error: BrokerRateLimited) -> bool:
        with self._ready:
            self.rate_limited_total += 1
            if request.attempts > self._rate_limit_retries or self._is_stopping:
                retry = False
            else:
                retry = request.retry = True
                backoff_s = min(self._backoff_max_s, self._backoff_s * 2 ** (request.attempts - 1))
                asked = error.retry_after_s
                if asked is not None and math.isfinite(asked) and asked >= 0:
                    # The broker's Retry-After, bounded: a garbage or huge value must not
                    # hold every cancel and exit back for hours.
                    backoff_s = min(self._backoff_max_s, asked)
                self._rate_limit.pause(backoff_s)
        if not retry:
            logger.warning(
                "broker %s of %s refused for its rate limit %d times; reported failed: %s",
                request.kind.value,
                request.client_order_id,
                request.attempts,
                error,
            )
            return False
        if self._metrics is not None:
            self._metrics.retries_total.labels(type="rate_limit").inc()
        logger.warning(
            "broker %s of %s refused for its rate limit (attempt %d); every request waits "
            "%.3f s, then it goes again: %s",
            request.kind.value,
            request.client_order_id,
            request.attempts,
            backoff_s,
            error,
        )
        return True

    def _finish(self, request: _Request) -> None:
        with self._ready:
            key = request.client_order_id
            self._running.discard(key)
            lane = self._waiting.get(key)
            if request.retry and not self._is_stopping:
                # Back at the head of its lane, at its own place in the FIFO: a fresh copy, so
                # the heap's stale entries for the old one stay stale.
                again = dataclasses.replace(
                    request, taken=False, retry=False, throttled_ns=None, token_wait_ns=0
                )
                lane = self._waiting.setdefault(key, deque())
                lane.appendleft(again)
                self._count_waiting(again, +1)
            elif request.retry:
                self.dropped_total += 1  # stopping: stays in flight, like the queued ones
            if request.withheld is not None and request.kind is BrokerRequestKind.SUBMIT:
                self._forget_withheld(key, lane)
                lane = self._waiting.get(key)
            if not lane:
                self._waiting.pop(key, None)
            else:
                head = lane[0]
                priority = min(r.priority for r in lane)
                heapq.heappush(self._heap, (priority, head.sequence, head))
                self._ready.notify()
        self._publish_depth()

    def _forget_withheld(self, key: str, lane: deque[_Request] | None) -> None:
        # Called with _ready held: the broker never saw this order; its cancels have nothing
        # to cancel (dropped now, and those handed over later at hand-over).
        self._withheld_ids[key] = None
        self._withheld_ids.move_to_end(key)
        while len(self._withheld_ids) > _WITHHELD_MEMORY:
            self._withheld_ids.popitem(last=False)
        if not lane:
            return
        cancels = [r for r in lane if r.kind is BrokerRequestKind.CANCEL]
        if not cancels:
            return
        kept = deque(r for r in lane if r.kind is not BrokerRequestKind.CANCEL)
        for cancel in cancels:
            cancel.taken = True  # any heap entry for it is stale now
            self._count_waiting(cancel, -1)
        self.cancels_dropped_total += len(cancels)
        if kept:
            self._waiting[key] = kept
        else:
            self._waiting.pop(key, None)

    def _count_waiting(self, request: _Request, change: int) -> None:
        # Called with _ready held.
        self._depth += change
        self._depth_by_priority[BrokerPriority(request.priority)] += change
        if request.is_entry:
            self._entries_waiting += change
            if not self._entries_waiting:
                self._holding_entries = False

    def _publish_depth(self) -> None:
        if self._metrics is None:
            return
        with self._ready:
            depth = self._depth
            by_priority = dict(self._depth_by_priority)
            reserve = self._flatten_reserve() if self._keeps_reserve else 0
            held = self._entries_waiting if self._holding_entries else 0
        self._metrics.queue_depth.labels(queue=QUEUE_NAME).set(depth)
        for priority, count in by_priority.items():
            self._metrics.broker_queue_depth.labels(priority=priority.name.lower()).set(count)
        self._metrics.broker_flatten_reserve.set(reserve)
        self._metrics.broker_entries_held_for_reserve.set(held)


def build_broker_gateway(
    mode: GatewayMode,
    broker: BrokerPort,
    *,
    deliver: Deliver,
    clock: Clock,
    gate: TradingGate | None = None,
    metrics: EngineMetrics | None = None,
    workers: int = 4,
    rate_limit: BrokerRateLimit | None = None,
    rate_limit_retries: int = 5,
    backoff_s: float = 0.5,
    backoff_max_s: float = 10.0,
    flatten_reserve: bool = True,
) -> BrokerGateway:
    """The gateway ``mode`` names, over ``broker``. The inline gateway needs no ``gate``: it
    runs right after the order actor's own last gate, on its thread.

    Raises:
        ValueError: ``inline`` with a rate limit (it would make the order actor wait for
            tokens; ``BrokerConfig`` refuses the same at load).
    """
    if mode == "inline":
        if rate_limit is not None and rate_limit.is_limited:
            raise ValueError(
                f"the inline broker gateway cannot honour a rate limit ({rate_limit.describe()})"
                ": it runs on the order actor's thread; use the threaded gateway"
            )
        return InlineBrokerGateway(broker, deliver=deliver, clock=clock, metrics=metrics)
    return ThreadedBrokerGateway(
        broker,
        deliver=deliver,
        clock=clock,
        gate=gate,
        metrics=metrics,
        workers=workers,
        rate_limit=rate_limit,
        rate_limit_retries=rate_limit_retries,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        flatten_reserve=flatten_reserve,
    )
