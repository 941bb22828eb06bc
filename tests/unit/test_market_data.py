"""tick_rejection: every kind of bad market data has a reason, and nothing raises."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.instruments import Instrument
from domain.market_data import TickRejection, tick_rejection
from domain.messages.market import Tick

D = Decimal
T0 = 1_767_225_600_000_000_000
NIFTY = Instrument(symbol="NIFTY-FUT", lot_size=50, reference_price=D("24000"))


def tick(**overrides: Any) -> Tick:
    values: dict[str, Any] = {
        "instrument": "NIFTY-FUT",
        "bid": D("24000.00"),
        "ask": D("24000.10"),
        "last": D("24000.05"),
        "bid_size": 50,
        "ask_size": 100,
        "volume": 50,
        "ts_event": T0,
        "ts_init": T0,
    }
    values.update(overrides)
    return Tick(**values)


class TestTickRejection:
    def test_accepts_an_ordinary_quote_and_a_locked_one(self) -> None:
        assert tick_rejection(tick(), NIFTY, None) is None
        locked = tick(bid=D("24000.05"), ask=D("24000.05"))
        assert tick_rejection(locked, NIFTY, tick()) is None

    @pytest.mark.parametrize("field", ["bid", "ask", "last"])
    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("NaN", TickRejection.NOT_A_NUMBER),
            ("-NaN", TickRejection.NOT_A_NUMBER),
            ("sNaN", TickRejection.NOT_A_NUMBER),
            ("Infinity", TickRejection.INFINITE),
            ("-Infinity", TickRejection.INFINITE),
            ("0", TickRejection.NON_POSITIVE_PRICE),
            ("-0", TickRejection.NON_POSITIVE_PRICE),
            ("-24000", TickRejection.NON_POSITIVE_PRICE),
            ("1e999999", TickRejection.ABSURD_PRICE),
            ("1E+999999999", TickRejection.ABSURD_PRICE),
            ("1e-999999", TickRejection.ABSURD_PRICE),
            ("240000.05", TickRejection.ABSURD_PRICE),
            ("2399.95", TickRejection.ABSURD_PRICE),
            ("24000.000000000000000000001", TickRejection.ABSURD_PRICE),
        ],
    )
    def test_rejects_a_bad_price_in_any_field_with_its_reason(
        self, field: str, text: str, reason: TickRejection
    ) -> None:
        # A wide quote keeps the bad value from also crossing it, so only its own reason shows.
        base = {"bid": D("23000"), "ask": D("25000"), "last": D("24000")}

        assert tick_rejection(tick(**{**base, field: D(text)}), NIFTY, None) is reason

    def test_a_nan_is_reported_before_any_comparison_would_raise(self) -> None:
        # sNaN raises InvalidOperation even on ==; a zero bid next to it must not be compared
        # first, and no comparison with the previous tick may happen either.
        bad = tick(bid=D("0"), ask=D("sNaN"))

        assert tick_rejection(bad, NIFTY, tick()) is TickRejection.NOT_A_NUMBER

    def test_rejects_a_crossed_quote(self) -> None:
        crossed = tick(bid=D("24000.10"), ask=D("24000.00"))

        assert tick_rejection(crossed, NIFTY, None) is TickRejection.CROSSED_QUOTE

    @pytest.mark.parametrize("value", [float("nan"), 24000.0, "24000", None, 24000])
    def test_rejects_a_price_that_is_not_a_decimal(self, value: Any) -> None:
        assert tick_rejection(tick(bid=value), NIFTY, None) is TickRejection.BAD_PRICE_TYPE

    @pytest.mark.parametrize(
        "overrides",
        [{"bid_size": -1}, {"ask_size": 1.5}, {"volume": None}, {"volume": True}],
    )
    def test_rejects_bad_sizes(self, overrides: dict[str, Any]) -> None:
        assert tick_rejection(tick(**overrides), NIFTY, None) is TickRejection.BAD_SIZE

    @pytest.mark.parametrize(
        "overrides",
        [
            {"ts_event": 0},
            {"ts_event": -5},
            {"ts_event": 2**63},
            {"ts_event": 1.5e18},
            {"ts_init": "now"},
            {"ts_event": None},
        ],
    )
    def test_rejects_bad_timestamps(self, overrides: dict[str, Any]) -> None:
        assert tick_rejection(tick(**overrides), NIFTY, None) is TickRejection.BAD_TIMESTAMP

    def test_rejects_time_going_backwards_for_the_instrument(self) -> None:
        earlier = tick(ts_event=T0 - 1)

        assert tick_rejection(earlier, NIFTY, tick()) is TickRejection.OUT_OF_ORDER
        assert tick_rejection(tick(), NIFTY, tick()) is None  # equal time is fine

    def test_rejects_an_unknown_or_mismatched_instrument(self) -> None:
        assert tick_rejection(tick(), None, None) is TickRejection.UNKNOWN_INSTRUMENT
        other = tick(instrument="INFY")
        assert tick_rejection(other, NIFTY, None) is TickRejection.UNKNOWN_INSTRUMENT
        assert tick_rejection(tick(instrument=["x"]), NIFTY, None) is (
            TickRejection.UNKNOWN_INSTRUMENT
        )

    @pytest.mark.parametrize("thing", [None, "tick", 42, {"bid": "1"}, object()])
    def test_rejects_what_is_not_a_tick_at_all(self, thing: Any) -> None:
        assert tick_rejection(thing, NIFTY, None) is TickRejection.NOT_A_TICK

    def test_a_tick_decoded_from_json_garbage_is_rejected_not_raised(self) -> None:
        # msgspec accepts "NaN" and "Infinity" as decimals: decoding is no defence.
        raw = (
            b'{"instrument":"NIFTY-FUT","bid":"NaN","ask":"Infinity","last":"1",'
            b'"ts_event":1,"ts_init":1}'
        )
        decoded = msgspec.json.decode(raw, type=Tick)

        assert tick_rejection(decoded, NIFTY, None) is TickRejection.NOT_A_NUMBER


FINITE_OR_NOT = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([D("sNaN"), D("-sNaN"), D("1e999999"), D("-1e999999"), D("1e-999999")]),
)


class TestTickRejectionProperties:
    @given(
        bid=FINITE_OR_NOT,
        ask=FINITE_OR_NOT,
        last=FINITE_OR_NOT,
        ts=st.integers(min_value=-(2**64), max_value=2**64),
        previous_ts=st.integers(min_value=1, max_value=2**63 - 1),
    )
    def test_never_raises_and_anything_accepted_is_safe_to_compute_with(
        self, bid: Decimal, ask: Decimal, last: Decimal, ts: int, previous_ts: int
    ) -> None:
        candidate = tick(bid=bid, ask=ask, last=last, ts_event=ts)
        previous = tick(ts_event=previous_ts)

        reason = tick_rejection(candidate, NIFTY, previous)

        if reason is None:
            # What strategies, risk and the venue do with a price must work on it.
            for price in (bid, ask, last):
                assert price.is_finite() and price > 0
                assert D("2400") <= price <= D("240000")
                assert price * 1800 > 0 and (price - NIFTY.reference_price) / price < 10
            assert bid <= ask
            assert previous_ts <= ts < 2**63


_ANY_PRICE = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2),
    st.sampled_from(
        [
            Decimal("sNaN"),
            Decimal("-0"),
            Decimal("1E+13"),
            Decimal("1E-13"),
            Decimal("1." + "0" * 25),
        ]
    ),
    st.integers(),
)


@given(
    prices=st.lists(_ANY_PRICE, min_size=3, max_size=3),
    reference=st.one_of(
        st.none(), st.sampled_from([Decimal("100"), Decimal("100.0"), Decimal("5")])
    ),
)
def test_the_fast_path_decides_every_price_exactly_as_the_ordered_checks(
    prices: list[Any], reference: Decimal | None
) -> None:
    from unittest import mock

    from domain import market_data

    fast = market_data._price_rejection(prices, reference)
    with mock.patch.object(market_data, "_plainly_valid", return_value=False):
        ordered = market_data._price_rejection(prices, reference)
    assert fast == ordered
