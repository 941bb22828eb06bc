"""The gated LIVE routes over a real socket (both runbooks' dialects), named tokens and the
``OperatorRef`` they become, auth of the routes that show operator text, REHEARSAL, and the
OpenAPI document of it all. The engine is ``LiveControl``, a ``CannedControl`` stand-in: the
gates themselves are the kill switch's (tested with the actors); here only the HTTP side."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from adapters.http import OPERATIONS, AdminHttpServer, ControlError, build_app
from adapters.http.app import REHEARSAL_HEADER
from domain.enums import Mode
from domain.messages.api import (
    ArmRequest,
    ArmView,
    AuditEntryView,
    AuditView,
    CircuitBreakerResetRequest,
    ConnectView,
    ErrorBody,
    GatesView,
    LiveConfirmRequest,
    LiveConfirmView,
    ModeRequest,
    ModeResult,
    PreliveCheckView,
    PreliveView,
    RevokeRequest,
)
from domain.messages.control import OperatorRef
from tests.adapter.test_http import NOW_NS, TOKEN
from tests.adapter.test_http_kill_switch import KillSwitchControl

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-9876543210"
LIVE_ENABLE_TOKEN = "live-enable-token-abcdef"
BLOCKERS = ["LIVE_TRADING_ENABLED is not set to true", "Pre-live check has never passed"]
PRELIVE_CHECKS = (
    "Config validation",
    "Risk settings",
    "Broker connectivity",
    "Account verification",
    "Account lock",
    "Safety guard",
    "Kill switch",
)


class LiveControl(KillSwitchControl):
    """``KillSwitchControl`` plus the gated LIVE path; ``blockers`` refuse LIVE when set."""

    def __init__(self) -> None:
        super().__init__()
        self.blockers: list[str] = []
        self.connect_fails = False
        self.confirm_refusal: ControlError | None = None
        self.breaker_refusal: ControlError | None = None

    def _gates_view(self) -> GatesView:
        return GatesView(
            allowed=not self.blockers,
            mode=Mode.DEMO,
            blockers=list(self.blockers),
            warnings=["rehearsal"],
            armed=False,
            rehearsal=False,
            confirmation_expires_in_s=None,
            prelive_age_s=None,
            circuit_breaker="OK",
        )

    def connect(self, *, by: OperatorRef) -> ConnectView:
        self._record("connect", None, by)
        if self.connect_fails:
            return ConnectView(
                ok=False,
                account_id="",
                balance=0.0,
                mode=Mode.DEMO,
                live_account=False,
                rehearsal=False,
                message="broker connect failed: UNAVAILABLE: paper: storage down",
                error="BROKER_UNAVAILABLE",
            )
        return ConnectView(
            ok=True,
            account_id="ACC-1",
            balance=10000.0,
            mode=Mode.DEMO,
            live_account=True,
            rehearsal=False,
            message="connected",
        )

    def gates(self) -> GatesView:
        self._record("gates")
        return self._gates_view()

    def prelive_run(self, *, by: OperatorRef) -> PreliveView:
        self._record("prelive_run", None, by)
        checks = [PreliveCheckView(name=name, passed=True, details="ok") for name in PRELIVE_CHECKS]
        return PreliveView(passed=True, checks=checks, rehearsal=False)

    def live_confirm(self, request: LiveConfirmRequest, *, by: OperatorRef) -> LiveConfirmView:
        self._record("live_confirm", request, by)
        if self.confirm_refusal is not None:
            raise self.confirm_refusal
        return LiveConfirmView(
            ok=True,
            account_id=request.account_id,
            expires_in_seconds=600.0,
            rehearsal=False,
            message="LIVE confirmed",
        )

    def arm(self, request: ArmRequest, *, by: OperatorRef) -> ArmView:
        self._record("arm", request, by)
        if request.live_mode and self.blockers:
            raise ControlError(409, "LIVE_GATES_BLOCKED", "refused", blockers=list(self.blockers))
        live = request.live_mode
        return ArmView(
            ok=True, armed=True, mode=Mode.LIVE if live else Mode.PAPER, live=live, message="armed"
        )

    def live_revoke(self, request: RevokeRequest, *, by: OperatorRef) -> ArmView:
        self._record("live_revoke", request, by)
        return ArmView(ok=True, armed=False, mode=Mode.DEMO, live=False, message="LIVE revoked")

    def circuit_breaker_reset(
        self, request: CircuitBreakerResetRequest, *, by: OperatorRef
    ) -> GatesView:
        self._record("circuit_breaker_reset", request, by)
        if self.breaker_refusal is not None:
            raise self.breaker_refusal
        return self._gates_view()

    def audit(self, limit: int) -> AuditView:
        self._record("audit", limit)
        entry = AuditEntryView(
            ts_ns=NOW_NS,
            at="2026-01-01T00:00:00+00:00",
            who="alice",
            address="127.0.0.1",
            action="ARM",
            outcome="REFUSED",
            detail="",
            blockers=list(BLOCKERS),
            mode="DEMO",
            rehearsal=False,
        )
        return AuditView(entries=[entry], count=1)

    def set_mode(self, request: ModeRequest, *, by: OperatorRef) -> ModeResult:
        self._record("set_mode", request, by)
        if request.mode is Mode.LIVE and self.blockers:
            raise ControlError(403, "MODE_BLOCKED", "refused", blockers=list(self.blockers))
        return ModeResult(
            status=request.mode, previous=Mode.PAPER, armed=True, message="Mode switched"
        )


@pytest.fixture
def control() -> LiveControl:
    return LiveControl()


@pytest.fixture
def serve(control: LiveControl) -> Iterator[Callable[..., httpx.Client]]:
    servers: list[AdminHttpServer] = []
    clients: list[httpx.Client] = []

    def start(
        *, token: str | None = None, tokens: dict[str, str] | None = None, rehearsal: bool = False
    ) -> httpx.Client:
        app = build_app(control, token=token, tokens=tokens, rehearsal=rehearsal)
        server = AdminHttpServer(app, host="127.0.0.1", port=0)
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
    assert response.headers["content-type"].startswith("application/json")
    return msgspec.json.decode(response.content, type=ErrorBody)


CONFIRM_BODY = {
    "phrase": "ENABLE LIVE TRADING",
    "token": LIVE_ENABLE_TOKEN,
    "account_id": "ACC-1",
}


# ---------------------------------------------------------------------------------------------
# THE SOLAT RUNBOOK'S ROUTES, FIELDS AS THE RUNBOOK SHOWS THEM
# ---------------------------------------------------------------------------------------------


class TestSolatRoutes:
    def test_connect_answers_the_runbooks_fields_first(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/connect")

        assert response.status_code == 200
        body = response.json()
        assert list(body)[:4] == ["ok", "account_id", "balance", "mode"]
        assert body["ok"] is True
        assert body["account_id"] == "ACC-1"
        assert body["balance"] == 10000.0  # a JSON number, as the runbook shows it
        assert body["mode"] == "DEMO"
        assert len(control.calls_named("connect")) == 1

    def test_a_failed_connect_is_a_502_with_ok_false(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        control.connect_fails = True

        response = client.post("/execution/connect")

        assert response.status_code == 502
        body = msgspec.json.decode(response.content, type=ConnectView)
        assert body.ok is False
        assert body.error == "BROKER_UNAVAILABLE"
        assert "storage down" in body.message

    def test_gates_answers_allowed_mode_blockers_warnings(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        control.blockers = list(BLOCKERS)

        body = client.get("/execution/gates").json()

        assert list(body)[:4] == ["allowed", "mode", "blockers", "warnings"]
        assert body["allowed"] is False
        assert body["mode"] == "DEMO"
        assert body["blockers"] == BLOCKERS

    def test_prelive_answers_passed_and_the_seven_named_checks(self, client: httpx.Client) -> None:
        response = client.post("/execution/prelive/run")

        assert response.status_code == 200
        body = response.json()
        assert list(body)[:2] == ["passed", "checks"]
        assert body["passed"] is True
        assert [check["name"] for check in body["checks"]] == list(PRELIVE_CHECKS)
        assert all(set(check) == {"name", "passed", "details"} for check in body["checks"])

    def test_prelive_is_a_post_the_checklists_get_is_a_405(self, client: httpx.Client) -> None:
        response = client.get("/execution/prelive/run")

        assert response.status_code == 405
        assert response.headers["allow"] == "POST"

    def test_live_confirm_answers_expires_in_seconds(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/live/confirm", json=CONFIRM_BODY)

        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True
        assert body["expires_in_seconds"] == 600.0
        assert LIVE_ENABLE_TOKEN not in response.text
        assert control.calls_named("live_confirm") == [LiveConfirmRequest(**CONFIRM_BODY)]

    @pytest.mark.parametrize(
        ("status", "code"),
        [(400, "BAD_PHRASE"), (403, "BAD_TOKEN"), (403, "BAD_ACCOUNT"), (409, "NOT_CONFIGURED")],
    )
    def test_a_refused_confirmation_is_the_engines_status_and_code(
        self, client: httpx.Client, control: LiveControl, status: int, code: str
    ) -> None:
        control.confirm_refusal = ControlError(status, code, "refused: see the audit trail")

        response = client.post("/execution/live/confirm", json=CONFIRM_BODY)

        assert response.status_code == status
        assert _error(response).error == code
        assert LIVE_ENABLE_TOKEN not in response.text

    def test_the_runbooks_arm_body_arms_in_live(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/arm", json={"confirm": True, "live_mode": True})

        assert response.status_code == 200
        body = response.json()
        assert list(body)[:4] == ["ok", "armed", "mode", "live"]
        assert (body["ok"], body["armed"], body["mode"], body["live"]) == (True, True, "LIVE", True)
        assert control.calls_named("arm") == [ArmRequest(confirm=True, live_mode=True)]

    def test_arm_blocked_by_the_gates_is_a_409_with_the_blockers(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        control.blockers = list(BLOCKERS)

        response = client.post("/execution/arm", json={"confirm": True, "live_mode": True})

        assert response.status_code == 409
        error = _error(response)
        assert error.error == "LIVE_GATES_BLOCKED"
        assert error.blockers == BLOCKERS

    def test_arm_with_confirm_false_is_a_400_that_changes_nothing(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/arm", json={"confirm": False, "live_mode": True})

        assert response.status_code == 400
        assert "confirm" in _error(response).message
        assert control.calls_named("arm") == []

    @pytest.mark.parametrize("body", [None, {"reason": "rollback"}])
    def test_revoke_takes_an_optional_body_and_answers_the_arm_view(
        self, client: httpx.Client, control: LiveControl, body: dict[str, Any] | None
    ) -> None:
        response = client.post("/execution/live/revoke", json=body)

        assert response.status_code == 200
        view = msgspec.json.decode(response.content, type=ArmView)
        assert (view.armed, view.mode, view.live) == (False, Mode.DEMO, False)
        expected = RevokeRequest(reason="rollback") if body else RevokeRequest()
        assert control.calls_named("live_revoke") == [expected]

    def test_circuit_breaker_reset_answers_the_gates(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/circuit-breaker/reset?reason=cleared")

        assert response.status_code == 200
        msgspec.json.decode(response.content, type=GatesView)
        assert control.calls_named("circuit_breaker_reset") == [
            CircuitBreakerResetRequest(reason="cleared")
        ]

    def test_a_breaker_reset_before_its_cooldown_is_the_engines_409(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        control.breaker_refusal = ControlError(409, "COOLDOWN", "cooldown has 120s to go")

        response = client.post("/execution/circuit-breaker/reset")

        assert response.status_code == 409
        assert _error(response).error == "COOLDOWN"

    def test_audit_limit_defaults_to_100_and_is_passed_through(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        client.get("/execution/audit")
        response = client.get("/execution/audit?limit=5")

        assert response.status_code == 200
        view = msgspec.json.decode(response.content, type=AuditView)
        assert view.entries[0].who == "alice"
        assert control.calls_named("audit") == [100, 5]

    @pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
    def test_a_bad_audit_limit_is_a_400(
        self, client: httpx.Client, control: LiveControl, limit: str
    ) -> None:
        response = client.get(f"/execution/audit?limit={limit}")

        assert response.status_code == 400
        assert "limit" in _error(response).message
        assert control.calls_named("audit") == []


class TestAitrappModeFlip:
    def test_the_runbooks_live_flip_answers_status_live(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"})

        assert response.status_code == 200
        assert response.json()["status"] == "LIVE"
        assert control.calls_named("set_mode") == [
            ModeRequest(mode=Mode.LIVE, confirm="CONFIRM LIVE TRADING")
        ]

    def test_a_blocked_flip_is_a_403_with_the_same_blockers(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        control.blockers = list(BLOCKERS)

        response = client.post("/mode", json={"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"})

        assert response.status_code == 403
        error = _error(response)
        assert error.error == "MODE_BLOCKED"
        assert error.blockers == BLOCKERS


# ---------------------------------------------------------------------------------------------
# BAD INPUT: A 4xx ErrorBody, NEVER A TRACEBACK, NOTHING ASKED OF THE ENGINE
# ---------------------------------------------------------------------------------------------

_BODY_ROUTES = [
    "/execution/connect",
    "/execution/prelive/run",
    "/execution/live/confirm",
    "/execution/live/revoke",
    "/execution/circuit-breaker/reset",
    "/execution/arm",
]
_BAD_BODIES: list[tuple[str, bytes]] = [
    ("broken-json", b"{not json"),
    ("unknown-field", b'{"surprise": 1}'),
    ("not-an-object", b"[1, 2]"),
]


class TestBadInput:
    @pytest.mark.parametrize("path", _BODY_ROUTES)
    @pytest.mark.parametrize(("kind", "body"), _BAD_BODIES, ids=[k for k, _ in _BAD_BODIES])
    def test_a_bad_body_is_a_400_error_body(
        self, client: httpx.Client, control: LiveControl, path: str, kind: str, body: bytes
    ) -> None:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})

        assert response.status_code == 400, response.text
        assert _error(response).error == "BAD_REQUEST"
        assert "Traceback" not in response.text
        assert control.calls == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"phrase": "ENABLE LIVE TRADING", "token": 12345, "account_id": "A"}, "token"),
            ({"phrase": "ENABLE LIVE TRADING", "account_id": "A"}, "token"),
            ({"phrase": "ENABLE LIVE TRADING", "token": "x" * 513, "account_id": "A"}, "token"),
            ({"phrase": ["ENABLE"], "token": "t", "account_id": "A"}, "phrase"),
        ],
        ids=["token-not-a-string", "token-missing", "token-too-long", "phrase-a-list"],
    )
    def test_a_malformed_confirmation_is_a_400_that_names_the_field_not_the_token(
        self, client: httpx.Client, control: LiveControl, body: dict[str, Any], field: str
    ) -> None:
        response = client.post("/execution/live/confirm", json=body)

        assert response.status_code == 400
        error = _error(response)
        assert field in error.message
        assert "x" * 20 not in error.message
        assert control.calls == []

    @pytest.mark.parametrize(
        "body",
        [{"confirm": "yes"}, {"live_mode": 1}, {"confirm": True, "live_mode": "true"}],
    )
    def test_wrong_types_in_the_arm_body_are_a_400(
        self, client: httpx.Client, control: LiveControl, body: dict[str, Any]
    ) -> None:
        response = client.post("/execution/arm", json=body)

        assert response.status_code == 400
        assert control.calls == []

    def test_a_revoke_reason_given_twice_and_different_is_a_400(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        response = client.post("/execution/live/revoke?reason=a", json={"reason": "b"})

        assert response.status_code == 400
        assert control.calls == []


# ---------------------------------------------------------------------------------------------
# WHO: NAMED TOKENS, CONSTANT TIME, THE OPERATOR REF
# ---------------------------------------------------------------------------------------------


class TestOperators:
    def test_every_mutating_call_gets_the_matched_tokens_name_and_the_address(
        self, serve: Callable[..., httpx.Client], control: LiveControl
    ) -> None:
        client = serve(token=TOKEN, tokens={"alice": ALICE_TOKEN, "bob": BOB_TOKEN})

        client.post("/execution/disarm", headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
        client.post("/execution/live/revoke", headers={"Authorization": f"Bearer {BOB_TOKEN}"})
        client.post("/execution/connect", headers=AUTH)
        client.post(
            "/execution/live/confirm",
            json=CONFIRM_BODY,
            headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
        )
        client.post("/pause", headers={"Authorization": f"Bearer {BOB_TOKEN}"})
        client.post("/resume", headers=AUTH)

        assert control.operators == [
            ("disarm", OperatorRef(who="alice", address="127.0.0.1")),
            ("live_revoke", OperatorRef(who="bob", address="127.0.0.1")),
            ("connect", OperatorRef(who="admin", address="127.0.0.1")),
            ("live_confirm", OperatorRef(who="alice", address="127.0.0.1")),
            ("pause", OperatorRef(who="bob", address="127.0.0.1")),
            ("resume", OperatorRef(who="admin", address="127.0.0.1")),
        ]

    def test_named_tokens_alone_protect_the_api(
        self, serve: Callable[..., httpx.Client], control: LiveControl
    ) -> None:
        client = serve(tokens={"alice": ALICE_TOKEN})

        assert client.post("/execution/disarm").status_code == 401
        assert client.get("/execution/gates").status_code == 401
        response = client.post(
            "/execution/disarm", headers={"Authorization": f"Bearer {ALICE_TOKEN}"}
        )
        assert response.status_code == 200
        assert control.operators == [("disarm", OperatorRef(who="alice", address="127.0.0.1"))]

    def test_with_no_token_configured_the_operator_is_local(
        self, client: httpx.Client, control: LiveControl
    ) -> None:
        client.post("/execution/arm", json={"confirm": True, "live_mode": False})

        assert control.operators == [("arm", OperatorRef(who="local", address="127.0.0.1"))]

    def test_the_token_is_compared_with_every_configured_token_in_constant_time(
        self,
        serve: Callable[..., httpx.Client],
        control: LiveControl,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        client = serve(token=TOKEN, tokens={"alice": ALICE_TOKEN, "bob": BOB_TOKEN})
        compared: list[bytes] = []
        real_compare = hmac.compare_digest

        def recording_compare(a: bytes, b: bytes) -> bool:
            compared.append(b)
            return real_compare(a, b)

        monkeypatch.setattr(hmac, "compare_digest", recording_compare)

        # The first configured token matches: the other two are compared all the same.
        client.post("/execution/disarm", headers=AUTH)
        assert sorted(compared) == sorted(
            token.encode() for token in (TOKEN, ALICE_TOKEN, BOB_TOKEN)
        )
        compared.clear()
        client.post("/execution/disarm", headers={"Authorization": "Bearer nobody"})
        assert len(compared) == 3

    def test_a_wrong_token_is_refused_and_never_echoed(
        self, serve: Callable[..., httpx.Client], control: LiveControl
    ) -> None:
        client = serve(token=TOKEN, tokens={"alice": ALICE_TOKEN})

        response = client.post(
            "/execution/arm",
            json={"confirm": True, "live_mode": True},
            headers={"Authorization": f"Bearer {ALICE_TOKEN}x"},
        )

        assert response.status_code == 401
        assert ALICE_TOKEN not in response.text
        assert control.calls == []

    def test_two_names_sharing_a_token_are_refused_at_build_time(
        self, control: LiveControl
    ) -> None:
        with pytest.raises(ValueError, match="same token") as raised:
            build_app(control, token=None, tokens={"alice": ALICE_TOKEN, "bob": ALICE_TOKEN})
        assert ALICE_TOKEN not in str(raised.value)

    def test_tokens_may_not_take_the_admin_tokens_name(self, control: LiveControl) -> None:
        with pytest.raises(ValueError, match="admin"):
            build_app(control, token=TOKEN, tokens={"admin": ALICE_TOKEN})

    def test_an_empty_named_token_is_refused_at_build_time(self, control: LiveControl) -> None:
        with pytest.raises(ValueError, match="empty"):
            build_app(control, token=None, tokens={"alice": "  "})

    def test_tokens_never_reach_the_request_log(
        self,
        serve: Callable[..., httpx.Client],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        client = serve(token=TOKEN, tokens={"alice": ALICE_TOKEN})
        caplog.set_level(logging.DEBUG)

        client.post(
            "/execution/live/confirm",
            json=CONFIRM_BODY,
            headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
        )
        client.post("/execution/disarm", headers={"Authorization": "Bearer wrong-token-zzz"})

        logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
        assert any(record.__dict__.get("event") == "HTTP_REQUEST" for record in caplog.records)
        for secret in (TOKEN, ALICE_TOKEN, LIVE_ENABLE_TOKEN, "wrong-token-zzz"):
            assert secret not in logged


class TestRouteAuth:
    @pytest.mark.parametrize("path", ["/execution/gates", "/execution/audit"])
    def test_the_gates_and_the_audit_need_the_token_when_one_is_configured(
        self, serve: Callable[..., httpx.Client], control: LiveControl, path: str
    ) -> None:
        client = serve(token=TOKEN)

        refused = client.get(path)
        accepted = client.get(path, headers=AUTH)

        assert refused.status_code == 401
        assert accepted.status_code == 200
        assert len(control.calls) == 1

    @pytest.mark.parametrize(
        "path",
        [
            "/execution/connect",
            "/execution/prelive/run",
            "/execution/live/confirm",
            "/execution/live/revoke",
            "/execution/circuit-breaker/reset",
        ],
    )
    def test_the_new_post_routes_need_the_token(
        self, serve: Callable[..., httpx.Client], control: LiveControl, path: str
    ) -> None:
        client = serve(token=TOKEN)

        response = client.post(path, json=CONFIRM_BODY if path.endswith("confirm") else None)

        assert response.status_code == 401
        assert control.calls == []


# ---------------------------------------------------------------------------------------------
# REHEARSAL
# ---------------------------------------------------------------------------------------------


class TestRehearsal:
    @pytest.fixture
    def rehearsal(self, serve: Callable[..., httpx.Client]) -> httpx.Client:
        return serve(rehearsal=True)

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/execution/gates"),
            ("GET", "/no/such/route"),
            ("POST", "/execution/connect"),
            ("POST", "/execution/disarm"),
        ],
    )
    def test_every_response_carries_the_rehearsal_header(
        self, rehearsal: httpx.Client, method: str, path: str
    ) -> None:
        response = rehearsal.request(method, path)

        assert response.headers[REHEARSAL_HEADER] == "REHEARSAL"

    def test_without_rehearsal_there_is_no_header(self, client: httpx.Client) -> None:
        assert REHEARSAL_HEADER not in client.get("/health").headers

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/execution/connect", None),
            ("/execution/arm", {"confirm": True, "live_mode": True}),
            ("/execution/live/confirm", CONFIRM_BODY),
            ("/mode", {"mode": "LIVE", "confirm": "CONFIRM LIVE TRADING"}),
        ],
    )
    def test_the_messages_of_what_changes_trading_start_with_rehearsal(
        self, rehearsal: httpx.Client, path: str, body: dict[str, Any] | None
    ) -> None:
        response = rehearsal.post(path, json=body)

        assert response.status_code == 200
        assert response.json()["message"].startswith("REHEARSAL: ")

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/execution/connect"),
            ("GET", "/execution/gates"),
            ("POST", "/execution/prelive/run"),
            ("POST", "/execution/live/confirm"),
            ("GET", "/execution/status"),
        ],
    )
    def test_the_execution_views_say_rehearsal(
        self, rehearsal: httpx.Client, method: str, path: str
    ) -> None:
        body = CONFIRM_BODY if path.endswith("confirm") else None
        response = rehearsal.request(method, path, json=body)

        assert response.json()["rehearsal"] is True


# ---------------------------------------------------------------------------------------------
# OPENAPI
# ---------------------------------------------------------------------------------------------


_NEW_ROUTES = [
    ("/execution/connect", "post"),
    ("/execution/gates", "get"),
    ("/execution/prelive/run", "post"),
    ("/execution/live/confirm", "post"),
    ("/execution/live/revoke", "post"),
    ("/execution/circuit-breaker/reset", "post"),
    ("/execution/audit", "get"),
]


class TestOpenApi:
    @pytest.mark.parametrize(("path", "method"), _NEW_ROUTES)
    def test_every_new_route_is_described_with_its_security(
        self, serve: Callable[..., httpx.Client], path: str, method: str
    ) -> None:
        document = serve(token=TOKEN).get("/openapi.json").json()

        operation = document["paths"][path][method]
        assert operation["security"] == [{"bearerAuth": []}]
        assert "401" in operation["responses"]
        assert operation["tags"] == ["solat"]

    def test_every_operation_states_its_security_when_a_token_is_set(
        self, serve: Callable[..., httpx.Client]
    ) -> None:
        document = serve(token=TOKEN).get("/openapi.json").json()

        for operation in OPERATIONS:
            described = document["paths"][operation.path][operation.method.lower()]
            expected = [{"bearerAuth": []}] if operation.needs_token else []
            assert described["security"] == expected, operation.path

    def test_the_confirmation_and_the_connect_failure_are_documented(
        self, client: httpx.Client
    ) -> None:
        document = client.get("/openapi.json").json()

        confirm = document["paths"]["/execution/live/confirm"]["post"]
        assert confirm["requestBody"]["required"] is True
        schema_ref = confirm["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
        assert set(schema["required"]) == {"phrase", "token", "account_id"}
        assert "502" in document["paths"]["/execution/connect"]["post"]["responses"]
        audit = document["paths"]["/execution/audit"]["get"]
        assert audit["parameters"][0]["name"] == "limit"
