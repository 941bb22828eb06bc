"""Tripwire rules over sliding windows, and episodes. Pure: time comes in as ``now_ns``.

A rule is fed observations (``observe``) and asked for a ``Verdict`` at a time
(``evaluate(now_ns)``): is its condition true now, and the figures that say why. The
``EpisodeBook`` turns a stream of verdicts per rule into episodes: a rule FIRES once when its
condition becomes true and re-arms only when the condition clears (CLEARED), so a condition that
stays true is one firing, however often it is evaluated.

The rules (the AITRAPP runbook's decision table; thresholds in ``domain.config.WatchdogConfig``):

- ``LatencyRule``: the p95 (nearest rank) of the order-ack latencies of the last ``window_s``
  is above ``limit_ms`` (with at least ``min_samples`` acks in the window), and has been at
  every evaluation for ``sustained_s``: "order acks p95 > 800 ms for 2 m".
- ``EventCountRule``: more than ``max_events`` events in the last ``window_s``: "spread
  blowouts or band rejections > 3 in 1 m".
- ``RisingDepthRule``: a queue held at least ``min_depth`` at the start of the last
  ``window_s``, has not fallen once since, and is higher now: "rate-limit queue depth rising
  for 60 s". A queue that drains even a little in between, or that was empty when the window
  began, is not "rising".
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from enum import StrEnum

import msgspec

from domain.clock import NANOS_PER_SECOND
from domain.enums import TripwireRule

__all__ = [
    "Episode",
    "EpisodeBook",
    "EpisodeChange",
    "EventCountRule",
    "LatencyRule",
    "RisingDepthRule",
    "Transition",
    "Verdict",
    "percentile_nearest_rank",
]


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's condition at one time: ``active`` and the figures (key=value) behind it."""

    active: bool
    detail: str = ""


class Transition(StrEnum):
    FIRED = "FIRED"
    CLEARED = "CLEARED"


class Episode(msgspec.Struct, frozen=True, kw_only=True):
    """One run of a rule's condition being true: from ``since_ns``, with its latest figures."""

    rule: TripwireRule
    detail: str
    since_ns: int


class EpisodeChange(msgspec.Struct, frozen=True, kw_only=True):
    transition: Transition
    episode: Episode


def percentile_nearest_rank(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of the
    values at or below it. ``values`` must not be empty; ``fraction`` in (0, 1]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction was {fraction}; must be in (0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _ns(seconds: float) -> int:
    return int(seconds * NANOS_PER_SECOND)


class LatencyRule:
    """p95 of the acks of the last ``window_s`` above ``limit_ms``, sustained ``sustained_s``."""

    def __init__(
        self, *, limit_ms: float, window_s: float, sustained_s: float, min_samples: int
    ) -> None:
        self.limit_ms = limit_ms
        self.window_ns = _ns(window_s)
        self.sustained_ns = _ns(sustained_s)
        self.min_samples = min_samples
        self._samples: deque[tuple[int, float]] = deque()
        self._above_since_ns: int | None = None

    def observe(self, latency_ms: float, ts_ns: int) -> None:
        self._samples.append((ts_ns, latency_ms))
        self._forget_before(ts_ns - self.window_ns)  # bounded even if never evaluated

    def _forget_before(self, cutoff_ns: int) -> None:
        while self._samples and self._samples[0][0] <= cutoff_ns:
            self._samples.popleft()

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    def evaluate(self, now_ns: int) -> Verdict:
        self._forget_before(now_ns - self.window_ns)
        count = len(self._samples)
        if count < self.min_samples:
            self._above_since_ns = None
            return Verdict(active=False, detail=f"samples={count} min_samples={self.min_samples}")
        p95 = percentile_nearest_rank([ms for _ts, ms in self._samples], 0.95)
        if p95 <= self.limit_ms:
            self._above_since_ns = None
            return Verdict(active=False, detail=f"p95_ms={p95:.0f} limit_ms={self.limit_ms:g}")
        if self._above_since_ns is None:
            self._above_since_ns = now_ns
        above_ns = now_ns - self._above_since_ns
        return Verdict(
            active=above_ns >= self.sustained_ns,
            detail=(
                f"p95_ms={p95:.0f} limit_ms={self.limit_ms:g} samples={count} "
                f"window_s={self.window_ns / NANOS_PER_SECOND:g} "
                f"above_for_s={above_ns / NANOS_PER_SECOND:.0f}"
            ),
        )


class EventCountRule:
    """More than ``max_events`` events within the last ``window_s``."""

    def __init__(self, *, max_events: int, window_s: float) -> None:
        self.max_events = max_events
        self.window_ns = _ns(window_s)
        self._events: deque[tuple[int, str]] = deque()

    def observe(self, ts_ns: int, what: str = "") -> None:
        self._events.append((ts_ns, what))
        self._forget_before(ts_ns - self.window_ns)  # bounded even if never evaluated

    def _forget_before(self, cutoff_ns: int) -> None:
        while self._events and self._events[0][0] <= cutoff_ns:
            self._events.popleft()

    def evaluate(self, now_ns: int) -> Verdict:
        self._forget_before(now_ns - self.window_ns)
        count = len(self._events)
        kinds: dict[str, int] = {}
        for _ts, what in self._events:
            kinds[what] = kinds.get(what, 0) + 1
        by_kind = " ".join(f"{what}={n}" for what, n in sorted(kinds.items()) if what)
        return Verdict(
            active=count > self.max_events,
            detail=(
                f"events={count} max_events={self.max_events} "
                f"window_s={self.window_ns / NANOS_PER_SECOND:g} {by_kind}"
            ).strip(),
        )


class RisingDepthRule:
    """At least ``min_depth`` deep ``window_s`` ago, never fell since, and deeper now."""

    def __init__(self, *, window_s: float, min_depth: int) -> None:
        self.window_ns = _ns(window_s)
        self.min_depth = min_depth
        self._samples: deque[tuple[int, int]] = deque()

    def observe(self, depth: int, ts_ns: int) -> None:
        self._samples.append((ts_ns, depth))
        # Bounded even if never evaluated: keep the span's starting sample, drop older ones.
        start = ts_ns - self.window_ns
        while len(self._samples) >= 2 and self._samples[1][0] <= start:
            self._samples.popleft()

    def evaluate(self, now_ns: int) -> Verdict:
        start = now_ns - self.window_ns
        # Keep one sample at or before the window's start: the depth the span began with.
        while len(self._samples) >= 2 and self._samples[1][0] <= start:
            self._samples.popleft()
        if not self._samples or self._samples[0][0] > start:
            return Verdict(active=False, detail="history shorter than the window")
        depths = [depth for _ts, depth in self._samples]
        never_fell = all(later >= earlier for earlier, later in itertools.pairwise(depths))
        first, last = depths[0], depths[-1]
        return Verdict(
            # Non-empty from the window's start: a queue that was idle a moment ago and now
            # holds one request has not been rising for the window.
            active=never_fell and last > first and first >= self.min_depth,
            detail=(
                f"depth={last} depth_{self.window_ns // NANOS_PER_SECOND}s_ago={first} "
                f"never_fell={str(never_fell).lower()} min_depth={self.min_depth}"
            ),
        )


class EpisodeBook:
    """Fires each rule once per episode; re-arms when its condition clears."""

    def __init__(self) -> None:
        self._active: dict[TripwireRule, Episode] = {}

    def update(self, rule: TripwireRule, verdict: Verdict, now_ns: int) -> EpisodeChange | None:
        """Record ``verdict`` for ``rule``; return the FIRED or CLEARED change, if any."""
        current = self._active.get(rule)
        if verdict.active:
            if current is None:
                episode = Episode(rule=rule, detail=verdict.detail, since_ns=now_ns)
                self._active[rule] = episode
                return EpisodeChange(transition=Transition.FIRED, episode=episode)
            # Same episode, newer figures (shown in /status); no second firing.
            self._active[rule] = msgspec.structs.replace(current, detail=verdict.detail)
            return None
        if current is None:
            return None
        del self._active[rule]
        return EpisodeChange(
            transition=Transition.CLEARED,
            episode=msgspec.structs.replace(current, detail=verdict.detail or current.detail),
        )

    def is_active(self, rule: TripwireRule) -> bool:
        return rule in self._active

    def active(self) -> list[Episode]:
        """The active episodes, oldest first."""
        return sorted(self._active.values(), key=lambda episode: episode.since_ns)
