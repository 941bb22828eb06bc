"""``KiteTickerStream``: the Kite ticker websocket (websocket-client) on one thread of its own.

It connects to ``<ws_base>?api_key=..&access_token=..``, subscribes the configured instrument
tokens and sets their mode (``full`` by default), then reads until told to stop:

- binary messages: a 1-byte heartbeat, or packets (``parsing.parse_binary_frame``); every
  binary message proves the stream alive (``on_alive``), packets go to ``on_packets``;
  garbage (short frames, wrong lengths, impossible values) is counted in ``garbage_total``
  and dropped, never a tick and never an exception;
- text messages: ``{"type": "order", "data": {...}}`` postbacks go to ``on_order_update``;
  ``{"type": "error", ...}`` and ``{"type": "message", ...}`` are logged.

Reconnects: a connection that drops (or goes silent for ``silence_timeout_s``: Kite sends a
heartbeat every second) is reopened with a capped exponential backoff with jitter (tenacity's
``wait_exponential_jitter``, slept on the stop event so ``stop`` is immediate); the backoff
starts over after a connection that worked (one that delivered a message; one closed before
any counts as a failed connect). A handshake refused with 403 means the access
token expired: ``on_token_expired`` is called once and the stream waits, without knocking,
until the credentials hold a different token (``tools.kite_login`` wrote a new one).

Threads: callbacks run on the stream thread (``kite-ticker``) and must be quick; one that
raises is logged and the stream goes on. ``start``/``stop`` run on the caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
import websocket
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential_jitter

from adapters.brokers.kite.parsing import Packet, parse_binary_frame, subscribe_messages

if TYPE_CHECKING:
    from adapters.brokers.kite.http import KiteCredentials

__all__ = ["KiteTickerStream"]

logger = logging.getLogger(__name__)

_READ_TIMEOUT_S = 0.5
_TOKEN_RECHECK_S = 2.0


class _Dropped(Exception):
    """The connection could not be opened or was lost before it worked."""


class KiteTickerStream:
    """The ticker websocket, read on a thread of its own.

    Args:
        ws_base_url: ``wss://ws.kite.trade`` or the fake's ``ws://127.0.0.1:<port>``.
        credentials: the API key and the current access token.
        tokens: the instrument tokens to subscribe.
        mode: ``full``, ``quote`` or ``ltp``.
        on_packets: decoded packets of one binary message, with the arrival time (epoch ns).
        on_order_update: the ``data`` of each order postback.
        on_alive: any binary message (heartbeat or packets) arrived.
        on_token_expired: the handshake was refused with 403 (once per token), with the
            refused token.
        now_ns: the engine clock, to date arrivals.
        backoff_initial_s, backoff_max_s: the reconnect backoff.
        silence_timeout_s: a connection silent this long is reopened.
    """

    def __init__(
        self,
        *,
        ws_base_url: str,
        credentials: KiteCredentials,
        tokens: Sequence[int],
        mode: str,
        on_packets: Callable[[tuple[Packet, ...], int], None],
        on_order_update: Callable[[dict[str, Any]], None],
        on_alive: Callable[[], None],
        on_token_expired: Callable[[str, str], None],
        now_ns: Callable[[], int],
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        silence_timeout_s: float = 10.0,
        open_timeout_s: float = 7.0,
    ) -> None:
        self._ws_base_url = ws_base_url
        self._credentials = credentials
        self._tokens = list(tokens)
        self._mode = mode
        self._on_packets = on_packets
        self._on_order_update = on_order_update
        self._on_alive = on_alive
        self._on_token_expired = on_token_expired
        self._now_ns = now_ns
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._silence_timeout_s = silence_timeout_s
        self._open_timeout_s = open_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: websocket.WebSocket | None = None
        self._socket_lock = threading.Lock()
        self._refused_token: str | None = None
        self._received = False  # the current connection delivered at least one message
        self.connected = threading.Event()
        self.connections_total = 0
        self.frames_total = 0
        self.packets_total = 0
        self.garbage_total = 0
        self.order_updates_total = 0
        self.callback_errors_total = 0

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("kite ticker stream was already started")
        self._thread = threading.Thread(target=self._run, name="kite-ticker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._socket_lock:
            socket = self._socket
        if socket is not None:
            socket.abort()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            "connected": self.connected.is_set(),
            "connections_total": self.connections_total,
            "frames_total": self.frames_total,
            "packets_total": self.packets_total,
            "garbage_total": self.garbage_total,
            "order_updates_total": self.order_updates_total,
            "token_refused": self._refused_token is not None,
        }

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wait_for_new_token():
                continue
            retrying = Retrying(
                retry=retry_if_exception_type(_Dropped),
                wait=wait_exponential_jitter(
                    multiplier=self._backoff_initial_s,
                    max=self._backoff_max_s,
                    jitter=self._backoff_initial_s,
                ),
                stop=lambda _state: self._stop.is_set() or self._refused_token is not None,
                sleep=self._stop.wait,
            )
            try:
                retrying(self._session)
            except RetryError:
                pass  # stopping, or the token was refused: the loop decides
            except Exception:
                logger.exception("kite ticker: unexpected failure; reconnecting")
                self._stop.wait(self._backoff_max_s)

    def _wait_for_new_token(self) -> bool:
        if self._refused_token is None:
            return False
        if self._credentials.access_token() != self._refused_token:
            self._refused_token = None
            return False
        self._stop.wait(_TOKEN_RECHECK_S)
        return True

    def _session(self) -> None:
        """One connection; returns after a connection that worked was lost, raises _Dropped
        when it could not be opened (so the backoff grows)."""
        token = self._credentials.access_token()
        query = urlencode({"api_key": self._credentials.api_key, "access_token": token})
        url = f"{self._ws_base_url}?{query}"
        try:
            socket = websocket.create_connection(url, timeout=self._open_timeout_s)
        except websocket.WebSocketBadStatusException as error:
            if error.status_code == 403:
                self._refused_token = token
                logger.error(
                    "kite ticker: the access token was refused (403); waiting for a new one"
                )
                self._call(
                    self._on_token_expired, "KITE_TOKEN_EXPIRED: ticker handshake refused", token
                )
            raise _Dropped(f"handshake refused: {error.status_code}") from None
        except (OSError, websocket.WebSocketException) as error:
            logger.warning("kite ticker: connect failed: %s", type(error).__name__)
            raise _Dropped(type(error).__name__) from None
        with self._socket_lock:
            if self._stop.is_set():
                socket.close()
                return
            self._socket = socket
        self.connections_total += 1
        try:
            socket.settimeout(_READ_TIMEOUT_S)
            for message in subscribe_messages(self._tokens, self._mode):
                socket.send(message)
            self.connected.set()
            logger.info(
                "kite ticker connected (%d instruments, mode %s)", len(self._tokens), self._mode
            )
            self._read(socket)
        except (OSError, websocket.WebSocketException) as error:
            if not self._stop.is_set():
                logger.warning("kite ticker: connection lost: %s", type(error).__name__)
        finally:
            self.connected.clear()
            with self._socket_lock:
                self._socket = None
            with contextlib.suppress(OSError, websocket.WebSocketException):
                socket.close()
        if not self._received and not self._stop.is_set():
            # Accepted, then closed before a single frame: back off as for a failed connect,
            # never a tight loop of handshakes.
            raise _Dropped("closed before any data")

    def _read(self, socket: websocket.WebSocket) -> None:
        self._received = False
        last_data = time.monotonic()
        while not self._stop.is_set():
            try:
                opcode, data = socket.recv_data()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_data > self._silence_timeout_s:
                    logger.warning(
                        "kite ticker: silent for %.1f s; reconnecting", self._silence_timeout_s
                    )
                    return
                continue
            last_data = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode == websocket.ABNF.OPCODE_BINARY:
                self._received = True
                self._on_binary(data)
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                self._received = True
                self._on_text(data)

    def _on_binary(self, data: bytes) -> None:
        self.frames_total += 1
        frame = parse_binary_frame(data)
        self.garbage_total += frame.garbage
        self._call(self._on_alive)
        if frame.packets:
            self.packets_total += len(frame.packets)
            self._call(self._on_packets, frame.packets, self._now_ns())

    def _on_text(self, data: bytes) -> None:
        try:
            message = msgspec.json.decode(data)
        except msgspec.DecodeError:
            self.garbage_total += 1
            return
        if not isinstance(message, dict):
            self.garbage_total += 1
            return
        kind = message.get("type")
        if kind == "order" and isinstance(message.get("data"), dict):
            self.order_updates_total += 1
            self._call(self._on_order_update, message["data"])
        elif kind == "error":
            logger.warning("kite ticker error message: %s", message.get("data"))
        elif kind == "message":
            logger.info("kite ticker message: %s", message.get("data"))
        else:
            self.garbage_total += 1

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self.callback_errors_total += 1
            logger.exception("kite ticker: a callback failed; the stream goes on")
