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
"""

from __future__ import annotations

import threading

from domain.enums import DenialCode, TradingState
from domain.messages import TradingStateChanged

__all__ = ["TradingGate"]


class TradingGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: TradingStateChanged | None = None

    def decide(self, state: TradingStateChanged) -> None:
        with self._lock:
            self._state = state

    def current(self) -> TradingStateChanged | None:
        with self._lock:
            return self._state

    def entry_denial(self) -> tuple[DenialCode, str] | None:
        """Why the kill switch's current decision stops an entry now, or None: the order
        actor's last gate and the broker gateway's re-check before an entry's call."""
        trading = self.current()
        if trading is None:
            return DenialCode.TRADING_PAUSED, "trading_state=unknown"
        if trading.state is TradingState.HALTED:
            return DenialCode.KILL_SWITCH_ACTIVE, f"halt_reason={trading.halt_reason}"
        if trading.state is TradingState.REDUCING:
            causes = ",".join(c.value for c in trading.pause_causes)
            return DenialCode.TRADING_PAUSED, f"pause_causes={causes}"
        if not trading.armed:
            return DenialCode.NOT_ARMED, f"mode={trading.mode.value}"
        return None
