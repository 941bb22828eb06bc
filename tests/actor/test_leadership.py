"""Leadership belongs to a process, not to a name: two processes with one instance_id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from domain.clock import ManualClock
from domain.messages import QuerySnapshot
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.helpers import make_config


def _leader(engine: Engine) -> dict[str, Any]:
    return engine.directory.ask("leader", QuerySnapshot(), timeout_s=5)


def test_a_second_process_with_the_same_instance_id_stands_by_and_says_why(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # Both copies of the shipped profile name the same instance and the same database.
    config = make_config(tmp_path, strategies=[])
    first = engine_factory(config)
    second = engine_factory(config)
    desk = Desk(first, clock)
    desk.settle(lambda: _leader(first)["is_leader"], what="first leads")
    for _ in range(3):
        clock.advance(config.leader.renew_interval_s)
        first.fire_timer()
        second.fire_timer()
        Desk(second, clock).settle(
            lambda: _leader(second)["current_holder"] == first.lease_holder,
            what="second sees the first holder",
        )
    assert _leader(first)["is_leader"]
    assert not _leader(second)["is_leader"]
    assert first.lease_holder != second.lease_holder
    reason = _leader(second)["standby_reason"]
    assert "another process with instance_id vigil-test holds the lease" in reason
    assert first.lease_holder in reason
