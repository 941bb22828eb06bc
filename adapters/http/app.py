"""The admin API as a WSGI application: routing, auth, body decoding and error mapping.

The app owns no engine state. Each route decodes its msgspec request, makes one call on a
``ControlPort`` (which ``actors.control`` implements by asking the actors with timeouts) and
encodes the reply. Auth, body limits and the error mapper live in one place, ``AdminApp``.

Routes. Both dialects share one handler per meaning:

=========================  ======  =======================  ===========================
AITRAPP runbook            method  SOLAT runbook alias      handler / response
=========================  ======  =======================  ===========================
/health                    GET     -                        health / HealthView
/ready                     GET     -                        ready / ReadyView (503 if not)
/status                    GET     /execution/status        status / StatusView
/mode                      POST    -                        set_mode / ModeResult
/pause                     POST    /execution/pause         pause / StatusView
/resume                    POST    /execution/resume        resume / StatusView
/flatten                   POST    /execution/flatten       flatten / FlattenCompleted
/positions                 GET     /execution/positions     positions / PositionsView
/orders?limit=N            GET     /execution/orders        orders / OrdersView
/risk                      GET     /execution/risk          risk / RiskView
-                          POST    /execution/kill-switch/activate  kill_switch_activate /
                                                            KillSwitchView
-                          POST    /execution/kill-switch/reset     kill_switch_reset /
                                                            KillSwitchView
-                          GET     /execution/kill-switch   kill_switch / KillSwitchView
-                          POST    /execution/arm           arm / ArmView (409
                                                            LIVE_GATES_BLOCKED + blockers)
-                          POST    /execution/disarm        disarm / ArmView
-                          GET     /execution/reconcile/report  reconcile_report /
                                                            ReconcileReportView (503 if none)
-                          POST    /execution/connect       connect / ConnectView (502 with
                                                            ok false when it fails)
-                          GET     /execution/gates         gates / GatesView
-                          POST    /execution/prelive/run   prelive_run / PreliveView
-                          POST    /execution/live/confirm  live_confirm / LiveConfirmView
-                          POST    /execution/live/revoke   live_revoke / ArmView
-                          POST    /execution/circuit-breaker/reset  circuit_breaker_reset /
                                                            GatesView
-                          GET     /execution/audit?limit=N audit / AuditView
/metrics                   GET     -                        Prometheus text 0.0.4
/debug/actors              GET     -                        actor snapshots (JSON object)
/openapi.json              GET     -                        OpenAPI 3.1 document
=========================  ======  =======================  ===========================

The operator console (``adapters/http/console/``: static HTML, JS and CSS shipped in the
package, no build step, nothing fetched from elsewhere) is served at ``GET /`` and
``GET /console/<asset>``. Those pages hold no data and need no token; the page calls the JSON
routes above with the bearer token the operator types into it, kept in page memory only. They
carry a strict ``Content-Security-Policy`` (``CONSOLE_CSP``: scripts, styles and fetches from
this origin only, no inline script, no framing). Every response says
``X-Content-Type-Options: nosniff``.

``PLANNED_ROUTES`` lists SOLAT routes that do not exist yet (none now); such a route answers
501 ``NOT_IMPLEMENTED`` with a pointer to what to use instead, rather than a bare 404.

The kill switch: ``activate`` trips the sticky HALT (body optional, reason defaults to
``manual``; closes every position when ``close_on_kill_switch``); ``reset`` clears it, audited
with the operator and reason, and leaves the engine disarmed (``POST /execution/arm`` to trade
again, after ``POST /resume`` if pauses remain). ``POST /resume`` while HALTED is a 409
``HALTED`` naming the HALT and the reset route.

The gated path to LIVE (one gate model, ``domain.live_gates``, in the kill switch actor, driven
by both dialects). ``POST /execution/arm`` with ``live_mode`` true arms in LIVE only when every
gate holds, else 409 ``LIVE_GATES_BLOCKED`` with ``blockers``; ``confirm`` false is a 400.
``POST /mode {"mode":"LIVE","confirm":"CONFIRM LIVE TRADING"}`` goes through the same gates
(403 ``MODE_BLOCKED`` with ``blockers``); leaving LIVE by ``/mode`` is a revoke.
``POST /execution/connect`` answers 200, or 502 with ``ok`` false and the reason in
``message`` (the code of that failure is ``BROKER_UNAVAILABLE``; the engine disarms).
``POST /execution/prelive/run`` answers 200 whether the checks pass or not (``passed``).
``POST /execution/live/confirm`` refusals: 400 ``BAD_PHRASE``, 403 ``BAD_TOKEN`` or
``BAD_ACCOUNT``, 409 ``NOT_CONFIGURED``; no message ever holds the token.
``POST /execution/circuit-breaker/reset`` refused before the cooldown: 409.
In REHEARSAL (``config.rehearsal``: the paper venue presents a LIVE account) every response
carries ``X-Vigil-Rehearsal: REHEARSAL``, the views' ``rehearsal`` is true, and the messages of
ConnectView, ArmView, ModeResult and LiveConfirmView start with ``REHEARSAL: ``.

Errors. Every failure is JSON ``ErrorBody`` (``{"error": CODE, "message": ...}``): 404
``NOT_FOUND``, 405 ``METHOD_NOT_ALLOWED``, 400 ``BAD_REQUEST`` (the message names the field and
why), 413 ``PAYLOAD_TOO_LARGE`` (body over 64 KiB), 415 ``UNSUPPORTED_MEDIA_TYPE``, 401
``UNAUTHORIZED``, a ``ControlError`` as its own status and code, and anything else 500
``INTERNAL`` with an error id; the traceback goes to the server log only.

Auth. Tokens: ``http.token`` (the operator named ``admin``) and ``http.tokens`` (name ->
token). With any token configured, every POST, and every GET that shows operator text
(reasons, details, the audit trail), needs ``Authorization: Bearer <token>``: ``/status``,
``/execution/status``, ``/orders``, ``/execution/orders`` (order reasons),
``/execution/kill-switch``, ``/execution/gates``, ``/execution/audit`` and ``/debug/actors``.
Open: ``/health``, ``/ready``, ``/metrics``, ``/openapi.json``, ``/positions``, ``/risk`` and
their aliases, and ``/execution/reconcile/report`` (figures only). The presented token is
compared with EVERY configured token in constant time (``hmac.compare_digest``, no early
exit); the name of the one it matched (``local`` when none is configured) and the client
address (REMOTE_ADDR) are the ``OperatorRef`` passed to every ``ControlPort`` method that
changes the engine. Tokens never appear in a log line or a response.

Content types. A JSON body may come as ``application/json`` (or ``+json``), with no content
type, or as ``application/x-www-form-urlencoded``: the latter is what ``curl -d`` sends
without ``-H``, as the runbook's emergency rollback does, so it is read as JSON too.

Thread safety: ``AdminApp`` is immutable after construction; the WSGI server calls it from
several threads at once, so a ``ControlPort`` must be thread-safe.
"""

from __future__ import annotations

import hmac
import importlib.resources
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from adapters.http.openapi import Operation, QueryParameter, build_openapi
from domain.messages.api import (
    ArmRequest,
    ArmView,
    AuditView,
    CircuitBreakerResetRequest,
    ConnectView,
    DisarmRequest,
    ErrorBody,
    FlattenRequest,
    GatesView,
    HealthView,
    KillSwitchActivateRequest,
    KillSwitchResetRequest,
    KillSwitchView,
    LiveConfirmRequest,
    LiveConfirmView,
    ModeRequest,
    ModeResult,
    OrdersView,
    PauseRequest,
    PositionsView,
    PreliveView,
    ReadyView,
    Reason,
    ReconcileReportView,
    RevokeRequest,
    RiskView,
    StatusView,
)
from domain.messages.control import OperatorRef
from domain.messages.orders import FlattenCompleted

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ADMIN_TOKEN_NAME",
    "AUDIT_LIMIT_DEFAULT",
    "AUDIT_LIMIT_MAX",
    "CONSOLE_CSP",
    "LOCAL_OPERATOR",
    "MAX_BODY_BYTES",
    "METRICS_CONTENT_TYPE",
    "OPERATIONS",
    "ORDERS_LIMIT_DEFAULT",
    "ORDERS_LIMIT_MAX",
    "PLANNED_ROUTES",
    "REHEARSAL_HEADER",
    "REHEARSAL_PREFIX",
    "AdminApp",
    "ControlError",
    "ControlPort",
    "build_app",
]

_log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ORDERS_LIMIT_DEFAULT = 200
ORDERS_LIMIT_MAX = 1000
AUDIT_LIMIT_DEFAULT = 100
AUDIT_LIMIT_MAX = 1000
# The name ``http.token`` goes by in the audit trail; ``local`` when no token is configured.
ADMIN_TOKEN_NAME = "admin"
LOCAL_OPERATOR = "local"
# A request to an open route while tokens are configured (never passed to the port today).
_ANONYMOUS = "anonymous"
# REHEARSAL (config.rehearsal): every response carries this header, and the messages of the
# views that change what the engine may do start with the prefix.
REHEARSAL_HEADER = "X-Vigil-Rehearsal"
REHEARSAL_PREFIX = "REHEARSAL: "
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JSON_CONTENT_TYPE = "application/json"
_JSON_LIKE_MIMETYPES = frozenset({"", "application/json", "application/x-www-form-urlencoded"})

# The console's pages: everything from this origin only, no inline script or style, no plugins,
# no framing (clickjacking), forms post nowhere (the page sends JSON with fetch).
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_CONSOLE_PACKAGE = "adapters.http"
_CONSOLE_FOLDER = "console"
_CONSOLE_INDEX = "index.html"
_CONSOLE_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_CONSOLE_ENDPOINT = "console:"

_StructT = TypeVar("_StructT", bound=msgspec.Struct)
_ViewT = TypeVar("_ViewT")
# The views whose message starts with "REHEARSAL: " in rehearsal.
_REHEARSED_MESSAGE_VIEWS = (ConnectView, ArmView, ModeResult, LiveConfirmView)


# ---------------------------------------------------------------------------------------------
# THE PORT
# ---------------------------------------------------------------------------------------------


class ControlError(Exception):
    """A refusal or failure a ``ControlPort`` method reports to the HTTP client.

    Args:
        status: HTTP status (4xx or 5xx; anything else is served as 500).
        code: UPPER_SNAKE code, served as ``error`` (e.g. ``LIVE_GATES_BLOCKED``, ``TIMEOUT``).
        message: human text with the figures.
        blockers: the failed gates, when a gate refused.
    """

    def __init__(
        self, status: int, code: str, message: str, blockers: list[str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.blockers = blockers


class ControlPort(Protocol):
    """What the admin API needs from the engine. Every method is called from a server thread,
    must be thread-safe and must return within its own timeout; a refusal or a timeout is a
    ``ControlError``, anything else raised becomes a 500.

    Every method that changes the engine takes ``by``: who asked (the name of the bearer token
    the request came with, ``local`` when the API has no token) and from which address, for
    the audit trail. Tokens themselves never reach the port."""

    def health(self) -> HealthView: ...

    def ready(self) -> ReadyView: ...

    def status(self) -> StatusView: ...

    def set_mode(self, request: ModeRequest, *, by: OperatorRef) -> ModeResult: ...

    def pause(self, request: PauseRequest, *, by: OperatorRef) -> StatusView: ...

    def resume(self, *, by: OperatorRef) -> StatusView: ...

    def flatten(self, request: FlattenRequest, *, by: OperatorRef) -> FlattenCompleted: ...

    def positions(self) -> PositionsView: ...

    def orders(self, limit: int) -> OrdersView: ...

    def risk(self) -> RiskView: ...

    def kill_switch_activate(
        self, request: KillSwitchActivateRequest, *, by: OperatorRef
    ) -> KillSwitchView: ...

    def kill_switch_reset(
        self, request: KillSwitchResetRequest, *, by: OperatorRef
    ) -> KillSwitchView: ...

    def kill_switch(self) -> KillSwitchView: ...

    def arm(self, request: ArmRequest, *, by: OperatorRef) -> ArmView: ...

    def disarm(self, request: DisarmRequest, *, by: OperatorRef) -> ArmView: ...

    def reconcile_report(self) -> ReconcileReportView: ...

    def connect(self, *, by: OperatorRef) -> ConnectView:
        """Connect to the broker now; a failure is ``ok`` false (served as 502), not raised."""
        ...

    def gates(self) -> GatesView: ...

    def prelive_run(self, *, by: OperatorRef) -> PreliveView: ...

    def live_confirm(self, request: LiveConfirmRequest, *, by: OperatorRef) -> LiveConfirmView: ...

    def live_revoke(self, request: RevokeRequest, *, by: OperatorRef) -> ArmView: ...

    def circuit_breaker_reset(
        self, request: CircuitBreakerResetRequest, *, by: OperatorRef
    ) -> GatesView: ...

    def audit(self, limit: int) -> AuditView: ...

    def debug_actors(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# ROUTE TABLE
# ---------------------------------------------------------------------------------------------

_REASON_QUERY = QueryParameter(
    name="reason",
    description="Same as the body's reason; use one or the other (or the same value in both).",
    # The same constraints the body's field has (1 to 200 characters), from the same type.
    schema=tuple(msgspec.json.schema(Reason).items()),
)
_LIMIT_QUERY = QueryParameter(
    name="limit",
    description=f"How many of the newest orders to return, 1 to {ORDERS_LIMIT_MAX}.",
    schema=(
        ("type", "integer"),
        ("minimum", 1),
        ("maximum", ORDERS_LIMIT_MAX),
        ("default", ORDERS_LIMIT_DEFAULT),
    ),
)
_AUDIT_LIMIT_QUERY = QueryParameter(
    name="limit",
    description=f"How many of the newest audit rows to return, 1 to {AUDIT_LIMIT_MAX}.",
    schema=(
        ("type", "integer"),
        ("minimum", 1),
        ("maximum", AUDIT_LIMIT_MAX),
        ("default", AUDIT_LIMIT_DEFAULT),
    ),
)
_CONNECT_FAILED = (
    (
        502,
        "BROKER_UNAVAILABLE: the connect failed (ok false, the message says why); the engine "
        "disarmed",
        ConnectView,
    ),
)
_NOT_READY = ((503, "NOT READY: the blockers say why", ReadyView),)
_NO_REPORT = (
    (
        503,
        "RECONCILE_UNAVAILABLE: no report to give (the order actor is down or has none)",
        ErrorBody,
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    # AITRAPP dialect
    Operation("/health", "GET", "health", "Liveness", HealthView),
    Operation("/ready", "GET", "ready", "Readiness", ReadyView, extra_responses=_NOT_READY),
    Operation(
        "/status",
        "GET",
        "status",
        "Mode, armed, trading state, figures",
        StatusView,
        shows_operator_text=True,
    ),
    Operation("/mode", "POST", "set_mode", "Switch PAPER/DEMO/LIVE", ModeResult, ModeRequest),
    Operation(
        "/pause", "POST", "pause", "Pause entries", StatusView, PauseRequest, (_REASON_QUERY,)
    ),
    Operation("/resume", "POST", "resume", "Resume entries (operator pause)", StatusView),
    Operation(
        "/flatten",
        "POST",
        "flatten",
        "Cancel working siblings, close every position",
        FlattenCompleted,
        FlattenRequest,
        (_REASON_QUERY,),
    ),
    Operation("/positions", "GET", "positions", "Open positions", PositionsView),
    Operation(
        "/orders",
        "GET",
        "orders",
        "Newest orders",
        OrdersView,
        query=(_LIMIT_QUERY,),
        shows_operator_text=True,
    ),
    Operation("/risk", "GET", "risk", "Risk limits, usage and recent blocks", RiskView),
    Operation(
        "/metrics",
        "GET",
        "metrics",
        "Prometheus metrics",
        None,
        response_media_type=METRICS_CONTENT_TYPE,
    ),
    Operation(
        "/debug/actors",
        "GET",
        "debug_actors",
        "Every actor's snapshot",
        dict[str, Any],
        shows_operator_text=True,
    ),
    Operation("/openapi.json", "GET", "openapi", "This document", dict[str, Any]),
    # SOLAT dialect: same meaning, same handler
    Operation(
        "/execution/status",
        "GET",
        "status",
        "Status, with the LIVE gates' state (rehearsal, expiry, circuit breaker)",
        StatusView,
        dialect="solat",
        shows_operator_text=True,
    ),
    Operation(
        "/execution/pause",
        "POST",
        "pause",
        "Pause entries",
        StatusView,
        PauseRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation("/execution/resume", "POST", "resume", "Resume entries", StatusView, dialect="solat"),
    Operation(
        "/execution/flatten",
        "POST",
        "flatten",
        "Cancel working siblings, close every position",
        FlattenCompleted,
        FlattenRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/positions",
        "GET",
        "positions",
        "Open positions",
        PositionsView,
        dialect="solat",
    ),
    Operation(
        "/execution/orders",
        "GET",
        "orders",
        "Newest orders",
        OrdersView,
        query=(_LIMIT_QUERY,),
        dialect="solat",
        shows_operator_text=True,
    ),
    Operation("/execution/risk", "GET", "risk", "Risk limits", RiskView, dialect="solat"),
    Operation(
        "/execution/kill-switch/activate",
        "POST",
        "kill_switch_activate",
        "Trip the sticky HALT (closes positions when close_on_kill_switch)",
        KillSwitchView,
        KillSwitchActivateRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/kill-switch/reset",
        "POST",
        "kill_switch_reset",
        "Clear the HALT (audited; leaves the engine disarmed)",
        KillSwitchView,
        KillSwitchResetRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/kill-switch",
        "GET",
        "kill_switch",
        "Kill switch state",
        KillSwitchView,
        dialect="solat",
        shows_operator_text=True,
    ),
    Operation(
        "/execution/arm",
        "POST",
        "arm",
        "Arm order flow; live_mode arms in LIVE through every LIVE gate (409 "
        "LIVE_GATES_BLOCKED with the blockers)",
        ArmView,
        ArmRequest,
        dialect="solat",
    ),
    Operation(
        "/execution/disarm",
        "POST",
        "disarm",
        "Disarm: refuse entries until armed (survives restarts)",
        ArmView,
        DisarmRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/reconcile/report",
        "GET",
        "reconcile_report",
        "Latest comparison of our books with the broker's",
        ReconcileReportView,
        extra_responses=_NO_REPORT,
        dialect="solat",
    ),
    # The gated path to LIVE (SOLAT runbook, "Enabling LIVE Mode" and "Rollback")
    Operation(
        "/execution/connect",
        "POST",
        "connect",
        "Connect to the broker now (502 with ok false when it fails; that disarms)",
        ConnectView,
        extra_responses=_CONNECT_FAILED,
        dialect="solat",
    ),
    Operation(
        "/execution/gates",
        "GET",
        "gates",
        "May LIVE be armed now; the blockers as sentences",
        GatesView,
        dialect="solat",
        shows_operator_text=True,
    ),
    Operation(
        "/execution/prelive/run",
        "POST",
        "prelive_run",
        "Run the seven pre-live checks on a fresh connect (200 whether they pass or not)",
        PreliveView,
        dialect="solat",
    ),
    Operation(
        "/execution/live/confirm",
        "POST",
        "live_confirm",
        "Confirm LIVE: phrase, LIVE_ENABLE_TOKEN, LIVE_ACCOUNT_ID (400 BAD_PHRASE, 403 "
        "BAD_TOKEN/BAD_ACCOUNT, 409 NOT_CONFIGURED)",
        LiveConfirmView,
        LiveConfirmRequest,
        dialect="solat",
    ),
    Operation(
        "/execution/live/revoke",
        "POST",
        "live_revoke",
        "Revoke the LIVE confirmation: disarm and leave LIVE",
        ArmView,
        RevokeRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/circuit-breaker/reset",
        "POST",
        "circuit_breaker_reset",
        "Close a tripped circuit breaker after its cooldown (stays disarmed)",
        GatesView,
        CircuitBreakerResetRequest,
        (_REASON_QUERY,),
        dialect="solat",
    ),
    Operation(
        "/execution/audit",
        "GET",
        "audit",
        "The newest audit rows, newest first",
        AuditView,
        query=(_AUDIT_LIMIT_QUERY,),
        dialect="solat",
        shows_operator_text=True,
    ),
)

# SOLAT routes still to come (none now). Delete a line when its route is added to OPERATIONS.
PLANNED_ROUTES: dict[str, str] = {}

_PLANNED_ENDPOINT_PREFIX = "planned:"


# ---------------------------------------------------------------------------------------------
# THE APP
# ---------------------------------------------------------------------------------------------


class _ApiRequest(Request):
    # Werkzeug enforces this on Content-Length up front and on chunked bodies while reading.
    max_content_length = MAX_BODY_BYTES


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        blockers: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.blockers = blockers


class AdminApp:
    """The WSGI callable. Build it with ``build_app``."""

    def __init__(
        self,
        control: ControlPort,
        *,
        token: str | None,
        tokens: Mapping[str, str] | None = None,
        rehearsal: bool = False,
    ) -> None:
        self._control = control
        self._tokens = _named_tokens(token, tokens or {})
        self._rehearsal = rehearsal
        handlers: dict[str, Callable[[Request, OperatorRef], Response]] = {
            "health": self._health,
            "ready": self._ready,
            "status": self._status,
            "set_mode": self._set_mode,
            "pause": self._pause,
            "resume": self._resume,
            "flatten": self._flatten,
            "positions": self._positions,
            "orders": self._orders,
            "risk": self._risk,
            "kill_switch_activate": self._kill_switch_activate,
            "kill_switch_reset": self._kill_switch_reset,
            "kill_switch": self._kill_switch,
            "arm": self._arm,
            "disarm": self._disarm,
            "reconcile_report": self._reconcile_report,
            "connect": self._connect,
            "gates": self._gates,
            "prelive_run": self._prelive_run,
            "live_confirm": self._live_confirm,
            "live_revoke": self._live_revoke,
            "circuit_breaker_reset": self._circuit_breaker_reset,
            "audit": self._audit,
            "metrics": self._metrics,
            "debug_actors": self._debug_actors,
            "openapi": self._openapi,
        }
        self._routes: dict[str, tuple[Operation, Callable[[Request, OperatorRef], Response]]] = {
            operation.operation_id: (operation, handlers[operation.endpoint])
            for operation in OPERATIONS
        }
        rules = [
            Rule(operation.path, endpoint=operation.operation_id, methods=[operation.method])
            for operation in OPERATIONS
        ]
        rules += [Rule(path, endpoint=_PLANNED_ENDPOINT_PREFIX + path) for path in PLANNED_ROUTES]
        # The console: static pages (GET and HEAD), outside OPERATIONS: they are not API.
        self._console_assets = _load_console_assets()
        rules += [
            Rule("/", endpoint=_CONSOLE_ENDPOINT, methods=["GET"]),
            Rule("/console", endpoint=_CONSOLE_ENDPOINT, methods=["GET"]),
            Rule("/console/<asset>", endpoint=_CONSOLE_ENDPOINT, methods=["GET"]),
        ]
        self._url_map = Map(rules, strict_slashes=False, merge_slashes=False)
        self._openapi_body = msgspec.json.encode(
            build_openapi(
                OPERATIONS, auth_required=self.requires_token, max_body_bytes=MAX_BODY_BYTES
            )
        )

    @property
    def requires_token(self) -> bool:
        """Whether protected routes need a bearer token (the server warns on an open bind)."""
        return bool(self._tokens)

    @property
    def token_names(self) -> tuple[str, ...]:
        """The names of the configured tokens (never the tokens)."""
        return tuple(name for name, _token in self._tokens)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _ApiRequest(environ)
        started = time.monotonic()
        response = self._dispatch(request)
        if self._rehearsal:
            response.headers[REHEARSAL_HEADER] = "REHEARSAL"
        # No response is ever to be sniffed into another type (a JSON body read as HTML).
        response.headers["X-Content-Type-Options"] = "nosniff"
        self._log_request(request, response, started)
        return response(environ, start_response)

    # -- dispatch and the one error mapper ----------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        try:
            adapter = self._url_map.bind_to_environ(request.environ)
            endpoint, arguments = adapter.match()
            if endpoint == _CONSOLE_ENDPOINT:
                return self._console(request, arguments.get("asset", _CONSOLE_INDEX))
            if endpoint.startswith(_PLANNED_ENDPOINT_PREFIX):
                raise _not_implemented(endpoint.removeprefix(_PLANNED_ENDPOINT_PREFIX))
            operation, handler = self._routes[endpoint]
            by = self._operator(request, needs_token=operation.needs_token)
            return handler(request, by)
        except _HttpError as error:
            return _error_response(
                error.status, error.code, error.message, error.blockers, error.headers
            )
        except ControlError as error:
            status = error.status if 400 <= error.status <= 599 else 500
            return _error_response(status, error.code, error.message, error.blockers)
        except MethodNotAllowed as error:
            allowed = sorted(error.valid_methods or [])
            return _error_response(
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        except NotFound:
            return _error_response(404, "NOT_FOUND", f"no route {request.path}; see /openapi.json")
        except RequestEntityTooLarge:
            return _too_large()
        except HTTPException as error:
            status = error.code or 500
            code = (error.name or "HTTP_ERROR").upper().replace(" ", "_")
            return _error_response(status, code, error.description or code)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            _log.exception(
                "admin API %s %s failed (error_id=%s)",
                request.method,
                request.path,
                error_id,
                extra={"event": "HTTP_INTERNAL_ERROR", "error_id": error_id},
            )
            return _error_response(
                500,
                "INTERNAL",
                f"internal error (error_id={error_id}); the server log has the details",
            )

    def _operator(self, request: Request, *, needs_token: bool) -> OperatorRef:
        """Who is asking: the name of the token the request came with (``local`` when no
        token is configured) and the client's address (REMOTE_ADDR).

        Raises:
            _HttpError: 401 when the route needs a token and none of the configured ones came.
        """
        address = request.remote_addr or "unknown"
        if not self._tokens:
            return OperatorRef(who=LOCAL_OPERATOR, address=address)
        if not needs_token:
            return OperatorRef(who=_ANONYMOUS, address=address)
        header = request.headers.get("Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="vigil"'}
        if not header:
            raise _HttpError(
                401,
                "UNAUTHORIZED",
                f"{request.method} {request.path} needs 'Authorization: Bearer <token>'",
                headers=challenge,
            )
        scheme, _, credentials = header.strip().partition(" ")
        name = _match_token(credentials.strip().encode("utf-8"), self._tokens)
        # The scheme is judged after the compare so the timing says nothing about which failed.
        if scheme.lower() != "bearer" or name is None:
            raise _HttpError(
                401, "UNAUTHORIZED", "bearer token was not accepted", headers=challenge
            )
        return OperatorRef(who=name, address=address)

    def _log_request(self, request: Request, response: Response, started: float) -> None:
        # POSTs change the engine: they are the operator's audit trail, so INFO; reads DEBUG.
        level = logging.INFO if request.method == "POST" else logging.DEBUG
        if not _log.isEnabledFor(level):
            return
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        _log.log(
            level,
            "%s %s -> %d (%.1f ms)",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "event": "HTTP_REQUEST",
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "remote_addr": request.remote_addr,
            },
        )

    # -- handlers -----------------------------------------------------------------------------

    def _health(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.health())

    def _ready(self, request: Request, by: OperatorRef) -> Response:
        view = self._control.ready()
        return _json_response(view, status=200 if view.ready else 503)

    def _status(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._rehearsed(self._control.status()))

    def _set_mode(self, request: Request, by: OperatorRef) -> Response:
        mode_request, _had_body = _decode_body(request, ModeRequest)
        return _json_response(self._rehearsed(self._control.set_mode(mode_request, by=by)))

    def _pause(self, request: Request, by: OperatorRef) -> Response:
        pause = _decode_with_reason(request, PauseRequest)
        return _json_response(self._rehearsed(self._control.pause(pause, by=by)))

    def _resume(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._rehearsed(self._control.resume(by=by)))

    def _flatten(self, request: Request, by: OperatorRef) -> Response:
        flatten = _decode_with_reason(request, FlattenRequest)
        return _json_response(self._control.flatten(flatten, by=by))

    def _positions(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.positions())

    def _orders(self, request: Request, by: OperatorRef) -> Response:
        limit = _parse_limit(request, default=ORDERS_LIMIT_DEFAULT, maximum=ORDERS_LIMIT_MAX)
        return _json_response(self._control.orders(limit))

    def _risk(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.risk())

    def _kill_switch_activate(self, request: Request, by: OperatorRef) -> Response:
        activate = _decode_with_reason(request, KillSwitchActivateRequest)
        return _json_response(self._control.kill_switch_activate(activate, by=by))

    def _kill_switch_reset(self, request: Request, by: OperatorRef) -> Response:
        reset = _decode_with_reason(request, KillSwitchResetRequest)
        return _json_response(self._control.kill_switch_reset(reset, by=by))

    def _kill_switch(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.kill_switch())

    def _arm(self, request: Request, by: OperatorRef) -> Response:
        arm_request, _had_body = _decode_body(request, ArmRequest)
        if not arm_request.confirm:
            raise _HttpError(
                400,
                "BAD_REQUEST",
                'confirm was false: arming needs {"confirm": true} (nothing was changed)',
            )
        return _json_response(self._rehearsed(self._control.arm(arm_request, by=by)))

    def _disarm(self, request: Request, by: OperatorRef) -> Response:
        disarm = _decode_with_reason(request, DisarmRequest)
        return _json_response(self._rehearsed(self._control.disarm(disarm, by=by)))

    def _reconcile_report(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.reconcile_report())

    def _connect(self, request: Request, by: OperatorRef) -> Response:
        _decode_body(request, _NoBody)
        view = self._rehearsed(self._control.connect(by=by))
        return _json_response(view, status=200 if view.ok else 502)

    def _gates(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._rehearsed(self._control.gates()))

    def _prelive_run(self, request: Request, by: OperatorRef) -> Response:
        _decode_body(request, _NoBody)
        return _json_response(self._rehearsed(self._control.prelive_run(by=by)))

    def _live_confirm(self, request: Request, by: OperatorRef) -> Response:
        confirm, _had_body = _decode_body(request, LiveConfirmRequest)
        return _json_response(self._rehearsed(self._control.live_confirm(confirm, by=by)))

    def _live_revoke(self, request: Request, by: OperatorRef) -> Response:
        revoke = _decode_with_reason(request, RevokeRequest)
        return _json_response(self._rehearsed(self._control.live_revoke(revoke, by=by)))

    def _circuit_breaker_reset(self, request: Request, by: OperatorRef) -> Response:
        reset = _decode_with_reason(request, CircuitBreakerResetRequest)
        return _json_response(self._rehearsed(self._control.circuit_breaker_reset(reset, by=by)))

    def _audit(self, request: Request, by: OperatorRef) -> Response:
        limit = _parse_limit(request, default=AUDIT_LIMIT_DEFAULT, maximum=AUDIT_LIMIT_MAX)
        return _json_response(self._control.audit(limit))

    def _metrics(self, request: Request, by: OperatorRef) -> Response:
        return Response(
            self._control.metrics_text(),
            status=200,
            headers=_no_store(),
            content_type=METRICS_CONTENT_TYPE,
        )

    def _debug_actors(self, request: Request, by: OperatorRef) -> Response:
        return _json_response(self._control.debug_actors())

    def _openapi(self, request: Request, by: OperatorRef) -> Response:
        return Response(self._openapi_body, content_type=_JSON_CONTENT_TYPE)

    def _console(self, request: Request, asset: str) -> Response:
        """A console page or asset: no token (it holds no data), never sniffed, never framed."""
        found = self._console_assets.get(asset)
        if found is None:
            raise _HttpError(404, "NOT_FOUND", f"no console asset {asset!r}; the console is at /")
        body, content_type = found
        return Response(
            body,
            status=200,
            content_type=content_type,
            headers={
                "Content-Security-Policy": CONSOLE_CSP,
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                # Revalidate each load, so an upgraded engine never runs an old script.
                "Cache-Control": "no-cache",
            },
        )

    def _rehearsed(self, view: _ViewT) -> _ViewT:
        """In REHEARSAL, the view says so: ``rehearsal`` true, and the message of a view that
        changes what the engine may do starts with ``REHEARSAL: `` (whatever the port said)."""
        if not self._rehearsal:
            return view
        changes: dict[str, Any] = {}
        if hasattr(view, "rehearsal") and view.rehearsal is not True:  # type: ignore[attr-defined]
            changes["rehearsal"] = True
        if isinstance(view, _REHEARSED_MESSAGE_VIEWS) and not view.message.startswith(
            REHEARSAL_PREFIX
        ):
            changes["message"] = REHEARSAL_PREFIX + view.message
        return msgspec.structs.replace(view, **changes) if changes else view


def build_app(
    control: ControlPort,
    *,
    token: str | None,
    tokens: Mapping[str, str] | None = None,
    rehearsal: bool = False,
) -> WSGIApplication:
    """Build the admin API over ``control``.

    Args:
        control: the engine's control facade; called from several server threads at once.
        token: ``http.token``, the operator named ``admin``.
        tokens: ``http.tokens``, more operators: name -> token. With any token configured,
            every POST and every GET that shows operator text needs one of them as
            ``Authorization: Bearer <token>``; the name of the one that came is the ``who`` of
            the audit trail. With none, the API is open (acceptable only on a loopback bind:
            the engine refuses to start otherwise) and the operator is ``local``.
        rehearsal: ``config.rehearsal``: every response says REHEARSAL.

    Returns:
        An ``AdminApp`` (a WSGI callable; ``requires_token`` tells the server about auth).

    Raises:
        ValueError: a token was empty (a misconfiguration, not "no auth"), two names share a
            token, or ``tokens`` names ``admin`` while ``token`` is set.
    """
    return AdminApp(control, token=token, tokens=tokens, rehearsal=rehearsal)


def _load_console_assets() -> dict[str, tuple[bytes, str]]:
    """The console's files by name (read once: a few tens of KiB), each with its content type.
    Only files of a known type at the folder's top level are served; nothing else is reachable.
    A missing folder (a broken install) serves no console, and the API works as before."""
    assets: dict[str, tuple[bytes, str]] = {}
    folder = importlib.resources.files(_CONSOLE_PACKAGE).joinpath(_CONSOLE_FOLDER)
    if not folder.is_dir():
        _log.warning("operator console assets not found in %s; / will answer 404", folder)
        return assets
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = _CONSOLE_CONTENT_TYPES.get(suffix)
        if entry.is_file() and content_type is not None:
            assets[entry.name] = (entry.read_bytes(), content_type)
    return assets


def _named_tokens(token: str | None, tokens: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    named: dict[str, str] = {}
    if token is not None:
        named[ADMIN_TOKEN_NAME] = token
    for name, value in tokens.items():
        if name in named:
            raise ValueError(
                f"http.tokens names {name!r}, which is http.token's name; rename one of them"
            )
        if not name.strip() or name in (LOCAL_OPERATOR, _ANONYMOUS):
            raise ValueError(f"http.tokens has an unusable operator name {name!r}")
        named[name] = value
    seen: dict[bytes, str] = {}
    result: list[tuple[str, bytes]] = []
    for name, value in named.items():
        # Surrounding whitespace in a configured token is a .env accident, never part of it.
        stripped = value.strip()
        if not stripped:
            raise ValueError(
                f"admin HTTP token {name!r} was empty; configure a non-empty token or none at all"
            )
        encoded = stripped.encode("utf-8")
        if encoded in seen:
            raise ValueError(
                f"admin HTTP tokens {seen[encoded]!r} and {name!r} are the same token; the "
                "audit trail could not tell them apart"
            )
        seen[encoded] = name
        result.append((name, encoded))
    return tuple(result)


def _match_token(presented: bytes, tokens: tuple[tuple[str, bytes], ...]) -> str | None:
    """The name of the configured token ``presented`` is, compared with EVERY configured token
    in constant time and without an early exit: the timing says neither whether nor which one
    matched."""
    matched: str | None = None
    for name, token in tokens:
        equal = hmac.compare_digest(presented, token)
        if equal and matched is None:
            matched = name
    return matched


class _NoBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Routes that take no fields: an empty body or ``{}``; anything else is a 400."""


# ---------------------------------------------------------------------------------------------
# DECODING
# ---------------------------------------------------------------------------------------------


def _decode_body(request: Request, type_: type[_StructT]) -> tuple[_StructT, bool]:
    content_length = request.content_length
    if content_length is not None and content_length > MAX_BODY_BYTES:
        raise _too_large_error(content_length)
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise _too_large_error(content_length) from None
    if not body.strip():
        return _convert({}, type_), False
    mimetype = request.mimetype
    if mimetype not in _JSON_LIKE_MIMETYPES and not mimetype.endswith("+json"):
        raise _HttpError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"body content type was {mimetype!r}; send application/json",
        )
    try:
        return msgspec.json.decode(body, type=type_), True
    except msgspec.ValidationError as error:
        # msgspec names the field and the rule, and quotes no string value (a token in a
        # too-long ``token`` field is not echoed).
        raise _HttpError(400, "BAD_REQUEST", _explain(error, type_)) from None
    except msgspec.DecodeError as error:
        # The parser's message quotes no input, only a position; a secret stays unechoed.
        raise _HttpError(400, "BAD_REQUEST", f"body was not valid JSON: {error}") from None


def _decode_with_reason(request: Request, type_: type[_StructT]) -> _StructT:
    decoded, had_body = _decode_body(request, type_)
    query_reason = request.args.get("reason")
    if query_reason is None:
        return decoded
    from_query = _convert({"reason": query_reason}, type_)
    body_reason = getattr(decoded, "reason", None)
    if had_body and body_reason != query_reason:
        raise _HttpError(
            400,
            "BAD_REQUEST",
            f"reason was given twice and differs: query {query_reason!r}, body {body_reason!r}",
        )
    # The same reason in both: the body keeps its other fields (a reset's operator).
    return decoded if had_body else from_query


def _convert(data: dict[str, Any], type_: type[_StructT]) -> _StructT:
    try:
        return msgspec.convert(data, type=type_)
    except msgspec.ValidationError as error:
        raise _HttpError(400, "BAD_REQUEST", _explain(error, type_)) from None


def _explain(error: msgspec.ValidationError, type_: type[msgspec.Struct]) -> str:
    # msgspec says what and where ("Invalid enum value 'LIV' - at `$.mode`"); add the choices.
    message = str(error)
    info = msgspec.inspect.type_info(type_)
    if not isinstance(info, msgspec.inspect.StructType):
        return message
    for field in info.fields:
        if f"`$.{field.encode_name}`" not in message:
            continue
        choices = _enum_choices(field.type)
        if choices:
            return f"{message}; expected one of {', '.join(choices)}"
    return message


def _enum_choices(info: msgspec.inspect.Type) -> list[str]:
    if isinstance(info, msgspec.inspect.EnumType):
        return [str(member.value) for member in info.cls]
    if isinstance(info, msgspec.inspect.UnionType):
        return [choice for member in info.types for choice in _enum_choices(member)]
    return []


def _parse_limit(request: Request, *, default: int, maximum: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise _HttpError(
            400,
            "BAD_REQUEST",
            f"limit must be an integer from 1 to {maximum}, was {raw!r}",
        )
    return limit


# ---------------------------------------------------------------------------------------------
# ENCODING
# ---------------------------------------------------------------------------------------------


def _encode_fallback(value: Any) -> Any:
    # Snapshots are mostly msgspec structs; anything else is shown, not allowed to fail a dump.
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def _json_response(value: Any, *, status: int = 200) -> Response:
    body = msgspec.json.encode(value, enc_hook=_encode_fallback)
    return Response(body, status=status, headers=_no_store(), content_type=_JSON_CONTENT_TYPE)


def _error_response(
    status: int,
    code: str,
    message: str,
    blockers: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = _json_response(
        ErrorBody(error=code, message=message, blockers=blockers), status=status
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _too_large_error(content_length: int | None) -> _HttpError:
    size = "unknown" if content_length is None else str(content_length)
    return _HttpError(
        413,
        "PAYLOAD_TOO_LARGE",
        f"body was {size} bytes; the limit is {MAX_BODY_BYTES} bytes",
    )


def _too_large() -> Response:
    error = _too_large_error(None)
    return _error_response(error.status, error.code, error.message)


def _not_implemented(path: str) -> _HttpError:
    return _HttpError(
        501,
        "NOT_IMPLEMENTED",
        f"{path} ({PLANNED_ROUTES[path]}) is not implemented yet; to stop trading use "
        "POST /pause or POST /flatten, see /openapi.json for what exists",
    )
