"""The fake Kite Connect v3 server: REST and the ticker websocket on one aiohttp port.

The server runs its own asyncio loop on a daemon thread (``FakeKite.start``); tests call the
Python API from their own thread. Every piece of market and order state lives in
``KiteMarket`` behind one ``threading.Lock``; no handler awaits while holding it. Messages to a
websocket go through that socket's queue, so ticks and postbacks leave in the order made.

What a request goes through, in order (``_gate``): the request log, the injected faults (429
and 5xx bursts), the ``X-Kite-Version: 3`` header, the ``Authorization`` header (except the
session exchange), Kite's rate limits, then a held answer (timeouts) and the handler. Any
exception in a handler becomes a 500 ``GeneralException`` envelope, never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.clock import WallClock
from domain.clock import Clock, ManualClock
from tools.fake_kite.market import (
    DEFAULT_INSTRUMENTS,
    IST,
    KiteInstrument,
    KiteMarket,
    MarketView,
    OrderInputError,
    OrderStateError,
    kite_timestamp,
)
from tools.fake_kite.wire import HEARTBEAT, MODES, encode_frame, encode_packet, instruments_csv

__all__ = ["FakeKite", "RateLimits", "RequestRecord"]

TOKEN_ERROR = "Incorrect `api_key` or `access_token`."
_HTTP_FOR_ERROR = {
    "TokenException": 403,
    "PermissionException": 403,
    "InputException": 400,
    "OrderException": 400,
    "NetworkException": 503,
    "GeneralException": 500,
}
_ERROR_FOR_5XX = {500: "GeneralException", 502: "NetworkException", 503: "NetworkException",
                  504: "NetworkException"}  # fmt: skip
_NS = 1_000_000_000
_CATEGORIES = ("order", "quote", "other")


class KiteError(Exception):
    """An answer in Kite's error envelope."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or _HTTP_FOR_ERROR[error_type]


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """Kite's published request limits; ``None`` switches one off.

    Attributes:
        orders_per_second: order place/modify/cancel requests (Kite: 10, account-wide).
        orders_per_minute: the same, per minute (200, as issue 9 states it; Kite's forum
            answers of late say 400: the stricter figure keeps the engine's queue honest).
        orders_per_day: the same, per day (Kite: 5000 across segments and varieties).
        quotes_per_second: ``/quote`` requests (Kite: 1).
        others_per_second: every other endpoint (Kite: 10).
    """

    orders_per_second: int | None = 10
    orders_per_minute: int | None = 200
    orders_per_day: int | None = 5000
    quotes_per_second: int | None = 1
    others_per_second: int | None = 10

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(
            orders_per_second=None,
            orders_per_minute=None,
            orders_per_day=None,
            quotes_per_second=None,
            others_per_second=None,
        )


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request the fake received (admin ``/_fake/`` calls are not logged).

    Attributes:
        method, path: as received (path without the query).
        category: ``order`` (place/modify/cancel), ``quote`` or ``other``.
        status: the HTTP status answered.
        error_type: Kite's ``error_type`` when the answer was an error, else ``None``.
        monotonic_ns: the rate clock's reading when it arrived (what the limits count on).
        ts_ns: the market clock's ``now_ns`` when it arrived.
    """

    method: str
    path: str
    category: str
    status: int
    error_type: str | None
    monotonic_ns: int
    ts_ns: int


@dataclass
class _Burst:
    """An injected fault that hits the next ``remaining`` requests of a category."""

    remaining: int
    category: str | None
    status: int = 0
    seconds: float = 0.0
    placed: bool = True
    message: str = ""

    def takes(self, category: str) -> bool:
        return self.remaining > 0 and (self.category is None or self.category == category)


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    request: web.Request
    user_id: str
    access_token: str
    queue: asyncio.Queue[bytes | str | None]
    modes: dict[int, str] = field(default_factory=dict)


def _envelope(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def _error(error: KiteError) -> web.Response:
    return web.json_response(
        {
            "status": "error",
            "message": error.message,
            "error_type": error.error_type,
            "data": None,
        },
        status=error.status,
    )


def _category(method: str, path: str) -> str:
    if path.startswith("/orders/") and method in ("POST", "PUT", "DELETE"):
        return "order"
    if path.startswith("/quote"):
        return "quote"
    return "other"


class FakeKite:
    """A local Kite Connect v3 server (see the package docstring for the whole API).

    Args:
        seed: seed of the market's random walk.
        clock: the market clock (order and trade timestamps, ticks); a ``ManualClock`` in
            tests, moved by ``advance``. Default the wall clock.
        rate_clock: the clock the rate limits and the request log count on; default the wall
            clock's monotonic time (clients send in real time). Tests of the limits pass a
            ``ManualClock`` so that "eleven orders in one second" is exact.
        instruments: the instrument list (default ``DEFAULT_INSTRUMENTS``: INFY, RELIANCE,
            SBIN on NSE and the NIFTY 50 index).
        api_key, api_secret, user_id: the app's credentials and the account's user id.
        account_type: ``LIVE`` or ``DEMO``; the profile reports it (``meta.account_type``)
            and margins report ``equity.enabled`` true only for LIVE.
        rate_limits: Kite's published limits (``RateLimits()``); ``RateLimits.unlimited()``
            switches them off.
        step_interval_s: when set, the server steps the market itself at this real-time pace
            (demos); tests leave it ``None`` and call ``advance``.
        daily_token_expiry: access tokens expire at the first 06:00 IST (market clock) after
            they were issued, checked at each ``advance``, as Kite's do. Off by default, so a
            test that moves a manual clock far does not log itself out.
        heartbeat_interval_s: real-time pace of the 1-byte ticker heartbeats.
        volatility_bps: the walk's per-step standard deviation, basis points.
        opening_cash: the margins' opening balance, rupees.
        host, port: where to listen (port 0: an ephemeral port).
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        clock: Clock | None = None,
        rate_clock: Clock | None = None,
        instruments: Sequence[KiteInstrument] = DEFAULT_INSTRUMENTS,
        api_key: str = "fake_api_key",
        api_secret: str = "fake_api_secret",
        user_id: str = "FK0001",
        account_type: str = "LIVE",
        rate_limits: RateLimits | None = None,
        step_interval_s: float | None = None,
        daily_token_expiry: bool = False,
        heartbeat_interval_s: float = 1.0,
        volatility_bps: float = 2.0,
        opening_cash: Decimal = Decimal("1000000"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.clock: Clock = clock or WallClock()
        self.rate_clock: Clock = rate_clock or WallClock()
        self.api_key = api_key
        self.api_secret = api_secret
        self.user_id = user_id
        self.account_type = _account_type(account_type)
        self.rate_limits = rate_limits or RateLimits()
        self.step_interval_s = step_interval_s
        self.daily_token_expiry = daily_token_expiry
        self.heartbeat_interval_s = heartbeat_interval_s
        self.opening_cash = opening_cash
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self.market = KiteMarket(
            instruments,
            seed=seed,
            volatility_bps=volatility_bps,
            user_id=user_id,
            now_ns=self.clock.now_ns(),
        )
        self._request_tokens: set[str] = set()
        self._access_tokens: dict[str, int] = {}  # token -> market time it was issued
        self._accepted: dict[str, collections.deque[int]] = {
            category: collections.deque() for category in _CATEGORIES
        }
        self._orders_today: int = 0
        self.requests: list[RequestRecord] = []
        self.postbacks_sent: list[dict[str, Any]] = []
        self.postbacks_dropped: list[dict[str, Any]] = []
        self._fail_bursts: list[_Burst] = []
        self._limit_bursts: list[_Burst] = []
        self._holds: list[_Burst] = []
        self._drop_postbacks = 0
        self._duplicate_postbacks = 0
        self._reject_reasons: list[str] = []
        self._modify_refusals: list[str] = []
        self._sockets: list[_Socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port: int | None = None

    # -----------------------------------------------------------------------------------------
    # LIFECYCLE
    # -----------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving on a thread of its own and return the base URL (``http://host:port``).

        Raises:
            RuntimeError: already started, or the server did not come up within ``timeout_s``
                (the cause chained).
        """
        if self._thread is not None or self._started.is_set():
            raise RuntimeError("fake kite: already started (an instance serves once)")
        self._thread = threading.Thread(target=self._run, name="fake-kite", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"fake kite: not serving after {timeout_s} s")
        if self._start_error is not None:
            raise RuntimeError("fake kite: could not start") from self._start_error
        return self.base_url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every websocket, stop serving and join the thread. Idempotent."""
        loop, stop_event, thread = self._loop, self._stop_event, self._thread
        if loop is None or stop_event is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> FakeKite:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The REST root, for ``KiteConnect(root=...)``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The ticker root, for ``KiteTicker(root=...)`` (it appends ``?api_key=..``)."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def login_url(self) -> str:
        """The login page's stand-in: redirects (or answers) with a fresh request token."""
        return f"{self.base_url}/connect/login?v=3&api_key={self.api_key}"

    # -----------------------------------------------------------------------------------------
    # SESSIONS
    # -----------------------------------------------------------------------------------------

    def issue_request_token(self) -> str:
        """Return a one-use request token, as Kite's login redirect would carry."""
        token = secrets.token_hex(16)
        with self._lock:
            self._request_tokens.add(token)
        return token

    def checksum(self, request_token: str) -> str:
        """sha256(api_key + request_token + api_secret), hex: what ``/session/token`` wants."""
        return hashlib.sha256((self.api_key + request_token + self.api_secret).encode()).hexdigest()

    def create_session(self) -> str:
        """Log in without HTTP and return a valid access token (test convenience)."""
        token = secrets.token_hex(16)
        with self._lock:
            self._access_tokens[token] = self.clock.now_ns()
        return token

    # -----------------------------------------------------------------------------------------
    # MARKET
    # -----------------------------------------------------------------------------------------

    def advance(self, seconds: float = 0.0) -> None:
        """Move a manual market clock by ``seconds`` (if it is one), then step the market once:
        new quotes, matching, ticks to every subscribed socket, postbacks for order changes.
        With ``daily_token_expiry``, tokens issued before the last 06:00 IST expire first."""
        if seconds and isinstance(self.clock, ManualClock):
            self.clock.advance(seconds)
        now_ns = self.clock.now_ns()
        expired: list[_Socket] = []
        with self._lock:
            if self.daily_token_expiry:
                for token, issued_ns in list(self._access_tokens.items()):
                    if now_ns >= _next_six_am_ist_ns(issued_ns):
                        del self._access_tokens[token]
                expired = [s for s in self._sockets if s.access_token not in self._access_tokens]
            self.market.step(now_ns)
            updates = self.market.drain_updates()
            frames = self._tick_frames_locked()
        for socket in expired:
            self._close_socket(socket, "token expired")
        self._dispatch(frames, updates)

    def quote(self, key: str) -> dict[str, Any]:
        """The instrument's ``/quote`` entry now (``key``: ``NSE:INFY``), rupees."""
        with self._lock:
            return self.market.view(self.market.instruments[key]).as_quote()

    def market_view(self, instrument_token: int) -> MarketView:
        """What the ticker's next packet for ``instrument_token`` encodes, now."""
        with self._lock:
            return self.market.view(self.market.by_token[instrument_token])

    def orders(self) -> list[dict[str, Any]]:
        """``GET /orders`` as the fake would answer it now."""
        with self._lock:
            return [order.as_kite() for order in self.market.orders.values()]

    def trades(self) -> list[dict[str, Any]]:
        """``GET /trades`` as the fake would answer it now."""
        with self._lock:
            return [trade.as_kite() for trade in self.market.trades]

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        """``GET /portfolio/positions`` as the fake would answer it now."""
        with self._lock:
            return self.market.positions()

    # -----------------------------------------------------------------------------------------
    # FAULT KNOBS
    # -----------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 503, category: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``category``: ``order``, ``quote``,
        ``other``; default any) with ``status`` (500, 502, 503 or 504) and Kite's envelope
        (``GeneralException`` for 500, ``NetworkException`` otherwise). Nothing is done."""
        if status not in _ERROR_FOR_5XX:
            raise ValueError(f"fail_next: status={status} must be one of {sorted(_ERROR_FOR_5XX)}")
        with self._lock:
            self._fail_bursts.append(
                _Burst(remaining=_count(count), category=_check_category(category), status=status)
            )

    def rate_limit_next(self, count: int = 1, *, category: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``category``) 429 ``NetworkException``
        "Too many requests", whatever the real limits say. Nothing is done."""
        with self._lock:
            self._limit_bursts.append(
                _Burst(remaining=_count(count), category=_check_category(category), status=429)
            )

    def hold_next(
        self,
        count: int = 1,
        *,
        seconds: float,
        placed: bool,
        category: str | None = "order",
    ) -> None:
        """Hold the answer to the next ``count`` requests (default: order requests) for
        ``seconds`` of real time, past the client's timeout.

        ``placed=True``: the request takes effect at once (the order is placed, modified or
        cancelled; postbacks go out) and only the answer is late. ``placed=False``: nothing
        happens and the late answer is a 504 ``NetworkException``.
        """
        if seconds <= 0:
            raise ValueError(f"hold_next: seconds={seconds} must be positive")
        with self._lock:
            self._holds.append(
                _Burst(
                    remaining=_count(count),
                    category=_check_category(category),
                    seconds=seconds,
                    placed=placed,
                )
            )

    def drop_postbacks(self, count: int = 1) -> None:
        """Send none of the next ``count`` order postbacks (they are logged as dropped)."""
        with self._lock:
            self._drop_postbacks += _count(count)

    def duplicate_postbacks(self, count: int = 1) -> None:
        """Send each of the next ``count`` order postbacks twice."""
        with self._lock:
            self._duplicate_postbacks += _count(count)

    def reject_next(self, count: int = 1, *, reason: str = "RMS: margin exceeds") -> None:
        """The next ``count`` orders placed are accepted by the API (an order id comes back),
        then REJECTED with ``reason`` as ``status_message``, as Kite's RMS does."""
        with self._lock:
            self._reject_reasons.extend([reason] * _count(count))

    def refuse_modifications(
        self, count: int = 1, *, reason: str = "Order cannot be modified as it is being processed."
    ) -> None:
        """Refuse the next ``count`` modifications (``PUT /orders/regular/{id}``) with a 400
        ``InputException`` carrying ``reason``, as Kite does for an order its exchange is
        busy with. Nothing is changed."""
        with self._lock:
            self._modify_refusals.extend([reason] * _count(count))

    def set_partial_fill(self, quantity: int | None) -> None:
        """Fill at most ``quantity`` per order per matching pass; ``None`` fills in full."""
        if quantity is not None and quantity <= 0:
            raise ValueError(f"set_partial_fill: quantity={quantity} must be positive or None")
        with self._lock:
            self.market.partial_fill_quantity = quantity

    def expire_token(self) -> None:
        """Expire every access token (as at 06:00): every further call answers 403
        ``TokenException`` "Incorrect `api_key` or `access_token`.", websockets close and
        cannot reconnect with the old token. A new ``/session/token`` exchange works."""
        with self._lock:
            self._access_tokens.clear()
            sockets = list(self._sockets)
        for socket in sockets:
            self._close_socket(socket, "token expired")

    def drop_sockets(self, *, abrupt: bool = False) -> int:
        """Close every ticker websocket from the server side; return how many were open.

        ``abrupt=False`` sends a close frame (1001); ``abrupt=True`` cuts the TCP connection
        with no close frame, as a network failure would.
        """
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            if abrupt:
                self._abort_socket(socket)
            else:
                self._close_socket(socket, "dropped by the fake")
        return len(sockets)

    def send_ws_error(self, message: str) -> None:
        """Send ``{"type":"error","data":message}`` to every ticker websocket."""
        with self._lock:
            sockets = list(self._sockets)
        text = json.dumps({"type": "error", "data": message})
        for socket in sockets:
            self._enqueue(socket, text)

    def set_account_type(self, account_type: str) -> None:
        """``LIVE`` or ``DEMO``: what the profile and margins report from now on."""
        with self._lock:
            self.account_type = _account_type(account_type)

    def clear_faults(self) -> None:
        """Cancel every pending injected fault (bursts, holds, postback faults, rejections,
        partial fills). Expired tokens stay expired."""
        with self._lock:
            self._fail_bursts.clear()
            self._limit_bursts.clear()
            self._holds.clear()
            self._drop_postbacks = 0
            self._duplicate_postbacks = 0
            self._reject_reasons.clear()
            self._modify_refusals.clear()
            self.market.partial_fill_quantity = None

    # -----------------------------------------------------------------------------------------
    # OBSERVATION
    # -----------------------------------------------------------------------------------------

    def request_log(self, category: str | None = None) -> list[RequestRecord]:
        """The requests received so far (of ``category``, default all), in arrival order."""
        with self._lock:
            return [item for item in self.requests if category in (None, item.category)]

    def order_requests_per_second_max(self) -> int:
        """Most order requests (place/modify/cancel) that arrived within any one second."""
        return _max_in_window(self._times("order"), _NS)

    def order_requests_per_minute_max(self) -> int:
        """Most order requests that arrived within any one minute."""
        return _max_in_window(self._times("order"), 60 * _NS)

    def quote_requests_per_second_max(self) -> int:
        """Most ``/quote`` requests that arrived within any one second."""
        return _max_in_window(self._times("quote"), _NS)

    def socket_count(self) -> int:
        """Ticker websockets open now."""
        with self._lock:
            return len(self._sockets)

    def subscriptions(self) -> list[dict[int, str]]:
        """Each open socket's token -> mode map."""
        with self._lock:
            return [dict(socket.modes) for socket in self._sockets]

    def _times(self, category: str) -> list[int]:
        with self._lock:
            return sorted(item.monotonic_ns for item in self.requests if item.category == category)

    # -----------------------------------------------------------------------------------------
    # SERVER
    # -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to start(); the thread ends either way
            self._start_error = error
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        app = web.Application(middlewares=[self._gate])
        self._add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self.port = runner.addresses[0][1]
        tasks = [asyncio.create_task(self._heartbeats())]
        if self.step_interval_s is not None:
            tasks.append(asyncio.create_task(self._auto_step(self.step_interval_s)))
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            with self._lock:
                sockets = list(self._sockets)
            for socket in sockets:
                with contextlib.suppress(Exception):
                    await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
            await runner.cleanup()

    def _add_routes(self, app: web.Application) -> None:
        get, post, put, delete = (
            app.router.add_get,
            app.router.add_post,
            app.router.add_put,
            (app.router.add_delete),
        )
        get("/", self._ws_root)
        get("/ws", self._ws_handler)
        get("/connect/login", self._login)
        post("/session/token", self._session_create)
        delete("/session/token", self._session_delete)
        get("/user/profile", self._profile)
        get("/user/margins", self._margins)
        get("/user/margins/{segment}", self._margins)
        post("/orders/{variety}", self._place)
        put("/orders/{variety}/{order_id}", self._modify)
        delete("/orders/{variety}/{order_id}", self._cancel)
        get("/orders", self._orders)
        get("/orders/{order_id}", self._order_history)
        get("/orders/{order_id}/trades", self._order_trades)
        get("/trades", self._trades)
        get("/portfolio/positions", self._positions)
        get("/quote", self._quote)
        get("/quote/ltp", self._quote)
        get("/quote/ohlc", self._quote)
        get("/instruments", self._instruments)
        get("/instruments/{exchange}", self._instruments)
        get("/_fake/state", self._admin_state)
        get("/_fake/requests", self._admin_requests)
        post("/_fake/advance", self._admin_advance)
        post("/_fake/request_token", self._admin_request_token)
        post("/_fake/faults/{name}", self._admin_fault)

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_fake/") or path in ("/", "/ws", "/connect/login"):
            return await handler(request)
        category = _category(request.method, path)
        arrived_ns = self.rate_clock.monotonic_ns()
        ts_ns = self.clock.now_ns()
        hold: _Burst | None = None
        try:
            with self._lock:
                self._injected_fault_locked(category)
                self._check_headers_locked(request)
                self._check_rate_locked(category, arrived_ns)
                hold = _take(self._holds, category)
            if hold is not None and not hold.placed:
                await asyncio.sleep(hold.seconds)
                raise KiteError("NetworkException", "Gateway timed out.", 504)
            response = await handler(request)
            if hold is not None:
                await asyncio.sleep(hold.seconds)
        except KiteError as error:
            response = _error(error)
        except web.HTTPException as error:
            response = _error(KiteError("GeneralException", error.reason, error.status))
        except Exception as error:  # never a traceback to a client
            response = _error(
                KiteError("GeneralException", f"fake kite: internal error: {error!r}")
            )
        error_type = response.headers.get("X-Fake-Error-Type")
        if error_type is None and response.status >= 400 and isinstance(response, web.Response):
            with contextlib.suppress(Exception):
                error_type = json.loads(response.text or "{}").get("error_type")
        with self._lock:
            self.requests.append(
                RequestRecord(
                    method=request.method,
                    path=path,
                    category=category,
                    status=response.status,
                    error_type=error_type,
                    monotonic_ns=arrived_ns,
                    ts_ns=ts_ns,
                )
            )
        return response

    def _injected_fault_locked(self, category: str) -> None:
        burst = _take(self._limit_bursts, category)
        if burst is not None:
            raise KiteError("NetworkException", "Too many requests", 429)
        burst = _take(self._fail_bursts, category)
        if burst is not None:
            messages = {500: "Internal server error.", 502: "Bad gateway.",
                        503: "Service unavailable.", 504: "Gateway timed out."}  # fmt: skip
            raise KiteError(_ERROR_FOR_5XX[burst.status], messages[burst.status], burst.status)

    def _check_headers_locked(self, request: web.Request) -> None:
        if request.headers.get("X-Kite-Version") != "3":
            raise KiteError(
                "InputException", "Missing or invalid `X-Kite-Version` header: 3 is required."
            )
        if request.path == "/session/token" and request.method == "POST":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        api_key, _, access_token = credentials.partition(":")
        if scheme != "token" or api_key != self.api_key or access_token not in self._access_tokens:
            raise KiteError("TokenException", TOKEN_ERROR)

    def _check_rate_locked(self, category: str, now_ns: int) -> None:
        limits = self.rate_limits
        if category == "order":
            windows = [(limits.orders_per_second, _NS), (limits.orders_per_minute, 60 * _NS)]
            if limits.orders_per_day is not None and self._orders_today >= limits.orders_per_day:
                raise KiteError("NetworkException", "Too many requests", 429)
        elif category == "quote":
            windows = [(limits.quotes_per_second, _NS)]
        else:
            windows = [(limits.others_per_second, _NS)]
        accepted = self._accepted[category]
        longest = max(window for _limit, window in windows)
        while accepted and accepted[0] <= now_ns - longest:
            accepted.popleft()
        for limit, window in windows:
            if limit is None:
                continue
            in_window = sum(1 for stamp in accepted if stamp > now_ns - window)
            if in_window >= limit:
                raise KiteError("NetworkException", "Too many requests", 429)
        accepted.append(now_ns)
        if category == "order":
            self._orders_today += 1

    # -----------------------------------------------------------------------------------------
    # REST HANDLERS
    # -----------------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("api_key") != self.api_key:
            return _error(KiteError("InputException", "Invalid `api_key`."))
        token = self.issue_request_token()
        redirect = request.query.get("redirect_url")
        if redirect:
            separator = "&" if "?" in redirect else "?"
            raise web.HTTPFound(
                f"{redirect}{separator}request_token={token}&action=login&status=success"
            )
        return web.json_response({"request_token": token, "action": "login", "status": "success"})

    async def _session_create(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        api_key = str(form.get("api_key", ""))
        request_token = str(form.get("request_token", ""))
        checksum = str(form.get("checksum", ""))
        if api_key != self.api_key:
            raise KiteError("TokenException", "Invalid `api_key`.")
        with self._lock:
            if request_token not in self._request_tokens:
                raise KiteError("TokenException", "Token is invalid or has expired.")
            if not secrets.compare_digest(checksum, self.checksum(request_token)):
                raise KiteError("TokenException", "Invalid `checksum`.")
            self._request_tokens.discard(request_token)
            access_token = secrets.token_hex(16)
            self._access_tokens[access_token] = self.clock.now_ns()
            profile = self._profile_locked()
        login_time = kite_timestamp(self.clock.now_ns())
        return _envelope(
            {
                **profile,
                "api_key": self.api_key,
                "access_token": access_token,
                "public_token": secrets.token_hex(8),
                "refresh_token": "",
                "enctoken": secrets.token_hex(8),
                "login_time": login_time,
            }
        )

    async def _session_delete(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token", "")
        with self._lock:
            self._access_tokens.pop(token, None)
        return _envelope(True)

    async def _profile(self, _request: web.Request) -> web.StreamResponse:
        with self._lock:
            return _envelope(self._profile_locked())

    def _profile_locked(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_type": "individual",
            "email": f"{self.user_id.lower()}@fake-kite.invalid",
            "user_name": "Fake Kite User",
            "user_shortname": "Fake",
            "broker": "ZERODHA",
            "exchanges": sorted({item.exchange for item in self.market.instruments.values()}),
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "meta": {"demat_consent": "physical", "account_type": self.account_type},
        }

    async def _margins(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            positions = self.market.positions()["net"]
            live = self.account_type == "LIVE"
        m2m = sum(Decimal(str(row["pnl"])) for row in positions)
        exposure = sum(
            abs(Decimal(str(row["quantity"])) * Decimal(str(row["last_price"]))) / 5
            for row in positions
        )
        cash = self.opening_cash
        equity = {
            "enabled": live,
            "net": float(cash + m2m - exposure),
            "available": {
                "adhoc_margin": 0.0,
                "cash": float(cash),
                "opening_balance": float(cash),
                "live_balance": float(cash + m2m - exposure),
                "collateral": 0.0,
                "intraday_payin": 0.0,
            },
            "utilised": {
                "debits": float(exposure),
                "exposure": float(exposure),
                "m2m_realised": 0.0,
                "m2m_unrealised": float(m2m),
                "option_premium": 0.0,
                "payout": 0.0,
                "span": 0.0,
                "holding_sales": 0.0,
                "turnover": 0.0,
                "liquid_collateral": 0.0,
                "stock_collateral": 0.0,
                "delivery": 0.0,
            },
        }
        commodity = {
            "enabled": False,
            "net": 0.0,
            "available": {key: 0.0 for key in equity["available"]},
            "utilised": {key: 0.0 for key in equity["utilised"]},
        }
        segment = request.match_info.get("segment")
        if segment is None:
            return _envelope({"equity": equity, "commodity": commodity})
        if segment == "equity":
            return _envelope(equity)
        if segment == "commodity":
            return _envelope(commodity)
        raise KiteError("InputException", f"Invalid segment {segment!r}: equity or commodity.")

    async def _place(self, request: web.Request) -> web.StreamResponse:
        _regular_only(request)
        fields = {key: str(value) for key, value in (await request.post()).items()}
        with self._lock:
            reject = self._reject_reasons[0] if self._reject_reasons else None
            try:
                order = self.market.place(fields, reject_reason=reject)
            except OrderInputError as error:
                raise KiteError("InputException", str(error)) from None
            if reject is not None:
                self._reject_reasons.pop(0)
            updates = self.market.drain_updates()
        self._dispatch([], updates)
        return _envelope({"order_id": order.order_id})

    async def _modify(self, request: web.Request) -> web.StreamResponse:
        _regular_only(request)
        fields = {key: str(value) for key, value in (await request.post()).items()}
        order_id = request.match_info["order_id"]
        with self._lock:
            if self._modify_refusals:
                raise KiteError("InputException", self._modify_refusals.pop(0))
            try:
                self.market.modify(order_id, fields)
            except (OrderInputError, OrderStateError) as error:
                raise KiteError("InputException", str(error)) from None
            updates = self.market.drain_updates()
        self._dispatch([], updates)
        return _envelope({"order_id": order_id})

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        _regular_only(request)
        order_id = request.match_info["order_id"]
        with self._lock:
            try:
                self.market.cancel(order_id)
            except OrderStateError as error:
                raise KiteError("InputException", str(error)) from None
            updates = self.market.drain_updates()
        self._dispatch([], updates)
        return _envelope({"order_id": order_id})

    async def _orders(self, _request: web.Request) -> web.StreamResponse:
        return _envelope(self.orders())

    async def _order_history(self, request: web.Request) -> web.StreamResponse:
        order_id = request.match_info["order_id"]
        with self._lock:
            order = self.market.orders.get(order_id)
            if order is None:
                raise KiteError("InputException", f"Couldn't find that `order_id` ({order_id}).")
            return _envelope(list(order.history))

    async def _order_trades(self, request: web.Request) -> web.StreamResponse:
        order_id = request.match_info["order_id"]
        with self._lock:
            if order_id not in self.market.orders:
                raise KiteError("InputException", f"Couldn't find that `order_id` ({order_id}).")
            return _envelope([trade.as_kite() for trade in self.market.order_trades(order_id)])

    async def _trades(self, _request: web.Request) -> web.StreamResponse:
        return _envelope(self.trades())

    async def _positions(self, _request: web.Request) -> web.StreamResponse:
        return _envelope(self.positions())

    async def _quote(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.getall("i", [])
        if not wanted:
            raise KiteError("InputException", "Missing `i`: one or more EXCHANGE:SYMBOL.")
        answer: dict[str, Any] = {}
        with self._lock:
            for key in wanted:
                instrument = self.market.instruments.get(key)
                if instrument is None and key.isdigit():
                    instrument = self.market.by_token.get(int(key))
                if instrument is None:
                    continue  # Kite leaves unknown instruments out
                full = self.market.view(instrument).as_quote()
                if request.path == "/quote/ltp":
                    full = {key: full[key] for key in ("instrument_token", "last_price")}
                elif request.path == "/quote/ohlc":
                    full = {key: full[key] for key in ("instrument_token", "last_price", "ohlc")}
                answer[key] = full
        return _envelope(answer)

    async def _instruments(self, request: web.Request) -> web.StreamResponse:
        exchange = request.match_info.get("exchange")
        with self._lock:
            items = [
                item
                for item in self.market.instruments.values()
                if exchange is None or item.exchange == exchange
            ]
            lasts = {key: str(tick.last) for key, tick in self.market.ticks.items()}
        return web.Response(text=instruments_csv(items, lasts), content_type="text/csv")

    # -----------------------------------------------------------------------------------------
    # ADMIN (/_fake/, for demos; tests use the Python methods)
    # -----------------------------------------------------------------------------------------

    _ADMIN_FAULTS = (
        "fail_next",
        "rate_limit_next",
        "hold_next",
        "drop_postbacks",
        "duplicate_postbacks",
        "reject_next",
        "refuse_modifications",
        "set_partial_fill",
        "expire_token",
        "drop_sockets",
        "send_ws_error",
        "set_account_type",
        "clear_faults",
    )

    async def _admin_state(self, _request: web.Request) -> web.StreamResponse:
        with self._lock:
            state = {
                "base_url": self.base_url,
                "ws_url": self.ws_url,
                "account_type": self.account_type,
                "orders": len(self.market.orders),
                "trades": len(self.market.trades),
                "requests": len(self.requests),
                "sockets": len(self._sockets),
                "postbacks_sent": len(self.postbacks_sent),
                "postbacks_dropped": len(self.postbacks_dropped),
                "now": kite_timestamp(self.clock.now_ns()),
            }
        return web.json_response(state)

    async def _admin_requests(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response([asdict(item) for item in self.request_log()])

    async def _admin_advance(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        seconds = body.get("seconds", 0.0)
        if not isinstance(seconds, int | float) or seconds < 0:
            return web.json_response({"error": "seconds must be a number >= 0"}, status=400)
        self.advance(float(seconds))
        return web.json_response({"now": kite_timestamp(self.clock.now_ns())})

    async def _admin_request_token(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"request_token": self.issue_request_token()})

    async def _admin_fault(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._ADMIN_FAULTS:
            return web.json_response(
                {"error": f"unknown fault {name!r}", "known": list(self._ADMIN_FAULTS)}, status=404
            )
        body = await _json_body(request)
        try:
            result = getattr(self, name)(**body)
        except (TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"ok": True, "result": result})

    # -----------------------------------------------------------------------------------------
    # TICKER
    # -----------------------------------------------------------------------------------------

    async def _ws_root(self, request: web.Request) -> web.StreamResponse:
        if web.WebSocketResponse().can_prepare(request).ok:
            return await self._ws_handler(request)
        return _error(KiteError("GeneralException", "Route not found", 404))

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        api_key = request.query.get("api_key", "")
        access_token = request.query.get("access_token", "")
        with self._lock:
            valid = api_key == self.api_key and access_token in self._access_tokens
        if not valid:
            return _error(KiteError("TokenException", TOKEN_ERROR))
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        socket = _Socket(
            ws=ws,
            request=request,
            user_id=self.user_id,
            access_token=access_token,
            queue=asyncio.Queue(),
        )
        with self._lock:
            self._sockets.append(socket)
        writer = asyncio.create_task(self._ws_writer(socket))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._ws_command(socket, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            with self._lock:
                if socket in self._sockets:
                    self._sockets.remove(socket)
            socket.queue.put_nowait(None)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _ws_writer(self, socket: _Socket) -> None:
        while True:
            payload = await socket.queue.get()
            if payload is None:
                return
            try:
                if isinstance(payload, bytes):
                    await socket.ws.send_bytes(payload)
                else:
                    await socket.ws.send_str(payload)
            except (ConnectionError, RuntimeError):
                return  # the socket is closing; its reader removes it

    def _ws_command(self, socket: _Socket, text: str) -> None:
        try:
            command = json.loads(text)
            action = command["a"]
            value = command["v"]
        except (ValueError, KeyError, TypeError):
            self._enqueue(socket, json.dumps({"type": "error", "data": f"Invalid message {text}"}))
            return
        with self._lock:
            if action == "subscribe":
                tokens = _known_tokens(value, self.market.by_token)
                for token in tokens:
                    socket.modes.setdefault(token, "quote")  # Kite's default mode
            elif action == "unsubscribe":
                tokens = []
                for token in _known_tokens(value, self.market.by_token):
                    socket.modes.pop(token, None)
            elif action == "mode" and isinstance(value, list) and len(value) == 2:
                mode, raw_tokens = value
                if mode not in MODES:
                    tokens = []
                    error = f"Invalid mode {mode!r}"
                else:
                    tokens = _known_tokens(raw_tokens, self.market.by_token)
                    for token in tokens:
                        socket.modes[token] = mode
                    error = ""
                if error:
                    self._enqueue(socket, json.dumps({"type": "error", "data": error}))
            else:
                self._enqueue(
                    socket, json.dumps({"type": "error", "data": f"Invalid action {action!r}"})
                )
                return
            frame = self._frame_locked(socket, tokens)
        if frame is not None:
            self._enqueue(socket, frame)

    def _frame_locked(self, socket: _Socket, tokens: Iterable[int]) -> bytes | None:
        packets = []
        for token in tokens:
            mode = socket.modes.get(token)
            if mode is not None:
                packets.append(encode_packet(self.market.view(self.market.by_token[token]), mode))
        return encode_frame(packets) if packets else None

    def _tick_frames_locked(self) -> list[tuple[_Socket, bytes]]:
        frames = []
        for socket in self._sockets:
            frame = self._frame_locked(socket, list(socket.modes))
            if frame is not None:
                frames.append((socket, frame))
        return frames

    def _dispatch(self, frames: list[tuple[_Socket, bytes]], updates: list[dict[str, Any]]) -> None:
        for socket, frame in frames:
            self._enqueue(socket, frame)
        for state in updates:
            with self._lock:
                sockets = list(self._sockets)
                if self._drop_postbacks > 0:
                    self._drop_postbacks -= 1
                    self.postbacks_dropped.append(state)
                    continue
                copies = 1
                if self._duplicate_postbacks > 0:
                    self._duplicate_postbacks -= 1
                    copies = 2
                self.postbacks_sent.extend([state] * copies)
            text = json.dumps({"type": "order", "id": "", "data": state})
            for socket in sockets:
                for _ in range(copies):
                    self._enqueue(socket, text)

    def _enqueue(self, socket: _Socket, payload: bytes | str) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended: nobody to send to
            loop.call_soon_threadsafe(socket.queue.put_nowait, payload)

    def _close_socket(self, socket: _Socket, reason: str) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            with contextlib.suppress(Exception):
                await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=reason.encode())

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop)

    def _abort_socket(self, socket: _Socket) -> None:
        loop = self._loop
        transport = socket.request.transport
        if loop is None or transport is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(transport.abort)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            with self._lock:
                sockets = list(self._sockets)
            for socket in sockets:
                socket.queue.put_nowait(HEARTBEAT)

    async def _auto_step(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.advance(interval_s)


def _next_six_am_ist_ns(issued_ns: int) -> int:
    issued = datetime.fromtimestamp(issued_ns / 1e9, tz=UTC).astimezone(IST)
    six = issued.replace(hour=6, minute=0, second=0, microsecond=0)
    if issued >= six:
        six += timedelta(days=1)
    return int(six.timestamp()) * _NS


def _regular_only(request: web.Request) -> None:
    variety = request.match_info["variety"]
    if variety != "regular":
        raise KiteError("InputException", f"Invalid `variety` {variety!r}: the fake has regular.")


def _known_tokens(value: Any, by_token: dict[int, KiteInstrument]) -> list[int]:
    if not isinstance(value, list):
        return []
    return [token for token in value if isinstance(token, int) and token in by_token]


def _take(bursts: list[_Burst], category: str) -> _Burst | None:
    for burst in bursts:
        if burst.takes(category):
            burst.remaining -= 1
            if burst.remaining == 0:
                bursts.remove(burst)
            return burst
    return None


def _max_in_window(times: list[int], window_ns: int) -> int:
    best = 0
    start = 0
    for end, stamp in enumerate(times):
        while times[start] <= stamp - window_ns:
            start += 1
        best = max(best, end - start + 1)
    return best


def _count(count: int) -> int:
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"count={count!r} must be a positive whole number")
    return count


def _check_category(category: str | None) -> str | None:
    if category is not None and category not in _CATEGORIES:
        raise ValueError(f"category={category!r} must be one of {_CATEGORIES} or None")
    return category


def _account_type(value: str) -> str:
    if value not in ("LIVE", "DEMO"):
        raise ValueError(f"account_type={value!r} must be LIVE or DEMO")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(reason="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body
