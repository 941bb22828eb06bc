"""LiveGateState: the LIVE gate facts the kill switch actor owns, and the decisions on them.

Not an actor: a plain class the ``KillSwitchActor`` owns and calls on its own thread (the way
the order actor owns its ``OrderReconciler``). It keeps what ``domain.live_gates`` needs and the
kill switch does not already know: the account the broker reported at the last connect (or the
connect's error), the last pre-live result, the operator's LIVE confirmation, the circuit
breaker, leadership and the account this database is bound to. The kill switch adds what it
owns itself (the HALT, the RECONCILE_DRIFT pause) when it asks for ``facts``.

Nothing here does I/O or reads a clock: the actor passes ``now_ns`` and stores what this class
decides (the breaker and the bound account in ``control_state``, the audit rows in
``audit_log``). The token is read from the configuration once, compared in constant time by
``domain.live_gates.check_confirmation``, and never kept anywhere else, returned or shown.

Restarts: the confirmation lives only in this object, so a new process (and, by choice, also a
supervisor restart of the kill switch inside the same process) starts with none: LIVE is never
re-armed by a restart, whatever was stored. The breaker and the bound account are stored, so a
restart cannot loosen them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from domain.clock import NANOS_PER_SECOND
from domain.enums import Mode
from domain.live_gates import (
    AccountFacts,
    BreakerSettings,
    CircuitBreaker,
    GateFacts,
    GateSettings,
    LiveConfirmation,
    PreliveResult,
    breaker_record_error,
    breaker_reset,
    check_confirmation,
    live_blockers,
    live_warnings,
    prelive_checks,
)
from domain.messages import AuditEntry, ConfirmOutcome, LiveGatesReport, OperatorRef

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from domain.config import EngineConfig, LiveGateConfig

__all__ = [
    "BOUND_ACCOUNT_KEY",
    "BREAKER_KEY",
    "ENGINE",
    "LiveGateState",
    "breaker_settings_from",
    "gate_settings_from",
]

# control_state keys
BREAKER_KEY = "circuit_breaker"
BOUND_ACCOUNT_KEY = "bound_account_id"
# Who the engine's own decisions are audited as.
ENGINE = OperatorRef(who="engine", address="in-process")


def gate_settings_from(live: LiveGateConfig, config: EngineConfig | None = None) -> GateSettings:
    """The configuration as the gates see it, secrets reduced to "configured or not"."""
    if config is None:
        missing = ("LIVE_MAX_ORDER_SIZE",) if live.live_max_order_size is None else ()
        admin = False
        rehearsal = False
    else:
        missing = config.missing_live_risk_limits()
        admin = config.http.token is not None or bool(config.http.tokens)
        rehearsal = config.rehearsal
    return GateSettings(
        live_trading_enabled=live.live_trading_enabled,
        live_enable_token_configured=live.live_enable_token is not None
        and bool(live.live_enable_token.get_secret_value()),
        live_account_id=live.live_account_id,
        admin_token_configured=admin,
        missing_risk_limits=missing,
        confirmation_ttl_ns=int(live.live_confirmation_ttl_s * NANOS_PER_SECOND),
        prelive_max_age_ns=int(live.live_prelive_max_age_s * NANOS_PER_SECOND),
        rehearsal=rehearsal,
    )


def breaker_settings_from(config: EngineConfig | None) -> BreakerSettings:
    if config is None:
        return BreakerSettings(
            max_errors=5, window_ns=60 * NANOS_PER_SECOND, cooldown_ns=300 * NANOS_PER_SECOND
        )
    breaker = config.circuit_breaker
    return BreakerSettings(
        max_errors=breaker.max_errors,
        window_ns=int(breaker.window_s * NANOS_PER_SECOND),
        cooldown_ns=int(breaker.cooldown_s * NANOS_PER_SECOND),
    )


class LiveGateState:
    def __init__(self, live: LiveGateConfig, config: EngineConfig | None = None) -> None:
        self.settings = gate_settings_from(live, config)
        self.breaker_settings = breaker_settings_from(config)
        # The one place the token lives in memory; never returned, logged or snapshotted.
        token = live.live_enable_token
        self._expected_token = token.get_secret_value() if token is not None else None
        # The venue presents a LIVE-type account (rehearsal; later a real broker's account).
        self.live_account_configured = config.rehearsal if config is not None else False
        self.account: AccountFacts | None = None
        self.connect_error: str | None = None
        self.prelive: PreliveResult | None = None
        self.confirmation: LiveConfirmation | None = None
        self.breaker = CircuitBreaker()
        self.is_leader = False  # until the leader actor says so
        self.bound_account_id: str | None = None
        # The sentence announced when an armed LIVE engine stopped opening positions (logged
        # and audited once); None while entries flow or the engine is not armed in LIVE.
        self.announced_stop: str | None = None

    # ------------------------------------------------------------------ FACTS
    @property
    def account_is_live(self) -> bool:
        """Arming in PAPER would send entries to a LIVE-type account: refused."""
        return self.live_account_configured or (self.account is not None and self.account.is_live)

    def facts(self, *, halt_reason: str | None, drift: tuple[str, ...]) -> GateFacts:
        return GateFacts(
            account=self.account,
            connect_error=self.connect_error,
            prelive=self.prelive,
            confirmation=self.confirmation,
            breaker=self.breaker,
            halt_reason=halt_reason,
            is_leader=self.is_leader,
            drift=drift,
            bound_account_id=self.bound_account_id,
        )

    def arming_blockers(self, facts: GateFacts, now_ns: int) -> list[str]:
        return live_blockers(self.settings, facts, now_ns=now_ns, for_arming=True)

    def entry_blockers(self, facts: GateFacts, now_ns: int) -> list[str]:
        return live_blockers(self.settings, facts, now_ns=now_ns, for_arming=False)

    def warnings(self, facts: GateFacts, now_ns: int) -> list[str]:
        return live_warnings(self.settings, facts, now_ns=now_ns)

    def confirmation_left_s(self, now_ns: int) -> float:
        if self.confirmation is None or now_ns >= self.confirmation.expires_ns:
            return 0.0
        return (self.confirmation.expires_ns - now_ns) / NANOS_PER_SECOND

    def entries_stopped(
        self, facts: GateFacts, *, mode: Mode, armed: bool, now_ns: int
    ) -> str | None:
        """Armed in LIVE but a gate lapsed: the sentences why (exits go on)."""
        if not (armed and mode is Mode.LIVE):
            return None
        blockers = self.entry_blockers(facts, now_ns)
        return "; ".join(blockers) if blockers else None

    def note_stop(self, facts: GateFacts, *, mode: Mode, armed: bool, now_ns: int) -> str | None:
        """Track the announced stop: "stopped" when entries just stopped (say it once),
        "resumed" when an announced stop is over while still armed in LIVE, else None."""
        stopped = self.entries_stopped(facts, mode=mode, armed=armed, now_ns=now_ns)
        if stopped is not None and self.announced_stop is None:
            self.announced_stop = stopped
            return "stopped"
        if stopped is None and self.announced_stop is not None:
            self.announced_stop = None
            return "resumed" if armed and mode is Mode.LIVE else None
        return None

    def report(self, facts: GateFacts, *, mode: Mode, armed: bool, now_ns: int) -> LiveGatesReport:
        blockers = self.arming_blockers(facts, now_ns)
        confirmation = self.confirmation
        return LiveGatesReport(
            mode=mode,
            armed=armed,
            rehearsal=self.settings.rehearsal,
            allowed=not blockers,
            blockers=tuple(blockers),
            warnings=tuple(self.warnings(facts, now_ns)),
            account=self.account,
            prelive=self.prelive,
            confirmation_expires_ns=confirmation.expires_ns if confirmation else None,
            breaker=self.breaker,
            live_entries_stopped=self.entries_stopped(facts, mode=mode, armed=armed, now_ns=now_ns),
            ts_event=now_ns,
        )

    def update_metrics(
        self, metrics: EngineMetrics, facts: GateFacts, *, mode: Mode, armed: bool, now_ns: int
    ) -> None:
        live_armed = armed and mode is Mode.LIVE
        stopped = self.entries_stopped(facts, mode=mode, armed=armed, now_ns=now_ns)
        metrics.live_armed.set(1 if live_armed else 0)
        metrics.live_confirmation_seconds_left.set(self.confirmation_left_s(now_ns))
        metrics.circuit_breaker_tripped.set(1 if self.breaker.tripped else 0)
        metrics.live_gate_blockers.set(len(self.arming_blockers(facts, now_ns)))
        metrics.live_entries_stopped.set(1 if stopped is not None else 0)

    def load(self, stored_breaker: str | None, stored_bound: str | None) -> None:
        if stored_breaker:
            try:
                stored = msgspec.json.decode(stored_breaker, type=CircuitBreaker)
            except msgspec.DecodeError as error:
                # Unreadable: the tighter reading (tripped, an operator resets it).
                stored = CircuitBreaker(
                    tripped_ns=0, detail=f"stored circuit breaker state unreadable ({error})"
                )
            if stored.tripped:
                self.breaker = stored  # a stored trip survives any restart
        if stored_bound and self.bound_account_id is None:
            self.bound_account_id = stored_bound

    # ------------------------------------------------------------------ DECISIONS
    def record_connect(self, account: AccountFacts | None, error: str | None) -> str | None:
        """Take a connect's outcome. Returns the account id to bind this database to (the first
        successful connect to a LIVE account), or None."""
        if account is None or error is not None:
            self.connect_error = error or "the broker reported no account"
            return None
        self.account = account
        self.connect_error = None
        if account.is_live and self.bound_account_id is None:
            return account.account_id
        return None

    def run_prelive(
        self,
        facts: GateFacts,
        *,
        now_ns: int,
        connectivity_error: str | None,
        safety_problems: tuple[str, ...],
    ) -> PreliveResult:
        self.prelive = prelive_checks(
            self.settings,
            facts,
            now_ns=now_ns,
            connectivity_error=connectivity_error,
            safety_problems=safety_problems,
        )
        return self.prelive

    def confirm(
        self, *, phrase: str, token: str, account_id: str, who: str, now_ns: int
    ) -> ConfirmOutcome:
        refusal = check_confirmation(
            self.settings,
            phrase=phrase,
            token=token,
            account_id=account_id,
            expected_token=self._expected_token,
        )
        if refusal is not None:
            return ConfirmOutcome(accepted=False, code=refusal.code, message=refusal.message)
        ttl_ns = self.settings.confirmation_ttl_ns
        self.confirmation = LiveConfirmation(
            account_id=account_id, confirmed_ns=now_ns, expires_ns=now_ns + ttl_ns, who=who
        )
        return ConfirmOutcome(
            accepted=True,
            message=f"LIVE confirmed for account {account_id}",
            expires_in_seconds=ttl_ns / NANOS_PER_SECOND,
        )

    def record_error(self, error: str, now_ns: int) -> bool:
        """Count one broker error; True when this one tripped the breaker."""
        was_tripped = self.breaker.tripped
        self.breaker = breaker_record_error(
            self.breaker, self.breaker_settings, now_ns=now_ns, error=error
        )
        return self.breaker.tripped and not was_tripped

    def reset_breaker(self, now_ns: int) -> tuple[CircuitBreaker, str | None]:
        """The breaker after a reset and why the reset is refused (not applied: the caller
        stores it first)."""
        return breaker_reset(self.breaker, self.breaker_settings, now_ns=now_ns)

    # ------------------------------------------------------------------ AUDIT
    def audit(
        self,
        action: str,
        outcome: str,
        by: OperatorRef,
        *,
        now_ns: int,
        mode: Mode,
        detail: str = "",
        blockers: tuple[str, ...] | list[str] = (),
    ) -> AuditEntry:
        return AuditEntry(
            ts_ns=now_ns,
            who=by.who,
            address=by.address,
            action=action,
            outcome=outcome,
            detail=detail,
            blockers=tuple(blockers),
            mode=mode.value,
            rehearsal=self.settings.rehearsal,
        )

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        """What /debug/actors shows: facts, never the token."""
        return {
            "rehearsal": self.settings.rehearsal,
            "account": msgspec.to_builtins(self.account) if self.account else None,
            "connect_error": self.connect_error,
            "prelive_passed": self.prelive.passed if self.prelive else None,
            "prelive_ran_ns": self.prelive.ran_ns if self.prelive else None,
            "confirmation_account_id": self.confirmation.account_id if self.confirmation else None,
            "confirmation_seconds_left": self.confirmation_left_s(now_ns),
            "circuit_breaker": msgspec.to_builtins(self.breaker),
            "is_leader": self.is_leader,
            "bound_account_id": self.bound_account_id,
            "live_entries_stopped": self.announced_stop,
        }
