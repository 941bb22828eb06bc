"""Small helpers for tests that talk to a ``FakeKite`` over real sockets.

``KiteHttp`` sends Kite-style requests (headers, form bodies) with httpx and hands back the
status and the decoded envelope; ``TickerSocket`` is a websocket-client connection to the
fake's ticker that sorts what arrives into heartbeats, binary frames and text messages. Both
are plain clients of the wire format: no Vigil code, no Kite adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import websocket

__all__ = ["KiteHttp", "TickerSocket"]


class KiteHttp:
    """A Kite Connect v3 REST caller: ``X-Kite-Version: 3``, ``Authorization: token k:t``."""

    def __init__(
        self, base_url: str, api_key: str, access_token: str | None, *, timeout_s: float = 10.0
    ) -> None:
        headers = {"X-Kite-Version": "3"}
        if access_token is not None:
            headers["Authorization"] = f"token {api_key}:{access_token}"
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def call(
        self, method: str, path: str, data: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        """Send one request (form body for POST/PUT, query for GET/DELETE); return the status
        and the JSON body."""
        if method in ("POST", "PUT"):
            response = self.client.request(method, path, data=data, **kwargs)
        else:
            response = self.client.request(method, path, params=data, **kwargs)
        return response.status_code, response.json()

    def place(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        """``POST /orders/regular`` with defaults for a 1-share NSE:INFY MIS market buy."""
        body: dict[str, Any] = {
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": "BUY",
            "quantity": 1,
            "product": "MIS",
            "order_type": "MARKET",
            "market_protection": -1,
        }
        body.update(fields)
        body = {key: value for key, value in body.items() if value is not None}
        return self.call("POST", "/orders/regular", body)

    def close(self) -> None:
        self.client.close()


class TickerSocket:
    """A websocket-client connection to the fake's ticker.

    ``frames`` holds the binary frames longer than a heartbeat, ``texts`` the decoded JSON
    text messages, ``heartbeats`` the count of 1-byte frames; ``pump_until`` reads until a
    condition holds or a deadline passes.
    """

    def __init__(self, ws_url: str, api_key: str, access_token: str) -> None:
        query = urlencode({"api_key": api_key, "access_token": access_token})
        self.ws = websocket.create_connection(f"{ws_url}?{query}", timeout=5)
        self.frames: list[bytes] = []
        self.texts: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def pump_until(self, condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
        """Receive until ``condition()`` holds; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(
                    f"ticker: condition not met (closed={self.closed}, frames="
                    f"{len(self.frames)}, texts={self.texts[-3:]}, heartbeats={self.heartbeats})"
                )
            self.ws.settimeout(min(left, 1.0))
            try:
                opcode, payload = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                self.closed = True
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.closed = True
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                if len(payload) == 1:
                    self.heartbeats += 1
                else:
                    self.frames.append(payload)
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                self.texts.append(json.loads(payload))

    def postbacks(self) -> list[dict[str, Any]]:
        return [text["data"] for text in self.texts if text.get("type") == "order"]

    def close(self) -> None:
        self.ws.close()
