"""The paper venue as a rate-limited broker: it counts what arrives and says 429 past its limit
(``paper_broker.rate_limit_per_s``/``rate_limit_per_min``), without acting on the request."""

from __future__ import annotations

import pytest

from adapters.brokers.base import BrokerRateLimited
from adapters.brokers.paper import PaperBroker
from adapters.brokers.paper.rate_limit import VenueRateLimit
from adapters.storage.database import Database
from domain.clock import ManualClock
from domain.config import PaperBrokerConfig
from tests.adapter.test_paper_broker import INSTRUMENTS, request

pytest_plugins = ["tests.adapter.paper_fixtures"]


class WallTime:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class TestVenueRateLimit:
    def test_refuses_past_the_per_second_limit_with_the_time_until_a_slot_frees(self) -> None:
        wall = WallTime()
        limit = VenueRateLimit(per_second=3, per_minute=None, wall_time=wall)
        for index in range(3):
            limit.admit("submit", f"C{index}")
            wall.now += 0.1
        with pytest.raises(BrokerRateLimited, match="RATE_LIMITED: cancel C9") as refused:
            limit.admit("cancel", "C9")
        assert refused.value.retry_after_s == pytest.approx(0.7)
        assert refused.value.client_order_id == "C9"
        wall.now += 0.7  # the first request is now a full second old: outside the window
        limit.admit("cancel", "C9")
        counts = limit.counts()
        # Four arrived within one second (the refused one too): what a test of "never
        # exceeded" reads.
        assert counts["max_requests_in_1s"] == 4
        assert counts["rate_limited_total"] == 1 and counts["requests_total"] == 5
        assert [(kind, order, ok) for _, kind, order, ok in limit.arrivals()][-2:] == [
            ("cancel", "C9", False),
            ("cancel", "C9", True),
        ]

    def test_the_minute_limit_counts_accepted_requests_only(self) -> None:
        wall = WallTime()
        limit = VenueRateLimit(per_second=None, per_minute=2, wall_time=wall)
        limit.admit("submit", "A")
        wall.now += 10
        limit.admit("submit", "B")
        for _ in range(3):  # refusals do not use up the limit
            wall.now += 10
            with pytest.raises(BrokerRateLimited):
                limit.admit("submit", "C")
        wall.now += 30.5  # A is more than a minute old
        limit.admit("submit", "C")
        assert limit.counts()["max_requests_in_60s"] == 5


def test_the_venue_refuses_a_request_over_its_limit_without_taking_it(
    database: Database, clock: ManualClock
) -> None:
    broker = PaperBroker(
        config=PaperBrokerConfig(latency_ms=0, rate_limit_per_s=2),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
    )
    broker.set_report_sink(lambda report: None)
    broker.connect()
    try:
        broker.submit_order(request("C1"))
        broker.cancel_order("C1")
        # Two requests in this second already (a test step takes far less than a second).
        with pytest.raises(BrokerRateLimited, match="RATE_LIMITED: submit C2"):
            broker.submit_order(request("C2"))
        assert "C2" not in broker.submission_counts()
        rates = broker.request_rates()
        assert rates is not None and rates["rate_limited_total"] == 1
    finally:
        broker.close()


def test_without_a_limit_the_venue_counts_nothing(database: Database, clock: ManualClock) -> None:
    broker = PaperBroker(
        config=PaperBrokerConfig(latency_ms=0),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
    )
    broker.set_report_sink(lambda report: None)
    broker.connect()
    try:
        for index in range(20):
            broker.submit_order(request(f"C{index}"))
        assert broker.request_rates() is None and broker.request_arrivals() == []
    finally:
        broker.close()
