"""Supervision: restarts, restart intensity, and the auto-pauses on lost safety signals."""

from __future__ import annotations

from pathlib import Path

from adapters.storage.repositories import UnitOfWork
from domain.clock import NANOS_PER_SECOND
from domain.enums import PauseCause, TradingState
from domain.messages import InjectFault, QuerySnapshot
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position


def restarts(desk: Desk, name: str) -> int:
    """Restarts the supervisor counted, once the new incarnation is running."""
    supervisor = desk.engine.directory.get("supervisor")
    assert supervisor is not None
    health = supervisor.proxy().actor_health().get(timeout=5)[name]
    return health["restarts"] if health["alive"] else -1


# The actors the supervisor asks to republish their state when it restarts a child.
_REPUBLISHERS = ("kill_switch", "leader", "order")


def wait_for_restart(desk: Desk, name: str, count: int) -> None:
    """Wait until ``name`` runs its ``count``-th restart AND has been told the current state.

    A restarted actor starts knowing nothing of the trading state, leadership or portfolio
    (the risk actor refuses every plan until it does). The supervisor restarts a child and tells
    the publishers to republish in the same handler, so once ``restarts`` sees the new
    incarnation alive, an ask to each publisher returns only after it has republished (inboxes
    are FIFO), and an ask to the new incarnation only after it has taken those messages in.
    No timing margin: an ordering barrier.
    """
    desk.settle(lambda: restarts(desk, name) == count, what=f"{name} restart {count}")
    for publisher in _REPUBLISHERS:
        desk.engine.directory.ask(publisher, QuerySnapshot(), timeout_s=10)
    desk.engine.directory.ask(name, QuerySnapshot(), timeout_s=10)


def metric(desk: Desk, name: str, **labels: str) -> float | None:
    return desk.engine.metrics.registry.get_sample_value(name, labels)


class TestRestart:
    def test_a_crashed_actor_is_restarted_and_keeps_working(self, desk: Desk) -> None:
        old_ref = desk.engine.directory.get("risk")
        assert desk.engine.directory.tell("risk", InjectFault(detail="drill"))
        wait_for_restart(desk, "risk", 1)
        new_ref = desk.engine.directory.get("risk")
        assert new_ref is not None and new_ref is not old_ref and new_ref.is_alive()
        assert metric(desk, "trader_actor_restarts_total", actor="risk") == 1
        # The restarted risk actor, once told the state, still approves plans end to end.
        desk.quote("AAA", "100.00", "100.10")
        plan_id = open_position(desk)
        assert desk.working_legs(plan_id)

    def test_a_child_that_dies_without_reporting_is_restarted_too(self, desk: Desk) -> None:
        ref = desk.engine.directory.get("risk")
        assert ref is not None
        ref.stop()  # gone without a ChildFailed, as after a failing hook
        desk.settle(lambda: restarts(desk, "risk") == 1, what="risk reaped and restarted")

    def test_a_crash_writes_a_post_mortem_dump(self, desk: Desk) -> None:
        logs = Path(desk.engine.config.logs_dir)
        desk.engine.directory.tell("risk", InjectFault(detail="post-mortem drill"))
        dump = desk.settle(
            lambda: next(iter(logs.glob("state-dump-postmortem-risk-*.json")), None),
            what="post-mortem file",
        )
        text = dump.read_text()
        assert "post-mortem drill" in text and '"order"' in text

    def test_a_restarted_order_actor_recovers_its_positions_from_storage(self, desk: Desk) -> None:
        plan_id = open_position(desk)
        desk.engine.directory.tell("order", InjectFault(detail="order drill"))
        desk.settle(lambda: restarts(desk, "order") == 1, what="order restarted")
        desk.step(1.0)
        positions = desk.settle(
            lambda: desk.portfolio().portfolio.positions, what="position recovered"
        )
        assert [p.position_id for p in positions] == [plan_id]
        assert set(desk.working_legs(plan_id)) == {"STOP", "TARGET"}
        # Still managed: the target fills and the stop is cancelled by the new incarnation.
        desk.quote("AAA", "102.50", "102.60")
        desk.settle(lambda: not desk.working_legs(plan_id), what="bracket closed")
        realized = desk.settle(
            lambda: desk.portfolio().portfolio.realized_pnl_today, what="realized PnL booked"
        )
        # Today's realized PnL is storage's, not memory's: a crash does not reset the limit.
        desk.engine.directory.tell("order", InjectFault(detail="second drill"))
        desk.settle(lambda: restarts(desk, "order") == 2, what="order restarted again")
        assert desk.portfolio().portfolio.realized_pnl_today == realized


class TestRestartIntensity:
    def test_too_many_crashes_in_the_window_halt_trading(self, desk: Desk) -> None:
        max_restarts = desk.engine.config.supervision.max_restarts
        for crash in range(1, max_restarts + 2):
            desk.engine.directory.tell("risk", InjectFault(detail=f"crash {crash}"))
            desk.settle(lambda n=crash: restarts(desk, "risk") == n, what=f"restart {crash}")
        state = desk.settle(
            lambda: desk.trading().state.state is TradingState.HALTED and desk.trading().state,
            what="HALTED",
        )
        assert state.halt_reason == "RESTART_INTENSITY"
        assert metric(desk, "trader_kill_switch_total", reason="RESTART_INTENSITY") == 1
        with UnitOfWork(desk.engine.database) as uow:  # type: ignore[arg-type]
            record = uow.kill_switch.load()
        assert record is not None and record.active and record.reason == "RESTART_INTENSITY"

    def test_crashes_spread_beyond_the_window_do_not_halt(self, desk: Desk) -> None:
        window_s = desk.engine.config.supervision.window_s
        for crash in range(1, desk.engine.config.supervision.max_restarts + 3):
            desk.engine.directory.tell("risk", InjectFault(detail=f"crash {crash}"))
            desk.settle(lambda n=crash: restarts(desk, "risk") == n, what=f"restart {crash}")
            desk.clock.advance(window_s / 2 + 1)
            desk.quote("AAA", "100.00", "100.10")
            desk.step()
        assert desk.trading().state.state is not TradingState.HALTED


class TestAutoPause:
    def test_a_stalled_feed_pauses_entries_and_names_the_cause(self, desk: Desk) -> None:
        limit = desk.engine.config.heartbeats.marketdata_stale_s
        desk.step(limit + 1)  # no ticks for longer than the limit
        state = desk.settle(
            lambda: (
                PauseCause.MARKETDATA_STALE in desk.trading().state.pause_causes and desk.trading()
            ),
            what="MARKETDATA_STALE pause",
        )
        assert state.state.state is TradingState.REDUCING
        assert desk.engine.control is not None
        status = desk.engine.control.status()
        [cause] = [c for c in status.pause_causes if c.cause is PauseCause.MARKETDATA_STALE]
        assert "feed=synthetic" in cause.detail
        assert status.marketdata_age_s["synthetic"] > limit
        assert metric(desk, "trader_trading_paused", cause="MARKETDATA_STALE") == 1
        ready = desk.engine.control.ready()
        assert not ready.ready and any("MARKETDATA_STALE" in b for b in ready.blockers)
        blocked = desk.send_plan()
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("TRADING_PAUSED", 0) >= 1,  # type: ignore[union-attr]
            what="plan blocked",
        )
        assert desk.orders_for(blocked.plan_client_id) == []
        # Fresh data clears the pause by itself.
        desk.quote("AAA", "100.00", "100.10")
        desk.settle(lambda: desk.trading().state.state is TradingState.ACTIVE, what="ACTIVE again")

    def test_a_silent_order_stream_pauses_entries(self, desk: Desk) -> None:
        assert desk.engine.broker is not None
        limit = desk.engine.config.heartbeats.order_stream_stale_s
        desk.engine.broker.set_report_sink(lambda report: None)  # the stream goes quiet
        # The order actor dates a venue heartbeat by when it handles it, not by when the venue
        # sent it: one still queued would be handled after the jump and count as fresh data
        # at the new time, which the manual clock then never leaves. An ask queued behind it
        # returns once it is handled; only then does the clock jump.
        desk.engine.directory.ask("order", QuerySnapshot(), timeout_s=10)
        desk.clock.advance(limit + 1)
        desk.quote("AAA", "100.00", "100.10")  # market data stays fresh
        desk.settle(
            lambda: desk.trading().state.pause_causes == (PauseCause.ORDER_STREAM_STALE,),
            what="ORDER_STREAM_STALE pause",
        )

    def test_leader_loss_stops_new_orders_at_once_and_pauses(self, desk: Desk) -> None:
        ttl_s = desk.engine.config.leader.lease_ttl_s
        desk.clock.advance(ttl_s + 1)  # our lease lapses unrenewed...
        with UnitOfWork(desk.engine.database) as uow:  # type: ignore[arg-type]
            other = uow.lease.acquire_or_renew(
                instance_id="vigil-other",
                now_ns=desk.clock.now_ns(),
                ttl_ns=int(60 * NANOS_PER_SECOND),
            )
        assert other.is_leader  # ...and another instance takes it with a higher epoch
        desk.quote("AAA", "100.00", "100.10")
        desk.settle(
            lambda: PauseCause.LEADER_LOST in desk.trading().state.pause_causes,
            what="LEADER_LOST pause",
        )
        assert metric(desk, "trader_is_leader", instance_id="vigil-test") == 0
        assert desk.engine.control is not None
        assert not desk.engine.control.status().is_leader
        assert not desk.engine.control.ready().ready
        plan = desk.send_plan()
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("TRADING_PAUSED", 0) >= 1,  # type: ignore[union-attr]
            what="plan blocked",
        )
        assert desk.orders_for(plan.plan_client_id) == []
        # Past the grace period the instance steps down and says so.
        desk.step(desk.engine.config.leader.grace_s + 1)
        supervisor = desk.engine.directory.get("supervisor")
        assert supervisor is not None
        desk.settle(
            lambda: supervisor.proxy().snapshot().get(timeout=5)["stepped_down"],
            what="stepped down",
        )


class TestRiskWindowsSurviveRestart:
    def test_a_risk_restart_does_not_reset_the_trades_per_hour_limit(
        self,
        desk_factory,  # type: ignore[no-untyped-def]
    ) -> None:
        desk = desk_factory(risk={"max_trades_per_hour": 1})
        desk.ready_to_trade()
        open_position(desk)
        desk.engine.directory.tell("risk", InjectFault(detail="risk drill"))
        # Sent before the new incarnation knows the trading state, the plan would be refused
        # as TRADING_PAUSED (portfolio or state unknown), never reaching the hourly window.
        wait_for_restart(desk, "risk", 1)
        desk.quote("BBB", "200.00", "200.10")
        second = desk.send_plan(instrument="BBB", entry="200.10", stop="199", target="202")
        desk.settle(
            lambda: desk.engine.control.risk().blocks.get("TRADES_PER_HOUR", 0) >= 1,  # type: ignore[union-attr]
            what="second entry blocked by the rebuilt window",
        )
        assert desk.orders_for(second.plan_client_id) == []
