"""The LIVE gates: one model behind both runbooks' dialects (SOLAT ``/execution/...`` and
AITRAPP ``POST /mode``).

Pure: facts and settings in, sentences out. The kill switch actor owns the facts (what the
broker said at the last connect, the last pre-live run, the operator's confirmation, the
circuit breaker) and asks this module whether LIVE may be armed, and the order actor's last gate
asks it again before every LIVE entry with the time of that entry.

Two questions, one list of rules (``live_blockers``):
- **arming** (``for_arming=True``): everything must hold, including a pre-live pass younger
  than ``LIVE_PRELIVE_MAX_AGE_S``;
- **an entry while armed** (``for_arming=False``): everything that can change while armed must
  still hold (confirmation not expired, broker connected to the locked account, circuit breaker
  not tripped, kill switch inactive, leader held, no drift). The pre-live pass is not
  re-aged: it proves the set-up at arming time, and re-aging it would stop LIVE five minutes in.

Blockers are plain sentences an operator can act on; the runbook's own sentences are kept
word for word ("LIVE_TRADING_ENABLED is not set to true", "Pre-live check has never passed",
"UI LIVE confirmation not completed", ...). Warnings never block.

The circuit breaker: ``breaker_record_error`` counts broker errors and rejections in a sliding
window; ``max_errors`` of them trip it; it stays tripped until both the cooldown has passed and
an operator resets it (``breaker_reset``, refused before the cooldown).

The pre-live "Safety guard" also fails when the exchange holiday list does not reach today
(``holiday_list_blocker``; the caller passes what the scheduler knows).

No I/O, no clock: time comes in as ``now_ns``.
"""

from __future__ import annotations

import hmac
from datetime import date

import msgspec

from domain.clock import NANOS_PER_SECOND

__all__ = [
    "CONFIRM_PHRASE",
    "MODE_CONFIRM_PHRASE",
    "PRELIVE_CHECK_NAMES",
    "AccountFacts",
    "BreakerSettings",
    "CircuitBreaker",
    "ConfirmationRefusal",
    "GateFacts",
    "GateSettings",
    "LiveConfirmation",
    "PreliveCheck",
    "PreliveResult",
    "breaker_record_error",
    "breaker_reset",
    "check_confirmation",
    "holiday_list_blocker",
    "live_blockers",
    "live_warnings",
    "prelive_checks",
    "secret_equals",
]

# The SOLAT confirmation phrase (POST /execution/live/confirm) and the AITRAPP one (POST /mode).
CONFIRM_PHRASE = "ENABLE LIVE TRADING"
MODE_CONFIRM_PHRASE = "CONFIRM LIVE TRADING"

PRELIVE_CHECK_NAMES = (
    "Config validation",
    "Risk settings",
    "Broker connectivity",
    "Account verification",
    "Account lock",
    "Safety guard",
    "Kill switch",
)


class GateSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the configuration says (the runbook's environment variables), secrets reduced to
    "configured or not". ``missing_risk_limits`` names the mandatory limits not set explicitly
    (env or YAML): in LIVE a limit has no default."""

    live_trading_enabled: bool
    live_enable_token_configured: bool
    live_account_id: str | None
    admin_token_configured: bool
    missing_risk_limits: tuple[str, ...]
    confirmation_ttl_ns: int
    prelive_max_age_ns: int
    rehearsal: bool = False


class AccountFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker said at the last successful connect."""

    account_id: str
    balance: str
    currency: str
    is_live: bool
    connected_ns: int


class PreliveCheck(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    passed: bool
    details: str


class PreliveResult(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    checks: tuple[PreliveCheck, ...]
    ran_ns: int


class LiveConfirmation(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's confirmation (phrase, token, account id), valid until ``expires_ns``."""

    account_id: str
    confirmed_ns: int
    expires_ns: int
    who: str = "local"


class BreakerSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_errors: int
    window_ns: int
    cooldown_ns: int


class CircuitBreaker(msgspec.Struct, frozen=True, kw_only=True):
    """Recent broker errors (their times, newest last) and the trip, if any."""

    error_times_ns: tuple[int, ...] = ()
    tripped_ns: int | None = None
    detail: str = ""

    @property
    def tripped(self) -> bool:
        return self.tripped_ns is not None


class GateFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What is true now, as the kill switch actor knows it."""

    account: AccountFacts | None = None
    connect_error: str | None = None  # the last connect failed (or the broker went away)
    prelive: PreliveResult | None = None
    confirmation: LiveConfirmation | None = None
    breaker: CircuitBreaker = CircuitBreaker()
    halt_reason: str | None = None
    is_leader: bool = True
    drift: tuple[str, ...] = ()
    bound_account_id: str | None = None  # the account this database trades (account lock)


class ConfirmationRefusal(msgspec.Struct, frozen=True, kw_only=True):
    code: str  # BAD_PHRASE | BAD_TOKEN | BAD_ACCOUNT | NOT_CONFIGURED
    message: str


# ----------------------------------------------------------------------------- the gates
def live_blockers(
    settings: GateSettings, facts: GateFacts, *, now_ns: int, for_arming: bool
) -> list[str]:
    """Every reason LIVE may not be armed (``for_arming``) or an entry may not go out now."""
    blockers = _config_blockers(settings)
    blockers += _account_blockers(settings, facts)
    blockers += _prelive_blockers(settings, facts, now_ns=now_ns, for_arming=for_arming)
    blockers += _confirmation_blockers(facts, now_ns=now_ns)
    blockers += _safety_blockers(facts)
    return blockers


def live_warnings(settings: GateSettings, facts: GateFacts, *, now_ns: int) -> list[str]:
    """What an operator should know before arming, none of which blocks."""
    warnings: list[str] = []
    if settings.rehearsal:
        warnings.append("REHEARSAL: the broker is the paper venue presenting a LIVE account")
    confirmation = facts.confirmation
    if confirmation is not None and now_ns < confirmation.expires_ns:
        left_s = (confirmation.expires_ns - now_ns) / NANOS_PER_SECOND
        if left_s < 60:
            warnings.append(f"LIVE confirmation expires in {left_s:.0f} s")
    prelive = facts.prelive
    if prelive is not None and prelive.passed:
        age_s = (now_ns - prelive.ran_ns) / NANOS_PER_SECOND
        left_s = settings.prelive_max_age_ns / NANOS_PER_SECOND - age_s
        if 0 <= left_s < 60:
            warnings.append(f"Pre-live check pass expires in {left_s:.0f} s")
    if facts.breaker.error_times_ns and not facts.breaker.tripped:
        warnings.append(
            f"{len(facts.breaker.error_times_ns)} recent broker errors counted by the circuit "
            "breaker"
        )
    return warnings


def _config_blockers(settings: GateSettings) -> list[str]:
    blockers: list[str] = []
    if not settings.live_trading_enabled:
        blockers.append("LIVE_TRADING_ENABLED is not set to true")
    if not settings.live_enable_token_configured:
        blockers.append("LIVE_ENABLE_TOKEN is not configured")
    if not settings.live_account_id:
        blockers.append("LIVE_ACCOUNT_ID is not configured")
    blockers.extend(_risk_limit_blockers(settings))
    if not settings.admin_token_configured:
        blockers.append(
            "No admin API token is configured (http.token / VIGIL_ADMIN_TOKEN): LIVE cannot be "
            "armed on an API anyone on this machine can call"
        )
    return blockers


def _risk_limit_blockers(settings: GateSettings) -> list[str]:
    return [
        f"{name} is not configured (LIVE has no default for a risk limit)"
        for name in settings.missing_risk_limits
    ]


def _account_blockers(settings: GateSettings, facts: GateFacts) -> list[str]:
    if facts.connect_error is not None:
        return [f"Broker not connected: {facts.connect_error} (POST /execution/connect)"]
    account = facts.account
    if account is None:
        return ["Broker not connected (POST /execution/connect)"]
    blockers: list[str] = []
    if not account.is_live:
        blockers.append(f"Broker account {account.account_id} is not a LIVE account")
    if settings.live_account_id and account.account_id != settings.live_account_id:
        blockers.append(
            f"Broker account {account.account_id} does not match LIVE_ACCOUNT_ID "
            f"{settings.live_account_id}"
        )
    if facts.bound_account_id is not None and facts.bound_account_id != account.account_id:
        blockers.append(
            f"Account lock: this database trades account {facts.bound_account_id}, the broker "
            f"is connected to {account.account_id}"
        )
    return blockers


def _prelive_blockers(
    settings: GateSettings, facts: GateFacts, *, now_ns: int, for_arming: bool
) -> list[str]:
    prelive = facts.prelive
    if prelive is None:
        return ["Pre-live check has never passed"]
    if not prelive.passed:
        failed = ", ".join(check.name for check in prelive.checks if not check.passed)
        return [f"Pre-live check failed: {failed} (POST /execution/prelive/run)"]
    age_ns = now_ns - prelive.ran_ns
    if for_arming and age_ns > settings.prelive_max_age_ns:
        return [
            f"Pre-live check passed {age_ns / NANOS_PER_SECOND:.0f} s ago, older than "
            f"LIVE_PRELIVE_MAX_AGE_S={settings.prelive_max_age_ns / NANOS_PER_SECOND:.0f}: run "
            "it again (POST /execution/prelive/run)"
        ]
    return []


def _confirmation_blockers(facts: GateFacts, *, now_ns: int) -> list[str]:
    confirmation = facts.confirmation
    if confirmation is None:
        return ["UI LIVE confirmation not completed"]
    if now_ns >= confirmation.expires_ns:
        ago_s = (now_ns - confirmation.expires_ns) / NANOS_PER_SECOND
        return [
            f"LIVE confirmation expired {ago_s:.0f} s ago: confirm again "
            "(POST /execution/live/confirm)"
        ]
    if facts.account is not None and confirmation.account_id != facts.account.account_id:
        return [
            f"LIVE confirmation was for account {confirmation.account_id}, the broker is "
            f"connected to {facts.account.account_id}"
        ]
    return []


def _safety_blockers(facts: GateFacts) -> list[str]:
    blockers: list[str] = []
    if facts.halt_reason is not None:
        blockers.append(
            f"Kill switch is active ({facts.halt_reason}): POST /execution/kill-switch/reset"
        )
    if facts.breaker.tripped:
        blockers.append(
            f"Circuit breaker tripped: {facts.breaker.detail} "
            "(POST /execution/circuit-breaker/reset after the cooldown)"
        )
    if not facts.is_leader:
        blockers.append("This instance does not hold the leader lease")
    blockers.extend(f"Reconciliation drift: {sentence}" for sentence in facts.drift)
    return blockers


# ----------------------------------------------------------------------------- pre-live
def prelive_checks(
    settings: GateSettings,
    facts: GateFacts,
    *,
    now_ns: int,
    connectivity_error: str | None,
    safety_problems: tuple[str, ...] = (),
) -> PreliveResult:
    """The SOLAT runbook's seven checks, in its order.

    Args:
        facts: with ``account`` from the connect made for this run (``connectivity_error`` set
            when it failed).
        safety_problems: what else stops safe trading now (stale heartbeats, pauses other
            than an operator's), named by the caller.
    """
    risk_problems = _risk_limit_blockers(settings)
    config_problems = [b for b in _config_blockers(settings) if b not in risk_problems]
    account = facts.account
    checks = [
        PreliveCheck(
            name="Config validation",
            passed=not config_problems,
            details="; ".join(config_problems) or "LIVE settings present",
        ),
        PreliveCheck(
            name="Risk settings",
            passed=not risk_problems,
            details="; ".join(risk_problems) or "every mandatory risk limit is set",
        ),
        PreliveCheck(
            name="Broker connectivity",
            passed=connectivity_error is None and account is not None,
            details=connectivity_error or "connected",
        ),
    ]
    account_problems = ["not connected"] if account is None else _account_blockers(settings, facts)
    lock_problems = [b for b in account_problems if b.startswith("Account lock")]
    if not facts.is_leader:
        lock_problems.append("this instance does not hold the leader lease")
    verification_problems = [b for b in account_problems if not b.startswith("Account lock")]
    checks.append(
        PreliveCheck(
            name="Account verification",
            passed=not verification_problems,
            details="; ".join(verification_problems)
            or f"account {account.account_id if account else '?'} is LIVE and matches",
        )
    )
    checks.append(
        PreliveCheck(
            name="Account lock",
            passed=not lock_problems,
            details="; ".join(lock_problems) or "this instance holds the account",
        )
    )
    safety = list(safety_problems)
    if facts.breaker.tripped:
        safety.append(f"circuit breaker tripped: {facts.breaker.detail}")
    safety.extend(f"reconciliation drift: {sentence}" for sentence in facts.drift)
    checks.append(
        PreliveCheck(
            name="Safety guard",
            passed=not safety,
            details="; ".join(safety) or "no drift, breaker closed, heartbeats fresh",
        )
    )
    checks.append(
        PreliveCheck(
            name="Kill switch",
            passed=facts.halt_reason is None,
            details="inactive" if facts.halt_reason is None else f"active: {facts.halt_reason}",
        )
    )
    return PreliveResult(
        passed=all(check.passed for check in checks), checks=tuple(checks), ran_ns=now_ns
    )


def holiday_list_blocker(
    *, today: date, holidays_known_through: date | None, config_key: str
) -> str | None:
    """A pre-live "Safety guard" problem when the exchange holiday list does not reach today
    (every weekday then counts as a session, so a holiday would be traded as one); None when
    it does or nothing is judged. The warning ahead of it is the scheduler's (``/status``)."""
    if holidays_known_through is None or today <= holidays_known_through:
        return None
    return (
        f"exchange holiday list ends {holidays_known_through}: today {today} may be a holiday; "
        f"set {config_key} to the exchange's published holidays for {today.year}"
    )


# ----------------------------------------------------------------------------- confirmation
def secret_equals(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (bytes of their UTF-8)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_confirmation(
    settings: GateSettings,
    *,
    phrase: str,
    token: str,
    account_id: str,
    expected_token: str | None,
) -> ConfirmationRefusal | None:
    """Why a confirmation is refused, or None. The token is compared in constant time and
    never appears in the answer."""
    if not settings.live_trading_enabled or expected_token is None:
        return ConfirmationRefusal(
            code="NOT_CONFIGURED",
            message="LIVE is not configured: LIVE_TRADING_ENABLED and LIVE_ENABLE_TOKEN are "
            "required",
        )
    # Every comparison is made, so the answer's timing says nothing about which one failed.
    phrase_ok = phrase == CONFIRM_PHRASE
    token_ok = secret_equals(token, expected_token)
    account_ok = bool(settings.live_account_id) and account_id == settings.live_account_id
    if not phrase_ok:
        return ConfirmationRefusal(
            code="BAD_PHRASE", message=f'the phrase must be "{CONFIRM_PHRASE}"'
        )
    if not token_ok:
        return ConfirmationRefusal(
            code="BAD_TOKEN", message="the token does not match LIVE_ENABLE_TOKEN"
        )
    if not account_ok:
        return ConfirmationRefusal(
            code="BAD_ACCOUNT", message="the account id does not match LIVE_ACCOUNT_ID"
        )
    return None


# ----------------------------------------------------------------------------- breaker
def breaker_record_error(
    breaker: CircuitBreaker, settings: BreakerSettings, *, now_ns: int, error: str
) -> CircuitBreaker:
    """Count one broker error or rejection; trip when ``max_errors`` fall within the window.
    A tripped breaker stays tripped (and keeps counting nothing new)."""
    if breaker.tripped:
        return breaker
    recent = tuple(t for t in breaker.error_times_ns if now_ns - t < settings.window_ns)
    recent = (*recent, now_ns)[-settings.max_errors :]
    if len(recent) < settings.max_errors:
        return CircuitBreaker(error_times_ns=recent)
    window_s = settings.window_ns / NANOS_PER_SECOND
    return CircuitBreaker(
        error_times_ns=recent,
        tripped_ns=now_ns,
        detail=f"{len(recent)} broker errors or rejections within {window_s:.0f} s, the last: "
        f"{error}",
    )


def breaker_reset(
    breaker: CircuitBreaker, settings: BreakerSettings, *, now_ns: int
) -> tuple[CircuitBreaker, str | None]:
    """The breaker after an operator's reset, and why the reset is refused (or None)."""
    if breaker.tripped_ns is None:
        return CircuitBreaker(), None
    ready_ns = breaker.tripped_ns + settings.cooldown_ns
    if now_ns < ready_ns:
        left_s = (ready_ns - now_ns) / NANOS_PER_SECOND
        return breaker, f"the circuit breaker cools down for {left_s:.0f} s more"
    return CircuitBreaker(), None
