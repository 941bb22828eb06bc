"""A broker that refuses our credentials (Kite's access token expiring at 06:00): entries pause
with BROKER_AUTH and a detail that says what to do, nothing is retried in a loop, exits still
go out, and entries resume only once the adapter reports a working session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.enums import DenialCode, OrderStatus, PauseCause
from domain.messages import BrokerSessionChanged, InjectFault, QuerySnapshot
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_supervision import restarts, wait_for_restart

LOGIN = "access token expired: run python -m tools.kite_login, then POST /execution/connect"


@pytest.fixture
def faulty(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(broker_faults=True)
    desk.ready_to_trade()
    return desk


def pause_detail(desk: Desk) -> str | None:
    details = {p.cause: p.detail for p in desk.trading().pauses}
    return details.get(PauseCause.BROKER_AUTH)


def session(desk: Desk, *, valid: bool, detail: str = LOGIN) -> None:
    # What the broker adapter reports through the engine's report sink.
    desk.engine.directory.tell(
        "order", BrokerSessionChanged(valid=valid, detail=detail, ts_event=desk.clock.now_ns())
    )


def test_an_entry_refused_for_our_credentials_is_withheld_and_pauses_entries(
    faulty: Desk,
) -> None:
    assert faulty.engine.faults is not None
    faulty.engine.faults.refuse_credentials(LOGIN)
    plan = faulty.send_plan(quantity=10)
    [entry] = faulty.settle(
        lambda: [
            o
            for o in faulty.orders_for(plan.plan_client_id)
            if o.leg.value == "ENTRY" and o.status.is_terminal
        ],
        what="the entry settled",
    )
    # It never reached the broker: settled here, not left in flight to be sent hours later.
    assert entry.status is OrderStatus.CANCELLED
    assert "NEVER_REACHED_BROKER" in entry.reason and DenialCode.BROKER_AUTH.value in entry.reason
    detail = faulty.settle(lambda: pause_detail(faulty), what="BROKER_AUTH pause")
    assert "tools.kite_login" in detail
    assert faulty.engine.faults.lost == []  # refused locally: the broker saw nothing


def test_exits_still_go_out_while_the_session_is_refused_and_entries_resume_after_it(
    faulty: Desk,
) -> None:
    plan_id = open_position(faulty, quantity=10)
    session(faulty, valid=False)
    faulty.settle(lambda: pause_detail(faulty), what="BROKER_AUTH pause")
    assert not faulty.trading().state.entries_allowed
    # The stop triggers at the venue: exits are never blocked by an entry pause.
    faulty.quote("AAA", "98.90", "99.00")
    faulty.settle(lambda: not faulty.portfolio().portfolio.positions, what="stopped out")
    assert plan_id not in {p.position_id for p in faulty.portfolio().portfolio.positions}
    session(faulty, valid=True, detail="connected: a new access token")
    faulty.settle(lambda: pause_detail(faulty) is None, what="BROKER_AUTH cleared")


def test_a_restarted_kill_switch_is_told_the_pause_again(faulty: Desk) -> None:
    session(faulty, valid=False)
    faulty.settle(lambda: pause_detail(faulty), what="BROKER_AUTH pause")
    before = restarts(faulty, "kill_switch")
    faulty.engine.directory.tell("kill_switch", InjectFault(detail="drill"))
    wait_for_restart(faulty, "kill_switch", before + 1)
    # A condition pause is not stored by the kill switch: its owner asserts it again.
    faulty.step(1.0)
    faulty.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
    assert faulty.settle(lambda: pause_detail(faulty), what="BROKER_AUTH re-asserted") == LOGIN
