"""IG's widely used clients against the fake IG server: ``trading-ig`` and the Lightstreamer SDK.

``trading-ig`` pins ``lightstreamer-client-lib==1.0.3`` (and pulls requests-cache and
pycryptodome), so both live in a venv of their own, ``.venv-igclients/`` under the repo
(gitignored): ``make test`` builds it first (Makefile target ``igclients-venv``), and this
module builds it itself when it is missing, so a bare ``pytest`` works too; a failed install
fails the test, it never skips. The clients run there as a subprocess
(``tools/fake_ig/ig_clients.py``) and print what they received as JSON; the tests compare that
with what the fake's books and quotes say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.clock import ManualClock
from tests.helpers import wait_until
from tools.fake_ig import Allowances, FakeIG

pytestmark = pytest.mark.timeout(600)  # the first run installs the clients

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ("trading-ig==0.0.25", "lightstreamer-client-lib==1.0.3")
IG_VENV = REPO_ROOT / ".venv-igclients"
IG_STAMP = IG_VENV / ".installed-trading-ig-0.0.25"
CLIENT_SCRIPT = REPO_ROOT / "tools" / "fake_ig" / "ig_clients.py"
EPIC = "IX.D.FTSE.DAILY.IP"
START_NS = 1_767_603_600 * 1_000_000_000  # 2026-01-05 09:00:00 UTC


def ig_clients_python() -> Path:
    """The venv's Python, made (venv + pinned clients) when the stamp is missing."""
    python = IG_VENV / "bin" / "python"
    if not IG_STAMP.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(IG_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *CLIENTS],
            check=True,
            timeout=540,
        )  # fmt: skip
        IG_STAMP.touch()
    return python


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG(seed=3, clock=ManualClock(START_NS), allowances=Allowances.unlimited())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _args(fake: FakeIG, command: str) -> list[str]:
    return [
        str(ig_clients_python()), str(CLIENT_SCRIPT), command, "--base-url", fake.base_url,
        "--api-key", fake.api_key, "--username", fake.username, "--password", fake.password,
        "--account", "ABC123", "--epic", EPIC,
    ]  # fmt: skip


def test_trading_ig_rest_agrees_with_the_fake(fake: FakeIG) -> None:
    fake.rate_limit_next(1, kind="account", category="non-trading")
    result = subprocess.run(
        [*_args(fake, "rest"), "--switch-to", "XYZ789", "--expect-rate-limit"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])["data"]

    # create_session: tokens in headers, the preferred account, our stream endpoint
    assert out["session"]["currentAccountId"] == "ABC123"
    assert out["session"]["lightstreamerEndpoint"] == fake.lightstreamer_url
    # a 403 allowance error is trading-ig's ApiExceededException, not an auth failure
    assert out["rate_limit"] == "ApiExceededException"
    assert [a["accountId"] for a in out["accounts"]["accounts"]] == ["ABC123", "XYZ789"]
    # switch_account moved the session the client's CST names
    assert fake.active_account(out["cst"]) == "XYZ789"
    assert out["read_session"]["accountId"] == "XYZ789"
    # fetch_market_by_epic (v3) is the fake's snapshot and dealing rules
    assert out["market"]["snapshot"] == fake.quote(EPIC)
    assert out["market"]["dealingRules"]["minDealSize"]["value"] == 0.5
    assert out["market"]["dealingRules"]["minNormalStopOrLimitDistance"]["value"] == 4.0
    # create_open_position -> dealReference -> confirm, on the switched-to account
    opened = out["opened"]
    assert opened["dealStatus"] == "ACCEPTED" and opened["status"] == "OPEN"
    offer = fake.quote(EPIC)["offer"]
    assert opened["level"] == offer
    assert opened["stopLevel"] == offer - 10 and opened["limitLevel"] == offer + 20
    assert out["confirm"] == fake.confirms()[opened["dealReference"]]
    (entry,) = out["positions"]["positions"]
    assert entry["position"]["dealId"] == opened["dealId"]
    assert entry["position"]["stopLevel"] == opened["stopLevel"]
    assert entry["market"]["epic"] == EPIC
    # close_open_position (POST + _method: DELETE) closed it at the bid
    assert out["closed"]["status"] == "CLOSED"
    assert out["closed"]["level"] == fake.quote(EPIC)["bid"]
    assert out["positions_after"] == {"positions": []}
    assert fake.positions() == []
    deals = [r for r in fake.request_log("trading")]
    assert [(r.method, r.path, r.account_id, r.status) for r in deals] == [
        ("POST", "/positions/otc", "XYZ789", 200),
        ("DELETE", "/positions/otc", "XYZ789", 200),
    ]
    assert deals[0].version == "2"


class _Reader:
    """Collects the stream client's JSON lines on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event["event"] == kind]

    def trades(self, field: str) -> list[dict[str, Any]]:
        return [
            json.loads(event["values"][field])
            for event in self.of("trade")
            if event["values"].get(field)
        ]


def test_lightstreamer_sdk_receives_market_and_trade_updates_equal_to_the_fake(
    fake: FakeIG,
) -> None:
    process = subprocess.Popen(
        _args(fake, "stream"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    reader = _Reader(process)
    try:
        wait_until(
            lambda: {e["kind"] for e in reader.of("subscribed")} == {"market", "trade"},
            timeout_s=60, message=f"both subscriptions ({reader.events[-5:]})",
        )  # fmt: skip
        assert {"status": "CONNECTED:WS-STREAMING", "event": "status"} in reader.of("status")
        assert set(fake.subscriptions()) == {
            (f"MARKET:{EPIC}", "MERGE", ("BID", "OFFER", "UPDATE_TIME", "MARKET_STATE")),
            ("TRADE:ABC123", "DISTINCT", ("CONFIRMS", "OPU", "WOU")),
        }
        # the MERGE snapshot is the fake's quote
        wait_until(lambda: reader.of("market"), timeout_s=10, message="market snapshot")
        assert reader.of("market")[0]["values"] == fake.market_fields(EPIC)

        # a price move streams the new quote
        fake.set_quote(EPIC, Decimal("7510.0"))
        wait_until(
            lambda: reader.of("market")[-1]["values"]["BID"] == "7510.0",
            timeout_s=10, message="the moved quote",
        )  # fmt: skip
        assert reader.of("market")[-1]["values"] == fake.market_fields(EPIC)

        # a deal through trading-ig's REST: CONFIRMS and OPU equal the fake's books
        assert process.stdin is not None
        process.stdin.write("open\n")
        process.stdin.flush()
        wait_until(lambda: reader.of("opened"), timeout_s=30, message="the deal")
        reference = reader.of("opened")[0]["data"]["dealReference"]
        wait_until(lambda: reader.trades("OPU"), timeout_s=10, message="OPU")
        assert reader.trades("CONFIRMS")[0] == fake.confirms()[reference]
        opu = reader.trades("OPU")[0]
        (position,) = fake.positions("ABC123")
        assert opu["status"] == "OPEN" and opu["dealId"] == position["position"]["dealId"]
        assert opu["stopLevel"] == position["position"]["stopLevel"] == 7501.0

        # the broker-side stop: the bid falls through it and IG closes the position itself
        fake.set_quote(EPIC, Decimal("7500.0"))
        wait_until(lambda: len(reader.trades("OPU")) >= 2, timeout_s=10, message="stop OPU")
        closed = reader.trades("OPU")[1]
        assert closed["status"] == "DELETED" and closed["dealId"] == opu["dealId"]
        wait_until(lambda: len(reader.trades("CONFIRMS")) >= 2, timeout_s=10, message="stop")
        stop_confirm = reader.trades("CONFIRMS")[1]
        assert stop_confirm["status"] == "CLOSED" and stop_confirm["level"] == 7500.0
        assert fake.positions() == []

        # a dropped stream: the SDK reconnects by itself and updates flow again. The fake has
        # no HTTP transport, so the SDK's recovery attempt fails; it waits out its
        # sessionRecoveryTimeout (15 s) and creates a new session (LS_old_session).
        connected = len(reader.of("status"))
        fake.drop_streams()
        wait_until(
            lambda: any(e["status"] == "CONNECTED:WS-STREAMING"
                        for e in reader.of("status")[connected:]),
            timeout_s=60, message=f"the SDK reconnecting ({reader.of('status')[connected:]})",
        )  # fmt: skip
        fake.set_quote(EPIC, Decimal("7520.0"))
        wait_until(
            lambda: reader.of("market")[-1]["values"]["BID"] == "7520.0",
            timeout_s=30, message=f"a quote after the reconnect ({reader.events[-4:]})",
        )  # fmt: skip
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
