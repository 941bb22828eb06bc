"""A plan's life through the real actors: risk, order, the paper venue, OCO siblings."""

from __future__ import annotations

from decimal import Decimal

from adapters.storage.repositories import UnitOfWork
from domain.enums import OrderStatus, Side
from tests.actor.conftest import Desk
from tools.reconcile import reconcile


def open_position(desk: Desk, **plan: object) -> str:
    sent = desk.send_plan(**plan)  # type: ignore[arg-type]
    desk.settle(
        lambda: set(desk.working_legs(sent.plan_client_id)) == {"STOP", "TARGET"},
        what="entry filled and both siblings working",
    )
    return sent.plan_client_id


class TestBracketLifecycle:
    def test_entry_fill_places_one_stop_and_one_target_sized_to_the_position(
        self, desk: Desk
    ) -> None:
        plan_id = open_position(desk, quantity=10)
        legs = desk.working_legs(plan_id)
        assert [o.quantity for o in legs["STOP"]] == [10]
        assert [o.quantity for o in legs["TARGET"]] == [10]
        assert legs["STOP"][0].trigger_price == Decimal("99.00")
        assert legs["TARGET"][0].price == Decimal("102.00")
        positions = desk.portfolio().portfolio.positions
        assert [(p.position_id, p.quantity, p.side) for p in positions] == [(plan_id, 10, Side.BUY)]

    def test_target_fill_cancels_the_stop_and_closes_the_position(self, desk: Desk) -> None:
        plan_id = open_position(desk)
        desk.quote("AAA", "102.50", "102.60")
        desk.settle(lambda: not desk.working_legs(plan_id), what="no working legs")
        statuses = {o.leg.value: o.status for o in desk.orders_for(plan_id)}
        assert statuses == {
            "ENTRY": OrderStatus.FILLED,
            "TARGET": OrderStatus.FILLED,
            "STOP": OrderStatus.CANCELLED,
        }
        desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flat")
        assert desk.portfolio().portfolio.realized_pnl_today > 0

    def test_stop_fill_cancels_the_target(self, desk: Desk) -> None:
        plan_id = open_position(desk)
        desk.quote("AAA", "98.90", "99.00")
        desk.settle(lambda: not desk.working_legs(plan_id), what="no working legs")
        statuses = {o.leg.value: o.status for o in desk.orders_for(plan_id)}
        assert statuses["STOP"] is OrderStatus.FILLED
        assert statuses["TARGET"] is OrderStatus.CANCELLED
        assert desk.portfolio().portfolio.realized_pnl_today < 0

    def test_partial_entry_fills_resize_both_siblings(self, desk_factory) -> None:  # type: ignore[no-untyped-def]
        desk = desk_factory(broker_partial_fill_max=4)
        desk.ready_to_trade()
        sent = desk.send_plan(quantity=10)
        desk.settle(
            lambda: any(
                o.leg.value == "ENTRY" and o.status is OrderStatus.FILLED
                for o in desk.orders_for(sent.plan_client_id)
            ),
            what="entry filled in parts",
        )
        desk.settle(
            lambda: (
                [
                    (leg, o.quantity)
                    for leg, orders in sorted(desk.working_legs(sent.plan_client_id).items())
                    for o in orders
                ]
                == [("STOP", 10), ("TARGET", 10)]
            ),
            what="siblings resized to 10",
        )

    def test_runbook_reconcile_finds_no_duplicates_and_no_orphans_after_trading(
        self, desk: Desk
    ) -> None:
        for instrument, entry, stop, target in (("AAA", "100.10", "99", "102"),):
            open_position(desk, instrument=instrument, entry=entry, stop=stop, target=target)
        desk.quote("AAA", "98.90", "99.00")
        assert desk.engine.database is not None
        desk.settle(lambda: reconcile(desk.engine.database).clean, what="reconcile clean")
        with UnitOfWork(desk.engine.database) as uow:
            assert uow.orders.count_duplicates() == 0


class TestLastGate:
    def test_paused_engine_blocks_entries_but_keeps_positions_protected(self, desk: Desk) -> None:
        plan_id = open_position(desk)
        assert desk.engine.control is not None
        from domain.messages.api import PauseRequest

        desk.engine.control.pause(PauseRequest(reason="test"))
        blocked = desk.send_plan(instrument="BBB", entry="200.10", stop="199", target="202")
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("TRADING_PAUSED", 0) >= 1,  # type: ignore[union-attr]
            what="plan blocked while paused",
        )
        assert desk.orders_for(blocked.plan_client_id) == []
        assert set(desk.working_legs(plan_id)) == {"STOP", "TARGET"}

    def test_a_repeated_plan_is_dropped(self, desk: Desk) -> None:
        plan = desk.send_plan()
        desk.settle(lambda: desk.orders_for(plan.plan_client_id), what="entry written")
        assert desk.engine.directory.tell("risk", plan)
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("DUPLICATE_PLAN", 0) >= 1,  # type: ignore[union-attr]
            what="duplicate blocked",
        )
        entries = [o for o in desk.orders_for(plan.plan_client_id) if o.leg.value == "ENTRY"]
        assert len(entries) == 1
