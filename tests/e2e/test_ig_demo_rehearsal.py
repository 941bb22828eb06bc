"""The SOLAT go-live steps against the fake IG's LIVE environment, in REHEARSAL: connect (the
account is IG's ACTIVE account after the switch, reported LIVE by the fake's session), the
pre-live check, the confirmation, arming LIVE through every gate, an entry reaching IG with
its stop set on the deal, and the kill switch closing the deal at IG; and the runbook's
blocker sentence when the active account is not LIVE_ACCOUNT_ID. The engine runs in process
on configs/demo_ig.yaml with ``ig.live_account: true`` (the rehearsal declaration) and the
runbook's LIVE environment; the admin API is driven over HTTP as the runbook's curl commands
do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.brokers.ig import IgBroker
from domain.enums import OrderType, Side
from domain.messages import TradePlan
from domain.plans import plan_client_id
from launcher.config import load_config
from launcher.engine import Engine
from tests.helpers import wait_until
from tools.fake_ig import FakeIG

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token-for-the-ig-rehearsal-0123456789"
LIVE_TOKEN = "live-enable-token-for-the-ig-rehearsal-9876543210"
ACCOUNT_ID = "ABC123"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIVE_ENVIRONMENT = {
    "LIVE_TRADING_ENABLED": "true",
    "LIVE_ENABLE_TOKEN": LIVE_TOKEN,
    "LIVE_ACCOUNT_ID": ACCOUNT_ID,
    "LIVE_MAX_ORDER_SIZE": "50",
    "MAX_DAILY_LOSS_PCT": "2.0",
    "MAX_CONCURRENT_POSITIONS": "3",
    "PER_SYMBOL_EXPOSURE_CAP": "20000000",
    "MAX_TRADES_PER_HOUR": "10",
    "VIGIL_ADMIN_TOKEN": ADMIN_TOKEN,
}
EPIC = "IX.D.FTSE.DAILY.IP"


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(
        environment="LIVE", step_interval_s=0.1, probe_interval_s=0.5, volatility_bps=0.5
    ) as server:
        yield server


@pytest.fixture
def start_engine(fake: FakeIG, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def start(account_id: str = ACCOUNT_ID) -> Engine:
        config = load_config(
            REPO_ROOT / "configs" / "demo_ig.yaml", environ=LIVE_ENVIRONMENT, dotenv_path=None
        )
        config = config.model_copy(
            update={
                "data_dir": str(tmp_path / "data"),
                "logs_dir": str(tmp_path / "logs"),
                "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
                "auto_arm_paper": False,
                "strategies": (),
                "http": config.http.model_copy(update={"port": 0}),
                "ig": config.ig.model_copy(
                    update={
                        "rest_base_url": fake.base_url,
                        "live_account": True,
                        "account_id": account_id,
                    }
                ),
            }
        )
        assert config.rehearsal
        (tmp_path / "logs").mkdir(exist_ok=True)
        running = Engine(config)
        engines.append(running)
        running.start()
        return running

    yield start
    for running in engines:
        running.stop()


def call(
    engine: Engine, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    response = httpx.request(
        method,
        f"http://127.0.0.1:{engine.http_port}{path}",
        json=body,
        headers=AUTH,
        timeout=10,
    )
    assert response.headers.get("X-Vigil-Rehearsal") == "REHEARSAL"
    return response


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def ig_deals(fake: FakeIG) -> list[dict[str, Any]]:
    return [p["position"] for p in fake.positions(ACCOUNT_ID)]


def test_connect_prelive_confirm_and_arm_live_against_the_fakes_live_environment(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    assert isinstance(engine.broker, IgBroker)

    connect = ok(call(engine, "POST", "/execution/connect"))
    assert connect["ok"] is True and connect["account_id"] == ACCOUNT_ID
    prelive = ok(call(engine, "POST", "/execution/prelive/run"))
    assert prelive["passed"] is True, prelive
    ok(
        call(
            engine,
            "POST",
            "/execution/live/confirm",
            {"phrase": "ENABLE LIVE TRADING", "token": LIVE_TOKEN, "account_id": ACCOUNT_ID},
        )
    )
    armed = ok(call(engine, "POST", "/execution/arm", {"confirm": True, "live_mode": True}))
    assert (armed["armed"], armed["mode"], armed["live"]) == (True, "LIVE", True)

    ticks = engine.metrics.ticks_total.labels(feed=engine.feed_name)
    wait_until(lambda: ticks._value.get() >= 10, timeout_s=30, message="ticks accepted")
    wait_until(lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None, timeout_s=30)
    offer = Decimal(str(fake.quote(EPIC)["offer"]))
    now = engine.clock.now_ns()
    fields: dict[str, Any] = {
        "strategy": "rehearsal",
        "instrument": "FTSE",
        "side": Side.BUY,
        "entry_price": offer,
        "stop_price": offer - Decimal("30"),
        "target_price": offer + Decimal("60"),
        "quantity": 2,
        "signal_ts": now,
    }
    engine.directory.tell(
        "risk",
        TradePlan(
            plan_client_id=plan_client_id(**fields),
            entry_type=OrderType.MARKET,
            ts_init=now,
            **fields,
        ),
    )
    wait_until(
        lambda: [d["stopLevel"] is not None for d in ig_deals(fake)] == [True],
        timeout_s=30,
        message="the deal at IG with its stop",
    )

    killed = ok(call(engine, "POST", "/execution/kill-switch/activate", {"reason": "drill"}))
    assert killed["active"] is True
    wait_until(lambda: ig_deals(fake) == [], timeout_s=30, message="the deal closed at IG")


def test_a_wrong_active_account_fails_the_prelive_with_the_runbooks_sentence(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine(account_id="XYZ789")  # the login's other account
    connect = call(engine, "POST", "/execution/connect")
    prelive = call(engine, "POST", "/execution/prelive/run")
    text = connect.text + prelive.text
    assert "Broker account XYZ789 does not match LIVE_ACCOUNT_ID ABC123" in text, text
    assert prelive.status_code != 200 or prelive.json()["passed"] is False
