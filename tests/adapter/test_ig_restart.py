"""``IgBroker`` after a restart, against the fake IG over real sockets.

A new adapter knows nothing of the deals an earlier process made; IG's positions name only
the entry (its dealReference). The engine hands it its unfinished orders after recovery
(``adopt_working_orders``): the STOP/TARGET legs whose levels the deal holds become those
levels again with no request, and a deal IG closed while nobody was watching is booked from
IG's activity history, once, on the leg whose level closed it (or our EXIT)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import msgspec
import pytest

from adapters.brokers.ig import IgBroker
from adapters.brokers.ig import execution as ig_execution
from adapters.brokers.ig.parsing import activity_from_json
from domain.clock import ManualClock
from domain.enums import LegKind, OrderStatus, OrderType, Side
from domain.messages import FillReport, OrderStatusReport
from domain.orders import Order
from tests.adapter.test_ig_broker import (
    EPIC,
    INSTRUMENTS,
    PLAN,
    T0,
    Collected,
    _config,
    _deals,
    _entry,
    _exit,
    _level_puts,
    _stop,
    _target,
)
from tests.helpers import wait_until
from tools.fake_ig import FakeIG

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(clock=ManualClock(T0), probe_interval_s=0.2) as server:
        yield server


@pytest.fixture
def make_broker(fake: FakeIG) -> Iterator[Callable[..., tuple[IgBroker, Collected]]]:
    """A new adapter each call: a new process's, with nothing in memory."""
    made: list[IgBroker] = []

    def make(**overrides: object) -> tuple[IgBroker, Collected]:
        collected = Collected()
        broker = IgBroker(
            config=_config(fake, **overrides), instruments=INSTRUMENTS, clock=ManualClock(T0)
        )
        broker.set_report_sink(collected.report)
        made.append(broker)
        return broker, collected

    yield make
    for broker in made:
        broker.close()


def book(
    leg: str,
    status: OrderStatus,
    level: str | None = None,
    *,
    seq: str = "",
    at: int = 0,
    quantity: int = 2,
) -> Order:
    """One order as the engine's books hold it after recovery."""
    kind = {"S": LegKind.STOP, "T": LegKind.TARGET, "X": LegKind.EXIT, "E": LegKind.ENTRY}[leg]
    order_type = {"S": OrderType.STOP, "T": OrderType.LIMIT}.get(leg, OrderType.MARKET)
    return Order(
        client_order_id=f"{PLAN}{leg}{seq}",
        plan_client_id=PLAN,
        strategy="s",
        instrument="FTSE",
        leg=kind,
        side=Side.SELL if leg != "E" else Side.BUY,
        order_type=order_type,
        quantity=quantity,
        price=Decimal(level) if level is not None and leg == "T" else None,
        trigger_price=Decimal(level) if level is not None and leg == "S" else None,
        status=status,
        ts_created=T0 + at,
    )


def open_bracket(broker: IgBroker, fake: FakeIG, stop: str = "7480", target: str = "7530") -> dict:
    """Before the restart: a deal opened with its levels, the legs standing for them."""
    broker.connect()
    broker.submit_order(
        msgspec.structs.replace(
            _entry(), attached_stop=Decimal(stop), attached_target=Decimal(target)
        )
    )
    broker.submit_order(_stop(stop))
    broker.submit_order(_target(target))
    [deal] = _deals(fake)
    return deal


def orders_by_id(broker: IgBroker) -> dict[str, OrderStatusReport]:
    return {r.client_order_id: r for r in broker.list_orders()}


def history_reads(fake: FakeIG) -> int:
    return sum(1 for r in fake.request_log() if r.path == "/history/activity")


def test_a_restarted_adapter_binds_the_engines_legs_to_the_open_deals_levels(
    fake: FakeIG, make_broker
) -> None:
    before, _ = make_broker()
    deal = open_bracket(before, fake)
    before.close()

    after, seen = make_broker()
    after.connect()
    # Without the engine's orders IG's lists name the entry only.
    assert set(orders_by_id(after)) == {f"{PLAN}E"}
    after.adopt_working_orders(
        [book("E", OrderStatus.FILLED), book("S", OrderStatus.ACCEPTED, "7480"),
         book("T", OrderStatus.ACCEPTED, "7530")]
    )  # fmt: skip
    lines = orders_by_id(after)
    assert lines[f"{PLAN}S"].status is OrderStatus.ACCEPTED
    assert lines[f"{PLAN}S"].trigger_price == Decimal("7480")
    assert lines[f"{PLAN}T"].price == Decimal("7530")
    assert {r.client_order_id for r in after.list_open_orders()} == {f"{PLAN}S", f"{PLAN}T"}
    assert _level_puts(fake) == []
    assert history_reads(fake) == 0  # the deal is open: no history needed

    # A level hit later fills the engine's own leg, under the trade id a live session gives.
    fake.set_quote(EPIC, Decimal("7470"))
    wait_until(
        lambda: orders_by_id(after)[f"{PLAN}S"].status is OrderStatus.FILLED,
        timeout_s=10,
        message="the stop leg filled",
    )
    fills = [f for f in after.list_fills() if f.client_order_id == f"{PLAN}S"]
    assert [f.trade_id for f in fills] == [f"{deal['dealId']}:{PLAN}S"]
    # Its sibling ends with the deal at no cost.
    after.cancel_order(f"{PLAN}T")
    wait_until(lambda: seen.last_status(f"{PLAN}T") is OrderStatus.CANCELLED, timeout_s=5)
    assert _level_puts(fake) == []


def test_after_a_tightened_stop_the_leg_holding_the_level_is_the_stop(
    fake: FakeIG, make_broker
) -> None:
    """The stop was moved (S cancelled, S1 placed) before the restart, and the engine's books
    still call S working (its cancel's answer was lost): S1 holds IG's level, S is gone."""
    before, _ = make_broker()
    open_bracket(before, fake)
    before.cancel_order(f"{PLAN}S")
    before.submit_order(_stop("7490", seq="1"))
    before.close()
    puts = len(_level_puts(fake))

    after, seen = make_broker()
    after.connect()
    after.adopt_working_orders(
        [book("S", OrderStatus.ACCEPTED, "7480"),
         book("S", OrderStatus.ACCEPTED, "7490", seq="1", at=1),
         book("T", OrderStatus.ACCEPTED, "7530")]
    )  # fmt: skip
    lines = orders_by_id(after)
    assert lines[f"{PLAN}S1"].status is OrderStatus.ACCEPTED
    assert lines[f"{PLAN}S1"].trigger_price == Decimal("7490")
    assert lines[f"{PLAN}S"].status is OrderStatus.CANCELLED
    wait_until(lambda: seen.last_status(f"{PLAN}S") is OrderStatus.CANCELLED, timeout_s=5)
    assert {r.client_order_id for r in after.list_open_orders()} == {f"{PLAN}S1", f"{PLAN}T"}
    assert len(_level_puts(fake)) == puts


def test_levels_changed_at_ig_while_down_are_drift_or_gone(fake: FakeIG, make_broker) -> None:
    before, _ = make_broker()
    deal = open_bracket(before, fake)
    before.close()
    fake.amend_levels_elsewhere(deal["dealId"], stop="7450", limit=None)

    after, seen = make_broker()
    after.connect()
    after.adopt_working_orders(
        [book("S", OrderStatus.ACCEPTED, "7480"), book("T", OrderStatus.ACCEPTED, "7530")]
    )
    lines = orders_by_id(after)
    # The moved stop: still the engine's stop, reported at IG's level (reconciliation: drift).
    assert lines[f"{PLAN}S"].status is OrderStatus.ACCEPTED
    assert lines[f"{PLAN}S"].trigger_price == Decimal("7450")
    # The removed limit: its leg ends (the engine's OCO puts it back).
    assert lines[f"{PLAN}T"].status is OrderStatus.CANCELLED
    wait_until(lambda: seen.last_status(f"{PLAN}T") is OrderStatus.CANCELLED, timeout_s=5)
    after.submit_order(_target("7530", seq="1"))
    [deal] = _deals(fake)
    assert (deal["stopLevel"], deal["limitLevel"]) == (7450, 7530)


def test_a_leg_in_flight_is_bound_only_when_the_deal_holds_its_level(
    fake: FakeIG, make_broker
) -> None:
    before, _ = make_broker()
    open_bracket(before, fake)
    before.close()

    after, _ = make_broker()
    after.connect()
    after.adopt_working_orders(
        [book("S", OrderStatus.SUBMITTED, "7480"), book("T", OrderStatus.SUBMITTED, "7540")]
    )
    lines = orders_by_id(after)
    assert lines[f"{PLAN}S"].status is OrderStatus.ACCEPTED  # IG has it: it was placed
    assert f"{PLAN}T" not in lines  # unknown at IG: reconciliation settles it as unanswered
    after.submit_order(_target("7540"))  # the resend sets it
    assert _deals(fake)[0]["limitLevel"] == 7540


@pytest.mark.parametrize("level", ["stop", "limit"])
def test_a_deal_closed_at_a_level_while_down_is_booked_once_from_igs_history(
    fake: FakeIG, make_broker, level: str
) -> None:
    before, _ = make_broker()
    deal = open_bracket(before, fake)
    before.close()
    fake.set_quote(EPIC, Decimal("7470") if level == "stop" else Decimal("7540"))
    assert _deals(fake) == []
    leg, sibling = (f"{PLAN}S", f"{PLAN}T") if level == "stop" else (f"{PLAN}T", f"{PLAN}S")

    after, seen = make_broker()
    after.connect()
    after.adopt_working_orders(
        [book("S", OrderStatus.ACCEPTED, "7480"), book("T", OrderStatus.ACCEPTED, "7530")]
    )
    assert history_reads(fake) == 1
    fills = [f for f in after.list_fills() if f.client_order_id in (leg, sibling)]
    closing = Decimal("7470") if level == "stop" else Decimal("7540")
    assert [(f.trade_id, f.client_order_id, f.side, f.quantity, f.price) for f in fills] == [
        (f"{deal['dealId']}:{leg}", leg, Side.SELL, 2, closing)
    ]
    wait_until(lambda: seen.of(FillReport, leg), timeout_s=5, message="the fill reported")
    lines = orders_by_id(after)
    assert lines[leg].status is OrderStatus.FILLED
    assert lines[sibling].status is OrderStatus.ACCEPTED  # until the OCO cancels it: no request
    after.cancel_order(sibling)
    assert orders_by_id(after)[sibling].status is OrderStatus.CANCELLED
    assert _level_puts(fake) == [] and after.list_positions() == []
    # Adopting again (a later takeover) reads nothing more and books nothing twice.
    after.adopt_working_orders([book("S", OrderStatus.ACCEPTED, "7480")])
    assert history_reads(fake) == 1
    assert len([f for f in after.list_fills() if f.client_order_id == leg]) == 1


def test_an_exit_whose_answer_was_lost_in_the_restart_is_booked_with_its_confirms_trade_id(
    fake: FakeIG, make_broker
) -> None:
    before, said = make_broker()
    open_bracket(before, fake)
    before.submit_order(_exit())
    wait_until(lambda: said.of(FillReport, f"{PLAN}X"), timeout_s=5)
    [live] = said.of(FillReport, f"{PLAN}X")
    before.close()

    after, _ = make_broker()
    after.connect()
    # The engine never booked the exit's answer: its books still hold the exit in flight.
    after.adopt_working_orders(
        [book("S", OrderStatus.ACCEPTED, "7480"), book("T", OrderStatus.ACCEPTED, "7530"),
         book("X", OrderStatus.SUBMITTED)]
    )  # fmt: skip
    [fill] = [f for f in after.list_fills() if f.client_order_id == f"{PLAN}X"]
    assert (fill.trade_id, fill.quantity, fill.price) == (live.trade_id, live.quantity, live.price)
    lines = orders_by_id(after)
    assert lines[f"{PLAN}X"].status is OrderStatus.FILLED
    assert lines[f"{PLAN}S"].status is OrderStatus.CANCELLED
    assert lines[f"{PLAN}T"].status is OrderStatus.CANCELLED
    # An exit the engine did book is not booked again from the history, and the deal it
    # closed is closed: nothing is ever reported for its legs.
    again, told = make_broker()
    again.connect()
    again.adopt_working_orders([book("S", OrderStatus.ACCEPTED, "7480")])
    again.list_orders()
    assert again.list_fills() == []
    assert told.of(FillReport) == []


def test_history_refused_at_the_restart_is_asked_again_by_a_later_full_run(
    fake: FakeIG, make_broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ig_execution, "_HISTORY_RETRY_S", 0.0)
    # The adoption reuses the test's positions read however slow the machine (the refusal
    # below must meet the history read).
    monkeypatch.setattr(ig_execution, "_LIST_SNAPSHOT_S", 600.0)
    before, _ = make_broker()
    deal = open_bracket(before, fake)
    before.close()
    fake.set_quote(EPIC, Decimal("7470"))

    after, _ = make_broker()
    after.connect()
    after.list_positions()  # the positions read this adoption reuses
    fake.rate_limit_next(1, kind="account", category="non-trading")
    after.adopt_working_orders(
        [book("S", OrderStatus.ACCEPTED, "7480"), book("T", OrderStatus.ACCEPTED, "7530")]
    )
    assert [f for f in after.list_fills() if f.client_order_id == f"{PLAN}S"] == []
    reads = history_reads(fake)
    lines = orders_by_id(after)  # a full run: the history asked once more
    assert history_reads(fake) == reads + 1
    assert lines[f"{PLAN}S"].status is OrderStatus.FILLED
    [fill] = [f for f in after.list_fills() if f.client_order_id == f"{PLAN}S"]
    assert fill.trade_id == f"{deal['dealId']}:{PLAN}S"
    orders_by_id(after)
    assert history_reads(fake) == reads + 1  # explained: never asked again


def test_a_close_the_history_never_shows_is_asked_for_a_bounded_number_of_times(
    fake: FakeIG, make_broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ig_execution, "_HISTORY_RETRY_S", 0.0)
    before, _ = make_broker()
    open_bracket(before, fake)
    before.close()
    fake.set_quote(EPIC, Decimal("7470"))
    fake.market.activity.clear()  # IG's history lags (or was trimmed)

    after, _ = make_broker()
    after.connect()
    after.adopt_working_orders([book("S", OrderStatus.ACCEPTED, "7480")])
    for _ in range(ig_execution._HISTORY_TRIES + 3):
        after.list_orders()
    assert history_reads(fake) == ig_execution._HISTORY_TRIES


def test_ig_activity_lines_in_igs_own_shape() -> None:
    """IG's v3 activity: a close is its own deal, its action names the position it closed."""
    close = activity_from_json(
        {"date": "2026-11-30T09:15:00", "epic": EPIC, "dealId": "DIAAAACLOSE", "status":
         "ACCEPTED", "type": "POSITION", "description": "Position/s closed: DIAAAAOPEN",
         "details": {"dealReference": "IGREF1", "direction": "SELL", "size": 2, "level": 7470.5,
                     "actions": [{"actionType": "POSITION_CLOSED",
                                  "affectedDealId": "DIAAAAOPEN"}]}}
    )  # fmt: skip
    assert close.is_close and close.deal_ids == {"DIAAAACLOSE", "DIAAAAOPEN"}
    assert (close.level, close.size, close.direction) == (Decimal("7470.5"), 2, Side.SELL)
    assert close.ts_ns == 1_796_030_100 * 1_000_000_000
    opened = activity_from_json(
        {"date": "2026-11-30T09:00:00", "epic": EPIC, "dealId": "DIAAAAOPEN", "status":
         "ACCEPTED", "description": "Position opened: DIAAAAOPEN",
         "details": {"dealReference": f"{PLAN}E", "direction": "BUY", "size": 2, "level": 7501,
                     "actions": [{"actionType": "POSITION_OPENED",
                                  "affectedDealId": "DIAAAAOPEN"}]}}
    )  # fmt: skip
    assert not opened.is_close and opened.deal_reference == f"{PLAN}E"
    with pytest.raises(ValueError, match="not a position's open or close"):
        activity_from_json(
            {"dealId": "D", "status": "ACCEPTED", "description": "Position/s amended",
             "details": {"direction": "BUY", "size": 2, "level": 1,
                         "actions": [{"actionType": "STOP_LIMIT_AMENDED"}]}}
        )  # fmt: skip
