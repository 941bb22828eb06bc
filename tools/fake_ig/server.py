"""The fake IG server: REST under ``/gateway/deal`` and a Lightstreamer endpoint on one port.

Like ``tools.fake_kite.server``, it runs its own asyncio loop on a daemon thread and keeps all
state in one ``IgMarket`` behind one ``threading.Lock`` that no handler holds across an await.
Stream messages go through each socket's queue, so updates leave in the order they were made.

What a REST request goes through, in order (``_gate``): the request log, the injected faults
(5xx, 403 allowance bursts), the ``X-IG-API-KEY`` header, the session tokens (``CST`` and
``X-SECURITY-TOKEN``, except ``POST /session``), IG's per-minute allowances, then the handler.
``POST`` with a ``_method: DELETE`` header is a DELETE. Any exception in a handler becomes a
500 ``{"errorCode": "system.error"}``, never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from adapters.clock import WallClock
from domain.clock import Clock, ManualClock
from tools.fake_ig.market import (
    DEFAULT_ACCOUNTS,
    DEFAULT_INSTRUMENTS,
    IgAccount,
    IgInstrument,
    IgMarket,
    RequestInvalid,
    TradeEvent,
)

__all__ = ["Allowances", "FakeIG", "IgError", "RequestRecord"]

BASE_PATH = "/gateway/deal"
TLCP_SUBPROTOCOL = "TLCP-2.4.0.lightstreamer.com"
_NS = 1_000_000_000
_MINUTE_NS = 60 * _NS
TOKEN_INVALID = "error.security.client-token-invalid"
ALLOWANCE_ERRORS = {
    "trading": "error.public-api.exceeded-account-trading-allowance",
    "account": "error.public-api.exceeded-account-allowance",
    "api-key": "error.public-api.exceeded-api-key-allowance",
}
_IG_REQUEST = web.RequestKey("ig_request", tuple)
_TRADING = re.compile(r"^/(positions|workingorders)/otc(/[^/]+)?$")


class IgError(Exception):
    """An answer in IG's error shape ``{"errorCode": ...}``."""

    def __init__(self, error_code: str, status: int) -> None:
        super().__init__(error_code)
        self.error_code = error_code
        self.status = status


@dataclass(frozen=True, kw_only=True)
class Allowances:
    """IG's published request allowances per rolling minute; ``None`` switches one off.

    Attributes:
        trading_per_minute: trading requests (deal, amend, close, working orders) of one
            account (IG: 100).
        account_per_minute: non-trading requests of one account (IG: 30).
        api_key_per_minute: every request of the application key (IG: 60).
    """

    trading_per_minute: int | None = 100
    account_per_minute: int | None = 30
    api_key_per_minute: int | None = 60

    @classmethod
    def unlimited(cls) -> Allowances:
        return cls(trading_per_minute=None, account_per_minute=None, api_key_per_minute=None)


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One REST request the fake received (``/_fake/`` and Lightstreamer are not logged).

    Attributes:
        method: the effective method (``POST`` + ``_method: DELETE`` is ``DELETE``).
        path: below ``/gateway/deal``, without the query.
        category: ``trading``, ``non-trading`` or ``session``.
        status: the HTTP status answered; ``error_code`` IG's ``errorCode`` or ``None``.
        account_id: the session's active account when the tokens were valid.
        version: the ``Version`` header as sent.
        body: the decoded JSON body (``None`` when there was none).
        monotonic_ns: the rate clock's reading on arrival; ``ts_ns`` the market clock's.
    """

    method: str
    path: str
    category: str
    status: int
    error_code: str | None
    account_id: str | None
    version: str | None
    body: Any
    monotonic_ns: int
    ts_ns: int


@dataclass
class _Session:
    cst: str
    xst: str
    account_id: str
    issued_ns: int


@dataclass
class _Burst:
    remaining: int
    category: str | None
    status: int = 0
    error_code: str = ""

    def takes(self, category: str) -> bool:
        return self.remaining > 0 and (self.category is None or self.category == category)


@dataclass
class _Subscription:
    sub_id: int
    items: list[str]
    fields: list[str]
    mode: str


@dataclass
class _Stream:
    ws: web.WebSocketResponse
    session_id: str
    account_id: str | None
    queue: asyncio.Queue[str | None]
    subscriptions: dict[int, _Subscription] = field(default_factory=dict)


def _category(method: str, path: str) -> str:
    if path.startswith("/session"):
        return "session"
    if method in ("POST", "PUT", "DELETE") and _TRADING.match(path):
        return "trading"
    return "non-trading"


def _error(error: IgError) -> web.Response:
    return web.json_response({"errorCode": error.error_code}, status=error.status)


def _take(bursts: list[_Burst], category: str) -> _Burst | None:
    for burst in bursts:
        if burst.takes(category):
            burst.remaining -= 1
            if burst.remaining <= 0:
                bursts.remove(burst)
            return burst
    return None


def tlcp_value(value: str | None) -> str:
    """One field of a TLCP ``U`` line: ``#`` null, ``$`` empty, else percent-encoded where
    the line's syntax needs it."""
    if value is None:
        return "#"
    if value == "":
        return "$"
    encoded = "".join(f"%{ord(ch):02X}" if ch in "%|\r\n" else ch for ch in value)
    if encoded[0] in "#$^":
        encoded = f"%{ord(encoded[0]):02X}{encoded[1:]}"
    return encoded


class FakeIG:
    """A local IG REST + Lightstreamer server (see the package docstring for the whole API)."""

    def __init__(
        self,
        *,
        seed: int = 7,
        clock: Clock | None = None,
        rate_clock: Clock | None = None,
        instruments: Iterable[IgInstrument] = DEFAULT_INSTRUMENTS,
        accounts: Iterable[IgAccount] = DEFAULT_ACCOUNTS,
        api_key: str = "fake-ig-api-key",
        username: str = "fakeiguser",
        password: str = "fakeigpassword",
        environment: str = "DEMO",
        allowances: Allowances | None = None,
        token_lifetime_s: float | None = None,
        step_interval_s: float | None = None,
        probe_interval_s: float = 1.0,
        volatility_bps: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if environment not in ("DEMO", "LIVE"):
            raise ValueError(f"fake ig: environment must be DEMO or LIVE, not {environment!r}")
        self.clock: Clock = clock or WallClock()
        self.rate_clock: Clock = rate_clock or WallClock()
        self.api_key = api_key
        self.username = username
        self.password = password
        self.environment = environment
        self.allowances = allowances or Allowances()
        self.token_lifetime_s = token_lifetime_s
        self.step_interval_s = step_interval_s
        self.probe_interval_s = probe_interval_s
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        accounts = tuple(accounts)
        if not accounts:
            raise ValueError("fake ig: at least one account")
        self.market = IgMarket(
            instruments=tuple(instruments), accounts=accounts, seed=seed,
            now_ns=self.clock.now_ns(), volatility_bps=volatility_bps,
        )  # fmt: skip
        self.client_id = f"{seed:03d}100200"
        self._sessions: dict[str, _Session] = {}
        self._accepted: dict[str, collections.deque[int]] = collections.defaultdict(
            collections.deque
        )
        self.requests: list[RequestRecord] = []
        self._fail_bursts: list[_Burst] = []
        self._limit_bursts: list[_Burst] = []
        self._after_bursts: list[_Burst] = []
        self._confirm_not_found_reads = 0
        self._confirm_reads_left: dict[str, int] = {}
        self._lose_confirms = 0
        self._lost_confirms: set[str] = set()
        self._hold_trade_subscriptions = False
        self._held_subscriptions: list[tuple[_Stream, _Subscription]] = []
        self._streams: list[_Stream] = []
        self._ls_sessions: dict[str, _Stream] = {}
        self.tlcp_requests: list[tuple[str, dict[str, str]]] = []
        self.stream_events: list[TradeEvent] = []
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
        """Serve on a thread of its own; return the REST base URL (``.../gateway/deal``)."""
        if self._thread is not None or self._started.is_set():
            raise RuntimeError("fake ig: already started (an instance serves once)")
        self._thread = threading.Thread(target=self._run, name="fake-ig", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"fake ig: not serving after {timeout_s} s")
        if self._start_error is not None:
            raise RuntimeError("fake ig: could not start") from self._start_error
        return self.base_url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every stream, stop serving and join the thread. Idempotent."""
        loop, stop_event, thread = self._loop, self._stop_event, self._thread
        if loop is None or stop_event is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> FakeIG:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The REST base, what trading-ig calls ``BASE_URL``."""
        return self.root_url + BASE_PATH

    @property
    def lightstreamer_url(self) -> str:
        """What ``POST /session`` reports as ``lightstreamerEndpoint``."""
        return self.root_url

    # -----------------------------------------------------------------------------------------
    # PYTHON API: SESSIONS, MARKET, OBSERVATION
    # -----------------------------------------------------------------------------------------

    def create_session(self, account_id: str | None = None) -> tuple[str, str]:
        """A valid (CST, X-SECURITY-TOKEN) pair without HTTP, on ``account_id`` (default the
        preferred account)."""
        with self._lock:
            session = self._new_session_locked(account_id)
        return session.cst, session.xst

    def active_account(self, cst: str) -> str | None:
        with self._lock:
            session = self._sessions.get(cst)
            return None if session is None else session.account_id

    def expire_tokens(self) -> None:
        """Every session's tokens become invalid at once (401 client-token-invalid)."""
        with self._lock:
            self._sessions.clear()

    def advance(self, seconds: float = 0.0) -> None:
        """Move a manual clock by ``seconds``, step the seeded market once, trigger stops,
        limits and working orders, and stream what changed."""
        if seconds:
            if not isinstance(self.clock, ManualClock):
                raise RuntimeError("fake ig: advance(seconds) needs a ManualClock")
            self.clock.advance(seconds)
        with self._lock:
            changed = self.market.step(self.clock.now_ns())
            self._expire_by_age_locked()
        self._publish(changed)

    def set_quote(self, epic: str, bid: Decimal | str | float, offer: Any = None) -> None:
        """Move one market to ``bid`` (offer default bid + the instrument's spread); a stop or
        limit crossed closes its position (CONFIRMS + OPU on the TRADE stream)."""
        with self._lock:
            self.market.set_quote(
                epic, Decimal(str(bid)), None if offer is None else Decimal(str(offer)),
                self.clock.now_ns(),
            )  # fmt: skip
        self._publish([epic])

    def amend_levels_elsewhere(
        self, deal_id: str, *, stop: Decimal | str | None, limit: Decimal | str | None
    ) -> None:
        """Someone sets a deal's stop and limit levels outside our API session (IG's web
        platform, a dealer); ``None`` removes one. Streamed as an OPU like any amendment."""
        with self._lock:
            position = self.market.positions.get(deal_id)
            if position is None:
                raise ValueError(f"fake ig: no open deal {deal_id!r}")
            body = {
                "stopLevel": None if stop is None else str(stop),
                "limitLevel": None if limit is None else str(limit),
            }
            self.market.amend_position(position.account_id, deal_id, body)
            epic = position.epic
        self._publish([epic])

    def set_market_status(self, epic: str, status: str) -> None:
        """``TRADEABLE``, ``CLOSED`` or ``EDITS_ONLY``; deals on a non-tradeable market are
        rejected (``MARKET_CLOSED_WITH_EDITS``)."""
        with self._lock:
            self.market.set_market_status(epic, status)
        self._publish([epic])

    def quote(self, epic: str) -> dict[str, Any]:
        """The market's snapshot (as ``GET /markets/{epic}`` reports it)."""
        with self._lock:
            return self.market.snapshot(epic)

    def market_fields(self, epic: str) -> dict[str, str]:
        """What the MARKET stream item sends now (BID OFFER UPDATE_TIME MARKET_STATE)."""
        with self._lock:
            return self.market.market_fields(epic)

    def positions(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Open positions (``GET /positions`` v2 entries) of one account, or of all."""
        with self._lock:
            ids = [account_id] if account_id else [a.account_id for a in self.market.accounts]
            return [entry for one in ids for entry in self.market.open_positions(one)]

    def working_orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [order.as_ig() for order in self.market.working_orders.values()]

    def confirms(self) -> dict[str, dict[str, Any]]:
        """Every deal confirmation by deal reference (also the lost ones)."""
        with self._lock:
            return {ref: dict(confirm) for ref, confirm in self.market.confirms.items()}

    def request_log(self, category: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if category is None or r.category == category]

    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def subscriptions(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(item, mode, fields) of every live Lightstreamer subscription."""
        with self._lock:
            return [(item, sub.mode, tuple(sub.fields)) for stream in self._streams
                    for sub in stream.subscriptions.values() for item in sub.items]  # fmt: skip

    # -----------------------------------------------------------------------------------------
    # FAULT KNOBS
    # -----------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500, category: str | None = None) -> None:
        """The next ``count`` REST requests (of ``category``) answer ``status`` (5xx)."""
        if status < 500 or status > 599:
            raise ValueError(f"fake ig: fail_next status must be 5xx, not {status}")
        with self._lock:
            self._fail_bursts.append(_Burst(count, category, status=status))

    def fail_after_next(
        self, count: int = 1, *, status: int = 504, category: str | None = "trading"
    ) -> None:
        """The next ``count`` REST requests (of ``category``) are carried out (the deal is
        made) but answer ``status`` (5xx): the client must find out what happened."""
        if status < 500 or status > 599:
            raise ValueError(f"fake ig: fail_after_next status must be 5xx, not {status}")
        with self._lock:
            self._after_bursts.append(_Burst(count, category, status=status))

    def rate_limit_next(
        self, count: int = 1, *, kind: str = "trading", category: str | None = None
    ) -> None:
        """The next ``count`` REST requests answer 403 with IG's allowance error: ``kind``
        ``trading`` (exceeded-account-trading-allowance), ``account`` or ``api-key``."""
        if kind not in ALLOWANCE_ERRORS:
            raise ValueError(f"fake ig: kind must be one of {sorted(ALLOWANCE_ERRORS)}")
        with self._lock:
            self._limit_bursts.append(
                _Burst(count, category, status=403, error_code=ALLOWANCE_ERRORS[kind])
            )

    def delay_confirms(self, reads: int) -> None:
        """Each new deal's ``GET /confirms/{ref}`` answers 404 ``reads`` times before the
        confirm (0: ready at once, the default)."""
        with self._lock:
            self._confirm_not_found_reads = reads

    def lose_confirms(self, count: int = 1) -> None:
        """The next ``count`` deals happen, but their confirms stay 404 forever and no CONFIRMS
        reaches the TRADE stream (the OPU does): only positions or activity tell."""
        with self._lock:
            self._lose_confirms += count

    def reject_next(self, count: int = 1, *, reason: str = "INSUFFICIENT_FUNDS") -> None:
        """The next ``count`` new deals are REJECTED with ``reason`` in the confirm."""
        with self._lock:
            self.market.reject_reasons.extend([reason] * count)

    def drop_streams(self) -> None:
        """Cut every Lightstreamer connection (the client sees the socket close)."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            self._send(stream, None)

    def hold_trade_subscriptions(self) -> None:
        """From now on a TRADE subscription is acknowledged (REQOK) but not made live (no
        SUBOK) until ``release_trade_subscriptions``: what IG sends about the account meanwhile
        reaches nobody, as in the gap of a reconnect."""
        with self._lock:
            self._hold_trade_subscriptions = True

    def release_trade_subscriptions(self) -> None:
        with self._lock:
            self._hold_trade_subscriptions = False
            held, self._held_subscriptions = self._held_subscriptions, []
            for stream, subscription in held:
                stream.subscriptions[subscription.sub_id] = subscription
        for stream, subscription in held:
            items, fields = len(subscription.items), len(subscription.fields)
            self._send(stream, f"SUBOK,{subscription.sub_id},{items},{fields}")

    def held_subscriptions(self) -> int:
        with self._lock:
            return len(self._held_subscriptions)

    def set_environment(self, environment: str) -> None:
        if environment not in ("DEMO", "LIVE"):
            raise ValueError(f"fake ig: environment must be DEMO or LIVE, not {environment!r}")
        self.environment = environment

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_bursts.clear()
            self._limit_bursts.clear()
            self._after_bursts.clear()
            self._confirm_not_found_reads = 0
            self._lose_confirms = 0
            self.market.reject_reasons.clear()
        self.release_trade_subscriptions()

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
        app.router.add_route("*", BASE_PATH + "/{tail:.*}", self._rest)
        app.router.add_get("/lightstreamer", self._lightstreamer)
        app.router.add_get("/_fake/state", self._admin_state)
        app.router.add_get("/_fake/requests", self._admin_requests)
        app.router.add_post("/_fake/advance", self._admin_advance)
        app.router.add_post("/_fake/quote", self._admin_quote)
        app.router.add_post("/_fake/faults/{name}", self._admin_fault)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self.port = runner.addresses[0][1]
        tasks = [asyncio.create_task(self._probes())]
        if self.step_interval_s is not None:
            tasks.append(asyncio.create_task(self._auto_step(self.step_interval_s)))
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            with self._lock:
                streams = list(self._streams)
            for stream in streams:
                with contextlib.suppress(Exception):
                    await stream.ws.close()
            await runner.cleanup()

    async def _auto_step(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.advance)

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(BASE_PATH + "/"):
            return await handler(request)
        path = request.path[len(BASE_PATH) :]
        method = request.method
        if method == "POST" and request.headers.get("_method", "").upper() in ("DELETE", "PUT"):
            method = request.headers["_method"].upper()
        category = _category(method, path)
        arrived_ns = self.rate_clock.monotonic_ns()
        ts_ns = self.clock.now_ns()
        body: Any = None
        account_id: str | None = None
        try:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise IgError("validation.invalid.request.body", 400) from None
            with self._lock:
                self._injected_fault_locked(category)
                self._check_api_key(request)
                session = self._check_session_locked(request, method, path)
                account_id = session.account_id if session is not None else None
                self._check_allowance_locked(category, account_id, arrived_ns)
            request[_IG_REQUEST] = (method, path, body, session)
            response = await handler(request)
            with self._lock:
                lost = _take(self._after_bursts, category)
            if lost is not None:  # it was done, but the answer never made it
                raise IgError("system.error", lost.status)
        except IgError as error:
            response = _error(error)
        except RequestInvalid as error:
            response = _error(IgError(error.error_code, error.status))
        except Exception:  # never a traceback to a client
            response = _error(IgError("system.error", 500))
        error_code = None
        if response.status >= 400 and isinstance(response, web.Response):
            with contextlib.suppress(Exception):
                error_code = json.loads(response.text or "{}").get("errorCode")
        with self._lock:
            self.requests.append(
                RequestRecord(
                    method=method,
                    path=path,
                    category=category,
                    status=response.status,
                    error_code=error_code,
                    account_id=account_id,
                    version=request.headers.get("Version"),
                    body=body,
                    monotonic_ns=arrived_ns,
                    ts_ns=ts_ns,
                )
            )
        return response

    def _injected_fault_locked(self, category: str) -> None:
        burst = _take(self._limit_bursts, category)
        if burst is not None:
            raise IgError(burst.error_code, 403)
        burst = _take(self._fail_bursts, category)
        if burst is not None:
            raise IgError("system.error", burst.status)

    def _check_api_key(self, request: web.Request) -> None:
        key = request.headers.get("X-IG-API-KEY")
        if key is None:
            raise IgError("error.security.api-key-missing", 403)
        if key != self.api_key:
            raise IgError("error.security.api-key-invalid", 403)

    def _check_session_locked(
        self, request: web.Request, method: str, path: str
    ) -> _Session | None:
        if (path == "/session" and method == "POST") or path == "/session/encryptionKey":
            return None
        self._expire_by_age_locked()
        cst = request.headers.get("CST")
        xst = request.headers.get("X-SECURITY-TOKEN")
        if cst is None:
            raise IgError("error.security.client-token-missing", 401)
        session = self._sessions.get(cst)
        if session is None:
            raise IgError(TOKEN_INVALID, 401)
        if xst is None:
            raise IgError("error.security.account-token-missing", 401)
        if xst != session.xst:
            raise IgError("error.security.account-token-invalid", 401)
        # IG-ACCOUNT-ID belongs to v3 (OAuth) sessions; with CST/X-SECURITY-TOKEN the
        # session's active account applies (trading-ig sends its configured account there).
        return session

    def _expire_by_age_locked(self) -> None:
        if self.token_lifetime_s is None:
            return
        oldest = self.clock.now_ns() - int(self.token_lifetime_s * _NS)
        for cst in [c for c, s in self._sessions.items() if s.issued_ns <= oldest]:
            del self._sessions[cst]

    def _check_allowance_locked(self, category: str, account_id: str | None, now_ns: int) -> None:
        limits = self.allowances
        windows: list[tuple[str, int | None, str]] = [
            ("api-key", limits.api_key_per_minute, f"key:{self.api_key}")
        ]
        if account_id is not None and category == "trading":
            windows.append(("trading", limits.trading_per_minute, f"trading:{account_id}"))
        elif account_id is not None:
            windows.append(("account", limits.account_per_minute, f"account:{account_id}"))
        for kind, limit, key in windows:
            accepted = self._accepted[key]
            while accepted and accepted[0] <= now_ns - _MINUTE_NS:
                accepted.popleft()
            if limit is not None and len(accepted) >= limit:
                raise IgError(ALLOWANCE_ERRORS[kind], 403)
        for _kind, _limit, key in windows:
            self._accepted[key].append(now_ns)

    def _new_session_locked(self, account_id: str | None) -> _Session:
        if account_id is None:
            preferred = [a for a in self.market.accounts if a.preferred]
            account_id = (preferred or list(self.market.accounts))[0].account_id
        if self.market.account(account_id) is None:
            raise IgError("error.security.account-access-denied", 401)
        session = _Session(
            cst=secrets.token_hex(24), xst=secrets.token_hex(24), account_id=account_id,
            issued_ns=self.clock.now_ns(),
        )  # fmt: skip
        self._sessions[session.cst] = session
        return session

    # -----------------------------------------------------------------------------------------
    # REST
    # -----------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        method, path, body, session = request[_IG_REQUEST]
        body = body if isinstance(body, dict) else {}
        parts = [part for part in path.split("/") if part]
        if path == "/session":
            return self._session(request, method, body, session)
        if path == "/session/encryptionKey":
            raise IgError("error.public-api.encryption-not-supported-by-fake", 404)
        assert session is not None
        account_id = session.account_id
        head = parts[0] if parts else ""
        with self._lock:
            if method == "GET" and path == "/accounts":
                return web.json_response({"accounts": self._accounts_json()})
            if method == "GET" and path == "/positions":
                return web.json_response({"positions": self.market.open_positions(account_id)})
            if method == "GET" and head == "positions" and len(parts) == 2:
                found = [p for p in self.market.open_positions(account_id)
                         if p["position"]["dealId"] == parts[1]]  # fmt: skip
                if not found:
                    raise IgError("error.position.notfound", 404)
                return web.json_response(found[0])
            if path == "/positions/otc" and method == "POST":
                return self._dealt(account_id, self.market.open_position(account_id, body))
            if path == "/positions/otc" and method == "DELETE":
                return self._dealt(account_id, self.market.close_position(account_id, body))
            if head == "positions" and len(parts) == 3 and method == "PUT":
                return self._dealt(
                    account_id, self.market.amend_position(account_id, parts[2], body)
                )
            if method == "GET" and path == "/workingorders":
                orders = [
                    {"workingOrderData": order.as_ig(),
                     "marketData": {"epic": order.epic, **self.market.snapshot(order.epic)}}
                    for order in self.market.working_orders.values()
                    if order.account_id == account_id
                ]  # fmt: skip
                return web.json_response({"workingOrders": orders})
            if path == "/workingorders/otc" and method == "POST":
                return self._dealt(account_id, self.market.create_working_order(account_id, body))
            if head == "workingorders" and len(parts) == 3 and method == "DELETE":
                return self._dealt(
                    account_id, self.market.delete_working_order(account_id, parts[2])
                )
            if method == "GET" and head == "confirms" and len(parts) == 2:
                return self._confirm_answer(account_id, parts[1])
            if method == "GET" and head == "markets" and len(parts) == 2:
                return web.json_response(self.market.market_details(parts[1]))
            if method == "GET" and path == "/history/activity":
                # IG's ``from`` (``yyyy-MM-ddTHH:mm:ss``): activities at or after it.
                since = request.query.get("from", "")
                activities = [dict(a) for a in self.market.activity
                              if a["accountId"] == account_id
                              and a["date"] >= since]  # fmt: skip
                for activity in activities:
                    activity.pop("accountId")
                return web.json_response(
                    {"activities": activities,
                     "metadata": {"paging": {"size": len(activities), "next": None}}}
                )  # fmt: skip
        raise IgError("error.public-api.endpoint-not-found", 404)

    def _dealt(self, account_id: str, reference: str) -> web.Response:
        """After a deal request: publish its events; apply the confirm knobs to a new one."""
        if reference not in self._confirm_reads_left and reference not in self._lost_confirms:
            if self._lose_confirms > 0:
                self._lose_confirms -= 1
                self._lost_confirms.add(reference)
            elif self._confirm_not_found_reads > 0:
                self._confirm_reads_left[reference] = self._confirm_not_found_reads
        self._schedule_publish([])
        return web.json_response({"dealReference": reference})

    def _confirm_answer(self, account_id: str, reference: str) -> web.Response:
        confirm = self.market.confirms.get(reference)
        not_found = IgError("error.confirms.deal-not-found", 404)
        if confirm is None or reference in self._lost_confirms:
            raise not_found
        left = self._confirm_reads_left.get(reference, 0)
        if left > 0:
            self._confirm_reads_left[reference] = left - 1
            raise not_found
        return web.json_response(confirm)

    def _accounts_json(self) -> list[dict[str, Any]]:
        return [
            {
                "accountId": account.account_id,
                "accountName": account.account_name,
                "accountAlias": None,
                "status": "ENABLED",
                "accountType": account.account_type,
                "preferred": account.preferred,
                "balance": {
                    "balance": float(account.balance),
                    "deposit": 0.0,
                    "profitLoss": 0.0,
                    "available": float(account.balance),
                },
                "currency": account.currency,
                "canTransferFrom": True,
                "canTransferTo": True,
            }
            for account in self.market.accounts
        ]

    def _session(
        self, request: web.Request, method: str, body: dict[str, Any], session: _Session | None
    ) -> web.Response:
        with self._lock:
            if method == "POST":
                if body.get("encryptedPassword"):
                    raise IgError("error.public-api.encryption-not-supported-by-fake", 400)
                if body.get("identifier") is None or body.get("password") is None:
                    raise IgError("validation.null-not-allowed.request", 400)
                if body["identifier"] != self.username or body["password"] != self.password:
                    raise IgError("error.security.invalid-details", 401)
                session = self._new_session_locked(None)
                response = web.json_response(self._session_body_locked(session))
                response.headers["CST"] = session.cst
                response.headers["X-SECURITY-TOKEN"] = session.xst
                return response
            assert session is not None
            if method == "GET":
                account = self.market.account(session.account_id)
                assert account is not None
                response = web.json_response({
                    "clientId": self.client_id, "accountId": session.account_id,
                    "timezoneOffset": 0, "locale": "en_GB", "currency": account.currency,
                    "lightstreamerEndpoint": self.lightstreamer_url,
                })  # fmt: skip
                if request.query.get("fetchSessionTokens") == "true":
                    response.headers["CST"] = session.cst
                    response.headers["X-SECURITY-TOKEN"] = session.xst
                return response
            if method == "PUT":
                target = body.get("accountId")
                if not isinstance(target, str) or self.market.account(target) is None:
                    raise IgError("error.security.account-access-denied", 401)
                stored = self._sessions[session.cst]
                if target == stored.account_id:
                    raise IgError("error.switch.accountId-must-be-different", 412)
                stored.account_id = target
                response = web.json_response({
                    "trailingStopsEnabled": False, "dealingEnabled": True,
                    "hasActiveDemoAccounts": self.environment == "DEMO",
                    "hasActiveLiveAccounts": self.environment == "LIVE",
                })  # fmt: skip
                response.headers["X-SECURITY-TOKEN"] = stored.xst
                return response
            if method == "DELETE":
                self._sessions.pop(session.cst, None)
                return web.Response(status=204)
        raise IgError("error.public-api.endpoint-not-found", 404)

    def _session_body_locked(self, session: _Session) -> dict[str, Any]:
        account = self.market.account(session.account_id)
        assert account is not None
        return {
            "accountType": account.account_type,
            "accountInfo": {"balance": float(account.balance), "deposit": 0.0,
                            "profitLoss": 0.0, "available": float(account.balance)},
            "currencyIsoCode": account.currency,
            "currencySymbol": account.currency,
            "currentAccountId": session.account_id,
            "lightstreamerEndpoint": self.lightstreamer_url,
            "accounts": [{"accountId": a.account_id, "accountName": a.account_name,
                          "preferred": a.preferred, "accountType": a.account_type}
                         for a in self.market.accounts],
            "clientId": self.client_id,
            "timezoneOffset": 0,
            "hasActiveDemoAccounts": self.environment == "DEMO",
            "hasActiveLiveAccounts": self.environment == "LIVE",
            "trailingStopsEnabled": False,
            "reroutingEnvironment": None,
            "dealingEnabled": True,
        }  # fmt: skip

    # -----------------------------------------------------------------------------------------
    # LIGHTSTREAMER (TLCP 2.4.0 over WebSocket; see lightstreamer.py's notes in the docstring)
    # -----------------------------------------------------------------------------------------

    async def _lightstreamer(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(TLCP_SUBPROTOCOL,), autoping=True)
        await ws.prepare(request)
        stream: _Stream | None = None
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write_stream(ws, queue))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                stream = await self._tlcp_message(ws, queue, stream, message.data)
                if writer.done():
                    break
        finally:
            if stream is not None:
                with self._lock:
                    if stream in self._streams:
                        self._streams.remove(stream)
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _write_stream(
        self, ws: web.WebSocketResponse, queue: asyncio.Queue[str | None]
    ) -> None:
        while True:
            text = await queue.get()
            if text is None:
                await ws.close()
                return
            await ws.send_str(text)

    async def _tlcp_message(
        self, ws: web.WebSocketResponse, queue: asyncio.Queue[str | None],
        stream: _Stream | None, data: str,
    ) -> _Stream | None:  # fmt: skip
        lines = data.split("\r\n")
        kind = lines[0]
        requests = [dict(parse_qsl(line, keep_blank_values=True)) for line in lines[1:] if line]
        with self._lock:
            self.tlcp_requests.extend(
                (kind, {k: v for k, v in r.items() if k != "LS_password"}) for r in requests
            )
        if kind == "wsok":
            queue.put_nowait("WSOK")
            return stream
        if kind == "heartbeat":
            return stream
        if kind in ("create_session", "bind_session"):
            params = requests[0] if requests else {}
            return self._tlcp_session(ws, queue, stream, kind, params)
        if kind == "control" and stream is not None:
            for params in requests:
                self._tlcp_control(stream, params)
            return stream
        if kind == "control":
            queue.put_nowait("REQERR,0,65,Session not bound")
        return stream

    def _tlcp_session(
        self, ws: web.WebSocketResponse, queue: asyncio.Queue[str | None],
        stream: _Stream | None, kind: str, params: dict[str, str],
    ) -> _Stream | None:  # fmt: skip
        with self._lock:
            if kind == "bind_session":
                # a session outlives its socket (a drop), until the client destroys it
                old = self._ls_sessions.get(params.get("LS_session", ""))
                if old is None:
                    queue.put_nowait("CONERR,20,Session not found")
                    return stream
                if old in self._streams:
                    self._streams.remove(old)
                account_id = old.account_id
                subscriptions = old.subscriptions
                session_id = old.session_id
            else:
                account_id = self._ls_login_locked(params)
                if account_id is False:
                    queue.put_nowait("CONERR,1,User/password check failed")
                    return stream
                subscriptions = {}
                session_id = "S" + secrets.token_hex(12)
            stream = _Stream(ws=ws, session_id=session_id, account_id=account_id or None,
                             queue=queue, subscriptions=subscriptions)  # fmt: skip
            self._streams.append(stream)
            self._ls_sessions[session_id] = stream
        keepalive_ms = int(self.probe_interval_s * 1000)
        queue.put_nowait(f"CONOK,{session_id},50000,{keepalive_ms},*")
        queue.put_nowait("SERVNAME,Fake IG Lightstreamer")
        return stream

    def _ls_login_locked(self, params: dict[str, str]) -> str | bool | None:
        """The account the LS_user/LS_password pair logs in, or False when refused."""
        password = params.get("LS_password", "")
        match = re.fullmatch(r"CST-([^|]+)\|XST-(.+)", password)
        if match is None:
            return False
        session = self._sessions.get(match.group(1))
        if session is None or session.xst != match.group(2):
            return False
        user = params.get("LS_user")
        if user and self.market.account(user) is None:
            return False
        return user or session.account_id

    def _tlcp_control(self, stream: _Stream, params: dict[str, str]) -> None:
        op = params.get("LS_op")
        req_id = params.get("LS_reqId", "0")
        ack = params.get("LS_ack", "true") != "false"
        replies: list[str] = []
        if op == "add":
            sub_id = int(params.get("LS_subId", "0"))
            items = params.get("LS_group", "").split()
            fields = params.get("LS_schema", "").split()
            mode = params.get("LS_mode", "MERGE")
            problem = self._check_items(stream, items, mode)
            if problem is not None:
                stream.queue.put_nowait(f"REQERR,{req_id},{problem}")
                return
            subscription = _Subscription(sub_id, items, fields, mode)
            if ack:
                replies.append(f"REQOK,{req_id}")
            with self._lock:
                held = self._hold_trade_subscriptions and items[0].startswith("TRADE:")
                if held:
                    self._held_subscriptions.append((stream, subscription))
            if held:
                for reply in replies:
                    stream.queue.put_nowait(reply)
                return
            replies.append(f"SUBOK,{sub_id},{len(items)},{len(fields)}")
            with self._lock:
                stream.subscriptions[sub_id] = subscription
                snapshot = params.get("LS_snapshot", "false") == "true"
                for index, item in enumerate(items, start=1):
                    if item.startswith("MARKET:") and snapshot:
                        values = self.market.market_fields(item.split(":", 1)[1])
                        replies.append(self._u_line(subscription, index, values))
                    elif snapshot and mode == "DISTINCT":
                        replies.append(f"EOS,{sub_id},{index}")
        elif op == "delete":
            sub_id = int(params.get("LS_subId", "0"))
            with self._lock:
                stream.subscriptions.pop(sub_id, None)
            if ack:
                replies.append(f"REQOK,{req_id}")
            replies.append(f"UNSUB,{sub_id}")
        elif op == "destroy":
            with self._lock:
                self._ls_sessions.pop(stream.session_id, None)
                if stream in self._streams:
                    self._streams.remove(stream)
            replies.append(f"REQOK,{req_id}")
            replies.append("END,31,Destroyed by the client")
            for reply in replies:
                stream.queue.put_nowait(reply)
            stream.queue.put_nowait(None)
            return
        elif ack:
            replies.append(f"REQOK,{req_id}")  # constrain, force_rebind, ...: nothing to do
        for reply in replies:
            stream.queue.put_nowait(reply)

    def _check_items(self, stream: _Stream, items: list[str], mode: str) -> str | None:
        if not items:
            return "21,Bad Group name"
        for item in items:
            kind, _, name = item.partition(":")
            if kind == "MARKET":
                if name not in {i.epic for i in self.market.instruments}:
                    return "21,Bad Group name"
            elif kind == "TRADE":
                if name != stream.account_id:
                    return "21,Bad Group name"
            else:
                return "21,Bad Group name"
        return None

    @staticmethod
    def _u_line(subscription: _Subscription, index: int, values: dict[str, Any]) -> str:
        encoded = "|".join(tlcp_value(values.get(name)) for name in subscription.fields)
        return f"U,{subscription.sub_id},{index},{encoded}"

    def _send(self, stream: _Stream, text: str | None) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stream.queue.put_nowait, text)

    def _schedule_publish(self, epics: list[str]) -> None:
        """Publish from inside a locked handler: the lock is held, so collect now, send after."""
        events = self._take_events_locked()
        lines = self._lines_locked(epics, events)
        for stream, text in lines:
            stream.queue.put_nowait(text) if self._in_loop() else self._send(stream, text)

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _publish(self, epics: list[str]) -> None:
        with self._lock:
            events = self._take_events_locked()
            lines = self._lines_locked(epics, events)
        for stream, text in lines:
            self._send(stream, text)

    def _take_events_locked(self) -> list[TradeEvent]:
        events = [
            event for event in self.market.take_events()
            if not (event.field == "CONFIRMS"
                    and event.payload.get("dealReference") in self._lost_confirms)
        ]  # fmt: skip
        self.stream_events.extend(events)
        return events

    def _lines_locked(
        self, epics: list[str], events: list[TradeEvent]
    ) -> list[tuple[_Stream, str]]:
        lines: list[tuple[_Stream, str]] = []
        market_values = {epic: self.market.market_fields(epic) for epic in epics}
        for stream in self._streams:
            for subscription in stream.subscriptions.values():
                for index, item in enumerate(subscription.items, start=1):
                    kind, _, name = item.partition(":")
                    if kind == "MARKET" and name in market_values:
                        lines.append((stream, self._u_line(subscription, index,
                                                           market_values[name])))  # fmt: skip
                    elif kind == "TRADE":
                        for event in events:
                            if event.account_id != name or event.field not in subscription.fields:
                                continue
                            values = {event.field: json.dumps(event.payload)}
                            lines.append((stream, self._u_line(subscription, index, values)))
        return lines

    # Fields a DISTINCT TRADE update does not carry are null ("#"), as IG sends them.

    async def _probes(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            with self._lock:
                streams = list(self._streams)
            for stream in streams:
                stream.queue.put_nowait("PROBE")

    # -----------------------------------------------------------------------------------------
    # ADMIN
    # -----------------------------------------------------------------------------------------

    async def _admin_state(self, _request: web.Request) -> web.Response:
        with self._lock:
            state = {
                "environment": self.environment,
                "accounts": self._accounts_json(),
                "quotes": {i.epic: self.market.snapshot(i.epic) for i in self.market.instruments},
                "positions": [p.as_ig() | {"epic": p.epic, "accountId": p.account_id}
                              for p in self.market.positions.values()],
                "workingOrders": [o.as_ig() for o in self.market.working_orders.values()],
                "confirms": self.market.confirms,
                "streams": len(self._streams),
            }  # fmt: skip
        return web.json_response(state)

    async def _admin_requests(self, _request: web.Request) -> web.Response:
        records = [asdict(record) for record in self.request_log()]
        return web.json_response(records, dumps=lambda v: json.dumps(v, default=str))

    async def _admin_advance(self, request: web.Request) -> web.Response:
        body = await self._admin_body(request)
        await asyncio.to_thread(self.advance, float(body.get("seconds", 0.0)))
        return web.json_response({"ok": True})

    async def _admin_quote(self, request: web.Request) -> web.Response:
        body = await self._admin_body(request)
        try:
            await asyncio.to_thread(self.set_quote, body["epic"], body["bid"], body.get("offer"))
        except (KeyError, RequestInvalid) as error:
            return web.json_response({"errorCode": f"fake.bad-request: {error}"}, status=400)
        return web.json_response({"ok": True})

    async def _admin_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        knobs: dict[str, Callable[..., None]] = {
            "fail_next": self.fail_next, "fail_after_next": self.fail_after_next,
            "rate_limit_next": self.rate_limit_next,
            "delay_confirms": self.delay_confirms, "lose_confirms": self.lose_confirms,
            "reject_next": self.reject_next, "drop_streams": self.drop_streams,
            "expire_tokens": self.expire_tokens, "set_environment": self.set_environment,
            "set_market_status": self.set_market_status, "clear_faults": self.clear_faults,
        }  # fmt: skip
        knob = knobs.get(name)
        if knob is None:
            return web.json_response({"errorCode": f"fake.unknown-fault: {name}"}, status=404)
        body = await self._admin_body(request)
        try:
            await asyncio.to_thread(knob, **body)
        except (TypeError, ValueError, RequestInvalid) as error:
            return web.json_response({"errorCode": f"fake.bad-request: {error}"}, status=400)
        return web.json_response({"ok": True})

    @staticmethod
    async def _admin_body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
