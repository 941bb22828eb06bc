"""TradingGate: the kill switch's decided trading state, readable by the order actor's last gate.

The kill switch is the only writer: it calls ``decide`` inside its own handler, before it
answers or publishes, so once an operator's pause, disarm or a HALT has been acknowledged no
order can pass the gate, whatever was already queued in the order actor's inbox. The order
actor reads ``current`` right before each broker call instead of a copy that a
``TradingStateChanged`` message may not yet have refreshed.

This is the one piece of state two actors share; it is a single immutable value swapped under a
lock, so a reader sees either the old decision or the new one, never a mix. Until the kill
switch decides for the first time it is ``None``, which the gate treats as "entries not
allowed".

In LIVE the decision carries the LIVE gate facts too (``LiveGateSnapshot``: settings and facts,
no secrets), and ``entry_denial(now_ns)`` evaluates ``live_blockers(for_arming=False)`` at the
entry's own time: an entry sent one nanosecond after the confirmation expires is refused here,
before the kill switch's timer has noticed the expiry.
"""

from __future__ import annotations

import threading

import msgspec

from domain.enums import DenialCode, Mode, TradingState
from domain.live_gates import GateFacts, GateSettings, live_blockers
from domain.messages import TradingStateChanged

__all__ = ["LiveGateSnapshot", "TradingGate"]


class LiveGateSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The LIVE gate facts as the kill switch decided them (no secrets)."""

    settings: GateSettings
    facts: GateFacts


class TradingGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decision: tuple[TradingStateChanged | None, LiveGateSnapshot | None] = (None, None)

    def decide(self, state: TradingStateChanged, live: LiveGateSnapshot | None = None) -> None:
        with self._lock:
            self._decision = (state, live)

    def current(self) -> TradingStateChanged | None:
        with self._lock:
            return self._decision[0]

    def live(self) -> LiveGateSnapshot | None:
        with self._lock:
            return self._decision[1]

    def entry_denial(self, now_ns: int) -> tuple[DenialCode, str] | None:
        """Why the kill switch's current decision stops an entry made at ``now_ns``, or None:
        the order actor's last gate and the broker gateway's re-check before an entry's call."""
        with self._lock:
            trading, live = self._decision
        if trading is None:
            return DenialCode.TRADING_PAUSED, "trading_state=unknown"
        if trading.state is TradingState.HALTED:
            return DenialCode.KILL_SWITCH_ACTIVE, f"halt_reason={trading.halt_reason}"
        if trading.state is TradingState.REDUCING:
            causes = ",".join(c.value for c in trading.pause_causes)
            return DenialCode.TRADING_PAUSED, f"pause_causes={causes}"
        if not trading.armed:
            return DenialCode.NOT_ARMED, f"mode={trading.mode.value}"
        if trading.mode is Mode.LIVE:
            if live is None:
                return DenialCode.LIVE_GATE, "LIVE gate facts unknown"
            blockers = live_blockers(live.settings, live.facts, now_ns=now_ns, for_arming=False)
            if blockers:
                return DenialCode.LIVE_GATE, blockers[0]
        return None
