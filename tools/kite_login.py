"""``python -m tools.kite_login``: the daily Kite Connect login (the access token expires at
06:00 IST the next day).

Step 1, no request token: prints the login URL
(``https://kite.zerodha.com/connect/login?v=3&api_key=...``). Open it, log in; Kite redirects
to the app's redirect URL with ``request_token=...``.

Step 2, ``--request-token T``: exchanges it (``POST /session/token`` with
``checksum = sha256(api_key + request_token + api_secret)``) and prints where the access token
goes: with ``--write FILE`` the token is written there (mode 0600) and the engine's
``kite.access_token_file`` picks it up at its next request, no restart; without it the token is
printed once for ``KITE_ACCESS_TOKEN``.

Against the fake (``python -m tools.fake_kite``): ``--base-url http://127.0.0.1:PORT
--login-base http://127.0.0.1:PORT --fetch-request-token`` does both steps (the fake's login
page answers with a request token); ``--wait-s`` waits for the server to come up.

The API key and secret come from ``--api-key``/``--api-secret`` or ``KITE_API_KEY`` /
``KITE_API_SECRET``. The secret and the token never go to a log.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from adapters.brokers.base import BrokerError, BrokerUnavailable
from adapters.brokers.kite.http import KiteCredentials, KiteRestClient
from adapters.brokers.kite.parsing import KiteTokenExpired
from domain.config import KITE_REAL_REST_BASE_URL

__all__ = ["checksum", "login_url", "main"]

KITE_LOGIN_BASE = "https://kite.zerodha.com"


def login_url(api_key: str, login_base: str = KITE_LOGIN_BASE) -> str:
    """The page where the operator logs in (Kite redirects back with a request token)."""
    return f"{login_base.rstrip('/')}/connect/login?{urlencode({'v': 3, 'api_key': api_key})}"


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """sha256(api_key + request_token + api_secret), hex: what ``/session/token`` checks."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def _fetch_request_token(url: str, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = httpx.get(url, timeout=5.0, follow_redirects=False)
            break
        except httpx.TransportError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)  # waiting for a server process to come up, not for a condition
    response.raise_for_status()
    token = response.json().get("request_token")
    if not isinstance(token, str) or not token:
        raise ValueError(f"no request_token in the answer of {url.split('?')[0]}")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kite_login", description=__doc__)
    parser.add_argument("--api-key", default=os.environ.get("KITE_API_KEY", ""))
    parser.add_argument("--api-secret", default=os.environ.get("KITE_API_SECRET", ""))
    parser.add_argument("--base-url", default=KITE_REAL_REST_BASE_URL, help="REST base")
    parser.add_argument("--login-base", default=KITE_LOGIN_BASE, help="login page base")
    parser.add_argument("--request-token", default="")
    parser.add_argument(
        "--fetch-request-token",
        action="store_true",
        help="GET the login URL for a request token (the fake's login page gives one)",
    )
    parser.add_argument("--write", default="", help="write the access token to this file")
    parser.add_argument("--wait-s", type=float, default=0.0, help="wait for the server")
    args = parser.parse_args(argv)
    if not args.api_key:
        print("kite_login: no API key (--api-key or KITE_API_KEY)", file=sys.stderr)
        return 2
    url = login_url(args.api_key, args.login_base)
    request_token = args.request_token
    if not request_token and args.fetch_request_token:
        try:
            request_token = _fetch_request_token(url, args.wait_s)
        except (httpx.HTTPError, ValueError) as error:
            print(f"kite_login: could not get a request token: {error}", file=sys.stderr)
            return 1
    if not request_token:
        print(f"Log in here, then run again with --request-token <request_token>:\n  {url}")
        return 0
    if not args.api_secret:
        print("kite_login: no API secret (--api-secret or KITE_API_SECRET)", file=sys.stderr)
        return 2
    client = KiteRestClient(
        base_url=args.base_url, credentials=KiteCredentials(api_key=args.api_key)
    )
    try:
        session = client.post_unauthenticated(
            "/session/token",
            {
                "api_key": args.api_key,
                "request_token": request_token,
                "checksum": checksum(args.api_key, request_token, args.api_secret),
            },
        )
    except KiteTokenExpired as error:
        # 403 TokenException here: a used or stale request token, or a wrong key/checksum.
        print(f"kite_login: the session exchange was refused: {error}", file=sys.stderr)
        return 1
    except BrokerUnavailable as error:
        print(f"kite_login: the session exchange failed: {error}", file=sys.stderr)
        return 1
    except BrokerError as error:
        print(f"kite_login: the session exchange was refused: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    access_token = str((session or {}).get("access_token") or "")
    if not access_token:
        print("kite_login: the answer had no access_token", file=sys.stderr)
        return 1
    user = (session or {}).get("user_id", "?")
    if args.write:
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(access_token + "\n")
        print(
            f"Logged in as {user}. Access token written to {path}; point kite.access_token_file "
            "at it (a running engine picks it up at its next request), then resume entries."
        )
    else:
        print(
            f"Logged in as {user}. Set KITE_ACCESS_TOKEN to this access token (valid until "
            f"06:00 IST tomorrow), or use --write FILE with kite.access_token_file:\n"
            f"{access_token}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
