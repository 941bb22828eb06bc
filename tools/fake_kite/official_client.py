"""Drive a Kite server with the official ``kiteconnect`` client; report what it saw as JSON.

Runs in the separate venv that has ``kiteconnect`` (it pins ``autobahn[twisted]``, which does
not belong in the engine's venv): ``tests/e2e/test_fake_kite_official_client.py`` makes that
venv and starts this file with its Python. Imports nothing of Vigil.

Usage::

    python official_client.py rest --root URL --api-key K --api-secret S --request-token T
    python official_client.py ticker --ws-root URL --api-key K --access-token A \\
        --mode full:408065 --mode quote:738561 --mode ltp:779521

``rest`` prints one JSON object with every answer. ``ticker`` prints one JSON line per event
(``connect``, ``ticks``, ``order_update``, ``error``, ``close``) until its standard input
closes, then exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


def _error(error: Exception) -> dict[str, Any]:
    code = getattr(error, "code", None)
    return {"type": type(error).__name__, "code": code, "message": str(error)}


def run_rest(args: argparse.Namespace) -> int:
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kite_errors

    kite = KiteConnect(api_key=args.api_key, root=args.root, timeout=10)
    out: dict[str, Any] = {}
    try:
        kite.generate_session(args.request_token, api_secret="not-the-secret")
    except kite_errors.TokenException as error:
        out["bad_checksum"] = {
            "type": type(error).__name__,
            "code": error.code,
            "message": str(error),
        }
    session = kite.generate_session(args.request_token, api_secret=args.api_secret)
    kite.set_access_token(session["access_token"])
    out["session"] = session
    out["profile"] = kite.profile()
    out["margins"] = kite.margins()
    out["margins_equity"] = kite.margins("equity")
    out["quote"] = kite.quote(["NSE:INFY", "NSE:SBIN"])
    out["ltp"] = kite.ltp(["NSE:INFY"])
    out["instruments"] = kite.instruments()
    out["instruments_nse"] = kite.instruments("NSE")
    try:
        kite.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol="INFY",
            transaction_type="BUY",
            quantity=5,
            product="MIS",
            order_type="MARKET",
        )
    except kite_errors.InputException as error:
        out["no_protection"] = {
            "type": type(error).__name__,
            "code": error.code,
            "message": str(error),
        }
    market_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=5,
        product="MIS",
        order_type="MARKET",
        market_protection=-1,
        tag="vigil1",
    )
    limit_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="SBIN",
        transaction_type="BUY",
        quantity=3,
        product="MIS",
        order_type="LIMIT",
        price=args.far_price,
        validity="DAY",
    )
    out["modify"] = kite.modify_order(
        variety="regular", order_id=limit_id, quantity=4, price=args.far_price + 1
    )
    out["cancel"] = kite.cancel_order(variety="regular", order_id=limit_id)
    out["market_order_id"] = market_id
    out["limit_order_id"] = limit_id
    out["orders"] = kite.orders()
    out["market_history"] = kite.order_history(market_id)
    out["limit_history"] = kite.order_history(limit_id)
    out["market_trades"] = kite.order_trades(market_id)
    out["trades"] = kite.trades()
    out["positions"] = kite.positions()
    kite.invalidate_access_token()
    try:
        kite.profile()
    except kite_errors.TokenException as error:
        out["after_logout"] = {
            "type": type(error).__name__,
            "code": error.code,
            "message": str(error),
        }
    _emit("rest", data=out)
    return 0


def run_ticker(args: argparse.Namespace) -> int:
    from kiteconnect import KiteTicker

    modes: dict[str, list[int]] = {}
    for item in args.mode:
        mode, _, token = item.partition(":")
        modes.setdefault(mode, []).append(int(token))
    tokens = [token for group in modes.values() for token in group]
    ticker = KiteTicker(args.api_key, args.access_token, root=args.ws_root, reconnect=True)

    def on_connect(ws: Any, response: Any) -> None:
        ws.subscribe(tokens)
        for mode, group in modes.items():
            ws.set_mode(mode, group)
        _emit("connect")

    ticker.on_connect = on_connect
    ticker.on_ticks = lambda _ws, ticks: _emit("ticks", ticks=ticks)
    ticker.on_order_update = lambda _ws, data: _emit("order_update", data=data)
    ticker.on_error = lambda _ws, code, reason: _emit("error", code=code, reason=str(reason))
    ticker.on_close = lambda _ws, code, reason: _emit("close", code=code, reason=str(reason))
    ticker.on_reconnect = lambda _ws, attempts: _emit("reconnect", attempts=attempts)
    ticker.connect(threaded=True)
    done = threading.Event()

    def wait_for_stdin_eof() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    done.wait()
    ticker.close()
    sys.stdout.flush()
    os._exit(0)  # the Twisted reactor thread does not stop on its own


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    rest = sub.add_parser("rest")
    rest.add_argument("--root", required=True)
    rest.add_argument("--api-key", required=True)
    rest.add_argument("--api-secret", required=True)
    rest.add_argument("--request-token", required=True)
    rest.add_argument("--far-price", type=float, required=True)
    ticker = sub.add_parser("ticker")
    ticker.add_argument("--ws-root", required=True)
    ticker.add_argument("--api-key", required=True)
    ticker.add_argument("--access-token", required=True)
    ticker.add_argument("--mode", action="append", required=True)
    args = parser.parse_args()
    return run_rest(args) if args.command == "rest" else run_ticker(args)


if __name__ == "__main__":
    raise SystemExit(main())
