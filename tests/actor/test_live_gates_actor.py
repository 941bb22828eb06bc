"""The LIVE gates on the real actor tree (issue 7, acceptance 2): the kill switch owns the facts,
arms LIVE only through every gate, and the order actor's last gate refuses an entry past a
lapsed gate at the entry's own time. Rehearsal: the paper venue's account is LIVE-type, the
connect outcome is reported the way the admin API will report it (``RecordConnect``).

Manual clock throughout; the heartbeat and lease limits are widened so that moving the clock by
the gates' TTLs does not also pause entries for a stale feed (which would deny the entry for
another reason than the one under test).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.directory import ActorUnavailable
from actors.kill_switch_actor import ModeDecision, TradingControlView
from domain.clock import NANOS_PER_SECOND
from domain.enums import Mode, PauseCause
from domain.live_gates import AccountFacts, PreliveResult
from domain.messages import (
    ArmTrading,
    AuditEntry,
    ConfirmLive,
    ConfirmOutcome,
    DisarmTrading,
    InjectFault,
    LiveGatesReport,
    OperatorRef,
    PauseEntries,
    QueryAudit,
    QueryGates,
    QuerySnapshot,
    RecordConnect,
    ResetCircuitBreaker,
    ResetKillSwitch,
    ResumeEntries,
    RevokeLive,
    RunPrelive,
    SetMode,
    TripKillSwitch,
)
from tests.actor.conftest import Desk

TOKEN = "tok-3f9a-very-secret-7c1e"
ACCOUNT = "LIVE-REH-001"
TTL_S = 10.0
PRELIVE_AGE_S = 5.0
OPERATOR = OperatorRef(who="admin", address="127.0.0.1")

LIVE_CONFIG: dict[str, Any] = {
    "paper_broker": {"latency_ms": 0, "live_account": True, "account_id": ACCOUNT},
    "live": {
        "live_trading_enabled": True,
        "live_enable_token": TOKEN,
        "live_account_id": ACCOUNT,
        "live_max_order_size": "1000",
        "live_confirmation_ttl_s": TTL_S,
        "live_prelive_max_age_s": PRELIVE_AGE_S,
    },
    "http": {"port": 0, "token": "admin-api-token"},
    "risk": {"max_daily_loss_pct": "2.0"},
    "circuit_breaker": {"max_errors": 3, "window_s": 60, "cooldown_s": 30},
    "heartbeats": {"marketdata_stale_s": 120, "order_stream_stale_s": 120},
    "leader": {"lease_ttl_s": 120, "renew_interval_s": 1, "grace_s": 0},
}


def ask(desk: Desk, message: object) -> Any:
    return desk.engine.directory.ask("kill_switch", message, timeout_s=10)


def gates(desk: Desk) -> LiveGatesReport:
    report = ask(desk, QueryGates())
    assert isinstance(report, LiveGatesReport)
    return report


def live_account(desk: Desk, account_id: str = ACCOUNT) -> AccountFacts:
    return AccountFacts(
        account_id=account_id,
        balance="1000000",
        currency="INR",
        is_live=True,
        connected_ns=desk.clock.now_ns(),
    )


def audit(desk: Desk) -> tuple[AuditEntry, ...]:
    return ask(desk, QueryAudit(limit=200))


def has_blocker(report: LiveGatesReport, fragment: str) -> bool:
    return any(fragment in blocker for blocker in report.blockers)


def wait_leader(desk: Desk) -> None:
    desk.quote("AAA", "100.00", "100.10")
    desk.quote("BBB", "200.00", "200.10")
    desk.settle(
        lambda: not has_blocker(gates(desk), "leader lease"),
        what="the kill switch hears leadership",
    )


def connect_prelive_confirm(desk: Desk) -> None:
    ask(desk, RecordConnect(account=live_account(desk), by=OPERATOR))
    result = ask(desk, RunPrelive(account=live_account(desk), by=OPERATOR))
    assert isinstance(result, PreliveResult) and result.passed, result
    outcome = ask(desk, ConfirmLive(phrase="ENABLE LIVE TRADING", token=TOKEN, account_id=ACCOUNT))
    assert isinstance(outcome, ConfirmOutcome) and outcome.accepted, outcome


def arm_live(desk: Desk) -> TradingControlView:
    view = ask(desk, ArmTrading(live=True, by=OPERATOR))
    assert isinstance(view, TradingControlView)
    return view


def wait_taken_over(desk: Desk) -> None:
    def ready() -> bool:
        order = desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
        leadership = order["leadership"]
        return leadership is not None and order["taken_over_epoch"] == leadership["epoch"]

    desk.settle(ready, what="the order actor took the book over")


@pytest.fixture
def live_desk(desk_factory: Callable[..., Desk]) -> Iterator[Desk]:
    desk = desk_factory(**LIVE_CONFIG)
    wait_leader(desk)
    yield desk


@pytest.fixture
def armed_live(live_desk: Desk) -> Desk:
    connect_prelive_confirm(live_desk)
    view = arm_live(live_desk)
    assert view.refused == "", view
    assert view.state.mode is Mode.LIVE and view.state.armed
    wait_taken_over(live_desk)
    return live_desk


# ---------------------------------------------------------------------------------------------
# BLOCKERS APPEAR AND CLEAR
# ---------------------------------------------------------------------------------------------


def test_each_blocker_appears_and_clears_through_the_procedure(live_desk: Desk) -> None:
    desk = live_desk
    report = gates(desk)
    assert not report.allowed and report.rehearsal
    assert has_blocker(report, "Broker not connected")
    assert "Pre-live check has never passed" in report.blockers
    assert "UI LIVE confirmation not completed" in report.blockers
    refused = arm_live(desk)
    assert refused.refused.startswith("LIVE_GATES_BLOCKED: ")
    assert "UI LIVE confirmation not completed" in refused.blockers
    assert not refused.state.armed and refused.state.mode is Mode.PAPER

    ask(desk, RecordConnect(account=live_account(desk), by=OPERATOR))
    assert not has_blocker(gates(desk), "Broker not connected")
    ask(desk, RunPrelive(by=OPERATOR))
    assert not has_blocker(gates(desk), "Pre-live")
    ask(desk, ConfirmLive(phrase="ENABLE LIVE TRADING", token=TOKEN, account_id=ACCOUNT))
    report = gates(desk)
    assert report.allowed and report.blockers == (), report.blockers

    # The kill switch blocks, and its reset clears the blocker.
    ask(desk, TripKillSwitch(reason="DRILL", detail="blocker drill"))
    assert has_blocker(gates(desk), "Kill switch is active (DRILL)")
    ask(desk, ResetKillSwitch(operator="admin", reason="drill over"))
    assert gates(desk).allowed
    actions = [(row.action, row.outcome, row.who) for row in audit(desk)]
    assert actions[:2] == [
        ("KILL_SWITCH_RESET", "ACCEPTED", "admin"),
        ("KILL_SWITCH", "TRIPPED", "engine"),
    ]

    # A connect to another account: the account lock (bound at the first LIVE connect) blocks.
    ask(desk, RecordConnect(account=live_account(desk, "LIVE-OTHER-9"), by=OPERATOR))
    report = gates(desk)
    assert has_blocker(report, f"Account lock: this database trades account {ACCOUNT}")
    assert has_blocker(report, "does not match LIVE_ACCOUNT_ID")
    ask(desk, RecordConnect(account=live_account(desk), by=OPERATOR))
    assert gates(desk).allowed

    view = arm_live(desk)
    assert view.refused == "" and view.state.mode is Mode.LIVE and view.state.armed


def test_without_live_settings_the_configuration_blockers_show(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory()
    report = gates(desk)
    assert "LIVE_TRADING_ENABLED is not set to true" in report.blockers
    assert "LIVE_ENABLE_TOKEN is not configured" in report.blockers
    assert "LIVE_ACCOUNT_ID is not configured" in report.blockers
    assert has_blocker(report, "No admin API token is configured")
    assert has_blocker(report, "LIVE_MAX_ORDER_SIZE is not configured")
    decision = ask(desk, SetMode(mode=Mode.LIVE, confirm="CONFIRM LIVE TRADING"))
    assert isinstance(decision, ModeDecision)
    assert not decision.accepted and decision.mode is Mode.PAPER
    assert "LIVE_TRADING_ENABLED is not set to true" in decision.blockers


def test_drift_blocks_arming_and_clears_with_it(live_desk: Desk) -> None:
    desk = live_desk
    connect_prelive_confirm(desk)
    ask(desk, PauseEntries(cause=PauseCause.RECONCILE_DRIFT, detail="AAA: ours 10, broker 0"))
    report = gates(desk)
    assert "Reconciliation drift: AAA: ours 10, broker 0" in report.blockers
    view = arm_live(desk)
    assert "Reconciliation drift: AAA: ours 10, broker 0" in view.blockers
    assert not view.state.armed
    ask(desk, ResumeEntries(cause=PauseCause.RECONCILE_DRIFT))
    assert gates(desk).allowed


def test_a_failed_connect_disarms_and_blocks_until_a_connect_succeeds(armed_live: Desk) -> None:
    desk = armed_live
    report = ask(desk, RecordConnect(error="connection refused by broker", by=OPERATOR))
    assert not report.armed and report.mode is Mode.LIVE
    assert "Broker not connected: connection refused by broker (POST /execution/connect)" in (
        report.blockers
    )
    assert not desk.trading().state.armed
    assert not desk.engine.gate.current().armed
    rows = audit(desk)
    assert (rows[0].action, rows[0].outcome, rows[0].who) == ("DISARM", "ACCEPTED", "engine")
    assert (rows[1].action, rows[1].outcome) == ("CONNECT", "FAILED")
    ask(desk, RecordConnect(account=live_account(desk), by=OPERATOR))
    assert not has_blocker(gates(desk), "Broker not connected")


# ---------------------------------------------------------------------------------------------
# EXPIRY BY THE CLOCK
# ---------------------------------------------------------------------------------------------


def test_the_confirmation_and_the_prelive_pass_expire_by_the_manual_clock(live_desk: Desk) -> None:
    desk = live_desk
    connect_prelive_confirm(desk)
    assert gates(desk).allowed
    desk.step(PRELIVE_AGE_S + 0.5)
    report = gates(desk)
    assert [b for b in report.blockers if "Pre-live check passed" in b], report.blockers
    assert not has_blocker(report, "confirmation")
    ask(desk, RunPrelive(by=OPERATOR))
    assert gates(desk).allowed
    desk.step(TTL_S - PRELIVE_AGE_S - 1.0)  # 0.5 s of the confirmation left
    assert gates(desk).confirmation_expires_ns is not None
    assert not has_blocker(gates(desk), "confirmation")
    desk.step(0.5)  # exactly at expiry: expired
    report = gates(desk)
    assert has_blocker(report, "LIVE confirmation expired 0 s ago")
    assert not arm_live(desk).state.armed


def test_an_armed_live_engine_whose_confirmation_expires_refuses_the_next_entry_exits_go_on(
    armed_live: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    desk = armed_live
    broker = desk.engine.broker
    assert broker is not None
    first = desk.send_plan(instrument="AAA")
    desk.settle(
        lambda: (
            desk.portfolio().portfolio.positions
            and len(desk.working_legs(first.plan_client_id)) == 2
        ),
        what="the first entry filled, stop and target working",
    )
    confirmed = gates(desk).confirmation_expires_ns
    assert confirmed is not None
    # Past the expiry by the clock, and no timer fired: the kill switch has not noticed yet.
    desk.clock.advance((confirmed - desk.clock.now_ns()) / NANOS_PER_SECOND + 0.001)
    second = desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    snapshot = desk.settle(
        lambda: (
            (s := desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5))[
                "recent_denials"
            ]
            and s
        ),
        what="the entry after expiry denied",
    )
    [denial] = snapshot["recent_denials"]
    assert denial["client_order_id"] == second.plan_client_id + "E"
    assert denial["code"] == "LIVE_GATE"
    assert "LIVE confirmation expired" in denial["detail"]
    assert second.plan_client_id + "E" not in broker.submission_counts()

    # Exits go on: the stop of the first position still fires at the venue.
    with caplog.at_level(logging.WARNING):
        desk.quote("AAA", "98.00", "98.10")
        desk.settle(
            lambda: not desk.portfolio().portfolio.positions, what="the stop closed the position"
        )
        report = desk.settle(
            lambda: (r := gates(desk)).live_entries_stopped and r, what="entries stopped said"
        )
    assert report.armed and "LIVE confirmation expired" in report.live_entries_stopped
    assert any(
        getattr(r, "event", "") == "LIVE_GATE" and "LIVE entries stopped" in r.getMessage()
        for r in caplog.records
    )
    rows = audit(desk)
    expired = [row for row in rows if row.action == "LIVE_EXPIRED"]
    assert len(expired) == 1 and expired[0].outcome == "EXPIRED" and expired[0].who == "engine"
    metrics = desk.engine.metrics
    assert metrics.live_entries_stopped._value.get() == 1
    assert metrics.live_armed._value.get() == 1
    assert metrics.live_confirmation_seconds_left._value.get() == 0


# ---------------------------------------------------------------------------------------------
# CONFIRMATION REFUSALS, AUDIT WITHOUT THE TOKEN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "token", "account_id", "code"),
    [
        ("ENABLE LIVE", TOKEN, ACCOUNT, "BAD_PHRASE"),
        ("ENABLE LIVE TRADING", TOKEN[:-1] + "X", ACCOUNT, "BAD_TOKEN"),
        ("ENABLE LIVE TRADING", TOKEN, "LIVE-SOMEONE-ELSE", "BAD_ACCOUNT"),
    ],
    ids=["phrase", "token", "account"],
)
def test_a_wrong_confirmation_is_refused_and_audited_without_the_token(
    live_desk: Desk,
    caplog: pytest.LogCaptureFixture,
    phrase: str,
    token: str,
    account_id: str,
    code: str,
) -> None:
    desk = live_desk
    with caplog.at_level(logging.DEBUG):
        outcome = ask(
            desk, ConfirmLive(phrase=phrase, token=token, account_id=account_id, by=OPERATOR)
        )
        accepted = ask(
            desk,
            ConfirmLive(phrase="ENABLE LIVE TRADING", token=TOKEN, account_id=ACCOUNT, by=OPERATOR),
        )
    assert not outcome.accepted and outcome.code == code
    assert accepted.accepted
    counted = desk.engine.metrics.audit_events_total
    assert counted.labels(action="LIVE_CONFIRM", outcome="REFUSED")._value.get() == 1
    assert counted.labels(action="LIVE_CONFIRM", outcome="ACCEPTED")._value.get() == 1
    rows = audit(desk)
    confirms = [row for row in rows if row.action == "LIVE_CONFIRM"]
    assert [(row.outcome, row.who, row.address) for row in confirms] == [
        ("ACCEPTED", "admin", "127.0.0.1"),
        ("REFUSED", "admin", "127.0.0.1"),
    ]
    assert code in confirms[1].detail
    # Neither the token given nor the configured one appears in a row, the database or a log.
    for secret in {token, TOKEN}:
        assert all(secret not in repr(row) for row in rows)
        assert secret not in caplog.text
        assert all(secret not in repr(r.__dict__) for r in caplog.records)
    database = desk.engine.config.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        dumped = "\n".join(connection.iterdump())
    assert "LIVE_CONFIRM" in dumped
    assert TOKEN not in dumped and token not in dumped
    snapshot = desk.engine.directory.ask("kill_switch", QuerySnapshot(), timeout_s=5)
    assert TOKEN not in repr(snapshot)


def test_the_audit_trail_refuses_update_and_delete(armed_live: Desk) -> None:
    database = armed_live.engine.config.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] > 0
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("UPDATE audit_log SET who = 'someone'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute("DELETE FROM audit_log")


# ---------------------------------------------------------------------------------------------
# CIRCUIT BREAKER
# ---------------------------------------------------------------------------------------------


def test_the_circuit_breaker_trips_after_n_rejections_and_resets_only_after_cooldown(
    desk_factory: Callable[..., Desk], caplog: pytest.LogCaptureFixture
) -> None:
    desk = desk_factory(broker_faults=True, **LIVE_CONFIG)
    wait_leader(desk)
    connect_prelive_confirm(desk)
    assert arm_live(desk).refused == ""
    wait_taken_over(desk)
    faults = desk.engine.faults
    assert faults is not None
    faults.refuse_next("submit_order", times=3)
    caplog.set_level(logging.INFO)
    for index in range(3):
        plan = desk.send_plan(instrument="AAA", quantity=10 + index)
        desk.settle(
            lambda plan=plan: (
                [o.status.value for o in desk.orders_for(plan.plan_client_id)] == ["REJECTED"]
            ),
            what=f"rejection {index + 1}",
        )
    report = desk.settle(
        lambda: (r := gates(desk)).breaker.tripped and r, what="the breaker tripped"
    )
    assert not report.armed
    assert has_blocker(report, "Circuit breaker tripped: 3 broker errors or rejections")
    assert desk.engine.metrics.circuit_breaker_tripped._value.get() == 1
    assert any(re.search("Circuit.*tripped", r.getMessage()) for r in caplog.records)
    rows = audit(desk)
    assert ("CIRCUIT_BREAKER", "TRIPPED") in [(row.action, row.outcome) for row in rows]

    refused = ask(desk, ResetCircuitBreaker(by=OPERATOR))
    assert refused.refused.startswith("CIRCUIT_BREAKER_COOLDOWN")
    assert gates(desk).breaker.tripped
    desk.step(31)
    view = ask(desk, ResetCircuitBreaker(by=OPERATOR))
    assert view.refused == "" and not view.state.armed
    report = gates(desk)
    assert not report.breaker.tripped and not has_blocker(report, "Circuit breaker")
    assert desk.engine.metrics.circuit_breaker_tripped._value.get() == 0


# ---------------------------------------------------------------------------------------------
# MODE FLIP, REVOKE, PAPER ARMING ON A LIVE ACCOUNT, RESTARTS
# ---------------------------------------------------------------------------------------------


def test_the_aitrapp_flip_needs_its_phrase_and_every_gate_and_logs_mode_switched(
    live_desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    desk = live_desk
    connect_prelive_confirm(desk)
    wrong = ask(desk, SetMode(mode=Mode.LIVE, confirm="yes please", by=OPERATOR))
    assert not wrong.accepted and wrong.blockers == (
        'confirm must be exactly "CONFIRM LIVE TRADING"',
    )
    with caplog.at_level(logging.INFO):
        decision = ask(desk, SetMode(mode=Mode.LIVE, confirm="CONFIRM LIVE TRADING", by=OPERATOR))
    assert decision.accepted and decision.mode is Mode.LIVE and decision.armed
    assert any(r.getMessage() == "Mode switched to LIVE" for r in caplog.records)
    back = ask(desk, SetMode(mode=Mode.PAPER, by=OPERATOR))
    assert back.accepted and back.mode is Mode.PAPER and not back.armed
    assert has_blocker(gates(desk), "UI LIVE confirmation not completed")


def test_revoke_disarms_and_leaves_live(armed_live: Desk) -> None:
    desk = armed_live
    view = ask(desk, RevokeLive(by=OPERATOR))
    assert view.state.mode is Mode.PAPER and not view.state.armed
    assert "UI LIVE confirmation not completed" in gates(desk).blockers
    assert (audit(desk)[0].action, audit(desk)[0].outcome) == ("LIVE_REVOKE", "ACCEPTED")


def test_paper_arming_is_refused_on_a_live_type_account(live_desk: Desk) -> None:
    desk = live_desk
    # auto_arm_paper did not arm it either
    assert not desk.trading().state.armed
    view = ask(desk, ArmTrading(by=OPERATOR))
    assert view.refused.startswith("ARM_REFUSED: the broker account is a LIVE-type account")
    assert not view.state.armed
    ask(desk, DisarmTrading(by=OPERATOR))
    actions = [(row.action, row.outcome) for row in audit(desk)]
    assert actions[:2] == [("DISARM", "ACCEPTED"), ("ARM", "REFUSED")]


def test_a_new_engine_on_the_same_database_never_comes_back_live_armed(
    desk_factory: Callable[..., Desk], tmp_path: Any
) -> None:
    config = {**LIVE_CONFIG, "mode": "LIVE"}
    first = desk_factory(**config)
    wait_leader(first)
    connect_prelive_confirm(first)
    assert arm_live(first).state.armed
    first.engine.stop()

    second = desk_factory(**config)
    wait_leader(second)
    state = second.trading().state
    assert state.mode is Mode.LIVE and not state.armed
    report = gates(second)
    assert "UI LIVE confirmation not completed" in report.blockers
    assert report.live_entries_stopped is None
    # The account lock survived the restart.
    ask(second, RecordConnect(account=live_account(second, "LIVE-OTHER-9"), by=OPERATOR))
    assert has_blocker(gates(second), f"Account lock: this database trades account {ACCOUNT}")


def test_a_supervisor_restart_of_the_kill_switch_does_not_come_back_live_armed(
    armed_live: Desk,
) -> None:
    desk = armed_live
    assert desk.engine.directory.tell("kill_switch", InjectFault(detail="LIVE restart drill"))

    def restarted() -> LiveGatesReport | None:
        try:
            report = gates(desk)
        except ActorUnavailable:
            return None  # between the crash and the restart
        return report if report.confirmation_expires_ns is None else None

    report = desk.settle(restarted, what="the kill switch restarted with no confirmation")
    assert not report.armed
    assert "UI LIVE confirmation not completed" in report.blockers
    gate = desk.engine.gate.current()
    assert gate is not None and not gate.armed


def test_a_connect_to_a_live_account_disarms_a_paper_armed_engine(
    desk_factory: Callable[..., Desk],
) -> None:
    desk = desk_factory()
    desk.ready_to_trade()  # PAPER, auto-armed
    report = ask(desk, RecordConnect(account=live_account(desk), by=OPERATOR))
    assert not report.armed and report.mode is Mode.PAPER
    assert ask(desk, ArmTrading(by=OPERATOR)).refused.startswith("ARM_REFUSED")


def test_the_log_lines_match_the_runbooks_greps(
    live_desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    desk = live_desk
    with caplog.at_level(logging.INFO):
        arm_live(desk)  # refused: blockers
        connect_prelive_confirm(desk)
        ask(desk, TripKillSwitch(reason="INCIDENT", detail="incident response"))
    messages = [record.getMessage() for record in caplog.records]
    for pattern in ("LIVE.*blocked", "LIVE.*confirm", "Kill.*switch"):
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)


def test_broker_unavailability_counts_towards_the_breaker_too(
    desk_factory: Callable[..., Desk],
) -> None:
    config = {**LIVE_CONFIG, "circuit_breaker": {"max_errors": 2, "window_s": 60}}
    desk = desk_factory(broker_faults=True, **config)
    wait_leader(desk)
    connect_prelive_confirm(desk)
    assert arm_live(desk).refused == ""
    wait_taken_over(desk)
    faults = desk.engine.faults
    assert faults is not None
    faults.lose_next("submit_order", loss="request", times=2)
    desk.send_plan(instrument="AAA")
    desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    report = desk.settle(
        lambda: (r := gates(desk)).breaker.tripped and r, what="the breaker tripped"
    )
    assert "unavailable" in report.breaker.detail
    assert not report.armed
