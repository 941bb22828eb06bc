"""TradingGate in LIVE: the kill switch's decision carries the LIVE gate facts, and the last gate
evaluates them at the entry's own time (an entry one nanosecond past the confirmation's expiry
is refused before any timer notices)."""

from __future__ import annotations

import msgspec

from actors.trading_gate import LiveGateSnapshot, TradingGate
from domain.enums import DenialCode, Mode, TradingState
from domain.live_gates import LiveConfirmation
from domain.messages import TradingStateChanged
from tests.unit.test_live_gates import ALL_CLEAR, SETTINGS

EXPIRES_NS = ALL_CLEAR.confirmation.expires_ns  # type: ignore[union-attr]


def state(mode: Mode, *, armed: bool = True) -> TradingStateChanged:
    return TradingStateChanged(
        mode=mode,
        armed=armed,
        state=TradingState.ACTIVE,
        pause_causes=(),
        halt_reason=None,
        ts_event=1,
    )


def test_a_live_entry_is_refused_from_the_confirmations_expiry_on() -> None:
    gate = TradingGate()
    gate.decide(state(Mode.LIVE), LiveGateSnapshot(settings=SETTINGS, facts=ALL_CLEAR))
    assert gate.entry_denial(EXPIRES_NS - 1) is None
    denial = gate.entry_denial(EXPIRES_NS)
    assert denial is not None and denial[0] is DenialCode.LIVE_GATE
    assert denial[1].startswith("LIVE confirmation expired")


def test_live_without_gate_facts_is_refused_and_paper_does_not_need_them() -> None:
    gate = TradingGate()
    gate.decide(state(Mode.LIVE))
    assert gate.entry_denial(0) == (DenialCode.LIVE_GATE, "LIVE gate facts unknown")
    gate.decide(state(Mode.PAPER))
    assert gate.entry_denial(0) is None


def test_the_decision_swaps_state_and_facts_together() -> None:
    gate = TradingGate()
    renewed = msgspec.structs.replace(
        ALL_CLEAR,
        confirmation=LiveConfirmation(
            account_id="LIVE-001", confirmed_ns=0, expires_ns=2 * EXPIRES_NS
        ),
    )
    gate.decide(state(Mode.LIVE), LiveGateSnapshot(settings=SETTINGS, facts=ALL_CLEAR))
    gate.decide(state(Mode.LIVE), LiveGateSnapshot(settings=SETTINGS, facts=renewed))
    assert gate.entry_denial(EXPIRES_NS) is None
    assert gate.live() is not None and gate.live().facts is renewed  # type: ignore[union-attr]
