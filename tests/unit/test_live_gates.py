"""domain.live_gates, the pure LIVE gate model: each blocker appears with its fact and clears
with it, the seven pre-live checks, the confirmation's refusals (constant-time token compare),
and the circuit breaker's window, trip, cooldown and reset."""

from __future__ import annotations

import hmac

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import live_gates
from domain.live_gates import (
    PRELIVE_CHECK_NAMES,
    AccountFacts,
    BreakerSettings,
    CircuitBreaker,
    GateFacts,
    GateSettings,
    LiveConfirmation,
    PreliveCheck,
    PreliveResult,
    breaker_record_error,
    breaker_reset,
    check_confirmation,
    live_blockers,
    live_warnings,
    prelive_checks,
)

S = 1_000_000_000
ACCOUNT = "LIVE-001"
TOKEN = "token-0123456789"

SETTINGS = GateSettings(
    live_trading_enabled=True,
    live_enable_token_configured=True,
    live_account_id=ACCOUNT,
    admin_token_configured=True,
    missing_risk_limits=(),
    confirmation_ttl_ns=600 * S,
    prelive_max_age_ns=300 * S,
)
ACCOUNT_FACTS = AccountFacts(
    account_id=ACCOUNT, balance="100000", currency="INR", is_live=True, connected_ns=0
)
PASSED = PreliveResult(
    passed=True,
    checks=tuple(PreliveCheck(name=n, passed=True, details="ok") for n in PRELIVE_CHECK_NAMES),
    ran_ns=0,
)
ALL_CLEAR = GateFacts(
    account=ACCOUNT_FACTS,
    prelive=PASSED,
    confirmation=LiveConfirmation(account_id=ACCOUNT, confirmed_ns=0, expires_ns=600 * S),
    is_leader=True,
    bound_account_id=ACCOUNT,
)
BREAKER = BreakerSettings(max_errors=3, window_ns=60 * S, cooldown_ns=120 * S)


def blockers(settings: GateSettings = SETTINGS, facts: GateFacts = ALL_CLEAR, **kw: object):
    now = kw.pop("now_ns", 10 * S)
    for_arming = kw.pop("for_arming", True)
    return live_blockers(settings, facts, now_ns=now, for_arming=for_arming)  # type: ignore[arg-type]


def test_all_clear_has_no_blocker_for_arming_or_for_an_entry() -> None:
    assert blockers() == []
    assert blockers(for_arming=False) == []


@pytest.mark.parametrize(
    ("settings_change", "facts_change", "expected"),
    [
        ({"live_trading_enabled": False}, {}, "LIVE_TRADING_ENABLED is not set to true"),
        ({"live_enable_token_configured": False}, {}, "LIVE_ENABLE_TOKEN is not configured"),
        ({"live_account_id": None}, {}, "LIVE_ACCOUNT_ID is not configured"),
        ({"missing_risk_limits": ("MAX_DAILY_LOSS_PCT",)}, {}, "MAX_DAILY_LOSS_PCT is not"),
        ({"admin_token_configured": False}, {}, "No admin API token is configured"),
        ({}, {"account": None}, "Broker not connected (POST /execution/connect)"),
        ({}, {"connect_error": "timeout"}, "Broker not connected: timeout"),
        ({}, {"prelive": None}, "Pre-live check has never passed"),
        ({}, {"confirmation": None}, "UI LIVE confirmation not completed"),
        ({}, {"halt_reason": "DAILY_LOSS"}, "Kill switch is active (DAILY_LOSS)"),
        ({}, {"is_leader": False}, "This instance does not hold the leader lease"),
        ({}, {"drift": ("AAA: 10 vs 0",)}, "Reconciliation drift: AAA: 10 vs 0"),
        ({}, {"bound_account_id": "LIVE-OLD"}, "Account lock: this database trades account"),
        (
            {},
            {"breaker": CircuitBreaker(tripped_ns=1, detail="3 errors")},
            "Circuit breaker tripped: 3 errors",
        ),
        (
            {},
            {"account": msgspec.structs.replace(ACCOUNT_FACTS, is_live=False)},
            f"Broker account {ACCOUNT} is not a LIVE account",
        ),
    ],
)
def test_each_blocker_appears_with_its_fact_and_clears_with_it(
    settings_change: dict[str, object], facts_change: dict[str, object], expected: str
) -> None:
    settings = msgspec.structs.replace(SETTINGS, **settings_change)
    facts = msgspec.structs.replace(ALL_CLEAR, **facts_change)
    found = blockers(settings, facts)
    assert any(expected in b for b in found), found
    assert not any(expected in b for b in blockers())


def test_the_prelive_pass_ages_for_arming_only() -> None:
    assert blockers(now_ns=300 * S) == []
    [aged] = blockers(now_ns=301 * S)
    assert "older than LIVE_PRELIVE_MAX_AGE_S=300" in aged
    assert blockers(now_ns=301 * S, for_arming=False) == []


def test_the_confirmation_expires_at_its_expiry_for_arming_and_for_entries() -> None:
    assert blockers(now_ns=600 * S - 1, for_arming=False) == []
    [expired] = blockers(now_ns=600 * S, for_arming=False)
    assert expired.startswith("LIVE confirmation expired 0 s ago")


def test_a_confirmation_for_another_account_blocks() -> None:
    facts = msgspec.structs.replace(
        ALL_CLEAR,
        confirmation=LiveConfirmation(account_id="LIVE-OTHER", confirmed_ns=0, expires_ns=600 * S),
    )
    assert any("LIVE confirmation was for account LIVE-OTHER" in b for b in blockers(facts=facts))


def test_warnings_never_block_and_say_what_is_close() -> None:
    rehearsal = msgspec.structs.replace(SETTINGS, rehearsal=True)
    warnings = live_warnings(rehearsal, ALL_CLEAR, now_ns=590 * S)
    assert any(w.startswith("REHEARSAL") for w in warnings)
    assert "LIVE confirmation expires in 10 s" in warnings


# ------------------------------------------------------------------------------ pre-live
def test_prelive_runs_the_seven_checks_in_the_runbooks_order() -> None:
    result = prelive_checks(SETTINGS, ALL_CLEAR, now_ns=5 * S, connectivity_error=None)
    assert [c.name for c in result.checks] == list(PRELIVE_CHECK_NAMES)
    assert result.passed and result.ran_ns == 5 * S


@pytest.mark.parametrize(
    ("settings_change", "facts_change", "connectivity_error", "safety", "failed"),
    [
        ({"live_trading_enabled": False}, {}, None, (), "Config validation"),
        ({"missing_risk_limits": ("MAX_TRADES_PER_HOUR",)}, {}, None, (), "Risk settings"),
        ({}, {"account": None}, "refused", (), "Broker connectivity"),
        ({"live_account_id": "LIVE-XYZ"}, {}, None, (), "Account verification"),
        ({}, {"bound_account_id": "LIVE-OLD"}, None, (), "Account lock"),
        ({}, {"is_leader": False}, None, (), "Account lock"),
        ({}, {}, None, ("market data stale",), "Safety guard"),
        ({}, {"drift": ("AAA",)}, None, (), "Safety guard"),
        ({}, {"halt_reason": "MANUAL"}, None, (), "Kill switch"),
    ],
)
def test_each_prelive_check_fails_on_its_own_fact(
    settings_change: dict[str, object],
    facts_change: dict[str, object],
    connectivity_error: str | None,
    safety: tuple[str, ...],
    failed: str,
) -> None:
    result = prelive_checks(
        msgspec.structs.replace(SETTINGS, **settings_change),
        msgspec.structs.replace(ALL_CLEAR, **facts_change),
        now_ns=0,
        connectivity_error=connectivity_error,
        safety_problems=safety,
    )
    assert not result.passed
    assert failed in [c.name for c in result.checks if not c.passed]


# ------------------------------------------------------------------------------ confirmation
@pytest.mark.parametrize(
    ("phrase", "token", "account", "code"),
    [
        ("ENABLE LIVE", TOKEN, ACCOUNT, "BAD_PHRASE"),
        ("ENABLE LIVE TRADING", "wrong", ACCOUNT, "BAD_TOKEN"),
        ("ENABLE LIVE TRADING", TOKEN, "LIVE-999", "BAD_ACCOUNT"),
    ],
)
def test_confirmation_refusals_name_the_problem_never_the_token(
    phrase: str, token: str, account: str, code: str
) -> None:
    refusal = check_confirmation(
        SETTINGS, phrase=phrase, token=token, account_id=account, expected_token=TOKEN
    )
    assert refusal is not None and refusal.code == code
    assert TOKEN not in repr(refusal) and token not in refusal.message


def test_confirmation_is_refused_when_live_is_not_configured() -> None:
    refusal = check_confirmation(
        SETTINGS, phrase="ENABLE LIVE TRADING", token="", account_id=ACCOUNT, expected_token=None
    )
    assert refusal is not None and refusal.code == "NOT_CONFIGURED"


def test_the_token_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(live_gates.hmac, "compare_digest", recording)
    accepted = check_confirmation(
        SETTINGS,
        phrase="ENABLE LIVE TRADING",
        token=TOKEN,
        account_id=ACCOUNT,
        expected_token=TOKEN,
    )
    assert accepted is None
    assert calls == [(TOKEN.encode(), TOKEN.encode())]


# ------------------------------------------------------------------------------ breaker
def test_the_breaker_trips_on_the_nth_error_within_the_window() -> None:
    breaker = CircuitBreaker()
    for t in (0, 10 * S):
        breaker = breaker_record_error(breaker, BREAKER, now_ns=t, error="x")
        assert not breaker.tripped
    breaker = breaker_record_error(breaker, BREAKER, now_ns=59 * S, error="REJECTED last")
    assert breaker.tripped and breaker.tripped_ns == 59 * S
    assert breaker.detail == "3 broker errors or rejections within 60 s, the last: REJECTED last"


def test_errors_older_than_the_window_do_not_count() -> None:
    breaker = CircuitBreaker()
    for t in (0, 10 * S, 65 * S):
        breaker = breaker_record_error(breaker, BREAKER, now_ns=t, error="x")
    assert not breaker.tripped and breaker.error_times_ns == (10 * S, 65 * S)


def test_the_breaker_resets_only_after_the_cooldown() -> None:
    tripped = CircuitBreaker(error_times_ns=(1,), tripped_ns=100 * S, detail="d")
    same, refusal = breaker_reset(tripped, BREAKER, now_ns=219 * S)
    assert same is tripped and refusal == "the circuit breaker cools down for 1 s more"
    cleared, refusal = breaker_reset(tripped, BREAKER, now_ns=220 * S)
    assert refusal is None and cleared == CircuitBreaker()


@given(st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=30))
def test_the_breaker_trips_exactly_when_max_errors_fall_within_one_window(
    gaps_s: list[int],
) -> None:
    breaker = CircuitBreaker()
    times: list[int] = []
    now = 0
    for gap in gaps_s:
        now += gap * S
        times.append(now)
        breaker = breaker_record_error(breaker, BREAKER, now_ns=now, error="e")
        if breaker.tripped:
            break
    # Tripped iff some run of max_errors consecutive errors spans less than the window.
    k = BREAKER.max_errors
    expected = any(
        times[i + k - 1] - times[i] < BREAKER.window_ns for i in range(len(times) - k + 1)
    )
    assert breaker.tripped == expected
    if breaker.tripped:
        assert breaker.tripped_ns == times[-1]
