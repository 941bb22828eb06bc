"""``IgRestClient``: IG's REST trading API over httpx, with the session kept alive.

Every request carries ``X-IG-API-KEY``, ``Version`` (per endpoint), ``CST``,
``X-SECURITY-TOKEN`` and ``IG-ACCOUNT-ID``; bodies are JSON.

The session. ``login`` sends ``POST /session`` v2 (identifier, password; the tokens arrive in
the ``CST`` and ``X-SECURITY-TOKEN`` response headers), then ``PUT /session`` to switch to the
configured account when IG made another one current. IG's tokens lapse after hours of use
(6 h) or minutes of idleness, so the client logs in again before ``session_max_age_s`` and,
when a request meets a 401 (``error.security.client-token-invalid``), logs in once more and
repeats that request once; if the login itself is refused, ``IgAuthRefused`` (a
``BrokerAuthExpired``) goes up and ``on_session_refused`` is told once per episode (the
broker reports ``BrokerSessionChanged(valid=False)``), and ``on_session_restored`` when a
later login works.

Failures (``parsing.error_from_response``): a timeout or connection error, a 5xx, or a 2xx
whose body is not JSON: ``BrokerUnavailable`` (the request may have arrived); 403
``error.public-api.exceeded-*-allowance``: ``BrokerRateLimited``; another 4xx with an
``errorCode``: ``BrokerRejected``. Only reads are retried (a few quick attempts on
``BrokerUnavailable``); deals are sent once: a lost answer is settled by the dealReference's
confirm, never by sending the deal again.

Secrets (password, API key, tokens) never appear in logs, exceptions or ``repr``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.brokers.ig.parsing import IgAuthRefused, error_from_response

__all__ = ["IgCredentials", "IgRestClient", "IgSession"]

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 3


class IgCredentials:
    """The API key, the login identifier and password."""

    def __init__(self, *, api_key: str, identifier: str, password: str) -> None:
        missing = [
            name
            for name, value in (
                ("api_key", api_key),
                ("identifier", identifier),
                ("password", password),
            )
            if not value
        ]
        if missing:
            raise ValueError(
                f"ig: {missing} empty (set ig.* or IG_API_KEY, IG_IDENTIFIER, IG_PASSWORD)"
            )
        self.api_key = api_key
        self.identifier = identifier
        self.password = password

    def __repr__(self) -> str:
        return f"IgCredentials(identifier={self.identifier!r}, api_key=<hidden>, password=<hidden>)"


class IgSession(msgspec.Struct, frozen=True, kw_only=True):
    """The tokens of one login and the account IG made current."""

    cst: str
    security_token: str
    account_id: str
    lightstreamer_endpoint: str
    created_monotonic: float

    def __repr__(self) -> str:
        return f"IgSession(account_id={self.account_id!r}, tokens=<hidden>)"


class IgRestClient:
    """Calls IG's REST API with a live session.

    Args:
        base_url: ``https://demo-api.ig.com/gateway/deal``, the live one, or a fake's.
        credentials: API key, identifier, password.
        account_id: the account to trade; the session is switched to it after each login.
        timeout_s: per-request timeout.
        session_max_age_s: log in again before a session gets this old.
        on_session_refused: told (detail) when IG refuses the login, once per episode.
        on_session_restored: told when a login works after a refusal.
    """

    def __init__(
        self,
        *,
        base_url: str,
        credentials: IgCredentials,
        account_id: str,
        timeout_s: float = 7.0,
        session_max_age_s: float = 5.5 * 3600,
        on_session_refused: Callable[[str], None] | None = None,
        on_session_restored: Callable[[], None] | None = None,
        read_retry_wait_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self.account_id = account_id
        self._session_max_age_s = session_max_age_s
        self._on_session_refused = on_session_refused
        self._on_session_restored = on_session_restored
        self._read_retry_wait_s = read_retry_wait_s
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            headers={
                "X-IG-API-KEY": credentials.api_key,
                "Accept": "application/json; charset=UTF-8",
                "Content-Type": "application/json; charset=UTF-8",
            },
        )
        self._login_lock = threading.Lock()
        self._session: IgSession | None = None
        self._refused = False
        self.logins_total = 0
        self.requests_total = 0
        self.accounts: list[dict[str, Any]] = []
        # The last login's answer (and the account switch's flags): whether the login has
        # live or demo accounts (a fake rehearsing LIVE says so here).
        self.session_info: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"IgRestClient(base_url={self.base_url!r}, account_id={self.account_id!r})"

    def close(self) -> None:
        """Log out (``DELETE /session``, best effort: IG limits open sessions) and close."""
        session = self._session
        self._session = None
        if session is not None:
            try:
                self._send("DELETE", "/session", version="1", session=session)
            except BrokerUnavailable as error:
                logger.info("ig: logout not answered: %s", error)
        self._client.close()

    @property
    def session(self) -> IgSession | None:
        return self._session

    @property
    def session_refused(self) -> bool:
        return self._refused

    # ------------------------------------------------------------------ session
    def login(self) -> IgSession:
        """``POST /session`` v2, then ``PUT /session`` to the configured account if needed.

        Raises:
            IgAuthRefused: IG refused the credentials (told to ``on_session_refused``).
            BrokerUnavailable: IG did not answer.
            BrokerRejected: the configured account is not one of this login's.
        """
        with self._login_lock:
            return self._login_locked(stale=None)

    def _login_locked(self, stale: IgSession | None) -> IgSession:
        current = self._session
        if current is not None and current is not stale and not self._too_old(current):
            return current  # another thread logged in while this one waited
        body = {
            "identifier": self._credentials.identifier,
            "password": self._credentials.password,
        }
        self.logins_total += 1
        try:
            response = self._send("POST", "/session", version="2", json=body, session=None)
            self._raise_for_error(response, "POST /session", None)
        except IgAuthRefused as error:
            self._session = None
            if not self._refused:
                self._refused = True
                logger.error("ig: the login was refused: %s", error)
                if self._on_session_refused is not None:
                    self._on_session_refused(str(error))
            raise
        cst = response.headers.get("CST") or ""
        token = response.headers.get("X-SECURITY-TOKEN") or ""
        data = _json(response)
        if not cst or not token or not isinstance(data, dict):
            raise BrokerUnavailable(
                "IG_BAD_ANSWER: POST /session answered without CST/X-SECURITY-TOKEN headers"
            )
        session = IgSession(
            cst=cst,
            security_token=token,
            account_id=str(data.get("currentAccountId") or ""),
            lightstreamer_endpoint=str(data.get("lightstreamerEndpoint") or ""),
            created_monotonic=time.monotonic(),
        )
        accounts = data.get("accounts")
        self.accounts = [a for a in accounts if isinstance(a, dict)] if accounts else []
        info = {k: v for k, v in data.items() if k.startswith("hasActive")}
        if not self.account_id:
            self.account_id = session.account_id  # none configured: IG's current one
        if session.account_id != self.account_id:
            switch = self._send(
                "PUT",
                "/session",
                version="1",
                json={"accountId": self.account_id, "defaultAccount": False},
                session=session,
            )
            try:
                self._raise_for_error(switch, "PUT /session", None)
            except IgAuthRefused as error:
                # The login worked; the account is not one of its accounts: a configuration
                # error, not refused credentials (no BROKER_AUTH pause, no retry helps).
                raise BrokerRejected(
                    f"IG_ACCOUNT_SWITCH_REFUSED: ig.account_id {self.account_id!r} is not an "
                    f"account of this login ({[a.get('accountId') for a in self.accounts]}): "
                    f"{error}"
                ) from None
            answer = _json(switch) if switch.content else {}
            if isinstance(answer, dict):
                info.update({k: v for k, v in answer.items() if k.startswith("hasActive")})
            # IG may hand out new tokens with the switch.
            session = msgspec.structs.replace(
                session,
                cst=switch.headers.get("CST") or session.cst,
                security_token=switch.headers.get("X-SECURITY-TOKEN") or session.security_token,
                account_id=self.account_id,
            )
        self._session = session
        self.session_info = info
        if self._refused:
            self._refused = False
            logger.info("ig: a login works again; the session is back")
            if self._on_session_restored is not None:
                self._on_session_restored()
        return session

    def _too_old(self, session: IgSession) -> bool:
        return time.monotonic() - session.created_monotonic >= self._session_max_age_s

    def _current_session(self) -> IgSession:
        session = self._session
        if session is None or self._too_old(session):
            with self._login_lock:
                session = self._login_locked(stale=session)
        return session

    # ------------------------------------------------------------------ verbs
    def get(self, path: str, *, version: str = "1", params: dict[str, Any] | None = None) -> Any:
        """GET with a few quick retries on ``BrokerUnavailable`` (never on a refusal, a rate
        limit or a refused login)."""
        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, BrokerUnavailable) and not isinstance(e, IgAuthRefused)
            ),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_exponential(multiplier=self._read_retry_wait_s, max=1.0),
            reraise=True,
        )
        return retrying(self.request, "GET", path, version=version, params=params)

    def get_or_none(self, path: str, *, version: str = "1") -> Any:
        """GET once; a 404 is None (``/confirms/{ref}`` before the deal is confirmed)."""
        return self.request("GET", path, version=version, missing_ok=True)

    def request(
        self,
        method: str,
        path: str,
        *,
        version: str = "1",
        json: Any = None,
        params: dict[str, Any] | None = None,
        client_order_id: str | None = None,
        method_override: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """One authenticated request; on a refused token, one fresh login and one repeat."""
        what = f"{method_override or method} {path}"
        for attempt in (1, 2):
            session = self._current_session()
            response = self._send(
                method,
                path,
                version=version,
                json=json,
                params=params,
                session=session,
                client_order_id=client_order_id,
                method_override=method_override,
            )
            if missing_ok and response.status_code == 404:
                return None
            try:
                self._raise_for_error(response, what, client_order_id)
            except IgAuthRefused:
                if attempt == 2:
                    raise
                logger.info("ig: %s: the session token was refused; logging in again", what)
                with self._login_lock:
                    self._login_locked(stale=session)
                continue
            return _json(response) if response.content else {}
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ internals
    def _send(
        self,
        method: str,
        path: str,
        *,
        version: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        session: IgSession | None,
        client_order_id: str | None = None,
        method_override: str | None = None,
    ) -> httpx.Response:
        headers = {"Version": version}
        if session is not None:
            headers["CST"] = session.cst
            headers["X-SECURITY-TOKEN"] = session.security_token
            headers["IG-ACCOUNT-ID"] = self.account_id
        if method_override:
            headers["_method"] = method_override
        self.requests_total += 1
        what = f"{method_override or method} {path}"
        try:
            return self._client.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException as error:
            raise BrokerUnavailable(
                f"IG_TIMEOUT: {what}: {type(error).__name__}", client_order_id=client_order_id
            ) from None
        except httpx.HTTPError as error:
            raise BrokerUnavailable(
                f"IG_CONNECTION_ERROR: {what}: {type(error).__name__}: {error}",
                client_order_id=client_order_id,
            ) from None

    @staticmethod
    def _raise_for_error(response: httpx.Response, what: str, client_order_id: str | None) -> None:
        if response.status_code < 400:
            return
        raise error_from_response(
            response.status_code, _json(response), client_order_id=client_order_id, what=what
        )


def _json(response: httpx.Response) -> Any:
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        if response.status_code < 400:
            raise BrokerUnavailable(
                f"IG_BAD_ANSWER: http_status={response.status_code}: the body is not JSON"
            ) from None
        return None
