"""The bracket rules, one at a time: entry, siblings, replacement, flatten, no orphan."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages.orders import FillReport, OrderStatusReport, TradePlan
from domain.oco import (
    Bracket,
    BracketAction,
    BracketStatus,
    CancelLeg,
    MarketLeg,
    MoveStop,
    PlaceLeg,
    ResizeLeg,
    bracket_orders,
    is_protected,
    new_leg_order,
    on_order_update,
    open_bracket,
    request_flatten,
    working_leg_ids,
)
from domain.orders import (
    Order,
    apply_fill,
    apply_status_report,
    mark_cancel_requested,
    mark_submitted,
    move_trigger,
    resize,
    turn_to_market,
)
from domain.plans import client_order_id

__all__: list[str] = []

PLAN_ID = "PTEST0000000000000000"
ENTRY = client_order_id(PLAN_ID, LegKind.ENTRY)
STOP = client_order_id(PLAN_ID, LegKind.STOP)
TARGET = client_order_id(PLAN_ID, LegKind.TARGET)
STOP_1 = client_order_id(PLAN_ID, LegKind.STOP, 1)
TARGET_1 = client_order_id(PLAN_ID, LegKind.TARGET, 1)
EXIT_1 = client_order_id(PLAN_ID, LegKind.EXIT, 1)
EXIT_2 = client_order_id(PLAN_ID, LegKind.EXIT, 2)


def make_plan(**overrides: object) -> TradePlan:
    fields: dict[str, object] = {
        "plan_client_id": PLAN_ID,
        "strategy": "orb",
        "instrument": "NIFTY",
        "side": Side.BUY,
        "quantity": 10,
        "entry_type": OrderType.LIMIT,
        "entry_price": Decimal("100"),
        "stop_price": Decimal("98"),
        "target_price": Decimal("104"),
        "signal_ts": 1,
        "ts_init": 1,
    }
    fields.update(overrides)
    return TradePlan(**fields)  # type: ignore[arg-type]


class Book:
    """The legs of one bracket as the order layer would hold them, plus the broker's side."""

    def __init__(
        self,
        quantity: int = 10,
        *,
        levels_on_position: bool = False,
        stop_in_place: bool = False,
        **plan_overrides: object,
    ) -> None:
        self.levels_on_position = levels_on_position
        self.stop_in_place = stop_in_place
        self.now = 100
        self.trade_number = 0
        self.bracket, entry = open_bracket(make_plan(**plan_overrides), quantity, self.now)
        self.orders: dict[str, Order] = {}
        self.execute([entry])

    @property
    def b(self) -> Bracket:
        return self.bracket

    def tick(self) -> int:
        self.now += 1
        return self.now

    def execute(self, actions: list[BracketAction]) -> None:
        for action in actions:
            if isinstance(action, PlaceLeg):
                order = new_leg_order(self.bracket, action, self.tick())
                mark_submitted(order, self.now)
                self.orders[action.client_order_id] = order
            elif isinstance(action, ResizeLeg):
                resize(self.orders[action.client_order_id], action.quantity, self.tick())
            elif isinstance(action, MarketLeg):
                turn_to_market(self.orders[action.client_order_id], action.quantity, self.tick())
            elif isinstance(action, MoveStop):
                move_trigger(self.orders[action.client_order_id], action.trigger_price, self.tick())
            else:
                mark_cancel_requested(self.orders[action.client_order_id], self.tick())

    def traits(self) -> dict[str, bool]:
        return {
            "levels_on_position": self.levels_on_position,
            "stop_in_place": self.stop_in_place,
        }

    def update(self) -> list[BracketAction]:
        actions = on_order_update(self.bracket, self.orders, self.tick(), **self.traits())
        self.execute(actions)
        again = on_order_update(self.bracket, self.orders, self.tick(), **self.traits())
        assert again == []
        return actions

    def fill(self, leg_id: str, quantity: int, price: str = "100") -> list[BracketAction]:
        self.trade_number += 1
        order = self.orders[leg_id]
        report = FillReport(
            trade_id=f"T{self.trade_number}",
            client_order_id=leg_id,
            broker_order_id=f"B-{leg_id}",
            instrument=order.instrument,
            side=order.side,
            quantity=quantity,
            price=Decimal(price),
            ts_event=self.now,
        )
        apply_fill(order, report, self.tick())
        return self.update()

    def broker_says(
        self, leg_id: str, status: OrderStatus, reason: str = ""
    ) -> list[BracketAction]:
        order = self.orders[leg_id]
        report = OrderStatusReport(
            client_order_id=leg_id,
            broker_order_id=f"B-{leg_id}",
            instrument=order.instrument,
            status=status,
            quantity=order.quantity,
            filled_quantity=order.filled_quantity,
            reason=reason,
            ts_event=self.now,
        )
        apply_status_report(order, report, self.tick())
        return self.update()

    def flatten(self, reason: str = "operator") -> list[BracketAction]:
        actions = request_flatten(self.bracket, self.orders, reason, self.tick(), **self.traits())
        self.execute(actions)
        again = on_order_update(self.bracket, self.orders, self.tick(), **self.traits())
        assert again == []
        return actions

    def quantity(self, leg_id: str) -> int:
        return self.orders[leg_id].quantity

    def status(self, leg_id: str) -> OrderStatus:
        return self.orders[leg_id].status


class TestOpenBracket:
    def test_a_limit_entry_is_placed_at_the_plan_price_on_the_plan_side(self) -> None:
        bracket, entry = open_bracket(make_plan(), 7, 50)
        assert entry == PlaceLeg(
            leg=LegKind.ENTRY,
            client_order_id=ENTRY,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            quantity=7,
            price=Decimal("100"),
        )
        assert bracket.status is BracketStatus.PENDING_ENTRY
        assert bracket.entry_order_id == ENTRY
        assert bracket.planned_quantity == 7
        assert bracket.ts_opened == 50

    def test_a_market_entry_carries_no_price(self) -> None:
        _, entry = open_bracket(make_plan(entry_type=OrderType.MARKET), 7, 50)
        assert entry.order_type is OrderType.MARKET
        assert entry.price is None

    def test_refuses_a_quantity_that_is_not_positive(self) -> None:
        with pytest.raises(ValueError, match="quantity=0"):
            open_bracket(make_plan(), 0, 50)

    def test_refuses_a_stop_above_the_target_of_a_long(self) -> None:
        with pytest.raises(ValueError, match="BRACKET_STOP_TARGET_ORDER"):
            open_bracket(make_plan(stop_price=Decimal("105")), 5, 50)

    def test_nothing_happens_while_the_entry_is_working_unfilled(self) -> None:
        book = Book()
        assert book.update() == []
        assert book.b.status is BracketStatus.PENDING_ENTRY


class TestEntryFills:
    def test_a_first_entry_fill_places_stop_and_target_sized_to_it(self) -> None:
        book = Book()
        actions = book.fill(ENTRY, 4)
        assert actions == [
            PlaceLeg(
                leg=LegKind.STOP,
                client_order_id=STOP,
                side=Side.SELL,
                order_type=OrderType.STOP,
                quantity=4,
                trigger_price=Decimal("98"),
            ),
            PlaceLeg(
                leg=LegKind.TARGET,
                client_order_id=TARGET,
                side=Side.SELL,
                order_type=OrderType.LIMIT,
                quantity=4,
                price=Decimal("104"),
            ),
        ]
        assert book.b.status is BracketStatus.OPEN
        assert (book.b.stop_order_id, book.b.target_order_id) == (STOP, TARGET)
        assert book.b.open_quantity == 4
        assert is_protected(book.b, book.orders)

    def test_further_entry_fills_resize_both_siblings_up(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        actions = book.fill(ENTRY, 3)
        assert actions == [
            ResizeLeg(client_order_id=STOP, quantity=7),
            ResizeLeg(client_order_id=TARGET, quantity=7),
        ]
        assert book.b.entry_filled == 7
        assert is_protected(book.b, book.orders)

    def test_a_short_bracket_protects_with_buy_siblings(self) -> None:
        book = Book(side=Side.SELL, stop_price=Decimal("102"), target_price=Decimal("96"))
        book.fill(ENTRY, 10)
        assert book.orders[STOP].side is Side.BUY
        assert book.orders[TARGET].side is Side.BUY
        assert book.orders[STOP].trigger_price == Decimal("102")

    def test_an_entry_cancelled_unfilled_cancels_the_bracket(self) -> None:
        book = Book()
        assert book.broker_says(ENTRY, OrderStatus.CANCELLED) == []
        assert book.b.status is BracketStatus.CANCELLED
        assert book.b.stop_order_id is None

    def test_an_entry_rejected_unfilled_cancels_the_bracket(self) -> None:
        book = Book()
        book.broker_says(ENTRY, OrderStatus.REJECTED, "margin")
        assert book.b.status is BracketStatus.CANCELLED

    def test_an_entry_dying_partly_filled_keeps_the_siblings_sized_to_the_position(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        assert book.broker_says(ENTRY, OrderStatus.CANCELLED) == []
        assert book.b.status is BracketStatus.OPEN
        assert book.quantity(STOP) == book.quantity(TARGET) == 4
        assert is_protected(book.b, book.orders)


class TestSiblingFills:
    def test_a_partial_stop_fill_resizes_the_target_to_what_is_left(self) -> None:
        book = Book()
        book.fill(ENTRY, 10)
        actions = book.fill(STOP, 3)
        assert actions == [ResizeLeg(client_order_id=TARGET, quantity=7)]
        assert book.b.exit_filled == 3
        assert book.b.open_quantity == 7
        assert is_protected(book.b, book.orders)

    def test_a_partially_filled_sibling_is_resized_up_from_its_filled_part(self) -> None:
        book = Book()
        book.fill(ENTRY, 5)
        book.fill(TARGET, 2)
        actions = book.fill(ENTRY, 5)
        assert actions == [
            ResizeLeg(client_order_id=STOP, quantity=8),
            ResizeLeg(client_order_id=TARGET, quantity=10),
        ]
        assert book.orders[TARGET].remaining_quantity == 8
        assert is_protected(book.b, book.orders)

    def test_a_full_target_fill_cancels_the_stop_and_the_bracket_closes(self) -> None:
        book = Book()
        book.fill(ENTRY, 10)
        actions = book.fill(TARGET, 10, "104")
        assert actions == [CancelLeg(client_order_id=STOP)]
        assert book.b.status is BracketStatus.FLATTENING
        assert book.b.flatten_reason == "TARGET_FILLED"
        assert book.broker_says(STOP, OrderStatus.CANCELLED) == []
        assert book.b.status is BracketStatus.CLOSED
        assert working_leg_ids(book.b, book.orders) == ()

    def test_a_stop_out_with_the_entry_working_cancels_the_entry_too(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        actions = book.fill(STOP, 4, "98")
        assert actions == [CancelLeg(client_order_id=ENTRY), CancelLeg(client_order_id=TARGET)]
        assert book.b.flatten_reason == "STOP_FILLED"
        book.broker_says(ENTRY, OrderStatus.CANCELLED)
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CLOSED

    def test_a_late_entry_fill_after_a_stop_out_is_exited_not_protected(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        book.fill(STOP, 4, "98")
        assert book.fill(ENTRY, 2) == []  # entry cancel still pending: wait for it
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        actions = book.broker_says(ENTRY, OrderStatus.CANCELLED)
        assert actions == [
            PlaceLeg(
                leg=LegKind.EXIT,
                client_order_id=EXIT_1,
                side=Side.SELL,
                order_type=OrderType.MARKET,
                quantity=2,
            )
        ]
        book.fill(EXIT_1, 2)
        assert book.b.status is BracketStatus.CLOSED
        assert book.b.open_quantity == 0


class TestUnexpectedSiblingDeath:
    @pytest.mark.parametrize("death", [OrderStatus.REJECTED, OrderStatus.CANCELLED])
    def test_a_sibling_that_dies_unasked_is_replaced_under_the_next_sequence(
        self, death: OrderStatus
    ) -> None:
        book = Book()
        book.fill(ENTRY, 6)
        actions = book.broker_says(STOP, death, "broker said no")
        assert actions == [
            PlaceLeg(
                leg=LegKind.STOP,
                client_order_id=STOP_1,
                side=Side.SELL,
                order_type=OrderType.STOP,
                quantity=6,
                trigger_price=Decimal("98"),
            )
        ]
        assert book.b.stop_order_id == STOP_1
        assert is_protected(book.b, book.orders)
        assert bracket_orders(book.b) == (ENTRY, STOP, STOP_1, TARGET)

    def test_a_replaced_sibling_that_had_filled_partly_still_counts_as_exited(self) -> None:
        book = Book()
        book.fill(ENTRY, 6)
        book.fill(TARGET, 2)
        actions = book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert actions[0] == PlaceLeg(
            leg=LegKind.TARGET,
            client_order_id=TARGET_1,
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            quantity=4,
            price=Decimal("104"),
        )
        assert book.b.exit_filled == 2
        assert is_protected(book.b, book.orders)

    def test_a_late_fill_on_a_replaced_sibling_shrinks_the_live_ones(self) -> None:
        book = Book()
        book.fill(ENTRY, 6)
        book.broker_says(STOP, OrderStatus.CANCELLED)
        actions = book.fill(STOP, 2, "98")
        assert actions == [
            ResizeLeg(client_order_id=STOP_1, quantity=4),
            ResizeLeg(client_order_id=TARGET, quantity=4),
        ]
        assert is_protected(book.b, book.orders)

    def test_a_sibling_someone_else_is_cancelling_is_replaced_only_once_dead(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        assert book.broker_says(STOP, OrderStatus.PENDING_CANCEL) == []
        assert book.fill(ENTRY, 2) == [ResizeLeg(client_order_id=TARGET, quantity=6)]
        actions = book.broker_says(STOP, OrderStatus.CANCELLED)
        assert [(action.client_order_id, action.quantity) for action in actions] == [  # type: ignore[union-attr]
            (STOP_1, 6)
        ]
        assert is_protected(book.b, book.orders)

    def test_a_leg_requested_but_never_created_is_requested_again_under_its_id(self) -> None:
        book = Book()
        book.fill(ENTRY, 3)
        del book.orders[STOP]  # as if the last gate had refused to create it
        actions = on_order_update(book.b, book.orders, book.tick())
        assert [action.client_order_id for action in actions] == [STOP]
        assert book.b.stop_order_id == STOP


class TestFlatten:
    def test_flatten_cancels_entry_and_siblings_first_then_exits_the_position(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        actions = book.flatten("risk_cap")
        assert actions == [
            CancelLeg(client_order_id=ENTRY),
            CancelLeg(client_order_id=STOP),
            CancelLeg(client_order_id=TARGET),
        ]
        assert book.b.status is BracketStatus.FLATTENING
        assert book.b.flatten_reason == "risk_cap"
        assert book.broker_says(ENTRY, OrderStatus.CANCELLED) == []
        assert book.broker_says(STOP, OrderStatus.CANCELLED) == []
        actions = book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert actions == [
            PlaceLeg(
                leg=LegKind.EXIT,
                client_order_id=EXIT_1,
                side=Side.SELL,
                order_type=OrderType.MARKET,
                quantity=4,
            )
        ]
        book.fill(EXIT_1, 4, "99")
        assert book.b.status is BracketStatus.CLOSED
        assert working_leg_ids(book.b, book.orders) == ()

    def test_an_exit_that_dies_partly_filled_is_followed_by_another_for_the_rest(self) -> None:
        book = Book()
        book.fill(ENTRY, 10)
        book.flatten()
        book.broker_says(STOP, OrderStatus.CANCELLED)
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        book.fill(EXIT_1, 6)
        actions = book.broker_says(EXIT_1, OrderStatus.CANCELLED)
        assert actions == [
            PlaceLeg(
                leg=LegKind.EXIT,
                client_order_id=EXIT_2,
                side=Side.SELL,
                order_type=OrderType.MARKET,
                quantity=4,
            )
        ]
        book.fill(EXIT_2, 4)
        assert book.b.status is BracketStatus.CLOSED

    def test_a_sibling_filling_while_its_cancel_is_pending_shrinks_the_exit(self) -> None:
        book = Book()
        book.fill(ENTRY, 10)
        book.flatten()
        book.fill(STOP, 3, "98")
        book.broker_says(STOP, OrderStatus.CANCELLED)
        actions = book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert actions[0].quantity == 7  # type: ignore[union-attr]

    def test_flattening_an_unfilled_bracket_cancels_the_entry_and_ends_cancelled(self) -> None:
        book = Book()
        assert book.flatten() == [CancelLeg(client_order_id=ENTRY)]
        book.broker_says(ENTRY, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CANCELLED

    def test_an_entry_filling_while_its_cancel_is_pending_is_exited_after_it_dies(self) -> None:
        book = Book()
        book.flatten()
        assert book.fill(ENTRY, 3) == []
        actions = book.broker_says(ENTRY, OrderStatus.CANCELLED)
        assert [type(action) for action in actions] == [PlaceLeg]
        assert actions[0].quantity == 3  # type: ignore[union-attr]

    def test_a_flatten_during_a_flatten_keeps_the_first_reason_and_asks_nothing_new(self) -> None:
        book = Book()
        book.fill(ENTRY, 4)
        book.flatten("first")
        assert book.flatten("second") == []
        assert book.b.flatten_reason == "first"

    def test_flattening_a_closed_bracket_changes_nothing(self) -> None:
        book = Book()
        book.broker_says(ENTRY, OrderStatus.CANCELLED)
        updated = book.b.ts_updated
        assert request_flatten(book.b, book.orders, "late", book.tick()) == []
        assert book.b.flatten_reason is None
        assert book.b.ts_updated == updated


class TestLevelsOnThePosition:
    """A broker that keeps stop and target on the position (IG): closing it ends them, so a
    wind down exits at once and the position stays protected until it is closed."""

    def exit_for(self, quantity: int, exit_id: str = EXIT_1) -> PlaceLeg:
        return PlaceLeg(
            leg=LegKind.EXIT,
            client_order_id=exit_id,
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=quantity,
        )

    def test_a_flatten_exits_at_once_and_leaves_the_levels_until_the_position_is_closed(
        self,
    ) -> None:
        book = Book(levels_on_position=True)
        book.fill(ENTRY, 10)
        assert set(working_leg_ids(book.b, book.orders)) == {STOP, TARGET}
        assert book.flatten("risk_cap") == [self.exit_for(10)]
        assert book.b.status is BracketStatus.FLATTENING
        # Closed: whatever the venue has not yet reported ended is cancelled as usual.
        actions = book.fill(EXIT_1, 10, "99")
        assert actions == [CancelLeg(client_order_id=STOP), CancelLeg(client_order_id=TARGET)]
        book.broker_says(STOP, OrderStatus.CANCELLED)
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CLOSED
        assert working_leg_ids(book.b, book.orders) == ()

    def test_levels_the_venue_ends_with_the_close_need_no_cancel(self) -> None:
        book = Book(levels_on_position=True)
        book.fill(ENTRY, 10)
        book.flatten()
        # IG reports the levels gone with the deal before the exit's fill is booked.
        assert book.broker_says(STOP, OrderStatus.CANCELLED) == []
        assert book.broker_says(TARGET, OrderStatus.CANCELLED) == []
        assert book.fill(EXIT_1, 10) == []
        assert book.b.status is BracketStatus.CLOSED

    def test_a_working_entry_is_still_cancelled_before_the_exit(self) -> None:
        book = Book(levels_on_position=True)
        book.fill(ENTRY, 4)
        assert book.flatten() == [CancelLeg(client_order_id=ENTRY)]
        assert book.broker_says(ENTRY, OrderStatus.CANCELLED) == [self.exit_for(4)]

    def test_a_partial_exit_leaves_the_levels_on_the_rest_and_exits_it(self) -> None:
        book = Book(levels_on_position=True)
        book.fill(ENTRY, 10)
        book.flatten()
        book.fill(EXIT_1, 6)
        assert book.broker_says(EXIT_1, OrderStatus.CANCELLED) == [self.exit_for(4, EXIT_2)]
        assert set(working_leg_ids(book.b, book.orders)) >= {STOP, TARGET}

    def test_a_stop_hit_at_the_venue_still_cancels_the_target(self) -> None:
        book = Book(levels_on_position=True)
        book.fill(ENTRY, 10)
        assert book.fill(STOP, 10, "98") == [CancelLeg(client_order_id=TARGET)]
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CLOSED


class TestStopMadeTheExit:
    """A broker that can make a working stop a market order (Kite): a flatten cancels the
    target, then turns the stop into the exit; the position keeps its stop until it closes."""

    def open(self, quantity: int = 10) -> Book:
        book = Book(stop_in_place=True)
        book.fill(ENTRY, quantity)
        book.broker_says(STOP, OrderStatus.ACCEPTED)
        book.broker_says(TARGET, OrderStatus.ACCEPTED)
        return book

    def test_the_target_goes_first_then_the_stop_becomes_a_market_order_for_what_is_open(
        self,
    ) -> None:
        book = self.open()
        assert book.flatten("operator") == [CancelLeg(client_order_id=TARGET)]
        assert book.status(STOP) is OrderStatus.ACCEPTED  # still protecting
        assert book.broker_says(TARGET, OrderStatus.CANCELLED) == [
            MarketLeg(client_order_id=STOP, quantity=10)
        ]
        stop = book.orders[STOP]
        assert (stop.order_type, stop.trigger_price) == (OrderType.MARKET, None)
        assert book.b.status is BracketStatus.FLATTENING
        assert book.fill(STOP, 10, "99.5") == []
        assert book.b.status is BracketStatus.CLOSED
        assert book.b.exit_order_ids == ()  # no separate exit was ever needed
        assert book.b.flatten_reason == "operator"

    def test_a_target_part_filled_before_its_cancel_leaves_the_stop_the_rest(self) -> None:
        book = self.open()
        book.flatten()
        book.fill(TARGET, 4, "102")
        assert book.broker_says(TARGET, OrderStatus.CANCELLED) == [
            MarketLeg(client_order_id=STOP, quantity=6)
        ]

    def test_a_target_filled_before_its_cancel_closes_the_trade_and_the_stop_is_cancelled(
        self,
    ) -> None:
        book = self.open()
        book.flatten()
        assert book.fill(TARGET, 10, "102") == [CancelLeg(client_order_id=STOP)]
        book.broker_says(STOP, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CLOSED

    def test_a_working_entry_is_cancelled_before_the_stop_is_turned(self) -> None:
        book = self.open(quantity=4)
        assert set(book.flatten()) == {
            CancelLeg(client_order_id=ENTRY),
            CancelLeg(client_order_id=TARGET),
        }
        assert book.broker_says(TARGET, OrderStatus.CANCELLED) == []
        book.fill(ENTRY, 2)  # a late fill before the entry's cancel lands
        assert book.broker_says(ENTRY, OrderStatus.CANCELLED) == [
            MarketLeg(client_order_id=STOP, quantity=6)
        ]

    def test_a_stop_not_accepted_yet_is_cancelled_and_an_exit_closes_as_usual(self) -> None:
        book = Book(stop_in_place=True)
        book.fill(ENTRY, 10)  # stop and target SUBMITTED, no answer yet
        assert set(book.flatten()) == {
            CancelLeg(client_order_id=STOP),
            CancelLeg(client_order_id=TARGET),
        }
        book.broker_says(STOP, OrderStatus.CANCELLED)
        [exit_leg] = book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert isinstance(exit_leg, PlaceLeg) and exit_leg.client_order_id == EXIT_1

    def test_a_stop_the_broker_would_not_turn_is_cancelled_then_an_exit_closes(self) -> None:
        book = self.open()
        book.flatten()
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        # The order layer cancels a stop whose turn the broker refused.
        book.execute([CancelLeg(client_order_id=STOP)])
        assert book.update() == []  # waits for the cancel
        [exit_leg] = book.broker_says(STOP, OrderStatus.CANCELLED)
        assert exit_leg == PlaceLeg(
            leg=LegKind.EXIT,
            client_order_id=EXIT_1,
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=10,
        )

    def test_a_stop_hit_while_the_target_is_cancelled_closes_the_trade(self) -> None:
        book = self.open()
        book.flatten()
        assert book.fill(STOP, 10, "98") == []  # the target's cancel is on its way
        book.broker_says(TARGET, OrderStatus.CANCELLED)
        assert book.b.status is BracketStatus.CLOSED


class TestNoOrphanAndOverExit:
    def test_an_over_exit_is_bought_back_on_the_entry_side(self) -> None:
        # A venue without native OCO filled both siblings before our cancel landed.
        book = Book(quantity=5)
        book.fill(ENTRY, 5)
        book.fill(TARGET, 5, "104")
        book.fill(STOP, 5, "98")
        assert book.b.open_quantity == -5
        actions = book.update()
        assert actions == []
        assert book.b.exit_order_ids == (EXIT_1,)
        exit_order = book.orders[EXIT_1]
        assert (exit_order.side, exit_order.quantity) == (Side.BUY, 5)
        assert not is_protected(book.b, book.orders)
        book.fill(EXIT_1, 5)
        assert book.b.open_quantity == 0
        assert book.b.status is BracketStatus.CLOSED

    def test_update_with_unapplied_actions_repeats_the_same_requests(self) -> None:
        book = Book()
        apply_fill(
            book.orders[ENTRY],
            FillReport(
                trade_id="T9",
                client_order_id=ENTRY,
                broker_order_id="B",
                instrument="NIFTY",
                side=Side.BUY,
                quantity=2,
                price=Decimal("100"),
                ts_event=1,
            ),
            book.tick(),
        )
        first = on_order_update(book.b, book.orders, book.tick())
        second = on_order_update(book.b, book.orders, book.tick())
        assert first == second
        assert len(first) == 2

    def test_ts_updated_moves_only_when_something_changed(self) -> None:
        book = Book()
        book.fill(ENTRY, 2)
        stamp = book.b.ts_updated
        on_order_update(book.b, book.orders, book.tick())
        assert book.b.ts_updated == stamp
