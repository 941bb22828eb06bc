"""Failover is a takeover: the new leader manages what the old one left in the database.

Two engines share one database (and so the paper venue's tables), as two processes would. The
leader "dies" by going silent: its timers stop, so it never renews, and the standby takes the
lease at epoch + 1 once it expires (a SIGKILL or SIGSTOP looks the same from the database).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.enums import OrderStatus
from domain.messages import FillReport, QuerySnapshot
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_reconciliation import LostReports
from tests.helpers import make_config
from tools.reconcile import reconcile

LEADER = {"lease_ttl_s": 2.0, "renew_interval_s": 0.5}


def leader_state(engine: Engine) -> dict[str, Any]:
    return engine.directory.ask("leader", QuerySnapshot(), timeout_s=5)


def order_state(engine: Engine) -> dict[str, Any]:
    return engine.directory.ask("order", QuerySnapshot(), timeout_s=5)


def start_instance(
    tmp_path: Path,
    clock: ManualClock,
    engine_factory: Callable[..., Engine],
    name: str,
    database_url: str | None = None,
    **overrides: Any,
) -> Desk:
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    config = make_config(
        tmp_path / name,
        instance_id=name,
        database_url=url,
        strategies=[],
        leader=LEADER,
        **overrides,
    )
    return Desk(engine_factory(config), clock)


def start_pair(
    tmp_path: Path,
    clock: ManualClock,
    engine_factory: Callable[..., Engine],
    database_url: str | None = None,
) -> tuple[Desk, Desk]:
    """Two instances on one database; the first leads and trades, the second stands by."""
    first = start_instance(tmp_path, clock, engine_factory, "vigil-a", database_url)
    first.settle(lambda: leader_state(first.engine)["is_leader"], what="first leads")
    second = start_standby(tmp_path, clock, engine_factory, first, database_url)
    first.ready_to_trade()
    return first, second


def start_standby(
    tmp_path: Path,
    clock: ManualClock,
    engine_factory: Callable[..., Engine],
    leader: Desk,
    database_url: str | None = None,
    **overrides: Any,
) -> Desk:
    second = start_instance(tmp_path, clock, engine_factory, "vigil-b", database_url, **overrides)
    second.settle(
        lambda: leader_state(second.engine)["current_holder"] == leader.engine.lease_holder,
        what="second stands by",
    )
    return second


def at_venue(desk: Desk, plan_id: str) -> set[str]:
    """The working legs of ``plan_id`` at the venue, by leg letter (E, S, T, X)."""
    assert desk.engine.broker is not None
    return {
        r.client_order_id[len(plan_id)]
        for r in desk.engine.broker.list_orders()
        if r.client_order_id.startswith(plan_id) and not r.status.is_terminal
    }


def kill_leader(old: Desk, new: Desk) -> int:
    """The old leader goes silent (no more timers: it never renews); time passes beyond its
    lease and the standby takes over. Returns the new epoch."""
    old_epoch = leader_state(old.engine)["epoch"]
    new.clock.advance(new.engine.config.leader.lease_ttl_s + 0.1)
    new.settle(lambda: leader_state(new.engine)["is_leader"], what="standby takes the lease")
    epoch = leader_state(new.engine)["epoch"]
    assert epoch == old_epoch + 1
    return epoch


def test_the_new_leader_manages_the_old_leaders_bracket_and_trades(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    old, new = start_pair(tmp_path, clock, engine_factory)
    plan_id = open_position(old, quantity=10)
    # A leg is stored before it is sent: let both reach the venue before the leader dies.
    old.settle(lambda: at_venue(old, plan_id) == {"S", "T"}, what="stop and target at the venue")
    assert not order_state(new.engine)["brackets"]  # the standby does not manage it yet

    kill_leader(old, new)
    new.ready_to_trade()
    new.settle(
        lambda: [p.position_id for p in new.portfolio().portfolio.positions] == [plan_id],
        what="the old leader's position taken over",
    )
    assert new.portfolio().working_orders == 2  # its stop and its target

    # The old stop is cancelled when the old target fills, at the new leader's venue.
    new.quote("AAA", "102.50", "102.60")
    new.settle(lambda: not new.working_legs(plan_id), what="old bracket closed")
    statuses = {o.leg.value: o.status for o in new.orders_for(plan_id)}
    assert statuses == {
        "ENTRY": OrderStatus.FILLED,
        "TARGET": OrderStatus.FILLED,
        "STOP": OrderStatus.CANCELLED,
    }
    new.settle(lambda: not new.portfolio().portfolio.positions, what="flat")

    # New orders go out (no stale venue order counter, no primary-key violation). The market is
    # put back under the plan's 102.00 target first: at 102.50 the target filled at once, and
    # the wait for both legs working raced that fill (failed 1 run in 5 once storage got faster).
    new.quote("AAA", "100.00", "100.10")
    fresh = open_position(new, quantity=5)
    assert all(o.epoch == leader_state(new.engine)["epoch"] for o in new.orders_for(fresh))
    assert new.engine.database is not None
    new.settle(lambda: reconcile(new.engine.database).clean, what="no orphans, no duplicates")
    new.flush_storage()
    with UnitOfWork(new.engine.database) as uow:
        takeovers = uow.events.list_recent(event="TAKEOVER")
    assert any(e.instance_id == "vigil-b" and e.payload["active_brackets"] == 1 for e in takeovers)


def test_a_standby_venue_does_not_match_its_copy_of_the_leaders_orders(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    old = start_instance(tmp_path, clock, engine_factory, "vigil-a")
    old.ready_to_trade()
    plan_id = open_position(old, quantity=10)
    # Started now, the standby's venue loads the leader's working stop and target...
    new = start_standby(tmp_path, clock, engine_factory, old)
    # ...and sees the target price first: it must not fill (and write) the leader's target.
    new.quote("AAA", "102.50", "102.60")
    new.step(1.0)
    new.settle(lambda: leader_state(new.engine)["epoch"] >= 1, what="a pass at the standby")
    assert old.engine.broker is not None
    fills = [f.client_order_id for f in old.engine.broker.list_fills()]
    assert fills == [plan_id + "E"]
    assert set(old.working_legs(plan_id)) == {"STOP", "TARGET"}


def test_the_old_leaders_entries_count_in_the_new_leaders_risk_windows(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    limits = {"risk": {"max_trades_per_hour": 1}}
    old = start_instance(tmp_path, clock, engine_factory, "vigil-a", **limits)
    old.settle(lambda: leader_state(old.engine)["is_leader"], what="first leads")
    # The standby starts (and builds its windows) before the leader trades.
    new = start_standby(tmp_path, clock, engine_factory, old, **limits)
    old.ready_to_trade()
    open_position(old, quantity=10)

    kill_leader(old, new)
    new.ready_to_trade()
    blocked = new.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    assert new.engine.control is not None
    new.settle(
        lambda: new.engine.control.risk().blocks.get("TRADES_PER_HOUR", 0) >= 1,  # type: ignore[union-attr]
        what="the second trade of the hour blocked",
    )
    assert new.orders_for(blocked.plan_client_id) == []


def test_a_fill_the_standby_heard_but_could_not_store_is_booked_once_it_leads(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # Found by killing `python -m launcher` against the fake Kite: a restarted process stands
    # by while the killed one's lease runs out, and the broker's stream already tells it that
    # the stop filled. Its order actor applied the fill in memory; the write was fenced out (not
    # the leader). At the takeover its books were reloaded from storage (no fill) but the fill's
    # trade id stayed "booked" in memory, so no reconciliation ever booked it again: the stop
    # stood FILLED-with-nothing-booked, the target was never cancelled, and filled later (a
    # short position at Kite that no bracket explained).
    old = start_instance(tmp_path, clock, engine_factory, "vigil-a")
    old.ready_to_trade()
    plan_id = open_position(old, quantity=10)
    new = start_standby(tmp_path, clock, engine_factory, old)
    new.settle(lambda: order_state(new.engine)["brackets"], what="the standby loaded the bracket")

    stop_id = plan_id + "S"
    lost = LostReports(old, lambda report: getattr(report, "client_order_id", None) == stop_id)
    old.quote("AAA", "98.50", "98.60")  # the stop triggers at the leader's venue...
    [stop_fill] = old.settle(
        lambda: [r for r in lost.dropped if isinstance(r, FillReport)], what="the stop filled"
    )  # ...and the leader dies before it hears of it (no timers from here: kill_leader)
    new.engine.directory.tell("order", stop_fill)  # the stream tells the standby
    order_state(new.engine)  # (handled)

    kill_leader(old, new)
    new.ready_to_trade()
    new.settle(lambda: not new.working_legs(plan_id), what="the bracket closed by the stop")
    statuses = {o.leg.value: o.status for o in new.orders_for(plan_id)}
    assert statuses == {
        "ENTRY": OrderStatus.FILLED,
        "STOP": OrderStatus.FILLED,
        "TARGET": OrderStatus.CANCELLED,
    }
    new.settle(lambda: not new.portfolio().portfolio.positions, what="flat")
