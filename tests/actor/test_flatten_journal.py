"""A flatten journals the cancels of every protected position in one fenced statement, then
closes every position (the exits follow the cancels' acknowledgements, journalled together
when they arrive together); a burst of plans is journalled together too."""

from __future__ import annotations

import sqlite3
import threading

from domain.messages.api import FlattenRequest
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position


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
