"""The trading-day schedule on a manual clock (issue 8: the scheduler actor).

A real engine with ``scheduler.enabled``; the clock is set to exchange-local instants
(Asia/Kolkata). Leases, staleness and liveness limits are set longer than the clock jumps
here: those watchdogs have their own tests, and a jump of ten minutes would trip them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.enums import PauseCause, TradingState
from domain.messages import InjectFault, PauseEntries, QuerySchedule, QuerySnapshot
from domain.schedule import CARRIED_OVER_FLATTEN_DETAIL, EOD_FLATTEN_DETAIL
from launcher.preflight import StartupError
from tests.actor.conftest import Desk
from tests.helpers import make_config

IST = ZoneInfo("Asia/Kolkata")
_LONG_S = 10 * 24 * 3600.0
MONDAY = (2026, 1, 5)  # an NSE session (2026-01-05)
TUESDAY = (2026, 1, 6)
SATURDAY = (2026, 1, 10)
HOLIDAY = (2026, 1, 12)  # a Monday the test's config closes (extra_holidays)

SCHEDULED: dict[str, Any] = {
    "scheduler": {"enabled": True, "extra_holidays": ["2026-01-12"]},
    "leader": {"lease_ttl_s": _LONG_S, "renew_interval_s": 1.0},
    "heartbeats": {
        "marketdata_stale_s": _LONG_S,
        "order_stream_stale_s": _LONG_S,
        "actor_ping_timeout_s": _LONG_S,
    },
}


def ist(day: tuple[int, int, int], hour: int, minute: int, second: int = 0) -> int:
    local = datetime(*day, hour, minute, second, tzinfo=IST)
    return int(local.timestamp()) * NANOS_PER_SECOND


def build(
    desk_factory: Callable[..., Desk], clock: ManualClock, at_ns: int, **overrides: Any
) -> Desk:
    clock.set(at_ns)
    desk = desk_factory(**{**SCHEDULED, **overrides})

    def taken_over() -> bool:
        order = desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
        leadership = order["leadership"]
        return leadership is not None and order["taken_over_epoch"] == leadership["epoch"]

    desk.settle(taken_over, what="lease held and the book taken over")
    return desk


def at(desk: Desk, when_ns: int) -> None:
    """Move the clock to ``when_ns``, quote both instruments there, fire a timer."""
    desk.clock.set(when_ns)
    desk.quote("AAA", "100.00", "100.10")
    desk.quote("BBB", "200.00", "200.10")
    desk.step()


def causes(desk: Desk) -> set[PauseCause]:
    return set(desk.trading().state.pause_causes)


def entries_open(desk: Desk) -> bool:
    state = desk.trading().state
    return state.state is TradingState.ACTIVE and state.armed


def blocked(desk: Desk, before: int) -> bool:
    return desk.engine.control.risk().blocks.get("TRADING_PAUSED", 0) > before  # type: ignore[union-attr]


def paused_blocks(desk: Desk) -> int:
    return desk.engine.control.risk().blocks.get("TRADING_PAUSED", 0)  # type: ignore[union-attr]


def open_position(desk: Desk, **plan: Any) -> str:
    sent = desk.send_plan(**plan)
    desk.settle(
        lambda: set(desk.working_legs(sent.plan_client_id)) == {"STOP", "TARGET"},
        what="entry filled and both siblings working",
    )
    return sent.plan_client_id


def venue_working(desk: Desk) -> list[dict[str, Any]]:
    assert desk.engine.broker is not None
    return list(desk.engine.broker.snapshot()["working_orders"])


def scheduler_restarts(desk: Desk) -> int:
    supervisor = desk.engine.directory.get("supervisor")
    assert supervisor is not None
    health = supervisor.proxy().actor_health().get(timeout=5)["scheduler"]
    return health["restarts"] if health["alive"] else -1


def schedule_count(desk: Desk, action: str) -> float:
    value = desk.engine.metrics.registry.get_sample_value(
        "trader_schedule_actions_total", {"action": action}
    )
    return value or 0.0


class TestSessionGate:
    def test_no_entry_at_0914_59_and_entries_from_0915(
        self, desk_factory: Callable[..., Desk], clock: ManualClock
    ) -> None:
        desk = build(desk_factory, clock, ist(MONDAY, 9, 14, 0))
        at(desk, ist(MONDAY, 9, 14, 59))
        desk.settle(lambda: PauseCause.OUTSIDE_SESSION in causes(desk), what="session pause")
        before = paused_blocks(desk)
        early = desk.send_plan()
        desk.settle(lambda: blocked(desk, before), what="the 09:14:59 plan refused")
        assert desk.orders_for(early.plan_client_id) == []

        at(desk, ist(MONDAY, 9, 15, 0))
        desk.settle(lambda: entries_open(desk), what="entries open at 09:15")
        assert PauseCause.OUTSIDE_SESSION not in causes(desk)
        plan_id = open_position(desk)
        assert [p.position_id for p in desk.portfolio().portfolio.positions] == [plan_id]
        assert schedule_count(desk, "SESSION_OPEN") == 1

    def test_a_weekend_and_a_configured_holiday_take_no_entry(
        self, desk_factory: Callable[..., Desk], clock: ManualClock
    ) -> None:
        desk = build(desk_factory, clock, ist(SATURDAY, 10, 0))
        for day in (SATURDAY, HOLIDAY):
            at(desk, ist(day, 11, 0))
            desk.settle(lambda: PauseCause.OUTSIDE_SESSION in causes(desk), what="paused")
            before = paused_blocks(desk)
            plan = desk.send_plan()
            desk.settle(lambda before=before: blocked(desk, before), what=f"{day} refused")
            assert desk.orders_for(plan.plan_client_id) == []
        # The library knows 2026-01-12 as a session: the configuration closed it. The next
        # day trades.
        at(desk, ist((2026, 1, 13), 11, 0))
        desk.settle(lambda: entries_open(desk), what="entries open on Tuesday")


class TestEndOfDay:
    def test_tighten_at_1520_flat_at_1525_then_reset_and_resume_at_the_next_open(
        self, desk_factory: Callable[..., Desk], clock: ManualClock
    ) -> None:
        desk = build(desk_factory, clock, ist(MONDAY, 15, 10))
        at(desk, ist(MONDAY, 15, 10))
        desk.settle(lambda: entries_open(desk), what="entries open at 15:10")
        assert desk.engine.control is not None
        assert (
            desk.engine.control.status().next_scheduled_action
            == "TIGHTEN_STOPS at 2026-01-05T15:20:00+05:30"
        )
        long_aaa = open_position(desk)  # bought at 100.10, stop 99.00
        long_bbb = open_position(
            desk, instrument="BBB", entry="200.10", stop="199.00", target="202.00"
        )

        # 15:19:59: nothing moves yet.
        desk.clock.set(ist(MONDAY, 15, 19, 59))
        desk.quote("AAA", "100.50", "100.60")
        desk.quote("BBB", "200.50", "200.60")
        desk.step()
        stops = {o["client_order_id"]: o for o in venue_working(desk) if o["order_type"] == "STOP"}
        assert sorted(Decimal(str(o["trigger_price"])) for o in stops.values()) == [
            Decimal("99.00"),
            Decimal("199.00"),
        ]

        # 15:20: entries stop and every stop moves to break-even at the venue.
        desk.clock.set(ist(MONDAY, 15, 20, 0))
        desk.step()

        def stops_at_break_even() -> bool:
            triggers = sorted(
                Decimal(str(o["trigger_price"]))
                for o in venue_working(desk)
                if o["order_type"] == "STOP"
            )
            return triggers == [Decimal("100.10"), Decimal("200.10")]

        desk.settle(stops_at_break_even, what="both stops at break-even at the venue")
        for plan_id in (long_aaa, long_bbb):
            legs = desk.working_legs(plan_id)
            assert len(legs["STOP"]) == 1 and len(legs["TARGET"]) == 1  # no orphan, no twin
        assert PauseCause.OUTSIDE_SESSION in causes(desk)
        before = paused_blocks(desk)
        late = desk.send_plan(instrument="AAA")
        desk.settle(lambda: blocked(desk, before), what="the 15:20 plan refused")
        assert desk.orders_for(late.plan_client_id) == []

        # 15:22: AAA falls through its tightened stop. The exit goes out under the pause.
        desk.clock.set(ist(MONDAY, 15, 22))
        desk.quote("AAA", "100.05", "100.15")
        desk.settle(lambda: not desk.working_legs(long_aaa), what="AAA stopped out at 15:22")

        # 15:25: everything flat, nothing working anywhere.
        desk.clock.set(ist(MONDAY, 15, 25))
        desk.quote("BBB", "200.40", "200.50")
        desk.step()
        desk.settle(
            lambda: not desk.portfolio().portfolio.positions and not venue_working(desk),
            what="flat at 15:25",
        )
        assert not desk.working_legs(long_bbb)
        flatten = [p for p in desk.trading().pauses if p.cause is PauseCause.FLATTEN]
        assert [p.detail for p in flatten] == [EOD_FLATTEN_DETAIL]
        realized = desk.portfolio().portfolio.realized_pnl_today
        assert realized != 0
        assert schedule_count(desk, "TIGHTEN_STOPS") == 1
        assert schedule_count(desk, "HARD_FLAT") == 1

        # After the close, before the next open: still paused (both causes).
        at(desk, ist(TUESDAY, 9, 14, 59))
        assert {PauseCause.OUTSIDE_SESSION, PauseCause.FLATTEN} <= causes(desk)
        # The day rolled: realized PnL today is Tuesday's (nothing yet).
        desk.settle(
            lambda: desk.portfolio().portfolio.realized_pnl_today == 0,
            what="daily PnL reset on the new trading day",
        )

        at(desk, ist(TUESDAY, 9, 15))
        desk.settle(lambda: entries_open(desk), what="trading resumes at Tuesday's open")
        assert causes(desk) == set()
        tuesday = open_position(desk)
        assert [p.position_id for p in desk.portfolio().portfolio.positions] == [tuesday]

    def test_an_operators_flatten_pause_survives_the_next_open(
        self, desk_factory: Callable[..., Desk], clock: ManualClock
    ) -> None:
        desk = build(desk_factory, clock, ist(MONDAY, 16, 0))
        at(desk, ist(MONDAY, 16, 0))
        desk.engine.directory.ask(
            "kill_switch",
            PauseEntries(cause=PauseCause.FLATTEN, detail="operator drill"),
            timeout_s=5,
        )
        at(desk, ist(TUESDAY, 9, 15))
        desk.settle(
            lambda: PauseCause.OUTSIDE_SESSION not in causes(desk), what="session open handled"
        )
        assert causes(desk) == {PauseCause.FLATTEN}
        view = desk.engine.directory.ask("scheduler", QuerySchedule(), timeout_s=5)
        assert view.phase == "OPEN" and "SESSION_OPEN" in view.done_today

    def test_a_start_after_the_flat_time_flattens_without_waiting(
        self, desk_factory: Callable[..., Desk], clock: ManualClock
    ) -> None:
        desk = build(desk_factory, clock, ist(MONDAY, 15, 10))
        at(desk, ist(MONDAY, 15, 10))
        desk.settle(lambda: entries_open(desk), what="entries open")
        open_position(desk)
        # The clock jumps past both marks (a stalled host, a replay gap): flat all the same.
        at(desk, ist(MONDAY, 15, 27))
        desk.settle(
            lambda: not desk.portfolio().portfolio.positions and not venue_working(desk),
            what="flat after a jump past 15:25",
        )
        assert schedule_count(desk, "HARD_FLAT") == 1


def test_an_unknown_calendar_stops_the_start_with_one_line(
    tmp_path: Path, engine_factory: Callable[..., Any]
) -> None:
    config = make_config(tmp_path, scheduler={"enabled": True, "calendar": "NOPE"})
    with pytest.raises(StartupError, match="'NOPE' is not a pandas-market-calendars calendar"):
        engine_factory(config)


def test_a_restarted_scheduler_keeps_the_pause_and_tightens_nothing_twice(
    desk_factory: Callable[..., Desk], clock: ManualClock
) -> None:
    desk = build(desk_factory, clock, ist(MONDAY, 15, 10))
    at(desk, ist(MONDAY, 15, 10))
    desk.settle(lambda: entries_open(desk), what="entries open")
    plan_id = open_position(desk)
    desk.clock.set(ist(MONDAY, 15, 20))
    desk.quote("AAA", "100.50", "100.60")
    desk.step()

    def one_stop_at(trigger: str) -> bool:
        stops = [o for o in venue_working(desk) if o["order_type"] == "STOP"]
        return [Decimal(str(o["trigger_price"])) for o in stops] == [Decimal(trigger)]

    desk.settle(lambda: one_stop_at("100.10"), what="stop at break-even")
    desk.engine.directory.tell("scheduler", InjectFault(detail="scheduler drill"))
    desk.settle(lambda: scheduler_restarts(desk) == 1, what="scheduler restarted")
    desk.clock.set(ist(MONDAY, 15, 21))
    desk.quote("AAA", "100.80", "100.90")
    desk.step()
    drain_scheduler(desk)
    desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
    desk.settle(lambda: PauseCause.OUTSIDE_SESSION in causes(desk), what="still paused")
    # The new incarnation tightened again: the stop was already at break-even, nothing moved.
    assert one_stop_at("100.10")
    stops = [o for o in desk.orders_for(plan_id) if o.leg.value == "STOP"]
    assert len(stops) == 2  # the first stop (cancelled) and its one replacement


def gauge(desk: Desk, name: str, labels: dict[str, str] | None = None) -> float | None:
    return desk.engine.metrics.registry.get_sample_value(name, labels or {})


def test_the_session_gauge_follows_the_phase_for_the_heartbeat_alerts(
    desk_factory: Callable[..., Desk], clock: ManualClock
) -> None:
    desk = build(desk_factory, clock, ist(MONDAY, 9, 0))
    at(desk, ist(MONDAY, 9, 0))
    desk.settle(lambda: gauge(desk, "trader_session_open") == 0, what="closed before the open")
    assert gauge(desk, "trader_schedule_phase", {"phase": "CLOSED"}) == 1
    for when, phase, session in (
        (ist(MONDAY, 9, 15), "OPEN", 1),
        (ist(MONDAY, 15, 20), "TIGHTEN", 1),
        (ist(MONDAY, 15, 25), "FLAT", 1),
        (ist(MONDAY, 15, 30), "CLOSED", 0),
        (ist(SATURDAY, 11, 0), "CLOSED", 0),
    ):
        at(desk, when)
        desk.settle(
            lambda phase=phase: gauge(desk, "trader_schedule_phase", {"phase": phase}) == 1,
            what=f"phase {phase}",
        )
        assert gauge(desk, "trader_session_open") == session, phase
        others = [p for p in ("OPEN", "TIGHTEN", "FLAT", "CLOSED") if p != phase]
        assert [gauge(desk, "trader_schedule_phase", {"phase": p}) for p in others] == [0] * 3


def test_with_the_scheduler_off_the_session_gauge_says_always_open(
    desk_factory: Callable[..., Desk], clock: ManualClock
) -> None:
    clock.set(ist(SATURDAY, 23, 0))
    desk = desk_factory()
    desk.step()
    assert gauge(desk, "trader_session_open") == 1


# -- the exchange holiday list running out -------------------------------------------------------
def library_holidays_end() -> datetime:
    """The last day the installed pandas-market-calendars lists XNSE holidays for (its year's
    end): the tests follow the library rather than hard-code its year."""
    from datetime import date

    from adapters.calendars import load_schedule
    from domain.config import SchedulerConfig

    through = load_schedule(SchedulerConfig(enabled=True), date(2026, 1, 5)).days
    assert through.library_holidays_through is not None
    end = through.library_holidays_through
    return datetime(end.year, end.month, end.day, tzinfo=IST)


def local(moment: datetime, hour: int, minute: int = 0) -> int:
    return int(moment.replace(hour=hour, minute=minute).timestamp()) * NANOS_PER_SECOND


def drain_scheduler(desk: Desk) -> None:
    """Wait until the scheduler has handled every timer fired so far: the supervisor fans a
    timer out before it answers an ask queued behind it; the scheduler likewise."""
    desk.engine.directory.ask("supervisor", QuerySnapshot(), timeout_s=10)
    desk.engine.directory.ask("scheduler", QuerySnapshot(), timeout_s=10)


def holiday_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "event", None) == "HOLIDAYS_UNKNOWN"
        and record.levelno == logging.WARNING
    ]


def test_a_holiday_list_ending_within_30_days_is_warned_once_a_day_and_shown_in_status(
    desk_factory: Callable[..., Desk], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    end = library_holidays_end()
    quiet = end - timedelta(days=31)  # 31 days before the end: nothing yet
    desk = build(desk_factory, clock, local(quiet, 11), scheduler={"enabled": True})
    at(desk, local(quiet, 11))
    at(desk, local(quiet, 12))
    drain_scheduler(desk)
    assert holiday_warnings(caplog) == []
    assert desk.engine.control is not None
    assert desk.engine.control.status().schedule_warnings == []

    soon = end - timedelta(days=29)
    at(desk, local(soon, 11))
    at(desk, local(soon, 12))  # the same day: no second line
    drain_scheduler(desk)
    [line] = holiday_warnings(caplog)
    assert line.startswith(f"HOLIDAYS_UNKNOWN_SOON: the exchange holiday list ends {end.date()}")
    assert "set scheduler.extra_holidays" in line
    assert desk.engine.control.status().schedule_warnings == [line]
    view = desk.engine.directory.ask("scheduler", QuerySchedule(), timeout_s=5)
    assert view.holidays_known_through == end.date().isoformat()
    at(desk, local(soon + timedelta(days=1), 11))  # the next day: once more
    drain_scheduler(desk)
    assert len(holiday_warnings(caplog)) == 2


def test_a_day_past_the_holiday_list_warns_and_fails_the_prelive_safety_guard(
    desk_factory: Callable[..., Desk], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    past = library_holidays_end() + timedelta(days=5)
    desk = build(desk_factory, clock, local(past, 11), scheduler={"enabled": True})
    at(desk, local(past, 11))
    drain_scheduler(desk)
    [line] = holiday_warnings(caplog)
    assert line.startswith(f"HOLIDAYS_UNKNOWN: no exchange holiday list for today {past.date()}")
    assert f"published holidays for {past.year}" in line
    assert desk.engine.control is not None
    prelive = desk.engine.control.prelive_run()
    [guard] = [check for check in prelive.checks if check.name == "Safety guard"]
    assert not guard.passed
    assert f"today {past.date()} may be a holiday; set scheduler.extra_holidays" in guard.details


def test_the_configured_holidays_of_the_next_year_cover_it(
    desk_factory: Callable[..., Desk], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    past = library_holidays_end() + timedelta(days=5)
    next_year_holiday = f"{past.year}-01-26"
    desk = build(
        desk_factory,
        clock,
        local(past, 11),
        scheduler={"enabled": True, "extra_holidays": [next_year_holiday]},
    )
    at(desk, local(past, 11))
    drain_scheduler(desk)
    assert holiday_warnings(caplog) == []
    assert desk.engine.control is not None
    assert desk.engine.control.status().schedule_warnings == []
    prelive = desk.engine.control.prelive_run()
    [guard] = [check for check in prelive.checks if check.name == "Safety guard"]
    assert "holiday" not in guard.details


# -- positions carried past the hard flat by an engine that was down across it ----------------
def at_price(desk: Desk, when_ns: int) -> None:
    """Like ``at``, with AAA above a break-even stop (100.10), so nothing stops out."""
    desk.clock.set(when_ns)
    desk.quote("AAA", "100.50", "100.60")
    desk.quote("BBB", "200.00", "200.10")
    desk.step()


def carried_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "event", None) == "CARRIED_OVER" and record.levelno == logging.CRITICAL
    ]


def test_positions_carried_past_the_hard_flat_are_flattened_at_the_next_open_before_any_entry(
    desk_factory: Callable[..., Desk], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = build(desk_factory, clock, ist(MONDAY, 15, 10))
    at(first, ist(MONDAY, 15, 10))
    first.settle(lambda: entries_open(first), what="entries open")
    plan_id = open_position(first)
    at_price(first, ist(MONDAY, 15, 24))
    first.engine.stop()  # down across 15:25: no hard flat

    desk = build(desk_factory, clock, ist(MONDAY, 16, 0))
    at_price(desk, ist(MONDAY, 16, 0))
    desk.settle(lambda: carried_lines(caplog), what="CRITICAL CARRIED_OVER")
    [line] = carried_lines(caplog)
    assert plan_id in line and "not flattened by their day's hard flat" in line
    assert desk.engine.control is not None
    [warning] = desk.engine.control.status().schedule_warnings
    assert warning.startswith(f"CARRIED_OVER: {plan_id} (orb_1 AAA BUY")
    assert "flattened at the next open (SESSION_OPEN at 2026-01-06T09:15:00+05:30)" in warning
    # Outside the session nothing is flattened (the exchange is closed) and nothing trades.
    at_price(desk, ist(MONDAY, 20, 0))
    at_price(desk, ist(TUESDAY, 9, 14, 59))
    assert [p.position_id for p in desk.portfolio().portfolio.positions] == [plan_id]
    assert len(carried_lines(caplog)) == 1  # once for the same positions

    # 09:15: the FLATTEN pause (carried_over_flat) is in force before OUTSIDE_SESSION lifts.
    desk.clock.set(ist(TUESDAY, 9, 15))
    desk.quote("AAA", "100.50", "100.60")
    desk.step()
    desk.settle(lambda: PauseCause.OUTSIDE_SESSION not in causes(desk), what="session open handled")
    flatten = [p.detail for p in desk.trading().pauses if p.cause is PauseCause.FLATTEN]
    assert flatten == [CARRIED_OVER_FLATTEN_DETAIL]
    assert not entries_open(desk)
    before = paused_blocks(desk)
    early = desk.send_plan(instrument="BBB", entry="200.10", stop="199.00", target="202.00")
    desk.settle(lambda: blocked(desk, before), what="an entry during the carried flat refused")
    assert desk.orders_for(early.plan_client_id) == []
    desk.settle(
        lambda: not desk.portfolio().portfolio.positions and not venue_working(desk),
        what="the carried position flattened",
    )
    exits = [o for o in desk.orders_for(plan_id) if o.leg.value == "EXIT"]
    assert exits and all(o.status.value == "FILLED" for o in exits)

    # Flat: the next timer resumes the scheduler's FLATTEN pause; entries open.
    at(desk, ist(TUESDAY, 9, 16))
    desk.settle(lambda: entries_open(desk), what="entries resume once flat")
    assert causes(desk) == set()
    assert desk.engine.control.status().schedule_warnings == []
    assert schedule_count(desk, "CARRIED_OVER_FLAT") == 1
    tuesday = open_position(desk)
    assert [p.position_id for p in desk.portfolio().portfolio.positions] == [tuesday]


def test_an_operators_flatten_over_the_carried_flat_stays_after_the_book_is_flat(
    desk_factory: Callable[..., Desk], clock: ManualClock
) -> None:
    first = build(desk_factory, clock, ist(MONDAY, 15, 10))
    at(first, ist(MONDAY, 15, 10))
    first.settle(lambda: entries_open(first), what="entries open")
    open_position(first)
    first.engine.stop()

    desk = build(desk_factory, clock, ist(MONDAY, 16, 0))
    at_price(desk, ist(MONDAY, 16, 0))
    assert desk.engine.control is not None
    desk.settle(
        lambda: desk.engine.control.status().schedule_warnings,  # type: ignore[union-attr]
        what="carried position seen",
    )
    at_price(desk, ist(TUESDAY, 9, 15))
    desk.settle(
        lambda: (
            [p.detail for p in desk.trading().pauses if p.cause is PauseCause.FLATTEN]
            == [CARRIED_OVER_FLATTEN_DETAIL]
        ),
        what="carried flat in force",
    )
    desk.engine.directory.ask(
        "kill_switch",
        PauseEntries(cause=PauseCause.FLATTEN, detail="operator drill"),
        timeout_s=5,
    )
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flat")
    at(desk, ist(TUESDAY, 9, 16))
    drain_scheduler(desk)
    at(desk, ist(TUESDAY, 9, 17))
    drain_scheduler(desk)
    assert causes(desk) == {PauseCause.FLATTEN}
    assert [p.detail for p in desk.trading().pauses] == ["operator drill"]
