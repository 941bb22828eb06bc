"""Zerodha Kite Connect v3 behind the broker port.

- ``parsing``: pure wire mappings (tags, order forms, reports, errors, instruments, frames);
- ``http``: the REST client (httpx) and the credentials;
- ``stream``: the ticker websocket (websocket-client) on a thread of its own;
- ``execution``: ``KiteBroker``, the port implementation.
"""

from __future__ import annotations

from adapters.brokers.kite.execution import KiteBroker, kite_credentials
from adapters.brokers.kite.http import KiteCredentials, KiteRestClient
from adapters.brokers.kite.parsing import KiteTokenExpired, decode_tag, encode_tag
from adapters.brokers.kite.stream import KiteTickerStream

__all__ = [
    "KiteBroker",
    "KiteCredentials",
    "KiteRestClient",
    "KiteTickerStream",
    "KiteTokenExpired",
    "decode_tag",
    "encode_tag",
    "kite_credentials",
]
