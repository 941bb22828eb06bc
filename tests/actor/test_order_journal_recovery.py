"""The order actor's storage off the hot path: a journal append before each broker call, the
tables behind it, and recovery from the tables plus the journal's tail."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.enums import OrderStatus, TradingState
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_takeover import kill_leader, leader_state, start_pair

_ENGINE_TABLES = ("orders", "brackets", "fills", "positions", "events")


@pytest.fixture
def statements_by_thread(desk: Desk) -> Iterator[list[tuple[str, str]]]:
    """(thread name, SQL) of every SQLAlchemy statement the engine runs from now on."""
    assert desk.engine.database is not None
    engine = desk.engine.database.engine
    seen: list[tuple[str, str]] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append((threading.current_thread().name, statement))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_bracket_life_runs_no_transaction_on_the_order_actor_thread(
    desk: Desk, statements_by_thread: list[tuple[str, str]]
) -> None:
    plan_id = open_position(desk, quantity=10)
    desk.quote("AAA", "102.50", "102.60")  # the target fills, the stop is cancelled
    desk.settle(lambda: not desk.working_legs(plan_id), what="the bracket finished")

    on_order_thread = [
        statement
        for thread, statement in statements_by_thread
        if thread.startswith("OrderActor")
        and any(table in statement for table in _ENGINE_TABLES)
        and "venue_" not in statement  # the paper venue's own books, called on this thread
    ]
    assert on_order_thread == []
    # ... and the tables followed behind: every leg and the closed position are stored.
    statuses = {o.leg.value: o.status for o in desk.orders_for(plan_id)}
    assert statuses == {
        "ENTRY": OrderStatus.FILLED,
        "TARGET": OrderStatus.FILLED,
        "STOP": OrderStatus.CANCELLED,
    }


def test_a_kill_before_the_tables_caught_up_recovers_from_the_journal_and_the_broker(
    desk: Desk, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    store = desk.engine.order_store
    assert store is not None
    # The write-behind dies first: from here every change of the order actor is lost to the
    # tables, as in a SIGKILL between the journal append and the next batch.
    store.stop()
    plan = desk.send_plan(quantity=10)
    entry_id, stop_id, target_id = (f"{plan.plan_client_id}{leg}" for leg in "EST")

    def venue_working() -> bool:
        assert desk.engine.broker is not None
        working = {r.client_order_id for r in desk.engine.broker.list_orders()}
        return {stop_id, target_id} <= working

    desk.settle(venue_working, what="entry filled at the venue, stop and target working there")
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        assert uow.orders.list_for_plan(plan.plan_client_id) == []  # nothing reached the tables
        assert uow.brackets.get(plan.plan_client_id) is None
    desk.engine.stop()

    after = Desk(engine_factory(desk.engine.config), clock)
    after.ready_to_trade()

    legs = after.working_legs(plan.plan_client_id)
    assert [(o.client_order_id, o.quantity) for o in legs["STOP"]] == [(stop_id, 10)]
    assert [(o.client_order_id, o.quantity) for o in legs["TARGET"]] == [(target_id, 10)]
    stored = {o.client_order_id: o for o in after.orders_for(plan.plan_client_id)}
    assert stored[entry_id].status is OrderStatus.FILLED and stored[entry_id].filled_quantity == 10
    assert after.engine.database is not None
    with UnitOfWork(after.engine.database) as uow:
        fills = uow.fills.list_for_plan(plan.plan_client_id)
    assert [(f.client_order_id, f.quantity) for f in fills] == [(entry_id, 10)]  # from the broker
    positions = after.portfolio().portfolio.positions
    assert [(p.position_id, p.quantity) for p in positions] == [(plan.plan_client_id, 10)]
    # Nothing was sent twice: the venue holds each leg once.
    assert after.engine.broker is not None
    at_venue = [r.client_order_id for r in after.engine.broker.list_orders()]
    assert sorted(at_venue) == sorted({entry_id, stop_id, target_id} & set(at_venue))
    assert {stop_id, target_id} <= set(at_venue)


def test_tables_that_stay_unwritable_fail_the_order_actor_until_the_engine_halts(
    desk: Desk,
) -> None:
    assert desk.engine.database is not None and desk.engine.order_store is not None
    with desk.engine.database.transaction() as connection:
        connection.exec_driver_sql("ALTER TABLE brackets RENAME TO brackets_away")
    try:
        desk.send_plan(quantity=10)  # journalled, sent; its bracket row cannot be stored
        desk.settle(
            lambda: (
                desk.engine.order_store is not None and desk.engine.order_store.failure is not None
            ),
            timeout_s=30,
            what="the write-behind failed for long",
        )
        trading = desk.settle(
            lambda: (t := desk.trading()).state.state is TradingState.HALTED and t,
            timeout_s=30,
            what="HALT after the order actor kept failing",
        )
        assert trading.state.halt_reason == "RESTART_INTENSITY"
    finally:
        with desk.engine.database.transaction() as connection:
            connection.exec_driver_sql("ALTER TABLE brackets_away RENAME TO brackets")


def journal_file(engine: Engine) -> Path:
    assert engine.order_journal is not None and engine.order_journal.path is not None
    return engine.order_journal.path


def read_journal_file(path: Path, query: str) -> list[tuple[Any, ...]]:
    # A connection of the test's own: the journal's belongs to the order actor's thread.
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_the_journal_file_keeps_exactly_the_entries_the_tables_lack(desk: Desk) -> None:
    store = desk.engine.order_store
    assert store is not None
    path = journal_file(desk.engine)
    plan_id = open_position(desk, quantity=10)
    desk.flush_storage()
    # (Not "the file holds entries now": a timer fired while the position opened may already
    # have trimmed them, which is the behaviour under test, not a failure.)
    applied = store.applied_seq
    assert applied > 0

    # The order actor trims on its timer, up to the mark the write-behind committed.
    desk.settle(
        lambda: read_journal_file(path, "SELECT seq FROM order_journal") == [],
        what="the applied entries trimmed",
    )
    # New entries (the target fills, the stop is cancelled) stay until their rows are stored.
    desk.quote("AAA", "102.50", "102.60")
    desk.settle(lambda: not desk.working_legs(plan_id), what="the bracket finished")
    desk.flush_storage()
    desk.settle(
        lambda: (
            all(
                seq > store.applied_seq
                for (seq,) in read_journal_file(path, "SELECT seq FROM order_journal")
            )
            and store.applied_seq > applied
        ),
        what="only entries above the applied mark left",
    )
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        assert int(uow.control.get("order_journal.applied_seq") or 0) == store.applied_seq


def test_a_takeover_claims_the_journal_file_before_it_reads_the_tail(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    old, new = start_pair(tmp_path, clock, engine_factory)
    path = journal_file(old.engine)
    assert journal_file(new.engine) == path  # one journal file beside the shared database
    old_epoch = leader_state(old.engine)["epoch"]
    assert read_journal_file(path, "SELECT holder, epoch FROM journal_fence") == [
        (old.engine.lease_holder, old_epoch)
    ]
    plan_id = open_position(old, quantity=10)

    epoch = kill_leader(old, new)
    new.ready_to_trade()

    assert read_journal_file(path, "SELECT holder, epoch FROM journal_fence") == [
        (new.engine.lease_holder, epoch)
    ]
    new.settle(
        lambda: [p.position_id for p in new.portfolio().portfolio.positions] == [plan_id],
        what="the old leader's position taken over",
    )
