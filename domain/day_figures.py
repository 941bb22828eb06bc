"""The day figures: what the engine decided during one trading day, counted as it happened.

The daily report (``tools.post_close``) needs figures no table of orders or fills holds:
signals (trade plans the risk actor received, per strategy), approved plans (per strategy),
blocked plans by ``DenialCode``, the high-water mark of portfolio heat (with when it was
reached) and the order-ack latency distribution. They are counted in memory where they happen
(``adapters.storage.day_figures.DayFiguresRecorder``) and stored as *deltas* that add up: a
figure of a day is the sum of what every engine process counted that day, so a restart never
replaces a day's count with a smaller one; heat keeps the larger value.

Pure: no clock, no I/O. ``DayDeltas`` is the accumulator (not thread-safe; the recorder locks
it), ``DayFigures`` a day's stored figures, ``histogram_percentile`` reads a percentile off the
fixed-bucket latency histogram.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "ACK_LATENCY",
    "APPROVED",
    "BLOCKED",
    "COUNTED_KINDS",
    "OVERFLOW_BUCKET",
    "RECORDED",
    "SIGNALS",
    "DayDeltas",
    "DayFigures",
    "HeatMark",
    "bucket_label",
    "histogram_percentile",
]

SIGNALS = "signals"
"""Trade plans the risk actor received; key: the strategy."""
APPROVED = "approved"
"""Plans the risk actor approved and handed to the order actor; key: the strategy."""
BLOCKED = "blocked"
"""Plans the risk actor blocked; key: the ``DenialCode``."""
ACK_LATENCY = "ack_latency_ms"
"""Order acknowledgements; key: the upper bound (ms) of the latency's bucket, or ``+Inf``."""
RECORDED = "recorded"
"""Key ``flushes``: how many times a process stored this day's figures. Its presence says the
day was recorded (a zero figure is a real zero, not a missing one)."""
COUNTED_KINDS = (SIGNALS, APPROVED, BLOCKED, ACK_LATENCY, RECORDED)
OVERFLOW_BUCKET = "+Inf"


def bucket_label(value: float, bounds: Sequence[float]) -> str:
    """The label of the bucket ``value`` falls in: the smallest upper bound ``>= value`` (the
    Prometheus ``le`` rule), written as ``repr`` of an int where the bound is whole (``"50"``),
    else ``+Inf``. ``bounds`` ascend."""
    for bound in bounds:
        if value <= bound:
            return _label(bound)
    return OVERFLOW_BUCKET


def _label(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def histogram_percentile(
    counts: Mapping[str, int], bounds: Sequence[float], fraction: float
) -> float | None:
    """The nearest-rank ``fraction`` percentile (in (0, 1]) of a bucketed distribution, as the
    upper bound of the bucket holding that rank: the true value is at most this. ``math.inf``
    when the rank falls in the overflow bucket; None when there is no observation.

    Raises:
        ValueError: ``fraction`` is not in (0, 1], or ``counts`` names a bucket not in ``bounds``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"percentile fraction must be in (0, 1], was {fraction}")
    known = {_label(bound) for bound in bounds} | {OVERFLOW_BUCKET}
    unknown = sorted(set(counts) - known)
    if unknown:
        raise ValueError(f"latency buckets {unknown} are not among the bounds {list(bounds)}")
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bound in bounds:
        seen += counts.get(_label(bound), 0)
        if seen >= rank:
            return float(bound)
    return math.inf


@dataclass(frozen=True, slots=True)
class HeatMark:
    """The highest portfolio heat (rupees) seen on a day, and when it was first reached."""

    rupees: Decimal
    ts_ns: int


@dataclass(slots=True)
class DayDeltas:
    """What was counted since the last store, per trading day: counts to add, heat to raise.

    ``counts[(day, kind, key)]`` is added to the stored figure; ``heat[day]`` replaces the
    stored mark only when higher (ties keep the earlier time).
    """

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    heat: dict[str, HeatMark] = field(default_factory=dict)

    def add(self, day: str, kind: str, key: str, count: int = 1) -> None:
        slot = (day, kind, key)
        self.counts[slot] = self.counts.get(slot, 0) + count

    def see_heat(self, day: str, rupees: Decimal, ts_ns: int) -> None:
        mark = self.heat.get(day)
        if mark is None or rupees > mark.rupees:
            self.heat[day] = HeatMark(rupees=rupees, ts_ns=ts_ns)

    def merge(self, other: DayDeltas) -> None:
        """Add ``other`` into this (a store that failed gives its deltas back)."""
        for (day, kind, key), count in other.counts.items():
            self.add(day, kind, key, count)
        for day, mark in other.heat.items():
            current = self.heat.get(day)
            if (
                current is None
                or mark.rupees > current.rupees
                or (mark.rupees == current.rupees and mark.ts_ns < current.ts_ns)
            ):
                self.heat[day] = mark

    @property
    def is_empty(self) -> bool:
        return not self.counts and not self.heat

    def days(self) -> set[str]:
        return {day for day, _kind, _key in self.counts} | set(self.heat)


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One trading day's stored figures (the sums of every process's deltas)."""

    trading_day: str
    signals_by_strategy: dict[str, int]
    approved_by_strategy: dict[str, int]
    blocked_by_reason: dict[str, int]
    ack_latency_buckets: dict[str, int]
    max_heat: HeatMark | None
    flushes: int

    @classmethod
    def from_counts(
        cls,
        trading_day: str,
        counts: Iterable[tuple[str, str, int]],
        max_heat: HeatMark | None,
    ) -> DayFigures:
        """Build from ``(kind, key, count)`` rows and the heat mark."""
        by_kind: dict[str, dict[str, int]] = {kind: {} for kind in COUNTED_KINDS}
        for kind, key, count in counts:
            by_kind.setdefault(kind, {})[key] = by_kind.get(kind, {}).get(key, 0) + count
        return cls(
            trading_day=trading_day,
            signals_by_strategy=dict(sorted(by_kind[SIGNALS].items())),
            approved_by_strategy=dict(sorted(by_kind[APPROVED].items())),
            blocked_by_reason=dict(sorted(by_kind[BLOCKED].items())),
            ack_latency_buckets=by_kind[ACK_LATENCY],
            max_heat=max_heat,
            flushes=by_kind[RECORDED].get("flushes", 0),
        )

    @property
    def signals(self) -> int:
        return sum(self.signals_by_strategy.values())

    @property
    def approved(self) -> int:
        return sum(self.approved_by_strategy.values())

    @property
    def blocked(self) -> int:
        return sum(self.blocked_by_reason.values())

    @property
    def acks(self) -> int:
        return sum(self.ack_latency_buckets.values())
