"""The admin API over a real socket: waitress on port 0, httpx as the client.

``CannedControl`` stands in for the engine (``actors.control`` is tested end to end elsewhere):
it returns fixed structs, records what it was asked, and can be told to refuse or to fail.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from adapters.http import OPERATIONS, AdminHttpServer, ControlError, build_app
from adapters.http.app import MAX_BODY_BYTES, PLANNED_ROUTES
from adapters.http.server import _find_trigger
from domain.enums import (
    DenialCode,
    LegKind,
    Mode,
    OrderStatus,
    OrderType,
    PauseCause,
    Side,
    TradingState,
)
from domain.messages.api import (
    ActorView,
    ErrorBody,
    FlattenRequest,
    HealthView,
    ModeRequest,
    ModeResult,
    OrdersView,
    OrderView,
    PauseCauseView,
    PauseRequest,
    PositionsView,
    ReadyView,
    RiskView,
    StatusView,
)
from domain.messages.control import OperatorRef
from domain.messages.orders import FlattenCompleted, PositionView, RiskBlocked
from tests.helpers import wait_until

TOKEN = "s3cret-admin-token"
NOW_NS = 1_767_225_600_000_000_000


# ---------------------------------------------------------------------------------------------
# THE STAND-IN ENGINE
# ---------------------------------------------------------------------------------------------


class CannedControl:
    """A ``ControlPort`` returning fixed structs; ``failure`` makes every call raise it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        # Who asked, for every call that changes the engine.
        self.operators: list[tuple[str, OperatorRef]] = []
        self.failure: BaseException | None = None
        self.ready_blockers: list[str] = []
        self.before_status: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def _record(self, name: str, argument: Any = None, by: OperatorRef | None = None) -> None:
        with self._lock:
            self.calls.append((name, argument))
            if by is not None:
                self.operators.append((name, by))
        if self.failure is not None:
            raise self.failure

    def health(self) -> HealthView:
        self._record("health")
        return HealthView(status="ok", uptime_s=12.5)

    def ready(self) -> ReadyView:
        self._record("ready")
        return ReadyView(ready=not self.ready_blockers, blockers=list(self.ready_blockers))

    def status(self) -> StatusView:
        self._record("status")
        if self.before_status is not None:
            self.before_status()
        return _status()

    def set_mode(self, request: ModeRequest, *, by: OperatorRef) -> ModeResult:
        self._record("set_mode", request, by)
        return ModeResult(
            status=request.mode, previous=Mode.PAPER, armed=True, message="mode switched"
        )

    def pause(self, request: PauseRequest, *, by: OperatorRef) -> StatusView:
        self._record("pause", request, by)
        return _status(state=TradingState.REDUCING)

    def resume(self, *, by: OperatorRef) -> StatusView:
        self._record("resume", None, by)
        return _status()

    def flatten(self, request: FlattenRequest, *, by: OperatorRef) -> FlattenCompleted:
        self._record("flatten", request, by)
        return FlattenCompleted(
            reason=request.reason,
            positions_closed=2,
            orders_cancelled=4,
            remaining_positions=0,
            remaining_working_orders=0,
            duration_ms=41.5,
            ts_event=NOW_NS,
        )

    def positions(self) -> PositionsView:
        self._record("positions")
        position = PositionView(
            position_id="plan-1",
            strategy="orb_1",
            instrument="NIFTY",
            side=Side.BUY,
            quantity=50,
            average_price=Decimal("22000.05"),
            stop_price=Decimal("21950"),
            target_price=Decimal("22100"),
            realized_pnl=Decimal("0"),
            unrealized_pnl=Decimal("125.50"),
            risk_amount=Decimal("2502.50"),
        )
        return PositionsView(positions=[position], count=1)

    def orders(self, limit: int) -> OrdersView:
        self._record("orders", limit)
        order = OrderView(
            client_order_id="plan-1:ENTRY",
            plan_client_id="plan-1",
            strategy="orb_1",
            instrument="NIFTY",
            leg=LegKind.ENTRY,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            quantity=50,
            filled_quantity=50,
            price=Decimal("22000.05"),
            trigger_price=None,
            average_fill_price=Decimal("22000.05"),
            status=OrderStatus.FILLED,
            epoch=3,
            reason="",
            ts_created=NOW_NS,
            ts_updated=NOW_NS,
        )
        return OrdersView(orders=[order], count=1)

    def risk(self) -> RiskView:
        self._record("risk")
        block = RiskBlocked(
            plan_client_id="plan-2",
            strategy="orb_1",
            instrument="NIFTY",
            code=DenialCode.HEAT_CAP,
            detail="heat=10000 cap=10000",
            ts_event=NOW_NS,
        )
        return RiskView(
            limits={"max_daily_loss_pct": "2.0"},
            heat_rupees=Decimal("2502.50"),
            heat_cap_rupees=Decimal("10000"),
            daily_pnl=Decimal("-120.25"),
            daily_loss_limit_rupees=Decimal("20000"),
            open_positions=1,
            trades_last_hour=3,
            blocks={"HEAT_CAP": 1},
            last_blocks=[block],
        )

    def debug_actors(self) -> dict[str, Any]:
        self._record("debug_actors")
        return {"order": {"working": 2, "cash": Decimal("1.5")}, "risk": {"halted": False}}

    def metrics_text(self) -> bytes:
        self._record("metrics_text")
        return b'# TYPE trader_is_leader gauge\ntrader_is_leader{instance_id="vigil-1"} 1.0\n'

    def calls_named(self, name: str) -> list[Any]:
        with self._lock:
            return [argument for called, argument in self.calls if called == name]


def _status(state: TradingState = TradingState.ACTIVE) -> StatusView:
    return StatusView(
        instance_id="vigil-1",
        mode=Mode.PAPER,
        armed=True,
        trading_state=state,
        pause_causes=[]
        if state is TradingState.ACTIVE
        else [PauseCauseView(cause=PauseCause.OPERATOR, detail="operator", since_ns=NOW_NS)],
        halt_reason=None,
        is_leader=True,
        epoch=3,
        config_sha="abc123",
        marketdata_age_s={"synthetic": 0.25},
        order_stream_age_s=0.5,
        positions_open=1,
        working_orders=2,
        realized_pnl_today=Decimal("10.50"),
        unrealized_pnl=Decimal("125.50"),
        heat_rupees=Decimal("2502.50"),
        uptime_s=12.5,
        actors=[ActorView(name="order", alive=True, restarts=0, last_error=None)],
        ts_event=NOW_NS,
    )


# ---------------------------------------------------------------------------------------------
# FIXTURES
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def control() -> CannedControl:
    return CannedControl()


@pytest.fixture
def serve(control: CannedControl) -> Iterator[Callable[..., httpx.Client]]:
    servers: list[AdminHttpServer] = []
    clients: list[httpx.Client] = []

    def start(*, token: str | None = None) -> httpx.Client:
        server = AdminHttpServer(build_app(control, token=token), host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10.0)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


@pytest.fixture
def client(serve: Callable[..., httpx.Client]) -> httpx.Client:
    return serve()


@pytest.fixture
def authed(serve: Callable[..., httpx.Client]) -> httpx.Client:
    return serve(token=TOKEN)


def _error(response: httpx.Response) -> ErrorBody:
    assert response.headers["content-type"].startswith("application/json")
    return msgspec.json.decode(response.content, type=ErrorBody)


# ---------------------------------------------------------------------------------------------
# ROUTES
# ---------------------------------------------------------------------------------------------


class TestReadRoutes:
    @pytest.mark.parametrize(
        ("path", "response_type", "called"),
        [
            ("/health", HealthView, "health"),
            ("/status", StatusView, "status"),
            ("/execution/status", StatusView, "status"),
            ("/positions", PositionsView, "positions"),
            ("/execution/positions", PositionsView, "positions"),
            ("/orders", OrdersView, "orders"),
            ("/execution/orders", OrdersView, "orders"),
            ("/risk", RiskView, "risk"),
            ("/execution/risk", RiskView, "risk"),
        ],
    )
    def test_get_route_returns_the_controls_struct_in_both_dialects(
        self,
        client: httpx.Client,
        control: CannedControl,
        path: str,
        response_type: type[msgspec.Struct],
        called: str,
    ) -> None:
        response = client.get(path)

        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        msgspec.json.decode(response.content, type=response_type)
        assert len(control.calls_named(called)) == 1

    def test_money_is_encoded_as_decimal_strings(self, client: httpx.Client) -> None:
        body = client.get("/risk").json()

        assert body["heat_rupees"] == "2502.50"
        assert body["last_blocks"][0]["code"] == "HEAT_CAP"

    def test_ready_is_200_when_ready(self, client: httpx.Client) -> None:
        response = client.get("/ready")

        assert response.status_code == 200
        assert response.json() == {"ready": True, "blockers": []}

    def test_ready_is_503_with_the_blockers_when_not_ready(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        control.ready_blockers = ["MARKETDATA_STALE: synthetic age_s=7.2"]

        response = client.get("/ready")

        assert response.status_code == 503
        assert response.json() == {
            "ready": False,
            "blockers": ["MARKETDATA_STALE: synthetic age_s=7.2"],
        }

    def test_orders_limit_defaults_to_200(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        client.get("/orders")

        assert control.calls_named("orders") == [200]

    def test_orders_limit_is_passed_through(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        client.get("/orders", params={"limit": "1000"})
        client.get("/execution/orders", params={"limit": "1"})

        assert control.calls_named("orders") == [1000, 1]

    @pytest.mark.parametrize("limit", ["0", "1001", "-5", "abc", "2.5", ""])
    def test_orders_limit_outside_1_to_1000_is_a_400(
        self, client: httpx.Client, control: CannedControl, limit: str
    ) -> None:
        response = client.get("/orders", params={"limit": limit})

        assert response.status_code == 400
        error = _error(response)
        assert error.error == "BAD_REQUEST"
        assert "limit" in error.message
        assert repr(limit) in error.message
        assert control.calls_named("orders") == []

    def test_metrics_are_prometheus_text(self, client: httpx.Client) -> None:
        response = client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'trader_is_leader{instance_id="vigil-1"} 1.0' in response.text

    def test_debug_actors_returns_the_snapshots(self, client: httpx.Client) -> None:
        response = client.get("/debug/actors")

        assert response.status_code == 200
        assert response.json() == {
            "order": {"working": 2, "cash": "1.5"},
            "risk": {"halted": False},
        }

    def test_head_on_a_get_route_answers_without_a_body(self, client: httpx.Client) -> None:
        response = client.head("/health")

        assert response.status_code == 200
        assert response.content == b""


class TestModeRoute:
    def test_mode_switch_passes_mode_and_confirmation(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        response = client.post("/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"})

        assert response.status_code == 200
        result = msgspec.json.decode(response.content, type=ModeResult)
        assert result.status is Mode.LIVE
        assert control.calls_named("set_mode") == [
            ModeRequest(mode=Mode.LIVE, confirm="CONFIRM LIVE TRADING")
        ]

    def test_curl_data_without_content_type_is_read_as_json(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        # The runbook's emergency rollback: curl -X POST .../mode -d '{"mode":"PAPER"}'
        response = client.post(
            "/mode",
            content=b'{"mode":"PAPER"}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

        assert response.status_code == 200
        assert control.calls_named("set_mode") == [ModeRequest(mode=Mode.PAPER)]

    def test_unknown_mode_is_a_400_naming_the_value_and_the_choices(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        response = client.post("/mode", json={"mode": "LIV"})

        assert response.status_code == 400
        error = _error(response)
        assert error.error == "BAD_REQUEST"
        assert "'LIV'" in error.message
        assert "$.mode" in error.message
        assert "PAPER, DEMO, LIVE" in error.message
        assert control.calls_named("set_mode") == []

    def test_missing_mode_is_a_400(self, client: httpx.Client) -> None:
        response = client.post("/mode")

        assert response.status_code == 400
        assert "mode" in _error(response).message

    def test_wrong_field_type_is_a_400_naming_the_field(self, client: httpx.Client) -> None:
        response = client.post("/mode", json={"mode": "PAPER", "confirm": 42})

        assert response.status_code == 400
        error = _error(response)
        assert "$.confirm" in error.message
        assert "str" in error.message

    def test_unknown_field_is_a_400(self, client: httpx.Client) -> None:
        response = client.post("/mode", json={"mode": "PAPER", "mdoe": "LIVE"})

        assert response.status_code == 400
        assert "mdoe" in _error(response).message

    def test_malformed_json_is_a_400(self, client: httpx.Client) -> None:
        response = client.post(
            "/mode", content=b'{"mode": "PAP', headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 400
        error = _error(response)
        assert error.error == "BAD_REQUEST"
        assert "not valid JSON" in error.message

    def test_a_json_array_body_is_a_400(self, client: httpx.Client) -> None:
        response = client.post("/mode", json=["PAPER"])

        assert response.status_code == 400
        assert "object" in _error(response).message


class TestPauseResumeFlatten:
    @pytest.mark.parametrize("path", ["/pause", "/execution/pause"])
    def test_pause_with_an_empty_body_uses_the_default_reason(
        self, client: httpx.Client, control: CannedControl, path: str
    ) -> None:
        response = client.post(path)

        assert response.status_code == 200
        status = msgspec.json.decode(response.content, type=StatusView)
        assert status.trading_state is TradingState.REDUCING
        assert control.calls_named("pause") == [PauseRequest(reason="operator")]

    def test_pause_reason_may_come_in_the_query(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        client.post("/pause", params={"reason": "latency"})

        assert control.calls_named("pause") == [PauseRequest(reason="latency")]

    def test_pause_reason_may_come_in_the_body(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        client.post("/pause", json={"reason": "market_quality"})

        assert control.calls_named("pause") == [PauseRequest(reason="market_quality")]

    @pytest.mark.parametrize("path", ["/resume", "/execution/resume"])
    def test_resume_in_both_dialects(
        self, client: httpx.Client, control: CannedControl, path: str
    ) -> None:
        response = client.post(path)

        assert response.status_code == 200
        assert len(control.calls_named("resume")) == 1

    @pytest.mark.parametrize("path", ["/flatten", "/execution/flatten"])
    def test_flatten_passes_the_body_reason_and_returns_the_completion(
        self, client: httpx.Client, control: CannedControl, path: str
    ) -> None:
        response = client.post(path, json={"reason": "prelive_sanity"})

        assert response.status_code == 200
        completed = msgspec.json.decode(response.content, type=FlattenCompleted)
        assert completed.reason == "prelive_sanity"
        assert completed.remaining_positions == 0
        assert control.calls_named("flatten") == [FlattenRequest(reason="prelive_sanity")]

    def test_flatten_reason_may_come_in_the_query(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        client.post("/flatten?reason=risk_cap")

        assert control.calls_named("flatten") == [FlattenRequest(reason="risk_cap")]

    def test_flatten_with_the_same_reason_in_query_and_body_is_accepted(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        response = client.post("/flatten?reason=rollback", json={"reason": "rollback"})

        assert response.status_code == 200
        assert control.calls_named("flatten") == [FlattenRequest(reason="rollback")]

    def test_flatten_with_different_reasons_in_query_and_body_is_a_400(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        response = client.post("/flatten?reason=latency", json={"reason": "rollback"})

        assert response.status_code == 400
        assert "differs" in _error(response).message
        assert control.calls_named("flatten") == []

    def test_empty_reason_is_a_400(self, client: httpx.Client, control: CannedControl) -> None:
        response = client.post("/flatten", params={"reason": ""})

        assert response.status_code == 400
        assert "$.reason" in _error(response).message
        assert control.calls_named("flatten") == []

    def test_reason_of_the_wrong_type_is_a_400(self, client: httpx.Client) -> None:
        response = client.post("/flatten", json={"reason": 5})

        assert response.status_code == 400
        error = _error(response)
        assert "Expected `str`, got `int`" in error.message
        assert "$.reason" in error.message


# ---------------------------------------------------------------------------------------------
# ERRORS
# ---------------------------------------------------------------------------------------------


class TestErrors:
    def test_unknown_route_is_a_json_404(self, client: httpx.Client) -> None:
        response = client.get("/nope")

        assert response.status_code == 404
        assert _error(response).error == "NOT_FOUND"

    def test_wrong_method_is_a_json_405_with_allow(self, client: httpx.Client) -> None:
        response = client.get("/mode")

        assert response.status_code == 405
        assert _error(response).error == "METHOD_NOT_ALLOWED"
        assert response.headers["allow"] == "POST"

    def test_post_on_a_read_route_is_a_405(self, client: httpx.Client) -> None:
        response = client.post("/status")

        assert response.status_code == 405
        assert "GET" in response.headers["allow"]

    def test_body_over_64_kib_is_a_413(self, client: httpx.Client, control: CannedControl) -> None:
        body = b'{"reason": "' + b"x" * MAX_BODY_BYTES + b'"}'

        response = client.post(
            "/flatten", content=body, headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 413
        error = _error(response)
        assert error.error == "PAYLOAD_TOO_LARGE"
        assert str(MAX_BODY_BYTES) in error.message
        assert control.calls_named("flatten") == []

    def test_chunked_body_over_64_kib_is_a_413(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"reason": "'
            for _ in range(MAX_BODY_BYTES // 1024 + 1):
                yield b"x" * 1024
            yield b'"}'

        response = client.post(
            "/flatten", content=chunks(), headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 413
        assert _error(response).error == "PAYLOAD_TOO_LARGE"
        assert control.calls_named("flatten") == []

    def test_non_json_content_type_is_a_415(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        response = client.post(
            "/flatten", content=b"reason=x", headers={"Content-Type": "text/plain"}
        )

        assert response.status_code == 415
        assert _error(response).error == "UNSUPPORTED_MEDIA_TYPE"
        assert control.calls_named("flatten") == []

    def test_control_error_keeps_its_status_code_and_blockers(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        control.failure = ControlError(
            409,
            "LIVE_GATES_BLOCKED",
            "LIVE refused: 2 gates failed",
            blockers=["LIVE_TRADING_ENABLED is not set to true", "Pre-live check never passed"],
        )

        response = client.post("/mode", json={"mode": "LIVE"})

        assert response.status_code == 409
        assert response.json() == {
            "error": "LIVE_GATES_BLOCKED",
            "message": "LIVE refused: 2 gates failed",
            "blockers": [
                "LIVE_TRADING_ENABLED is not set to true",
                "Pre-live check never passed",
            ],
        }

    def test_control_error_without_blockers_has_only_error_and_message(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        control.failure = ControlError(504, "TIMEOUT", "order actor did not answer in 3.0 s")

        response = client.get("/positions")

        assert response.status_code == 504
        assert response.json() == {
            "error": "TIMEOUT",
            "message": "order actor did not answer in 3.0 s",
        }

    def test_control_error_with_a_non_error_status_is_served_as_500(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        control.failure = ControlError(200, "ODD", "not an error status")

        response = client.get("/status")

        assert response.status_code == 500
        assert _error(response).error == "ODD"

    def test_unexpected_exception_is_a_500_without_a_traceback(
        self,
        client: httpx.Client,
        control: CannedControl,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        control.failure = RuntimeError("internal detail: ledger row 42 corrupt")

        with caplog.at_level(logging.ERROR, logger="adapters.http.app"):
            response = client.post("/flatten", json={"reason": "latency"})

        assert response.status_code == 500
        error = _error(response)
        assert error.error == "INTERNAL"
        assert "error_id=" in error.message
        assert "Traceback" not in response.text
        assert "ledger row 42" not in response.text
        assert "RuntimeError" not in response.text
        logged = [record for record in caplog.records if record.exc_info]
        assert logged, "the traceback must reach the server log"
        assert getattr(logged[0], "error_id", "") in error.message

    def test_no_solat_route_is_left_planned(self) -> None:
        # The gate routes were 501 NOT_IMPLEMENTED placeholders; they are all routed now.
        assert PLANNED_ROUTES == {}
        paths = {operation.path for operation in OPERATIONS}
        for path in (
            "/execution/gates",
            "/execution/connect",
            "/execution/prelive/run",
            "/execution/live/confirm",
            "/execution/live/revoke",
        ):
            assert path in paths


# ---------------------------------------------------------------------------------------------
# AUTH
# ---------------------------------------------------------------------------------------------


class TestAuth:
    @pytest.mark.parametrize("path", [op.path for op in OPERATIONS if op.method == "POST"], ids=str)
    def test_every_post_route_needs_the_token_when_one_is_configured(
        self, authed: httpx.Client, control: CannedControl, path: str
    ) -> None:
        response = authed.post(path, json={"mode": "PAPER"} if path == "/mode" else None)

        assert response.status_code == 401
        assert _error(response).error == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert control.calls == []

    def test_wrong_token_is_a_401(self, authed: httpx.Client, control: CannedControl) -> None:
        response = authed.post("/flatten", headers={"Authorization": "Bearer not-the-token"})

        assert response.status_code == 401
        assert TOKEN not in response.text
        assert control.calls_named("flatten") == []

    def test_token_under_another_scheme_is_a_401(self, authed: httpx.Client) -> None:
        response = authed.post("/pause", headers={"Authorization": f"Basic {TOKEN}"})

        assert response.status_code == 401

    def test_right_token_is_accepted(self, authed: httpx.Client, control: CannedControl) -> None:
        response = authed.post(
            "/flatten",
            json={"reason": "rollback"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

        assert response.status_code == 200
        assert control.calls_named("flatten") == [FlattenRequest(reason="rollback")]

    def test_auth_is_checked_before_the_body(self, authed: httpx.Client) -> None:
        response = authed.post(
            "/mode", content=b"{broken", headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 401

    @pytest.mark.parametrize(
        "path", ["/health", "/metrics", "/openapi.json", "/positions", "/risk", "/execution/risk"]
    )
    def test_get_routes_without_operator_text_stay_open_with_a_token(
        self, authed: httpx.Client, path: str
    ) -> None:
        assert authed.get(path).status_code == 200

    def test_ready_stays_open_with_a_token(self, authed: httpx.Client) -> None:
        assert authed.get("/ready").status_code == 200

    @pytest.mark.parametrize(
        "path",
        ["/status", "/execution/status", "/orders", "/execution/orders", "/debug/actors"],
    )
    def test_get_routes_showing_operator_text_need_the_token_when_one_is_configured(
        self, authed: httpx.Client, control: CannedControl, path: str
    ) -> None:
        refused = authed.get(path)
        accepted = authed.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

        assert refused.status_code == 401
        assert _error(refused).error == "UNAUTHORIZED"
        assert accepted.status_code == 200
        assert len(control.calls) == 1  # only the authorised request reached the engine

    def test_get_routes_showing_operator_text_are_open_without_a_token(
        self, client: httpx.Client
    ) -> None:
        assert client.get("/status").status_code == 200
        assert client.get("/debug/actors").status_code == 200

    def test_post_routes_are_open_without_a_configured_token(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        assert client.post("/pause").status_code == 200

    def test_an_empty_token_is_refused_at_build_time(self, control: CannedControl) -> None:
        with pytest.raises(ValueError, match="empty"):
            build_app(control, token="  ")


# ---------------------------------------------------------------------------------------------
# OPENAPI
# ---------------------------------------------------------------------------------------------


class TestOpenApi:
    def test_openapi_lists_every_route_with_its_method(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        document = client.get("/openapi.json").json()

        assert document["openapi"].startswith("3.1")
        listed = {
            (path, method.upper()) for path, item in document["paths"].items() for method in item
        }
        assert listed == {(op.path, op.method) for op in OPERATIONS}
        for path in ["/health", "/mode", "/flatten", "/execution/status", "/metrics"]:
            assert path in document["paths"]
        assert control.calls == []

    def test_openapi_refers_to_request_response_and_error_schemas(
        self, client: httpx.Client
    ) -> None:
        document = client.get("/openapi.json").json()
        schemas = document["components"]["schemas"]
        mode = document["paths"]["/mode"]["post"]

        assert mode["requestBody"]["required"] is True
        request_ref = mode["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert request_ref == "#/components/schemas/ModeRequest"
        ok_ref = mode["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok_ref == "#/components/schemas/ModeResult"
        error_ref = mode["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert error_ref == "#/components/schemas/ErrorBody"
        assert sorted(schemas["Mode"]["enum"]) == ["DEMO", "LIVE", "PAPER"]
        for name in ["StatusView", "FlattenCompleted", "RiskView", "OrdersView", "ErrorBody"]:
            assert name in schemas
        assert "503" in document["paths"]["/ready"]["get"]["responses"]
        limit = document["paths"]["/orders"]["get"]["parameters"][0]
        assert limit["name"] == "limit"
        assert limit["schema"]["maximum"] == 1000

    def test_every_reference_in_openapi_resolves(self, client: httpx.Client) -> None:
        document = client.get("/openapi.json").json()
        schemas = document["components"]["schemas"]

        def refs(node: Any) -> Iterator[str]:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "$ref":
                        yield value
                    else:
                        yield from refs(value)
            elif isinstance(node, list):
                for value in node:
                    yield from refs(value)

        found = set(refs(document))
        assert found
        for ref in found:
            assert ref.removeprefix("#/components/schemas/") in schemas, ref

    def test_openapi_declares_bearer_auth_on_post_routes_when_a_token_is_set(
        self, authed: httpx.Client
    ) -> None:
        document = authed.get("/openapi.json").json()

        assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert document["paths"]["/flatten"]["post"]["security"] == [{"bearerAuth": []}]
        assert "401" in document["paths"]["/flatten"]["post"]["responses"]
        assert document["paths"]["/status"]["get"]["security"] == [{"bearerAuth": []}]
        assert "401" in document["paths"]["/status"]["get"]["responses"]
        # Open routes say so explicitly.
        assert document["paths"]["/health"]["get"]["security"] == []
        assert document["paths"]["/metrics"]["get"]["security"] == []
        assert "401" not in document["paths"]["/health"]["get"]["responses"]


# ---------------------------------------------------------------------------------------------
# SERVER
# ---------------------------------------------------------------------------------------------


class TestServer:
    def test_port_zero_binds_a_free_port(self, control: CannedControl) -> None:
        server = AdminHttpServer(build_app(control, token=None), port=0)
        server.start()
        try:
            assert server.port > 0
            assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200
        finally:
            server.stop()

    def test_stop_is_prompt_and_closes_the_port(
        self, control: CannedControl, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = AdminHttpServer(build_app(control, token=None), port=0)
        server.start()
        port = server.port
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200

        with caplog.at_level(logging.WARNING):
            server.stop()

        # Prompt means no wait ran into its timeout (event loop join, worker shutdown): each
        # says so at WARNING. Wall-clock time is not asserted; under load it proves nothing.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert not server.is_running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
        server.stop()  # idempotent

    def test_a_slow_control_call_does_not_block_other_requests(
        self, client: httpx.Client, control: CannedControl
    ) -> None:
        entered = threading.Event()
        release = threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(10.0)

        control.before_status = hold
        slow: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: slow.append(client.get("/status")))
        worker.start()
        try:
            assert entered.wait(5.0)
            with httpx.Client(base_url=client.base_url, timeout=5.0) as other:
                assert other.get("/health").status_code == 200
        finally:
            release.set()
            worker.join(5.0)
        assert slow[0].status_code == 200

    def test_stop_copes_with_the_loop_closing_before_its_wake_up_is_written(
        self, control: CannedControl
    ) -> None:
        # The teardown race: stop() queues its close on the trigger, then writes the wake-up
        # byte; a worker's own wake-up can let the loop run that close first, trigger included,
        # and the write then met a closed pipe (OSError EBADF out of stop()).
        server = AdminHttpServer(build_app(control, token=None), port=0)
        server.start()
        trigger = _find_trigger(server._map)
        assert trigger is not None
        real_pull = trigger._physical_pull

        def woken_by_someone_else_first() -> None:
            real_pull()  # the worker's wake-up
            wait_until(lambda: trigger._closed, message="the loop ran the queued close")
            real_pull()  # stop()'s own wake-up, now too late

        trigger._physical_pull = woken_by_someone_else_first  # type: ignore[method-assign]

        server.stop()

        assert not server.is_running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=2.0)

    def test_start_on_a_port_in_use_raises_naming_the_address(self, control: CannedControl) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = AdminHttpServer(build_app(control, token=None), port=port)

            with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
                server.start()

    def test_port_before_start_raises(self, control: CannedControl) -> None:
        server = AdminHttpServer(build_app(control, token=None), port=0)

        with pytest.raises(RuntimeError, match="not started"):
            _ = server.port

    def test_loopback_bind_logs_no_exposure_warning(
        self, control: CannedControl, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = AdminHttpServer(build_app(control, token=None), host="127.0.0.1", port=0)
        with caplog.at_level(logging.WARNING, logger="adapters.http.server"):
            server.start()
        server.stop()

        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    def test_open_bind_without_token_logs_both_warnings(
        self, control: CannedControl, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = AdminHttpServer(build_app(control, token=None), host="0.0.0.0", port=0)
        with caplog.at_level(logging.WARNING, logger="adapters.http.server"):
            server.start()
        server.stop()

        events = [getattr(r, "event", None) for r in caplog.records if r.levelno == logging.WARNING]
        assert events == ["HTTP_EXPOSED", "HTTP_NO_TOKEN"]

    def test_open_bind_with_token_logs_only_the_exposure_warning(
        self, control: CannedControl, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = AdminHttpServer(build_app(control, token=TOKEN), host="0.0.0.0", port=0)
        with caplog.at_level(logging.WARNING, logger="adapters.http.server"):
            server.start()
        server.stop()

        events = [getattr(r, "event", None) for r in caplog.records if r.levelno == logging.WARNING]
        assert events == ["HTTP_EXPOSED"]
