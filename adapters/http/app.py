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
-                          POST    /execution/arm           arm / ArmView
-                          POST    /execution/disarm        disarm / ArmView
-                          GET     /execution/reconcile/report  reconcile_report /
                                                            ReconcileReportView (503 if none)
/metrics                   GET     -                        Prometheus text 0.0.4
/debug/actors              GET     -                        actor snapshots (JSON object)
/openapi.json              GET     -                        OpenAPI 3.1 document
=========================  ======  =======================  ===========================

SOLAT routes that do not exist yet (the LIVE gate path is a later issue) answer
501 ``NOT_IMPLEMENTED`` with a pointer to what to use instead, rather than a bare 404:
``/execution/gates``, ``/execution/connect``, ``/execution/prelive/run``,
``/execution/live/confirm``, ``/execution/live/revoke``.

The kill switch: ``activate`` trips the sticky HALT (body optional, reason defaults to
``manual``; closes every position when ``close_on_kill_switch``); ``reset`` clears it, audited
with the operator and reason, and leaves the engine disarmed (``POST /execution/arm`` to trade
again, after ``POST /resume`` if pauses remain). ``POST /resume`` while HALTED is a 409
``HALTED`` naming the HALT and the reset route.

Errors. Every failure is JSON ``ErrorBody`` (``{"error": CODE, "message": ...}``): 404
``NOT_FOUND``, 405 ``METHOD_NOT_ALLOWED``, 400 ``BAD_REQUEST`` (the message names the field and
why), 413 ``PAYLOAD_TOO_LARGE`` (body over 64 KiB), 415 ``UNSUPPORTED_MEDIA_TYPE``, 401
``UNAUTHORIZED``, a ``ControlError`` as its own status and code, and anything else 500
``INTERNAL`` with an error id; the traceback goes to the server log only.

Auth. With a token, every POST needs ``Authorization: Bearer <token>`` (constant-time compare);
GET routes stay open.

Content types. A JSON body may come as ``application/json`` (or ``+json``), with no content
type, or as ``application/x-www-form-urlencoded``: the latter is what ``curl -d`` sends
without ``-H``, as the runbook's emergency rollback does, so it is read as JSON too.

Thread safety: ``AdminApp`` is immutable after construction; the WSGI server calls it from
several threads at once, so a ``ControlPort`` must be thread-safe.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from adapters.http.openapi import Operation, QueryParameter, build_openapi
from domain.messages.api import (
    ArmRequest,
    ArmView,
    DisarmRequest,
    ErrorBody,
    FlattenRequest,
    HealthView,
    KillSwitchActivateRequest,
    KillSwitchResetRequest,
    KillSwitchView,
    ModeRequest,
    ModeResult,
    OrdersView,
    PauseRequest,
    PositionsView,
    ReadyView,
    Reason,
    ReconcileReportView,
    RiskView,
    StatusView,
)
from domain.messages.orders import FlattenCompleted

if TYPE_CHECKING:
    from collections.abc import Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "MAX_BODY_BYTES",
    "METRICS_CONTENT_TYPE",
    "OPERATIONS",
    "ORDERS_LIMIT_DEFAULT",
    "ORDERS_LIMIT_MAX",
    "PLANNED_ROUTES",
    "AdminApp",
    "ControlError",
    "ControlPort",
    "build_app",
]

_log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ORDERS_LIMIT_DEFAULT = 200
ORDERS_LIMIT_MAX = 1000
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JSON_CONTENT_TYPE = "application/json"
_JSON_LIKE_MIMETYPES = frozenset({"", "application/json", "application/x-www-form-urlencoded"})

_StructT = TypeVar("_StructT", bound=msgspec.Struct)


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
    ``ControlError``, anything else raised becomes a 500."""

    def health(self) -> HealthView: ...

    def ready(self) -> ReadyView: ...

    def status(self) -> StatusView: ...

    def set_mode(self, request: ModeRequest) -> ModeResult: ...

    def pause(self, request: PauseRequest) -> StatusView: ...

    def resume(self) -> StatusView: ...

    def flatten(self, request: FlattenRequest) -> FlattenCompleted: ...

    def positions(self) -> PositionsView: ...

    def orders(self, limit: int) -> OrdersView: ...

    def risk(self) -> RiskView: ...

    def kill_switch_activate(self, request: KillSwitchActivateRequest) -> KillSwitchView: ...

    def kill_switch_reset(self, request: KillSwitchResetRequest) -> KillSwitchView: ...

    def kill_switch(self) -> KillSwitchView: ...

    def arm(self, request: ArmRequest) -> ArmView: ...

    def disarm(self, request: DisarmRequest) -> ArmView: ...

    def reconcile_report(self) -> ReconcileReportView: ...

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
    Operation("/status", "GET", "status", "Mode, armed, trading state, figures", StatusView),
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
    Operation("/orders", "GET", "orders", "Newest orders", OrdersView, query=(_LIMIT_QUERY,)),
    Operation("/risk", "GET", "risk", "Risk limits, usage and recent blocks", RiskView),
    Operation(
        "/metrics",
        "GET",
        "metrics",
        "Prometheus metrics",
        None,
        response_media_type=METRICS_CONTENT_TYPE,
    ),
    Operation("/debug/actors", "GET", "debug_actors", "Every actor's snapshot", dict[str, Any]),
    Operation("/openapi.json", "GET", "openapi", "This document", dict[str, Any]),
    # SOLAT dialect: same meaning, same handler
    Operation("/execution/status", "GET", "status", "Status", StatusView, dialect="solat"),
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
    ),
    Operation(
        "/execution/arm",
        "POST",
        "arm",
        "Arm order flow (PAPER)",
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
)

# SOLAT gate routes still to come. Delete a line when its route is added to OPERATIONS.
PLANNED_ROUTES: dict[str, str] = {
    "/execution/gates": "LIVE gate status",
    "/execution/connect": "broker connect",
    "/execution/prelive/run": "pre-live check",
    "/execution/live/confirm": "LIVE confirmation",
    "/execution/live/revoke": "LIVE revocation",
}

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

    def __init__(self, control: ControlPort, *, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError(
                "admin HTTP token was empty; configure a non-empty token or none at all"
            )
        self._control = control
        # Surrounding whitespace in a configured token is a .env accident, never part of it.
        self._token = None if token is None else token.strip().encode("utf-8")
        handlers: dict[str, Callable[[Request], Response]] = {
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
            "metrics": self._metrics,
            "debug_actors": self._debug_actors,
            "openapi": self._openapi,
        }
        self._routes: dict[str, tuple[Operation, Callable[[Request], Response]]] = {
            operation.operation_id: (operation, handlers[operation.endpoint])
            for operation in OPERATIONS
        }
        rules = [
            Rule(operation.path, endpoint=operation.operation_id, methods=[operation.method])
            for operation in OPERATIONS
        ]
        rules += [Rule(path, endpoint=_PLANNED_ENDPOINT_PREFIX + path) for path in PLANNED_ROUTES]
        self._url_map = Map(rules, strict_slashes=False, merge_slashes=False)
        self._openapi_body = msgspec.json.encode(
            build_openapi(
                OPERATIONS, auth_required=self.requires_token, max_body_bytes=MAX_BODY_BYTES
            )
        )

    @property
    def requires_token(self) -> bool:
        """Whether mutating routes need a bearer token (the server warns on an open bind)."""
        return self._token is not None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _ApiRequest(environ)
        started = time.monotonic()
        response = self._dispatch(request)
        self._log_request(request, response, started)
        return response(environ, start_response)

    # -- dispatch and the one error mapper ----------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        try:
            adapter = self._url_map.bind_to_environ(request.environ)
            endpoint, _arguments = adapter.match()
            if endpoint.startswith(_PLANNED_ENDPOINT_PREFIX):
                raise _not_implemented(endpoint.removeprefix(_PLANNED_ENDPOINT_PREFIX))
            operation, handler = self._routes[endpoint]
            if operation.mutating:
                self._authorise(request)
            return handler(request)
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

    def _authorise(self, request: Request) -> None:
        if self._token is None:
            return
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
        # Compare even on a wrong scheme so the timing says nothing about which check failed.
        matches = hmac.compare_digest(credentials.strip().encode("utf-8"), self._token)
        if scheme.lower() != "bearer" or not matches:
            raise _HttpError(
                401, "UNAUTHORIZED", "bearer token was not accepted", headers=challenge
            )

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

    def _health(self, request: Request) -> Response:
        return _json_response(self._control.health())

    def _ready(self, request: Request) -> Response:
        view = self._control.ready()
        return _json_response(view, status=200 if view.ready else 503)

    def _status(self, request: Request) -> Response:
        return _json_response(self._control.status())

    def _set_mode(self, request: Request) -> Response:
        mode_request, _had_body = _decode_body(request, ModeRequest)
        return _json_response(self._control.set_mode(mode_request))

    def _pause(self, request: Request) -> Response:
        return _json_response(self._control.pause(_decode_with_reason(request, PauseRequest)))

    def _resume(self, request: Request) -> Response:
        return _json_response(self._control.resume())

    def _flatten(self, request: Request) -> Response:
        return _json_response(self._control.flatten(_decode_with_reason(request, FlattenRequest)))

    def _positions(self, request: Request) -> Response:
        return _json_response(self._control.positions())

    def _orders(self, request: Request) -> Response:
        return _json_response(self._control.orders(_parse_limit(request)))

    def _risk(self, request: Request) -> Response:
        return _json_response(self._control.risk())

    def _kill_switch_activate(self, request: Request) -> Response:
        activate = _decode_with_reason(request, KillSwitchActivateRequest)
        return _json_response(self._control.kill_switch_activate(activate))

    def _kill_switch_reset(self, request: Request) -> Response:
        reset = _decode_with_reason(request, KillSwitchResetRequest)
        return _json_response(self._control.kill_switch_reset(reset))

    def _kill_switch(self, request: Request) -> Response:
        return _json_response(self._control.kill_switch())

    def _arm(self, request: Request) -> Response:
        arm_request, _had_body = _decode_body(request, ArmRequest)
        return _json_response(self._control.arm(arm_request))

    def _disarm(self, request: Request) -> Response:
        return _json_response(self._control.disarm(_decode_with_reason(request, DisarmRequest)))

    def _reconcile_report(self, request: Request) -> Response:
        return _json_response(self._control.reconcile_report())

    def _metrics(self, request: Request) -> Response:
        return Response(
            self._control.metrics_text(),
            status=200,
            headers=_no_store(),
            content_type=METRICS_CONTENT_TYPE,
        )

    def _debug_actors(self, request: Request) -> Response:
        return _json_response(self._control.debug_actors())

    def _openapi(self, request: Request) -> Response:
        return Response(self._openapi_body, content_type=_JSON_CONTENT_TYPE)


def build_app(control: ControlPort, *, token: str | None) -> WSGIApplication:
    """Build the admin API over ``control``.

    Args:
        control: the engine's control facade; called from several server threads at once.
        token: when set, every POST needs ``Authorization: Bearer <token>``; ``None`` leaves
            the API open (acceptable only on a loopback bind).

    Returns:
        An ``AdminApp`` (a WSGI callable; ``requires_token`` tells the server about auth).

    Raises:
        ValueError: ``token`` was an empty string (a misconfiguration, not "no auth").
    """
    return AdminApp(control, token=token)


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
        raise _HttpError(400, "BAD_REQUEST", _explain(error, type_)) from None
    except msgspec.DecodeError as error:
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


def _parse_limit(request: Request) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return ORDERS_LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= ORDERS_LIMIT_MAX:
        raise _HttpError(
            400,
            "BAD_REQUEST",
            f"limit must be an integer from 1 to {ORDERS_LIMIT_MAX}, was {raw!r}",
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
