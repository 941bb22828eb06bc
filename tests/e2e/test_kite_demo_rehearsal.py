"""The SOLAT go-live steps against the fake Kite's LIVE-type account, in REHEARSAL: connect
(the account is Kite's user id, reported LIVE by the fake's profile), the pre-live check, the
confirmation, arming LIVE through every gate, an entry reaching Kite, and the kill switch
closing the position at Kite. The engine runs in process on configs/demo_kite.yaml with
``kite.live_account: true`` (the rehearsal declaration) and the runbook's LIVE environment; the
admin API is driven over HTTP as the runbook's curl commands do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.brokers.kite import KiteBroker, encode_tag
from domain.enums import LegKind
from domain.plans import client_order_id
from launcher.config import load_config
from launcher.engine import Engine
from tests.helpers import wait_until
from tools.bench_kite_flatten import bracket_plan
from tools.fake_kite import FakeKite

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token-for-the-kite-rehearsal-0123456789"
LIVE_TOKEN = "live-enable-token-for-the-kite-rehearsal-9876543210"
ACCOUNT_ID = "FK0001"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIVE_ENVIRONMENT = {
    "LIVE_TRADING_ENABLED": "true",
    "LIVE_ENABLE_TOKEN": LIVE_TOKEN,
    "LIVE_ACCOUNT_ID": ACCOUNT_ID,
    "LIVE_MAX_ORDER_SIZE": "500",
    "MAX_DAILY_LOSS_PCT": "2.0",
    "MAX_CONCURRENT_POSITIONS": "3",
    "PER_SYMBOL_EXPOSURE_CAP": "2000000",
    "MAX_TRADES_PER_HOUR": "10",
    "VIGIL_ADMIN_TOKEN": ADMIN_TOKEN,
}


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite(
        account_type="LIVE", user_id=ACCOUNT_ID, step_interval_s=0.1, heartbeat_interval_s=0.2
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def engine(fake: FakeKite, tmp_path: Path) -> Iterator[Engine]:
    config = load_config(
        REPO_ROOT / "configs" / "demo_kite.yaml", environ=LIVE_ENVIRONMENT, dotenv_path=None
    )
    config = config.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "logs_dir": str(tmp_path / "logs"),
            "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
            "auto_arm_paper": False,
            "strategies": (),
            "http": config.http.model_copy(update={"port": 0}),
            "kite": config.kite.model_copy(
                update={
                    "api_key": SecretStr(fake.api_key),
                    "access_token": SecretStr(fake.create_session()),
                    "access_token_file": None,
                    "rest_base_url": fake.base_url,
                    "ws_base_url": fake.ws_url,
                    "live_account": True,
                }
            ),
        }
    )
    assert config.rehearsal
    (tmp_path / "logs").mkdir()
    running = Engine(config)
    running.start()
    yield running
    running.stop()


def call(engine: Engine, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.request(
        method,
        f"http://127.0.0.1:{engine.http_port}{path}",
        json=body,
        headers=AUTH,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("X-Vigil-Rehearsal") == "REHEARSAL"
    return response.json()


def kite_orders(fake: FakeKite, client_id: str) -> list[dict[str, Any]]:
    tag = encode_tag(client_id)
    return [order for order in fake.orders() if order.get("tag") == tag]


def net_quantity(fake: FakeKite, symbol: str) -> int:
    return sum(
        int(row["quantity"]) for row in fake.positions()["net"] if row["tradingsymbol"] == symbol
    )


def test_connect_prelive_confirm_and_arm_live_against_the_fakes_live_account(
    fake: FakeKite, engine: Engine
) -> None:
    assert isinstance(engine.broker, KiteBroker)

    connect = call(engine, "POST", "/execution/connect")
    assert connect["ok"] is True and connect["account_id"] == ACCOUNT_ID
    prelive = call(engine, "POST", "/execution/prelive/run")
    assert prelive["passed"] is True, prelive
    call(
        engine,
        "POST",
        "/execution/live/confirm",
        {"phrase": "ENABLE LIVE TRADING", "token": LIVE_TOKEN, "account_id": ACCOUNT_ID},
    )
    armed = call(engine, "POST", "/execution/arm", {"confirm": True, "live_mode": True})
    assert (armed["armed"], armed["mode"], armed["live"]) == (True, "LIVE", True)
    status = call(engine, "GET", "/execution/status")
    assert status["rehearsal"] is True

    # An entry in LIVE reaches Kite, its stop and target follow.
    ticks = engine.metrics.ticks_total.labels(feed=engine.feed_name)
    wait_until(lambda: ticks._value.get() >= 10, timeout_s=30, message="ticks accepted")
    wait_until(lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None, timeout_s=30)
    plan = bracket_plan(
        fake, now_ns=engine.clock.now_ns(), symbol="INFY", strategy="rehearsal", quantity=10
    )
    plan_id = plan.plan_client_id
    engine.directory.tell("risk", plan)
    stop = client_order_id(plan_id, LegKind.STOP)
    wait_until(lambda: net_quantity(fake, "INFY") == 10, timeout_s=30, message="filled at Kite")
    wait_until(lambda: kite_orders(fake, stop), timeout_s=30, message="the stop at Kite")

    # The kill switch closes the position at Kite (close_on_kill_switch).
    killed = call(engine, "POST", "/execution/kill-switch/activate", {"reason": "drill"})
    assert killed["active"] is True
    wait_until(lambda: net_quantity(fake, "INFY") == 0, timeout_s=30, message="flat at Kite")
    # The stop closed it, made a MARKET order (or, if our books did not hold it as accepted
    # yet, it was cancelled and an exit closed): nothing of ours is left working.
    (kite_stop,) = kite_orders(fake, stop)
    assert (kite_stop["order_type"], kite_stop["status"]) in (
        ("MARKET", "COMPLETE"),
        ("SL-M", "CANCELLED"),
    )
