"""``KiteRestClient``: Kite Connect v3 over HTTP (httpx), errors sorted as the port needs.

One ``httpx.Client`` with timeouts; every request carries ``X-Kite-Version: 3`` and
``Authorization: token <api_key>:<access_token>``; bodies are form-encoded; answers are
Kite's envelope (``{"status": "success", "data": ...}``), unwrapped here.

Failures (``parsing.error_from_response`` sorts Kite's answers):
- a timeout or a connection error: ``BrokerUnavailable`` (the request may have arrived);
- a body that is not JSON on a 2xx: ``BrokerUnavailable`` (we cannot tell what happened);
- 403/``TokenException``: ``KiteTokenExpired``; the client remembers it and calls
  ``on_token_expired`` once per token (the engine pauses entries and tells the operator), and
  re-reads the token file before the next request, so a new login is picked up without a
  restart. Nothing is retried.

Only idempotent reads (``get``) are retried, with tenacity: a few quick attempts on
``BrokerUnavailable`` and on a 429 (after its Retry-After, bounded), never on a token or a
rejection. Order placement, modification and cancellation are sent once: a lost answer is
settled from the order list, not by resending (and a 429 on them goes back to the broker
gateway, which owns the order rate limits).

Reads keep under Kite's limit for the other endpoints (``read_limit_per_s``, 10/s by default)
with a ``limits`` moving window: a read waits for room instead of drawing a 429 (reconciliation
polls, a pre-live check's connect and the order-update trade fetches can arrive together).

Thread safety: httpx's client is thread-safe; the token state is behind a lock. Secrets never
appear in logs, exceptions or ``repr``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from adapters.brokers.base import BrokerRateLimited, BrokerUnavailable
from adapters.brokers.kite.parsing import KiteTokenExpired, error_from_response

__all__ = ["KiteCredentials", "KiteRestClient"]

logger = logging.getLogger(__name__)

KITE_VERSION = "3"
READ_ATTEMPTS = 4
_MAX_READ_RETRY_AFTER_S = 5.0


class KiteCredentials:
    """The API key and the day's access token, from a value or a file re-read when it changes.

    ``access_token_file`` wins over ``access_token`` when both are set: ``tools.kite_login``
    writes the file, and the running engine picks the new token up at its next request.
    """

    def __init__(
        self, *, api_key: str, access_token: str | None = None, access_token_file: str | None = None
    ) -> None:
        if not api_key:
            raise ValueError("kite: api_key is empty (set KITE_API_KEY or kite.api_key)")
        self.api_key = api_key
        self._token = access_token or ""
        self._file = Path(access_token_file) if access_token_file else None
        self._file_mtime_ns: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KiteCredentials(api_key=<{len(self.api_key)} chars>, access_token=<hidden>)"

    def access_token(self) -> str:
        """The current token (the file's content when a file is configured and readable)."""
        with self._lock:
            if self._file is not None:
                try:
                    mtime = self._file.stat().st_mtime_ns
                    if mtime != self._file_mtime_ns:
                        self._token = self._file.read_text().strip()
                        self._file_mtime_ns = mtime
                except OSError:
                    pass  # keep the last token read; the request will say if it is refused
            return self._token


class KiteRestClient:
    """Calls Kite's REST API and unwraps its envelope.

    Args:
        base_url: ``https://api.kite.trade`` or the fake's base.
        credentials: the API key and access token source.
        timeout_s: per-request timeout (connect, read, write, pool).
        on_token_expired: called (once per token) on the first 403/``TokenException``, with
            the error text and the refused token.
        on_token_accepted: called with the token of every successful authenticated call (on
            the caller's thread; it must be cheap): a new token that works ends a refusal.
        read_retry_wait_s: the first wait before a failed read is tried again.
        read_limit_per_s: reads in any trailing second (Kite: 10/s); None: unlimited.
    """

    def __init__(
        self,
        *,
        base_url: str,
        credentials: KiteCredentials,
        timeout_s: float = 7.0,
        on_token_expired: Callable[[str, str], None] | None = None,
        on_token_accepted: Callable[[str], None] | None = None,
        read_retry_wait_s: float = 0.2,
        read_limit_per_s: int | None = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._on_token_expired = on_token_expired
        self._on_token_accepted = on_token_accepted
        self._read_retry_wait_s = read_retry_wait_s
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            headers={"X-Kite-Version": KITE_VERSION},
        )
        self._read_window = (
            RateLimitItemPerSecond(read_limit_per_s) if read_limit_per_s is not None else None
        )
        self._read_limiter = (
            MovingWindowRateLimiter(MemoryStorage()) if read_limit_per_s is not None else None
        )
        self._lock = threading.Lock()
        self._expired_token: str | None = None
        self.requests_total = 0

    def close(self) -> None:
        self._client.close()

    @property
    def token_expired(self) -> bool:
        """The current token was refused (and no new one has been configured since)."""
        with self._lock:
            expired = self._expired_token
        return expired is not None and expired == self._credentials.access_token()

    # ------------------------------------------------------------------ verbs
    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and return the envelope's ``data``; retried on ``BrokerUnavailable``
        (a read is idempotent), never on a rejection, a rate limit or an expired token."""
        return self._read_retrying()(self._request, "GET", path, params=params)

    def get_text(self, path: str) -> str:
        """GET a non-JSON resource (the instruments CSV); retried like ``get``."""
        return self._read_retrying()(self._request, "GET", path, raw=True)

    def post(self, path: str, form: dict[str, str], *, client_order_id: str | None = None) -> Any:
        """POST a form once (never retried here)."""
        return self._request("POST", path, data=form, client_order_id=client_order_id)

    def put(self, path: str, form: dict[str, str], *, client_order_id: str | None = None) -> Any:
        """PUT a form once."""
        return self._request("PUT", path, data=form, client_order_id=client_order_id)

    def delete(self, path: str, *, client_order_id: str | None = None) -> Any:
        """DELETE once."""
        return self._request("DELETE", path, client_order_id=client_order_id)

    def post_unauthenticated(self, path: str, form: dict[str, str]) -> Any:
        """POST without a session (``/session/token``)."""
        return self._request("POST", path, data=form, authenticate=False)

    # ------------------------------------------------------------------ internals
    def _read_retrying(self) -> Retrying:
        # An expired token is a BrokerUnavailable too, but retrying it would only knock again.
        return Retrying(
            retry=retry_if_exception(_read_is_retryable),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=self._read_wait,
            reraise=True,
        )

    def _read_wait(self, state: RetryCallState) -> float:
        backoff = float(wait_exponential(multiplier=self._read_retry_wait_s, max=2.0)(state))
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, BrokerRateLimited) and error.retry_after_s is not None:
            return min(max(backoff, error.retry_after_s), _MAX_READ_RETRY_AFTER_S)
        return backoff

    def _take_read_slot(self) -> None:
        if self._read_limiter is None or self._read_window is None:
            return
        while not self._read_limiter.hit(self._read_window, "kite-read"):
            reset_at, _ = self._read_limiter.get_window_stats(self._read_window, "kite-read")
            # Waits for the window to open, not for a condition another thread sets.
            time.sleep(min(max(reset_at - time.time(), 0.005), 1.0))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        client_order_id: str | None = None,
        raw: bool = False,
        authenticate: bool = True,
    ) -> Any:
        what = f"{method} {path}"
        if method == "GET":
            self._take_read_slot()
        headers = {}
        token = ""
        if authenticate:
            token = self._credentials.access_token()
            headers["Authorization"] = f"token {self._credentials.api_key}:{token}"
        self.requests_total += 1
        try:
            response = self._client.request(method, path, params=params, data=data, headers=headers)
        except httpx.TimeoutException as error:
            raise BrokerUnavailable(
                f"KITE_TIMEOUT: {what}: {type(error).__name__}", client_order_id=client_order_id
            ) from None
        except httpx.HTTPError as error:
            raise BrokerUnavailable(
                f"KITE_CONNECTION_ERROR: {what}: {type(error).__name__}: {error}",
                client_order_id=client_order_id,
            ) from None
        body: Any = None
        if not (raw and response.status_code < 400):
            try:
                body = msgspec.json.decode(response.content)
            except msgspec.DecodeError:
                body = None
        is_error = response.status_code >= 400 or (
            isinstance(body, dict) and body.get("status") == "error"
        )
        if is_error:
            error = error_from_response(
                response.status_code,
                body,
                retry_after=response.headers.get("Retry-After"),
                client_order_id=client_order_id,
                what=what,
            )
            if isinstance(error, KiteTokenExpired):
                self._token_refused(token, error)
            raise error
        if authenticate:
            if self._expired_token is not None and token != self._expired_token:
                self._token_works_again(token)
            if self._on_token_accepted is not None:
                self._on_token_accepted(token)
        if raw:
            return response.text
        if not isinstance(body, dict) or body.get("status") != "success":
            raise BrokerUnavailable(
                f"KITE_BAD_ANSWER: {what}: http_status={response.status_code} the body is not "
                "Kite's success envelope",
                client_order_id=client_order_id,
            )
        return body.get("data")

    def _token_works_again(self, token: str) -> None:
        with self._lock:
            if self._expired_token is None or token == self._expired_token:
                return
            self._expired_token = None
        logger.info("kite: a new access token works; the session is back")

    def _token_refused(self, token: str, error: KiteTokenExpired) -> None:
        with self._lock:
            first = self._expired_token != token
            self._expired_token = token
        if first:
            logger.error("%s", error)
            if self._on_token_expired is not None:
                try:
                    self._on_token_expired(str(error), token)
                except Exception:
                    logger.exception("kite: the token-expired callback failed")


def _read_is_retryable(error: BaseException) -> bool:
    return isinstance(error, BrokerUnavailable | BrokerRateLimited) and not isinstance(
        error, KiteTokenExpired
    )
