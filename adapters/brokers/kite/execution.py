"""``KiteBroker``: the broker port over Zerodha Kite Connect v3.

REST (``http.KiteRestClient``) places, modifies and cancels orders and answers the lists
reconciliation reads; the ticker websocket (``stream.KiteTickerStream``) brings market data and
order postbacks. Kite has no bracket orders: the engine's OCO places the entry, then the SL-M
stop and the LIMIT target, and cancels the sibling.

How each port method maps (see ``adapters/brokers/base.py``):

| port              | Kite                                                                  |
|-------------------|-----------------------------------------------------------------------|
| connect           | GET /user/profile (account_id = user_id), GET /user/margins (equity   |
|                   | net), GET /instruments/<exchange> (tokens, lot and tick sizes); starts|
|                   | the ticker. ``is_live``: the real base URL, or a profile whose        |
|                   | ``meta.account_type`` is LIVE (the fake's LIVE-type account)          |
| submit_order      | POST /orders/regular; MARKET and SL-M with market_protection; our id  |
|                   | travels in ``tag`` (``parsing.encode_tag``)                           |
| cancel_order      | DELETE /orders/regular/{id}; a refusal for an order that has finished |
|                   | (GET /orders/{id}) is not an error; an order Kite does not have: no-op|
|                   | (unless its submit went unanswered: then unknown, BrokerUnavailable)  |
| modify_order      | PUT /orders/regular/{id} with the new total quantity                  |
| list_orders       | GET /orders, the lines whose tag is ours                              |
| list_open_orders  | the same, kept to Kite's open statuses                                |
| list_fills        | GET /trades (+ GET /orders to map order ids to tags), from since_ns   |
| list_positions    | GET /portfolio/positions ``net``, the configured product             |

No duplicate after a lost answer. Kite's ``tag`` does not deduplicate, so the port's contract
does: a submit whose answer was lost raises ``BrokerUnavailable`` (unknown outcome); the order
stays in flight and reconciliation settles it from ``list_orders`` (matched by tag: it is there
or it is not). If the order path sends the same id again (its resend after the settle
threshold), an id Kite already answered for is refused at once, and for an id whose earlier
submit had an unknown outcome this adapter first looks the tag up in GET /orders and, when
Kite has it, refuses with ``DUPLICATE_CLIENT_ORDER_ID``
(the order path reads that as "the broker holds it") and reports its status, instead of
placing it twice. After a restart the order path's recovery reads ``list_orders`` before it
resends anything.

Order updates. Each postback (``{"type": "order", "data": ...}``) becomes an
``OrderStatusReport``; when an order's ``filled_quantity`` grew, its trades are fetched
(GET /orders/{id}/trades) and each new trade becomes a ``FillReport`` with Kite's trade id, so
a fill learnt here and from ``list_fills`` is one fill. Postbacks are handled in arrival order
on one worker thread (``kite-reports``), never on the websocket thread. A duplicated postback
yields a duplicate status report (the order path's merge is monotonic) and no new fill; a
dropped one is closed by the reconciliation's list calls. Every binary ticker message proves
the order stream alive: at most one ``OrderStreamHeartbeat`` per ``heartbeat_interval_s``.

Token expiry (HTTP 403, ``TokenException``, or the ticker's handshake refused):
``KiteTokenExpired`` (a ``BrokerUnavailable``: nothing was placed, the order stays in flight),
``on_token_expired`` is called once per token (the engine pauses entries and tells the
operator to run ``python -m tools.kite_login``), and nothing loops: each request is tried once,
the ticker waits for a new token.

Threads: port calls run on the broker gateway's workers (several at once); the caches are
behind one lock. Reports reach the sink on the ``kite-reports`` thread; ticks reach the tick
sink on the ticker thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.brokers.base import (
    AccountInfo,
    BrokerRejected,
    BrokerReport,
    BrokerUnavailable,
    ReportSink,
)
from adapters.brokers.kite.http import KiteCredentials, KiteRestClient
from adapters.brokers.kite.parsing import (
    KITE_OPEN_STATUSES,
    KiteInstrument,
    KiteTokenExpired,
    OrderMapping,
    Packet,
    account_is_live,
    fill_from_trade,
    login_instructions,
    market_order_fields,
    order_form,
    packet_to_tick,
    parse_instruments_csv,
    position_from_kite,
    status_from_order,
    stop_move_fields,
    tag_of_order,
)
from adapters.brokers.kite.stream import KiteTickerStream
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
    from domain.config import KiteConfig
    from domain.instruments import Instrument

__all__ = ["KiteBroker", "TickBatchSink", "kite_credentials"]

logger = logging.getLogger(__name__)

TickBatchSink = Callable[[list[Tick]], None]
HEARTBEAT_INTERVAL_S = 0.5
# How long after an unanswered submit an order missing from Kite's list may still appear (a
# request in flight past our timeout): a few request timeouts.
UNKNOWN_OUTCOME_WINDOW_FACTOR = 3.0
_FINISHED_STATUSES = ("COMPLETE", "CANCELLED", "REJECTED")


def kite_credentials(
    config: KiteConfig, environ: Mapping[str, str] | None = None
) -> KiteCredentials:
    """Credentials from the config, else the environment (``KITE_API_KEY``,
    ``KITE_ACCESS_TOKEN``).

    Raises:
        ValueError: no API key anywhere.
    """
    env = os.environ if environ is None else environ
    api_key = config.api_key.get_secret_value() if config.api_key else env.get("KITE_API_KEY", "")
    token = (
        config.access_token.get_secret_value()
        if config.access_token
        else env.get("KITE_ACCESS_TOKEN")
    )
    return KiteCredentials(
        api_key=api_key, access_token=token, access_token_file=config.access_token_file
    )


class _KnownOrder:
    __slots__ = ("client_order_id", "filled_quantity", "instrument", "order_type")

    def __init__(self, client_order_id: str, instrument: str, order_type: str) -> None:
        self.client_order_id = client_order_id
        self.instrument = instrument
        self.order_type = order_type
        self.filled_quantity = 0  # what the fills delivered so far cover


class KiteBroker:
    """The broker port over Kite Connect v3.

    Args:
        config: the ``kite`` settings.
        instruments: the engine's instruments by symbol.
        clock: dates reports and ticks.
        credentials: the API key and token source (``kite_credentials(config)`` when None).
        on_token_expired: told (once per token) that Kite refused the session.
        tick_sink: receives the ticks of each ticker message (the engine's feed door), on the
            ticker thread; None: no market data is handed on.
        start_ticker: open the ticker websocket at ``connect``.
    """

    name = "kite"
    # A working SL-M can be changed in place (PUT): made a MARKET order, a flatten's stop is its
    # exit (cancel the target, turn the stop: two requests per position instead of three); its
    # trigger moved, a tighten is one request and never leaves the position without a stop.
    stop_in_place = True

    def __init__(
        self,
        *,
        config: KiteConfig,
        instruments: Mapping[str, Instrument],
        clock: Clock,
        credentials: KiteCredentials | None = None,
        on_token_expired: Callable[[str], None] | None = None,
        tick_sink: TickBatchSink | None = None,
        start_ticker: bool = True,
    ) -> None:
        self._config = config
        self._instruments = dict(instruments)
        self._clock = clock
        self._credentials = credentials or kite_credentials(config)
        self._on_token_expired = on_token_expired
        self._tick_sink = tick_sink
        self._start_ticker = start_ticker
        self._rest = KiteRestClient(
            base_url=config.rest_base_url,
            credentials=self._credentials,
            timeout_s=config.request_timeout_s,
            on_token_expired=self._token_expired,
            on_token_accepted=self._token_accepted,
        )
        self._lock = threading.Lock()
        self._sink: ReportSink | None = None
        self._mappings: dict[str, OrderMapping] = {}
        self._symbol_by_kite: dict[tuple[str, str], str] = {}
        self._symbol_by_token: dict[int, str] = {}
        self._orders: dict[str, _KnownOrder] = {}  # Kite order_id -> what we know
        self._order_id_by_client: dict[str, str] = {}
        # Client ids whose submit answer was lost -> when (clock monotonic ns): the order list
        # decides whether Kite has them; until it lists one, a cancel or modify is unknown too.
        self._unknown_outcome: dict[str, int] = {}
        self._seen_trades: set[str] = set()
        # Kite order ids without one of our tags (manual orders): their trades are not ours,
        # and knowing them spares list_fills a GET /orders on every run.
        self._foreign_order_ids: set[str] = set()
        self._reports: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._ticker: KiteTickerStream | None = None
        self._last_heartbeat = float("-inf")
        self._unknown_window_s = UNKNOWN_OUTCOME_WINDOW_FACTOR * config.request_timeout_s + 5.0
        self._reported_expired_token: str | None = None
        # Every token Kite refused (a late refusal of an old one must not pause again), and
        # whether the session is reported refused now (BrokerSessionChanged(valid=False)).
        self._refused_tokens: set[str] = set()
        self._session_refused = False
        self._closed = False
        self.account: AccountInfo | None = None
        self.foreign_orders_total = 0  # orders without one of our tags (manual ones)
        self.ticks_total = 0

    def __repr__(self) -> str:
        return f"KiteBroker(rest_base_url={self._config.rest_base_url!r})"

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> AccountInfo:
        """Check the session, read the account and the instruments, start the stream.

        Raises:
            KiteTokenExpired: the access token was refused.
            BrokerUnavailable: Kite did not answer.
            BrokerRejected: a configured instrument is not in Kite's instruments list.
        """
        profile = self._rest.get("/user/profile")
        margins = self._rest.get("/user/margins")
        account_id = str((profile or {}).get("user_id") or "")
        if not account_id:
            raise BrokerUnavailable("KITE_BAD_ANSWER: /user/profile has no user_id")
        self._load_instruments()
        self.account = AccountInfo(
            account_id=account_id,
            balance=_equity_net(margins),
            currency="INR",
            is_live=account_is_live(is_real_base=self._config.is_real_base, profile=profile),
        )
        self._start_threads()
        return self.account

    def set_report_sink(self, sink: ReportSink) -> None:
        self._sink = sink

    def set_tick_sink(self, sink: TickBatchSink | None) -> None:
        self._tick_sink = sink

    def close(self) -> None:
        self._closed = True
        if self._ticker is not None:
            self._ticker.stop()
        self._reports.put(None)
        if self._worker is not None:
            self._worker.join(5.0)
        self._rest.close()

    @property
    def ticker(self) -> KiteTickerStream | None:
        return self._ticker

    @property
    def token_expired(self) -> bool:
        return self._rest.token_expired

    # ------------------------------------------------------------------ requests
    def submit_order(self, request: OrderRequest) -> None:
        """Place ``request`` (POST /orders/regular). See the module doc for the duplicate rule.

        Raises:
            BrokerRejected: refused before sending (unknown instrument, unmappable id, bad
                quantity) or by Kite; ``DUPLICATE_CLIENT_ORDER_ID`` when Kite already holds it.
            BrokerUnavailable: no answer (the outcome is unknown); ``KiteTokenExpired``.
            BrokerRateLimited: Kite's 429 (not placed).
        """
        cid = request.client_order_id
        mapping = self._mapping(request.instrument, cid)
        form = order_form(request, mapping)  # refuses what cannot be sent, before any I/O
        with self._lock:
            placed_as = self._order_id_by_client.get(cid)
            unknown = cid in self._unknown_outcome
        if placed_as is not None:
            # Kite answered with an order id for this tag already: never a second order.
            raise BrokerRejected(
                f"DUPLICATE_CLIENT_ORDER_ID: client_order_id={cid} was placed as Kite order "
                f"{placed_as}",
                client_order_id=cid,
            )
        if unknown:
            existing = self._find_by_client_id(cid)
            if existing is not None:
                self._emit(existing)
                raise BrokerRejected(
                    f"DUPLICATE_CLIENT_ORDER_ID: client_order_id={cid} Kite already holds it "
                    f"as order {existing.broker_order_id} ({existing.status.value})",
                    client_order_id=cid,
                )
        try:
            data = self._rest.post("/orders/regular", form, client_order_id=cid)
        except KiteTokenExpired:
            raise
        except BrokerUnavailable:
            with self._lock:
                self._unknown_outcome[cid] = self._clock.monotonic_ns()
            raise
        order_id = str((data or {}).get("order_id") or "")
        if not order_id:
            with self._lock:
                self._unknown_outcome[cid] = self._clock.monotonic_ns()
            raise BrokerUnavailable(
                f"KITE_BAD_ANSWER: POST /orders/regular for {cid} returned no order_id",
                client_order_id=cid,
            )
        with self._lock:
            self._unknown_outcome.pop(cid, None)
            self._remember(order_id, cid, request.instrument, form["order_type"])

    def cancel_order(self, client_order_id: str) -> None:
        """Cancel (DELETE). An order Kite does not have, or one that has finished: a no-op.

        Raises:
            BrokerRejected: Kite refused to cancel a working order.
            BrokerUnavailable: no answer; ``KiteTokenExpired``.
            BrokerRateLimited: Kite's 429.
        """
        order_id = self._order_id(client_order_id)
        if order_id is None:
            self._raise_if_outcome_unknown(client_order_id, "cancel")
            return
        try:
            self._rest.delete(f"/orders/regular/{order_id}", client_order_id=client_order_id)
        except BrokerRejected:
            if self._has_finished(order_id):
                return
            raise

    def modify_order(
        self,
        client_order_id: str,
        *,
        quantity: int,
        to_market: bool = False,
        trigger_price: Decimal | None = None,
    ) -> None:
        """Change the total quantity of a working order (PUT); ``to_market``: make it a
        MARKET order too (a flatten's SL-M stop becomes its exit); ``trigger_price``: move an
        SL-M stop's trigger (a tighten). MARKET and SL-M carry ``market_protection``.

        Raises:
            BrokerRejected: unknown order, a quantity that is not whole lots, or Kite refused.
            BrokerUnavailable, BrokerRateLimited: as for submit.
        """
        order_id = self._order_id(client_order_id)
        if order_id is None:
            self._raise_if_outcome_unknown(client_order_id, "modify")
            raise BrokerRejected(
                f"UNKNOWN_ORDER: client_order_id={client_order_id} is not at Kite",
                client_order_id=client_order_id,
            )
        with self._lock:
            known = self._orders.get(order_id)
        form = {"quantity": str(quantity)}
        if known is not None:
            mapping = self._mapping(known.instrument, client_order_id)
            if quantity <= 0 or quantity % mapping.lot_size:
                raise BrokerRejected(
                    f"INVALID_QUANTITY: quantity={quantity} is not a positive multiple of the "
                    f"lot size {mapping.lot_size}",
                    client_order_id=client_order_id,
                )
            form["order_type"] = known.order_type
            if to_market:
                form.update(market_order_fields(mapping))
            elif trigger_price is not None:
                form.update(stop_move_fields(mapping, trigger_price))
        elif to_market or trigger_price is not None:
            raise BrokerRejected(
                f"UNKNOWN_ORDER_TYPE: {client_order_id} is not in this session's order book; "
                "its stop is cancelled (or replaced) instead",
                client_order_id=client_order_id,
            )
        self._rest.put(f"/orders/regular/{order_id}", form, client_order_id=client_order_id)
        if to_market:
            with self._lock:
                if (current := self._orders.get(order_id)) is not None:
                    current.order_type = "MARKET"

    # ------------------------------------------------------------------ lists
    def list_orders(self) -> list[OrderStatusReport]:
        return [report for report, _ in self._order_lines()]

    def list_open_orders(self) -> list[OrderStatusReport]:
        return [report for report, status in self._order_lines() if status in KITE_OPEN_STATUSES]

    def list_fills(self, since_ns: int | None = None) -> list[FillReport]:
        trades = self._rest.get("/trades") or []
        now = self._clock.now_ns()
        order_ids = {str(trade.get("order_id")) for trade in trades if isinstance(trade, dict)}
        with self._lock:
            missing = order_ids - self._orders.keys() - self._foreign_order_ids
        if missing:
            self._order_lines()  # learns the tags of orders placed before this process
        fills: list[FillReport] = []
        for trade in trades:
            if not isinstance(trade, dict):
                continue
            with self._lock:
                known = self._orders.get(str(trade.get("order_id")))
            if known is None:
                continue  # not one of ours
            try:
                fill = fill_from_trade(
                    trade, known.instrument, client_order_id=known.client_order_id, now_ns=now
                )
            except ValueError as error:
                logger.warning("kite: unusable trade skipped: %s", error)
                continue
            if since_ns is None or fill.ts_event >= since_ns:
                fills.append(fill)
        fills.sort(key=lambda fill: fill.ts_event)
        return fills

    def list_positions(self) -> list[PositionReport]:
        data = self._rest.get("/portfolio/positions") or {}
        now = self._clock.now_ns()
        reports: list[PositionReport] = []
        for position in data.get("net") or []:
            if not isinstance(position, dict):
                continue
            if position.get("product") not in (None, self._config.product):
                continue
            symbol = self._symbol_by_kite.get(
                (str(position.get("exchange")), str(position.get("tradingsymbol")))
            )
            if symbol is None:
                continue  # not an instrument this engine trades
            reports.append(position_from_kite(position, symbol, now))
        return reports

    # ------------------------------------------------------------------ optional hooks
    def on_tick(self, tick: Tick) -> None:
        """Kite's prices are its own."""

    def on_validated_tick(self, tick: Tick) -> None:
        """Kite's prices are its own."""

    def on_time(self, now_ns: int) -> None:
        """Kite keeps its own time."""

    def on_leadership(self, is_leader: bool, epoch: int) -> None:
        """Kite's books are Kite's."""

    def last_trade_prices(self) -> dict[str, Decimal]:
        return {}

    # ------------------------------------------------------------------ internals
    def _mapping(self, symbol: str, client_order_id: str | None) -> OrderMapping:
        mapping = self._mappings.get(symbol)
        if mapping is None:
            raise BrokerRejected(
                f"UNKNOWN_INSTRUMENT: {symbol!r} is not mapped to a Kite instrument "
                f"(connect first; configured: {sorted(self._mappings)})",
                client_order_id=client_order_id,
            )
        return mapping

    def _load_instruments(self) -> None:
        wanted: dict[str, tuple[str, str]] = {}
        for symbol in self._instruments:
            listed = self._config.instruments.get(symbol)
            exchange = listed.exchange if listed else "NSE"
            tradingsymbol = (listed.tradingsymbol if listed else None) or symbol
            wanted[symbol] = (exchange, tradingsymbol)
        catalogue: dict[tuple[str, str], KiteInstrument] = {}
        for exchange in sorted({exchange for exchange, _ in wanted.values()}):
            catalogue.update(parse_instruments_csv(self._rest.get_text(f"/instruments/{exchange}")))
        missing = sorted(symbol for symbol, key in wanted.items() if key not in catalogue)
        if missing:
            raise BrokerRejected(
                f"KITE_UNKNOWN_INSTRUMENTS: {missing} are not in Kite's instruments list "
                f"(as {[':'.join(wanted[s]) for s in missing]}); set kite.instruments"
            )
        for symbol, key in wanted.items():
            row = catalogue[key]
            configured = self._instruments[symbol]
            if configured.lot_size != row.lot_size or configured.tick_size != row.tick_size:
                logger.warning(
                    "kite: %s lot/tick size %d/%s differs from the configured %d/%s; Kite's "
                    "are used for orders",
                    symbol,
                    row.lot_size,
                    row.tick_size,
                    configured.lot_size,
                    configured.tick_size,
                )
            self._mappings[symbol] = OrderMapping(
                exchange=row.exchange,
                tradingsymbol=row.tradingsymbol,
                lot_size=row.lot_size,
                product=self._config.product,
                market_protection=self._config.market_protection,
            )
            self._symbol_by_kite[key] = symbol
            self._symbol_by_token[row.instrument_token] = symbol

    def _start_threads(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._report_loop, name="kite-reports", daemon=True
            )
            self._worker.start()
        if self._ticker is None and self._start_ticker:
            self._ticker = KiteTickerStream(
                ws_base_url=self._config.ws_base_url,
                credentials=self._credentials,
                tokens=list(self._symbol_by_token),
                mode=self._config.ticker_mode,
                on_packets=self._on_packets,
                on_order_update=lambda data: self._reports.put(("order", data)),
                on_alive=self._on_alive,
                on_token_expired=self._token_expired,
                now_ns=self._clock.now_ns,
                backoff_initial_s=self._config.ticker_backoff_initial_s,
                backoff_max_s=self._config.ticker_backoff_max_s,
                silence_timeout_s=self._config.ticker_silence_timeout_s,
                open_timeout_s=self._config.request_timeout_s,
            )
            self._ticker.start()

    def _remember(
        self, order_id: str, client_order_id: str, instrument: str, order_type: str
    ) -> None:
        # Under self._lock.
        if order_id not in self._orders:
            self._orders[order_id] = _KnownOrder(client_order_id, instrument, order_type)
        self._order_id_by_client[client_order_id] = order_id

    def _order_lines(self) -> list[tuple[OrderStatusReport, str]]:
        data = self._rest.get("/orders") or []
        now = self._clock.now_ns()
        lines: list[tuple[OrderStatusReport, str]] = []
        for order in data:
            if not isinstance(order, dict):
                continue
            line = self._map_order(order, now)
            if line is not None:
                lines.append((line, str(order.get("status") or "").upper()))
        return lines

    def _map_order(self, order: Mapping[str, Any], now: int) -> OrderStatusReport | None:
        client_order_id = tag_of_order(order)
        if client_order_id is None:
            self.foreign_orders_total += 1
            if order.get("order_id"):
                with self._lock:
                    self._foreign_order_ids.add(str(order["order_id"]))
            return None
        symbol = self._symbol_by_kite.get(
            (str(order.get("exchange")), str(order.get("tradingsymbol")))
        ) or self._symbol_by_token.get(_int(order.get("instrument_token")))
        if symbol is None:
            return None
        order_id = str(order.get("order_id") or "")
        if order_id:
            with self._lock:
                self._remember(order_id, client_order_id, symbol, str(order.get("order_type")))
        return status_from_order(order, symbol, client_order_id=client_order_id, now_ns=now)

    def _find_by_client_id(self, client_order_id: str) -> OrderStatusReport | None:
        for report, _ in self._order_lines():
            if report.client_order_id == client_order_id:
                return report
        return None

    def _order_id(self, client_order_id: str) -> str | None:
        with self._lock:
            order_id = self._order_id_by_client.get(client_order_id)
        if order_id is not None:
            return order_id
        found = self._find_by_client_id(client_order_id)
        return found.broker_order_id if found is not None else None

    def _raise_if_outcome_unknown(self, client_order_id: str, what: str) -> None:
        # Its submit went unanswered and Kite does not list it yet: it may still appear, so
        # "nothing to cancel" would be a guess. Unknown; the order path asks again later.
        with self._lock:
            since = self._unknown_outcome.get(client_order_id)
        # Past the window, Kite's list not showing it is conclusive: it was never placed.
        elapsed_s = (self._clock.monotonic_ns() - since) / 1e9 if since is not None else None
        if elapsed_s is not None and elapsed_s < self._unknown_window_s:
            raise BrokerUnavailable(
                f"KITE_ORDER_NOT_LISTED_YET: cannot {what} {client_order_id}: its submit had no "
                "answer and GET /orders does not list it",
                client_order_id=client_order_id,
            )

    def _has_finished(self, order_id: str) -> bool:
        history = self._rest.get(f"/orders/{order_id}") or []
        if not history or not isinstance(history[-1], dict):
            return False
        return str(history[-1].get("status") or "").upper().startswith(_FINISHED_STATUSES)

    def _token_expired(self, detail: str, token: str) -> None:
        # The REST side and the ticker both notice: the operator is told once per refused
        # token (the one the request carried, not whatever the file holds by now).
        with self._lock:
            first = token not in self._refused_tokens
            self._refused_tokens.add(token)
            self._reported_expired_token = token
            report = first and not self._session_refused
            self._session_refused = self._session_refused or first
        if report:
            # Through the report queue, in order with the order updates: the order actor
            # pauses entries (BROKER_AUTH) with what to do, until a new token works.
            self._reports.put(("session", (False, login_instructions(detail))))
        if first and self._on_token_expired is not None:
            self._on_token_expired(detail)

    def _token_accepted(self, token: str) -> None:
        if not self._session_refused:  # every successful request: the usual case, no lock
            return
        with self._lock:
            if not self._session_refused or token in self._refused_tokens:
                return
            self._session_refused = False
        self._reports.put(("session", (True, "Kite accepted a new access token")))

    # ------------------------------------------------------------------ stream callbacks
    def _on_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self._last_heartbeat = now
            self._reports.put(("heartbeat", self._clock.now_ns()))

    def _on_packets(self, packets: tuple[Packet, ...], now_ns: int) -> None:
        sink = self._tick_sink
        if sink is None:
            return
        ticks = []
        for packet in packets:
            symbol = self._symbol_by_token.get(packet.instrument_token)
            if symbol is None:
                continue
            if self._config.ticker_mode == "full" and packet.mode in ("ltp", "quote"):
                # Sent before our mode message took effect: no depth, so no real bid and ask.
                continue
            tick = packet_to_tick(packet, symbol, now_ns=now_ns)
            if tick is not None:
                ticks.append(tick)
        if ticks:
            self.ticks_total += len(ticks)
            sink(ticks)

    def _report_loop(self) -> None:
        while True:
            item = self._reports.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "heartbeat":
                    self._emit(OrderStreamHeartbeat(ts_event=payload))
                elif kind == "session":
                    valid, detail = payload
                    self._emit(
                        BrokerSessionChanged(
                            valid=valid, detail=detail, ts_event=self._clock.now_ns()
                        )
                    )
                else:
                    self._on_order_update(payload)
            except Exception:
                logger.exception(
                    "kite: an order update could not be handled; reconciliation will settle it"
                )

    def _on_order_update(self, data: dict[str, Any]) -> None:
        report = self._map_order(data, self._clock.now_ns())
        if report is None:
            return
        order_id = report.broker_order_id
        with self._lock:
            known = self._orders.get(order_id)
            grew = known is not None and report.filled_quantity > known.filled_quantity
        if grew and known is not None:
            try:
                trades = self._rest.get(f"/orders/{order_id}/trades") or []
            except BrokerUnavailable as error:
                # The next postback or the reconciliation's list_fills brings them.
                logger.warning("kite: trades of %s not fetched: %s", order_id, error)
                trades = []
            now = self._clock.now_ns()
            covered = 0
            for trade in trades:
                if not isinstance(trade, dict):
                    continue
                try:
                    fill = fill_from_trade(
                        trade, known.instrument, client_order_id=known.client_order_id, now_ns=now
                    )
                except ValueError as error:
                    logger.warning("kite: unusable trade skipped: %s", error)
                    continue
                covered += fill.quantity
                with self._lock:
                    new = fill.trade_id not in self._seen_trades
                    self._seen_trades.add(fill.trade_id)
                if new:
                    self._emit(fill)
            with self._lock:
                known.filled_quantity = max(known.filled_quantity, covered)
        self._emit(report)

    def _emit(self, report: BrokerReport) -> None:
        sink = self._sink
        if sink is None or self._closed:
            return
        try:
            sink(report)
        except Exception:
            logger.exception("kite: the report sink raised; the next report still goes")


def _equity_net(margins: object) -> Decimal:
    if isinstance(margins, dict):
        equity = margins.get("equity")
        if isinstance(equity, dict):
            for key in ("net",):
                value = equity.get(key)
                if isinstance(value, int | float | str):
                    try:
                        return Decimal(str(value))
                    except ArithmeticError:
                        break
    return Decimal(0)


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
