"""A flatten journals the cancels of every protected position in one fenced statement, then
closes every position (the exits follow the cancels' acknowledgements, journalled together
when they arrive together); a burst of plans is journalled together too."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import update

from adapters.storage.repositories import UnitOfWork
from adapters.storage.tables import leader_lease
from domain.clock import ManualClock
from domain.enums import LegKind
from domain.messages import QuerySnapshot
from domain.messages.api import FlattenRequest
from domain.plans import client_order_id
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_entry_expiry import build, venue_saw


def test_a_flatten_journals_all_its_cancels_in_one_statement_and_ends_flat(desk: Desk) -> None:
    plan_ids = [
        open_position(desk, strategy=f"orb_{index}", quantity=10, stop="95", target="110")
        for index in range(1, 4)
    ]
    journal = desk.engine.order_journal
    assert journal is not None and journal.path is not None  # SQLite: the journal's own file
    connection = journal._connect()
    assert isinstance(connection, sqlite3.Connection)
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    assert desk.engine.control is not None

    flattening = threading.Thread(
        target=desk.engine.control.flatten, args=(FlattenRequest(reason="drill"),), daemon=True
    )
    flattening.start()
    desk.settle(lambda: not flattening.is_alive(), what="the flatten answered")
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flat")
    connection.set_trace_callback(None)

    journal_writes = [s for s in statements if s.startswith("INSERT INTO main.order_journal")]
    cancels = [s for s in journal_writes if "'CANCEL'" in s]
    assert len(cancels) == 1, cancels
    assert cancels[0].count("'CANCEL'") == 2 * len(plan_ids)  # every stop and target
    # The exits follow the cancels' acknowledgements, journalled per burst of them.
    assert sum(s.count("'PLACE'") for s in journal_writes) == len(plan_ids)
    for plan_id in plan_ids:
        assert not desk.working_legs(plan_id)


def test_an_entry_decided_by_a_deposed_leader_is_unbooked_denied_and_never_sent(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # A long renew interval: in memory this instance still believes it leads, so the entry is
    # decided and booked; the journal statement at the burst's end is what refuses it.
    desk = build(
        tmp_path,
        clock,
        engine_factory,
        faults=False,
        leader={"lease_ttl_s": 60, "renew_interval_s": 30},
    )
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:  # another process takes the lease
        uow.connection.execute(
            update(leader_lease).values(holder="thief#0001", epoch=leader_lease.c.epoch + 1)
        )

    plan = desk.send_plan()
    entry_id = client_order_id(plan.plan_client_id, LegKind.ENTRY)
    snapshot = desk.settle(
        lambda: (
            (s := desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5))[
                "recent_denials"
            ]
            and s
        ),
        what="the entry denied",
    )

    [denial] = snapshot["recent_denials"]
    assert (denial["client_order_id"], denial["code"]) == (entry_id, "STALE_EPOCH")
    # Unbooked, its bracket with it: nothing of the plan is left in the books.
    assert [b["plan_client_id"] for b in snapshot["brackets"]] == []
    assert not venue_saw(desk, entry_id)
    assert desk.orders_for(plan.plan_client_id) == []
    assert desk.engine.order_journal is not None
    assert desk.engine.order_journal.tail() == []
