"""Reconciliation while running: lost broker reports, a day boundary, unknown exposure.

A real engine on a manual clock. Reports are lost between the paper venue and the order actor
by a sink that drops the chosen ones (what a dropped websocket message does); the venue's own
books stay true, so only a comparison with them can find what was lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.brokers.base import BrokerReport
from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.enums import OrderStatus, OrderType, PauseCause, Side
from domain.messages import (
    FillReport,
    InjectFault,
    OrderRequest,
    QueryReconcileReport,
    QuerySnapshot,
)
from domain.messages.api import ReconcileReportView
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.actor.test_supervision import restarts

QUIET = {
    # No ticks flow and the clock runs ahead of the actors in these tests: staleness and
    # ping-timeout pauses would only add noise.
    "heartbeats": {
        "marketdata_stale_s": 3600,
        "order_stream_stale_s": 3600,
        "actor_ping_timeout_s": 3600,
    },
    "reconciliation": {
        "in_flight_interval_s": 1,
        "open_orders_interval_s": 5,
        "positions_interval_s": 10,
        "drift_grace_s": 3,
        "max_failures": 3,
    },
}


class LostReports:
    """Sits between the venue and the order actor and drops the reports ``rule`` picks."""

    def __init__(self, desk: Desk, rule: Callable[[BrokerReport], bool]) -> None:
        self._desk = desk
        self.rule = rule
        self.dropped: list[BrokerReport] = []
        assert desk.engine.broker is not None
        desk.engine.broker.set_report_sink(self._deliver)

    def _deliver(self, report: BrokerReport) -> None:
        if self.rule(report):
            self.dropped.append(report)
            return
        self._desk.engine.directory.tell("order", report)


def report(desk: Desk) -> ReconcileReportView:
    return desk.engine.directory.ask("order", QueryReconcileReport(), timeout_s=5)


def advance(desk: Desk, seconds: float) -> None:
    """Move the clock one second at a time, each time waiting until the order actor holds a
    lease valid past the NEXT step: the actor handles a timer late, at whatever the clock says
    by then, and a lease that merely covers the new time has expired by the next step (the
    pass is then skipped as 'not leader', and several skipped passes collapse into one)."""
    for _ in range(round(seconds)):
        desk.step(1.0)
        next_step = desk.clock.now_ns() + NANOS_PER_SECOND

        def renewed(next_step: int = next_step) -> bool:
            snapshot = desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
            leadership = snapshot["leadership"]
            return leadership is not None and leadership["lease_expires_ns"] > next_step

        desk.settle(renewed, what="lease renewed")


def advance_until(desk: Desk, condition: Callable[[], Any], *, max_s: int, what: str) -> Any:
    for _ in range(max_s):
        advance(desk, 1)
        value = condition()
        if value:
            return value
    return desk.settle(condition, what=what)


def venue_orders(desk: Desk) -> dict[str, OrderStatus]:
    assert desk.engine.broker is not None
    return {r.client_order_id: r.status for r in desk.engine.broker.list_orders()}


def venue_position(desk: Desk, instrument: str) -> int:
    assert desk.engine.broker is not None
    return sum(
        p.quantity for p in desk.engine.broker.list_positions() if p.instrument == instrument
    )


def drift_events(desk: Desk) -> list[Any]:
    assert desk.engine.database is not None
    desk.flush_storage()  # the order actor's events follow its books by milliseconds
    with UnitOfWork(desk.engine.database) as uow:
        return uow.events.list_recent(200, event="RECONCILE_DRIFT")


def pause_causes(desk: Desk) -> tuple[PauseCause, ...]:
    return desk.trading().state.pause_causes


@pytest.fixture
def quiet(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(**QUIET)
    desk.ready_to_trade()
    return desk


def test_a_fill_whose_report_was_lost_is_applied_and_protected(quiet: Desk) -> None:
    lost = LostReports(
        quiet,
        lambda r: isinstance(r, FillReport) and r.client_order_id.endswith("E"),
    )
    plan = quiet.send_plan(quantity=10)
    entry_id = plan.plan_client_id + "E"
    quiet.settle(lambda: lost.dropped, what="the entry's fill report lost")
    assert venue_position(quiet, "AAA") == 10
    # Without the fill our books hold no position, so nothing protects the venue's 10.
    assert not quiet.working_legs(plan.plan_client_id).get("STOP")

    # The open-orders loop (every 5 s) finds the fill; passes go on while the clock moves, so
    # a pass that had to defer (the actor busy, a renewal in flight) is not the last chance.
    legs = advance_until(
        quiet,
        lambda: (
            legs
            if set(legs := quiet.working_legs(plan.plan_client_id)) == {"STOP", "TARGET"}
            else None
        ),
        max_s=15,
        what="protection placed from the fill the reconciliation found",
    )
    assert [o.quantity for o in legs["STOP"]] == [10]
    [entry] = [o for o in quiet.orders_for(plan.plan_client_id) if o.client_order_id == entry_id]
    assert entry.status is OrderStatus.FILLED and entry.filled_quantity == 10
    seen = report(quiet)
    assert any("applied missed fill" in action for action in seen.actions) or seen.runs > 1
    assert [p.quantity for p in quiet.portfolio().portfolio.positions] == [10]


def test_a_stop_cancelled_at_the_broker_with_its_report_lost_is_replaced(quiet: Desk) -> None:
    plan_id = open_position(quiet, quantity=10)
    [stop] = quiet.settle(
        lambda: [
            o for o in quiet.working_legs(plan_id)["STOP"] if o.status is OrderStatus.ACCEPTED
        ],
        what="the stop acknowledged",
    )
    lost = LostReports(quiet, lambda r: getattr(r, "client_order_id", "") == stop.client_order_id)
    assert quiet.engine.broker is not None
    quiet.engine.broker.cancel_order(stop.client_order_id)  # the venue's doing, not ours
    quiet.settle(
        lambda: venue_orders(quiet).get(stop.client_order_id) is OrderStatus.CANCELLED,
        what="stop cancelled at the venue",
    )
    assert lost.dropped
    assert quiet.working_legs(plan_id)["STOP"][0].status is OrderStatus.ACCEPTED  # believed

    def replaced() -> list[str]:
        return [
            o.client_order_id
            for o in quiet.working_legs(plan_id).get("STOP", [])
            if o.client_order_id != stop.client_order_id
        ]

    [new_stop] = advance_until(quiet, replaced, max_s=8, what="a new stop placed")
    assert venue_orders(quiet)[new_stop].is_working
    statuses = {o.client_order_id: o.status for o in quiet.orders_for(plan_id)}
    assert statuses[stop.client_order_id] is OrderStatus.CANCELLED


def test_a_broker_position_we_do_not_know_pauses_entries_until_it_goes_away(
    quiet: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    assert quiet.engine.broker is not None
    quiet.engine.broker.submit_order(
        OrderRequest(
            client_order_id="MANUAL-1",
            instrument="BBB",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=20,
        )
    )
    quiet.settle(lambda: venue_position(quiet, "BBB") == 20, what="someone else's position")
    advance_until(
        quiet,
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(quiet),
        max_s=15,
        what="entries paused on drift",
    )
    seen = report(quiet)
    assert not seen.clean
    [bbb] = [i for i in seen.instruments if i.instrument == "BBB"]
    assert (bbb.local_quantity, bbb.broker_quantity, bbb.difference) == (0, 20, 20)
    assert "MANUAL-1" in seen.unknown_broker_orders
    assert any("BBB" in d and "not traded against" in d for d in seen.drift)
    [event] = drift_events(quiet)
    assert event.payload["instrument"] == "BBB" and event.payload["unprotected"]
    critical = [r for r in caplog.records if r.levelname == "CRITICAL" and "BBB" in r.getMessage()]
    assert len(critical) == 1
    # Not traded against: nothing of ours was sent for BBB.
    assert all(not cid.startswith("P") for cid in venue_orders(quiet) if cid != "MANUAL-1")

    quiet.engine.broker.submit_order(
        OrderRequest(
            client_order_id="MANUAL-2",
            instrument="BBB",
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=20,
        )
    )
    quiet.settle(lambda: venue_position(quiet, "BBB") == 0, what="position closed")
    advance_until(
        quiet,
        lambda: PauseCause.RECONCILE_DRIFT not in pause_causes(quiet),
        max_s=15,
        what="drift pause cleared by a clean run",
    )
    assert report(quiet).clean


def test_the_report_answers_before_the_first_run_and_after_with_timings(
    desk_factory: Callable[..., Desk],
) -> None:
    from actors.order_reconciliation import OrderReconciler
    from domain.config import ReconciliationConfig

    before = OrderReconciler(ReconciliationConfig(), in_flight_settle_ns=NANOS_PER_SECOND).view()
    assert (before.runs, before.last_run_ns, before.duration_ms, before.clean) == (
        0,
        None,
        None,
        False,
    )
    desk = desk_factory(**QUIET)
    desk.ready_to_trade()
    at_start = report(desk)
    assert at_start.runs >= 1 and at_start.trigger == "start"
    assert at_start.last_run_ns is not None and at_start.duration_ms is not None
    assert at_start.clean and at_start.error is None
    # The open-orders loop is due 5 s after the start's run; a timer that lands before the
    # lease renewal reaches the order actor skips its pass (not leader), so allow a few more.
    later = advance_until(
        desk,
        lambda: (view := report(desk)).runs > at_start.runs and view,
        max_s=20,
        what="a scheduled reconciliation run",
    )
    assert later.last_run_ns is not None and later.last_run_ns > at_start.last_run_ns


# ------------------------------------------------------------------ the IST day boundary
# 2026-01-01T18:29:57Z is 23:59:57 IST: the entry fills just before midnight, its reports are
# lost, and the next day's order and fill lists no longer show it.
BEFORE_IST_MIDNIGHT_NS = (1_767_225_600 + 18 * 3600 + 29 * 60 + 57) * NANOS_PER_SECOND


class TestAcrossTheIstDayBoundary:
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock(start_ns=BEFORE_IST_MIDNIGHT_NS)

    @pytest.fixture
    def midnight(self, desk_factory: Callable[..., Desk]) -> Iterator[tuple[Desk, str]]:
        desk = desk_factory(**QUIET)
        desk.ready_to_trade()
        lost = LostReports(desk, lambda r: getattr(r, "client_order_id", "").endswith("E"))
        plan = desk.send_plan(quantity=10)
        desk.settle(lambda: venue_position(desk, "AAA") == 10, what="entry filled at the venue")
        assert lost.dropped
        yield desk, plan.plan_client_id + "E"

    def test_a_fill_lost_across_the_ist_day_boundary_is_reported_as_drift(
        self, midnight: tuple[Desk, str]
    ) -> None:
        desk, entry_id = midnight
        advance(desk, 4)  # past 00:00 IST and past the in-flight settle delay
        assert desk.engine.broker is not None
        # The venue, like a real broker, lists only today's fills and orders.
        assert not [f for f in desk.engine.broker.list_fills() if f.client_order_id == entry_id]
        advance_until(
            desk,
            lambda: PauseCause.RECONCILE_DRIFT in pause_causes(desk),
            max_s=15,
            what="entries paused on drift",
        )
        seen = report(desk)
        [aaa] = [i for i in seen.instruments if i.instrument == "AAA"]
        assert (aaa.local_quantity, aaa.broker_quantity) == (0, 10)
        assert any(d.startswith("AAA: the broker holds +10") for d in seen.drift), seen.drift
        # Yesterday's entry expired with the day (never resent); the broker's position, not
        # our books, shows that it had filled, and only an operator can decide what to do.
        [entry] = [o for o in desk.orders_for(entry_id[:-1]) if o.client_order_id == entry_id]
        assert entry.status.is_terminal and "EXPIRED" in (entry.reason or ""), entry

    def test_an_entry_refused_as_a_duplicate_is_not_resent_every_second(
        self, midnight: tuple[Desk, str]
    ) -> None:
        desk, entry_id = midnight
        advance(desk, 15)
        assert desk.engine.broker is not None
        # The first send and at most one resend (answered DUPLICATE_CLIENT_ORDER_ID), not one a
        # second.
        assert desk.engine.broker.submission_counts()[entry_id] <= 2


@pytest.mark.parametrize("lost_call", ["list_open_orders", "list_fills"])
def test_a_broker_that_cannot_be_asked_is_reported_logged_once_and_pauses_entries(
    desk_factory: Callable[..., Desk], caplog: pytest.LogCaptureFixture, lost_call: str
) -> None:
    # The scheduled runs are light (open orders, recent fills): losing either call fails the
    # run as losing the whole order list did.
    desk = desk_factory(broker_faults=True, **QUIET)
    desk.ready_to_trade()
    assert desk.engine.faults is not None
    desk.engine.faults.lose_next(lost_call, loss="request", times=4)
    seen = advance_until(
        desk,
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(desk) and report(desk),
        max_s=20,
        what="entries paused: the books cannot be checked",
    )
    assert seen.error is not None and seen.error.startswith("BROKER_UNREACHABLE")
    assert not seen.clean
    advance_until(
        desk,
        lambda: PauseCause.RECONCILE_DRIFT not in pause_causes(desk),
        max_s=20,
        what="the pause cleared by a clean run once the broker answers",
    )
    assert report(desk).error is None and report(desk).clean
    assert len(desk.engine.faults.lost) == 4
    unreachable = [r for r in caplog.records if "cannot reach the broker" in r.getMessage()]
    assert len(unreachable) == 1  # once, not on every failed attempt


def test_a_drift_pause_lost_with_a_restarted_kill_switch_is_told_again(quiet: Desk) -> None:
    assert quiet.engine.broker is not None
    quiet.engine.broker.submit_order(
        OrderRequest(
            client_order_id="MANUAL-1",
            instrument="BBB",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=10,
        )
    )
    quiet.settle(lambda: venue_position(quiet, "BBB") == 10, what="someone else's position")
    advance_until(
        quiet,
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(quiet),
        max_s=15,
        what="entries paused on drift",
    )
    # RECONCILE_DRIFT is a condition, not persisted by the kill switch: a restart forgets it.
    quiet.engine.directory.tell("kill_switch", InjectFault(detail="kill switch drill"))
    quiet.settle(lambda: restarts(quiet, "kill_switch") == 1, what="kill switch restarted")
    advance_until(
        quiet,
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(quiet),
        max_s=3,
        what="the drift pause told again",
    )
    assert len(drift_events(quiet)) == 1  # one drift, recorded once


# ------------------------------------------------------------------ light and full runs
@pytest.mark.parametrize("lost", ["fill", "every report"])
def test_a_filled_order_the_light_runs_cannot_explain_is_settled_by_a_full_run_never_resent(
    desk_factory: Callable[..., Desk], lost: str
) -> None:
    # The entry fills at the venue; its fill report (or every report: it stays in flight for
    # us) is lost, and the venue's trade list shows the fill late. The light runs see only that
    # it is gone from the open orders: they must not resend or settle it, but ask for the whole
    # lists, which show it FILLED; once its fill is listed, long after any light run's window,
    # a full run books it and the protection follows.
    desk = desk_factory(broker_faults=True, **QUIET)
    desk.ready_to_trade()
    assert desk.engine.faults is not None and desk.engine.broker is not None
    lost_reports = LostReports(
        desk,
        lambda r: (
            getattr(r, "client_order_id", "").endswith("E")
            and (lost == "every report" or isinstance(r, FillReport))
        ),
    )
    plan = desk.send_plan(quantity=10)
    entry_id = plan.plan_client_id + "E"
    desk.engine.faults.hide_fills(entry_id)
    desk.settle(lambda: venue_position(desk, "AAA") == 10, what="entry filled at the venue")
    assert lost_reports.dropped
    advance_until(
        desk,
        lambda: any(a.startswith("whole lists asked") for a in report(desk).actions),
        max_s=15,
        what="a light run asking for the whole lists",
    )
    advance(desk, 70)  # the fill is now older than any light run's window
    assert desk.engine.broker.submission_counts()[entry_id] == 1  # never resent
    assert not desk.working_legs(plan.plan_client_id).get("STOP")
    assert not any("settled" in action for action in report(desk).actions)

    desk.engine.faults.show_fills(entry_id)
    legs = advance_until(
        desk,
        lambda: (
            legs
            if set(legs := desk.working_legs(plan.plan_client_id)) == {"STOP", "TARGET"}
            else None
        ),
        max_s=15,
        what="protection placed from the fill a full run found",
    )
    assert [o.quantity for o in legs["STOP"]] == [10]
    [entry] = [o for o in desk.orders_for(plan.plan_client_id) if o.client_order_id == entry_id]
    assert entry.status is OrderStatus.FILLED and entry.filled_quantity == 10
    assert desk.engine.broker.submission_counts()[entry_id] == 1
