"""``python -m tools.fake_ig --port N --seed S``: the fake IG server for demos.

Runs on the wall clock and steps its markets by itself (``--step-interval``); prints the REST
base URL, the Lightstreamer endpoint and the credentials to use, then serves until
interrupted. Faults are set over ``POST /_fake/faults/<name>`` (see the package docstring).
"""

from __future__ import annotations

import argparse
import signal
import threading

from tools.fake_ig.server import FakeIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fake_ig", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step-interval", type=float, default=0.25, help="seconds per step")
    parser.add_argument("--api-key", default="fake-ig-api-key")
    parser.add_argument("--username", default="fakeiguser")
    parser.add_argument("--password", default="fakeigpassword")
    parser.add_argument("--environment", choices=("LIVE", "DEMO"), default="DEMO")
    args = parser.parse_args(argv)
    fake = FakeIG(
        seed=args.seed,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        username=args.username,
        password=args.password,
        environment=args.environment,
        step_interval_s=args.step_interval,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fake.start()
    print(f"fake ig: REST {fake.base_url}  lightstreamer {fake.lightstreamer_url}", flush=True)
    print(f"fake ig: api key {fake.api_key}, login {fake.username} (password as given)",
          flush=True)  # fmt: skip
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
