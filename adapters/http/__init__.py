"""Admin HTTP adapter: the control API (both runbook dialects), its OpenAPI document, and the
waitress server that serves it. ``actors.admin_http_actor`` owns the server; ``actors.control``
implements ``ControlPort``."""

from __future__ import annotations

from adapters.http.app import (
    MAX_BODY_BYTES,
    METRICS_CONTENT_TYPE,
    OPERATIONS,
    AdminApp,
    ControlError,
    ControlPort,
    build_app,
)
from adapters.http.openapi import Operation, build_openapi
from adapters.http.server import AdminHttpServer

__all__ = [
    "MAX_BODY_BYTES",
    "METRICS_CONTENT_TYPE",
    "OPERATIONS",
    "AdminApp",
    "AdminHttpServer",
    "ControlError",
    "ControlPort",
    "Operation",
    "build_app",
    "build_openapi",
]
