"""The paper venue's light queries answer what filtering its full lists would: ``list_open_orders``
is the working part of ``list_orders``, ``list_fills(since_ns=...)`` the part of ``list_fills``
at or after ``since_ns``, through submits, cancels, fills, partial fills, a restart from
storage, a new trading day and a passive (standby) venue reading its tables."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.brokers.base import BrokerRejected, BrokerUnavailable
from adapters.brokers.paper import PaperBroker
from adapters.storage.database import Database, create_database_engine
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.config import PaperBrokerConfig
from domain.enums import OrderType, Side
from domain.messages import OrderRequest, Tick
from tests.adapter.test_paper_broker import INSTRUMENTS, SYMBOL

pytest_plugins = ["tests.adapter.paper_fixtures"]

PRICES = ("99.00", "99.50", "100.00", "100.50", "101.00")

step = st.one_of(
    st.tuples(st.just("market"), st.sampled_from(Side), st.integers(1, 4)),
    st.tuples(st.just("limit"), st.sampled_from(Side), st.sampled_from(PRICES)),
    st.tuples(st.just("stop"), st.sampled_from(Side), st.sampled_from(PRICES)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("quote"), st.sampled_from(PRICES)),
    st.tuples(st.just("wait"), st.sampled_from((0.5, 30, 3_600, 86_400))),
    st.tuples(st.just("restart")),
)


def _request(number: int, kind: str, side: Side, price: str | None, lots: int) -> OrderRequest:
    is_stop = kind == "stop"
    return OrderRequest(
        client_order_id=f"C{number}",
        instrument=SYMBOL,
        side=side,
        order_type={"market": OrderType.MARKET, "limit": OrderType.LIMIT}.get(kind, OrderType.STOP),
        quantity=50 * lots,
        price=None if price is None or is_stop else Decimal(price),
        trigger_price=Decimal(price) if is_stop and price is not None else None,
    )


def _venue(database: Database, clock: ManualClock, *, passive: bool = False) -> PaperBroker:
    broker = PaperBroker(
        config=PaperBrokerConfig(latency_ms=1),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
        partial_fill_max=50,
        writer_thread=False,
        follow_leadership=passive,
    )
    broker.set_report_sink(lambda report: None)
    broker.connect()
    return broker


def _assert_light_queries_agree(broker: PaperBroker, clock: ManualClock) -> None:
    full_orders = broker.list_orders()
    assert broker.list_open_orders() == [r for r in full_orders if r.status.is_working]
    full_fills = broker.list_fills()
    assert broker.list_fills(since_ns=None) == full_fills
    now = clock.now_ns()
    times = sorted({f.ts_event for f in full_fills})
    for since_ns in (0, now - 60 * NANOS_PER_SECOND, now, now + 1, *times[:3], *times[-3:]):
        assert broker.list_fills(since_ns=since_ns) == [
            f for f in full_fills if f.ts_event >= since_ns
        ], since_ns


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_light_queries_equal_the_filtered_full_lists(
    migrated_template: Path, tmp_path: Path, steps: list[tuple[object, ...]]
) -> None:
    path = tmp_path / f"venue-{id(steps)}.db"
    shutil.copyfile(migrated_template, path)
    database = Database(create_database_engine(f"sqlite:///{path}"))
    clock = ManualClock()
    broker = _venue(database, clock)
    numbers = 0
    try:
        for action in [("quote", "100.00"), *steps]:
            kind = action[0]
            try:
                if kind in ("market", "limit", "stop"):
                    numbers += 1
                    side = action[1]
                    assert isinstance(side, Side)
                    if kind == "market":
                        assert isinstance(action[2], int)
                        broker.submit_order(_request(numbers, kind, side, None, action[2]))
                    else:
                        assert isinstance(action[2], str)
                        broker.submit_order(_request(numbers, kind, side, action[2], 1))
                elif kind == "cancel":
                    broker.cancel_order(f"C{action[1]}")
                elif kind == "quote":
                    assert isinstance(action[1], str)
                    bid = Decimal(action[1])
                    now_ns = clock.now_ns()
                    broker.on_tick(
                        Tick(
                            instrument=SYMBOL,
                            bid=bid,
                            ask=bid + Decimal("0.05"),
                            last=bid,
                            ts_event=now_ns,
                            ts_init=now_ns,
                        )
                    )
                elif kind == "wait":
                    assert isinstance(action[1], (int, float))
                    clock.advance(action[1])
                    broker.on_time(clock.now_ns())
                else:
                    broker.close()
                    broker = _venue(database, clock)
            except (BrokerRejected, BrokerUnavailable):
                pass  # a refused request changes nothing; the lists must still agree
            clock.advance(0.002)  # past the venue's latency: acks, fills, cancels go on
            broker.on_time(clock.now_ns())
            _assert_light_queries_agree(broker, clock)
        # A standby's venue answers from its tables, by the same rules.
        standby = _venue(database, clock, passive=True)
        try:
            _assert_light_queries_agree(standby, clock)
            assert standby.list_open_orders() == broker.list_open_orders()
            assert standby.list_fills(since_ns=clock.now_ns() - 30 * NANOS_PER_SECOND) == (
                broker.list_fills(since_ns=clock.now_ns() - 30 * NANOS_PER_SECOND)
            )
        finally:
            standby.close()
    finally:
        broker.close()
        database.dispose()
