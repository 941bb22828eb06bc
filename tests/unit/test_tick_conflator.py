"""TickConflator: the latest tick per instrument, handed over oldest first."""

from __future__ import annotations

from actors.mailbox import TickConflator
from domain.messages import DrainTicks
from tests.helpers import make_tick


def test_a_drain_hands_over_the_latest_tick_of_each_instrument_oldest_first() -> None:
    wakes: list[DrainTicks] = []
    conflator = TickConflator(consumer="strategy", wake=lambda wake: wakes.append(wake) or True)
    conflator.offer(make_tick("BBB", "200.00", "200.10", ts=5))
    conflator.offer(make_tick("AAA", "100.00", "100.10", ts=6))
    conflator.offer(make_tick("BBB", "200.05", "200.15", ts=7))  # conflates BBB's first
    ticks = conflator.drain()
    # BBB was offered first, but its latest tick is the newest: time runs forward.
    assert [(t.instrument, t.ts_event) for t in ticks] == [("AAA", 6), ("BBB", 7)]
    assert conflator.conflated == 1 and len(wakes) == 1
    assert conflator.drain() == []
