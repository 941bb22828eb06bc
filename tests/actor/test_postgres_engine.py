"""The same engine on PostgreSQL: a bracket round trip, and two instances sharing one lease."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from domain.clock import ManualClock
from domain.messages import QuerySnapshot
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config
from tools.reconcile import reconcile

pytestmark = pytest.mark.postgres


def test_a_bracket_round_trip_on_postgresql(
    tmp_path: Path,
    clock: ManualClock,
    fresh_postgres_url: str,
    engine_factory: Callable[..., Engine],
) -> None:
    engine = engine_factory(make_config(tmp_path, database_url=fresh_postgres_url, strategies=[]))
    desk = Desk(engine, clock)
    desk.ready_to_trade()
    plan_id = open_position(desk)
    desk.quote("AAA", "102.50", "102.60")
    desk.settle(lambda: not desk.working_legs(plan_id), what="bracket closed")
    assert engine.database is not None
    desk.settle(lambda: reconcile(engine.database).clean, what="reconcile clean")


def test_two_instances_on_one_database_have_one_leader_and_fail_over_with_a_new_epoch(
    tmp_path: Path,
    clock: ManualClock,
    fresh_postgres_url: str,
    engine_factory: Callable[..., Engine],
) -> None:
    def instance(name: str) -> Engine:
        config = make_config(
            tmp_path / name, instance_id=name, database_url=fresh_postgres_url, strategies=[]
        )
        return engine_factory(config)

    def leader_state(engine: Engine) -> dict:
        return engine.directory.ask("leader", QuerySnapshot(), timeout_s=5)

    first = instance("vigil-a")
    second = instance("vigil-b")
    for engine in (first, second):
        engine.fire_timer()
    desk = Desk(first, clock)
    desk.settle(lambda: leader_state(first)["is_leader"], what="first leads")
    assert not leader_state(second)["is_leader"]
    first_epoch = leader_state(first)["epoch"]

    first.stop()  # a clean stop releases the lease
    standby = Desk(second, clock)
    standby.step(second.config.leader.renew_interval_s)
    standby.settle(lambda: leader_state(second)["is_leader"], what="standby takes over")
    assert leader_state(second)["epoch"] == first_epoch + 1
