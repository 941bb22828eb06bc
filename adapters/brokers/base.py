"""The broker port: what OrderActor needs from any venue (paper, Kite, IG, fake servers).

| method            | required | notes                                                        |
|-------------------|----------|--------------------------------------------------------------|
| connect           | yes      | verifies credentials, returns the account                    |
| set_report_sink   | yes      | reports arrive asynchronously through the sink, on any thread|
| submit_order      | yes      | BrokerRejected = definitive; BrokerUnavailable = unknown     |
| cancel_order      | yes      | idempotent; cancelling a dead order is not an error          |
| modify_order      | yes      | changes the total quantity of a working order (to_market,    |
|                   |          | trigger_price: see stop_in_place)                            |
| list_orders       | yes      | the session's orders, working and finished (reconciliation's |
|                   |          | full runs settle unknowns from it). Kite: GET /orders (the   |
|                   |          | day's orders); IG: GET /workingorders + activity history     |
| list_open_orders  | yes      | only the working orders (any session), for the scheduled     |
|                   |          | light runs: cost O(working orders). An order missing from it |
|                   |          | may have finished: never settle on its absence. Kite:        |
|                   |          | GET /orders kept to the open statuses (OPEN, TRIGGER PENDING,|
|                   |          | AMO REQ RECEIVED, ...): Kite still sends the day's list, the |
|                   |          | saving is our comparison; IG: GET /workingorders             |
| list_fills        | yes      | executions of the session, in execution order; since_ns:     |
|                   |          | only those with ts_event >= since_ns (None: the whole        |
|                   |          | session). Kite: GET /trades, kept from since_ns client-side  |
|                   |          | (it has no time filter); IG: GET /history/activity (or       |
|                   |          | /history/transactions) from since_ns                         |
| list_positions    | yes      | net positions                                                |
| on_tick / on_time | optional | a simulated venue needs prices and time; real ones ignore    |
| on_leadership     | optional | (is_leader, epoch): the order actor calls it when this       |
|                   |          | process gains or loses the lease, before its takeover        |
|                   |          | catch-up; a simulated venue sharing one database between     |
|                   |          | processes reloads its books and acts only while leading;     |
|                   |          | real brokers ignore it (their books are the broker's)        |
| close             | yes      | release connections and threads                              |
| levels_on_position| optional | attribute, default False. True (IG): stop and target are the |
|                   |          | position's own levels, so an ENTRY's ``attached_stop`` and   |
|                   |          | ``attached_target`` open it protected and an EXIT closing it |
|                   |          | ends them: a flatten sends the exit without cancelling them  |
|                   |          | first (``domain.oco``)                                       |
| stop_in_place     | optional | attribute, default False. True (Kite): ``modify_order`` can  |
|                   |          | change a working stop in place: ``to_market=True`` makes it  |
|                   |          | a market order (a flatten cancels the target, then turns the |
|                   |          | stop into the exit) and ``trigger_price`` moves its trigger  |
|                   |          | (a tighten: one request, never unprotected); ``domain.oco``. |
|                   |          | Brokers without it refuse both                               |
| adopt_working_    | optional | method. Called by the order actor once after recovery (and   |
| orders(orders)    |          | on a takeover), before reconciling, with the engine's        |
|                   |          | unfinished orders, so a broker whose lists cannot name our   |
|                   |          | leg ids after a restart (IG: the levels sit on the deal)     |
|                   |          | learns them. Brokers without it are skipped                  |

A broker that refuses our credentials (Kite's ``TokenException``; the access token expires at
06:00 each day) raises ``BrokerAuthExpired`` and reports ``BrokerSessionChanged(valid=False)``
through the sink once; ``BrokerSessionChanged(valid=True)`` once a new session works. Until
then the engine pauses entries (``BROKER_AUTH``) and retries nothing in a loop.

A request (submit, cancel, modify) refused for the broker's rate limit raises
``BrokerRateLimited`` (HTTP 429 and the broker's equivalents): the broker did not act on it, so
the same request may be sent again; the broker gateway waits (``retry_after_s`` when the broker
says, else an exponential backoff) and retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import msgspec
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay

from domain.messages import (
    BrokerSessionChanged,
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    PositionReport,
    Tick,
)

__all__ = [
    "AccountInfo",
    "BrokerAuthExpired",
    "BrokerError",
    "BrokerPort",
    "BrokerRateLimited",
    "BrokerRejected",
    "BrokerReport",
    "BrokerUnavailable",
    "ReportSink",
    "connect_with_retry",
]

logger = logging.getLogger(__name__)

BrokerReport = OrderStatusReport | FillReport | OrderStreamHeartbeat | BrokerSessionChanged
ReportSink = Callable[[BrokerReport], None]


class AccountInfo(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    balance: Decimal
    currency: str = "INR"
    is_live: bool = False


class BrokerError(Exception):
    """Base of broker failures; ``client_order_id`` names the order concerned, if any."""

    def __init__(self, message: str, *, client_order_id: str | None = None) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


class BrokerRejected(BrokerError):
    """The broker definitively refused (4xx with a reason). The order is dead."""


class BrokerUnavailable(BrokerError):
    """Timeout, 5xx or disconnect: the outcome is unknown, the order stays in flight."""


class BrokerAuthExpired(BrokerUnavailable):
    """The broker refused our credentials and did not act (Kite: HTTP 403 ``TokenException``).

    No retry helps until an operator logs in again. A subclass of ``BrokerUnavailable`` so
    that every caller that tolerates an unanswered call (reconciliation's lists) tolerates it;
    the broker gateway tells them apart: an entry is withheld (it never reached the broker),
    anything else stays in flight for reconciliation once the session is back.
    """


class BrokerRateLimited(BrokerError):
    """The broker refused the request for its rate limit and did not act on it (HTTP 429;
    Kite's "Too many requests", IG's ``error.public-api.exceeded-*-allowance``).

    ``retry_after_s`` is how long the broker asked us to wait (its ``Retry-After``), or None
    when it did not say.
    """

    def __init__(
        self,
        message: str,
        *,
        client_order_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, client_order_id=client_order_id)
        self.retry_after_s = retry_after_s


def connect_with_retry(broker: BrokerPort, retry_s: float) -> AccountInfo:
    """``broker.connect()``, asked again with a backoff for up to ``retry_s`` while the broker
    answers with its rate limit or not at all (5xx, timeout); refused credentials
    (``BrokerAuthExpired``) and refusals (``BrokerRejected``) are raised at once."""

    def transient(error: BaseException) -> bool:
        return isinstance(error, (BrokerRateLimited, BrokerUnavailable)) and not isinstance(
            error, BrokerAuthExpired
        )

    def wait_s(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(error, "retry_after_s", None)
        backoff = min(15.0, 0.5 * 2 ** (state.attempt_number - 1))
        return max(backoff, asked) if asked else backoff

    def tell(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "broker %s: connect attempt %d failed (%s); asking again for up to %.0f s",
            getattr(broker, "name", "?"),
            state.attempt_number,
            error,
            retry_s,
        )

    retrying = Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_delay(retry_s),
        wait=wait_s,
        before_sleep=tell,
        reraise=True,
    )
    return retrying(broker.connect)


class BrokerPort(Protocol):
    name: str

    def connect(self) -> AccountInfo: ...

    def set_report_sink(self, sink: ReportSink) -> None: ...

    def submit_order(self, request: OrderRequest) -> None: ...

    def cancel_order(self, client_order_id: str) -> None: ...

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: int,
        to_market: bool = False,
        trigger_price: Decimal | None = None,
    ) -> None: ...

    def list_orders(self) -> list[OrderStatusReport]: ...

    def list_open_orders(self) -> list[OrderStatusReport]: ...

    def list_fills(self, since_ns: int | None = None) -> list[FillReport]: ...

    def list_positions(self) -> list[PositionReport]: ...

    def on_tick(self, tick: Tick) -> None: ...

    def on_time(self, now_ns: int) -> None: ...

    def on_leadership(self, is_leader: bool, epoch: int) -> None: ...

    def close(self) -> None: ...
