"""The broker session's health, kept by the order actor: the ``BROKER_AUTH`` entry pause.

A broker that stops accepting our credentials (Kite's access token expires at 06:00 every
day) cannot place, cancel or list anything until an operator logs in again. The adapter says
so through the report sink (``BrokerSessionChanged``), and the broker gateway's outcomes say
so for a request it refused (``BROKER_AUTH_EXPIRED``). From the first sign until the adapter
reports a working session again, entries are paused with ``BROKER_AUTH`` and a detail that
tells the operator what to do; nothing is retried in a loop (the adapter refuses locally
until it has a new session, reconciliation keeps its own schedule).

The pause is a condition cause: the kill switch does not store it, so it is told again
whenever the kill switch's published state lacks it (a restarted kill switch), and cleared
only by this owner. Logged CRITICAL once per episode, INFO when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adapters.logs import log_event
from domain.enums import PauseCause
from domain.messages import BrokerSessionChanged, PauseEntries, ResumeEntries, TradingStateChanged

__all__ = ["AUTH_EXPIRED_PREFIX", "BrokerSessionWatch"]

logger = logging.getLogger(__name__)

AUTH_EXPIRED_PREFIX = "BROKER_AUTH_EXPIRED"
"""How the broker gateway's failure text starts for a request refused for our credentials."""


class BrokerSessionWatch:
    """Whether the broker session works, and the pause that follows from it.

    Args:
        tell_kill_switch: sends a command to the kill switch; False if it could not.
    """

    def __init__(self, tell_kill_switch: Callable[[object], bool]) -> None:
        self._tell = tell_kill_switch
        self.problem: str | None = None  # what is wrong and what to do; None: session works

    def on_session_changed(
        self, changed: BrokerSessionChanged, trading: TradingStateChanged | None
    ) -> None:
        if not changed.valid:
            self.session_refused(changed.detail, trading)
            return
        if self.problem is not None:
            log_event(
                logger,
                "BROKER_SESSION",
                f"broker session works again: {changed.detail}",
                detail=changed.detail,
            )
        self.problem = None
        self.sync(trading)

    def session_refused(self, detail: str, trading: TradingStateChanged | None) -> None:
        if self.problem is None:
            log_event(
                logger,
                "BROKER_SESSION",
                f"broker refused our credentials; entries paused until a new session: {detail}",
                level=logging.CRITICAL,
                detail=detail,
            )
        self.problem = detail
        self.sync(trading)

    def sync(self, trading: TradingStateChanged | None) -> None:
        """Tell the kill switch what it lacks: the pause while the session is refused, the
        resume once it works and the pause is still shown."""
        shown = trading is not None and PauseCause.BROKER_AUTH in trading.pause_causes
        if self.problem is not None and not shown:
            if not self._tell(PauseEntries(cause=PauseCause.BROKER_AUTH, detail=self.problem)):
                logger.warning("could not tell the kill switch to pause on BROKER_AUTH; retrying")
        elif self.problem is None and shown:
            self._tell(ResumeEntries(cause=PauseCause.BROKER_AUTH))
