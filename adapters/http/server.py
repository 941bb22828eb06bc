"""The admin API's HTTP server: waitress in a daemon thread, started and stopped on demand.

``AdminHttpServer`` owns one waitress server (its listening socket, its event-loop thread and its
worker threads) and nothing else. ``start`` binds synchronously, so a port in use fails in the
caller; serving then runs in the background. ``stop`` wakes the event loop through waitress's
trigger, closes every socket on the loop's own thread and joins the threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.server import create_server
from waitress.trigger import trigger as WaitressTrigger

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

__all__ = ["AdminHttpServer", "check_bindable", "is_loopback"]

_log = logging.getLogger(__name__)

# Above the app's own 64 KiB limit, so a too-large body normally gets the app's JSON 413; this
# only bounds what waitress buffers (to disk) before the app sees the request.
_WAITRESS_MAX_BODY_BYTES = 1024 * 1024
_STOP_TIMEOUT_S = 5.0
_WORKER_SHUTDOWN_TIMEOUT_S = 2.0


class AdminHttpServer:
    """A threaded WSGI server for the admin API.

    ``start`` and ``stop`` may be called from any thread, ``stop`` more than once. An
    exception in a request is the app's business (``AdminApp`` turns it into a JSON 500); an
    exception that kills the event loop is logged at ERROR and the server stops serving.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        threads: int = 4,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"admin HTTP port must be 0..65535, was {port}")
        if threads < 1:
            raise ValueError(f"admin HTTP threads must be at least 1, was {threads}")
        self._app = app
        self._host = host
        self._requested_port = port
        self._threads = threads
        self._server: Any = None
        self._map: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with 0).

        Raises:
            RuntimeError: the server was not started.
        """
        if self._bound_port is None:
            raise RuntimeError("admin HTTP server was not started; no port is bound")
        return self._bound_port

    @property
    def host(self) -> str:
        """The host the server binds to."""
        return self._host

    @property
    def is_running(self) -> bool:
        """Whether the event-loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and start serving in a daemon thread; return at once.

        Raises:
            RuntimeError: already started.
            OSError: the address could not be bound (e.g. the port is in use).
        """
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"admin HTTP server already serving on port {self._bound_port}")
            self._warn_about_exposure()
            self._map = {}
            # Bind first, ourselves: a failed bind then leaves no waitress threads or sockets.
            listener = _bind(self._host, self._requested_port)
            try:
                server = create_server(
                    self._app,
                    map=self._map,
                    sockets=[listener],
                    threads=self._threads,
                    ident="vigil",
                    max_request_body_size=_WAITRESS_MAX_BODY_BYTES,
                    expose_tracebacks=False,
                    asyncore_use_poll=True,
                )
            except BaseException:
                wasyncore.close_all(self._map, ignore_all=True)
                listener.close()
                raise
            self._server = server
            self._bound_port = _bound_port(server)
            self._thread = threading.Thread(
                target=self._serve,
                args=(server,),
                name=f"admin-http:{self._bound_port}",
                daemon=True,
            )
            self._thread.start()
        _log.info(
            "admin HTTP serving on http://%s:%d",
            self._host,
            self._bound_port,
            extra={"event": "HTTP_SERVER_STARTED", "host": self._host, "port": self._bound_port},
        )

    def stop(self) -> None:
        """Stop serving: close the sockets, join the loop and worker threads. Idempotent.

        In-flight requests get up to about 2 s to finish; their clients may see the
        connection close.
        """
        with self._lock:
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
        if server is None or thread is None:
            return
        trigger = _find_trigger(self._map)
        if thread.is_alive() and trigger is not None:
            # Sockets belong to the loop thread: close them there, and the loop ends when its
            # socket map is empty.
            # pull_trigger queues the thunk, then writes the wake-up byte. A worker that pulled
            # the trigger just before (a response done) can wake the loop in between: it runs
            # the thunk, which closes the trigger too, and the write finds its pipe closed
            # (EBADF). The thunk ran; nothing is left to wake.
            with contextlib.suppress(OSError):
                trigger.pull_trigger(lambda: wasyncore.close_all(self._map, ignore_all=True))
            thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            _log.warning(
                "admin HTTP event loop did not stop within %.1f s; closing sockets from %s",
                _STOP_TIMEOUT_S,
                threading.current_thread().name,
            )
        wasyncore.close_all(self._map, ignore_all=True)
        server.task_dispatcher.shutdown(timeout=_WORKER_SHUTDOWN_TIMEOUT_S)
        _log.info(
            "admin HTTP stopped on port %s",
            self._bound_port,
            extra={"event": "HTTP_SERVER_STOPPED", "port": self._bound_port},
        )

    def _serve(self, server: Any) -> None:
        try:
            server.run()
        except Exception:
            _log.exception(
                "admin HTTP event loop crashed; the API is no longer served",
                extra={"event": "HTTP_SERVER_CRASHED", "port": self._bound_port},
            )

    def _warn_about_exposure(self) -> None:
        if is_loopback(self._host):
            return
        _log.warning(
            "admin HTTP binds to %s, which is not loopback: the control API is reachable "
            "from the network",
            self._host,
            extra={"event": "HTTP_EXPOSED", "host": self._host},
        )
        if not getattr(self._app, "requires_token", False):
            _log.warning(
                "admin HTTP binds to %s with no token configured: anyone who can reach it "
                "can pause, flatten or switch mode; set http.token",
                self._host,
                extra={"event": "HTTP_NO_TOKEN", "host": self._host},
            )


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` exactly as ``AdminHttpServer.start`` will, then let it go.

    A start-up pre-flight: it finds a port in use before anything else is set up (the leader
    lease above all). Another process can still take the port between this check and the
    real bind; the real bind then fails as before.

    Raises:
        OSError: the address cannot be bound; the message names ``host:port`` and the cause.
    """
    _bind(host, port).close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise OSError(f"admin HTTP host {host!r} could not be resolved: {error}") from error
    family, socket_type, protocol, _canonical, address = infos[0]
    listener = socket.socket(family, socket_type, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise OSError(
            error.errno,
            f"admin HTTP server could not bind {host}:{port}: {error.strerror or error}",
        ) from error
    return listener


def _bound_port(server: Any) -> int:
    # A single listening socket gives a TcpWSGIServer; keep the MultiSocketServer case safe.
    effective_port = getattr(server, "effective_port", None)
    if effective_port is not None:
        return int(effective_port)
    return int(server.effective_listen[0][1])


def _find_trigger(socket_map: dict[int, Any]) -> WaitressTrigger | None:
    for channel in list(socket_map.values()):
        if isinstance(channel, WaitressTrigger):
            return channel
    return None
