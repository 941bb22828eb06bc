"""A local fake of IG's REST trading API and its Lightstreamer stream, on one port.

For tests, demos and rehearsals of the IG adapter. The labs.ig.com REST and streaming
references are the spec; ``tests/e2e/test_fake_ig_clients.py`` drives this server with
``trading-ig`` (REST) and ``lightstreamer-client-lib`` (the official Lightstreamer Python SDK,
through trading-ig's ``IGStreamService``) to keep it honest.

Python API (stable; the IG adapter's branch builds on it)
----------------------------------------------------------
``FakeIG(*, seed=7, clock=None, rate_clock=None, instruments=DEFAULT_INSTRUMENTS,
accounts=DEFAULT_ACCOUNTS, api_key="fake-ig-api-key", username="fakeiguser",
password="fakeigpassword", environment="DEMO", allowances=None, token_lifetime_s=None,
step_interval_s=None, probe_interval_s=1.0, volatility_bps=2.0, host="127.0.0.1", port=0)``

- ``clock``: the market clock (a ``domain.clock.ManualClock`` in tests; default wall time).
  ``rate_clock``: what the allowances and the request log count on (default wall monotonic).
- ``start() -> base_url`` (``http://127.0.0.1:<port>/gateway/deal``, trading-ig's
  ``BASE_URL``), ``stop()`` (idempotent); also a context manager. ``root_url`` is
  ``http://127.0.0.1:<port>``; ``lightstreamer_url`` (= ``root_url``) is what ``POST /session``
  reports as ``lightstreamerEndpoint``; the SDK opens ``ws://.../lightstreamer``.
- Accounts: ``DEFAULT_ACCOUNTS`` = ``ABC123`` (CFD, preferred: the session starts on it) and
  ``XYZ789`` (SPREADBET). ``environment`` ``DEMO``/``LIVE`` sets ``hasActiveDemoAccounts`` /
  ``hasActiveLiveAccounts`` in the session answers (``set_environment`` changes it).
- Instruments (``DEFAULT_INSTRUMENTS``): ``IX.D.FTSE.DAILY.IP`` (bid 7500.0, spread 1.0, min
  size 0.5, min stop distance 4), ``IX.D.DAX.DAILY.IP``, ``CS.D.GBPUSD.TODAY.IP``.
- Sessions: ``create_session(account_id=None) -> (cst, xst)`` without HTTP,
  ``active_account(cst)``, ``expire_tokens()`` (every token: 401
  ``error.security.client-token-invalid``); ``token_lifetime_s`` expires tokens by market-clock
  age (checked at each request and ``advance``).
- Market: ``advance(seconds=0.0)`` (moves a ManualClock, one seeded step of every market,
  triggers broker-side stops/limits and working orders, streams what changed),
  ``set_quote(epic, bid, offer=None)`` (deterministic moves; a crossed stop or limit closes its
  position: CONFIRMS + OPU ``DELETED`` on the TRADE stream), ``set_market_status(epic,
  "TRADEABLE"|"CLOSED"|"EDITS_ONLY")``, ``quote(epic)`` (the snapshot), ``market_fields(epic)``
  (what the MARKET item streams), ``positions(account_id=None)`` (``GET /positions`` v2
  entries), ``working_orders()``, ``confirms()`` (every confirm by deal reference, lost ones
  too); ``market`` is the ``IgMarket`` (market.py: the matching rules).
- Fault knobs (each also ``POST /_fake/faults/<name>`` with the keyword arguments as JSON):
  ``fail_next(count=1, *, status=500, category=None)`` (5xx ``{"errorCode":"system.error"}``),
  ``fail_after_next(count=1, *, status=504, category="trading")`` (the request is carried out
  -- the deal is made -- but the answer is a 5xx),
  ``rate_limit_next(count=1, *, kind="trading"|"account"|"api-key", category=None)`` (403
  ``error.public-api.exceeded-account-trading-allowance`` / ``-account-allowance`` /
  ``-api-key-allowance``), ``delay_confirms(reads)`` (each new confirm answers 404 ``reads``
  times first), ``lose_confirms(count=1)`` (the next deals happen but their confirm is 404
  forever and no CONFIRMS is streamed; the OPU is), ``reject_next(count=1, *, reason=...)``
  (REJECTED confirms), ``drop_streams()`` (closes every Lightstreamer socket),
  ``amend_levels_elsewhere(deal_id, stop=, limit=)`` (a deal's levels set or removed outside
  our session, as from IG's web platform),
  ``hold_trade_subscriptions()`` / ``release_trade_subscriptions()`` (a TRADE subscription
  is acknowledged but not live -- no SUBOK -- until released: account updates meanwhile
  reach nobody, as in a reconnect's gap),
  ``expire_tokens()``, ``set_environment(env)``, ``set_market_status(epic, status)``,
  ``clear_faults()``. ``category`` is ``"trading"``, ``"non-trading"`` or ``"session"``.
- Allowances (``Allowances``): 100 trading requests/min per account, 30 non-trading/min per
  account, 60/min per API key (rolling minute on ``rate_clock``; a refused request does not
  count); ``Allowances.unlimited()`` switches them off.
- Observation: ``request_log(category=None) -> list[RequestRecord]`` (method (``_method``
  applied), path below ``/gateway/deal``, category, status, error_code, account_id, version,
  body, monotonic_ns, ts_ns), ``stream_events`` (every TRADE update made: ``TradeEvent``
  account_id/field/payload), ``stream_count()``, ``subscriptions()``, ``tlcp_requests``.
- ``python -m tools.fake_ig --port N [--environment LIVE]`` serves one on the wall clock,
  stepping by itself (``step_interval_s``), for demos.
- Admin over HTTP: ``GET /_fake/state``, ``GET /_fake/requests``, ``POST /_fake/advance
  {"seconds": s}``, ``POST /_fake/quote {"epic", "bid", "offer"?}``,
  ``POST /_fake/faults/<name>``.

Wire behaviour (REST, under ``/gateway/deal``)
------------------------------------------------
- Every request needs ``X-IG-API-KEY`` (else 403 ``error.security.api-key-missing`` /
  ``-invalid``); all but ``POST /session`` need ``CST`` and ``X-SECURITY-TOKEN`` (401
  ``error.security.client-token-missing`` / ``client-token-invalid`` /
  ``account-token-invalid``). ``IG-ACCOUNT-ID`` is ignored (a v3 OAuth header; with CST tokens
  the session's active account applies, as ``PUT /session`` set it). JSON in and
  out; errors are ``{"errorCode": ...}``. ``POST`` + header ``_method: DELETE`` is a DELETE.
- ``POST /session`` {identifier, password} (401 ``error.security.invalid-details``): tokens in
  the CST / X-SECURITY-TOKEN response headers, body with accountType, accountInfo,
  currentAccountId, accounts, clientId, lightstreamerEndpoint, hasActive{Demo,Live}Accounts.
  ``GET /session`` (``?fetchSessionTokens=true`` repeats the headers), ``PUT /session``
  {accountId, defaultAccount} switches the active account (412
  ``error.switch.accountId-must-be-different``; unknown: 401
  ``error.security.account-access-denied``), ``DELETE /session`` (204). ``GET /accounts``.
- ``POST /positions/otc`` (epic, expiry, direction, size, orderType MARKET|LIMIT (+level),
  currencyCode, forceOpen, guaranteedStop, stopLevel|stopDistance, limitLevel|limitDistance,
  dealReference ``[A-Za-z0-9_-]{1,30}``) answers only ``{"dealReference"}``; malformed input is
  a 400 ``validation.*`` code and deals nothing (a stop/limit without ``forceOpen: true`` is
  ``validation.invalid.request.forceOpen``). A deal reference already used answers the same
  reference and deals nothing. The outcome is ``GET /confirms/{ref}`` (404
  ``error.confirms.deal-not-found`` until ready) and the TRADE stream's CONFIRMS: dealStatus
  ACCEPTED or REJECTED with IG's reason (MINIMUM_ORDER_SIZE_ERROR, ATTACHED_ORDER_LEVEL_ERROR,
  MARKET_CLOSED_WITH_EDITS, ...). Without forceOpen a deal against an opposite position nets.
- Close: ``POST /positions/otc`` + ``_method: DELETE`` {dealId (or epic), direction, size,
  orderType}. Amend: ``PUT /positions/otc/{dealId}`` {stopLevel, limitLevel}. ``GET
  /positions`` (v2 shape), ``GET /positions/{dealId}``. Working orders: ``GET /workingorders``,
  ``POST /workingorders/otc`` (type LIMIT|STOP, level, ...), ``DELETE
  /workingorders/otc/{dealId}`` (or ``_method``). ``GET /markets/{epic}`` (v3: instrument,
  dealingRules.minDealSize / minNormalStopOrLimitDistance, snapshot bid/offer/marketStatus).
  ``GET /history/activity`` (v3 shape: opens and closes of the active account since ``from``,
  ``details.dealReference`` and ``details.actions`` [{actionType POSITION_OPENED |
  POSITION_CLOSED | POSITION_PARTIALLY_CLOSED, affectedDealId}]; every line's dealId is the
  position's; one page).

Streaming (Lightstreamer TLCP 2.4.0 over WebSocket, ``/lightstreamer``, subprotocol
``TLCP-2.4.0.lightstreamer.com``): ``wsok`` -> ``WSOK``; ``create_session`` with LS_user =
accountId (optional) and LS_password ``CST-<cst>|XST-<xst>`` -> ``CONOK,<id>,50000,<keepalive
ms>,*`` (bad credentials: ``CONERR,1,...``); ``bind_session`` of a known session rebinds it
(unknown: ``CONERR,20``); ``control`` add/delete/destroy -> ``REQOK``, ``SUBOK``, ``UNSUB``;
items ``MARKET:{epic}`` (BID OFFER UPDATE_TIME MARKET_STATE, a snapshot on request) and
``TRADE:{accountId}`` (CONFIRMS OPU WOU as JSON strings, DISTINCT: ``EOS`` after an empty
snapshot); ``U`` lines with TLCP's field encoding; ``PROBE`` every ``probe_interval_s``.
HTTP-streaming and polling transports are not implemented (the SDK's default, WebSocket, is);
so neither is session recovery (``LS_recovery_from``, which the SDK tries over HTTP): after a
drop the SDK waits out its ``sessionRecoveryTimeout`` (15 s by default), then creates a new
session with ``LS_old_session`` and subscribes again. ``tlcp_requests`` records every TLCP
request received (kind and parameters, passwords left out).
"""

from __future__ import annotations

from tools.fake_ig.market import (
    DEFAULT_ACCOUNTS,
    DEFAULT_INSTRUMENTS,
    IgAccount,
    IgInstrument,
    IgMarket,
    TradeEvent,
)
from tools.fake_ig.server import Allowances, FakeIG, IgError, RequestRecord

__all__ = [
    "DEFAULT_ACCOUNTS",
    "DEFAULT_INSTRUMENTS",
    "Allowances",
    "FakeIG",
    "IgAccount",
    "IgError",
    "IgInstrument",
    "IgMarket",
    "RequestRecord",
    "TradeEvent",
]
