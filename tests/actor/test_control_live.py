"""EngineControl's side of the gated LIVE path against the real actor tree: the broker connect
made on the caller's thread (success, failure, a broker that hangs), LIVE arming that never
reports success unless the engine is in LIVE, REHEARSAL, and operator text redacted with every
configured token. What needs the kill switch's LIVE gate handlers is tested with them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec
import pytest

from actors.control import EngineControl
from adapters.brokers.base import AccountInfo, BrokerRejected, BrokerUnavailable
from adapters.http.app import ControlError
from domain.enums import Mode
from domain.messages.api import ArmRequest, PauseRequest
from domain.messages.control import OperatorRef
from tests.actor.conftest import Desk

ALICE_TOKEN = "alice-secret-token-0123456789"
ADMIN_TOKEN = "admin-secret-token-9876543210"
LIVE_TOKEN = "live-enable-token-abcdefghij"
ALICE = OperatorRef(who="alice", address="10.0.0.7")


class StandInBroker:
    """The broker's side of a connect, for the failures the paper venue cannot produce: it
    raises ``error`` or, with ``hold``, blocks until released (a broker that never answers)."""

    name = "stand-in"

    def __init__(self, *, error: Exception | None = None, hold: bool = False) -> None:
        self.error = error
        self.calls = 0
        self.release = threading.Event()
        self._hold = hold

    def connect(self) -> AccountInfo:
        self.calls += 1
        if self._hold:
            self.release.wait(30)
        if self.error is not None:
            raise self.error
        return AccountInfo(account_id="LIVE-42", balance=Decimal("2500.50"), is_live=True)


def _control_over(desk: Desk, broker: object) -> EngineControl:
    """An EngineControl on the desk's actors with another broker (the engine's own stays)."""
    engine = desk.engine
    return EngineControl(
        directory=engine.directory,
        clock=engine.clock,
        config=engine.config,
        config_sha=engine.config_sha,
        metrics=engine.metrics,
        broker=broker,  # type: ignore[arg-type]
    )


def test_connect_answers_the_brokers_account_in_the_runbooks_fields(desk: Desk) -> None:
    control = desk.engine.control
    assert control is not None

    view = control.connect(by=ALICE)

    body = msgspec.to_builtins(view)
    assert list(body)[:4] == ["ok", "account_id", "balance", "mode"]
    assert view.ok is True
    assert view.account_id == desk.engine.config.paper_broker.account_id
    assert isinstance(view.balance, float) and view.balance > 0
    assert view.mode is Mode.PAPER
    assert view.error is None


@pytest.mark.parametrize(
    "error",
    [
        BrokerUnavailable("venue storage down; url=https://x/?api_key=hunter2hunter2"),
        BrokerRejected("account suspended"),
        RuntimeError("adapter bug"),
    ],
    ids=["unavailable", "rejected", "unexpected"],
)
def test_a_failed_connect_is_ok_false_broker_unavailable_and_names_the_cause(
    desk: Desk, error: Exception
) -> None:
    control = _control_over(desk, StandInBroker(error=error))

    view = control.connect(by=ALICE)

    assert view.ok is False
    assert view.error == "BROKER_UNAVAILABLE"
    assert view.account_id == ""
    assert str(error).split(";")[0] in view.message
    assert "hunter2hunter2" not in view.message  # the log redactor's patterns apply


def test_a_broker_that_never_answers_is_a_failed_connect_at_the_ask_timeout(
    desk_factory: Callable[..., Desk],
) -> None:
    # Short, but long enough for the kill switch (also asked, under the same timeout) to
    # answer on a loaded machine: only the broker must be the one timing out.
    desk = desk_factory(http={"port": 0, "ask_timeout_s": 1.5})
    broker = StandInBroker(hold=True)
    control = _control_over(desk, broker)
    try:
        started = time.monotonic()
        first = control.connect(by=ALICE)
        second = control.connect(by=ALICE)
        elapsed = time.monotonic() - started

        assert first.ok is False and second.ok is False
        assert "TIMEOUT" in first.message and "1.5s" in first.message
        # The second waited on the call already in flight instead of starting another.
        assert broker.calls == 1
        assert elapsed < 15  # bounded by the timeouts, not by the broker
    finally:
        broker.release.set()


def test_live_arming_is_never_reported_as_done_unless_the_engine_is_in_live(
    desk: Desk,
) -> None:
    control = desk.engine.control
    assert control is not None

    with pytest.raises(ControlError) as refused:
        control.arm(ArmRequest(confirm=True, live_mode=True), by=ALICE)

    assert refused.value.status == 409
    assert refused.value.code == "LIVE_GATES_BLOCKED"
    assert refused.value.blockers


def test_a_token_pasted_into_a_reason_never_comes_back(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(
        http={"port": 0, "token": ADMIN_TOKEN, "tokens": {"alice": ALICE_TOKEN}},
        live={"live_enable_token": LIVE_TOKEN},
    )
    desk.ready_to_trade()
    control = desk.engine.control
    assert control is not None

    control.pause(
        PauseRequest(reason=f"pasted {ALICE_TOKEN} and {LIVE_TOKEN} by mistake"), by=ALICE
    )

    status = control.status()
    shown = msgspec.json.encode(status).decode() + str(control.debug_actors())
    assert "pasted" in shown
    for token in (ALICE_TOKEN, LIVE_TOKEN, ADMIN_TOKEN):
        assert token not in shown


def test_rehearsal_says_so_in_status_and_in_the_connect_message(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory(paper_broker={"latency_ms": 0, "live_account": True})
    control = desk.engine.control
    assert control is not None

    assert control.status().rehearsal is True
    view = control.connect(by=ALICE)
    assert view.rehearsal is True
    assert view.message.startswith("REHEARSAL: ")
