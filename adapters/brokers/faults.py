"""A broker port decorator that loses calls the way a network does (chaos drills and tests).

Between the engine and a real broker, a request can be lost on the way (the broker never sees
it) or its answer can be lost on the way back (the broker acted, we do not know). Both surface
as ``BrokerUnavailable``. ``FaultyBroker`` wraps any broker port and, when armed, produces
exactly those two failures for chosen calls; everything else passes straight through. It can
also make the broker refuse chosen calls (``BrokerRejected``, the broker never acts), to drill a
broker that keeps saying no, and hold a call until the test releases it (a broker that is slow
to answer: whatever the caller has queued meanwhile stays queued, deterministically). And it can
keep chosen orders' fills out of ``list_fills`` until told to show them: a broker whose trade
list shows an execution late (a REST history behind its stream). And it can answer chosen
calls with a 429 (``BrokerRateLimited``, the broker never acts), to drill the gateway's
back-off and retry. And it can refuse every call for our credentials until told otherwise
(``BrokerAuthExpired``, the broker never acts): Kite's access token expiring at 06:00.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from adapters.brokers.base import (
    BrokerAuthExpired,
    BrokerPort,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
)

__all__ = ["FaultyBroker", "HeldCall"]

Loss = Literal["request", "response", "refused", "rate_limited"]
_FAULTABLE = (
    "submit_order",
    "cancel_order",
    "modify_order",
    "list_orders",
    "list_open_orders",
    "list_fills",
)


class HeldCall:
    """A call parked inside the broker until ``release()`` (or ``max_hold_s``, so a failing
    test cannot hang its caller forever)."""

    def __init__(self, max_hold_s: float) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        self._max_hold_s = max_hold_s

    def release(self) -> None:
        self._released.set()

    def _park(self) -> None:
        self.entered.set()
        self._released.wait(self._max_hold_s)


class FaultyBroker:
    def __init__(self, inner: BrokerPort) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._armed: dict[str, list[Loss]] = {}
        self._held: dict[str, list[HeldCall]] = {}
        self.lost: list[tuple[str, Loss, tuple[Any, ...]]] = []
        self._hidden_fills: set[str] = set()
        self._retry_after_s: float | None = None
        self._credentials_refused: str | None = None

    def refuse_credentials(self, detail: str = "access token expired (fault drill)") -> None:
        """Make every faultable call fail with ``BrokerAuthExpired`` until
        ``accept_credentials``; the broker never sees them."""
        with self._lock:
            self._credentials_refused = detail

    def accept_credentials(self) -> None:
        with self._lock:
            self._credentials_refused = None

    def hide_fills(self, client_order_id: str) -> None:
        """Leave the fills of ``client_order_id`` out of ``list_fills`` until ``show_fills``."""
        with self._lock:
            self._hidden_fills.add(client_order_id)

    def show_fills(self, client_order_id: str) -> None:
        with self._lock:
            self._hidden_fills.discard(client_order_id)

    def lose_next(self, method: str, *, loss: Loss = "request", times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``BrokerUnavailable``;
        ``request``: the broker never sees them; ``response``: it does, we never hear."""
        if method not in _FAULTABLE:
            raise ValueError(f"cannot fault {method!r}; faultable: {', '.join(_FAULTABLE)}")
        with self._lock:
            self._armed.setdefault(method, []).extend([loss] * times)

    def refuse_next(self, method: str, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``BrokerRejected``; the broker
        never sees them."""
        if method not in _FAULTABLE:
            raise ValueError(f"cannot fault {method!r}; faultable: {', '.join(_FAULTABLE)}")
        with self._lock:
            self._armed.setdefault(method, []).extend(["refused"] * times)

    def rate_limit_next(
        self, method: str, *, times: int = 1, retry_after_s: float | None = None
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``BrokerRateLimited`` (with
        ``retry_after_s``, None: the broker does not say); the broker never sees them."""
        if method not in _FAULTABLE:
            raise ValueError(f"cannot fault {method!r}; faultable: {', '.join(_FAULTABLE)}")
        with self._lock:
            self._armed.setdefault(method, []).extend(["rate_limited"] * times)
            self._retry_after_s = retry_after_s

    def hold_next(self, method: str, *, max_hold_s: float = 30.0) -> HeldCall:
        """Park the next call of ``method`` (on its caller's thread) until the returned
        ``HeldCall`` is released; then it goes on as usual. ``entered`` is set once parked."""
        if method not in _FAULTABLE:
            raise ValueError(f"cannot hold {method!r}; holdable: {', '.join(_FAULTABLE)}")
        held = HeldCall(max_hold_s)
        with self._lock:
            self._held.setdefault(method, []).append(held)
        return held

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in _FAULTABLE:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                waiting = self._held.get(name)
                held = waiting.pop(0) if waiting else None
            if held is not None:
                held._park()
            with self._lock:
                refused_credentials = self._credentials_refused
                pending = self._armed.get(name)
                loss = pending.pop(0) if pending and refused_credentials is None else None
            if refused_credentials is not None:
                raise BrokerAuthExpired(
                    f"{name} refused for our credentials: {refused_credentials}"
                )
            if loss is None:
                result = attribute(*args, **kwargs)
                if name == "list_fills" and self._hidden_fills:
                    with self._lock:
                        hidden = set(self._hidden_fills)
                    result = [fill for fill in result if fill.client_order_id not in hidden]
                return result
            self.lost.append((name, loss, args))
            if loss == "refused":
                raise BrokerRejected(f"BROKER_REFUSED: {name} refused (fault drill)")
            if loss == "rate_limited":
                raise BrokerRateLimited(
                    f"RATE_LIMITED: {name} refused for the rate limit (fault drill)",
                    retry_after_s=self._retry_after_s,
                )
            if loss == "response":
                attribute(*args, **kwargs)
            raise BrokerUnavailable(f"BROKER_TIMEOUT: {name} {loss} lost (fault drill)")

        return call
