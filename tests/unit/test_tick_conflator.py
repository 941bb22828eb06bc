"""TickConflator: the latest tick per instrument, handed over oldest first; TickQueue: every
tick, in order (a replayed file); QuoteBoard: the latest tick per instrument, never a wake-up."""

from __future__ import annotations

import threading

from actors.mailbox import QuoteBoard, TickConflator, TickQueue
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


def test_a_tick_queue_hands_over_every_tick_in_order_and_never_conflates() -> None:
    wakes: list[DrainTicks] = []
    channel = TickQueue(consumer="strategy", wake=lambda wake: wakes.append(wake) or True)
    channel.offer(make_tick("BBB", "200.00", "200.10", ts=5))
    channel.offer(make_tick("AAA", "100.00", "100.10", ts=6))
    channel.offer(make_tick("BBB", "200.05", "200.15", ts=7))
    assert channel.pending_count == 3 and len(wakes) == 1  # one wake for the whole backlog
    assert [(t.instrument, t.ts_event) for t in channel.drain()] == [
        ("BBB", 5),
        ("AAA", 6),
        ("BBB", 7),
    ]
    assert channel.conflated == 0 and channel.offered == 3
    channel.offer(make_tick("AAA", "100.00", "100.10", ts=8))
    assert len(wakes) == 2  # re-armed by the drain


def test_a_producer_waits_for_room_until_the_consumer_drains() -> None:
    channel = TickQueue(consumer="strategy", wake=lambda wake: True)
    for ts in range(3):
        channel.offer(make_tick("AAA", "100.00", "100.10", ts=ts))
    assert channel.wait_for_room(3, timeout_s=0.05) is False  # full, nobody drains
    drained = threading.Thread(target=channel.drain)
    drained.start()
    assert channel.wait_for_room(3, timeout_s=5) is True
    drained.join(5)


def test_a_quote_board_keeps_the_latest_tick_per_instrument_and_never_wakes_anyone() -> None:
    board = QuoteBoard(consumer="risk")
    board.offer(make_tick("BBB", "200.00", "200.10", ts=5))
    board.offer(make_tick("AAA", "100.00", "100.10", ts=6))
    board.offer(make_tick("BBB", "200.05", "200.15", ts=7))
    # Nothing waits for the consumer: an idle reader of a board is idle.
    assert board.pending_count == 0 and board.conflated == 0 and board.offered == 3
    ticks = board.drain()
    assert [(t.instrument, t.ts_event) for t in ticks] == [("AAA", 6), ("BBB", 7)]
    assert board.drain() == []


def test_a_channel_for_some_instruments_takes_only_theirs() -> None:
    # The feed actor hands every tick to every channel; a strategy's takes only what it trades
    # (no wake-up, not counted as offered) instead of a filtering wrapper per tick.
    wakes: list[DrainTicks] = []
    for channel in (
        TickConflator(
            consumer="s", wake=lambda w: wakes.append(w) or True, instruments=frozenset({"AAA"})
        ),
        TickQueue(
            consumer="s", wake=lambda w: wakes.append(w) or True, instruments=frozenset({"AAA"})
        ),
    ):
        wakes.clear()
        channel.offer(make_tick("BBB", "200.00", "200.10", ts=1))
        assert channel.offered == 0 and wakes == [] and channel.drain() == []
        channel.offer(make_tick("AAA", "100.00", "100.10", ts=2))
        assert channel.offered == 1 and len(wakes) == 1
        assert [t.instrument for t in channel.drain()] == ["AAA"]
