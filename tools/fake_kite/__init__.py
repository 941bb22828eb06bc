"""A local fake of Zerodha's Kite Connect v3: REST and the ticker websocket on one port.

For tests, demos and rehearsals of the Kite adapter. The public Kite Connect v3 documentation
is the spec; ``tests/e2e/test_fake_kite_official_client.py`` drives this server with the
official ``kiteconnect`` client (REST and KiteTicker) to keep it honest.

Python API (stable; other branches build on it)
------------------------------------------------
``FakeKite(*, seed=7, clock=None, rate_clock=None, instruments=DEFAULT_INSTRUMENTS,
api_key="fake_api_key", api_secret="fake_api_secret", user_id="FK0001", account_type="LIVE",
rate_limits=None, step_interval_s=None, daily_token_expiry=False, heartbeat_interval_s=1.0,
volatility_bps=2.0, opening_cash=Decimal("1000000"), host="127.0.0.1", port=0)``

- ``clock``: the market clock (a ``domain.clock.ManualClock`` in tests; default wall time).
  ``rate_clock``: what the rate limits and the request log count on (default wall monotonic).
  ``daily_token_expiry``: tokens expire at the next 06:00 IST of the market clock (checked at
  each ``advance``); ``expire_token()`` expires them at once.
- ``start() -> base_url`` (``http://127.0.0.1:<ephemeral>``), ``stop()`` (idempotent); also a
  context manager. ``base_url`` is ``KiteConnect(root=...)``; ``ws_url``
  (``ws://host:port/ws``) is ``KiteTicker(root=...)``; the root path ``/`` takes the ticker
  too. ``login_url``: ``GET /connect/login?v=3&api_key=..[&redirect_url=..]`` answers (or
  redirects with) a fresh request token.
- Sessions: ``issue_request_token()``, ``checksum(request_token)``, ``create_session()``
  (a valid access token without HTTP).
- Market: ``advance(seconds=0.0)`` moves a manual clock, steps the seeded market once (new
  quotes; matching; ticks to every subscribed socket; postbacks), ``quote("NSE:INFY")`` (the
  ``/quote`` entry now), ``orders()``, ``trades()``, ``positions()``; ``market`` is the
  ``KiteMarket`` (``market.view(instrument)`` gives the ``MarketView`` a packet encodes).
- Fault knobs (each also ``POST /_fake/faults/<name>`` with the keyword arguments as a JSON
  object): ``fail_next(count=1, *, status=503, category=None)`` (5xx),
  ``rate_limit_next(count=1, *, category=None)`` (429 bursts),
  ``hold_next(count=1, *, seconds, placed, category="order")`` (timeouts: placed or not),
  ``drop_postbacks(count=1)``, ``duplicate_postbacks(count=1)``,
  ``drop_sockets(*, abrupt=False)`` (a close frame, or a cut TCP connection),
  ``expire_token()``, ``set_partial_fill(quantity | None)``,
  ``reject_next(count=1, *, reason=...)``, ``refuse_modifications(count=1, *, reason=...)``
  (a PUT refused 400), ``send_ws_error(message)``,
  ``set_account_type("LIVE" | "DEMO")``, ``clear_faults()``. ``category`` is ``"order"``
  (place/modify/cancel), ``"quote"`` or ``"other"``.
- Observation: ``request_log(category=None) -> list[RequestRecord]`` (method, path,
  category, status, error_type, monotonic_ns, ts_ns), ``order_requests_per_second_max()``,
  ``order_requests_per_minute_max()``, ``quote_requests_per_second_max()`` (every request
  that arrived counts, answered or not), ``postbacks_sent`` / ``postbacks_dropped`` (order
  states), ``socket_count()``, ``subscriptions()``.
- Admin over HTTP for demos: ``GET /_fake/state``, ``GET /_fake/requests``,
  ``POST /_fake/advance {"seconds": s}``, ``POST /_fake/request_token``,
  ``POST /_fake/faults/<name>``.

Wire behaviour
--------------
- Every call needs ``X-Kite-Version: 3`` (else 400 ``InputException``) and, except
  ``POST /session/token``, ``Authorization: token api_key:access_token`` (else 403
  ``TokenException``). Bodies are form-encoded; answers are Kite's envelope.
- ``POST /session/token`` (api_key, request_token, checksum = sha256(api_key + request_token +
  api_secret) hex; a request token works once) returns the profile plus ``access_token``;
  ``DELETE /session/token`` invalidates one. ``GET /user/profile`` reports the account type in
  ``meta.account_type``; ``GET /user/margins`` reports ``equity.enabled`` (true for LIVE).
- Orders: ``POST/PUT/DELETE /orders/regular[/{id}]``, ``GET /orders``, ``GET /orders/{id}``
  (history), ``GET /orders/{id}/trades``, ``GET /trades``, ``GET /portfolio/positions``,
  ``GET /quote|/quote/ltp|/quote/ohlc?i=NSE:INFY``, ``GET /instruments[/NSE]`` (CSV).
  ``market_protection`` must be non-zero for MARKET and SL-M; ``tag`` alphanumeric, <= 20;
  at most 25 modifications of one order.
  Matching rules: ``tools/fake_kite/market.py``.
- Rate limits (``RateLimits``): 10 order requests/s, 200/min, 5000/day; 1 quote request/s;
  10/s for the rest; beyond them 429 ``NetworkException`` "Too many requests" (a refused
  request does not use up the budget).
- Ticker: ``/ws?api_key=..&access_token=..`` (403 on a bad token); ``{"a":"subscribe"}``
  (default mode quote), ``unsubscribe``, ``mode``; binary frames per ``wire.py``; 1-byte
  heartbeats; ``{"type":"order","id":"","data":{...}}`` on every order change (the order's
  fields plus ``user_id``, ``unfilled_quantity``, ``app_id``, ``checksum``; ``status``
  ``UPDATE`` for a modify or a fill that leaves quantity open, as Kite's postbacks say);
  ``{"type":"error","data":...}`` on a bad message.
"""

from __future__ import annotations

from tools.fake_kite.market import (
    DEFAULT_INSTRUMENTS,
    KiteInstrument,
    KiteMarket,
    MarketView,
)
from tools.fake_kite.server import FakeKite, RateLimits, RequestRecord

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "FakeKite",
    "KiteInstrument",
    "KiteMarket",
    "MarketView",
    "RateLimits",
    "RequestRecord",
]
