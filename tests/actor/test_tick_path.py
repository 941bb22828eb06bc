"""The tick path's cost: what a tick wakes, and that nothing decides on an older price for it."""

from __future__ import annotations

from pathlib import Path

from actors.feed_actor import heartbeat_interval_ns
from domain.messages import QueryRisk, QuerySnapshot, TicksReceived
from launcher.engine import feed_actor_name
from tests.actor.conftest import Desk
from tests.helpers import make_tick
from tools.replay import replay_config


def test_a_tick_wakes_neither_risk_nor_order_yet_risk_judges_on_the_latest_quote(
    desk: Desk,
) -> None:
    dispatcher = desk.engine.dispatcher
    assert dispatcher is not None

    def messages_for_five_quotes() -> int:
        before = dispatcher.messages_processed
        for step in range(5):
            desk.quote("AAA", f"100.{step}0", f"100.{step}5")
        return dispatcher.messages_processed - before

    # The feed actor's five batches and the asks behind them; risk (on the dispatcher) and
    # order read their quote board when they next need a price. (Before: a DrainTicks turn
    # for risk on every tick, 15 or more here.) A message of the engine's own (a late
    # publish after start, a renewal) can land in the window on a loaded machine and only
    # adds: the fewest of a few tries is the ticks' own cost.
    counts = [messages_for_five_quotes() for _ in range(3)]
    assert min(counts) == 10, counts

    # 2.00 wide is 40 ticks of 0.05: a blow-out, seen although no tick woke the risk actor.
    desk.quote("AAA", "98.10", "100.10")
    desk.send_plan(instrument="AAA")

    def blocks() -> dict[str, int]:
        return desk.engine.directory.ask("risk", QueryRisk(), timeout_s=5).blocks

    assert desk.settle(blocks, what="the plan judged") == {"SPREAD_BLOWOUT": 1}

    # And back to a normal quote: the next plan passes the spread check.
    desk.quote("AAA", "100.05", "100.10")
    plan = desk.send_plan(instrument="AAA", strategy="ema_1")
    desk.settle(lambda: desk.orders_for(plan.plan_client_id), what="the plan became orders")
    assert blocks() == {"SPREAD_BLOWOUT": 1}


def test_a_validated_batch_is_still_held_to_the_instrument_and_to_time_order(desk: Desk) -> None:
    # A batch from a reader that applied tick_rejection (the CSV reader) skips the second pass
    # of the feed actor, but not what the reader could not know: an instrument configured here,
    # and time that does not go backwards across batches.
    feed = feed_actor_name(desk.engine.feed_name)
    now = desk.clock.now_ns()
    before = desk.engine.directory.ask(feed, QuerySnapshot(), timeout_s=5)
    ticks = (
        make_tick("AAA", "100.00", "100.10", ts=now + 10),
        make_tick("ZZZ", "100.00", "100.10", ts=now + 11),  # not configured
        make_tick("AAA", "100.05", "100.15", ts=now + 5),  # earlier than AAA's last
        make_tick("BBB", "200.00", "200.10", ts=now + 12),
    )
    desk.engine.directory.tell(
        feed, TicksReceived(feed=desk.engine.feed_name, ticks=ticks, validated=True)
    )
    after = desk.engine.directory.ask(feed, QuerySnapshot(), timeout_s=5)
    assert after["accepted"] - before["accepted"] == 2
    assert after["rejected"] == {"UNKNOWN_INSTRUMENT": 1, "OUT_OF_ORDER": 1}
    assert after["last_prices"]["AAA"]["ts_event"] == now + 10


def test_the_feed_heartbeat_follows_the_staleness_limit_and_a_replay_needs_almost_none(
    tmp_path: Path,
) -> None:
    # 200 ms (the supervisor's view lags by at most 1/25 of the default 5 s limit), never more
    # often; a replay's limit is a year, so its feed no longer wakes the supervisor's thread
    # for every 200 ms of replayed time (on main: ~3,000 heartbeats per 30,000 quotes).
    assert heartbeat_interval_ns(5.0) == 200_000_000
    assert heartbeat_interval_ns(0.5) == 200_000_000
    assert heartbeat_interval_ns(60.0) == 2_400_000_000
    config = replay_config(tmp_path / "quotes.csv", database_url="sqlite://", work_dir=tmp_path)
    assert heartbeat_interval_ns(config.heartbeats.marketdata_stale_s) > 10**15  # > 11 days
