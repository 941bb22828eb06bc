"""The runbook's tripwire rows (issue 8, acceptance 1 and 4), one test per row, manual clock.

Each drives its condition, then checks the action, the audit row (who ``watchdog``), the
metric ``trader_tripwire_total{rule}`` and the cause in ``/status``; that the row does not fire
just below its threshold; and that exits go on under the entry pause (a stop still fires, or a
flatten completes).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import OrderStatus, PauseCause, TradingState, TripwireRule
from domain.messages import AuditEntry, InjectFault, PauseEntries, QuerySnapshot
from domain.messages.api import StatusView
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position

NO_ACTION: Callable[[int], None] = lambda _second: None  # noqa: E731
# These tests pass minutes of manual time in a few wall-clock seconds; the liveness ping (a
# child that stops answering for 2 s) judges hangs, not market time, so it is set out of reach.
QUIET_PINGS: dict[str, Any] = {"heartbeats": {"actor_ping_timeout_s": 3600}}


@pytest.fixture
def desk(desk_factory: Callable[..., Desk]) -> Desk:
    built = desk_factory(**QUIET_PINGS)
    built.ready_to_trade()
    return built


# -- helpers -------------------------------------------------------------------------------------
def run_for(desk: Desk, seconds: int, each: Callable[[int], None] = NO_ACTION) -> None:
    """Let ``seconds`` pass one second at a time with fresh quotes (so no heartbeat goes
    stale and the lease is renewed), calling ``each(second)`` before each timer; each timer
    is judged by the watchdog before the next second (it reads the queue depth then)."""
    for second in range(1, seconds + 1):
        desk.clock.advance(1.0)
        each(second)
        desk.quote("AAA", "100.00", "100.10")
        desk.quote("BBB", "200.00", "200.10")
        desk.step()
        drain(desk)


def drain(desk: Desk) -> None:
    """Wait until the watchdog has judged every timer fired so far: the supervisor fans a
    timer out before it answers an ask queued behind it; the watchdog likewise."""
    pass_heartbeats_on(desk)
    desk.engine.directory.ask("watchdog", QuerySnapshot(), timeout_s=10)


def pass_heartbeats_on(desk: Desk) -> None:
    """Wait until the supervisor holds the venue's order-stream heartbeats of every second
    stepped so far: they reach it through the order actor, which a loaded machine lets fall
    seconds behind a test stepping the clock (the supervisor then pauses entries on a stale
    order stream, ORDER_STREAM_STALE, that only the test's pace made stale)."""
    assert desk.engine.broker is not None
    assert desk.engine.broker.flush(timeout_s=10), "the venue's reports were not delivered"
    desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=10)
    desk.engine.directory.ask("supervisor", QuerySnapshot(), timeout_s=10)


def fired(desk: Desk, rule: TripwireRule) -> float:
    value = desk.engine.metrics.registry.get_sample_value(
        "trader_tripwire_total", {"rule": rule.value}
    )
    assert value is not None, "trader_tripwire_total is not exported"
    return value


def watchdog_audits(desk: Desk, rule: TripwireRule) -> list[AuditEntry]:
    assert desk.engine.database is not None
    with UnitOfWork(desk.engine.database) as uow:
        rows = uow.audit.list_recent(1000)
    return [
        row
        for row in rows
        if row.who == "watchdog" and row.action == "TRIPWIRE" and row.detail.startswith(rule.value)
    ]


def status(desk: Desk) -> StatusView:
    assert desk.engine.control is not None
    return desk.engine.control.status()


def causes_of(view: StatusView, rule: TripwireRule) -> list[str]:
    return [cause for cause in view.tripwires if cause.startswith(f"{rule.value}:")]


def fired_rows(desk: Desk, rule: TripwireRule) -> list[AuditEntry]:
    return [row for row in watchdog_audits(desk, rule) if row.outcome == "FIRED"]


def assert_fired_once(desk: Desk, rule: TripwireRule, *, still_active: bool = True) -> None:
    """One FIRED audit row and one count; while the condition holds, the cause in /status."""
    desk.settle(lambda: len(fired_rows(desk, rule)) >= 1, what=f"{rule} audit row")
    [row] = fired_rows(desk, rule)
    assert row.address == "in-process"
    assert fired(desk, rule) == 1
    if still_active:
        [cause] = causes_of(status(desk), rule)
        assert cause.startswith(f"{rule.value}: ")


def assert_quiet(desk: Desk, rule: TripwireRule) -> None:
    drain(desk)
    assert fired(desk, rule) == 0
    assert watchdog_audits(desk, rule) == []
    assert causes_of(status(desk), rule) == []


def pause_details(desk: Desk) -> dict[PauseCause, str]:
    return {pause.cause: pause.detail for pause in desk.trading().pauses}


def stop_fires(desk: Desk, plan_id: str) -> None:
    """Acceptance 4: under the entry pause, the position's stop still triggers and its target
    is cancelled (a broker call made while entries are paused)."""
    desk.quote("AAA", "98.80", "98.90")
    desk.settle(lambda: not desk.working_legs(plan_id), what="stop filled, target cancelled")
    statuses = {order.leg.value: order.status for order in desk.orders_for(plan_id)}
    assert statuses["STOP"] is OrderStatus.FILLED
    assert statuses["TARGET"] is OrderStatus.CANCELLED
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="position closed")


def flattened(desk: Desk) -> None:
    desk.settle(lambda: not desk.portfolio().portfolio.positions, what="flattened")
    assert desk.portfolio().portfolio.working_entry_count == 0


# -- order-ack latency p95 > 800 ms for 2 min: pause, then flatten(reason="latency") ----------
class TestOrderAckLatency:
    def test_acks_slower_than_800_ms_at_p95_for_two_minutes_pause_then_flatten(
        self, desk: Desk
    ) -> None:
        plan_id = open_position(desk)
        # The order actor's own acks reach the watchdog (what it observes into the histogram).
        samples = desk.engine.directory.ask("watchdog", QuerySnapshot(), timeout_s=5)
        assert samples["latency_samples"] >= 1

        def slow_ack(second: int) -> None:
            if second % 5 == 0:  # one ack every 5 s, as the order actor observes it
                desk.engine.metrics.order_latency_ms.observe(900.0)

        run_for(desk, 61)  # the bracket's own (fast) acks leave the 60 s window
        # p95 above 800 ms from the 5th slow ack (25 s): sustained for 2 min at 145 s.
        run_for(desk, 140, slow_ack)
        assert_quiet(desk, TripwireRule.ORDER_ACK_LATENCY)
        assert desk.trading().state.state is TradingState.ACTIVE
        run_for(desk, 6, slow_ack)
        desk.settle(
            lambda: PauseCause.FLATTEN in pause_details(desk),
            what="paused, then the FLATTEN pause",
        )
        pauses = pause_details(desk)
        assert PauseCause.TRIPWIRE_LATENCY in pauses
        assert pauses[PauseCause.FLATTEN] == "latency"
        flattened(desk)  # the exits went out under the entry pause
        assert not desk.working_legs(plan_id)
        assert_fired_once(desk, TripwireRule.ORDER_ACK_LATENCY)
        # Still slow: the same episode, never a second firing.
        run_for(desk, 20, slow_ack)
        assert fired(desk, TripwireRule.ORDER_ACK_LATENCY) == 1

    def test_a_p95_of_exactly_800_ms_does_not_fire(self, desk: Desk) -> None:
        def ack_at_the_limit(second: int) -> None:
            if second % 5 == 0:
                desk.engine.metrics.order_latency_ms.observe(800.0)

        run_for(desk, 200, ack_at_the_limit)
        assert_quiet(desk, TripwireRule.ORDER_ACK_LATENCY)
        assert desk.trading().state.pause_causes == ()


# -- leader lease lost > 10 s: pause and step down ---------------------------------------------
class TestLeaderLost:
    def test_a_lease_lost_for_more_than_the_grace_period_fires_once(self, desk: Desk) -> None:
        ttl_s = desk.engine.config.leader.lease_ttl_s
        desk.clock.advance(ttl_s + 1)  # our lease lapses unrenewed and another instance takes it
        assert desk.engine.database is not None
        with UnitOfWork(desk.engine.database) as uow:
            other = uow.lease.acquire_or_renew(
                instance_id="vigil-other",
                now_ns=desk.clock.now_ns(),
                ttl_ns=int(120 * NANOS_PER_SECOND),
            )
        assert other.is_leader
        desk.quote("AAA", "100.00", "100.10")
        desk.settle(
            lambda: PauseCause.LEADER_LOST in desk.trading().state.pause_causes,
            what="LEADER_LOST pause at once",
        )
        # Just below the grace period (10 s): paused, not yet a tripwire.
        run_for(desk, int(desk.engine.config.leader.grace_s) - 2)
        assert_quiet(desk, TripwireRule.LEADER_LOST)
        run_for(desk, 3)
        assert_fired_once(desk, TripwireRule.LEADER_LOST)
        supervisor = desk.engine.directory.ask("supervisor", QuerySnapshot(), timeout_s=5)
        assert supervisor["stepped_down"]
        assert PauseCause.LEADER_LOST in desk.trading().state.pause_causes
        # No exits here: a deposed instance sends nothing at all (the new leader manages them).


# -- broker rate-limit queue depth rising for 60 s: pause entries only --------------------------
class TestRateLimitBacklog:
    def test_a_queue_growing_for_a_minute_pauses_entries_and_exits_complete(
        self, desk: Desk
    ) -> None:
        plan_id = open_position(desk)
        depth = [0]
        desk.engine.broker_queue_depth = lambda: depth[0]

        def grow(_second: int) -> None:
            depth[0] += 1

        # Empty at the start: after 60 s of growth the window still starts at 0.
        run_for(desk, 60, grow)
        assert_quiet(desk, TripwireRule.RATE_LIMIT_BACKLOG)
        run_for(desk, 2, grow)
        desk.settle(
            lambda: PauseCause.RATE_LIMIT_BACKLOG in desk.trading().state.pause_causes,
            what="RATE_LIMIT_BACKLOG pause",
        )
        assert_fired_once(desk, TripwireRule.RATE_LIMIT_BACKLOG)
        assert PauseCause.FLATTEN not in pause_details(desk)  # entries only
        stop_fires(desk, plan_id)
        # The queue drains: the episode ends, the pause lifts, the rule re-arms.
        depth[0] = 0
        run_for(desk, 1)
        desk.settle(lambda: desk.trading().state.state is TradingState.ACTIVE, what="ACTIVE again")
        outcomes = sorted(
            row.outcome for row in watchdog_audits(desk, TripwireRule.RATE_LIMIT_BACKLOG)
        )
        assert outcomes == ["CLEARED", "FIRED"]
        assert causes_of(status(desk), TripwireRule.RATE_LIMIT_BACKLOG) == []

    def test_a_queue_that_drains_once_is_not_rising(self, desk: Desk) -> None:
        depth = [5]
        desk.engine.broker_queue_depth = lambda: depth[0]

        def grow_but_drain_once(second: int) -> None:
            depth[0] += -3 if second == 30 else 1

        run_for(desk, 80, grow_but_drain_once)
        assert_quiet(desk, TripwireRule.RATE_LIMIT_BACKLOG)


# -- spread blowouts or band rejections > 3 in 1 min: pause, then flatten(market_quality) ------
class TestMarketQuality:
    def test_a_fourth_spread_blowout_in_a_minute_pauses_then_flattens(self, desk: Desk) -> None:
        open_position(desk, instrument="BBB", entry="200.10", stop="198.00", target="204.00")
        desk.quote("AAA", "100.00", "101.00")  # 20 ticks wide; the limit is 10

        def blowouts(count: int) -> None:
            for _ in range(count):
                desk.send_plan()
            desk.settle(
                lambda: (
                    desk.engine.control.risk().blocks.get("SPREAD_BLOWOUT", 0)  # type: ignore[union-attr]
                    >= target
                ),
                what=f"{target} spread blowouts",
            )

        target = 3
        blowouts(3)
        assert_quiet(desk, TripwireRule.MARKET_QUALITY)
        desk.clock.advance(10)
        target = 4
        blowouts(1)
        desk.settle(
            lambda: PauseCause.FLATTEN in pause_details(desk), what="paused, then flattening"
        )
        pauses = pause_details(desk)
        assert PauseCause.TRIPWIRE_MARKET_QUALITY in pauses
        assert pauses[PauseCause.FLATTEN] == "market_quality"
        flattened(desk)
        assert_fired_once(desk, TripwireRule.MARKET_QUALITY)

    def test_three_in_a_minute_and_one_more_after_it_do_not_fire(self, desk: Desk) -> None:
        desk.quote("AAA", "100.00", "101.00")
        for expected in (1, 2, 3):
            desk.send_plan()
            desk.settle(
                lambda n=expected: (
                    desk.engine.control.risk().blocks.get("SPREAD_BLOWOUT", 0)  # type: ignore[union-attr]
                    >= n
                ),
                what="blowout",
            )
        desk.clock.advance(61)  # the first three leave the window
        desk.quote("AAA", "100.00", "101.00")
        desk.quote("BBB", "200.00", "200.10")
        desk.send_plan()
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("SPREAD_BLOWOUT", 0) >= 4,  # type: ignore[union-attr]
            what="fourth blowout",
        )
        assert_quiet(desk, TripwireRule.MARKET_QUALITY)
        assert PauseCause.TRIPWIRE_MARKET_QUALITY not in desk.trading().state.pause_causes

    def test_reports_held_and_told_across_a_watchdog_restart_still_fire_on_the_fourth(
        self, desk_factory: Callable[..., Desk]
    ) -> None:
        # A restart delay of 5 s of manual time: the third report is told while the watchdog
        # is down (no live ref); the first two died with its old incarnation's window.
        desk = desk_factory(**QUIET_PINGS, supervision={"backoff_initial_s": 5, "backoff_max_s": 5})
        desk.ready_to_trade()
        open_position(desk, instrument="BBB", entry="200.10", stop="198.00", target="204.00")

        def blowout(count: int) -> None:
            desk.quote("AAA", "100.00", "101.00")  # 20 ticks wide; the limit is 10
            desk.send_plan()
            desk.settle(
                lambda: (
                    desk.engine.control.risk().blocks.get("SPREAD_BLOWOUT", 0)  # type: ignore[union-attr]
                    >= count
                ),
                what=f"{count} spread blowouts",
            )

        blowout(1)
        blowout(2)
        drain(desk)
        desk.engine.directory.tell("watchdog", InjectFault(detail="watchdog drill"))
        desk.settle(lambda: not desk.engine.directory.is_alive("watchdog"), what="watchdog down")
        blowout(3)  # told while it is down
        for _second in range(6):  # the supervisor's timer restarts it after 5 s
            desk.clock.advance(1.0)
            desk.quote("AAA", "100.00", "100.10")
            desk.quote("BBB", "200.00", "200.10")
            desk.step()
            pass_heartbeats_on(desk)
        desk.settle(lambda: desk.engine.directory.is_alive("watchdog"), what="restarted")
        drain(desk)
        assert PauseCause.TRIPWIRE_MARKET_QUALITY not in pause_details(desk)
        assert fired(desk, TripwireRule.MARKET_QUALITY) == 0
        run_for(desk, 10)
        blowout(4)  # 16 s after the first three: the fourth in the minute
        run_for(desk, 1)
        desk.settle(
            lambda: PauseCause.FLATTEN in pause_details(desk), what="paused, then flattening"
        )
        assert pause_details(desk)[PauseCause.FLATTEN] == "market_quality"
        flattened(desk)
        assert_fired_once(desk, TripwireRule.MARKET_QUALITY)
        [cause] = causes_of(status(desk), TripwireRule.MARKET_QUALITY)
        assert "events=4" in cause


# -- daily loss reaches the cap, or heat above its cap: flatten(reason="risk_cap") and HALT ----
class TestRiskCap:
    def test_the_daily_loss_cap_flattens_with_reason_risk_cap_and_halts(
        self, desk_factory: Callable[..., Desk]
    ) -> None:
        # 0.001 % of 1,000,000 = 10 rupees of loss.
        desk = desk_factory(risk={"max_daily_loss_pct": "0.001"}, **QUIET_PINGS)
        desk.ready_to_trade()
        open_position(desk, quantity=10)  # bought at 100.10
        desk.quote("AAA", "99.15", "99.25")  # -9.50: just below the cap
        desk.step(1.0)
        assert_quiet(desk, TripwireRule.RISK_CAP)
        assert desk.trading().state.state is TradingState.ACTIVE
        desk.quote("AAA", "98.50", "98.60")  # -16: above it, the stop (99.00) not reached
        desk.step(1.0)
        state = desk.settle(
            lambda: desk.trading().state.state is TradingState.HALTED and desk.trading(),
            what="HALTED",
        )
        assert state.state.halt_reason == "DAILY_LOSS_LIMIT"
        assert pause_details(desk)[PauseCause.FLATTEN] == "risk_cap"
        flattened(desk)
        registry = desk.engine.metrics.registry
        assert (
            registry.get_sample_value("trader_kill_switch_total", {"reason": "DAILY_LOSS_LIMIT"})
            == 1
        )
        assert_fired_once(desk, TripwireRule.RISK_CAP)

    def test_heat_above_the_cap_flattens_with_reason_risk_cap_and_halts(
        self, desk_factory: Callable[..., Desk]
    ) -> None:
        # The plan's own risk (10 x 1.10 = 11) fits the 12-rupee cap; 10 ticks of slippage on
        # the entry make it 10 x 1.60 = 16, above it.
        desk = desk_factory(
            risk={"portfolio_heat_cap_pct": "0.0012"},
            paper_broker={"latency_ms": 0, "slippage_ticks": 10},
            **QUIET_PINGS,
        )
        desk.ready_to_trade()
        desk.send_plan(quantity=10, entry="100.10", stop="99.00", target="103")
        state = desk.settle(
            lambda: desk.trading().state.state is TradingState.HALTED and desk.trading(),
            what="HALTED",
        )
        assert state.state.halt_reason == "HEAT_CAP"
        assert pause_details(desk)[PauseCause.FLATTEN] == "risk_cap"
        flattened(desk)
        registry = desk.engine.metrics.registry
        assert registry.get_sample_value("trader_kill_switch_total", {"reason": "HEAT_CAP"}) == 1
        # Flat, the heat is gone: the episode ended; the HALT stays until an operator resets.
        assert_fired_once(desk, TripwireRule.RISK_CAP, still_active=False)
        desk.settle(
            lambda: (
                [r.outcome for r in watchdog_audits(desk, TripwireRule.RISK_CAP)]
                == ["CLEARED", "FIRED"]
            ),
            what="episode ended",
        )
        assert desk.trading().state.state is TradingState.HALTED

    def test_heat_at_the_cap_does_not_fire(self, desk_factory: Callable[..., Desk]) -> None:
        # 10 x (100.10 - 99.00) = 11.00 rupees of heat against a cap of exactly 11.00.
        desk = desk_factory(risk={"portfolio_heat_cap_pct": "0.0011"}, **QUIET_PINGS)
        desk.ready_to_trade()
        open_position(desk, quantity=10)
        assert desk.portfolio().portfolio.heat == Decimal("11.00")
        desk.step(1.0)
        assert_quiet(desk, TripwireRule.RISK_CAP)
        assert desk.trading().state.state is TradingState.ACTIVE


# -- market data or order stream heartbeat stale: pause entries; exits still managed ----------
class TestHeartbeatStale:
    def test_stale_market_data_pauses_entries_and_a_flatten_still_goes_out(
        self, desk: Desk
    ) -> None:
        open_position(desk)
        limit = desk.engine.config.heartbeats.marketdata_stale_s
        desk.step(limit - 0.5)  # just below the limit
        drain(desk)
        assert_quiet(desk, TripwireRule.MARKETDATA_STALE)
        desk.step(1.0)
        desk.settle(
            lambda: PauseCause.MARKETDATA_STALE in desk.trading().state.pause_causes,
            what="MARKETDATA_STALE pause",
        )
        assert_fired_once(desk, TripwireRule.MARKETDATA_STALE)
        # An operator flatten (the FLATTEN pause, then FlattenAll): its exits go out.
        desk.engine.directory.ask(
            "kill_switch", PauseEntries(cause=PauseCause.FLATTEN, detail="drill"), timeout_s=5
        )
        flattened(desk)
        # Fresh data ends the episode and the rule re-arms.
        desk.quote("AAA", "100.00", "100.10")
        desk.settle(
            lambda: causes_of(status(desk), TripwireRule.MARKETDATA_STALE) == [],
            what="episode cleared",
        )

    def test_a_silent_order_stream_fires_its_tripwire(self, desk: Desk) -> None:
        assert desk.engine.broker is not None
        limit = desk.engine.config.heartbeats.order_stream_stale_s
        desk.engine.broker.set_report_sink(lambda report: None)  # the stream goes quiet
        desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=10)
        desk.clock.advance(limit - 0.5)
        desk.quote("AAA", "100.00", "100.10")  # market data stays fresh
        desk.step()
        drain(desk)
        assert_quiet(desk, TripwireRule.ORDER_STREAM_STALE)
        desk.clock.advance(1.0)
        desk.quote("AAA", "100.00", "100.10")
        desk.step()
        desk.settle(
            lambda: PauseCause.ORDER_STREAM_STALE in desk.trading().state.pause_causes,
            what="ORDER_STREAM_STALE pause",
        )
        assert_fired_once(desk, TripwireRule.ORDER_STREAM_STALE)
