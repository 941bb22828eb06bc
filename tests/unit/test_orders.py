"""The order state machine: our own transitions, broker status reports and fills."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.orders import FillReport, OrderStatusReport
from domain.orders import (
    InvalidTransition,
    Order,
    Overfill,
    apply_fill,
    apply_status_report,
    fill_gap,
    mark_cancel_rejected,
    mark_cancel_requested,
    mark_rejected,
    mark_submitted,
    resize,
)

__all__: list[str] = []

ORDER_ID = "PABCE"


def make_order(**overrides: object) -> Order:
    fields: dict[str, object] = {
        "client_order_id": ORDER_ID,
        "plan_client_id": "PABC",
        "strategy": "orb",
        "instrument": "NIFTY",
        "leg": LegKind.ENTRY,
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": 10,
        "price": Decimal("100"),
        "ts_created": 1,
        "ts_updated": 1,
    }
    fields.update(overrides)
    return Order(**fields)  # type: ignore[arg-type]


def report(status: OrderStatus, filled: int = 0, **overrides: object) -> OrderStatusReport:
    fields: dict[str, object] = {
        "client_order_id": ORDER_ID,
        "broker_order_id": "B1",
        "instrument": "NIFTY",
        "status": status,
        "quantity": 10,
        "filled_quantity": filled,
        "ts_event": 5,
    }
    fields.update(overrides)
    return OrderStatusReport(**fields)  # type: ignore[arg-type]


def fill(
    quantity: int, price: str = "100", trade_id: str = "T1", **overrides: object
) -> FillReport:
    fields: dict[str, object] = {
        "trade_id": trade_id,
        "client_order_id": ORDER_ID,
        "broker_order_id": "B1",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": quantity,
        "price": Decimal(price),
        "ts_event": 5,
    }
    fields.update(overrides)
    return FillReport(**fields)  # type: ignore[arg-type]


class TestMarkSubmitted:
    def test_moves_pending_submit_to_submitted(self) -> None:
        order = make_order()
        mark_submitted(order, 7)
        assert order.status is OrderStatus.SUBMITTED
        assert order.ts_updated == 7

    def test_is_a_no_op_when_a_report_already_moved_the_order_on(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED)
        mark_submitted(order, 7)
        assert order.status is OrderStatus.ACCEPTED
        assert order.ts_updated == 1


class TestMarkRejected:
    def test_rejects_an_unfilled_working_order_with_its_reason(self) -> None:
        order = make_order(status=OrderStatus.SUBMITTED)
        mark_rejected(order, "RMS: margin", 9)
        assert order.status is OrderStatus.REJECTED
        assert order.reason == "RMS: margin"

    def test_refuses_to_reject_an_order_with_fills(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=3)
        with pytest.raises(InvalidTransition, match=f"order={ORDER_ID} from=PARTIALLY_FILLED"):
            mark_rejected(order, "late", 9)
        assert order.status is OrderStatus.PARTIALLY_FILLED

    def test_refuses_to_reject_a_filled_order(self) -> None:
        order = make_order(status=OrderStatus.FILLED, filled_quantity=10)
        with pytest.raises(InvalidTransition, match="to=REJECTED"):
            mark_rejected(order, "late", 9)

    def test_a_repeated_rejection_is_a_no_op(self) -> None:
        order = make_order(status=OrderStatus.REJECTED, reason="first")
        mark_rejected(order, "second", 9)
        assert order.reason == "first"


class TestMarkCancelRequested:
    def test_moves_a_working_order_to_pending_cancel(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED)
        mark_cancel_requested(order, 4)
        assert order.status is OrderStatus.PENDING_CANCEL

    @pytest.mark.parametrize(
        "status", [OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED]
    )
    def test_is_a_no_op_on_a_terminal_order(self, status: OrderStatus) -> None:
        order = make_order(status=status)
        mark_cancel_requested(order, 4)
        assert order.status is status

    def test_a_refused_cancel_puts_the_order_back_to_work(self) -> None:
        order = make_order(status=OrderStatus.PENDING_CANCEL, filled_quantity=2)
        mark_cancel_rejected(order, "too late to cancel", 6)
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.reason == "too late to cancel"


class TestResize:
    def test_sets_the_new_total_quantity(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=3)
        resize(order, 5, 8)
        assert order.quantity == 5
        assert order.remaining_quantity == 2
        assert order.ts_updated == 8

    def test_refuses_a_quantity_below_what_is_filled(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=3)
        with pytest.raises(ValueError, match="quantity=10 filled=3 new_quantity=2"):
            resize(order, 2, 8)
        assert order.quantity == 10

    def test_resizing_to_the_filled_quantity_leaves_the_order_filled(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=3)
        resize(order, 3, 8)
        assert order.status is OrderStatus.FILLED

    def test_refuses_to_resize_a_terminal_order(self) -> None:
        order = make_order(status=OrderStatus.CANCELLED)
        with pytest.raises(InvalidTransition, match="from=CANCELLED"):
            resize(order, 5, 8)

    def test_refuses_to_resize_an_order_whose_cancel_is_pending(self) -> None:
        order = make_order(status=OrderStatus.PENDING_CANCEL)
        with pytest.raises(InvalidTransition):
            resize(order, 5, 8)


class TestApplyFill:
    def test_a_fill_before_the_ack_makes_a_submitted_order_partially_filled(self) -> None:
        order = make_order(status=OrderStatus.SUBMITTED)
        apply_fill(order, fill(4), 3)
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.filled_quantity == 4
        assert order.broker_order_id == "B1"

    def test_the_last_fill_makes_the_order_filled(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED)
        apply_fill(order, fill(4, "100.05", "T1"), 3)
        apply_fill(order, fill(6, "100.10", "T2"), 4)
        assert order.status is OrderStatus.FILLED
        assert order.average_fill_price == Decimal("100.08")

    def test_the_average_is_exact_when_the_division_is_not(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED, quantity=3)
        apply_fill(order, fill(1, "100.05", "T1"), 3)
        apply_fill(order, fill(2, "100.10", "T2"), 4)
        assert order.average_fill_price == Decimal("300.25") / Decimal(3)

    def test_an_overfill_raises_and_leaves_the_order_unchanged(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=8)
        order.average_fill_price = Decimal("100")
        with pytest.raises(Overfill, match=f"order={ORDER_ID} quantity=10 filled=8"):
            apply_fill(order, fill(3), 3)
        assert order.filled_quantity == 8
        assert order.status is OrderStatus.PARTIALLY_FILLED

    def test_a_fill_while_a_cancel_is_pending_keeps_the_cancel_pending(self) -> None:
        order = make_order(status=OrderStatus.PENDING_CANCEL)
        apply_fill(order, fill(4), 3)
        assert order.status is OrderStatus.PENDING_CANCEL

    def test_a_late_fill_on_a_cancelled_order_is_booked_and_the_status_kept(self) -> None:
        order = make_order(status=OrderStatus.CANCELLED)
        apply_fill(order, fill(4), 3)
        assert order.filled_quantity == 4
        assert order.status is OrderStatus.CANCELLED

    def test_a_late_fill_that_completes_a_cancelled_order_makes_it_filled(self) -> None:
        order = make_order(status=OrderStatus.CANCELLED)
        apply_fill(order, fill(10), 3)
        assert order.status is OrderStatus.FILLED

    def test_refuses_a_fill_for_the_other_side(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED)
        with pytest.raises(ValueError, match="FILL_MISMATCH"):
            apply_fill(order, fill(1, side=Side.SELL), 3)

    @settings(max_examples=100, deadline=None)
    @given(
        fills=st.lists(
            st.tuples(st.integers(1, 7), st.integers(1, 400_000)), min_size=1, max_size=25
        )
    )
    def test_the_average_never_drifts_over_many_fills(self, fills: list[tuple[int, int]]) -> None:
        total_quantity = sum(quantity for quantity, _ in fills)
        order = make_order(status=OrderStatus.ACCEPTED, quantity=total_quantity)
        notional = Decimal(0)
        for number, (quantity, ticks) in enumerate(fills):
            price = Decimal(ticks) * Decimal("0.05")
            notional += price * quantity
            apply_fill(order, fill(quantity, str(price), f"T{number}"), number)
        assert order.average_fill_price == notional / Decimal(total_quantity)


class TestApplyStatusReport:
    def test_an_ack_sets_the_broker_order_id_and_accepts(self) -> None:
        order = make_order(status=OrderStatus.SUBMITTED)
        assert apply_status_report(order, report(OrderStatus.ACCEPTED), 6)
        assert order.status is OrderStatus.ACCEPTED
        assert order.broker_order_id == "B1"
        assert order.ts_updated == 6

    def test_a_duplicate_report_changes_nothing(self) -> None:
        order = make_order(status=OrderStatus.SUBMITTED)
        apply_status_report(order, report(OrderStatus.ACCEPTED), 6)
        assert not apply_status_report(order, report(OrderStatus.ACCEPTED), 7)
        assert order.ts_updated == 6

    def test_a_stale_ack_after_a_partial_fill_is_ignored(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=4)
        assert not apply_status_report(order, report(OrderStatus.ACCEPTED, broker_order_id=""), 6)
        assert order.status is OrderStatus.PARTIALLY_FILLED

    @pytest.mark.parametrize("late", [OrderStatus.CANCELLED, OrderStatus.REJECTED])
    def test_a_cancel_or_reject_after_filled_is_ignored(self, late: OrderStatus) -> None:
        order = make_order(status=OrderStatus.FILLED, filled_quantity=10, broker_order_id="B1")
        assert not apply_status_report(order, report(late, 10, reason="late"), 6)
        assert order.status is OrderStatus.FILLED
        assert order.reason == ""

    def test_a_terminal_status_never_moves_back_to_working(self) -> None:
        order = make_order(status=OrderStatus.CANCELLED, broker_order_id="B1")
        assert not apply_status_report(order, report(OrderStatus.ACCEPTED), 6)
        assert order.status is OrderStatus.CANCELLED

    def test_filled_quantity_comes_from_fills_not_from_reports(self) -> None:
        order = make_order(status=OrderStatus.ACCEPTED, broker_order_id="B1")
        apply_status_report(order, report(OrderStatus.PARTIALLY_FILLED, 4), 6)
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.filled_quantity == 0
        apply_fill(order, fill(4), 7)
        assert order.filled_quantity == 4

    def test_a_filled_report_ahead_of_its_fills_waits_as_partially_filled(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=4)
        apply_status_report(order, report(OrderStatus.FILLED, 10), 6)
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert fill_gap(order, report(OrderStatus.FILLED, 10)) == 6
        apply_fill(order, fill(6), 7)
        assert order.status is OrderStatus.FILLED

    def test_a_filled_report_matching_the_booked_fills_completes_a_resized_order(self) -> None:
        # We resized 4 -> 10 but the broker filled the 4 before the modify reached it.
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=4)
        apply_status_report(order, report(OrderStatus.FILLED, 4, quantity=4), 6)
        assert order.status is OrderStatus.FILLED
        assert order.quantity == 4

    def test_a_broker_cancel_ends_a_partly_filled_order_with_its_reason(self) -> None:
        order = make_order(status=OrderStatus.PARTIALLY_FILLED, filled_quantity=4)
        apply_status_report(order, report(OrderStatus.CANCELLED, 4, reason="IOC expiry"), 6)
        assert order.status is OrderStatus.CANCELLED
        assert order.reason == "IOC expiry"

    def test_a_stale_ack_does_not_undo_our_cancel_request(self) -> None:
        order = make_order(status=OrderStatus.PENDING_CANCEL, broker_order_id="B1")
        assert not apply_status_report(order, report(OrderStatus.ACCEPTED), 6)
        assert order.status is OrderStatus.PENDING_CANCEL

    def test_refuses_a_report_for_another_order(self) -> None:
        order = make_order()
        with pytest.raises(ValueError, match="REPORT_FOR_OTHER_ORDER"):
            apply_status_report(order, report(OrderStatus.ACCEPTED, client_order_id="X"), 6)

    @settings(max_examples=150, deadline=None)
    @given(
        statuses=st.lists(
            st.sampled_from(
                [
                    OrderStatus.SUBMITTED,
                    OrderStatus.ACCEPTED,
                    OrderStatus.PARTIALLY_FILLED,
                    OrderStatus.PENDING_CANCEL,
                    OrderStatus.FILLED,
                    OrderStatus.CANCELLED,
                    OrderStatus.REJECTED,
                ]
            ),
            max_size=12,
        )
    )
    def test_reports_in_any_order_never_move_a_terminal_status(
        self, statuses: list[OrderStatus]
    ) -> None:
        order = make_order(status=OrderStatus.SUBMITTED)
        first_terminal: OrderStatus | None = None
        for number, status in enumerate(statuses):
            apply_status_report(order, report(status), number)
            if first_terminal is None and order.status.is_terminal:
                first_terminal = order.status
            if first_terminal is not None:
                assert order.status is first_terminal
            assert order.filled_quantity == 0
