"""/ready judges heartbeat ages when asked, not at the last timer tick (SIGSTOP, stalled timer)."""

from __future__ import annotations

from domain.messages import QuerySnapshot
from launcher.engine import feed_actor_name
from tests.actor.conftest import Desk


def test_ready_says_stale_as_soon_as_the_ages_are_past_their_limit_before_any_timer(
    desk: Desk,
) -> None:
    assert desk.engine.control is not None
    desk.settle(lambda: desk.engine.control.ready().ready, what="ready")  # type: ignore[union-attr]
    # Time passes with no timer and no data, as while the process was stopped.
    desk.clock.advance(desk.engine.config.heartbeats.marketdata_stale_s + 1)
    desk.engine.directory.ask(feed_actor_name(desk.engine.feed_name), QuerySnapshot(), timeout_s=5)
    view = desk.engine.control.ready()
    assert not view.ready
    assert any(b.startswith("MARKETDATA_STALE: feed=") for b in view.blockers), view.blockers
