"""Every order we send leaves one event line: ORDER_SUBMITTED, or ORDER_REJECTED with the
broker's reason, so the log alone shows what went out."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_each_leg_sent_is_logged_once_and_a_refusal_names_its_reason(
    desk_factory: Callable[..., Desk], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actors.order_actor")
    desk = desk_factory(broker_faults=True)
    desk.ready_to_trade()
    plan_id = open_position(desk, quantity=10)

    def legs_logged() -> list[str]:
        submitted = events(caplog, "ORDER_SUBMITTED")
        return sorted(r.leg for r in submitted if r.plan_client_id == plan_id)  # type: ignore[attr-defined]

    # A leg's row is stored before it is sent and logged: wait for the line, not the row.
    desk.settle(lambda: len(legs_logged()) == 3, what="three legs logged")
    assert legs_logged() == ["ENTRY", "STOP", "TARGET"]

    assert desk.engine.faults is not None
    desk.engine.faults.refuse_next("submit_order")
    refused = desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    [record] = desk.settle(lambda: events(caplog, "ORDER_REJECTED"), what="refusal logged")
    assert record.client_order_id == refused.plan_client_id + "E"  # type: ignore[attr-defined]
    assert "BROKER_REFUSED" in record.getMessage()
    assert record.levelno == logging.WARNING
