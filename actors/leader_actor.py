"""LeaderActor: holds or renews the database leader lease and publishes ``LeadershipChanged``.

Accepts: ``TimerFired`` (renews when due). Publishes: ``LeadershipChanged`` to its subscribers
whenever leadership or the epoch changes, and again on expiry without renewal.

The lease is held by this process's incarnation (``lease_holder``: the instance_id plus a random
suffix), not by the instance_id: a second process started with the same instance_id (a copied
profile, a restart while the old process is only stopped, not dead) finds the lease held by
another incarnation and stands by, saying so, instead of leading at the same epoch.

The lease is a row with a fencing epoch (``adapters.storage.repositories.LeaseRepository``):
every order row records the epoch it was written under, and the order insert itself refuses a
stale epoch, so a deposed leader cannot send even if this actor is slow to notice. A database
error while renewing counts as "not renewed": leadership lapses at the lease's expiry. On stop,
the lease is released so a standby can take over at once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from actors.base import VigilActor
from adapters.logs import ErrorRepeats, log_event
from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.messages import LeadershipChanged, RepublishState, TimerFired

if TYPE_CHECKING:
    from adapters.metrics import EngineMetrics
    from adapters.storage.database import Database
    from domain.config import LeaderConfig

__all__ = ["INCARNATION_SEPARATOR", "LeaderActor", "new_lease_holder"]

INCARNATION_SEPARATOR = "#"


def new_lease_holder(instance_id: str) -> str:
    """This process's lease identity: the configured name plus a random incarnation id."""
    return f"{instance_id}{INCARNATION_SEPARATOR}{secrets.token_hex(4)}"


logger = logging.getLogger(__name__)


class LeaderActor(VigilActor):
    def __init__(
        self,
        *,
        database: Database,
        metrics: EngineMetrics,
        instance_id: str,
        lease_holder: str,
        config: LeaderConfig,
        subscribers: Sequence[str],
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self._database = database
        self._metrics = metrics
        self._instance_id = instance_id
        self._holder = lease_holder
        self._config = config
        self._subscribers = tuple(subscribers)
        self._is_leader = False
        self._epoch = 0
        self._expires_ns = 0
        self._next_renew_ns = 0
        self._last_error: str | None = None
        self._current_holder = ""
        # Storage down means a failed renewal every second: one line, then counted summaries.
        self._repeats = ErrorRepeats(logger, window_ns=60 * NANOS_PER_SECOND)
        self._standby_reason = ""

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            TimerFired: self.on_timer_fired,
            RepublishState: lambda _command: self._broadcast(self.clock.now_ns()),
        }

    # ------------------------------------------------------------------ LIFECYCLE
    def on_start(self) -> None:
        self._metrics.set_leader(False)
        self._renew(self.clock.now_ns())

    def on_stop(self) -> None:
        if self._is_leader:
            try:
                with UnitOfWork(self._database) as uow:
                    uow.lease.release(instance_id=self._holder, now_ns=self.clock.now_ns())
            except Exception:
                logger.exception("could not release the leader lease; it expires by itself")
        self._metrics.set_leader(False)

    # ------------------------------------------------------------------ EVENT HANDLERS
    def on_timer_fired(self, timer: TimerFired) -> None:
        now = timer.now_ns
        if now >= self._next_renew_ns:
            self._renew(now)
        elif self._is_leader and now >= self._expires_ns:
            self._change(False, self._epoch, self._expires_ns, now, "lease expired unrenewed")

    # ------------------------------------------------------------------ QUERIES
    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance_id": self._instance_id,
            "lease_holder": self._holder,
            "current_holder": self._current_holder,
            "standby_reason": self._standby_reason,
            "is_leader": self._is_leader,
            "epoch": self._epoch,
            "expires_ns": self._expires_ns,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ EGRESS
    def _renew(self, now: int) -> None:
        ttl_ns = int(self._config.lease_ttl_s * NANOS_PER_SECOND)
        self._next_renew_ns = now + int(self._config.renew_interval_s * NANOS_PER_SECOND)
        try:
            with UnitOfWork(self._database) as uow:
                lease = uow.lease.acquire_or_renew(
                    instance_id=self._holder, now_ns=now, ttl_ns=ttl_ns
                )
            self._last_error = None
        except Exception as error:
            self._last_error = repr(error)
            self._repeats.error(
                "lease_renewal",
                f"leader lease renewal failed: {error!r}",
                now_ns=now,
                event="LEADERSHIP",
                exc_info=True,
            )
            if self._is_leader and now >= self._expires_ns:
                self._change(False, self._epoch, self._expires_ns, now, "renewal failed")
            return
        self._repeats.resolved("lease_renewal", now)
        self._current_holder = lease.holder
        if lease.is_leader:
            self._standby_reason = ""
            self._change(True, lease.epoch, lease.expires_ns, now, "lease held")
            return
        self._explain_standby(lease.holder, lease.epoch)
        self._change(False, lease.epoch, lease.expires_ns, now, f"held by {lease.holder}")

    def _explain_standby(self, holder: str, epoch: int) -> None:
        same_name = holder.split(INCARNATION_SEPARATOR, 1)[0] == self._instance_id
        if same_name:
            reason = (
                f"another process with instance_id {self._instance_id} holds the lease "
                f"(holder {holder}, epoch {epoch}); this one ({self._holder}) stands by until it "
                "stops or its lease expires"
            )
        else:
            reason = f"lease held by {holder} at epoch {epoch}; standing by"
        if reason != self._standby_reason:
            self._standby_reason = reason
            log_event(
                logger,
                "STANDBY",
                reason,
                level=logging.WARNING,
                holder=holder,
                epoch=epoch,
                lease_holder=self._holder,
            )

    def _change(self, is_leader: bool, epoch: int, expires_ns: int, now: int, why: str) -> None:
        changed = is_leader != self._is_leader or epoch != self._epoch
        self._is_leader = is_leader
        self._epoch = epoch
        self._expires_ns = expires_ns
        if not changed:
            if is_leader:
                self._broadcast(now)  # renewed expiry matters to the order gate
            return
        self._metrics.set_leader(is_leader)
        log_event(
            logger,
            "LEADERSHIP",
            f"{'leader' if is_leader else 'not leader'} (epoch {epoch}): {why}",
            level=logging.INFO if is_leader else logging.WARNING,
            is_leader=is_leader,
            epoch=epoch,
        )
        self._broadcast(now)

    def _broadcast(self, now: int) -> None:
        message = LeadershipChanged(
            instance_id=self._instance_id,
            is_leader=self._is_leader,
            epoch=self._epoch,
            lease_expires_ns=self._expires_ns,
            ts_event=now,
            holder=self._holder,
            current_holder=self._current_holder,
        )
        for subscriber in self._subscribers:
            self.directory.tell(subscriber, message)
