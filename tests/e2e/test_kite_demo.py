"""The engine trading in DEMO against the fake Kite over real sockets, end to end: the ticker's
ticks in, a bracket out (MARKET entry, then the SL-M stop and the LIMIT target once it filled),
fills back through postbacks, positions reconciled with Kite's, and a flatten that cancels the
siblings and closes the position at Kite.

``configs/demo_kite.yaml`` as ``make demo-kite`` runs it, pointed at a fake on an ephemeral
port with a fresh session and a temporary data folder; the engine runs in process on the wall
clock (the fake steps its own market in real time). The plan goes to the risk actor as a
strategy's would, so the whole order path (risk, order, OCO, gateway, Kite adapter) is real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.brokers.kite import KiteBroker, encode_tag
from domain.enums import DenialCode, LegKind, OrderStatus, PauseCause, TradingState
from domain.messages import (
    FlattenAll,
    QueryOrders,
    QueryPositions,
    QueryTradingState,
    TightenStops,
)
from domain.plans import client_order_id
from launcher.config import load_config
from launcher.engine import Engine
from launcher.preflight import StartupError
from tests.helpers import wait_until
from tools.bench_kite_flatten import (
    BENCH_RISK,
    bracket_plan,
    brackets_protected,
    flat_at_kite,
    send_bracket_plans,
)
from tools.fake_kite import FakeKite

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite(account_type="DEMO", step_interval_s=0.1, heartbeat_interval_s=0.2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_engine(fake: FakeKite, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start the engine on configs/demo_kite.yaml pointed at the fake; ``kite_overrides``
    change kite settings (a shorter timeout for the lost-answer drills)."""
    engines: list[Engine] = []

    def start(risk: dict[str, Any] | None = None, **kite_overrides: Any) -> Engine:
        config = load_config(REPO_ROOT / "configs" / "demo_kite.yaml", environ={}, dotenv_path=None)
        config = config.model_copy(
            update={
                "risk": config.risk.model_copy(update=risk or {}),
                "data_dir": str(tmp_path / "data"),
                "logs_dir": str(tmp_path / "logs"),
                "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
                "strategies": (),  # the test is the strategy: plans sent as a strategy would
                "kite": config.kite.model_copy(
                    update={
                        "api_key": SecretStr(fake.api_key),
                        "access_token": SecretStr(fake.create_session()),
                        "access_token_file": None,
                        "rest_base_url": fake.base_url,
                        "ws_base_url": fake.ws_url,
                        **kite_overrides,
                    }
                ),
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
        # Every instrument quoted through the feed actor (risk and order price plans on it).
        ticks = running.metrics.ticks_total.labels(feed=running.feed_name)
        wait_until(lambda: ticks._value.get() >= 10, timeout_s=30, message="ticks accepted")
        return running

    yield start
    for running in engines:
        running.stop()


@pytest.fixture
def engine(start_engine: Callable[..., Engine]) -> Engine:
    return start_engine()


def kite_orders(fake: FakeKite, client_id: str) -> list[dict[str, Any]]:
    tag = encode_tag(client_id)
    return [order for order in fake.orders() if order.get("tag") == tag]


def net_quantity(fake: FakeKite, symbol: str) -> int:
    return sum(
        int(row["quantity"]) for row in fake.positions()["net"] if row["tradingsymbol"] == symbol
    )


def send_plan(engine: Engine, fake: FakeKite, symbol: str = "INFY") -> tuple[str, str, str]:
    """A BUY bracket around the fake's last price, to the risk actor as a strategy sends it;
    returns the client ids of its entry, stop and target."""
    plan = bracket_plan(
        fake, now_ns=engine.clock.now_ns(), symbol=symbol, strategy="e2e", quantity=10
    )
    engine.directory.tell("risk", plan)
    entry, stop, target = (
        client_order_id(plan.plan_client_id, leg)
        for leg in (LegKind.ENTRY, LegKind.STOP, LegKind.TARGET)
    )
    return entry, stop, target


def wait_protected(fake: FakeKite, entry: str, stop: str, target: str) -> None:
    wait_until(
        lambda: [o["status"] for o in kite_orders(fake, entry)] == ["COMPLETE"],
        timeout_s=30,
        message="the entry filled at Kite",
    )
    wait_until(
        lambda: kite_orders(fake, stop) and kite_orders(fake, target),
        timeout_s=30,
        message="the stop and the target placed after the fill",
    )


def engine_positions(engine: Engine) -> list[Any]:
    return list(engine.directory.ask("order", QueryPositions(), timeout_s=10))


def legs_accepted(engine: Engine, *client_ids: str) -> bool:
    """The order actor holds every one of ``client_ids`` as ACCEPTED (Kite's answer is in)."""
    orders = engine.directory.ask("order", QueryOrders(), timeout_s=10)
    accepted = {o.client_order_id for o in orders if o.status is OrderStatus.ACCEPTED}
    return accepted >= set(client_ids)


def broker_has_settled(engine: Engine, client_id: str) -> bool:
    """The order actor holds ``client_id`` as FILLED (settled, no longer in flight)."""
    orders = engine.directory.ask("order", QueryOrders(), timeout_s=10)
    return any(o.client_order_id == client_id and o.status is OrderStatus.FILLED for o in orders)


def retries(engine: Engine, retry_type: str) -> float:
    return engine.metrics.retries_total.labels(type=retry_type)._value.get()


def test_the_engine_trades_a_bracket_against_the_fake_and_flattens_it(
    fake: FakeKite, engine: Engine
) -> None:
    broker = engine.broker
    assert isinstance(broker, KiteBroker)
    assert broker.account is not None and broker.account.is_live is False
    wait_until(lambda: broker.ticks_total > 0, timeout_s=20, message="ticks from the ticker")
    wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None,
        timeout_s=30,
        message="entries allowed (leader, armed)",
    )
    entry, stop, target = send_plan(engine, fake)
    wait_until(
        lambda: [o["status"] for o in kite_orders(fake, entry)] == ["COMPLETE"],
        timeout_s=20,
        message="the entry filled at Kite",
    )
    wait_until(
        lambda: kite_orders(fake, stop) and kite_orders(fake, target),
        timeout_s=20,
        message="the stop and the target placed after the fill",
    )
    (kite_stop,) = kite_orders(fake, stop)
    (kite_target,) = kite_orders(fake, target)
    assert kite_stop["order_type"] == "SL-M" and kite_stop["transaction_type"] == "SELL"
    assert kite_target["order_type"] == "LIMIT" and kite_target["quantity"] == 10
    assert net_quantity(fake, "INFY") == 10

    wait_until(
        lambda: [(p.instrument, p.quantity) for p in engine_positions(engine)] == [("INFY", 10)],
        timeout_s=20,
        message="the engine's position is Kite's",
    )
    assert [(p.instrument, p.quantity) for p in broker.list_positions() if p.quantity] == [
        ("INFY", 10)
    ]
    # (A stop our books do not hold as accepted yet is cancelled and an EXIT closes instead.)
    wait_until(lambda: legs_accepted(engine, stop, target), timeout_s=20, message="legs accepted")

    engine.directory.tell("order", FlattenAll(reason="e2e", ts_init=engine.clock.now_ns()))

    wait_until(lambda: net_quantity(fake, "INFY") == 0, timeout_s=20, message="flat at Kite")
    wait_until(
        lambda: all(
            o["status"] in ("CANCELLED", "COMPLETE")
            for o in kite_orders(fake, stop) + kite_orders(fake, target)
        ),
        timeout_s=20,
        message="the siblings cancelled at Kite",
    )
    wait_until(lambda: engine_positions(engine) == [], timeout_s=20, message="the engine is flat")
    assert all(len(kite_orders(fake, cid)) == 1 for cid in (entry, stop, target))
    # Two requests closed it: the target cancelled, then the stop itself made a MARKET order
    # (protecting until then); no separate exit order.
    (kite_stop,) = kite_orders(fake, stop)
    (kite_target,) = kite_orders(fake, target)
    assert (kite_stop["order_type"], kite_stop["status"]) == ("MARKET", "COMPLETE")
    assert kite_target["status"] == "CANCELLED"
    assert kite_orders(fake, entry[:-1] + "X1") == []


def test_a_stop_kite_will_not_turn_to_market_is_cancelled_and_an_exit_closes(
    fake: FakeKite, engine: Engine
) -> None:
    entry, stop, target = open_protected(engine, fake)
    wait_until(
        lambda: [(p.instrument, p.quantity) for p in engine_positions(engine)] == [("INFY", 10)],
        timeout_s=20,
        message="the engine's position is Kite's",
    )
    fake.refuse_modifications(1)
    engine.directory.tell("order", FlattenAll(reason="e2e", ts_init=engine.clock.now_ns()))

    wait_until(lambda: net_quantity(fake, "INFY") == 0, timeout_s=20, message="flat at Kite")
    wait_until(lambda: engine_positions(engine) == [], timeout_s=20, message="the engine is flat")
    exit_id = entry[:-1] + "X1"
    wait_until(
        lambda: [o["status"] for o in kite_orders(fake, exit_id)] == ["COMPLETE"],
        timeout_s=20,
        message="the exit filled",
    )
    (kite_stop,) = kite_orders(fake, stop)
    (kite_target,) = kite_orders(fake, target)
    assert (kite_stop["order_type"], kite_stop["status"]) == ("SL-M", "CANCELLED")
    assert kite_target["status"] == "CANCELLED"
    refused = [
        r for r in fake.request_log("order") if r.method == "PUT" and r.error_type is not None
    ]
    assert len(refused) == 1
    assert all(len(kite_orders(fake, cid)) == 1 for cid in (entry, stop, target, exit_id))


def open_protected(engine: Engine, fake: FakeKite) -> tuple[str, str, str]:
    """A BUY bracket on INFY, its stop and target accepted in our books."""
    wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None,
        timeout_s=30,
        message="entries allowed (leader, armed)",
    )
    entry, stop, target = send_plan(engine, fake)
    wait_until(lambda: legs_accepted(engine, stop, target), timeout_s=20, message="legs accepted")
    return entry, stop, target


def stop_trigger_in_our_books(engine: Engine, stop: str) -> Decimal | None:
    orders = engine.directory.ask("order", QueryOrders(), timeout_s=10)
    return next((o.trigger_price for o in orders if o.client_order_id == stop), None)


def tighten(engine: Engine) -> None:
    """The 15:20 tighten, trailing 200 ticks (10 rupees, about 0.6 %) behind the bid: tighter
    than the 5 % stop, wide enough that the fake's walk does not reach it within the test."""
    wait_until(
        lambda: (
            engine.directory.ask(
                "order", TightenStops(reason="e2e", mode="trail", trail_ticks=200), timeout_s=10
            )
            > 0
        ),
        timeout_s=20,
        message="a stop to tighten once a quote has reached the engine",
    )


def test_a_tightened_stop_has_its_trigger_moved_at_kite_in_one_request(
    fake: FakeKite, engine: Engine
) -> None:
    # Kite can change a working SL-M in place: one PUT, the stop protecting throughout; never
    # a cancel and a replacement (a round trip without a stop).
    _, stop, _ = open_protected(engine, fake)
    (kite_stop,) = kite_orders(fake, stop)
    old_trigger = Decimal(str(kite_stop["trigger_price"]))
    tighten(engine)
    wait_until(
        lambda: Decimal(str(kite_orders(fake, stop)[0]["trigger_price"])) > old_trigger,
        timeout_s=20,
        message="the stop's trigger moved at Kite",
    )
    (kite_stop,) = kite_orders(fake, stop)
    moved = Decimal(str(kite_stop["trigger_price"]))
    assert (kite_stop["order_type"], kite_stop["status"]) == ("SL-M", "TRIGGER PENDING")
    wait_until(
        lambda: stop_trigger_in_our_books(engine, stop) == moved,
        timeout_s=20,
        message="our books hold the moved trigger",
    )
    requests = fake.request_log("order")
    assert [r.method for r in requests if r.method in ("PUT", "DELETE")] == ["PUT"]
    assert kite_orders(fake, client_order_id(stop[:-1], LegKind.STOP, 1)) == []


def test_a_stop_kite_will_not_move_stays_protecting_then_is_replaced_at_the_new_level(
    fake: FakeKite, engine: Engine
) -> None:
    _, stop, _ = open_protected(engine, fake)
    fake.refuse_modifications(5)  # order.max_attempts: each move refused, the old stop kept
    tighten(engine)
    replacement = client_order_id(stop[:-1], LegKind.STOP, 1)
    wait_until(
        lambda: [o["status"] for o in kite_orders(fake, replacement)] == ["TRIGGER PENDING"],
        timeout_s=30,
        message="the stop cancelled after the last refused move, and replaced at the new level",
    )
    refused = [r for r in fake.request_log("order") if r.method == "PUT"]
    assert len(refused) == 5 and all(r.error_type == "InputException" for r in refused)
    (old,) = kite_orders(fake, stop)
    (new,) = kite_orders(fake, replacement)
    assert old["status"] == "CANCELLED"
    assert Decimal(str(new["trigger_price"])) > Decimal(str(old["trigger_price"]))


def test_a_stop_moved_in_kites_own_app_is_drift_until_it_is_back(
    fake: FakeKite, engine: Engine
) -> None:
    """Reconciliation compares the trigger Kite holds with ours: a stop dragged outside the
    engine (Kite's app, another API client) pauses entries as RECONCILE_DRIFT."""
    entry, stop, target = send_plan(engine, fake)
    wait_protected(fake, entry, stop, target)
    [kite_stop] = kite_orders(fake, stop)
    wait_until(lambda: broker_has_settled(engine, entry), timeout_s=20)
    token = engine.config.kite.access_token
    assert token is not None
    headers = {
        "X-Kite-Version": "3",
        "Authorization": f"token {fake.api_key}:{token.get_secret_value()}",
    }

    def move_stop(trigger: Decimal) -> None:
        answer = httpx.put(
            f"{fake.base_url}/orders/regular/{kite_stop['order_id']}",
            data={"trigger_price": str(trigger), "order_type": "SL-M"},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text

    def pause_causes() -> set[PauseCause]:
        state = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
        return {p.cause for p in state.pauses}

    ours = Decimal(str(kite_stop["trigger_price"]))
    move_stop(ours - 5)
    wait_until(
        lambda: PauseCause.RECONCILE_DRIFT in pause_causes(),
        timeout_s=60,
        message="the moved stop found as drift",
    )
    move_stop(ours)
    wait_until(
        lambda: PauseCause.RECONCILE_DRIFT not in pause_causes(),
        timeout_s=60,
        message="the drift gone once the stop is back",
    )


def test_an_expired_token_pauses_entries_until_a_new_login_works(
    fake: FakeKite,
    start_engine: Callable[..., Engine],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token_file = tmp_path / "kite_access_token"
    token_file.write_text(fake.create_session() + "\n")
    engine = start_engine(access_token=None, access_token_file=str(token_file))

    fake.expire_token()  # 06:00: the ticker is closed and cannot come back with the old token

    denial = wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()),
        timeout_s=20,
        message="entries paused",
    )
    assert denial == (DenialCode.TRADING_PAUSED, "pause_causes=BROKER_AUTH")
    control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
    pauses = {p.cause: p.detail for p in control.pauses}
    assert "tools.kite_login" in pauses[PauseCause.BROKER_AUTH]
    assert any("tools.kite_login" in record.getMessage() for record in caplog.records)

    # What tools.kite_login writes; the adapter reads it at its next request (reconciliation
    # asks Kite on its own schedule), Kite accepts it, and entries resume by themselves.
    token_file.write_text(fake.create_session() + "\n")
    wait_until(
        lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None,
        timeout_s=30,
        message="entries allowed again with the new token",
    )
    entry, stop, target = send_plan(engine, fake)
    wait_protected(fake, entry, stop, target)


class TestFaultKnobs:
    """Each fault of the fake against the running engine: no duplicate order, no orphan, the
    right retry, and ``trader_retries_total{type}`` counting it."""

    def test_a_429_burst_is_retried_by_the_gateway_and_places_the_entry_once(
        self, fake: FakeKite, engine: Engine
    ) -> None:
        fake.rate_limit_next(count=2, category="order")

        entry, stop, target = send_plan(engine, fake)

        wait_protected(fake, entry, stop, target)
        assert retries(engine, "rate_limit") >= 2
        assert [len(kite_orders(fake, cid)) for cid in (entry, stop, target)] == [1, 1, 1]

    def test_a_lost_answer_is_settled_from_the_order_list_without_a_second_order(
        self, fake: FakeKite, start_engine: Callable[..., Engine]
    ) -> None:
        engine = start_engine(request_timeout_s=0.5)
        fake.hold_next(seconds=2.0, placed=True)  # placed at Kite, the answer never comes

        entry, stop, target = send_plan(engine, fake)

        wait_protected(fake, entry, stop, target)  # the postbacks may well beat the timeout
        wait_until(lambda: retries(engine, "submit_unknown") >= 1, message="the unknown counted")
        wait_until(lambda: broker_has_settled(engine, entry), message="the entry settled")
        assert [len(kite_orders(fake, cid)) for cid in (entry, stop, target)] == [1, 1, 1]

    def test_a_5xx_before_placing_is_resent_once_settled_and_placed_once(
        self, fake: FakeKite, engine: Engine
    ) -> None:
        fake.fail_next(status=503, category="order")

        entry, stop, target = send_plan(engine, fake)

        wait_protected(fake, entry, stop, target)
        wait_until(lambda: retries(engine, "submit_unknown") >= 1, message="the unknown counted")
        assert [len(kite_orders(fake, cid)) for cid in (entry, stop, target)] == [1, 1, 1]

    def test_dropped_postbacks_are_closed_by_reconciliation(
        self, fake: FakeKite, engine: Engine
    ) -> None:
        fake.drop_postbacks(1000)

        entry, stop, target = send_plan(engine, fake)

        # No postback: the fill comes from the reconciliation's GET /trades, and the legs follow.
        wait_protected(fake, entry, stop, target)
        assert fake.postbacks_sent == [] and fake.postbacks_dropped
        assert [len(kite_orders(fake, cid)) for cid in (entry, stop, target)] == [1, 1, 1]

    def test_duplicated_postbacks_place_each_leg_once(self, fake: FakeKite, engine: Engine) -> None:
        fake.duplicate_postbacks(1000)

        entry, stop, target = send_plan(engine, fake)

        wait_protected(fake, entry, stop, target)
        wait_until(
            lambda: (
                [(p.instrument, p.quantity) for p in engine_positions(engine)] == [("INFY", 10)]
            ),
            timeout_s=20,
            message="one position of 10, not 20",
        )
        assert [len(kite_orders(fake, cid)) for cid in (entry, stop, target)] == [1, 1, 1]

    def test_a_dropped_socket_reconnects_and_ticks_resume(
        self, fake: FakeKite, engine: Engine
    ) -> None:
        broker = engine.broker
        assert isinstance(broker, KiteBroker) and broker.ticker is not None
        wait_until(lambda: broker.ticks_total > 0, timeout_s=20, message="ticks")

        assert fake.drop_sockets() == 1

        wait_until(lambda: broker.ticker is not None and broker.ticker.connections_total >= 2)
        seen = broker.ticks_total
        wait_until(lambda: broker.ticks_total > seen, timeout_s=20, message="ticks again")
        entry, stop, target = send_plan(engine, fake)
        wait_protected(fake, entry, stop, target)


def test_a_refused_token_at_start_is_one_startup_error_that_says_how_to_log_in(
    fake: FakeKite, tmp_path: Path
) -> None:
    config = load_config(REPO_ROOT / "configs" / "demo_kite.yaml", environ={}, dotenv_path=None)
    config = config.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "logs_dir": str(tmp_path / "logs"),
            "database_url": f"sqlite:///{tmp_path / 'vigil.db'}",
            "kite": config.kite.model_copy(
                update={
                    "api_key": SecretStr(fake.api_key),
                    "access_token": SecretStr("yesterdays-token"),
                    "access_token_file": None,
                    "rest_base_url": fake.base_url,
                    "ws_base_url": fake.ws_url,
                }
            ),
        }
    )
    engine = Engine(config, run_http=False)

    with pytest.raises(StartupError, match=r"KITE_TOKEN_EXPIRED.*python -m tools\.kite_login"):
        engine.start()

    assert "yesterdays-token" not in str(engine.config.model_dump())


def test_many_brackets_at_the_rate_limit_open_and_flatten_with_no_halt_and_no_duplicate(
    fake: FakeKite, start_engine: Callable[..., Engine]
) -> None:
    # 12 brackets (36 order requests to open, 24 to flatten: each target cancelled, each stop
    # made a MARKET order) against Kite's 10/s and 200/min: the burst waits in the gateway
    # past the settle delay; nothing is resent, nothing HALTs, no limit is exceeded, and the
    # flatten leaves Kite flat with no order working.
    # (50 brackets: tools/bench_kite_flatten.py, docs/benchmarks.md.)
    engine = start_engine(risk=BENCH_RISK)
    plan_ids = send_bracket_plans(engine, fake, 12)
    wait_until(
        lambda: brackets_protected(fake, plan_ids), timeout_s=60, message="12 brackets protected"
    )
    legs = [client_order_id(p, leg) for p in plan_ids for leg in (LegKind.STOP, LegKind.TARGET)]
    # (A stop our books do not hold as accepted yet is cancelled and an EXIT closes instead.)
    wait_until(lambda: legs_accepted(engine, *legs), timeout_s=30, message="legs accepted")
    engine.directory.ask(
        "order", FlattenAll(reason="drill", ts_init=engine.clock.now_ns()), timeout_s=10
    )
    wait_until(lambda: flat_at_kite(fake), timeout_s=60, message="flat at Kite")
    wait_until(lambda: engine_positions(engine) == [], timeout_s=30, message="the engine flat")
    control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
    assert control.state.state is not TradingState.HALTED, control.state.halt_reason
    assert fake.order_requests_per_second_max() <= 10
    assert fake.order_requests_per_minute_max() <= 200
    tags = [o.get("tag") for o in fake.orders()]
    assert len(tags) == len(set(tags)), "a client id placed twice at Kite"
    assert len(tags) == 36, "an exit order placed where the stop should have closed"
