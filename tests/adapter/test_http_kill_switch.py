"""The kill-switch, arm/disarm and reconcile-report routes over a real socket, and the OpenAPI
constraints of ``reason``; the engine is the ``CannedControl`` stand-in of ``test_http``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest

from adapters.http import OPERATIONS, AdminHttpServer, ControlError, build_app
from adapters.http.app import PLANNED_ROUTES
from domain.enums import Mode, TradingState
from domain.messages.api import (
    ArmRequest,
    ArmView,
    DisarmRequest,
    ErrorBody,
    InstrumentReconcileView,
    KillSwitchActivateRequest,
    KillSwitchResetRequest,
    KillSwitchView,
    ReconcileReportView,
)
from domain.messages.control import OperatorRef
from tests.adapter.test_http import NOW_NS, TOKEN, CannedControl

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class KillSwitchControl(CannedControl):
    """``CannedControl`` plus the kill-switch routes; ``report`` None means "no report"."""

    def __init__(self) -> None:
        super().__init__()
        self.report: ReconcileReportView | None = None
        self.resume_error: ControlError | None = None

    def _view(self, *, active: bool, message: str) -> KillSwitchView:
        return KillSwitchView(
            active=active,
            reason="MANUAL" if active else None,
            detail="manual" if active else None,
            activated_ns=NOW_NS if active else None,
            persisted=True,
            armed=False,
            trading_state=TradingState.HALTED if active else TradingState.ACTIVE,
            flatten_pause=active,
            message=message,
        )

    def kill_switch_activate(
        self, request: KillSwitchActivateRequest, *, by: OperatorRef
    ) -> KillSwitchView:
        self._record("kill_switch_activate", request, by)
        return self._view(active=True, message="kill switch active")

    def kill_switch_reset(
        self, request: KillSwitchResetRequest, *, by: OperatorRef
    ) -> KillSwitchView:
        self._record("kill_switch_reset", request, by)
        return self._view(active=False, message="kill switch inactive; disarmed")

    def kill_switch(self) -> KillSwitchView:
        self._record("kill_switch")
        return self._view(active=True, message="active")

    def arm(self, request: ArmRequest, *, by: OperatorRef) -> ArmView:
        self._record("arm", request, by)
        return ArmView(ok=True, armed=True, mode=Mode.PAPER, live=False, message="armed")

    def disarm(self, request: DisarmRequest, *, by: OperatorRef) -> ArmView:
        self._record("disarm", request, by)
        return ArmView(ok=True, armed=False, mode=Mode.PAPER, live=False, message="disarmed")

    def reconcile_report(self) -> ReconcileReportView:
        self._record("reconcile_report")
        if self.report is None:
            raise ControlError(503, "RECONCILE_UNAVAILABLE", "no reconciliation report")
        return self.report

    def resume(self, *, by: OperatorRef):  # type: ignore[no-untyped-def]
        if self.resume_error is not None:
            self._record("resume", None, by)
            raise self.resume_error
        return super().resume(by=by)


@pytest.fixture
def control() -> KillSwitchControl:
    return KillSwitchControl()


@pytest.fixture
def serve(control: KillSwitchControl) -> Iterator[Callable[..., httpx.Client]]:
    servers: list[AdminHttpServer] = []
    clients: list[httpx.Client] = []

    def start(*, token: str | None = TOKEN) -> httpx.Client:
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


def _error(response: httpx.Response) -> ErrorBody:
    return msgspec.json.decode(response.content, type=ErrorBody)


class TestKillSwitchRoutes:
    def test_activate_without_a_body_uses_the_reason_manual(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        response = client.post("/execution/kill-switch/activate", headers=AUTH)

        assert response.status_code == 200
        view = msgspec.json.decode(response.content, type=KillSwitchView)
        assert view.active and view.trading_state is TradingState.HALTED
        assert control.calls_named("kill_switch_activate") == [
            KillSwitchActivateRequest(reason="manual")
        ]

    def test_activate_takes_the_runbooks_body(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        # The runbook's incident response, byte for byte.
        response = client.post(
            "/execution/kill-switch/activate",
            content=b'{"reason": "incident response"}',
            headers={**AUTH, "Content-Type": "application/json"},
        )

        assert response.status_code == 200
        assert control.calls_named("kill_switch_activate") == [
            KillSwitchActivateRequest(reason="incident response")
        ]

    @pytest.mark.parametrize(
        "body", [{"reason": ""}, {"reason": "x" * 201}, {"reason": 5}, {"flatten": True}]
    )
    def test_activate_with_a_bad_body_is_a_400_and_trips_nothing(
        self, client: httpx.Client, control: KillSwitchControl, body: dict[str, object]
    ) -> None:
        response = client.post("/execution/kill-switch/activate", json=body, headers=AUTH)

        assert response.status_code == 400
        assert _error(response).error == "BAD_REQUEST"
        assert control.calls_named("kill_switch_activate") == []

    def test_reset_passes_operator_and_reason(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        response = client.post(
            "/execution/kill-switch/reset",
            json={"reason": "root cause fixed", "operator": "asha"},
            headers=AUTH,
        )

        assert response.status_code == 200
        view = msgspec.json.decode(response.content, type=KillSwitchView)
        assert not view.active and not view.armed
        assert control.calls_named("kill_switch_reset") == [
            KillSwitchResetRequest(reason="root cause fixed", operator="asha")
        ]

    def test_reset_with_the_same_reason_in_query_and_body_keeps_the_operator(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        client.post(
            "/execution/kill-switch/reset?reason=fixed",
            json={"reason": "fixed", "operator": "asha"},
            headers=AUTH,
        )

        assert control.calls_named("kill_switch_reset") == [
            KillSwitchResetRequest(reason="fixed", operator="asha")
        ]

    @pytest.mark.parametrize(
        "path",
        [
            "/execution/kill-switch/activate",
            "/execution/kill-switch/reset",
            "/execution/arm",
            "/execution/disarm",
        ],
    )
    def test_mutating_kill_switch_routes_need_the_token(
        self, client: httpx.Client, control: KillSwitchControl, path: str
    ) -> None:
        response = client.post(path)

        assert response.status_code == 401
        assert control.calls == []

    def test_the_kill_switch_state_needs_the_token_it_shows_operator_text(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        # Its reason and detail are what an operator typed: behind the token when one is set.
        assert client.get("/execution/kill-switch").status_code == 401
        response = client.get("/execution/kill-switch", headers=AUTH)

        assert response.status_code == 200
        assert msgspec.json.decode(response.content, type=KillSwitchView).active
        assert len(control.calls_named("kill_switch")) == 1

    @pytest.mark.parametrize("path", ["/resume", "/execution/resume"])
    def test_resume_while_halted_is_the_409_the_engine_gives(
        self, client: httpx.Client, control: KillSwitchControl, path: str
    ) -> None:
        control.resume_error = ControlError(
            409,
            "HALTED",
            "kill switch active (MANUAL); POST /execution/kill-switch/reset clears it",
        )

        response = client.post(path, headers=AUTH)

        assert response.status_code == 409
        error = _error(response)
        assert error.error == "HALTED"
        assert "/execution/kill-switch/reset" in error.message


class TestArmRoutes:
    def test_arm_accepts_the_runbooks_body(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        response = client.post(
            "/execution/arm", json={"confirm": True, "live_mode": False}, headers=AUTH
        )

        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "armed": True,
            "mode": "PAPER",
            "live": False,
            "message": "armed",
        }
        assert control.calls_named("arm") == [ArmRequest(confirm=True, live_mode=False)]

    def test_disarm_without_a_body_is_an_operator_disarm(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        response = client.post("/execution/disarm", headers=AUTH)

        assert response.status_code == 200
        assert response.json()["armed"] is False
        assert control.calls_named("disarm") == [DisarmRequest(reason="operator")]


class TestReconcileReport:
    def test_no_report_is_a_503_reconcile_unavailable(self, client: httpx.Client) -> None:
        response = client.get("/execution/reconcile/report")

        assert response.status_code == 503
        assert _error(response).error == "RECONCILE_UNAVAILABLE"

    def test_a_report_is_served_as_is(
        self, client: httpx.Client, control: KillSwitchControl
    ) -> None:
        control.report = ReconcileReportView(
            clean=False,
            trigger="positions",
            last_run_ns=NOW_NS,
            duration_ms=3.5,
            runs=7,
            instruments=[
                InstrumentReconcileView(
                    instrument="AAA", local_quantity=10, broker_quantity=0, difference=-10
                )
            ],
            unknown_broker_orders=[],
            missing_at_broker=["P1:STOP"],
            actions=[],
            drift=["AAA: local 10, broker 0"],
        )

        response = client.get("/execution/reconcile/report")

        assert response.status_code == 200
        assert msgspec.json.decode(response.content, type=ReconcileReportView) == control.report

    def test_the_report_is_no_longer_a_planned_route(self) -> None:
        assert "/execution/reconcile/report" not in PLANNED_ROUTES
        assert "/execution/kill-switch/activate" not in PLANNED_ROUTES


class TestOpenApi:
    def test_every_reason_query_parameter_says_1_to_200_characters(
        self, client: httpx.Client
    ) -> None:
        document = client.get("/openapi.json").json()
        reasons = [
            (path, parameter["schema"])
            for path, methods in document["paths"].items()
            for operation in methods.values()
            for parameter in operation.get("parameters", [])
            if parameter["name"] == "reason"
        ]

        assert len(reasons) >= 4  # /pause, /flatten and their SOLAT aliases at least
        for path, schema in reasons:
            assert schema == {"type": "string", "minLength": 1, "maxLength": 200}, path

    def test_the_kill_switch_routes_are_documented(self, client: httpx.Client) -> None:
        paths = client.get("/openapi.json").json()["paths"]

        assert {"post"} <= set(paths["/execution/kill-switch/activate"])
        assert {"post"} <= set(paths["/execution/kill-switch/reset"])
        assert {"get"} <= set(paths["/execution/kill-switch"])
        assert {"get"} <= set(paths["/execution/reconcile/report"])
        assert "503" in paths["/execution/reconcile/report"]["get"]["responses"]
        served = {(op.path, op.method) for op in OPERATIONS}
        assert ("/execution/arm", "POST") in served and ("/execution/disarm", "POST") in served
