"""The official ``kiteconnect`` client (PyPI, pinned below) against the fake Kite server.

The client pins ``autobahn[twisted]==19.11.2``, so it lives in a venv of its own,
``.venv-kiteconnect/`` under the repo (gitignored): ``make test`` builds it first (Makefile
target ``kiteconnect-venv``), and this module builds it itself when it is missing, so a bare
``pytest`` works too; a failed install fails the test, it never skips. The client runs there
as a subprocess (``tools/fake_kite/official_client.py``) and prints what it received as JSON;
the test compares that with what the fake's market and books say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.clock import ManualClock
from tests.helpers import wait_until
from tools.fake_kite import FakeKite, MarketView, RateLimits

pytestmark = pytest.mark.timeout(600)  # the first run installs the client (about 15 s cached)

REPO_ROOT = Path(__file__).resolve().parents[2]
KITECONNECT = "kiteconnect==5.2.2"
KITE_VENV = REPO_ROOT / ".venv-kiteconnect"
KITE_STAMP = KITE_VENV / ".installed-kiteconnect-5.2.2"
CLIENT_SCRIPT = REPO_ROOT / "tools" / "fake_kite" / "official_client.py"
# 2026-01-05 09:15:00 IST
MARKET_OPEN_NS = 1_767_584_700 * 1_000_000_000

INFY, RELIANCE, SBIN, NIFTY = 408065, 738561, 779521, 256265
MODES = {INFY: "full", RELIANCE: "quote", SBIN: "ltp", NIFTY: "full"}


def official_client_python() -> Path:
    """The venv's Python, made (venv + pinned client) when the stamp is missing."""
    python = KITE_VENV / "bin" / "python"
    if not KITE_STAMP.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(KITE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             KITECONNECT],
            check=True,
            timeout=540,
        )  # fmt: skip
        KITE_STAMP.touch()
    return python


def _client_env() -> dict[str, str]:
    # KiteTicker turns epoch seconds into naive local datetimes: make local time UTC.
    return {**os.environ, "TZ": "UTC", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite(
        seed=11, clock=ManualClock(MARKET_OPEN_NS), rate_limits=RateLimits.unlimited()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _jsonable(value: Any) -> Any:
    """What the client's answer becomes through its JSON report (datetimes as str)."""
    return json.loads(json.dumps(value, default=str))


def test_the_official_rest_client_agrees_with_the_fake(fake: FakeKite) -> None:
    python = official_client_python()
    far_price = 700.0  # SBIN trades near 800: a buy limit there rests
    result = subprocess.run(
        [str(python), str(CLIENT_SCRIPT), "rest", "--root", fake.base_url,
         "--api-key", fake.api_key, "--api-secret", fake.api_secret,
         "--request-token", fake.issue_request_token(), "--far-price", str(far_price)],
        capture_output=True, text=True, timeout=120, env=_client_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout)["data"]

    assert seen["bad_checksum"] == {
        "type": "TokenException",
        "code": 403,
        "message": "Invalid `checksum`.",
    }
    assert seen["session"]["user_id"] == fake.user_id
    assert seen["session"]["access_token"]
    assert seen["profile"]["user_id"] == fake.user_id
    assert seen["profile"]["meta"]["account_type"] == "LIVE"
    assert seen["margins"]["equity"] == seen["margins_equity"]
    assert seen["margins_equity"]["enabled"] is True
    # The market did not move during the run: the quotes are the fake's now.
    assert seen["quote"]["NSE:INFY"] == fake.quote("NSE:INFY")
    assert seen["quote"]["NSE:SBIN"] == fake.quote("NSE:SBIN")
    assert seen["ltp"]["NSE:INFY"]["last_price"] == fake.quote("NSE:INFY")["last_price"]
    by_token = {row["instrument_token"]: row for row in seen["instruments"]}
    for instrument in fake.market.instruments.values():
        row = by_token[instrument.instrument_token]
        assert row["tradingsymbol"] == instrument.tradingsymbol
        assert row["exchange"] == instrument.exchange
        assert row["lot_size"] == instrument.lot_size
        assert Decimal(str(row["tick_size"])) == instrument.tick_size
        assert row["instrument_type"] == instrument.instrument_type
    assert {row["exchange"] for row in seen["instruments_nse"]} == {"NSE"}

    assert seen["no_protection"]["type"] == "InputException"
    assert seen["no_protection"]["code"] == 400
    assert "market_protection" in seen["no_protection"]["message"]

    market_id, limit_id = seen["market_order_id"], seen["limit_order_id"]
    assert seen["modify"] == limit_id
    assert seen["cancel"] == limit_id
    assert seen["orders"] == _jsonable(fake.orders())
    orders = {order["order_id"]: order for order in seen["orders"]}
    assert orders[market_id]["status"] == "COMPLETE"
    assert orders[market_id]["tag"] == "vigil1"
    assert orders[market_id]["filled_quantity"] == 5
    assert orders[market_id]["average_price"] == fake.quote("NSE:INFY")["depth"]["sell"][0]["price"]
    assert orders[limit_id]["status"] == "CANCELLED"
    assert orders[limit_id]["quantity"] == 4
    assert orders[limit_id]["price"] == far_price + 1
    assert orders[limit_id]["cancelled_quantity"] == 4
    assert [step["status"] for step in seen["market_history"]] == ["OPEN", "COMPLETE"]
    assert [step["status"] for step in seen["limit_history"]] == ["OPEN", "OPEN", "CANCELLED"]
    assert seen["market_trades"] == seen["trades"] == _jsonable(fake.trades())
    assert seen["positions"] == _jsonable(fake.positions())
    assert seen["positions"]["net"][0]["quantity"] == 5
    assert seen["after_logout"]["type"] == "TokenException"
    assert seen["after_logout"]["code"] == 403


class _ClientEvents:
    """The ticker subprocess's JSON lines, read on a thread of their own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                with self._lock:
                    self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event["event"] == kind]

    def latest_ticks(self) -> dict[int, dict[str, Any]]:
        latest: dict[int, dict[str, Any]] = {}
        for event in self.of("ticks"):
            for tick in event["ticks"]:
                latest[tick["instrument_token"]] = tick
        return latest


def _utc(epoch_ns: int) -> str:
    return str(datetime.fromtimestamp(epoch_ns // 1_000_000_000, UTC).replace(tzinfo=None))


def _expected_tick(view: MarketView, mode: str) -> dict[str, Any]:
    """What KiteTicker should decode from the fake's packet of ``view`` (rupees, as floats)."""
    instrument = view.instrument
    tick: dict[str, Any] = {
        "tradable": not instrument.is_index,
        "mode": mode,
        "instrument_token": instrument.instrument_token,
        "last_price": float(view.last_price),
    }
    if mode == "ltp":
        return tick
    ohlc = {
        "open": float(view.open),
        "high": float(view.high),
        "low": float(view.low),
        "close": float(view.close),
    }
    stamp = _utc(view.timestamp_ns)
    if instrument.is_index:
        tick["ohlc"] = ohlc
        if mode == "full":
            tick["exchange_timestamp"] = stamp
        return tick
    tick.update(
        {
            "last_traded_quantity": view.last_quantity,
            "average_traded_price": float(view.average_price),
            "volume_traded": view.volume,
            "total_buy_quantity": view.buy_quantity,
            "total_sell_quantity": view.sell_quantity,
            "ohlc": ohlc,
        }
    )
    if mode == "full":
        tick["last_trade_time"] = _utc(view.last_trade_ns)
        tick["exchange_timestamp"] = stamp
        tick["oi"] = tick["oi_day_high"] = tick["oi_day_low"] = 0
        tick["depth"] = {
            side: [
                {"quantity": level.quantity, "price": float(level.price), "orders": level.orders}
                for level in levels
            ]
            for side, levels in (("buy", view.bids), ("sell", view.asks))
        }
    return tick


def _ticks_match(events: _ClientEvents, fake: FakeKite) -> bool:
    latest = events.latest_ticks()
    for token, mode in MODES.items():
        tick = latest.get(token)
        if tick is None:
            return False
        expected = _expected_tick(fake.market_view(token), mode)
        if {key: tick.get(key) for key in expected} != expected:
            return False
    return True


def test_the_official_ticker_decodes_the_fake_frames_and_postbacks(fake: FakeKite) -> None:
    python = official_client_python()
    access_token = fake.create_session()
    command = [str(python), str(CLIENT_SCRIPT), "ticker", "--ws-root", fake.ws_url,
               "--api-key", fake.api_key, "--access-token", access_token]  # fmt: skip
    for token, mode in MODES.items():
        command += ["--mode", f"{mode}:{token}"]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_client_env(),
    )
    events = _ClientEvents(process)
    try:
        wait_until(lambda: events.of("connect"), timeout_s=30, message="KiteTicker connected")
        # Subscribed in quote mode (Kite's default), then each token's own mode: the last tick
        # of each token is in its mode and equals what the fake's market says.
        wait_until(lambda: _ticks_match(events, fake), timeout_s=30, message="ticks as quoted")
        assert fake.subscriptions() == [MODES]
        # The market moves: the next frame carries the new quotes.
        before = events.latest_ticks()[INFY]["last_price"], events.latest_ticks()[NIFTY]
        fake.advance(1.0)
        fake.advance(1.0)
        wait_until(lambda: _ticks_match(events, fake), timeout_s=30, message="moved ticks")
        assert (events.latest_ticks()[INFY]["last_price"], events.latest_ticks()[NIFTY]) != before
        # An order placed over REST comes back as postbacks, one per status change.
        headers = {
            "X-Kite-Version": "3",
            "Authorization": f"token {fake.api_key}:{access_token}",
        }
        answer = httpx.post(
            f"{fake.base_url}/orders/regular",
            headers=headers,
            data={
                "exchange": "NSE",
                "tradingsymbol": "RELIANCE",
                "transaction_type": "SELL",
                "quantity": "7",
                "product": "MIS",
                "order_type": "MARKET",
                "market_protection": "-1",
                "tag": "vigil2",
            },
            timeout=10,
        ).json()
        order_id = answer["data"]["order_id"]
        wait_until(
            lambda: len(events.of("order_update")) >= 2, timeout_s=30, message="two postbacks"
        )
        updates = [event["data"] for event in events.of("order_update")]
        assert [update["status"] for update in updates] == ["OPEN", "COMPLETE"]
        assert all(update["order_id"] == order_id for update in updates)
        (order,) = _jsonable(fake.orders())
        assert {key: updates[-1][key] for key in order} == order
        assert updates[-1]["filled_quantity"] == 7
        assert updates[-1]["tag"] == "vigil2"
        assert not events.of("error")
        # The server drops the socket: KiteTicker reconnects by itself, resubscribes, and the
        # next step's frame reaches it.
        assert fake.drop_sockets() == 1
        wait_until(lambda: len(events.of("connect")) >= 2, timeout_s=60, message="reconnected")
        wait_until(lambda: fake.subscriptions() == [MODES], timeout_s=30, message="resubscribed")
        ticks_before = len(events.of("ticks"))
        fake.advance(1.0)
        wait_until(
            lambda: len(events.of("ticks")) > ticks_before and _ticks_match(events, fake),
            timeout_s=30,
            message="ticks after the reconnect",
        )
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert process.returncode == 0, process.stderr.read()[-4000:] if process.stderr else ""
