"""Drive an IG server with ``trading-ig`` and the Lightstreamer SDK; report what they saw as JSON.

Runs in the separate venv that has ``trading-ig`` (it pins ``lightstreamer-client-lib==1.0.3``
and pulls requests-cache and pycryptodome, which do not belong in the engine's venv):
``tests/e2e/test_fake_ig_clients.py`` makes that venv and starts this file with its Python.
Imports nothing of Vigil.

Usage::

    python ig_clients.py rest --base-url URL --api-key K --username U --password P \\
        --account ABC123 --switch-to XYZ789 --epic IX.D.FTSE.DAILY.IP
    python ig_clients.py stream --base-url URL --api-key K --username U --password P \\
        --account ABC123 --epic IX.D.FTSE.DAILY.IP

``rest`` prints one JSON object with every answer. ``stream`` logs in with trading-ig's
``IGStreamService`` (LightstreamerClient at the session's lightstreamerEndpoint, user = the
account, password ``CST-..|XST-..``), subscribes ``MARKET:{epic}`` (MERGE, snapshot) and
``TRADE:{account}`` (DISTINCT), prints one JSON line per event (``status``, ``subscribed``,
``market``, ``trade``, ``error``) and, on a line ``open`` on its standard input, opens a
1-lot BUY with trading-ig's REST (``opened``); it exits when its standard input closes.
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


def _service(args: argparse.Namespace) -> Any:
    from trading_ig.rest import IGService

    service = IGService(
        args.username,
        args.password,
        args.api_key,
        "demo",
        acc_number=args.account,
        return_dataframe=False,
        return_munch=False,
    )
    # trading-ig takes its base from D_BASE_URL by account type: point both copies at ours
    service.BASE_URL = args.base_url
    service.crud_session.BASE_URL = args.base_url
    return service


def _open_buy(service: Any, epic: str, size: float = 1.0) -> dict[str, Any]:
    return service.create_open_position(
        currency_code="GBP", direction="BUY", epic=epic, expiry="-", force_open=True,
        guaranteed_stop=False, level=None, limit_distance=20, limit_level=None,
        order_type="MARKET", quote_id=None, size=size, stop_distance=10, stop_level=None,
        trailing_stop=False, trailing_stop_increment=None,
    )  # fmt: skip


def run_rest(args: argparse.Namespace) -> int:
    from trading_ig.rest import ApiExceededException

    service = _service(args)
    out: dict[str, Any] = {}
    out["session"] = service.create_session()
    out["cst"] = service.session.headers["CST"]
    if args.expect_rate_limit:  # the test makes the next non-trading request a 403
        try:
            service.fetch_accounts()
            out["rate_limit"] = None
        except ApiExceededException as error:
            out["rate_limit"] = type(error).__name__
    out["accounts"] = service.fetch_accounts()
    out["switch"] = service.switch_account(args.switch_to, False)
    out["read_session"] = service.read_session()
    out["market"] = service.fetch_market_by_epic(args.epic)
    opened = _open_buy(service, args.epic)
    out["opened"] = opened
    out["confirm"] = service.fetch_deal_by_deal_reference(opened["dealReference"])
    out["positions"] = service.fetch_open_positions()
    out["closed"] = service.close_open_position(
        deal_id=opened["dealId"], direction="SELL", epic=None, expiry=None, level=None,
        order_type="MARKET", quote_id=None, size=opened["size"],
    )  # fmt: skip
    out["positions_after"] = service.fetch_open_positions()
    _emit("rest", data=out)
    return 0


def run_stream(args: argparse.Namespace) -> int:
    from lightstreamer.client import ClientListener, Subscription, SubscriptionListener
    from trading_ig.stream import IGStreamService

    service = _service(args)
    stream = IGStreamService(service)
    stream.acc_number = args.account

    class Status(ClientListener):  # type: ignore[misc]
        def onStatusChange(self, status: str) -> None:
            _emit("status", status=status)

        def onServerError(self, code: int, message: str) -> None:
            _emit("error", code=code, message=message)

    class Updates(SubscriptionListener):  # type: ignore[misc]
        def __init__(self, kind: str, fields: list[str]) -> None:
            self.kind = kind
            self.fields = fields

        def onSubscription(self) -> None:
            _emit("subscribed", kind=self.kind)

        def onSubscriptionError(self, code: int, message: str) -> None:
            _emit("error", kind=self.kind, code=code, message=message)

        def onItemUpdate(self, update: Any) -> None:
            values = {name: update.getValue(name) for name in self.fields}
            _emit(self.kind, item=update.getItemName(), values=values)

    stream.create_session(version="2")
    stream.ls_client.addListener(Status())
    market_fields = ["BID", "OFFER", "UPDATE_TIME", "MARKET_STATE"]
    market = Subscription(mode="MERGE", items=[f"MARKET:{args.epic}"], fields=market_fields)
    market.setRequestedSnapshot("yes")
    market.addListener(Updates("market", market_fields))
    trade_fields = ["CONFIRMS", "OPU", "WOU"]
    trade = Subscription(mode="DISTINCT", items=[f"TRADE:{args.account}"], fields=trade_fields)
    trade.addListener(Updates("trade", trade_fields))
    stream.subscribe(market)
    stream.subscribe(trade)
    done = threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip() == "open":
                _emit("opened", data=_open_buy(service, args.epic))
        done.set()

    threading.Thread(target=read_commands, daemon=True).start()
    done.wait()
    sys.stdout.flush()
    os._exit(0)  # the SDK's threads do not all end on their own


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("rest", "stream"))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--switch-to")
    parser.add_argument("--epic", required=True)
    parser.add_argument("--expect-rate-limit", action="store_true")
    args = parser.parse_args()
    return run_rest(args) if args.command == "rest" else run_stream(args)


if __name__ == "__main__":
    raise SystemExit(main())
