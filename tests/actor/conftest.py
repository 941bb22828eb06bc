"""The actor-test harness: a real engine on a manual clock, driven step by step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors.order_actor import PortfolioView
from adapters.storage.repositories import UnitOfWork
from domain.clock import ManualClock
from domain.enums import OrderType, Side
from domain.messages import QueryPortfolio, QuerySnapshot, QueryTradingState, TradePlan
from domain.orders import Order
from domain.plans import plan_client_id
from launcher.engine import Engine, feed_actor_name
from tests.helpers import make_config, make_tick, wait_until

T = TypeVar("T")


class Desk:
    """What a test needs to drive one engine: time, prices, plans, and views of the state."""

    def __init__(self, engine: Engine, clock: ManualClock) -> None:
        self.engine = engine
        self.clock = clock
        self._plans = 0

    # -- driving ---------------------------------------------------------------------------
    def step(self, seconds: float = 0.0) -> None:
        if seconds:
            self.clock.advance(seconds)
        self.engine.fire_timer()

    def quote(self, instrument: str, bid: str, ask: str) -> None:
        """Publish a tick and wait until the feed actor has fanned it out (an ask queued
        behind the batch returns only after it), so a plan sent next cannot overtake it."""
        self.engine.publish_ticks([make_tick(instrument, bid, ask, ts=self.clock.now_ns())])
        self.engine.directory.ask(
            feed_actor_name(self.engine.feed_name), QuerySnapshot(), timeout_s=5
        )

    def send_plan(
        self,
        *,
        instrument: str = "AAA",
        side: Side = Side.BUY,
        entry: str = "100.10",
        stop: str = "99.00",
        target: str = "102.00",
        quantity: int = 10,
        strategy: str = "orb_1",
    ) -> TradePlan:
        """Hand a plan to the risk actor, exactly where a strategy would."""
        self._plans += 1
        signal_ts = self.clock.now_ns() + self._plans
        values = {
            "strategy": strategy,
            "instrument": instrument,
            "side": side,
            "entry_price": Decimal(entry),
            "stop_price": Decimal(stop),
            "target_price": Decimal(target),
            "quantity": quantity,
            "signal_ts": signal_ts,
        }
        plan = TradePlan(
            plan_client_id=plan_client_id(**values),
            entry_type=OrderType.MARKET,
            ts_init=self.clock.now_ns(),
            **values,
        )
        assert self.engine.directory.tell("risk", plan)
        return plan

    # -- waiting ---------------------------------------------------------------------------
    def settle(
        self, condition: Callable[[], T], *, timeout_s: float = 10.0, what: str = "condition"
    ) -> T:
        """Fire timers (clock unchanged) until ``condition`` holds: no sleeps as sync."""

        def fired_then_checked() -> T:
            self.engine.fire_timer()
            return condition()

        return wait_until(fired_then_checked, timeout_s=timeout_s, message=what)

    # -- views -----------------------------------------------------------------------------
    def flush_storage(self) -> None:
        """Wait until the order actor's write-behind has stored what it was handed: the tables
        follow the books by a few milliseconds."""
        if self.engine.order_store is not None:
            self.engine.order_store.flush()

    def portfolio(self) -> PortfolioView:
        return self.engine.directory.ask("order", QueryPortfolio(), timeout_s=5)

    def trading(self) -> Any:
        return self.engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=5)

    def orders_for(self, plan_id: str) -> list[Order]:
        assert self.engine.database is not None
        self.flush_storage()
        with UnitOfWork(self.engine.database) as uow:
            return uow.orders.list_for_plan(plan_id)

    def working_legs(self, plan_id: str) -> dict[str, list[Order]]:
        legs: dict[str, list[Order]] = {}
        for order in self.orders_for(plan_id):
            if order.status.is_working:
                legs.setdefault(order.leg.value, []).append(order)
        return legs

    def ready_to_trade(self) -> None:
        """Leader lease held, trading ACTIVE and armed, quotes known."""
        self.quote("AAA", "100.00", "100.10")
        self.quote("BBB", "200.00", "200.10")

        def ready() -> bool:
            state = self.trading().state
            if not (state.state.value == "ACTIVE" and state.armed):
                return False
            # Entries also wait for the order actor's takeover of the lease's epoch.
            order = self.engine.directory.ask("order", QuerySnapshot(), timeout_s=5)
            leadership = order["leadership"]
            return leadership is not None and order["taken_over_epoch"] == leadership["epoch"]

        self.settle(ready, what="ACTIVE, armed and the book taken over")


@pytest.fixture
def desk_factory(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> Iterator[Callable[..., Desk]]:
    def build(**config_overrides: Any) -> Desk:
        engine_kwargs = {
            key: config_overrides.pop(key)
            for key in ("run_http", "broker_partial_fill_max", "broker_faults")
            if key in config_overrides
        }
        # Strategies are left out: plans are sent by the test, so nothing trades on its own.
        config_overrides.setdefault("strategies", [])
        engine = engine_factory(make_config(tmp_path, **config_overrides), **engine_kwargs)
        return Desk(engine, clock)

    yield build


@pytest.fixture
def desk(desk_factory: Callable[..., Desk]) -> Desk:
    built = desk_factory()
    built.ready_to_trade()
    return built
