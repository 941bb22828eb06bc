"""A small IG REST caller for tests that talk to a ``FakeIG`` over real sockets.

``IgHttp`` sends IG-style requests (``X-IG-API-KEY``, ``Version``, the session's ``CST`` and
``X-SECURITY-TOKEN`` once logged in, JSON bodies, ``_method`` overrides) with httpx and hands
back the status and the decoded body. A plain client of the wire format: no Vigil code.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["IgHttp"]


class IgHttp:
    """An IG REST caller bound to one base URL (``.../gateway/deal``) and API key."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 10.0) -> None:
        headers = {"Accept": "application/json; charset=UTF-8"}
        if api_key is not None:
            headers["X-IG-API-KEY"] = api_key
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self.last_headers: httpx.Headers | None = None

    def call(
        self, method: str, path: str, body: Any = None, *, version: str = "1",
        override: str | None = None, params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """Send one request; return the status and the JSON body (``None`` when empty)."""
        headers = {"Version": version}
        if override is not None:
            headers["_method"] = override
        response = self.client.request(method, path, json=body, headers=headers, params=params)
        self.last_headers = response.headers
        return response.status_code, (response.json() if response.content else None)

    def login(self, username: str, password: str) -> dict[str, Any]:
        """``POST /session`` v2; keep the tokens from the response headers for later calls."""
        status, body = self.call(
            "POST", "/session", {"identifier": username, "password": password}, version="2"
        )
        assert status == 200, body
        assert self.last_headers is not None
        self.client.headers["CST"] = self.last_headers["CST"]
        self.client.headers["X-SECURITY-TOKEN"] = self.last_headers["X-SECURITY-TOKEN"]
        return body

    def deal(self, **fields: Any) -> tuple[int, Any]:
        """``POST /positions/otc`` v2 with defaults for a 1-lot FTSE market BUY."""
        body: dict[str, Any] = {
            "epic": "IX.D.FTSE.DAILY.IP",
            "expiry": "-",
            "direction": "BUY",
            "size": 1,
            "orderType": "MARKET",
            "currencyCode": "GBP",
            "forceOpen": True,
            "guaranteedStop": False,
        }
        body.update(fields)
        body = {key: value for key, value in body.items() if value is not None}
        return self.call("POST", "/positions/otc", body, version="2")

    def confirm(self, reference: str) -> tuple[int, Any]:
        return self.call("GET", f"/confirms/{reference}")

    def close(self) -> None:
        self.client.close()
