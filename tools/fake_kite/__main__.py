"""``python -m tools.fake_kite --port N --seed S``: the fake Kite server for demos.

Runs on the wall clock and steps its market by itself (``--step-interval``); prints the URLs
and the credentials to use, then serves until interrupted. Faults are set over
``POST /_fake/faults/<name>`` (see the package docstring).
"""

from __future__ import annotations

import argparse
import signal
import threading

from tools.fake_kite.server import FakeKite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fake_kite", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step-interval", type=float, default=0.25, help="seconds per step")
    parser.add_argument("--api-key", default="fake_api_key")
    parser.add_argument("--api-secret", default="fake_api_secret")
    parser.add_argument("--account-type", choices=("LIVE", "DEMO"), default="LIVE")
    args = parser.parse_args(argv)
    fake = FakeKite(
        seed=args.seed,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        account_type=args.account_type,
        step_interval_s=args.step_interval,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fake.start()
    print(f"fake kite: REST {fake.base_url}  ticker {fake.ws_url}", flush=True)
    print(f"fake kite: login {fake.login_url}  (api_key={fake.api_key})", flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
