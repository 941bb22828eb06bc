"""The engine trading in DEMO against the fake IG over real sockets, end to end: prices from
the fake's Lightstreamer endpoint through the official SDK, a bracket out (a MARKET deal
under the entry's client order id, opened with its stop and limit ON the deal, which the
engine's STOP and TARGET legs then stand for), positions and levels reconciled with IG's, and
a flatten that closes every deal (its levels end with it).

``configs/demo_ig.yaml`` as ``make demo-ig`` runs it, pointed at a fake on an ephemeral port
with a temporary data folder; the engine runs in process on the wall clock (the fake steps
its market in real time). The plan goes to the risk actor as a strategy's would, so the whole
order path (risk, order, OCO, gateway, IG adapter) is real.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.brokers.ig import IgBroker
from domain.enums import DenialCode, LegKind, OrderStatus, OrderType, PauseCause, Side
from domain.messages import (
    FlattenAll,
    QueryOrders,
    QueryPositions,
    QueryTradingState,
    TightenStops,
    TradePlan,
)
from domain.plans import client_order_id, plan_client_id
from launcher.config import load_config
from launcher.engine import Engine
from launcher.preflight import StartupError
from tests.helpers import wait_until
from tools.fake_ig import FakeIG

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[2]
EPICS = {"FTSE": "IX.D.FTSE.DAILY.IP", "DAX": "IX.D.DAX.DAILY.IP"}


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(step_interval_s=0.1, probe_interval_s=0.5, volatility_bps=0.5) as server:
        yield server


def start_ig_engine(
    fake: FakeIG,
    tmp_path: Path,
    engines: list[Engine],
    reconciliation: dict[str, Any] | None = None,
    **ig_overrides: Any,
) -> Engine:
    """An engine on ``configs/demo_ig.yaml`` pointed at ``fake``, its data in ``tmp_path``
    (engines started on one ``tmp_path`` share one database), trading once entries are
    allowed and ticks flow; appended to ``engines`` for the caller to stop."""
    config = load_config(REPO_ROOT / "configs" / "demo_ig.yaml", environ={}, dotenv_path=None)
    config = config.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "logs_dir": str(tmp_path / "logs"),
            "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
            "strategies": (),  # the test is the strategy: plans sent as a strategy would
            "ig": config.ig.model_copy(update={"rest_base_url": fake.base_url, **ig_overrides}),
            "reconciliation": config.reconciliation.model_copy(update=reconciliation or {}),
        }
    )
    (tmp_path / "logs").mkdir(exist_ok=True)
    running = Engine(config, run_http=False)
    engines.append(running)
    running.start()
    wait_until(
        lambda: running.gate.entry_denial(running.clock.now_ns()) is None,
        timeout_s=30,
        message="entries allowed (leader, armed)",
    )
    ticks = running.metrics.ticks_total.labels(feed=running.feed_name)
    wait_until(lambda: ticks._value.get() >= 10, timeout_s=30, message="ticks accepted")
    return running


@pytest.fixture
def start_engine(fake: FakeIG, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []
    yield functools.partial(start_ig_engine, fake, tmp_path, engines)
    for running in engines:
        running.stop()


def send_plan(engine: Engine, fake: FakeIG, symbol: str) -> tuple[str, str, str]:
    """A BUY bracket around the fake's offer (stop 30 below, target 60 above)."""
    quote = fake.quote(EPICS[symbol])
    last = Decimal(str(quote["offer"]))
    now = engine.clock.now_ns()
    fields: dict[str, Any] = {
        "strategy": "e2e",
        "instrument": symbol,
        "side": Side.BUY,
        "entry_price": last,
        "stop_price": last - Decimal("30"),
        "target_price": last + Decimal("60"),
        "quantity": 2,
        "signal_ts": now,
    }
    plan = TradePlan(
        plan_client_id=plan_client_id(**fields), entry_type=OrderType.MARKET, ts_init=now, **fields
    )
    engine.directory.tell("risk", plan)
    legs = (LegKind.ENTRY, LegKind.STOP, LegKind.TARGET)
    entry, stop, target = (client_order_id(plan.plan_client_id, leg) for leg in legs)
    return entry, stop, target


def ig_deals(fake: FakeIG) -> list[dict[str, Any]]:
    return [p["position"] for p in fake.positions("ABC123")]


def engine_positions(engine: Engine) -> list[tuple[str, int]]:
    views = engine.directory.ask("order", QueryPositions(), timeout_s=10)
    return sorted((p.instrument, p.quantity) for p in views)


def test_the_engine_trades_brackets_with_broker_side_levels_and_flattens_every_deal(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    broker = engine.broker
    assert isinstance(broker, IgBroker)
    assert broker.account is not None and broker.account.account_id == "ABC123"
    assert broker.account.is_live is False

    sent = [send_plan(engine, fake, symbol) for symbol in ("FTSE", "DAX")]

    def protected() -> bool:
        deals = {d["dealReference"]: d for d in ig_deals(fake)}
        return all(
            entry in deals
            and deals[entry]["stopLevel"] is not None
            and deals[entry]["limitLevel"] is not None
            for entry, _, _ in sent
        )

    wait_until(protected, timeout_s=30, message="both deals open with their stop and limit")
    for deal in ig_deals(fake):
        assert deal["limitLevel"] - deal["stopLevel"] == pytest.approx(90, abs=1)
    wait_until(
        lambda: engine_positions(engine) == [("DAX", 2), ("FTSE", 2)],
        timeout_s=20,
        message="the engine's positions are IG's",
    )
    assert sorted((p.instrument, p.quantity) for p in broker.list_positions()) == [
        ("DAX", 2),
        ("FTSE", 2),
    ]

    engine.directory.tell("order", FlattenAll(reason="e2e", ts_init=engine.clock.now_ns()))

    wait_until(lambda: ig_deals(fake) == [], timeout_s=30, message="every deal closed at IG")
    wait_until(lambda: engine_positions(engine) == [], timeout_s=20, message="the engine is flat")
    deals = [
        r
        for r in fake.request_log()
        if r.path == "/positions/otc" and r.method in ("POST", "DELETE") and r.status == 200
    ]
    # Two deals opened, two closed (POST + _method DELETE), each under its own reference:
    # never a second deal under one reference.
    references = [r.body.get("dealReference") for r in deals if isinstance(r.body, dict)]
    assert sorted(r.method for r in deals) == ["DELETE", "DELETE", "POST", "POST"]
    assert len(references) == len(set(references)) == 4
    # Opened protected, the legs standing for the levels the deals already had, closed with
    # them: not one amendment, so never a moment without a stop.
    assert [r for r in fake.request_log() if r.method == "PUT" and "/otc/" in r.path] == []


def test_refused_credentials_pause_entries_until_a_login_works(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    fake.password = "rotated"  # the operator's password changed at IG
    fake.expire_tokens()  # and the session lapsed: the next request must log in again

    denial = wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()),
        timeout_s=60,
        message="entries paused",
    )
    assert denial == (DenialCode.TRADING_PAUSED, "pause_causes=BROKER_AUTH")
    control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
    pauses = {p.cause: p.detail for p in control.pauses}
    assert "IG_IDENTIFIER" in pauses[PauseCause.BROKER_AUTH]
    assert "rotated" not in pauses[PauseCause.BROKER_AUTH]

    fake.password = "fakeigpassword"  # the configured login works again
    wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None,
        timeout_s=60,
        message="entries allowed again once a login works",
    )
    entry, _, _ = send_plan(engine, fake, "FTSE")
    wait_until(
        lambda: any(d["dealReference"] == entry for d in ig_deals(fake)),
        timeout_s=30,
        message="a deal after the pause",
    )


def test_a_lost_confirm_never_opens_a_second_deal(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine(confirm_timeout_s=0.5)
    fake.lose_confirms(1)  # the deal happens; its confirm never comes (404, no CONFIRMS)
    entry, _, _ = send_plan(engine, fake, "FTSE")

    def protected() -> bool:
        deals = [d for d in ig_deals(fake) if d["dealReference"] == entry]
        return len(deals) == 1 and deals[0]["stopLevel"] is not None

    # Settled from IG's positions (reconciliation's list, or the resend's duplicate check),
    # then protected as usual.
    wait_until(protected, timeout_s=60, message="the deal settled and protected")
    posted = [
        r
        for r in fake.request_log()
        if r.method == "POST" and r.path == "/positions/otc" and r.status == 200
    ]
    assert [r.body.get("dealReference") for r in posted] == [entry]


def test_a_stop_hit_at_ig_closes_the_engines_position_and_cancels_the_target(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    _, stop, target = send_plan(engine, fake, "FTSE")
    wait_until(
        lambda: [d["limitLevel"] is not None for d in ig_deals(fake)] == [True],
        timeout_s=30,
        message="the deal protected at IG",
    )
    wait_until(lambda: engine_positions(engine) == [("FTSE", 2)], timeout_s=20)
    [deal] = ig_deals(fake)
    fake.set_quote(EPICS["FTSE"], Decimal(str(deal["stopLevel"])) - 5)  # IG stops it out
    wait_until(lambda: ig_deals(fake) == [], timeout_s=20, message="closed at IG")
    wait_until(lambda: engine_positions(engine) == [], timeout_s=30, message="the engine is flat")
    # IG closed the deal itself: no order of ours closed it.
    closes = [r for r in fake.request_log() if r.method == "DELETE"]
    assert closes == []

    def leg_statuses() -> tuple[OrderStatus | None, OrderStatus | None]:
        orders = {
            o.client_order_id: o.status
            for o in engine.directory.ask("order", QueryOrders(), timeout_s=10)
        }
        return orders.get(stop), orders.get(target)

    wait_until(
        lambda: leg_statuses() == (OrderStatus.FILLED, OrderStatus.CANCELLED),
        timeout_s=20,
        message="the stop leg filled, the target cancelled",
    )


def test_a_stop_moved_at_ig_is_drift_and_a_stop_removed_is_put_back(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    """Reconciliation compares the deal's levels with the bracket's: a stop dragged in IG's
    own platform pauses entries (RECONCILE_DRIFT) until it is back; a stop removed there ends
    the engine's stop leg and its OCO puts the level back on the deal."""
    engine = start_engine(
        reconciliation={"positions_interval_s": 1.0, "open_orders_interval_s": 1.0}
    )
    _, stop, _ = send_plan(engine, fake, "FTSE")
    wait_until(lambda: engine_positions(engine) == [("FTSE", 2)], timeout_s=20)
    [deal] = ig_deals(fake)
    ours, limit = Decimal(str(deal["stopLevel"])), Decimal(str(deal["limitLevel"]))

    def pause_causes() -> set[PauseCause]:
        control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
        return {p.cause for p in control.pauses}

    fake.amend_levels_elsewhere(deal["dealId"], stop=ours - 20, limit=limit)
    wait_until(
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(),
        timeout_s=30,
        message="the moved stop found as drift",
    )
    fake.amend_levels_elsewhere(deal["dealId"], stop=ours, limit=limit)
    wait_until(
        lambda: PauseCause.RECONCILE_DRIFT not in pause_causes(),
        timeout_s=30,
        message="the drift gone once the stop is back",
    )

    fake.amend_levels_elsewhere(deal["dealId"], stop=None, limit=limit)

    def stop_legs() -> dict[str, OrderStatus]:
        return {
            o.client_order_id: o.status
            for o in engine.directory.ask("order", QueryOrders(), timeout_s=10)
            if o.leg is LegKind.STOP
        }

    wait_until(
        lambda: stop_legs().get(stop) is OrderStatus.CANCELLED,
        timeout_s=30,
        message="the removed stop ends the stop leg",
    )
    wait_until(
        lambda: [Decimal(str(d["stopLevel"] or 0)) for d in ig_deals(fake)] == [ours],
        timeout_s=30,
        message="the OCO's replacement puts the stop back on the deal",
    )
    assert engine_positions(engine) == [("FTSE", 2)]


def test_a_tightened_stop_moves_the_deals_level_in_one_request(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    """The 15:20 tighten on IG: the stop is the deal's one level, so the new stop leg moves it
    with one PUT and the old leg ends superseded; never a PUT without a stop."""
    engine = start_engine()
    _, stop, _ = send_plan(engine, fake, "FTSE")
    wait_until(lambda: engine_positions(engine) == [("FTSE", 2)], timeout_s=20)
    [deal] = ig_deals(fake)
    old_stop = Decimal(str(deal["stopLevel"]))
    fake.set_quote(EPICS["FTSE"], Decimal(str(deal["level"])) + 20)  # in profit: break-even
    wait_until(
        lambda: (
            engine.directory.ask(
                "order", TightenStops(reason="e2e", mode="break_even"), timeout_s=10
            )
            > 0
        ),
        timeout_s=20,
        message="a stop to tighten once the quote has reached the engine",
    )
    new_stop = client_order_id(stop[:-1], LegKind.STOP, 1)

    def stop_legs() -> dict[str, OrderStatus]:
        return {
            o.client_order_id: o.status
            for o in engine.directory.ask("order", QueryOrders(), timeout_s=10)
            if o.leg is LegKind.STOP
        }

    wait_until(
        lambda: stop_legs() == {stop: OrderStatus.CANCELLED, new_stop: OrderStatus.ACCEPTED},
        timeout_s=20,
        message="the new stop working, the old one superseded",
    )
    [deal] = ig_deals(fake)
    assert Decimal(str(deal["stopLevel"])) > old_stop
    puts = [r for r in fake.request_log() if r.method == "PUT" and "/otc/" in r.path]
    assert len(puts) == 1 and puts[0].body["stopLevel"] == deal["stopLevel"]
    assert puts[0].body["limitLevel"] == deal["limitLevel"]


def test_a_403_allowance_burst_is_retried_and_deals_once(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    fake.rate_limit_next(2, kind="trading", category="trading")
    entry, _, _ = send_plan(engine, fake, "FTSE")
    wait_until(
        lambda: [d["stopLevel"] is not None for d in ig_deals(fake)] == [True],
        timeout_s=60,
        message="dealt and protected after the 403s",
    )
    assert engine.metrics.retries_total.labels(type="rate_limit")._value.get() >= 2
    denial = engine.gate.entry_denial(engine.clock.now_ns())
    assert denial is None  # a rate limit is never an auth pause
    posted = [
        r
        for r in fake.request_log()
        if r.method == "POST" and r.path == "/positions/otc" and r.status == 200
    ]
    assert [r.body.get("dealReference") for r in posted] == [entry]


def test_a_5xx_before_dealing_is_resent_once_settled_and_deals_once(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    engine = start_engine()
    fake.fail_next(1, status=503, category="trading")
    entry, _, _ = send_plan(engine, fake, "FTSE")
    wait_until(
        lambda: [d["stopLevel"] is not None for d in ig_deals(fake)] == [True],
        timeout_s=60,
        message="dealt and protected after the 503",
    )
    assert engine.metrics.retries_total.labels(type="submit_unknown")._value.get() >= 1
    posted = [
        r
        for r in fake.request_log()
        if r.method == "POST" and r.path == "/positions/otc" and r.status == 200
    ]
    assert [r.body.get("dealReference") for r in posted] == [entry]


def test_a_refused_login_at_start_is_one_startup_error(fake: FakeIG, tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs" / "demo_ig.yaml", environ={}, dotenv_path=None)
    config = config.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "logs_dir": str(tmp_path / "logs"),
            "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
            "ig": config.ig.model_copy(update={"rest_base_url": fake.base_url}),
        }
    )
    (tmp_path / "logs").mkdir()
    fake.password = "rotated"
    engine = Engine(config, run_http=False)
    with pytest.raises(StartupError, match="IG connect failed: IG_AUTH_REFUSED") as caught:
        engine.start()
    assert "rotated" not in str(caught.value) and "fakeigpassword" not in str(caught.value)


def test_a_start_that_finds_igs_allowance_used_up_waits_for_it_and_starts(
    fake: FakeIG, start_engine: Callable[..., Engine]
) -> None:
    # A restart right after a crash can find the minute's allowance spent by the process that
    # died: the login is asked again (backing off), not a failed start (found by SIGKILLing
    # the launcher against the fake: "IG connect failed: IG_RATE_LIMITED: GET /session").
    fake.rate_limit_next(count=3, kind="account")
    engine = start_engine()
    assert engine.broker is not None and engine.broker.account is not None
    refused = [r for r in fake.request_log() if r.status == 403]
    assert len(refused) == 3
