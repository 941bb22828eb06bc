"""Bad market data through a real engine: rejected per reason, counted, never raised, and never
seen by a strategy, the risk and order actors or the paper venue."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.clock import ManualClock
from domain.messages import QuerySnapshot, Tick
from launcher.engine import Engine, feed_actor_name, strategy_actor_name
from tests.actor.conftest import Desk
from tests.actor.test_brackets import open_position
from tests.helpers import make_config, make_tick, wait_until

D = Decimal

# (bid, ask, last) for AAA (reference price 100): each must be rejected with its reason.
BAD_QUOTES: list[tuple[str, str, str, str]] = [
    ("NaN", "100.10", "100.05", "NOT_A_NUMBER"),
    ("100.00", "sNaN", "100.05", "NOT_A_NUMBER"),
    ("100.00", "100.10", "-sNaN", "NOT_A_NUMBER"),
    ("Infinity", "Infinity", "Infinity", "INFINITE"),
    ("-Infinity", "100.10", "100.05", "INFINITE"),
    ("1e999999", "1e999999", "1e999999", "ABSURD_PRICE"),
    ("100.00", "9E+999999", "100.05", "ABSURD_PRICE"),
    ("1E-999999", "100.10", "100.05", "ABSURD_PRICE"),
    ("0", "100.10", "100.05", "NON_POSITIVE_PRICE"),
    ("-100.00", "100.10", "100.05", "NON_POSITIVE_PRICE"),
    ("100.10", "100.00", "100.05", "CROSSED_QUOTE"),
    ("5000", "5000.05", "5000", "ABSURD_PRICE"),
]


def bad_tick(bid: str, ask: str, last: str, ts: int) -> Tick:
    return Tick(
        instrument="AAA",
        bid=D(bid),
        ask=D(ask),
        last=D(last),
        bid_size=10,
        ask_size=10,
        volume=10,
        ts_event=ts,
        ts_init=ts,
    )


def feed_snapshot(desk: Desk) -> dict[str, Any]:
    return desk.engine.directory.ask(
        feed_actor_name(desk.engine.feed_name), QuerySnapshot(), timeout_s=5
    )


def rejected_metric(desk: Desk, reason: str) -> float:
    value = desk.engine.metrics.registry.get_sample_value(
        "trader_ticks_rejected_total", {"feed": desk.engine.feed_name, "reason": reason}
    )
    return value or 0.0


def feed_health(desk: Desk) -> dict[str, Any]:
    snapshot = desk.engine.directory.ask("supervisor", QuerySnapshot(), timeout_s=5)
    return snapshot["children"][feed_actor_name(desk.engine.feed_name)]


@pytest.fixture
def trading_desk(desk_factory: Callable[..., Desk]) -> Desk:
    desk = desk_factory(
        strategies=[{"name": "ema_1", "kind": "ema_pullback", "instruments": ["AAA"]}]
    )
    desk.ready_to_trade()
    return desk


class TestBadTicksThroughTheEngine:
    def test_every_kind_of_bad_price_is_rejected_with_its_reason_and_counted(
        self, trading_desk: Desk
    ) -> None:
        desk = trading_desk
        ts = desk.clock.now_ns()
        for bid, ask, last, _ in BAD_QUOTES:
            desk.engine.publish_ticks([bad_tick(bid, ask, last, ts)])
        snapshot = feed_snapshot(desk)  # answered after every batch above was handled

        expected: dict[str, int] = {}
        for *_, reason in BAD_QUOTES:
            expected[reason] = expected.get(reason, 0) + 1
        assert snapshot["rejected"] == expected
        for reason, count in expected.items():
            assert rejected_metric(desk, reason) == count
        health = feed_health(desk)
        assert health["alive"] and health["restarts"] == 0 and health["last_error"] is None

    def test_four_nans_a_minute_neither_crash_the_feed_nor_halt_the_engine(
        self, trading_desk: Desk
    ) -> None:
        # Before the fix each NaN killed the feed actor; four crashes a minute HALTed trading.
        desk = trading_desk
        for _ in range(8):
            desk.clock.advance(5)
            desk.engine.publish_ticks([bad_tick("NaN", "sNaN", "NaN", desk.clock.now_ns())])
            desk.quote("AAA", "100.00", "100.10")
            desk.step()

        assert feed_snapshot(desk)["rejected"] == {"NOT_A_NUMBER": 8}
        health = feed_health(desk)
        assert health["alive"] and health["restarts"] == 0
        # A HALT is sticky: trading that comes back to ACTIVE and armed was never halted.
        desk.settle(
            lambda: desk.trading().state.state.value == "ACTIVE" and desk.trading().state.armed,
            what="ACTIVE and armed",
        )

    def test_no_strategy_risk_order_or_venue_ever_sees_a_rejected_tick(
        self, trading_desk: Desk
    ) -> None:
        desk = trading_desk
        plan_id = open_position(desk, quantity=10)
        desk.quote("AAA", "100.40", "100.50")
        good_ts = desk.clock.now_ns()
        desk.settle(
            lambda: desk.portfolio().portfolio.unrealized_pnl == D("3.50"),
            what="unrealized PnL marked at the good quote's mid",
        )
        strategy = strategy_actor_name("ema_1")
        seen_before = desk.engine.directory.ask(strategy, QuerySnapshot(), timeout_s=5)

        desk.clock.advance(1)
        later = desk.clock.now_ns()
        desk.engine.publish_ticks(
            [bad_tick(bid, ask, last, later) for bid, ask, last, _ in BAD_QUOTES]
        )
        desk.engine.publish_ticks([make_tick("AAA", "100.40", "100.50", ts=later - 10**9 - 1)])
        feed_snapshot(desk)
        desk.step()
        desk.step()

        # The venue's quote, the strategy's view and the order actor's mark are the good ones.
        assert desk.engine.broker is not None
        venue_quote = desk.engine.broker.snapshot()["quotes"]["AAA"]
        assert venue_quote == {"bid": "100.40", "ask": "100.50", "ts_event": good_ts}
        seen_after = desk.engine.directory.ask(strategy, QuerySnapshot(), timeout_s=5)
        assert seen_after["last_tick_ts"] == good_ts
        assert seen_after["ticks_seen"] == seen_before["ticks_seen"]
        assert desk.portfolio().portfolio.unrealized_pnl == D("3.50")
        # Nothing was triggered by a bad price: the bracket's stop and target still work.
        assert set(desk.working_legs(plan_id)) == {"STOP", "TARGET"}
        assert feed_snapshot(desk)["rejected"]["OUT_OF_ORDER"] == 1
        # And the feed is still alive for good data.
        desk.quote("AAA", "100.50", "100.60")
        assert feed_snapshot(desk)["last_prices"]["AAA"]["bid"] == "100.50"

    def test_a_batch_that_is_not_ticks_at_all_is_rejected_not_raised(
        self, trading_desk: Desk
    ) -> None:
        desk = trading_desk
        garbage: list[Any] = [None, "AAA,100,100.1", {"bid": "1"}, 42]
        desk.engine.publish_ticks(garbage)

        snapshot = feed_snapshot(desk)
        assert snapshot["rejected"] == {"NOT_A_TICK": 4}
        assert feed_health(desk)["restarts"] == 0


SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "ticks_sample.csv"


def test_a_csv_replay_with_bad_rows_in_the_middle_replays_every_good_row(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Before the fix the first bad row ended the replay and the process idled.
    lines = SAMPLE.read_text().splitlines(keepends=True)
    garbage = {
        20: "garbage, not a tick\n",
        60: "2026-01-02T09:15:14+05:30,NIFTY-FUT,NaN,24000.10,24000.05,100\n",
        61: "2026-01-02T09:15:14+05:30,NIFTY-FUT,1e999999,1e999999,,100\n",
        120: "2026-01-02T09:15:29+05:30,RELIANCE\n",
        150: "not-a-time,RELIANCE,2900.00,2900.10,2900.05,1\n",
    }
    for index in sorted(garbage):  # each inserted row becomes line ``index + 1`` of the file
        lines.insert(index, garbage[index])
    path = tmp_path / "ticks_with_bad_rows.csv"
    path.write_text("".join(lines))
    good_rows = len(SAMPLE.read_text().splitlines()) - 1
    config = make_config(
        tmp_path,
        instruments=[
            {"symbol": "NIFTY-FUT", "lot_size": 50, "reference_price": "24000"},
            {"symbol": "RELIANCE", "reference_price": "2900"},
        ],
        strategies=[
            {"name": "ema_1", "kind": "ema_pullback", "instruments": ["NIFTY-FUT", "RELIANCE"]}
        ],
        feed={"kind": "csv", "name": "replay", "csv_path": str(path), "replay_speed": 0},
    )
    engine = Engine(config, clock=clock, run_ticker=False, run_feed=True, run_http=False)
    engine.start()
    try:
        feed = wait_until(
            lambda: (
                (state := engine.directory.ask("feed:replay", QuerySnapshot(), timeout_s=5))[
                    "accepted"
                ]
                == good_rows
                and state
            ),
            message=f"{good_rows} replayed ticks",
        )
        assert feed["rejected"] == {}
        assert engine.pump is not None
        assert wait_until(lambda: engine.pump is not None and engine.pump.exhausted)
        assert engine.pump.error is None
        source = engine.pump.snapshot()["source"]
        assert source["bad_rows"] == len(garbage)
        assert source["first_bad_row_lines"] == [index + 1 for index in sorted(garbage)]
        counted = engine.metrics.registry.get_sample_value(
            "trader_ticks_rejected_total", {"feed": "replay", "reason": "BAD_ROW"}
        )
        assert counted == len(garbage)
    finally:
        engine.stop()


def test_the_paper_venue_ignores_a_quote_the_feed_would_reject_even_when_called_directly(
    desk: Desk,
) -> None:
    # Belt and braces: the venue fills money on a price, so it checks the price itself.
    plan_id = open_position(desk, quantity=10)
    broker = desk.engine.broker
    assert broker is not None
    for bad in ("NaN", "sNaN", "Infinity", "-1", "0"):
        broker.on_tick(bad_tick(bad, bad, bad, ts=desk.clock.now_ns()))  # must not raise
    desk.step(1.0)
    legs = desk.working_legs(plan_id)
    assert set(legs) == {"STOP", "TARGET"}, legs  # a zero bid did not trigger the stop
