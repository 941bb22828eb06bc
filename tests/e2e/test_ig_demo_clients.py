"""IG's widely used clients and the engine's IG adapter agree on the same fake: while
``trading-ig``'s ``IGStreamService`` (with the Lightstreamer SDK, in its own venv: see
tests/e2e/test_fake_ig_clients.py) listens on the account's TRADE item, the adapter deals,
protects and is stopped out; what the official clients receive (CONFIRMS, OPU) is what the
adapter reported (deal id, level, size, the levels it set, the close)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from pydantic import SecretStr

from adapters.brokers.ig import IgBroker
from domain.clock import ManualClock
from domain.config import IgConfig, IgInstrumentConfig
from domain.enums import OrderStatus, OrderType, Side
from domain.instruments import Instrument
from domain.messages import FillReport, OrderRequest, OrderStatusReport, OrderStreamHeartbeat
from tests.e2e.test_fake_ig_clients import CLIENT_SCRIPT, _Reader, ig_clients_python
from tests.helpers import wait_until
from tools.fake_ig import Allowances, FakeIG

pytestmark = pytest.mark.timeout(600)  # the first run installs the clients

EPIC = "IX.D.FTSE.DAILY.IP"
PLAN = "P00000000000000000aa"
START_NS = 1_767_603_600 * 1_000_000_000


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(seed=3, clock=ManualClock(START_NS), allowances=Allowances.unlimited()) as server:
        yield server


def test_trading_ig_and_the_sdk_see_what_the_adapter_reported(fake: FakeIG) -> None:
    python = ig_clients_python()
    process = subprocess.Popen(
        [
            str(python), str(CLIENT_SCRIPT), "stream", "--base-url", fake.base_url,
            "--api-key", fake.api_key, "--username", fake.username, "--password",
            fake.password, "--account", "ABC123", "--epic", EPIC,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    reader = _Reader(process)
    reports: list[object] = []
    lock = threading.Lock()

    def sink(report: object) -> None:
        with lock:
            reports.append(report)

    def ours(kind: type, cid: str) -> list:
        with lock:
            return [r for r in reports if isinstance(r, kind) and r.client_order_id == cid]

    broker = IgBroker(
        config=IgConfig(
            api_key=SecretStr(fake.api_key),
            identifier=SecretStr(fake.username),
            password=SecretStr(fake.password),
            account_id="ABC123",
            rest_base_url=fake.base_url,
            stream=True,
            instruments={"FTSE": IgInstrumentConfig(epic=EPIC, expiry="DFB")},
        ),
        instruments={"FTSE": Instrument(symbol="FTSE", reference_price=Decimal("7500"))},
        clock=ManualClock(START_NS),
    )
    broker.set_report_sink(sink)  # type: ignore[arg-type]
    try:
        wait_until(
            lambda: {e["kind"] for e in reader.of("subscribed")} == {"market", "trade"},
            timeout_s=120,
            message="trading-ig's stream subscribed",
        )
        broker.connect()
        # IG sends nothing about a deal to a TRADE item not yet live: wait for the adapter's
        # (a heartbeat says connected and subscribed), as trading-ig's was waited for.
        wait_until(
            lambda: any(isinstance(r, OrderStreamHeartbeat) for r in list(reports)),
            timeout_s=60,
            message="the adapter's stream subscribed",
        )
        entry = f"{PLAN}E"
        broker.submit_order(
            OrderRequest(
                client_order_id=entry, instrument="FTSE", side=Side.BUY,
                order_type=OrderType.MARKET, quantity=2,
            )
        )  # fmt: skip
        broker.submit_order(
            OrderRequest(
                client_order_id=f"{PLAN}S", instrument="FTSE", side=Side.SELL,
                order_type=OrderType.STOP, quantity=2, trigger_price=Decimal("7480"),
            )
        )  # fmt: skip
        wait_until(lambda: ours(FillReport, entry), timeout_s=10, message="the adapter's fill")
        [fill] = ours(FillReport, entry)

        def confirm_of(reference: str) -> dict | None:
            return next(
                (c for c in reader.trades("CONFIRMS") if c.get("dealReference") == reference),
                None,
            )

        confirm = wait_until(lambda: confirm_of(entry), timeout_s=20, message="CONFIRMS")
        assert confirm["dealStatus"] == "ACCEPTED"
        assert confirm["dealId"] == fill.broker_order_id
        assert Decimal(str(confirm["level"])) == fill.price
        assert Decimal(str(confirm["size"])) == fill.quantity
        wait_until(
            lambda: any(o.get("stopLevel") == 7480 for o in reader.trades("OPU")),
            timeout_s=20,
            message="the OPU with the stop the adapter set",
        )

        fake.set_quote(EPIC, Decimal("7470.0"))  # IG stops the deal out
        wait_until(
            lambda: any(
                o.get("status") == "DELETED" and o.get("dealId") == fill.broker_order_id
                for o in reader.trades("OPU")
            ),
            timeout_s=20,
            message="trading-ig sees the deal closed",
        )
        wait_until(
            lambda: (
                [r.status for r in ours(OrderStatusReport, f"{PLAN}S")][-1:] == [OrderStatus.FILLED]
            ),
            timeout_s=20,
            message="the adapter reports the stop leg filled",
        )
        assert fake.positions() == [] and broker.list_positions() == []
    finally:
        broker.close()
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)
