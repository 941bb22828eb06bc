"""The day figures' pure parts: latency buckets, percentiles read off them, deltas that merge,
and the trading day's bounds in a zone with daylight saving."""

from __future__ import annotations

import math
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.metrics import ORDER_LATENCY_BUCKETS_MS
from domain.calendar import day_bounds_ns, trading_day
from domain.clock import NANOS_PER_SECOND
from domain.day_figures import DayDeltas, HeatMark, bucket_label, histogram_percentile
from tools.post_close import percentile

BOUNDS = ORDER_LATENCY_BUCKETS_MS


def test_a_latency_falls_in_the_smallest_bucket_at_or_above_it() -> None:
    assert bucket_label(0.0, BOUNDS) == "5"
    assert bucket_label(5.0, BOUNDS) == "5"  # the Prometheus "le" rule
    assert bucket_label(5.01, BOUNDS) == "10"
    assert bucket_label(800.0, BOUNDS) == "800"
    assert bucket_label(5000.1, BOUNDS) == "+Inf"


@given(st.lists(st.floats(min_value=0, max_value=8000), min_size=1, max_size=200))
def test_a_bucketed_percentile_is_the_bucket_of_the_exact_one(values: list[float]) -> None:
    counts: dict[str, int] = {}
    for value in values:
        label = bucket_label(value, BOUNDS)
        counts[label] = counts.get(label, 0) + 1
    for fraction in (0.5, 0.95, 0.99):
        exact = percentile(values, fraction)
        assert exact is not None
        bucketed = histogram_percentile(counts, BOUNDS, fraction)
        expected = bucket_label(exact, BOUNDS)
        assert bucketed == (math.inf if expected == "+Inf" else float(expected))


def test_no_acks_has_no_percentile_and_bad_input_is_refused() -> None:
    assert histogram_percentile({}, BOUNDS, 0.95) is None
    with pytest.raises(ValueError, match="fraction"):
        histogram_percentile({"5": 1}, BOUNDS, 0)
    with pytest.raises(ValueError, match="not among the bounds"):
        histogram_percentile({"7": 1}, BOUNDS, 0.5)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["2026-01-05", "2026-01-06"]),
            st.sampled_from(["signals", "blocked"]),
            st.integers(1, 5),
            st.integers(0, 100),
        ),
        max_size=30,
    ),
    st.integers(0, 30),
)
def test_deltas_merged_in_any_split_equal_one_accumulator(
    events: list[tuple[str, str, int, int]], split: int
) -> None:
    whole, first, second = DayDeltas(), DayDeltas(), DayDeltas()
    for index, (day, kind, count, heat) in enumerate(events):
        for deltas in (whole, first if index < split else second):
            deltas.add(day, kind, "k", count)
            deltas.see_heat(day, Decimal(heat), index)
    first.merge(second)
    assert first == whole


def test_the_first_time_a_heat_is_reached_is_kept() -> None:
    deltas = DayDeltas()
    deltas.see_heat("2026-01-05", Decimal("10"), 5)
    deltas.see_heat("2026-01-05", Decimal("10"), 9)
    assert deltas.heat["2026-01-05"] == HeatMark(rupees=Decimal("10"), ts_ns=5)


def test_a_trading_day_runs_from_local_midnight_to_the_next_even_across_dst() -> None:
    new_york = ZoneInfo("America/New_York")
    start, end = day_bounds_ns("2026-03-08", new_york)  # clocks go forward: a 23 h day
    assert end - start == 23 * 3600 * NANOS_PER_SECOND
    assert trading_day(start, new_york) == "2026-03-08"
    assert trading_day(end - 1, new_york) == "2026-03-08"
    assert trading_day(end, new_york) == "2026-03-09"
    india_start, india_end = day_bounds_ns("2026-03-08")
    assert india_end - india_start == 24 * 3600 * NANOS_PER_SECOND
