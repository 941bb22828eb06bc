"""``IgBroker`` against the local fake IG (tools/fake_ig) over real sockets: REST over HTTP,
the TRADE and MARKET items over the fake's Lightstreamer endpoint through the official SDK.
The remote broker is the only thing replaced; waits are on conditions with deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest
from pydantic import SecretStr

from adapters.brokers.base import BrokerRateLimited, BrokerRejected, BrokerReport, BrokerUnavailable
from adapters.brokers.ig import IgAuthRefused, IgBroker
from domain.clock import ManualClock
from domain.config import IgConfig, IgInstrumentConfig
from domain.enums import OrderStatus, OrderType, Side
from domain.instruments import Instrument
from domain.messages import (
    BrokerSessionChanged,
    FillReport,
    OrderRequest,
    OrderStatusReport,
    OrderStreamHeartbeat,
    Tick,
)
from tests.helpers import wait_until
from tools.fake_ig import FakeIG

pytestmark = pytest.mark.timeout(60)

T0 = 1_796_012_345 * 1_000_000_000
PLAN = "P0123456789abcdef012"
PLAN2 = "P0123456789abcdef013"
EPIC = "IX.D.FTSE.DAILY.IP"
INSTRUMENTS = {"FTSE": Instrument(symbol="FTSE", reference_price=Decimal("7500"))}


class Collected:
    """What the broker handed to its sinks, from its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reports: list[BrokerReport] = []
        self.ticks: list[Tick] = []

    def report(self, report: BrokerReport) -> None:
        with self._lock:
            self.reports.append(report)

    def tick_batch(self, ticks: list[Tick]) -> None:
        with self._lock:
            self.ticks.extend(ticks)

    def of(self, kind: type, client_order_id: str | None = None) -> list:
        with self._lock:
            return [
                r
                for r in self.reports
                if isinstance(r, kind)
                and client_order_id in (None, getattr(r, "client_order_id", None))
            ]

    def last_status(self, client_order_id: str) -> OrderStatus | None:
        statuses = self.of(OrderStatusReport, client_order_id)
        return statuses[-1].status if statuses else None


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    with FakeIG(clock=ManualClock(T0), probe_interval_s=0.2) as server:
        yield server


def _config(fake: FakeIG, **overrides: object) -> IgConfig:
    fields: dict[str, object] = {
        "api_key": SecretStr("fake-ig-api-key"),
        "identifier": SecretStr("fakeiguser"),
        "password": SecretStr("fakeigpassword"),
        "account_id": "ABC123",
        "rest_base_url": fake.base_url,
        "stream": False,
        "confirm_timeout_s": 2.0,
        "request_timeout_s": 3.0,
        "instruments": {"FTSE": IgInstrumentConfig(epic=EPIC, expiry="DFB")},
    }
    fields.update(overrides)
    return IgConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def make_broker(fake: FakeIG) -> Iterator:
    made: list[IgBroker] = []

    def make(**overrides: object) -> tuple[IgBroker, Collected]:
        collected = Collected()
        broker = IgBroker(
            config=_config(fake, **overrides),
            instruments=INSTRUMENTS,
            clock=ManualClock(T0),
            tick_sink=collected.tick_batch,
        )
        broker.set_report_sink(collected.report)
        made.append(broker)
        return broker, collected

    yield make
    for broker in made:
        broker.close()


def _entry(plan: str = PLAN, side: Side = Side.BUY, quantity: int = 2) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"{plan}E",
        instrument="FTSE",
        side=side,
        order_type=OrderType.MARKET,
        quantity=quantity,
    )


def _stop(price: str, plan: str = PLAN, side: Side = Side.SELL, seq: str = "") -> OrderRequest:
    return OrderRequest(
        client_order_id=f"{plan}S{seq}",
        instrument="FTSE",
        side=side,
        order_type=OrderType.STOP,
        quantity=2,
        trigger_price=Decimal(price),
    )


def _target(price: str, plan: str = PLAN, side: Side = Side.SELL, seq: str = "") -> OrderRequest:
    return OrderRequest(
        client_order_id=f"{plan}T{seq}",
        instrument="FTSE",
        side=side,
        order_type=OrderType.LIMIT,
        quantity=2,
        price=Decimal(price),
    )


def _exit(plan: str = PLAN, side: Side = Side.SELL, sequence: str = "") -> OrderRequest:
    return OrderRequest(
        client_order_id=f"{plan}X{sequence}",
        instrument="FTSE",
        side=side,
        order_type=OrderType.MARKET,
        quantity=2,
    )


def _deals(fake: FakeIG) -> list[dict]:
    return [p["position"] for p in fake.positions("ABC123")]


def _level_puts(fake: FakeIG) -> list:
    return [r for r in fake.request_log() if r.method == "PUT" and "/positions/otc/" in r.path]


def test_an_entry_with_its_bracket_opens_the_deal_protected_and_the_legs_cost_no_request(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker()
    broker.connect()
    entry = msgspec.structs.replace(
        _entry(), attached_stop=Decimal("7480"), attached_target=Decimal("7530")
    )
    broker.submit_order(entry)
    [opened] = [r for r in fake.request_log() if r.method == "POST" and r.path == "/positions/otc"]
    assert opened.body["stopLevel"] == 7480 and opened.body["limitLevel"] == 7530
    assert opened.body["forceOpen"] is True
    [deal] = _deals(fake)
    assert (deal["stopLevel"], deal["limitLevel"]) == (7480, 7530)  # protected from the start
    broker.submit_order(_stop("7480"))
    broker.submit_order(_target("7530"))
    assert _level_puts(fake) == []  # the legs take over the levels the deal already has
    wait_until(lambda: seen.last_status(f"{PLAN}S") is OrderStatus.ACCEPTED, timeout_s=5)
    [stop] = [r for r in broker.list_open_orders() if r.client_order_id == f"{PLAN}S"]
    assert stop.trigger_price == Decimal("7480")
    # A different level is still a request (a tightened stop).
    broker.cancel_order(f"{PLAN}S")
    broker.submit_order(_stop("7490", seq="1"))
    [deal] = _deals(fake)
    assert (deal["stopLevel"], deal["limitLevel"]) == (7490, 7530)


def test_an_entry_whose_stop_ig_refuses_is_refused_whole_never_opened_naked(
    fake: FakeIG, make_broker
) -> None:
    broker, _ = make_broker()
    broker.connect()
    entry = msgspec.structs.replace(_entry(), attached_stop=Decimal("7500.5"))  # inside the spread
    with pytest.raises(BrokerRejected, match="IG_REJECTED"):
        broker.submit_order(entry)
    assert _deals(fake) == []


def test_a_new_stop_leg_moves_the_level_in_one_request_and_supersedes_the_old(
    fake: FakeIG, make_broker
) -> None:
    # The engine's tighten on IG places the new stop first (domain.oco levels_on_position).
    broker, seen = make_broker()
    broker.connect()
    broker.submit_order(msgspec.structs.replace(_entry(), attached_stop=Decimal("7480")))
    broker.submit_order(_stop("7480"))
    broker.submit_order(_stop("7490", seq="1"))
    [put] = _level_puts(fake)
    assert (put.body["stopLevel"], put.body.get("limitLevel")) == (7490, None)
    [deal] = _deals(fake)
    assert deal["stopLevel"] == 7490
    wait_until(
        lambda: (
            seen.last_status(f"{PLAN}S") is OrderStatus.CANCELLED
            and seen.last_status(f"{PLAN}S1") is OrderStatus.ACCEPTED
        ),
        timeout_s=5,
        message="the old leg superseded, the new one working",
    )
    # A move IG refuses (inside the minimum stop distance) leaves the level where it was.
    with pytest.raises(BrokerRejected, match="ATTACHED_ORDER_LEVEL_ERROR"):
        broker.submit_order(_stop("7500", seq="2"))
    [deal] = _deals(fake)
    assert deal["stopLevel"] == 7490
    assert {r.client_order_id for r in broker.list_open_orders()} == {f"{PLAN}S1"}


def test_levels_changed_at_ig_are_what_the_legs_report(fake: FakeIG, make_broker) -> None:
    """IG's stop and limit levels are read back (GET /positions, the reconciliation's
    positions check): a moved level is the leg's reported price (reconciliation finds it
    differs from ours); a removed one ends its leg CANCELLED (the engine's OCO puts it back).
    The stream's OPU of the amendment makes the next read fresh."""
    broker, seen = make_broker(stream=True)
    broker.connect()
    wait_until(lambda: seen.of(OrderStreamHeartbeat), timeout_s=15, message="stream alive")
    broker.submit_order(
        msgspec.structs.replace(
            _entry(), attached_stop=Decimal("7480"), attached_target=Decimal("7530")
        )
    )
    broker.submit_order(_stop("7480"))
    broker.submit_order(_target("7530"))
    [deal] = _deals(fake)

    def lines() -> dict[str, OrderStatusReport]:
        broker.list_positions()
        return {r.client_order_id: r for r in broker.list_orders()}

    fake.amend_levels_elsewhere(deal["dealId"], stop="7450", limit="7530")
    moved = wait_until(
        lambda: (now := lines())[f"{PLAN}S"].trigger_price == Decimal("7450") and now,
        timeout_s=10,
        message="the moved stop read back",
    )
    assert moved[f"{PLAN}S"].status is OrderStatus.ACCEPTED
    assert moved[f"{PLAN}T"].price == Decimal("7530")
    fake.amend_levels_elsewhere(deal["dealId"], stop=None, limit="7530")
    wait_until(
        lambda: lines() and seen.last_status(f"{PLAN}S") is OrderStatus.CANCELLED,
        timeout_s=10,
        message="the stop leg reported gone",
    )
    assert f"{PLAN}S" not in {r.client_order_id for r in broker.list_open_orders()}
    # The OCO's replacement puts the level back.
    broker.submit_order(_stop("7480", seq="1"))
    [deal] = _deals(fake)
    assert deal["stopLevel"] == 7480


def test_connect_switches_to_the_configured_account_which_is_the_active_one(
    fake: FakeIG, make_broker
) -> None:
    broker, _ = make_broker(account_id="XYZ789")
    account = broker.connect()
    assert account.account_id == "XYZ789" and not account.is_live
    assert fake.active_account(broker.rest.session.cst) == "XYZ789"  # type: ignore[union-attr]
    switches = [r for r in fake.request_log() if r.method == "PUT" and r.path == "/session"]
    assert len(switches) == 1
    assert "fakeigpassword" not in repr(broker.rest) + repr(broker.rest.session)
    broker.close()
    assert [(r.method, r.path, r.status) for r in fake.request_log()][-1] == (
        "DELETE",
        "/session",
        204,
    )  # logged out: IG limits open sessions


def test_a_live_environment_fake_is_a_live_account_for_rehearsals(
    fake: FakeIG, make_broker
) -> None:
    fake.set_environment("LIVE")
    broker, _ = make_broker(live_account=True)
    assert broker.connect().is_live


def test_entry_protect_and_flatten_map_onto_one_deal(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    wait_until(lambda: seen.last_status(f"{PLAN}E") is OrderStatus.FILLED, timeout_s=5)
    [fill] = seen.of(FillReport, f"{PLAN}E")
    assert fill.quantity == 2 and fill.side is Side.BUY
    [deal] = _deals(fake)
    assert deal["dealReference"] == f"{PLAN}E"

    broker.submit_order(_stop("7480"))
    broker.submit_order(_target("7530"))
    [deal] = _deals(fake)
    assert (deal["stopLevel"], deal["limitLevel"]) == (7480, 7530)
    wait_until(lambda: seen.last_status(f"{PLAN}T") is OrderStatus.ACCEPTED, timeout_s=5)
    assert {r.client_order_id for r in broker.list_open_orders()} == {f"{PLAN}S", f"{PLAN}T"}
    [position] = broker.list_positions()
    assert (position.instrument, position.quantity) == ("FTSE", 2)

    # Flatten: the OCO cancels both legs (levels removed), then one EXIT closes the deal.
    broker.cancel_order(f"{PLAN}S")
    broker.cancel_order(f"{PLAN}T")
    [deal] = _deals(fake)
    assert (deal["stopLevel"], deal["limitLevel"]) == (None, None)
    broker.submit_order(_exit())
    assert _deals(fake) == []
    assert broker.list_positions() == []
    wait_until(lambda: seen.last_status(f"{PLAN}X") is OrderStatus.FILLED, timeout_s=5)
    assert seen.last_status(f"{PLAN}S") is OrderStatus.CANCELLED
    assert len(seen.of(FillReport, f"{PLAN}X")) == 1


def test_a_stop_hit_at_ig_is_a_fill_of_the_stop_leg(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    broker.submit_order(_stop("7480"))
    broker.submit_order(_target("7530"))
    fake.set_quote(EPIC, "7470", "7471")  # crosses the stop: IG closes the deal
    assert broker.list_positions() == []  # notices the deal gone (no stream here)
    wait_until(lambda: seen.last_status(f"{PLAN}S") is OrderStatus.FILLED, timeout_s=5)
    [stop_fill] = seen.of(FillReport, f"{PLAN}S")
    assert stop_fill.side is Side.SELL and stop_fill.quantity == 2
    assert seen.last_status(f"{PLAN}T") is OrderStatus.ACCEPTED
    broker.cancel_order(f"{PLAN}T")  # the OCO cancels the sibling: nothing left at IG
    wait_until(lambda: seen.last_status(f"{PLAN}T") is OrderStatus.CANCELLED, timeout_s=5)


def test_a_repeated_deal_reference_never_opens_a_second_deal(fake: FakeIG, make_broker) -> None:
    broker, _ = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
        broker.submit_order(_entry())
    assert len(_deals(fake)) == 1


def test_a_lost_confirm_leaves_the_entry_unknown_and_the_resend_finds_the_deal(
    fake: FakeIG, make_broker
) -> None:
    broker, _ = make_broker(confirm_timeout_s=0.5)
    broker.connect()
    fake.lose_confirms(1)
    with pytest.raises(BrokerUnavailable, match="IG_CONFIRM_PENDING"):
        broker.submit_order(_entry())
    # The order path resends the same id after its settle threshold: IG holds the deal.
    with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
        broker.submit_order(_entry())
    assert len(_deals(fake)) == 1
    deals_posted = [
        r for r in fake.request_log() if r.method == "POST" and r.path == "/positions/otc"
    ]
    assert len(deals_posted) == 1
    # Reconciliation's list settles it from IG's positions.
    [line] = [r for r in broker.list_orders() if r.client_order_id == f"{PLAN}E"]
    assert line.status is OrderStatus.FILLED
    assert [f.client_order_id for f in broker.list_fills()] == [f"{PLAN}E"]


def test_a_delayed_confirm_is_polled_until_ready(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    fake.delay_confirms(3)
    broker.submit_order(_entry())
    wait_until(lambda: seen.last_status(f"{PLAN}E") is OrderStatus.FILLED, timeout_s=5)


def test_a_rejected_deal_is_broker_rejected_with_igs_reason(fake: FakeIG, make_broker) -> None:
    broker, _ = make_broker()
    broker.connect()
    fake.reject_next(1, reason="INSUFFICIENT_FUNDS")
    with pytest.raises(BrokerRejected, match="INSUFFICIENT_FUNDS"):
        broker.submit_order(_entry())
    assert _deals(fake) == []


def test_403_allowance_is_rate_limited_and_5xx_unavailable(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    fake.rate_limit_next(1, kind="trading", category="trading")
    with pytest.raises(BrokerRateLimited):
        broker.submit_order(_entry())
    assert _deals(fake) == []
    assert seen.of(BrokerSessionChanged) == []  # never an auth failure
    broker.submit_order(_entry())  # the gateway's retry: dealt once
    assert len(_deals(fake)) == 1
    fake.fail_next(1, status=503, category="trading")
    with pytest.raises(BrokerUnavailable):
        broker.submit_order(_entry(plan=PLAN2))


def test_expired_tokens_log_in_again_once_and_carry_on(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    logins = broker.rest.logins_total
    fake.expire_tokens()
    broker.submit_order(_entry())
    assert broker.rest.logins_total == logins + 1
    assert len(_deals(fake)) == 1
    assert seen.of(BrokerSessionChanged) == []


def test_refused_credentials_pause_with_a_session_report_and_resume(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker()
    broker.connect()
    fake.expire_tokens()
    fake.password = "changed"
    with pytest.raises(IgAuthRefused):
        broker.submit_order(_entry())
    with pytest.raises(IgAuthRefused):
        broker.list_positions()
    wait_until(lambda: seen.of(BrokerSessionChanged), timeout_s=5)
    [refused] = seen.of(BrokerSessionChanged)
    assert not refused.valid and "IG_IDENTIFIER" in refused.detail
    assert "changed" not in refused.detail
    assert _deals(fake) == []
    fake.password = "fakeigpassword"
    assert broker.list_positions() == []
    wait_until(lambda: len(seen.of(BrokerSessionChanged)) == 2, timeout_s=5)
    assert seen.of(BrokerSessionChanged)[-1].valid


def test_the_stream_brings_ticks_confirms_and_heartbeats(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker(stream=True)
    broker.connect()
    wait_until(lambda: seen.of(OrderStreamHeartbeat), timeout_s=15, message="stream alive")
    fake.set_quote(EPIC, "7510", "7511")
    wait_until(
        lambda: any(t.bid == Decimal("7510") for t in seen.ticks), timeout_s=15, message="tick"
    )
    broker.submit_order(_entry())
    # The stop further from the entry than the target: IG's OPU carries the deal's OPENING
    # level, which must not decide which level closed it (it did, and filled the target).
    broker.submit_order(_stop("7440"))
    broker.submit_order(_target("7530"))
    fake.set_quote(EPIC, "7430", "7431")
    # The TRADE item (OPU DELETED, CONFIRMS of IG's close), with no list call: the stop leg
    # filled, at the closing level.
    wait_until(
        lambda: seen.last_status(f"{PLAN}S") is OrderStatus.FILLED, timeout_s=15, message="OPU"
    )
    assert seen.last_status(f"{PLAN}T") is OrderStatus.ACCEPTED  # left for the OCO to cancel
    [stop_fill] = seen.of(FillReport, f"{PLAN}S")
    # IG's close was at 7430; the OPU may come before the quote reaches us: then the level.
    assert stop_fill.price in (Decimal("7430"), Decimal("7440"))


def test_stop_and_target_legs_sent_at_once_both_end_on_the_deal(fake: FakeIG, make_broker) -> None:
    """The gateway's workers send the STOP and TARGET legs in parallel; IG's PUT sets both
    levels, so two unserialised amendments left only the second (the e2e test caught it)."""
    broker, _ = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    for round_ in range(1, 6):
        seq = str(round_)
        threads = [
            threading.Thread(target=broker.submit_order, args=(leg,))
            for leg in (_stop("7480", seq=seq), _target("7530", seq=seq))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        [deal] = _deals(fake)
        assert (deal["stopLevel"], deal["limitLevel"]) == (7480, 7530)
        broker.cancel_order(f"{PLAN}S{seq}")
        broker.cancel_order(f"{PLAN}T{seq}")
        [deal] = _deals(fake)
        assert (deal["stopLevel"], deal["limitLevel"]) == (None, None)


def test_a_dropped_stream_is_reconnected_by_the_sdk_and_beats_again(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker(stream=True)
    broker.connect()
    stream = broker.stream
    wait_until(lambda: stream.status.startswith("CONNECTED:"), timeout_s=15, message="up")
    stream.status_history.clear()
    fake.drop_streams()
    wait_until(
        lambda: any(s.startswith("DISCONNECTED") for s in stream.status_history),
        timeout_s=20,
        message="the SDK saw the drop",
    )
    beats = len(seen.of(OrderStreamHeartbeat))
    wait_until(
        lambda: (
            stream.status.startswith("CONNECTED:") and len(seen.of(OrderStreamHeartbeat)) > beats
        ),
        timeout_s=30,
        message="reconnected by the SDK and beating again",
    )
    # Trade updates flow on the new session: a deal's stop hit arrives as the stop's fill.
    broker.submit_order(_entry())
    broker.submit_order(_stop("7480"))
    fake.set_quote(EPIC, "7470", "7471")
    wait_until(
        lambda: seen.last_status(f"{PLAN}S") is OrderStatus.FILLED, timeout_s=15, message="OPU"
    )


def test_a_deal_closed_while_the_trade_item_was_not_subscribed_is_found_on_subscription(
    fake: FakeIG, make_broker
) -> None:
    # IG replays nothing sent before a subscription is live: a stop hit in a reconnect's gap
    # is found by the look at the positions the (re)subscription triggers, not by chance.
    broker, seen = make_broker(stream=True)
    broker.connect()
    stream = broker.stream
    wait_until(lambda: seen.of(OrderStreamHeartbeat), timeout_s=15, message="stream alive")
    broker.submit_order(_entry())
    broker.submit_order(_stop("7480"))
    fake.hold_trade_subscriptions()
    fake.drop_streams()
    wait_until(lambda: fake.held_subscriptions() == 1, timeout_s=30, message="re-subscribing")
    assert not stream.is_live()  # connected again, but the TRADE item is not live: no beats
    fake.set_quote(EPIC, "7470", "7471")  # IG stops the deal out; its OPU reaches nobody
    wait_until(lambda: _deals(fake) == [], timeout_s=5, message="stopped out at IG")
    assert seen.last_status(f"{PLAN}S") is not OrderStatus.FILLED
    fake.release_trade_subscriptions()
    wait_until(
        lambda: seen.last_status(f"{PLAN}S") is OrderStatus.FILLED,
        timeout_s=15,
        message="the stop leg's fill, found once the TRADE item is live again",
    )
    assert stream.is_live()


def test_an_account_not_of_this_login_is_a_clear_configuration_error(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker(account_id="NOPE42")
    with pytest.raises(BrokerRejected, match=r"IG_ACCOUNT_SWITCH_REFUSED.*NOPE42.*ABC123"):
        broker.connect()
    assert seen.of(BrokerSessionChanged) == []  # not refused credentials


def test_the_session_is_renewed_before_it_gets_old(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker(session_max_age_s=0.001)
    broker.connect()
    logins = broker.rest.logins_total

    def session_too_old() -> bool:
        # A localhost round trip can take less than the 1 ms age: wait until it is too old.
        session = broker.rest.session
        return session is not None and time.monotonic() - session.created_monotonic >= 0.001

    for _ in range(2):
        wait_until(session_too_old, timeout_s=5, message="the session older than its max age")
        broker.rest.get("/positions", version="2")
    assert broker.rest.logins_total >= logins + 2  # each request found the session too old
    refused = [r for r in fake.request_log() if r.status == 401]
    assert refused == []  # renewed before IG refused anything
    assert seen.of(BrokerSessionChanged) == []


def test_a_lost_answer_after_the_deal_is_found_by_its_confirm_never_dealt_twice(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker()
    broker.connect()
    fake.fail_after_next(1, status=504)  # IG dealt; the answer is lost
    with pytest.raises(BrokerUnavailable):
        broker.submit_order(_entry())
    with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
        broker.submit_order(_entry())  # the order path's resend: IG's confirm answers
    assert len(_deals(fake)) == 1
    wait_until(lambda: seen.last_status(f"{PLAN}E") is OrderStatus.FILLED, timeout_s=5)
    assert len(seen.of(FillReport, f"{PLAN}E")) == 1


def test_one_reconciliation_run_reads_igs_positions_once_and_a_read_allowance_is_unavailable(
    fake: FakeIG, make_broker
) -> None:
    """IG allows 30 non-trading requests a minute: the lists of one run share one GET
    /positions, and IG's allowance refusal on it reaches reconciliation as "could not ask"
    (BrokerUnavailable, which it tolerates), never as an exception it does not expect."""
    broker, _ = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    before = len([r for r in fake.request_log() if r.path == "/positions" and r.method == "GET"])
    broker.list_orders()
    broker.list_fills()
    [position] = broker.list_positions()
    assert position.quantity == 2
    reads = [r for r in fake.request_log() if r.path == "/positions" and r.method == "GET"]
    assert len(reads) == before + 1
    broker.submit_order(_stop("7480"))  # a change of ours: the next list asks again
    fake.rate_limit_next(5, kind="account", category="non-trading")
    with pytest.raises(BrokerUnavailable, match="IG_READ_ALLOWANCE"):
        broker.list_positions()
    # Refused once, the positions are not asked for again at once: every reconciliation pass
    # that retried would only spend what the confirms of our deals need.
    refused = len([r for r in fake.request_log() if r.path == "/positions" and r.status == 403])
    for _ in range(3):
        with pytest.raises(BrokerUnavailable, match="not asked for"):
            broker.list_positions()
    assert (
        len([r for r in fake.request_log() if r.path == "/positions" and r.status == 403])
        == refused
    )


def test_a_refused_confirm_poll_after_the_deal_was_sent_is_never_a_resendable_refusal(
    fake: FakeIG, make_broker
) -> None:
    """The deal request went out; a 403 allowance on the confirm poll must not come back as
    BrokerRateLimited ("not acted on, send again"): the poll goes on, then unknown at worst."""
    broker, seen = make_broker()
    broker.connect()
    fake.rate_limit_next(2, kind="account", category="non-trading")
    broker.submit_order(_entry())
    wait_until(lambda: seen.last_status(f"{PLAN}E") is OrderStatus.FILLED, timeout_s=5)
    fake.rate_limit_next(1000, kind="account", category="non-trading")
    with pytest.raises(BrokerUnavailable, match="IG_CONFIRM_PENDING"):
        broker.submit_order(_entry(plan=PLAN2))
    fake.clear_faults()
    assert len(_deals(fake)) == 2


def test_an_unanswered_stop_amendment_is_sent_again_on_the_resend(
    fake: FakeIG, make_broker
) -> None:
    broker, seen = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    fake.fail_next(1, status=503, category="trading")
    with pytest.raises(BrokerUnavailable):
        broker.submit_order(_stop("7480"))
    broker.submit_order(_stop("7480"))  # the order path's resend: amended, not "duplicate"
    [deal] = _deals(fake)
    assert deal["stopLevel"] == 7480
    wait_until(lambda: seen.last_status(f"{PLAN}S") is OrderStatus.ACCEPTED, timeout_s=5)
    with pytest.raises(BrokerRejected, match="DUPLICATE_CLIENT_ORDER_ID"):
        broker.submit_order(_stop("7480"))  # once accepted, a repeat is a duplicate


def test_a_partial_exit_leaves_the_rest_of_the_deal_watched(fake: FakeIG, make_broker) -> None:
    broker, seen = make_broker()
    broker.connect()
    broker.submit_order(_entry())
    broker.submit_order(_stop("7480"))
    broker.submit_order(
        OrderRequest(
            client_order_id=f"{PLAN}X",
            instrument="FTSE",
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=1,
        )
    )
    [deal] = _deals(fake)
    assert deal["size"] == 1 and deal["stopLevel"] == 7480
    assert [(p.instrument, p.quantity) for p in broker.list_positions()] == [("FTSE", 1)]
    fake.set_quote(EPIC, "7470", "7471")  # the rest is stopped out at IG
    # Without the stream, the next list that reads IG (past the run's shared snapshot).
    wait_until(lambda: broker.list_positions() == [], timeout_s=10, message="gone at IG")
    wait_until(lambda: seen.last_status(f"{PLAN}S") is OrderStatus.FILLED, timeout_s=5)
    [stop_fill] = seen.of(FillReport, f"{PLAN}S")
    assert stop_fill.quantity == 1
