"""The live feed's door: every item as it came while the feed actor keeps up; once it falls
behind, only the newest quote per instrument (and anything that is not a tick), counted."""

from __future__ import annotations

from decimal import Decimal

from actors.mailbox import FeedDoor
from domain.messages import DrainTicks, Tick, TicksReceived
from tests.helpers import make_tick


def quote(instrument: str, ts: int, bid: str = "100.00") -> Tick:
    return make_tick(instrument, Decimal(bid), Decimal(bid) + Decimal("0.05"), ts=ts)


class Wakes:
    def __init__(self, *, answer: bool = True) -> None:
        self.count = 0
        self.answer = answer

    def __call__(self, _wake: DrainTicks) -> bool:
        self.count += 1
        return self.answer


def batch(*items: object, validated: bool = False) -> TicksReceived:
    return TicksReceived(feed="synthetic", ticks=items, validated=validated)  # type: ignore[arg-type]


def test_while_the_feed_keeps_up_every_item_passes_as_it_came() -> None:
    wakes = Wakes()
    door = FeedDoor(feed="synthetic", keep=8, wake=wakes)
    first, second, garbage = quote("AAA", 1), quote("AAA", 2, "100.05"), "not a tick"

    door.offer(batch(first, second, garbage))

    drained, more = door.drain()
    assert drained is not None and drained.ticks == (first, second, garbage) and not more
    assert door.conflated == 0 and wakes.count == 1
    assert door.drain() == (None, False)


def test_a_feed_that_fell_behind_gets_the_newest_quote_per_instrument_in_arrival_order() -> None:
    wakes = Wakes()
    door = FeedDoor(feed="synthetic", keep=3, wake=wakes)
    for ts in range(1, 4):  # three rounds of two instruments arrive before any drain
        door.offer(batch(quote("AAA", ts * 10), quote("BBB", ts * 10 + 1)))
    door.offer(batch("garbage", quote("AAA", 50)))

    drained, _ = door.drain()

    assert drained is not None
    assert drained.ticks == (quote("BBB", 31), "garbage", quote("AAA", 50))
    assert door.conflated == door.offered - 3 == 5
    assert wakes.count == 1  # one wake-up for everything that waited
    assert drained.validated is False


def test_a_wake_that_could_not_be_delivered_is_tried_again_and_validated_survives() -> None:
    wakes = Wakes(answer=False)  # the feed actor is down
    door = FeedDoor(feed="synthetic", keep=8, wake=wakes)
    door.offer(batch(quote("AAA", 1), validated=True))
    wakes.answer = True
    door.offer(batch(quote("BBB", 2), validated=True))

    assert wakes.count == 2
    drained, _ = door.drain()
    assert drained is not None and drained.validated is True and len(drained.ticks) == 2


def test_a_round_at_a_time_keeps_the_wake_pending_until_the_door_is_empty() -> None:
    wakes = Wakes()
    door = FeedDoor(feed="synthetic", keep=8, wake=wakes)
    door.offer(batch(quote("AAA", 1), quote("BBB", 2), quote("AAA", 3)))

    first, more = door.drain(limit=2)
    door.offer(batch(quote("BBB", 4)))  # the wake-up is still pending: no second one
    second, done = door.drain(limit=2)

    assert first is not None and [t.ts_event for t in first.ticks] == [1, 2] and more
    assert second is not None and [t.ts_event for t in second.ticks] == [3, 4] and not done
    assert wakes.count == 1
