"""Acceptance 3: failover on PostgreSQL during steady order flow, and how long it takes.

Two engines share one PostgreSQL database with a 2 s lease renewed every 0.5 s. The leader
trades (two open brackets, a third plan just sent) and dies: its timers stop, so it never
renews again, exactly what a SIGKILL looks like from the database. Time then moves in 100 ms
steps (the production timer interval), every actor answering each step, while the strategy
side keeps offering plans to the standby. The standby takes the lease when it expires, takes
over the old brackets (the old stop is cancelled when the old target fills) and places new
orders. Printed: simulated time from the death to the new leader's first order (goal < 3 s),
and the wall time the same run took on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from actors.base import SUPERVISOR
from adapters.storage.repositories import UnitOfWork
from adapters.storage.tables import orders
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.enums import OrderStatus
from domain.messages import QuerySnapshot
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_takeover import leader_state, start_pair
from tools.reconcile import reconcile

pytestmark = pytest.mark.postgres

STEP_S = 0.1
GOAL_S = 3.0


def step_everyone(desk: Desk) -> None:
    """One timer tick of 100 ms, answered by every actor before the next one."""
    desk.clock.advance(STEP_S)
    desk.quote("AAA", "100.00", "100.10")
    desk.quote("BBB", "200.00", "200.10")
    desk.engine.fire_timer()
    directory = desk.engine.directory
    directory.ask(SUPERVISOR, QuerySnapshot(), timeout_s=10)
    for name in ("leader", "order", "risk", "kill_switch"):
        directory.ask(name, QuerySnapshot(), timeout_s=10)
    directory.ask(SUPERVISOR, QuerySnapshot(), timeout_s=10)


def first_order_at_epoch(desk: Desk, epoch: int) -> tuple[int, str] | None:
    """(created_ns, leg) of the first order written under ``epoch`` that the venue took."""
    assert desk.engine.database is not None and desk.engine.broker is not None
    desk.flush_storage()
    with UnitOfWork(desk.engine.database) as uow:
        rows = uow.connection.execute(
            select(orders.c.client_order_id, orders.c.created_ns, orders.c.leg)
            .where(orders.c.epoch == epoch)
            .order_by(orders.c.created_ns)
        ).all()
    venue = {report.client_order_id for report in desk.engine.broker.list_orders()}
    taken = [(row.created_ns, row.leg) for row in rows if row.client_order_id in venue]
    return taken[0] if taken else None


def test_failover_during_order_flow_takes_over_the_book_within_the_goal(
    tmp_path: Path,
    clock: ManualClock,
    fresh_postgres_url: str,
    engine_factory: Callable[..., Engine],
) -> None:
    old, new = start_pair(tmp_path, clock, engine_factory, fresh_postgres_url)
    kept = open_position(old, instrument="AAA", quantity=10)
    other = open_position(
        old, instrument="BBB", entry="200.10", stop="199.00", target="202.00", quantity=10
    )
    old_epoch = leader_state(old.engine)["epoch"]
    # In flight when the leader dies (another strategy: one open position per strategy and
    # instrument is a risk rule).
    old.send_plan(instrument="AAA", quantity=5, strategy="ema_1")
    # The leader's last renewal, then death: from here on it never renews or acts again.
    old.step(old.engine.config.leader.renew_interval_s)
    old.settle(lambda: leader_state(old.engine)["expires_ns"] > clock.now_ns(), what="renewed")
    died_ns = clock.now_ns()
    died_wall = time.monotonic()

    new_epoch: int | None = None
    first: tuple[int, str] | None = None
    deadline_ns = died_ns + 10 * NANOS_PER_SECOND
    while first is None:
        assert clock.now_ns() < deadline_ns, "no order from a new leader within 10 s"
        step_everyone(new)
        state = leader_state(new.engine)
        if state["is_leader"]:
            new_epoch = state["epoch"]
            new.send_plan(
                instrument="BBB", entry="200.10", stop="199.00", target="202.00", strategy="ema_1"
            )
            first = first_order_at_epoch(new, new_epoch)
    wall_s = time.monotonic() - died_wall
    simulated_s = (first[0] - died_ns) / NANOS_PER_SECOND
    print(
        f"\nFAILOVER (PostgreSQL, lease_ttl_s=2, renew_interval_s=0.5): leader died at "
        f"epoch {old_epoch}; first order ({first[1]}) at epoch {new_epoch} after "
        f"{simulated_s:.2f} s simulated, {wall_s:.2f} s wall on this machine"
    )
    assert new_epoch == old_epoch + 1
    assert simulated_s < GOAL_S

    # The old leader's brackets are the new leader's: its AAA target fills, its stop goes.
    new.settle(
        lambda: {kept, other} <= {p.position_id for p in new.portfolio().portfolio.positions},
        what="old positions taken over",
    )
    new.quote("AAA", "102.50", "102.60")
    new.settle(lambda: not new.working_legs(kept), what="old AAA bracket closed")
    statuses = {o.leg.value: o.status for o in new.orders_for(kept)}
    assert statuses["TARGET"] is OrderStatus.FILLED
    assert statuses["STOP"] is OrderStatus.CANCELLED
    assert set(new.working_legs(other)) == {"STOP", "TARGET"}  # still protected
    assert new.engine.database is not None
    new.settle(lambda: reconcile(new.engine.database).clean, what="no orphans, no duplicates")
