"""AdminHttpActor: owns the embedded admin HTTP server (waitress) for its lifetime.

The server's threads call ``EngineControl``, which asks the other actors with timeouts; this
actor itself only starts and stops the server, so a slow request never blocks its mailbox. If
the server cannot bind, ``on_start`` raises: the actor stops and the supervisor restarts it
with backoff, and the failure is in the log with the address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.base import VigilActor
from adapters.http.app import build_app
from adapters.http.server import AdminHttpServer
from adapters.logs import log_event

if TYPE_CHECKING:
    from adapters.http.app import ControlPort
    from domain.config import HttpConfig

__all__ = ["AdminHttpActor"]

logger = logging.getLogger(__name__)


class AdminHttpActor(VigilActor):
    def __init__(
        self,
        *,
        control: ControlPort,
        config: HttpConfig,
        on_bound: Callable[[int], None] | None = None,
        rehearsal: bool = False,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._control = control
        self._config = config
        self._rehearsal = rehearsal
        self._on_bound = on_bound
        self._server: AdminHttpServer | None = None

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        # An empty token is refused by build_app rather than silently meaning "no auth".
        token = self._config.token.get_secret_value() if self._config.token is not None else None
        tokens = {name: value.get_secret_value() for name, value in self._config.tokens.items()}
        app = build_app(self._control, token=token, tokens=tokens, rehearsal=self._rehearsal)
        server = AdminHttpServer(
            app,
            host=self._config.host,
            port=self._config.port,
            threads=self._config.threads,
        )
        server.start()
        self._server = server
        log_event(
            logger,
            "HTTP_START",
            f"admin API listening on http://{server.host}:{server.port}",
            host=server.host,
            port=server.port,
            auth="token" if app.requires_token else "none",
            # The names of the operators' tokens, never the tokens.
            operators=",".join(app.token_names),
        )
        if self._on_bound is not None:
            self._on_bound(server.port)

    def on_stop(self) -> None:
        self._stop_server()

    def on_failure(self, *exc_info: Any) -> None:
        self._stop_server()
        super().on_failure(*exc_info)

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self._config.host,
            "port": self._server.port if self._server else None,
            "auth": "token" if self._config.token or self._config.tokens else "none",
        }

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
