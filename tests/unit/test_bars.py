"""BarAggregator: time buckets, OHLC, gaps, late ticks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.bars import BarAggregator, tick_price
from domain.clock import NANOS_PER_SECOND
from domain.messages.market import Tick

T0 = 1_767_225_600 * NANOS_PER_SECOND  # 2026-01-01T00:00:00Z, a whole multiple of 5 s


def make_tick(
    seconds: float,
    last: str,
    *,
    instrument: str = "NIFTY-FUT",
    bid: str | None = None,
    ask: str | None = None,
) -> Tick:
    price = Decimal(last)
    ts = T0 + int(seconds * NANOS_PER_SECOND)
    return Tick(
        instrument=instrument,
        bid=Decimal(bid) if bid is not None else price - Decimal("0.05"),
        ask=Decimal(ask) if ask is not None else price + Decimal("0.05"),
        last=price,
        ts_event=ts,
        ts_init=ts,
    )


class TestBarAggregator:
    def test_builds_ohlc_from_the_ticks_of_one_interval_and_closes_on_the_next_bucket(
        self,
    ) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)
        for seconds, price in [(0.0, "100"), (1.0, "103"), (2.5, "99"), (4.999, "101")]:
            assert aggregator.on_tick(make_tick(seconds, price)) == []

        closed = aggregator.on_tick(make_tick(5.0, "102"))

        assert len(closed) == 1
        bar = closed[0]
        assert (bar.open, bar.high, bar.low, bar.close) == (
            Decimal("100"),
            Decimal("103"),
            Decimal("99"),
            Decimal("101"),
        )
        assert bar.tick_count == 4
        assert bar.ts_open == T0
        assert bar.ts_close == T0 + 5 * NANOS_PER_SECOND
        assert bar.interval_s == 5
        assert bar.instrument == "NIFTY-FUT"

    def test_aligns_buckets_to_whole_intervals_of_the_epoch(self) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)
        aggregator.on_tick(make_tick(7.3, "100"))

        bar = aggregator.on_tick(make_tick(10.1, "100"))[0]

        assert bar.ts_open == T0 + 5 * NANOS_PER_SECOND
        assert bar.ts_close == T0 + 10 * NANOS_PER_SECOND

    def test_a_gap_of_several_intervals_closes_only_the_open_bar_without_empty_bars(
        self,
    ) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)
        aggregator.on_tick(make_tick(1.0, "100"))

        closed = aggregator.on_tick(make_tick(32.0, "105"))

        assert len(closed) == 1
        assert closed[0].ts_open == T0
        assert closed[0].close == Decimal("100")
        after_gap = aggregator.on_tick(make_tick(35.0, "106"))
        assert len(after_gap) == 1
        assert after_gap[0].ts_open == T0 + 30 * NANOS_PER_SECOND
        assert after_gap[0].open == Decimal("105")
        assert aggregator.bars_closed == 2

    def test_drops_a_late_tick_from_an_already_closed_bucket(self) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)
        aggregator.on_tick(make_tick(1.0, "100"))
        aggregator.on_tick(make_tick(6.0, "101"))

        assert aggregator.on_tick(make_tick(4.0, "90")) == []

        assert aggregator.late_ticks == 1
        current = aggregator.current()
        assert current is not None
        assert current.low == Decimal("101")

    def test_uses_the_mid_when_last_is_not_positive(self) -> None:
        tick = make_tick(0.0, "0", bid="100.00", ask="100.10")

        assert tick_price(tick) == Decimal("100.05")

    def test_flush_closes_the_open_bar_and_then_has_nothing_left(self) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)
        aggregator.on_tick(make_tick(0.0, "100"))

        flushed = aggregator.flush()

        assert [bar.close for bar in flushed] == [Decimal("100")]
        assert aggregator.flush() == []
        assert aggregator.current() is None

    def test_refuses_a_tick_of_another_instrument(self) -> None:
        aggregator = BarAggregator("NIFTY-FUT", 5)

        with pytest.raises(ValueError, match="RELIANCE"):
            aggregator.on_tick(make_tick(0.0, "100", instrument="RELIANCE"))

    def test_refuses_a_non_positive_interval(self) -> None:
        with pytest.raises(ValueError, match="interval_s=0"):
            BarAggregator("NIFTY-FUT", 0)
