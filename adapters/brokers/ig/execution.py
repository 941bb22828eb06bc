"""``IgBroker``: the broker port over IG's REST trading API (and its Lightstreamer stream).

REST (``http.IgRestClient``) logs in, deals, amends and closes positions and answers the lists
reconciliation reads; the stream (``stream.IgStream``, optional) brings prices and the TRADE
item's confirmations and position updates.

How each port method maps (see ``adapters/brokers/base.py``):

| port              | IG                                                                    |
|-------------------|-----------------------------------------------------------------------|
| connect           | POST /session v2 (+ PUT /session to ``ig.account_id``), GET /accounts |
|                   | (balance). ``account_id`` is the ACTIVE account after the switch, so  |
|                   | the runbook's account lock checks what the deals will hit. ``is_live``|
|                   | IG's live base URL, or a fake's account that says LIVE (rehearsal)    |
| submit ENTRY (E)  | POST /positions/otc v2, MARKET, ``forceOpen``, dealReference = our id,|
|                   | ``stopLevel``/``limitLevel`` = the request's ``attached_stop``/       |
|                   | ``attached_target`` (the bracket's: the deal opens protected, or IG   |
|                   | refuses it whole); the outcome from GET /confirms/{id} (404 until     |
|                   | ready: polled for                                                     |
|                   | ``confirm_timeout_s``) or the stream's CONFIRMS. Accepted: FILLED +   |
|                   | a fill (IG fills a market deal whole or refuses it); refused:         |
|                   | ``BrokerRejected`` with IG's reason; no confirm in time:              |
|                   | ``BrokerUnavailable`` (the order stays in flight, unknown)            |
| submit STOP (S)   | the leg takes over the deal's ``stopLevel`` when it already is the    |
|                   | trigger (opened with it: no request); else PUT /positions/otc/{dealId}|
|                   | v2 with ``stopLevel`` = trigger (``limitLevel`` unchanged); ACCEPTED  |
| submit TARGET (T) | the same with ``limitLevel`` = the limit price                        |
| submit EXIT (X)   | POST /positions/otc + ``_method: DELETE`` v1: closes the plan's deal  |
|                   | at market, our id as its dealReference; outcome as for an entry       |
| cancel S / T      | PUT removing that level; reported CANCELLED. A deal already gone:     |
|                   | CANCELLED with no request. Cancel of E or X: nothing to do (a market  |
|                   | deal is done or refused at once)                                      |
| modify S / T      | the level covers the whole deal: a quantity equal to the deal's size  |
|                   | is a no-op; any other is refused (IG has no partial stop)             |
| list_orders       | the legs this process knows + the entries of IG's open positions      |
|                   | whose dealReference is ours; unknown outcomes are asked once more.    |
|                   | A working S/T leg reports the level IG holds (``trigger_price`` /     |
|                   | ``price``, as last read from GET /positions): reconciliation compares |
|                   | it with ours; a level gone at IG ends its leg CANCELLED (the OCO puts |
|                   | it back)                                                              |
| list_open_orders  | the working STOP/TARGET legs of deals still open, with those levels   |
| list_fills        | the fills seen this session (those booked from IG's history after a   |
|                   | restart included) + the entries of open positions                     |
| list_positions    | GET /positions v2 netted per instrument (signed size, mean level)     |
| adopt_working_    | (optional hook; the order actor, after recovery, before reconciling)  |
| orders            | the engine's unfinished orders: STOP/TARGET leg ids bound to the open |
|                   | deal's levels with no request (see "After a restart"); a deal of ours |
|                   | gone: GET /history/activity v3 (``detailed``, ``from`` the oldest leg |
|                   | less 10 min), its close booked as a fill of its leg                   |

The bracket is broker-side. IG keeps stop and limit ON the position, so the engine's OCO legs
map onto the one deal per plan (all legs of a plan share the plan key, ``parsing.plan_key``):
the STOP and TARGET legs are the position's levels, not orders. A level hit closes the deal at
IG with no order of ours: the stream's OPU (status DELETED) or IG's CONFIRMS of its close, or,
without the stream, the deal's absence from GET /positions in a list call, becomes a FILL of
the leg whose level was hit: the one nearer the closing level (the close's CONFIRMS) or, when
only the OPU says so, nearer the price a close trades at now (the stream's last bid for a BUY
deal, offer for a SELL; else IG's market snapshot). The OPU's ``level`` is the deal's OPENING
level and decides nothing. The fill's price is the closing level when IG gave it, else that
last price, else the leg's level (an estimate: IG's own fill price is in its activity).
The engine then cancels the sibling: a no-op here that reports it CANCELLED. Because both
levels sit on one deal, both are "working" at once, as the OCO expects, and IG itself makes
them one-cancels-other.

``levels_on_position``: the engine's OCO knows closing the deal ends its levels, so a
flatten sends the EXIT at once (one request per deal, protected until closed) instead of
removing the levels first.

Also:
- A tightened stop is one PUT: the engine's OCO (``levels_on_position``) places the new
  stop leg first, its PUT moves the level, and the leg that held it is reported CANCELLED
  (superseded); if IG refuses the new level, the old one still protects the deal.
- A partially sized stop cannot exist at IG (a level covers the whole deal); the OCO never
  asks for one with MARKET entries, which IG fills whole. A partial EXIT is supported (the
  rest of the deal stays open with its levels).
- Levels are read back from GET /positions (the reconciliation's positions check, every
  ``positions_interval_s``, and a full run's list_orders); the stream's OPU of an amendment
  only makes that read fresh. A moved level is therefore seen within one positions interval.
- A restart relies on the engine calling ``adopt_working_orders`` (the order actor does):
  without it IG's positions name only the entry, and the engine's STOP/TARGET legs look
  missing at the broker (RECONCILE_DRIFT).
- LIMIT entries (IG working orders, /workingorders/otc) are refused here
  (``IG_UNSUPPORTED_ORDER_TYPE``).
- Within a session the price of a level hit is the close's confirm, else an estimate (the
  last quote); only after a restart is it read from IG's history. Quantities are IG deal
  sizes in whole units (IG's fractional sizes are not used).
- The history's ``date`` is read as UTC (a fill's ``ts_event``); full reconciliation runs
  list fills without a lower bound, so a skewed date cannot hide one.

After a restart (``adopt_working_orders``). The adapter's memory is empty and IG's positions
name only the entry (its dealReference); the engine's books name the legs. Per plan with
unfinished STOP/TARGET/EXIT orders and not known to this process:
- its deal open (one GET /positions, shared with the reconciliation that follows): a leg
  whose level IS the deal's (trigger = stopLevel, limit price = limitLevel; the latest such)
  takes it over, ACCEPTED, no request; if no leg matches, the latest ACCEPTED leg stands for
  IG's level and reports it (a level moved at IG while down: drift, as in a session); other
  acknowledged legs (a stop replaced by ``...S1`` before the restart, or a level removed at
  IG) are reported CANCELLED (the OCO puts a missing level back); a leg in flight whose level
  the deal does not hold stays unknown (reconciliation settles it as unanswered).
- its deal gone: closed while the engine was down. One GET /history/activity finds the
  opening (dealReference = the entry) and the closes of that deal (its ``dealId``, or
  ``details.actions[].affectedDealId`` as IG names the closed position). A close under our
  EXIT's id that the engine still holds unfinished is that EXIT's fill (trade id
  ``{dealId}:{exit id}``, the confirm's at the fake); any other close is IG's (a level hit):
  the fill of the acknowledged STOP or TARGET leg nearer the closing level, at that level,
  trade id ``{dealId}:{leg id}`` exactly as ``_deal_gone`` gives a hit seen live. The legs
  left are CANCELLED by the engine's OCO at no cost (the deal is closed).
- No double booking: a level hit's trade id is the live one, and the engine keeps every
  trade id it booked (``Book.trade_ids``) and refuses fills beyond an order's quantity. An
  EXIT the engine already booked is terminal, not handed over, so its close in the history is
  skipped; where IG's close confirm names another deal id than its history line (real IG
  may), the trade ids differ but the EXIT is then already FILLED and an overfill is refused.
- IG's allowance (30 non-trading requests a minute): the history is read only for plans whose
  deal is gone, once at adoption (at most ``_HISTORY_MAX_PAGES`` pages); a plan it does not
  explain (IG refused, or the close not listed yet) is asked about again by a later full
  reconciliation run, ``_HISTORY_RETRY_S`` apart, at most ``_HISTORY_TRIES`` times in all.

No duplicate deal after a lost answer. The dealReference is our id, and before any resend of
an id whose earlier submit went unanswered the adapter asks IG (GET /confirms/{id}, then the
open positions' dealReferences); if IG has it, the resend is refused with
``DUPLICATE_CLIENT_ORDER_ID`` (the order path reads it as "the broker holds it") and its
status is reported. An id IG confirmed is never sent again.

Errors: 403 ``error.public-api.exceeded-*-allowance``: ``BrokerRateLimited`` (nothing was
done); 5xx and timeouts: ``BrokerUnavailable``; ``errorCode`` refusals: ``BrokerRejected``; a
refused login: ``IgAuthRefused`` (a ``BrokerAuthExpired``) and ``BrokerSessionChanged(valid=
False)`` through the sink once, ``valid=True`` once a login works again.

Threads: port calls run on the broker gateway's workers; state is behind one lock. Reports
reach the sink on the ``ig-reports`` thread, in order.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.brokers.base import (
    AccountInfo,
    BrokerRateLimited,
    BrokerRejected,
    BrokerReport,
    BrokerUnavailable,
    ReportSink,
)
from adapters.brokers.ig.http import IgCredentials, IgRestClient
from adapters.brokers.ig.parsing import (
    IgActivity,
    IgAuthRefused,
    IgConfirm,
    IgDeal,
    IgMarketRef,
    account_is_live,
    activity_from_json,
    amend_levels_body,
    close_position_body,
    confirm_fill,
    confirm_from_json,
    confirm_status_report,
    deal_from_position,
    ig_history_time,
    leg_of,
    open_position_body,
    plan_key,
    positions_by_instrument,
)
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages import (
    BrokerSessionChanged,
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    PositionReport,
    Tick,
)

if TYPE_CHECKING:
    from domain.clock import Clock
    from domain.config import IgConfig
    from domain.instruments import Instrument
    from domain.orders import Order

__all__ = ["IgBroker", "ig_credentials"]

logger = logging.getLogger(__name__)

TickBatchSink = Callable[[list[Tick]], None]
HEARTBEAT_INTERVAL_S = 0.5
_CONFIRM_POLL_S = (0.05, 0.1, 0.2, 0.3, 0.5)
# One reconciliation run's lists share one GET /positions (IG: 30 non-trading a minute).
_LIST_SNAPSHOT_S = 2.0
# IG's activity history read after a restart: from a little before the oldest leg.
_HISTORY_MARGIN_NS = 600 * 1_000_000_000
_HISTORY_MAX_PAGES = 5
# A deal gone whose close IG's history does not show yet: asked again this often, this often.
_HISTORY_RETRY_S = 30.0
_HISTORY_TRIES = 5
# After IG refuses a positions read for its allowance (30 non-trading requests a minute), no
# positions read for this long.
_READ_ALLOWANCE_QUIET_S = 10.0
# Queued to the report thread when the TRADE item is (re)subscribed.
_LOOK_FOR_CLOSED_DEALS: Any = object()


def ig_credentials(config: IgConfig, environ: Mapping[str, str] | None = None) -> IgCredentials:
    """The login from the config, else ``IG_API_KEY``, ``IG_IDENTIFIER``, ``IG_PASSWORD``.

    Raises:
        ValueError: a part of the login is missing everywhere.
    """
    env = os.environ if environ is None else environ

    def pick(secret: Any, name: str) -> str:
        return secret.get_secret_value() if secret is not None else env.get(name, "")

    return IgCredentials(
        api_key=pick(config.api_key, "IG_API_KEY"),
        identifier=pick(config.identifier, "IG_IDENTIFIER"),
        password=pick(config.password, "IG_PASSWORD"),
    )


class _Leg:
    __slots__ = ("client_order_id", "kind", "price", "quantity", "status")

    def __init__(self, client_order_id: str, kind: str, quantity: int, price: Decimal | None):
        self.client_order_id = client_order_id
        self.kind = kind  # E S T X
        self.quantity = quantity
        self.price = price
        self.status = OrderStatus.SUBMITTED


class _Plan:
    """One bracket at IG: one deal, its levels and the legs mapped onto it."""

    __slots__ = (
        "amend_lock",
        "closed",
        "closing",
        "deal",
        "deal_known_at",
        "instrument",
        "legs",
        "levels_set_at",
        "opened_with",
        "stop_cid",
        "target_cid",
    )

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.deal: IgDeal | None = None
        # When (monotonic) this process learnt of the deal: a GET /positions sent before then
        # may not list it yet, and its absence there says nothing.
        self.deal_known_at = 0.0
        self.legs: dict[str, _Leg] = {}
        self.stop_cid: str | None = None  # the working STOP leg (the deal's stopLevel)
        self.target_cid: str | None = None  # the working TARGET leg (the deal's limitLevel)
        self.closing = False  # an EXIT of ours is closing the deal
        self.closed = False
        # The (stopLevel, limitLevel) the entry asked IG to open the deal with.
        self.opened_with: tuple[Decimal | None, Decimal | None] = (None, None)
        # When (monotonic) our last amendment of the levels was answered: a GET /positions
        # asked before then shows the levels as they were, not as they are.
        self.levels_set_at = 0.0
        # IG's PUT sets both levels at once: the STOP and TARGET legs arrive together on the
        # gateway's workers, and two amendments in parallel would each send the other level
        # as it was before, the second wiping the first. One amendment per deal at a time.
        self.amend_lock = threading.Lock()


class IgBroker:
    """The broker port over IG.

    Args:
        config: the ``ig`` settings.
        instruments: the engine's instruments by symbol.
        clock: dates reports.
        credentials: the login (``ig_credentials(config)`` when None).
        tick_sink: receives the stream's ticks (the engine's feed door); None: not handed on.
        start_stream: open the Lightstreamer session at ``connect`` (also needs
            ``config.stream``).
        confirm_poll_s: the waits between confirm polls (tests shorten them).
    """

    name = "ig"
    # Stop and limit are the deal's own levels: closing the deal ends them (the OCO's wind
    # down sends the exit at once instead of removing the levels first; see domain.oco).
    levels_on_position = True

    def __init__(
        self,
        *,
        config: IgConfig,
        instruments: Mapping[str, Instrument],
        clock: Clock,
        credentials: IgCredentials | None = None,
        tick_sink: TickBatchSink | None = None,
        start_stream: bool = True,
    ) -> None:
        self._config = config
        self._clock = clock
        self._instruments = dict(instruments)
        self._markets: dict[str, IgMarketRef] = {
            symbol: IgMarketRef(epic=ref.epic, expiry=ref.expiry, currency=ref.currency)
            for symbol, ref in config.instruments.items()
        }
        self._symbol_by_epic = {ref.epic: symbol for symbol, ref in self._markets.items()}
        self._tick_sink = tick_sink
        self._start_stream = start_stream and config.stream
        creds = credentials or ig_credentials(config)
        self._rest = IgRestClient(
            base_url=config.rest_base_url,
            credentials=creds,
            account_id=config.account_id or os.environ.get("IG_ACCOUNT_ID", ""),
            timeout_s=config.request_timeout_s,
            session_max_age_s=config.session_max_age_s,
            on_session_refused=self._session_refused,
            on_session_restored=self._session_restored,
        )
        self._lock = threading.Lock()
        self._sink: ReportSink | None = None
        self._plans: dict[str, _Plan] = {}
        self._confirmed: dict[str, IgConfirm] = {}  # our dealReference -> IG's confirm
        self._confirm_events: dict[str, threading.Event] = {}
        self._unknown_outcome: set[str] = set()
        self._fills: list[FillReport] = []
        self._last_quotes: dict[str, Tick] = {}  # epic -> the stream's last quote
        self._deals_snapshot: tuple[float, list[IgDeal]] | None = None
        self._reads_refused_until = 0.0  # monotonic: no positions read before then
        self._deals_generation_at = 0.0  # the last change of ours: older snapshots are stale
        self._seen_fills: set[str] = set()
        # Plans of the engine's whose deal was gone at a restart and whose close IG's history
        # did not show (yet): plan -> (reads so far, the engine's unfinished orders).
        self._history_pending: dict[str, tuple[int, list[Order]]] = {}
        self._history_retry_at = 0.0
        self._reports: queue.Queue[Any] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stream: Any = None
        self._last_heartbeat = float("-inf")
        self._closed = False
        self.account: AccountInfo | None = None

    def __repr__(self) -> str:
        return f"IgBroker(rest_base_url={self._config.rest_base_url!r})"

    @property
    def rest(self) -> IgRestClient:
        return self._rest

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> AccountInfo:
        """Log in, switch to the configured account, read its balance, start the stream.

        Raises:
            IgAuthRefused: IG refused the login.
            BrokerUnavailable: IG did not answer.
            BrokerRejected: the configured account is not this login's.
        """
        self._rest.login()
        # The account IG deals on now, from IG (GET /session), not from what we asked for:
        # the runbook's account lock compares this one.
        current = self._rest.get("/session", version="1") or {}
        active_id = str(current.get("accountId") or "")
        data = self._rest.get("/accounts", version="1") or {}
        accounts = [a for a in (data.get("accounts") or []) if isinstance(a, dict)]
        active = next((a for a in accounts if a.get("accountId") == active_id), None)
        if active is None:
            raise BrokerRejected(
                f"IG_UNKNOWN_ACCOUNT: the active account {active_id!r} is not among this "
                f"login's accounts {[a.get('accountId') for a in accounts]}"
            )
        balance = (active.get("balance") or {}) if isinstance(active.get("balance"), dict) else {}
        self.account = AccountInfo(
            account_id=active_id,
            balance=Decimal(str(balance.get("balance") or 0)),
            currency=str(active.get("currency") or "GBP"),
            is_live=self._config.is_live_base
            or (
                not self._config.is_real_base
                and account_is_live(is_real_live_base=False, session=self._rest.session_info)
            ),
        )
        self._start_threads()
        return self.account

    def set_report_sink(self, sink: ReportSink) -> None:
        self._sink = sink

    def set_tick_sink(self, sink: TickBatchSink | None) -> None:
        self._tick_sink = sink

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._stream.stop()
        self._reports.put(None)
        if self._worker is not None:
            self._worker.join(5.0)
        self._rest.close()

    @property
    def stream(self) -> Any:
        return self._stream

    # ------------------------------------------------------------------ requests
    def submit_order(self, request: OrderRequest) -> None:
        """Deal ``request`` as its leg maps (see the module doc).

        Raises:
            BrokerRejected: refused before sending, by IG (its reason), or
                ``DUPLICATE_CLIENT_ORDER_ID`` when IG already holds the id.
            BrokerUnavailable: no answer or no confirm in time (unknown); ``IgAuthRefused``.
            BrokerRateLimited: IG's allowance exceeded (not dealt).
        """
        cid = request.client_order_id
        plan_id, leg = plan_key(cid), leg_of(cid)
        if plan_id is None or leg is None:
            raise BrokerRejected(
                f"IG_UNKNOWN_ID: {cid!r} is not one of the engine's client order ids",
                client_order_id=cid,
            )
        if request.instrument not in self._markets:
            raise BrokerRejected(
                f"UNKNOWN_INSTRUMENT: {request.instrument!r} has no IG epic "
                f"(configured: {sorted(self._markets)})",
                client_order_id=cid,
            )
        if leg == "E":
            self._submit_entry(request, plan_id)
        elif leg == "X":
            self._submit_exit(request, plan_id)
        else:
            self._submit_level(request, plan_id, leg)

    def cancel_order(self, client_order_id: str) -> None:
        """Remove a STOP/TARGET leg's level; anything else is already done at IG.

        Raises:
            BrokerRejected: IG refused the amendment.
            BrokerUnavailable, BrokerRateLimited: as for submit.
        """
        plan_id, leg = plan_key(client_order_id), leg_of(client_order_id)
        if plan_id is None or leg not in ("S", "T"):
            return
        with self._lock:
            plan = self._plans.get(plan_id)
            working = plan is not None and client_order_id in (plan.stop_cid, plan.target_cid)
        if plan is None or not working:
            return
        # A deal IG closed (its other level hit) took this level with it: no request.
        with plan.amend_lock:
            deal = plan.deal
            if deal is not None and not plan.closed:
                stop = None if leg == "S" else deal.stop_level
                limit = None if leg == "T" else deal.limit_level
                try:
                    self._amend(deal, stop, limit, client_order_id)
                except BrokerRejected:
                    if not self._deal_is_open(deal.deal_id):
                        self._deal_gone(plan_id, None)
                        return
                    raise
        with self._lock:
            if leg == "S":
                plan.stop_cid = None
            else:
                plan.target_cid = None
            plan.legs[client_order_id].status = OrderStatus.CANCELLED
            report = self._leg_report(plan, plan.legs[client_order_id], OrderStatus.CANCELLED)
        self._reports.put(report)

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: int,
        to_market: bool = False,
        trigger_price: Decimal | None = None,
    ) -> None:
        """A STOP/TARGET leg covers the whole deal: its size is the only quantity it has
        (``to_market`` is not offered: an EXIT closes the deal with its levels).

        Raises:
            BrokerRejected: any other leg, or a size other than the deal's.
        """
        plan_id, leg = plan_key(client_order_id), leg_of(client_order_id)
        with self._lock:
            plan = self._plans.get(plan_id or "")
            deal = plan.deal if plan is not None else None
        unchanged = not to_market and trigger_price is None
        if leg in ("S", "T") and deal is not None and quantity == deal.size and unchanged:
            return
        raise BrokerRejected(
            f"IG_UNSUPPORTED_MODIFY: {client_order_id} quantity={quantity}: IG's stop and limit "
            f"cover the whole deal (size {deal.size if deal else '-'})",
            client_order_id=client_order_id,
        )

    # ------------------------------------------------------------------ lists
    def list_orders(self) -> list[OrderStatusReport]:
        self._retry_history()
        asked_at, deals = self._open_deals_snapshot(max_age_s=_LIST_SNAPSHOT_S)
        self._notice_closed_deals(deals, asked_at)
        self._read_levels(deals, asked_at)
        with self._lock:
            unknown = sorted(self._unknown_outcome)
        for ref in unknown:
            data = self._rest.get_or_none(f"/confirms/{ref}")
            if isinstance(data, dict):
                self._settle(confirm_from_json(data))
        self._adopt(deals)
        reports: list[OrderStatusReport] = []
        now = self._clock.now_ns()
        with self._lock:
            for plan in self._plans.values():
                for leg in plan.legs.values():
                    if leg.status is OrderStatus.SUBMITTED:
                        continue  # not known at IG (yet): absent, as in IG's own lists
                    reports.append(self._leg_report(plan, leg, leg.status))
            known = {r.client_order_id for r in reports}
        for deal in deals:
            symbol = self._symbol_by_epic.get(deal.epic)
            if symbol is None or deal.deal_reference in known:
                continue
            if leg_of(deal.deal_reference) == "E":
                reports.append(
                    OrderStatusReport(
                        client_order_id=deal.deal_reference,
                        broker_order_id=deal.deal_id,
                        instrument=symbol,
                        status=OrderStatus.FILLED,
                        quantity=deal.size,
                        filled_quantity=deal.size,
                        ts_event=deal.created_ns or now,
                    )
                )
        return reports

    def list_open_orders(self) -> list[OrderStatusReport]:
        with self._lock:
            return [
                self._leg_report(plan, plan.legs[cid], OrderStatus.ACCEPTED)
                for plan in self._plans.values()
                if plan.deal is not None
                for cid in (plan.stop_cid, plan.target_cid)
                if cid is not None
            ]

    def list_fills(self, since_ns: int | None = None) -> list[FillReport]:
        asked_at, deals = self._open_deals_snapshot(max_age_s=_LIST_SNAPSHOT_S)
        self._notice_closed_deals(deals, asked_at)
        with self._lock:
            fills = list(self._fills)
            seen = set(self._seen_fills)
        for deal in deals:
            symbol = self._symbol_by_epic.get(deal.epic)
            trade_id = f"{deal.deal_id}:{deal.deal_reference}"
            if symbol is None or leg_of(deal.deal_reference) != "E" or trade_id in seen:
                continue
            fills.append(
                FillReport(
                    trade_id=trade_id,
                    client_order_id=deal.deal_reference,
                    broker_order_id=deal.deal_id,
                    instrument=symbol,
                    side=deal.direction,
                    quantity=deal.size,
                    price=deal.level,
                    ts_event=deal.created_ns or self._clock.now_ns(),
                )
            )
        fills = [f for f in fills if since_ns is None or f.ts_event >= since_ns]
        fills.sort(key=lambda fill: fill.ts_event)
        return fills

    def list_positions(self) -> list[PositionReport]:
        asked_at, deals = self._open_deals_snapshot(max_age_s=_LIST_SNAPSHOT_S)
        self._notice_closed_deals(deals, asked_at)
        self._read_levels(deals, asked_at)
        return positions_by_instrument(deals, self._symbol_by_epic, self._clock.now_ns())

    # ------------------------------------------------------------------ after a restart
    def adopt_working_orders(self, orders: Iterable[Order]) -> None:
        """The engine's unfinished orders after its recovery (the order actor calls this once
        its books are loaded, before reconciling): learn which STOP/TARGET leg ids stand for
        which deal's levels, since IG's positions name only the entry (dealReference).

        A plan whose deal is open: a leg whose level IS the deal's level (trigger = its
        stopLevel, price = its limitLevel) takes it over with no request; a working leg the
        deal holds a different level for still takes it over (reported at IG's level: drift,
        as when a level is moved at IG during a session); a working leg whose level is gone
        from the deal, or whose sibling now holds it (a stop moved before the restart), ends
        CANCELLED (the OCO puts a missing level back). An in-flight leg whose level the deal
        does not hold stays unknown: reconciliation settles it as any unanswered order.

        A plan whose deal is no longer open was closed while the engine was down: IG's
        activity history (one ``GET /history/activity``) gives the close, booked once as a
        fill of the leg whose level closed it (or of our EXIT, by its dealReference).

        Plans this process already knows are left alone (its memory is the truth). IG not
        answering is logged: reconciliation then sees what it would have without this hook.
        """
        by_plan: dict[str, list[Order]] = {}
        for order in orders:
            plan_id, leg = plan_key(order.client_order_id), leg_of(order.client_order_id)
            if plan_id is None or leg not in ("S", "T", "X") or not order.status.is_working:
                continue
            # A copy: the engine's orders change on its thread; a retry reads these later.
            by_plan.setdefault(plan_id, []).append(msgspec.structs.replace(order))
        with self._lock:
            fresh = {pid: legs for pid, legs in by_plan.items() if pid not in self._plans}
        if not fresh:
            return
        try:
            asked_at, deals = self._open_deals_snapshot(max_age_s=_LIST_SNAPSHOT_S)
        except (BrokerUnavailable, BrokerRejected) as error:
            logger.warning("ig: the engine's working legs not adopted (positions: %s)", error)
            return
        open_by_plan = {
            plan_key(deal.deal_reference): deal
            for deal in deals
            if leg_of(deal.deal_reference) == "E"
        }
        closed: dict[str, list[Order]] = {}
        for plan_id, legs in fresh.items():
            deal = open_by_plan.get(plan_id)
            if deal is None:
                closed[plan_id] = legs
            elif deal.epic in self._symbol_by_epic:
                self._bind_legs(plan_id, deal, legs, asked_at)
        if closed:
            self._book_closes_from_history(closed)

    def _bind_legs(self, plan_id: str, deal: IgDeal, orders: list[Order], asked_at: float) -> None:
        plan = _Plan(self._symbol_by_epic[deal.epic])
        plan.deal = deal
        plan.deal_known_at = asked_at  # it was in this snapshot: a later one without it = gone
        reports: list[BrokerReport] = []
        for kind, level in (("S", deal.stop_level), ("T", deal.limit_level)):
            legs = sorted(
                (o for o in orders if leg_of(o.client_order_id) == kind),
                key=lambda o: o.ts_created,
            )
            holder = next((o for o in reversed(legs) if _level_of(o) == level), None)
            if holder is None and level is not None:
                # IG holds another level than any of ours: the latest acknowledged leg stands
                # for it and reports IG's level (reconciliation calls that drift).
                holder = next((o for o in reversed(legs) if o.status is OrderStatus.ACCEPTED), None)
            for order in legs:
                cid = order.client_order_id
                if order is holder:
                    leg = _Leg(cid, kind, order.quantity, _level_of(order))
                    leg.status = OrderStatus.ACCEPTED
                    plan.legs[cid] = leg
                    if kind == "S":
                        plan.stop_cid = cid
                    else:
                        plan.target_cid = cid
                elif order.status in (OrderStatus.ACCEPTED, OrderStatus.PENDING_CANCEL):
                    # Acknowledged once, its level is not on the deal now: gone at IG.
                    leg = _Leg(cid, kind, order.quantity, _level_of(order))
                    leg.status = OrderStatus.CANCELLED
                    plan.legs[cid] = leg
                    reports.append(self._leg_report(plan, leg, OrderStatus.CANCELLED))
                # else in flight and not on the deal: unknown, as IG's lists would say.
        with self._lock:
            if plan_id in self._plans:
                return
            self._plans[plan_id] = plan
        logger.info(
            "ig: deal %s of plan %s adopted after a restart: stop leg %s, limit leg %s",
            deal.deal_id,
            plan_id,
            plan.stop_cid,
            plan.target_cid,
        )
        for report in reports:
            self._reports.put(report)

    def _book_closes_from_history(self, closed: dict[str, list[Order]]) -> None:
        """Deals of ours IG closed while the engine was down: their closes from IG's activity
        history, as the fills a live session would have reported (same trade ids). A plan
        the history does not explain yet (IG not answering, or its close not listed yet) is
        asked about again by a later full reconciliation run (``list_orders``), at most
        ``_HISTORY_TRIES`` times, ``_HISTORY_RETRY_S`` apart: never a loop."""
        earliest = min(o.ts_created for legs in closed.values() for o in legs)
        try:
            activities = self._read_activity(earliest - _HISTORY_MARGIN_NS)
        except (BrokerUnavailable, BrokerRejected, BrokerRateLimited) as error:
            logger.warning(
                "ig: deals of plans %s are gone from IG's positions and its history could not "
                "be read (%s): asked again on a later full reconciliation run",
                sorted(closed),
                error,
            )
            self._history_later(closed)
            return
        unexplained: dict[str, list[Order]] = {}
        for plan_id, orders in closed.items():
            opening = next(
                (
                    a
                    for a in activities
                    if plan_key(a.deal_reference) == plan_id
                    and leg_of(a.deal_reference) == "E"
                    and not a.is_close
                    and a.epic in self._symbol_by_epic
                ),
                None,
            )
            closes = [
                a
                for a in activities
                if opening is not None
                and a.is_close
                and a is not opening
                and opening.deal_id in a.deal_ids
            ]
            if opening is None or not closes:
                logger.warning(
                    "ig: plan %s has working legs but no open deal at IG, and IG's activity "
                    "history shows no %s of it yet",
                    plan_id,
                    "opening" if opening is None else "close",
                )
                unexplained[plan_id] = orders
                continue
            self._book_closes(plan_id, opening, closes, orders)
        self._history_later(unexplained)

    def _history_later(self, plans: dict[str, list[Order]]) -> None:
        with self._lock:
            for plan_id, orders in plans.items():
                tries = self._history_pending.get(plan_id, (0, []))[0] + 1
                if tries >= _HISTORY_TRIES:
                    self._history_pending.pop(plan_id, None)
                    logger.error(
                        "ig: plan %s: its deal is gone from IG and %d reads of IG's history "
                        "did not explain it; reconciliation reports what remains",
                        plan_id,
                        tries,
                    )
                    continue
                self._history_pending[plan_id] = (tries, orders)
            self._history_retry_at = time.monotonic() + _HISTORY_RETRY_S

    def _retry_history(self) -> None:
        """Plans whose close the history did not explain at the restart: ask once more when
        due (a full reconciliation run's ``list_orders``)."""
        with self._lock:
            if not self._history_pending or time.monotonic() < self._history_retry_at:
                return
            for plan_id in [pid for pid in self._history_pending if pid in self._plans]:
                del self._history_pending[plan_id]
            pending = {pid: orders for pid, (_, orders) in self._history_pending.items()}
        if pending:
            self._book_closes_from_history(pending)  # counts the tries that explain nothing
        with self._lock:
            for plan_id in [pid for pid in self._history_pending if pid in self._plans]:
                del self._history_pending[plan_id]

    def _book_closes(
        self,
        plan_id: str,
        opening: IgActivity,
        closes: list[IgActivity],
        orders: list[Order],
    ) -> None:
        instrument = self._symbol_by_epic[opening.epic]
        # The legs IG held levels for: acknowledged (a cancel asked but unanswered included).
        working = {
            o.client_order_id: o
            for o in orders
            if o.status in (OrderStatus.ACCEPTED, OrderStatus.PENDING_CANCEL)
        }
        stop = max(
            (o for o in working.values() if o.leg is LegKind.STOP),
            key=lambda o: o.ts_created,
            default=None,
        )
        target = max(
            (o for o in working.values() if o.leg is LegKind.TARGET),
            key=lambda o: o.ts_created,
            default=None,
        )
        exits = {o.client_order_id: o for o in orders if o.leg is LegKind.EXIT}
        plan = _Plan(instrument)
        plan.deal = IgDeal(
            deal_id=opening.deal_id,
            deal_reference=opening.deal_reference,
            epic=opening.epic,
            direction=opening.direction,
            size=opening.size,
            level=opening.level,
            stop_level=_level_of(stop) if stop is not None else None,
            limit_level=_level_of(target) if target is not None else None,
            created_ns=opening.ts_ns,
        )
        for order, kind in ((stop, "S"), (target, "T")):
            if order is None:
                continue
            leg = _Leg(order.client_order_id, kind, order.quantity, _level_of(order))
            leg.status = OrderStatus.ACCEPTED
            plan.legs[leg.client_order_id] = leg
            if kind == "S":
                plan.stop_cid = leg.client_order_id
            else:
                plan.target_cid = leg.client_order_id
        closing_side = Side.SELL if opening.direction is Side.BUY else Side.BUY
        remaining = opening.size
        reports: list[BrokerReport] = []
        with self._lock:
            if plan_id in self._plans:
                return
            self._plans[plan_id] = plan
            for close in sorted(closes, key=lambda a: a.ts_ns):
                ours = plan_key(close.deal_reference) == plan_id
                if ours and close.deal_reference in exits:
                    cid = close.deal_reference
                    exit_order = exits[cid]
                    leg = _Leg(cid, "X", exit_order.quantity, None)
                    # The confirm's trade id: the close's deal id and our reference.
                    trade_id = f"{close.deal_id}:{cid}"
                elif ours:
                    # An exit the engine already booked (not among its unfinished orders): the
                    # deal is that much smaller, nothing to report.
                    remaining -= min(close.size, remaining)
                    continue
                else:
                    hit = self._nearest_leg(plan, close.level)
                    if hit is None:
                        logger.error(
                            "ig: deal %s of plan %s was closed at IG (%s) without a level or "
                            "exit of ours the engine still holds",
                            opening.deal_id,
                            plan_id,
                            close.deal_reference,
                        )
                        continue
                    leg = plan.legs[hit]
                    # As a live session's: the deal's id and the leg hit (``_deal_gone``).
                    trade_id = f"{opening.deal_id}:{hit}"
                quantity = min(close.size, remaining)
                remaining -= quantity
                fill = FillReport(
                    trade_id=trade_id,
                    client_order_id=leg.client_order_id,
                    broker_order_id=opening.deal_id,
                    instrument=instrument,
                    side=closing_side,
                    quantity=quantity,
                    price=close.level,
                    ts_event=close.ts_ns or self._clock.now_ns(),
                )
                leg.status = OrderStatus.FILLED
                plan.legs[leg.client_order_id] = leg
                if leg.client_order_id == plan.stop_cid:
                    plan.stop_cid = None
                elif leg.client_order_id == plan.target_cid:
                    plan.target_cid = None
                if fill.trade_id not in self._seen_fills:
                    self._seen_fills.add(fill.trade_id)
                    self._fills.append(fill)
                    reports.append(fill)
                reports.append(self._leg_report(plan, leg, OrderStatus.FILLED))
                if leg.kind == "X" and remaining <= 0:
                    # Our exit closed it: its levels went with it (as ``_settle`` reports).
                    reports.extend(self._levels_ended(plan))
            plan.closed = remaining <= 0
            if not plan.closed:
                plan.deal = msgspec.structs.replace(plan.deal, size=remaining)
        if reports:
            logger.warning(
                "ig: deal %s of plan %s was closed at IG while the engine was down: %d "
                "report(s) from IG's activity history",
                opening.deal_id,
                plan_id,
                len(reports),
            )
        for report in reports:
            self._reports.put(report)

    @staticmethod
    def _nearest_leg(plan: _Plan, level: Decimal) -> str | None:
        candidates = [
            (cid, plan.legs[cid].price)
            for cid in (plan.stop_cid, plan.target_cid)
            if cid is not None and plan.legs[cid].price is not None
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda item: abs(item[1] - level))[0]  # type: ignore[operator]

    def _read_activity(self, since_ns: int) -> list[IgActivity]:
        """IG's account activity since ``since_ns`` (v3, detailed: the dealReference is in
        the details), following at most ``_HISTORY_MAX_PAGES`` pages: a few non-trading
        requests, once per adoption, never in a loop."""
        params: dict[str, Any] | None = {
            "from": ig_history_time(since_ns),
            "detailed": "true",
            "pageSize": "500",
        }
        path = "/history/activity"
        activities: list[IgActivity] = []
        for _ in range(_HISTORY_MAX_PAGES):
            data = self._rest.get(path, version="3", params=params) or {}
            for item in data.get("activities") or []:
                if not isinstance(item, dict):
                    continue
                try:
                    activities.append(activity_from_json(item))
                except ValueError as error:
                    logger.info("ig: activity skipped: %s", error)
            paging = (data.get("metadata") or {}).get("paging") or {}
            following = paging.get("next")
            if not following:
                break
            # IG's ``next`` is the path and query of the following page.
            path, _, query = str(following).partition("?")
            path = path.split("/gateway/deal", 1)[-1] or "/history/activity"
            params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
            params.pop("version", None)
        return activities

    # ------------------------------------------------------------------ optional hooks
    def on_tick(self, tick: Tick) -> None:
        """IG's prices are its own."""

    def on_validated_tick(self, tick: Tick) -> None:
        """IG's prices are its own."""

    def on_time(self, now_ns: int) -> None:
        """IG keeps its own time."""

    def on_leadership(self, is_leader: bool, epoch: int) -> None:
        """IG's books are IG's."""

    def last_trade_prices(self) -> dict[str, Decimal]:
        return {}

    # ------------------------------------------------------------------ entries and exits
    def _submit_entry(self, request: OrderRequest, plan_id: str) -> None:
        cid = request.client_order_id
        # The bracket's levels ride on the deal itself: IG opens it protected (or refuses
        # it whole, e.g. a stop nearer than the market's minimum distance), never naked
        # until the STOP and TARGET legs arrive.
        levels = (request.attached_stop, request.attached_target)
        body = open_position_body(
            request, self._markets[request.instrument], stop_level=levels[0], limit_level=levels[1]
        )
        self._refuse_duplicate(cid)
        with self._lock:
            plan = self._plans.setdefault(plan_id, _Plan(request.instrument))
            plan.legs[cid] = _Leg(cid, "E", request.quantity, None)
            plan.opened_with = levels
        self._deal(cid, "POST", "/positions/otc", "2", body, None)

    def _submit_exit(self, request: OrderRequest, plan_id: str) -> None:
        cid = request.client_order_id
        if request.order_type is not OrderType.MARKET:
            raise BrokerRejected(
                f"IG_UNSUPPORTED_ORDER_TYPE: an exit at IG closes the deal at market, got "
                f"{request.order_type.value}",
                client_order_id=cid,
            )
        self._refuse_duplicate(cid)
        plan = self._plan_with_deal(plan_id, request.instrument, cid)
        deal = plan.deal
        assert deal is not None
        if request.side is deal.direction or request.quantity > deal.size:
            raise BrokerRejected(
                f"IG_UNSUPPORTED_EXIT: {cid} {request.side.value} {request.quantity} does not "
                f"close deal {deal.deal_id} ({deal.direction.value} {deal.size})",
                client_order_id=cid,
            )
        body = close_position_body(deal.deal_id, request.side, request.quantity, cid)
        with self._lock:
            plan.legs[cid] = _Leg(cid, "X", request.quantity, None)
            plan.closing = True
        self._deal(cid, "POST", "/positions/otc", "1", body, "DELETE")

    def _refuse_duplicate(self, cid: str) -> None:
        with self._lock:
            confirmed = self._confirmed.get(cid)
            unknown = cid in self._unknown_outcome
        if confirmed is None and unknown:
            data = self._rest.get_or_none(f"/confirms/{cid}")
            if isinstance(data, dict):
                confirmed = confirm_from_json(data)
                self._settle(confirmed)
            elif self._adopt(self._open_deals(), only=cid):
                raise BrokerRejected(
                    f"DUPLICATE_CLIENT_ORDER_ID: {cid} IG holds an open deal under it",
                    client_order_id=cid,
                )
        if confirmed is not None:
            raise BrokerRejected(
                f"DUPLICATE_CLIENT_ORDER_ID: {cid} IG confirmed it as deal {confirmed.deal_id} "
                f"({'ACCEPTED' if confirmed.accepted else 'REJECTED ' + confirmed.reason})",
                client_order_id=cid,
            )

    def _deal(
        self,
        cid: str,
        method: str,
        path: str,
        version: str,
        body: dict[str, Any],
        override: str | None,
    ) -> None:
        event = threading.Event()
        with self._lock:
            self._confirm_events[cid] = event
        try:
            self._rest.request(
                method,
                path,
                version=version,
                json=body,
                client_order_id=cid,
                method_override=override,
            )
        except IgAuthRefused:
            raise
        except BrokerUnavailable:
            with self._lock:
                self._unknown_outcome.add(cid)
            raise
        self._deals_changed()
        confirm = self._await_confirm(cid, event)
        if confirm is None:
            with self._lock:
                self._unknown_outcome.add(cid)
            raise BrokerUnavailable(
                f"IG_CONFIRM_PENDING: no confirm for dealReference {cid} within "
                f"{self._config.confirm_timeout_s} s; the outcome is unknown",
                client_order_id=cid,
            )
        if not confirm.accepted:
            raise BrokerRejected(f"IG_REJECTED: {confirm.reason}", client_order_id=cid)

    def _await_confirm(self, cid: str, event: threading.Event) -> IgConfirm | None:
        deadline = time.monotonic() + self._config.confirm_timeout_s
        attempt = 0
        while True:
            with self._lock:
                confirm = self._confirmed.get(cid)
            if confirm is not None:
                return confirm
            # The deal request was sent: whatever a poll meets (an allowance, a 5xx, a lapsed
            # session), the outcome is unknown, never "not sent" (a retried submit would
            # deal again under the same reference if IG did not deduplicate it).
            try:
                data = self._rest.get_or_none(f"/confirms/{cid}")
            except IgAuthRefused as error:
                logger.warning("ig: confirm of %s not readable: %s", cid, error)
                return None
            except (BrokerUnavailable, BrokerRateLimited, BrokerRejected) as error:
                logger.info("ig: confirm poll of %s failed: %s", cid, error)
                data = None
            if isinstance(data, dict):
                confirm = confirm_from_json(data)
                self._settle(confirm)
                return confirm
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Waits for the stream's CONFIRMS (it sets the event) or the next poll.
            event.wait(min(_CONFIRM_POLL_S[min(attempt, len(_CONFIRM_POLL_S) - 1)], remaining))
            attempt += 1

    def _settle(self, confirm: IgConfirm) -> None:
        """Record a confirm of one of our dealReferences (once) and report its outcome."""
        cid = confirm.deal_reference
        plan_id = plan_key(cid)
        now = self._clock.now_ns()
        reports: list[BrokerReport] = []
        self._deals_changed()
        with self._lock:
            if cid in self._confirmed:
                return
            self._confirmed[cid] = confirm
            self._unknown_outcome.discard(cid)
            event = self._confirm_events.pop(cid, None)
            plan = self._plans.get(plan_id or "")
            leg = plan.legs.get(cid) if plan is not None else None
            if plan is not None and leg is not None:
                leg.status = OrderStatus.FILLED if confirm.accepted else OrderStatus.REJECTED
                reports.append(confirm_status_report(confirm, plan.instrument, leg.quantity, now))
                side = confirm.direction or Side.BUY
                fill = confirm_fill(confirm, plan.instrument, side, leg.quantity, now)
                if fill is not None and fill.trade_id not in self._seen_fills:
                    self._seen_fills.add(fill.trade_id)
                    self._fills.append(fill)
                    reports.insert(0, fill)
                if confirm.accepted and leg.kind == "E":
                    plan.deal_known_at = plan.levels_set_at = time.monotonic()
                    opened_stop, opened_limit = plan.opened_with
                    plan.deal = IgDeal(
                        deal_id=confirm.deal_id,
                        deal_reference=cid,
                        epic=confirm.epic or self._markets[plan.instrument].epic,
                        direction=side,
                        size=confirm.size or leg.quantity,
                        level=confirm.level or Decimal(0),
                        stop_level=(
                            confirm.stop_level if confirm.stop_level is not None else opened_stop
                        ),
                        limit_level=(
                            confirm.limit_level if confirm.limit_level is not None else opened_limit
                        ),
                        created_ns=confirm.ts_ns,
                    )
                elif (
                    confirm.accepted
                    and leg.kind == "X"
                    and plan.deal is not None
                    and plan.deal.size > (confirm.size or leg.quantity)
                ):
                    # A partial close: the rest of the deal stays open with its levels.
                    plan.deal = msgspec.structs.replace(
                        plan.deal, size=plan.deal.size - (confirm.size or leg.quantity)
                    )
                    plan.closing = False
                elif confirm.accepted and leg.kind == "X":
                    plan.closed = True
                    reports.extend(self._levels_ended(plan))
                elif leg.kind == "X":
                    plan.closing = False
        for report in reports:
            self._reports.put(report)
        if event is not None:
            event.set()

    def _adopt(self, deals: list[IgDeal], only: str | None = None) -> bool:
        """Settle our unanswered deals IG shows open (their confirm lost): the open position
        under the dealReference is the proof it was dealt. True when ``only`` was found."""
        found = False
        for deal in deals:
            cid = deal.deal_reference
            if only is not None and cid != only:
                continue
            with self._lock:
                pending = cid in self._unknown_outcome and cid not in self._confirmed
            if not pending:
                continue
            found = True
            self._settle(
                IgConfirm(
                    deal_reference=cid,
                    deal_id=deal.deal_id,
                    accepted=True,
                    status="OPEN",
                    reason="SUCCESS (adopted from GET /positions)",
                    direction=deal.direction,
                    size=deal.size,
                    level=deal.level,
                    epic=deal.epic,
                    ts_ns=deal.created_ns,
                )
            )
        return found

    def _plan_with_deal(self, plan_id: str, instrument: str, cid: str) -> _Plan:
        with self._lock:
            plan = self._plans.get(plan_id)
        if plan is None or plan.deal is None:
            # After a restart: the deal's dealReference is the plan's entry id.
            entry = next(
                (d for d in self._open_deals() if plan_key(d.deal_reference) == plan_id), None
            )
            with self._lock:
                plan = self._plans.setdefault(plan_id, _Plan(instrument))
                if entry is not None and plan.deal is None:
                    plan.deal = entry
                    plan.deal_known_at = time.monotonic()
        if plan.deal is None or plan.closed:
            raise BrokerRejected(
                f"IG_NO_POSITION: {cid}: plan {plan_id} has no open deal at IG",
                client_order_id=cid,
            )
        return plan

    # ------------------------------------------------------------------ stop and limit levels
    def _submit_level(self, request: OrderRequest, plan_id: str, leg: str) -> None:
        cid = request.client_order_id
        level = request.trigger_price if leg == "S" else request.price
        expected = OrderType.STOP if leg == "S" else OrderType.LIMIT
        if request.order_type is not expected or level is None:
            raise BrokerRejected(
                f"IG_UNSUPPORTED_ORDER_TYPE: leg {leg} maps to the deal's "
                f"{'stopLevel' if leg == 'S' else 'limitLevel'} and needs a {expected.value} "
                f"order with its price, got {request.order_type.value}",
                client_order_id=cid,
            )
        plan = self._plan_with_deal(plan_id, request.instrument, cid)
        with plan.amend_lock:
            self._amend_level(plan, cid, leg, level, request.quantity)

    def _amend_level(self, plan: _Plan, cid: str, leg: str, level: Decimal, quantity: int) -> None:
        # Under plan.amend_lock: the deal's levels are read and written by one thread at once.
        deal = plan.deal
        assert deal is not None
        with self._lock:
            # A leg whose amendment went unanswered (SUBMITTED) is simply amended again:
            # setting a level is idempotent at IG.
            if cid in plan.legs and plan.legs[cid].status not in (
                OrderStatus.REJECTED,
                OrderStatus.SUBMITTED,
            ):
                raise BrokerRejected(
                    f"DUPLICATE_CLIENT_ORDER_ID: {cid} is already the deal's "
                    f"{'stop' if leg == 'S' else 'limit'}",
                    client_order_id=cid,
                )
        stop = level if leg == "S" else deal.stop_level
        limit = level if leg == "T" else deal.limit_level
        with self._lock:
            plan.legs[cid] = _Leg(cid, leg, quantity, level)
            current = deal.stop_level if leg == "S" else deal.limit_level
            holder = plan.stop_cid if leg == "S" else plan.target_cid
        try:
            if current != level or holder is not None:
                self._amend(deal, stop, limit, cid)
            # else: the deal already has it (opened with it, or set before a restart): the leg
            # takes over the level with no request.
        except BrokerRejected:
            with self._lock:
                plan.legs[cid].status = OrderStatus.REJECTED
            raise
        with self._lock:
            plan.legs[cid].status = OrderStatus.ACCEPTED
            if leg == "S":
                plan.stop_cid = cid
            else:
                plan.target_cid = cid
            reports = [self._leg_report(plan, plan.legs[cid], OrderStatus.ACCEPTED)]
            if holder is not None and holder != cid and holder in plan.legs:
                # The level moved in one request (the engine's tighten on a broker with
                # levels on the position): the leg that held it is superseded, not cancelled
                # first, so the deal was never without it.
                plan.legs[holder].status = OrderStatus.CANCELLED
                reports.append(self._leg_report(plan, plan.legs[holder], OrderStatus.CANCELLED))
        for report in reports:
            self._reports.put(report)

    def _amend(self, deal: IgDeal, stop: Decimal | None, limit: Decimal | None, cid: str) -> None:
        """PUT the deal's levels; the answer's confirm (when it comes) may refuse them."""
        answer = self._rest.request(
            "PUT",
            f"/positions/otc/{deal.deal_id}",
            version="2",
            json=amend_levels_body(stop, limit),
            client_order_id=cid,
        )
        self._deals_changed()
        reference = str((answer or {}).get("dealReference") or "")
        if reference:
            data = self._rest.get_or_none(f"/confirms/{reference}")
            if isinstance(data, dict):
                confirm = confirm_from_json(data)
                if not confirm.accepted:
                    raise BrokerRejected(
                        f"IG_REJECTED: {confirm.reason} (amending deal {deal.deal_id})",
                        client_order_id=cid,
                    )
        plan_id = plan_key(deal.deal_reference) or ""
        with self._lock:
            plan = self._plans.get(plan_id)
            if plan is not None and plan.deal is not None:
                plan.deal = _with_levels(plan.deal, stop, limit)
                plan.levels_set_at = time.monotonic()

    # ------------------------------------------------------------------ deals closed by IG
    def _open_deals(self) -> list[IgDeal]:
        return self._open_deals_snapshot(max_age_s=0.0)[1]

    def _open_deals_snapshot(self, max_age_s: float) -> tuple[float, list[IgDeal]]:
        """IG's open deals and when (monotonic) they were asked for; a snapshot younger than
        ``max_age_s`` is reused (one reconciliation run asks for orders, fills and positions
        at once, and IG allows 30 non-trading requests a minute per account); any deal of
        ours since drops it. IG's allowance refusal on this read is ``BrokerUnavailable``
        for the lists' callers: the broker could not be asked now."""
        now = time.monotonic()
        with self._lock:
            cached = self._deals_snapshot
            quiet_for = self._reads_refused_until - now
        if cached is not None and now - cached[0] <= max_age_s:
            return cached
        if quiet_for > 0:
            # Asking again at once would only spend what is left of the allowance that the
            # confirms of our deals need; the caller counts it as a failed look, as IG's was.
            raise BrokerUnavailable(
                f"IG_READ_ALLOWANCE: GET /positions not asked for {quiet_for:.1f} s more: IG "
                "refused the last one for its non-trading allowance"
            )
        try:
            data = self._rest.get("/positions", version="2") or {}
        except BrokerRateLimited as error:
            with self._lock:
                self._reads_refused_until = now + max(
                    error.retry_after_s or 0.0, _READ_ALLOWANCE_QUIET_S
                )
            raise BrokerUnavailable(f"IG_READ_ALLOWANCE: GET /positions: {error}") from None
        deals = []
        for item in data.get("positions") or []:
            if not isinstance(item, dict):
                continue
            try:
                deals.append(deal_from_position(item))
            except ValueError as error:
                logger.warning("ig: unusable position skipped: %s", error)
        with self._lock:
            if self._deals_generation_at <= now:
                self._deals_snapshot = (now, deals)
        return now, deals

    def _deals_changed(self) -> None:
        """A deal of ours was made, amended or closed: the cached snapshot is out of date."""
        with self._lock:
            self._deals_snapshot = None
            self._deals_generation_at = time.monotonic()

    def _deal_is_open(self, deal_id: str) -> bool:
        return any(deal.deal_id == deal_id for deal in self._open_deals())

    def _notice_closed_deals(self, deals: list[IgDeal], asked_at: float) -> None:
        """A deal of ours gone from IG's positions with no EXIT of ours: a level closed it.
        Only deals known before the positions were asked for count (a deal opened while the
        request was in flight is not in its answer)."""
        open_ids = {deal.deal_id for deal in deals}
        with self._lock:
            gone = [
                plan_id
                for plan_id, plan in self._plans.items()
                if plan.deal is not None
                and not plan.closed
                and not plan.closing
                and plan.deal_known_at < asked_at
                and plan.deal.deal_id not in open_ids
            ]
        for plan_id in gone:
            self._deal_gone(plan_id, None)

    def _read_levels(self, deals: list[IgDeal], asked_at: float) -> None:
        """Take the stop and limit levels IG holds on our deals as the legs' truth. A level
        gone (removed in IG's platform) ends its leg CANCELLED, so the engine's OCO puts it
        back; a level moved stays the leg's reported price, which reconciliation finds
        differs from ours. A snapshot asked before our last amendment was answered (or while
        one is under way) says nothing new."""
        by_id = {deal.deal_id: deal for deal in deals}
        reports: list[BrokerReport] = []
        with self._lock:
            for plan in self._plans.values():
                known = plan.deal
                if known is None or plan.closed or plan.closing:
                    continue
                current = by_id.get(known.deal_id)
                if current is None or asked_at <= plan.levels_set_at:
                    continue
                if plan.amend_lock.locked():
                    continue
                plan.deal = _with_levels(known, current.stop_level, current.limit_level)
                for kind, level in (("S", current.stop_level), ("T", current.limit_level)):
                    cid = plan.stop_cid if kind == "S" else plan.target_cid
                    if cid is None or level is not None:
                        continue
                    leg = plan.legs[cid]
                    leg.status = OrderStatus.CANCELLED
                    if kind == "S":
                        plan.stop_cid = None
                    else:
                        plan.target_cid = None
                    logger.warning(
                        "ig: deal %s has no %s at IG any more (removed outside the engine): "
                        "leg %s reported CANCELLED",
                        known.deal_id,
                        "stop" if kind == "S" else "limit",
                        cid,
                    )
                    reports.append(self._leg_report(plan, leg, OrderStatus.CANCELLED))
        for report in reports:
            self._reports.put(report)

    def on_position_update(self, update: Mapping[str, Any]) -> None:
        """The TRADE stream's OPU: a deal of ours DELETED with no EXIT of ours."""
        self._deals_changed()
        status = str(update.get("status") or "").upper()
        if status != "DELETED":
            return
        deal_id = str(update.get("dealId") or "")
        with self._lock:
            plan_id = next(
                (
                    pid
                    for pid, plan in self._plans.items()
                    if plan.deal is not None and plan.deal.deal_id == deal_id
                ),
                None,
            )
        if plan_id is not None:
            # The OPU's ``level`` is the deal's OPENING level, not where it closed: the last
            # price decides which level was hit (the close's CONFIRMS, when it comes first,
            # gives the closing level itself).
            self._deal_gone(plan_id, None)

    def on_confirm(self, data: Mapping[str, Any]) -> None:
        """The TRADE stream's CONFIRMS: for one of our dealReferences, its outcome; for IG's
        own close of one of our deals (a stop or limit hit), the closing level."""
        try:
            confirm = confirm_from_json(data)
        except ValueError as error:
            logger.warning("ig: unusable confirm skipped: %s", error)
            return
        if plan_key(confirm.deal_reference) is not None:
            self._settle(confirm)
            return
        if not confirm.accepted or confirm.status not in ("CLOSED", "DELETED", "FULLY_CLOSED"):
            return
        with self._lock:
            plan_id = next(
                (
                    pid
                    for pid, plan in self._plans.items()
                    if plan.deal is not None and plan.deal.deal_id == confirm.deal_id
                ),
                None,
            )
        if plan_id is not None:
            self._deal_gone(plan_id, confirm.level)

    def _deal_gone(self, plan_id: str, closing_level: Decimal | None) -> None:
        with self._lock:
            plan = self._plans.get(plan_id)
            if plan is None or plan.deal is None or plan.closed or plan.closing:
                return
            deal = plan.deal
            stop_cid, target_cid = plan.stop_cid, plan.target_cid
        hit = self._which_level_hit(plan, deal, closing_level)
        if closing_level is None:
            # IG closed at market once the level was crossed: the stream's last quote on the
            # closing side is the best estimate; without one, the level itself.
            with self._lock:
                quote = self._last_quotes.get(deal.epic)
            if quote is not None:
                closing_level = quote.bid if deal.direction is Side.BUY else quote.ask
        now = self._clock.now_ns()
        reports: list[BrokerReport] = []
        with self._lock:
            if plan.closed:
                return
            plan.closed = True
            for cid in (stop_cid, target_cid):
                if cid is None:
                    continue
                leg = plan.legs[cid]
                if cid == hit:
                    leg.status = OrderStatus.FILLED
                    fill = FillReport(
                        trade_id=f"{deal.deal_id}:{cid}",
                        client_order_id=cid,
                        broker_order_id=deal.deal_id,
                        instrument=plan.instrument,
                        side=Side.SELL if deal.direction is Side.BUY else Side.BUY,
                        quantity=deal.size,
                        price=closing_level or leg.price or deal.level,
                        ts_event=now,
                    )
                    if fill.trade_id not in self._seen_fills:
                        self._seen_fills.add(fill.trade_id)
                        self._fills.append(fill)
                        reports.append(fill)
                    reports.append(self._leg_report(plan, leg, OrderStatus.FILLED))
                    if cid == plan.stop_cid:
                        plan.stop_cid = None
                    else:
                        plan.target_cid = None
            # The sibling stays "working" until the engine's OCO cancels it (a no-op here
            # that reports it CANCELLED), as a separate sibling order would.
        if hit is None:
            logger.error(
                "ig: deal %s of plan %s was closed at IG without a stop, a limit or an exit of "
                "ours; reconciliation will see the position gone",
                deal.deal_id,
                plan_id,
            )
        for report in reports:
            self._reports.put(report)

    def _which_level_hit(
        self, plan: _Plan, deal: IgDeal, closing_level: Decimal | None
    ) -> str | None:
        candidates = [
            (cid, plan.legs[cid].price)
            for cid in (plan.stop_cid, plan.target_cid)
            if cid is not None and plan.legs[cid].price is not None
        ]
        if len(candidates) <= 1:
            return candidates[0][0] if candidates else None
        reference = closing_level
        if reference is None:
            # Where a closing deal would trade now: the bid for a BUY deal, the offer for a
            # SELL one; the stream's last quote, else IG's market snapshot.
            with self._lock:
                quote = self._last_quotes.get(deal.epic)
            if quote is not None:
                reference = quote.bid if deal.direction is Side.BUY else quote.ask
        if reference is None:
            try:
                snapshot = (self._rest.get(f"/markets/{deal.epic}", version="3") or {}).get(
                    "snapshot"
                ) or {}
                side = "bid" if deal.direction is Side.BUY else "offer"
                reference = Decimal(str(snapshot.get(side)))
            except (BrokerUnavailable, BrokerRejected, ArithmeticError, ValueError):
                reference = None
        if reference is None:
            return candidates[0][0]  # the stop: the conservative guess
        return min(candidates, key=lambda item: abs(item[1] - reference))[0]  # type: ignore[operator]

    # ------------------------------------------------------------------ reports
    def _levels_ended(self, plan: _Plan) -> list[OrderStatusReport]:
        """Under the lock: the deal closed by an exit of ours took its stop and limit with it;
        their legs end CANCELLED (the reports to send)."""
        reports = []
        for sibling in (plan.stop_cid, plan.target_cid):
            if sibling is not None:
                plan.legs[sibling].status = OrderStatus.CANCELLED
                reports.append(self._leg_report(plan, plan.legs[sibling], OrderStatus.CANCELLED))
        plan.stop_cid = plan.target_cid = None
        return reports

    def _leg_report(self, plan: _Plan, leg: _Leg, status: OrderStatus) -> OrderStatusReport:
        deal_id = plan.deal.deal_id if plan.deal is not None else ""
        filled = leg.quantity if status is OrderStatus.FILLED else 0
        # A working leg IS the deal's level: its price is the level IG holds (as last read),
        # which reconciliation compares with ours.
        deal = plan.deal if status.is_working else None
        trigger = deal.stop_level if deal is not None and leg.kind == "S" else None
        price = deal.limit_level if deal is not None and leg.kind == "T" else None
        return OrderStatusReport(
            client_order_id=leg.client_order_id,
            broker_order_id=f"{deal_id}/{leg.kind}" if leg.kind in "ST" else deal_id,
            instrument=plan.instrument,
            status=status,
            quantity=leg.quantity,
            filled_quantity=filled,
            ts_event=self._clock.now_ns(),
            price=price,
            trigger_price=trigger,
        )

    def _start_threads(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._report_loop, name="ig-reports", daemon=True
            )
            self._worker.start()
        if self._stream is None and self._start_stream:
            from adapters.brokers.ig.stream import IgStream, stream_available

            if not stream_available():
                logger.warning(
                    "ig: lightstreamer-client-lib is not installed; confirms and positions by "
                    "REST polling only"
                )
                return
            session = self._rest.session
            assert session is not None
            self._stream = IgStream(
                endpoint=session.lightstreamer_endpoint or self._config.rest_base_url,
                account_id=session.account_id,
                session_source=lambda: self._rest.session,
                epics=dict(self._symbol_by_epic),
                on_tick=self._on_stream_tick,
                on_confirm=self.on_confirm,
                on_position_update=self.on_position_update,
                on_alive=self._on_alive,
                now_ns=self._clock.now_ns,
                on_trade_subscribed=self._on_trade_subscribed,
            )
            self._stream.start()

    def _on_stream_tick(self, tick: Tick) -> None:
        epic = self._markets[tick.instrument].epic
        with self._lock:
            self._last_quotes[epic] = tick
        sink = self._tick_sink
        if sink is not None:
            sink([tick])

    def _on_trade_subscribed(self) -> None:
        """The TRADE item is (again) live. A deal IG closed while it was not sent its OPU to
        nobody: look at IG's positions once, off the SDK's thread."""
        self._reports.put(_LOOK_FOR_CLOSED_DEALS)

    def _look_for_closed_deals(self) -> None:
        self._deals_changed()
        try:
            asked_at, deals = self._open_deals_snapshot(max_age_s=0.0)
        except (BrokerUnavailable, BrokerRejected) as error:
            # Reconciliation's own look at the positions will find it.
            logger.warning("ig: could not look for deals closed while unsubscribed: %s", error)
            return
        self._notice_closed_deals(deals, asked_at)

    def _on_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self._last_heartbeat = now
            self._reports.put(OrderStreamHeartbeat(ts_event=self._clock.now_ns()))

    def _session_refused(self, detail: str) -> None:
        self._reports.put(
            BrokerSessionChanged(
                valid=False,
                detail=(
                    f"{detail}. IG refused the login: check ig.identifier, ig.password and "
                    "ig.api_key (or IG_IDENTIFIER, IG_PASSWORD, IG_API_KEY); entries stay "
                    "paused until a login works"
                ),
                ts_event=self._clock.now_ns(),
            )
        )

    def _session_restored(self) -> None:
        self._reports.put(
            BrokerSessionChanged(
                valid=True, detail="IG accepted the login again", ts_event=self._clock.now_ns()
            )
        )

    def _report_loop(self) -> None:
        while True:
            report = self._reports.get()
            if report is None:
                return
            if report is _LOOK_FOR_CLOSED_DEALS:
                if not self._closed:
                    self._look_for_closed_deals()
                continue
            sink = self._sink
            if sink is None or self._closed:
                continue
            try:
                sink(report)
            except Exception:
                logger.exception("ig: the report sink raised; the next report still goes")


def _level_of(order: Order) -> Decimal | None:
    """The level a STOP (its trigger) or TARGET (its limit price) leg stands for."""
    return order.trigger_price if order.leg is LegKind.STOP else order.price


def _with_levels(deal: IgDeal, stop: Decimal | None, limit: Decimal | None) -> IgDeal:
    return msgspec.structs.replace(deal, stop_level=stop, limit_level=limit)
