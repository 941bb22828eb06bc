"""LiveGateState, the kill switch's LIVE facts: what a restart reads back, and what never
leaves it (the token)."""

from __future__ import annotations

from actors.live_gate_state import LiveGateState
from domain.config import LiveGateConfig
from domain.enums import Mode
from domain.live_gates import CircuitBreaker

TOKEN = "tok-never-shown-42"


def state() -> LiveGateState:
    return LiveGateState(
        LiveGateConfig(live_trading_enabled=True, live_enable_token=TOKEN, live_account_id="LIVE-1")
    )


def test_an_unreadable_stored_breaker_reads_as_tripped() -> None:
    gates = state()
    gates.load("{not json", None)
    assert gates.breaker.tripped and "unreadable" in gates.breaker.detail


def test_a_stored_trip_and_the_bound_account_come_back() -> None:
    gates = state()
    gates.load('{"error_times_ns":[1],"tripped_ns":5,"detail":"3 errors"}', "LIVE-1")
    assert gates.breaker == CircuitBreaker(error_times_ns=(1,), tripped_ns=5, detail="3 errors")
    assert gates.bound_account_id == "LIVE-1"


def test_the_token_never_leaves_the_state() -> None:
    gates = state()
    outcome = gates.confirm(
        phrase="ENABLE LIVE TRADING", token=TOKEN, account_id="LIVE-1", who="admin", now_ns=0
    )
    assert outcome.accepted
    refused = gates.confirm(
        phrase="ENABLE LIVE TRADING", token=TOKEN + "x", account_id="LIVE-1", who="a", now_ns=0
    )
    facts = gates.facts(halt_reason=None, drift=())
    report = gates.report(facts, mode=Mode.PAPER, armed=False, now_ns=1)
    for shown in (outcome, refused, facts, report, gates.snapshot(1), gates.settings):
        assert TOKEN not in repr(shown)
