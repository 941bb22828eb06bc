"""The pure tripwire rules: windows, thresholds and episodes (domain/tripwires.py)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.clock import NANOS_PER_SECOND
from domain.enums import TripwireRule
from domain.tripwires import (
    EpisodeBook,
    EventCountRule,
    LatencyRule,
    RisingDepthRule,
    Transition,
    Verdict,
    percentile_nearest_rank,
)

S = NANOS_PER_SECOND


class TestPercentile:
    @given(st.lists(st.floats(0, 10_000, allow_nan=False), min_size=1, max_size=200))
    def test_p95_is_the_smallest_value_with_95_percent_at_or_below_it(
        self, values: list[float]
    ) -> None:
        p95 = percentile_nearest_rank(values, 0.95)
        rank = math.ceil(0.95 * len(values))
        assert p95 in values
        assert sum(v <= p95 for v in values) >= rank
        assert sum(v < p95 for v in values) < rank

    def test_no_values_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="no values"):
            percentile_nearest_rank([], 0.95)


def latency_rule() -> LatencyRule:
    return LatencyRule(limit_ms=800, window_s=60, sustained_s=120, min_samples=5)


class TestLatencyRule:
    def test_fires_only_once_the_p95_has_been_above_the_limit_for_the_sustained_time(
        self,
    ) -> None:
        rule = latency_rule()
        verdicts = {}
        for second in range(0, 200, 5):
            rule.observe(900, second * S)
            verdicts[second] = rule.evaluate(second * S)
        # Five samples at 20 s: above from then, sustained 120 s at 140 s.
        assert not verdicts[135].active
        assert verdicts[140].active
        assert "p95_ms=900" in verdicts[140].detail

    def test_one_evaluation_below_the_limit_restarts_the_sustained_time(self) -> None:
        rule = latency_rule()
        for second in range(0, 100, 5):
            rule.observe(900, second * S)
            rule.evaluate(second * S)
        for second in range(100, 165, 5):  # fast acks until the slow ones are a minority
            rule.observe(10, second * S)
            rule.evaluate(second * S)
        for second in range(165, 400, 5):
            rule.observe(900, second * S)
            if rule.evaluate(second * S).active:
                break
        # Not active at 165 + anything under 120 s of p95 above the limit again.
        assert second >= 165 + 120

    def test_exactly_at_the_limit_never_fires(self) -> None:
        rule = latency_rule()
        for second in range(0, 600, 5):
            rule.observe(800, second * S)
            assert not rule.evaluate(second * S).active

    def test_too_few_samples_judge_nothing(self) -> None:
        rule = latency_rule()
        for second in range(0, 600, 15):  # four acks a minute, min_samples five
            rule.observe(5000, second * S)
            assert not rule.evaluate(second * S).active


class TestEventCountRule:
    @given(
        st.lists(st.integers(0, 300), max_size=40),
        st.lists(st.integers(0, 300), min_size=1, max_size=20),
    )
    def test_active_exactly_when_more_than_the_maximum_fall_in_the_window(
        self, event_seconds: list[int], evaluation_seconds: list[int]
    ) -> None:
        rule = EventCountRule(max_events=3, window_s=60)
        events = sorted(event_seconds)
        pending = list(events)
        for now in sorted(evaluation_seconds):
            while pending and pending[0] <= now:
                rule.observe(pending.pop(0) * S, "SPREAD_BLOWOUT")
            in_window = sum(1 for t in events if now - 60 < t <= now)
            assert rule.evaluate(now * S).active == (in_window > 3)

    def test_names_the_kinds_it_counted(self) -> None:
        rule = EventCountRule(max_events=3, window_s=60)
        for kind in ("SPREAD_BLOWOUT", "FREEZE_BAND", "SPREAD_BLOWOUT", "FREEZE_BAND"):
            rule.observe(1 * S, kind)
        verdict = rule.evaluate(2 * S)
        assert verdict.active
        assert "FREEZE_BAND=2 SPREAD_BLOWOUT=2" in verdict.detail


class TestRisingDepthRule:
    def test_a_queue_growing_for_the_window_from_a_backlog_fires(self) -> None:
        rule = RisingDepthRule(window_s=60, min_depth=1)
        verdicts = {}
        for second in range(0, 70):
            rule.observe(second, second * S)  # empty at 0, one more each second
            verdicts[second] = rule.evaluate(second * S)
        assert not verdicts[60].active  # the window began at 0: empty, not a backlog
        assert verdicts[61].active

    def test_one_fall_inside_the_window_is_not_rising(self) -> None:
        rule = RisingDepthRule(window_s=60, min_depth=1)
        depth = 5
        for second in range(0, 90):
            depth += -1 if second == 40 else 1
            rule.observe(depth, second * S)
            verdict = rule.evaluate(second * S)
        assert not verdict.active  # second 89: the window [29, 89] holds the fall at 40

    def test_a_flat_backlog_is_not_rising(self) -> None:
        rule = RisingDepthRule(window_s=60, min_depth=1)
        for second in range(0, 200):
            rule.observe(50, second * S)
            assert not rule.evaluate(second * S).active

    @given(st.lists(st.integers(0, 20), min_size=1, max_size=150))
    def test_active_only_when_the_window_never_fell_and_began_non_empty(
        self, depths: list[int]
    ) -> None:
        rule = RisingDepthRule(window_s=10, min_depth=1)
        for second, depth in enumerate(depths):
            rule.observe(depth, second * S)
            if rule.evaluate(second * S).active:
                span = depths[max(0, second - 10) : second + 1]
                assert second >= 10
                assert all(b >= a for a, b in itertools.pairwise(span))
                assert span[0] >= 1 and span[-1] > span[0]


class TestEpisodeBook:
    @given(st.lists(st.booleans(), max_size=60))
    def test_fires_once_per_run_of_true_and_clears_once_per_run_that_ended(
        self, conditions: list[bool]
    ) -> None:
        book = EpisodeBook()
        changes = [
            book.update(TripwireRule.MARKET_QUALITY, Verdict(active=active), now)
            for now, active in enumerate(conditions)
        ]
        fired = [c for c in changes if c is not None and c.transition is Transition.FIRED]
        cleared = [c for c in changes if c is not None and c.transition is Transition.CLEARED]
        runs = sum(
            1 for i, active in enumerate(conditions) if active and (i == 0 or not conditions[i - 1])
        )
        assert len(fired) == runs
        assert len(cleared) == runs - (1 if conditions and conditions[-1] else 0)
        assert book.is_active(TripwireRule.MARKET_QUALITY) == bool(conditions and conditions[-1])

    def test_an_active_episode_keeps_its_start_and_shows_the_latest_figures(self) -> None:
        book = EpisodeBook()
        rule = TripwireRule.ORDER_ACK_LATENCY
        first = book.update(rule, Verdict(active=True, detail="p95_ms=900"), 10)
        assert first is not None and first.transition is Transition.FIRED
        assert book.update(rule, Verdict(active=True, detail="p95_ms=950"), 20) is None
        [episode] = book.active()
        assert (episode.since_ns, episode.detail) == (10, "p95_ms=950")
