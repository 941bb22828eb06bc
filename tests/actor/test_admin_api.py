"""The admin API over a real socket, on the real engine (no stand-ins for our actors)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position

TOKEN = "s3cret-admin-token-for-tests"


@pytest.fixture
def api_desk(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(run_http=True, http={"port": 0, "token": TOKEN})
    desk.ready_to_trade()
    return desk


@pytest.fixture
def client(api_desk: Desk) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{api_desk.engine.http_port}", timeout=10) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Pumper:
    """Keeps the engine's heartbeat going while a blocking request is in flight."""

    def __init__(self, desk: Desk) -> None:
        self._desk = desk
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._desk.engine.fire_timer()

    def __enter__(self) -> Pumper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def test_liveness_readiness_and_status_describe_the_engine(
    api_desk: Desk, client: httpx.Client
) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").status_code == 200
    status = client.get("/status", headers=AUTH).json()
    assert status["mode"] == "PAPER" and status["trading_state"] == "ACTIVE"
    assert status["is_leader"] and status["epoch"] >= 1
    assert status["config_sha"] == api_desk.engine.config_sha
    assert {actor["name"] for actor in status["actors"]} >= {"order", "risk", "leader"}
    assert TOKEN not in client.get("/debug/actors", headers=AUTH).text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/flatten", "/mode", "/pause", "/resume", "/positions", "/ready"} <= set(paths)


def test_mutating_routes_need_the_token(api_desk: Desk, client: httpx.Client) -> None:
    assert client.post("/pause", json={"reason": "x"}).status_code == 401
    assert (
        client.post(
            "/pause", json={"reason": "x"}, headers={"Authorization": "Bearer no"}
        ).status_code
        == 401
    )
    response = client.post("/pause", json={"reason": "lunch"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["trading_state"] == "REDUCING"
    assert [c["cause"] for c in response.json()["pause_causes"]] == ["OPERATOR"]
    response = client.post("/resume", headers=AUTH)
    assert response.json()["trading_state"] == "ACTIVE"


def test_mode_switch_paper_answers_and_live_lists_its_blockers(client: httpx.Client) -> None:
    response = client.post("/mode", json={"mode": "PAPER"}, headers=AUTH)
    assert response.status_code == 200 and response.json()["status"] == "PAPER"
    response = client.post(
        "/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"}, headers=AUTH
    )
    assert response.status_code == 403
    body = response.json()
    assert (
        body["error"] == "MODE_BLOCKED"
        and "LIVE_ENABLE_TOKEN is not configured" in body["blockers"]
    )
    assert client.post("/mode", json={"mode": "DEMO"}, headers=AUTH).status_code == 403
    assert client.get("/status", headers=AUTH).json()["mode"] == "PAPER"
    bad = client.post(
        "/mode", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"] == "BAD_REQUEST"


def test_flatten_closes_every_position_and_cancels_every_sibling(
    api_desk: Desk, client: httpx.Client
) -> None:
    first = open_position(api_desk)
    second = open_position(api_desk, instrument="BBB", entry="200.10", stop="199", target="202")
    assert client.get("/positions").json()["count"] == 2
    with Pumper(api_desk):
        response = client.post("/flatten?reason=drill", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reason"] == "drill" and body["positions_closed"] == 2
    assert body["remaining_positions"] == 0 and body["remaining_working_orders"] == 0
    assert client.get("/positions").json() == {"positions": [], "count": 0}
    for plan_id in (first, second):
        assert api_desk.working_legs(plan_id) == {}
        legs = {o.leg.value: o.status.value for o in api_desk.orders_for(plan_id)}
        assert legs["EXIT"] == "FILLED" and legs["STOP"] == legs["TARGET"] == "CANCELLED"
    status = client.get("/status", headers=AUTH).json()
    assert [c["cause"] for c in status["pause_causes"]] == ["FLATTEN"]
    metrics = client.get("/metrics").text
    assert 'trader_positions_open{strategy="orb_1"} 0.0' in metrics
    risk = client.get("/risk").json()
    assert risk["open_positions"] == 0
