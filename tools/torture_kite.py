"""``python -m tools.torture_kite``: SIGKILL the engine trading Kite; check it against Kite.

``tools.torture`` breaks the paper engine and reads the venue's tables; this does the same to
the engine on Kite Connect (the local fake, ``tools.fake_kite``) and reads Kite's own REST view
of the account, as an operator would. One fake (a DEMO account, its market stepping every
0.1 s) runs for the whole session; ``tools.kite_login`` writes the access token once; the
engine runs ``configs/demo_kite.yaml`` (the ema strategy on INFY, RELIANCE and SBIN, 2 s bars)
with a 3 s lease, in one work directory, and is restarted on the same database after every
kill. Trials alternate:

``kill_flow``
    SIGKILL 0-3 s into steady trading, once a position is open at Kite.
``kill_flatten``
    SIGKILL 0-25 ms after ``POST /flatten`` was written to the socket, once two positions are
    open (a flatten of two takes 15-35 ms here, so some kills land inside it, some before
    it began and some after it finished).

After a kill the engine is restarted and waited for (``/ready``). A flatten that had begun
(its ``flatten requested`` log line) is given 60 s to leave Kite flat; otherwise 12 s pass
(several reconciliation runs). Entries are then paused (``POST /pause``) and the checks get
30 s to pass on one read:

- ``position_drift``: the engine's positions, netted per symbol, differ from Kite's net.
- ``flatten_unfinished``: a flatten that had begun did not leave Kite flat with none of our
  orders working.
- ``flatten_pause_lost``: a flatten that had begun and not finished came back without its
  FLATTEN pause.
- ``duplicate_client_id``: one of our ids (Kite's ``tag``) placed twice.
- ``unprotected_position``: a symbol open at Kite whose working SL-M orders do not cover it
  (signed: a SELL stop covers a long).
- ``drift_pause``: entries still paused on RECONCILE_DRIFT.

One JSON line per trial on stdout, a summary at the end; exit code 1 when any trial had a
violation. Needs nothing but the repository (the fake and the engine are local processes).
This found the takeover bug of 2026-12-01: a fill heard while standing by was lost for good
(``OrderActor._load_from_storage``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from adapters.brokers.kite.parsing import KITE_OPEN_STATUSES
from tools._launcher import REPO_ROOT, EngineProcess, free_port, send_raw_post, wait_for

__all__ = ["KiteView", "kite_violations", "main"]

_FLOW_KILL_WINDOW_S = 3.0
_FLATTEN_KILL_WINDOW_S = 0.025
_SETTLE_S = 12.0
_FLATTEN_SETTLE_S = 60.0
_CHECK_S = 30.0
_API_KEY, _API_SECRET = "fake_api_key", "fake_api_secret"
# Kite allows 10 requests/s on its read endpoints, shared with the engine's reconciliation:
# the checks poll slowly, or their 429s would be the engine's.
_KITE_POLL_S = 0.5


@dataclass
class KiteView:
    """What Kite says of the account: net quantity per symbol (non-zero only) and our orders."""

    net: dict[str, int]
    orders: list[dict[str, Any]]

    def working(self) -> list[dict[str, Any]]:
        return [o for o in self.orders if str(o.get("status", "")).upper() in KITE_OPEN_STATUSES]


@dataclass
class Trial:
    trial: int
    action: str
    kill_delay_s: float
    flatten_begun: bool = False
    flatten_completed: bool = False
    net_at_kill: dict[str, int] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)


def kite_violations(
    view: KiteView,
    engine_net: Mapping[str, int],
    pause_causes: Iterable[str],
    *,
    flatten_unfinished_at_kill: bool,
) -> list[dict[str, Any]]:
    """The checks above on one read of Kite and of the engine (pure: tested on its own)."""
    causes = set(pause_causes)
    found: list[dict[str, Any]] = []
    if dict(engine_net) != view.net:
        found.append({"kind": "position_drift", "kite": view.net, "engine": dict(engine_net)})
    tags = [str(o.get("tag")) for o in view.orders if o.get("tag")]
    twice = sorted({tag for tag in tags if tags.count(tag) > 1})
    if twice:
        found.append({"kind": "duplicate_client_id", "tags": twice})
    # What the working stops would close, signed like the position (a SELL stop covers a
    # long): it must equal the net, so opposite brackets on one symbol still add up.
    stops: dict[str, int] = {}
    for order in view.working():
        if order.get("order_type") == "SL-M":
            symbol = str(order.get("tradingsymbol"))
            left = int(order.get("quantity", 0)) - int(order.get("filled_quantity", 0))
            sign = 1 if order.get("transaction_type") == "SELL" else -1
            stops[symbol] = stops.get(symbol, 0) + sign * left
    for symbol, quantity in view.net.items():
        if stops.get(symbol, 0) != quantity:
            found.append(
                {
                    "kind": "unprotected_position",
                    "symbol": symbol,
                    "net": quantity,
                    "stops": stops.get(symbol, 0),
                }
            )
    if "RECONCILE_DRIFT" in causes:
        found.append({"kind": "drift_pause"})
    if flatten_unfinished_at_kill:
        if view.net or view.working():
            found.append(
                {"kind": "flatten_unfinished", "net": view.net, "working": len(view.working())}
            )
        if "FLATTEN" not in causes:
            found.append({"kind": "flatten_pause_lost", "causes": sorted(causes)})
    return found


class _Session:
    """The fake, the token and the engine's work directory, for all trials."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.fake_port, self.http_port = free_port(), free_port()
        self.fake = subprocess.Popen(
            [
                sys.executable,
                *("-m", "tools.fake_kite", "--port", str(self.fake_port)),
                *("--account-type", "DEMO", "--step-interval", "0.1", "--seed", str(seed)),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "fake.log", "ab"),  # noqa: SIM115
        )
        base = f"http://127.0.0.1:{self.fake_port}"
        token_file = workdir / "data" / "kite_access_token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        wait_for(lambda: _answers(base), timeout_s=30, message="the fake Kite listening")
        subprocess.run(
            [
                sys.executable,
                *("-m", "tools.kite_login", "--api-key", _API_KEY, "--api-secret", _API_SECRET),
                *("--base-url", base, "--login-base", base, "--fetch-request-token"),
                *("--wait-s", "15", "--write", str(token_file)),
            ],
            cwd=REPO_ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        token = token_file.read_text().strip()
        self.kite = httpx.Client(
            base_url=base,
            headers={"X-Kite-Version": "3", "Authorization": f"token {_API_KEY}:{token}"},
            timeout=5,
        )
        config = yaml.safe_load((REPO_ROOT / "configs" / "demo_kite.yaml").read_text())
        config.update(data_dir="data", logs_dir="logs")
        config["kite"].update(
            rest_base_url=base,
            ws_base_url=f"ws://127.0.0.1:{self.fake_port}/ws",
            access_token_file="data/kite_access_token",
        )
        config["leader"] = {"lease_ttl_s": 3, "renew_interval_s": 1}
        config_path = workdir / "torture_kite.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.engine = EngineProcess(workdir, config_path, self.http_port)

    def kite_data(self, path: str) -> Any:
        for _ in range(50):  # Kite's 10/s on these endpoints: a 429 is asked again
            body = self.kite.get(path).json()
            if body.get("data") is not None:
                return body["data"]
            time.sleep(0.2)
        raise RuntimeError(f"Kite did not answer {path}: {body}")

    def view(self) -> KiteView:
        net: dict[str, int] = {}
        for row in self.kite_data("/portfolio/positions")["net"]:
            if int(row["quantity"]):
                symbol = str(row["tradingsymbol"])
                net[symbol] = net.get(symbol, 0) + int(row["quantity"])
        return KiteView(net=net, orders=list(self.kite_data("/orders")))

    def engine_net(self) -> dict[str, int]:
        answer = self.engine.get_json("/positions") or {}
        net: dict[str, int] = {}
        for position in answer.get("positions", []):
            sign = 1 if position["side"] == "BUY" else -1
            net[position["instrument"]] = net.get(position["instrument"], 0) + sign * int(
                position["quantity"]
            )
        return net

    def pause_causes(self) -> list[str]:
        status = self.engine.get_json("/status") or {}
        return [cause["cause"] for cause in status.get("pause_causes", [])]

    def ready(self) -> None:
        wait_for(
            lambda: (self.engine.get_json("/ready") or {}).get("ready"),
            timeout_s=90,
            message="/ready",
        )

    def close(self) -> None:
        self.engine.close()
        self.fake.terminate()
        self.fake.wait(10)
        self.kite.close()


def _answers(base: str) -> bool:
    try:
        httpx.get(base + "/_fake/state", timeout=1)
    except httpx.TransportError:
        return False
    return True


def run_trial(session: _Session, number: int, rng: random.Random) -> Trial:
    flatten = number % 2 == 1
    trial = Trial(
        trial=number,
        action="kill_flatten" if flatten else "kill_flow",
        kill_delay_s=rng.uniform(0, _FLATTEN_KILL_WINDOW_S if flatten else _FLOW_KILL_WINDOW_S),
    )
    session.engine.post("/resume", json={})
    wait_for(
        lambda: len(session.view().net) >= (2 if flatten else 1),
        timeout_s=300,
        message="positions open at Kite",
        poll_s=_KITE_POLL_S,
    )
    requests_before = len(session.engine.log_lines("flatten requested: torture"))
    connection = (
        send_raw_post(session.engine.port, "/flatten", {"reason": "torture"}) if flatten else None
    )
    time.sleep(trial.kill_delay_s)
    session.engine.kill()
    if connection is not None:
        connection.close()
    trial.net_at_kill = session.view().net
    log = session.engine.log_file.read_text(errors="replace") if flatten else ""
    trial.flatten_begun = len(session.engine.log_lines("flatten requested: torture")) > (
        requests_before
    )
    trial.flatten_completed = (
        trial.flatten_begun
        and "flatten completed" in log.rsplit("flatten requested: torture", 1)[-1]
    )
    unfinished = trial.flatten_begun and not trial.flatten_completed
    session.engine.start()
    session.ready()
    if unfinished:
        with contextlib.suppress(TimeoutError):  # the checks below say what is left
            wait_for(
                lambda: not session.view().net and not session.view().working(),
                timeout_s=_FLATTEN_SETTLE_S,
                message="flat at Kite after the killed flatten",
                poll_s=_KITE_POLL_S,
            )
    else:
        time.sleep(_SETTLE_S)
    session.engine.post("/pause", json={"reason": "torture check"})
    deadline = time.monotonic() + _CHECK_S
    while True:
        found = kite_violations(
            session.view(),
            session.engine_net(),
            session.pause_causes(),
            flatten_unfinished_at_kill=unfinished,
        )
        if not found or time.monotonic() > deadline:
            trial.violations = found
            return trial
        time.sleep(_KITE_POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default a temp dir")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vigil-torture-kite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"seed": seed, "workdir": str(workdir)}), flush=True)
    session = _Session(workdir, seed)
    results: list[Trial] = []
    try:
        session.engine.start()
        session.ready()
        for number in range(args.trials):
            trial = run_trial(session, number, rng)
            results.append(trial)
            print(json.dumps(asdict(trial)), flush=True)
    finally:
        session.close()
    bad = [t.trial for t in results if t.violations]
    inside = sum(1 for t in results if t.flatten_begun and not t.flatten_completed)
    print(
        f"{len(results)} trials, {len(bad)} with violations {bad}; "
        f"{inside} kills inside a flatten; work directory {workdir}",
        flush=True,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
