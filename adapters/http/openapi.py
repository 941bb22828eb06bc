"""The OpenAPI 3.1 document of the admin API, generated from the route table and msgspec types.

``Operation`` describes one route (path, method, request and response types); ``adapters.http.app``
owns the table of operations and serves what ``build_openapi`` makes of it at
``GET /openapi.json``. Schemas come from ``msgspec.json.schema_components``, so the document
cannot drift from the structs the handlers decode and encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from domain.messages.api import ErrorBody

__all__ = ["Operation", "QueryParameter", "build_openapi"]

_REF_TEMPLATE = "#/components/schemas/{name}"


@dataclass(frozen=True, slots=True)
class QueryParameter:
    """One query-string parameter of an operation (documented as a string-typed schema)."""

    name: str
    description: str
    schema: tuple[tuple[str, Any], ...] = (("type", "string"),)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the admin API.

    Attributes:
        path: URL path, e.g. ``/mode``.
        method: ``GET`` or ``POST``.
        endpoint: name of the handler; routes of both dialects that share a handler share it.
        summary: one line for the document.
        response_type: msgspec type of the 200 body; ``None`` for a non-JSON body.
        request_type: msgspec type of the JSON body, ``None`` when the route takes none.
        query: documented query parameters.
        response_media_type: media type of the 200 body.
        extra_responses: other non-error statuses: ``(status, description, type)``.
        dialect: ``aitrapp`` or ``solat`` (the runbook the path comes from).
        shows_operator_text: a GET whose answer holds operator text (reasons, details, the
            audit trail): it needs the bearer token too when one is configured.
    """

    path: str
    method: str
    endpoint: str
    summary: str
    response_type: Any
    request_type: Any = None
    query: tuple[QueryParameter, ...] = ()
    response_media_type: str = "application/json"
    extra_responses: tuple[tuple[int, str, Any], ...] = ()
    dialect: str = "aitrapp"
    shows_operator_text: bool = False

    @property
    def mutating(self) -> bool:
        return self.method == "POST"

    @property
    def needs_token(self) -> bool:
        """Whether the route needs ``Authorization: Bearer <token>`` when a token is set."""
        return self.mutating or self.shows_operator_text

    @property
    def operation_id(self) -> str:
        words = [part for part in self.path.replace("-", "_").split("/") if part]
        return "_".join([self.method.lower(), *words]).replace(".", "_")


def build_openapi(
    operations: Sequence[Operation],
    *,
    title: str = "Vigil admin API",
    version: str = "0.1.0",
    auth_required: bool,
    max_body_bytes: int,
) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for ``operations``.

    Args:
        operations: every served route.
        title: ``info.title``.
        version: ``info.version``.
        auth_required: whether the server was given a token: then every POST route and every
            GET route that shows operator text needs ``Authorization: Bearer <token>``,
            documented per route as a ``bearerAuth`` security requirement (``[]`` on the
            routes that stay open).
        max_body_bytes: request body limit, quoted in the 413 description.

    Returns:
        A JSON-serialisable dict.
    """
    types: list[Any] = [ErrorBody]
    for operation in operations:
        for candidate in (operation.request_type, operation.response_type):
            if candidate is not None and candidate not in types:
                types.append(candidate)
        for _status, _description, extra_type in operation.extra_responses:
            if extra_type not in types:
                types.append(extra_type)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF_TEMPLATE)
    schema_of = dict(zip(map(_type_key, types), schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation_object(
            operation,
            schema_of=schema_of,
            auth_required=auth_required,
            max_body_bytes=max_body_bytes,
        )

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Operator control of one Vigil engine. Two route dialects share handlers: the "
                "AITRAPP runbook's (/mode, /pause, ...) and the SOLAT runbook's "
                "(/execution/...). Every error is a JSON ErrorBody: unknown path 404 "
                "NOT_FOUND, wrong method 405 METHOD_NOT_ALLOWED. Money is a decimal string. "
                "With an admin token configured, each operation's security says whether it "
                "needs the bearer token (every POST, and every GET that shows operator text)."
            ),
        },
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth_required:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}
        }
    return document


def _type_key(type_: Any) -> str:
    # Generic aliases such as dict[str, Any] are not hashable the same way on every version.
    return repr(type_)


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, schema_of: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema_of[_type_key(ErrorBody)])}


def _operation_object(
    operation: Operation,
    *,
    schema_of: dict[str, dict[str, Any]],
    auth_required: bool,
    max_body_bytes: int,
) -> dict[str, Any]:
    if operation.response_type is None:
        ok_content = {operation.response_media_type: {"schema": {"type": "string"}}}
    else:
        ok_schema = schema_of[_type_key(operation.response_type)]
        ok_content = {operation.response_media_type: {"schema": ok_schema}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok_content}}
    for status, description, extra_type in operation.extra_responses:
        responses[str(status)] = {
            "description": description,
            "content": _json_content(schema_of[_type_key(extra_type)]),
        }

    if operation.query or operation.request_type is not None:
        responses["400"] = _error(
            "BAD_REQUEST: malformed JSON, or a field or query parameter failed validation "
            "(the message names the field and why)",
            schema_of,
        )
    if operation.needs_token and auth_required:
        responses["401"] = _error("UNAUTHORIZED: missing or wrong bearer token", schema_of)
    if operation.request_type is not None:
        responses["413"] = _error(f"PAYLOAD_TOO_LARGE: body over {max_body_bytes} bytes", schema_of)
        responses["415"] = _error(
            "UNSUPPORTED_MEDIA_TYPE: a non-empty body that is not JSON", schema_of
        )
    responses["500"] = _error(
        "INTERNAL: unexpected failure (details only in the server log)", schema_of
    )
    responses["default"] = _error(
        "Any other error the engine reports (e.g. 409 with blockers, 503, 504)", schema_of
    )

    result: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.dialect],
        "responses": responses,
    }
    if operation.query:
        result["parameters"] = [
            {
                "name": parameter.name,
                "in": "query",
                "required": False,
                "description": parameter.description,
                "schema": dict(parameter.schema),
            }
            for parameter in operation.query
        ]
    if operation.request_type is not None:
        body_required = any(
            field.required for field in msgspec.structs.fields(operation.request_type)
        )
        result["requestBody"] = {
            "required": body_required,
            "description": (
                "JSON object."
                if body_required
                else "JSON object; an empty body means every field takes its default."
            ),
            "content": _json_content(schema_of[_type_key(operation.request_type)]),
        }
    if auth_required:
        # Per route: open routes say so explicitly with an empty requirement.
        result["security"] = [{"bearerAuth": []}] if operation.needs_token else []
    return result
