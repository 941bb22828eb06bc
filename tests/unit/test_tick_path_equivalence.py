"""The tick path's fast paths decide exactly as the code they replaced, on random inputs.

The oracles are verbatim copies of the modules before the change (tests/unit/reference/):
``tick_rejection`` (one pass of plain comparisons before the ordered checks) and the CSV
reader (a ``csv.reader`` row with a fast conversion before the row-by-row rules).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.feeds import csv_replay
from domain.instruments import Instrument
from domain.market_data import tick_rejection
from domain.messages.market import Tick
from tests.unit.reference import csv_replay_985fe81, market_data_985fe81

NIFTY = Instrument(
    symbol="NIFTY",
    lot_size=50,
    tick_size=Decimal("0.05"),
    freeze_quantity=1800,
    reference_price=Decimal("24000"),
)
ODD = Instrument(symbol="ODD", reference_price=Decimal("1E+12"))
TINY = Instrument(symbol="TINY", reference_price=Decimal("0.0000000000005"))
INSTRUMENTS = {item.symbol: item for item in (NIFTY, ODD, TINY)}

_PRICE = st.one_of(
    st.integers(2_000, 300_000).map(lambda n: n * Decimal("0.05")),  # on the grid, some absurd
    st.decimals(min_value=Decimal("2399"), max_value=Decimal("240001"), places=3),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            Decimal("sNaN"),
            Decimal("-0"),
            Decimal("2400"),
            Decimal("240000"),
            Decimal("240000.0000000000000001"),
            Decimal("24000.00000000000000000000001"),
            Decimal("2.4E+4"),
            Decimal("1E+13"),
            Decimal("1E+12"),
            Decimal("1E-13"),
            Decimal("5E-13"),
        ]
    ),
    st.sampled_from([24000.0, 24000, "24000", None, True]),
)
_SIZE = st.one_of(st.integers(-2, 10**6), st.sampled_from([True, False, 1.0, None, "5"]))
_TS = st.one_of(
    st.integers(1, 2**63 - 1),
    st.sampled_from([0, -1, 2**63, 2**63 - 1, True, 1.5, None]),
)


@st.composite
def raw_ticks(draw: st.DrawFn) -> Any:
    fields = {
        "instrument": draw(st.sampled_from(["NIFTY", "ODD", "TINY", "OTHER", 5])),
        "bid": draw(_PRICE),
        "ask": draw(_PRICE),
        "last": draw(_PRICE),
        "bid_size": draw(_SIZE),
        "ask_size": draw(_SIZE),
        "volume": draw(_SIZE),
        "ts_event": draw(_TS),
        "ts_init": draw(_TS),
    }
    if draw(st.booleans()):
        # Mostly usable quotes: the fast path must accept what the ordered checks accept.
        mid = draw(st.integers(48_000, 4_800_000)) * Decimal("0.05")
        fields.update(
            instrument="NIFTY",
            bid=mid,
            ask=mid + draw(st.integers(0, 3)) * Decimal("0.05"),
            last=mid,
            bid_size=draw(st.integers(0, 100)),
            ask_size=draw(st.integers(0, 100)),
            volume=draw(st.integers(0, 10**6)),
            ts_event=draw(st.integers(1, 2**62)),
            ts_init=draw(st.integers(1, 2**62)),
        )
    return Tick(**fields)  # msgspec does not check types on construction: garbage gets in


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    candidate=raw_ticks(),
    instrument=st.sampled_from([NIFTY, ODD, TINY, None]),
    previous_ts=st.one_of(st.none(), st.integers(1, 2**63 - 1)),
)
def test_tick_rejection_decides_exactly_as_before(
    candidate: Tick, instrument: Instrument | None, previous_ts: int | None
) -> None:
    previous = (
        None
        if previous_ts is None
        else Tick(
            instrument="NIFTY",
            bid=Decimal(1),
            ask=Decimal(1),
            last=Decimal(1),
            ts_event=previous_ts,
            ts_init=previous_ts,
        )
    )
    assert tick_rejection(candidate, instrument, previous) == market_data_985fe81.tick_rejection(
        candidate, instrument, previous
    )


def test_not_a_tick_and_subclassed_prices_still_get_their_reasons() -> None:
    class Price(Decimal):
        pass

    assert tick_rejection("garbage", NIFTY, None) == "NOT_A_TICK"
    odd = Tick(
        instrument="NIFTY",
        bid=Price("24000"),
        ask=Decimal("24000"),
        last=Decimal("24000"),
        ts_event=1,
        ts_init=1,
    )
    assert tick_rejection(odd, NIFTY, None) == market_data_985fe81.tick_rejection(odd, NIFTY, None)


# ------------------------------------------------------------------ the CSV reader

_CELL = st.one_of(
    st.sampled_from(["", " ", "abc", "NaN", "-1", "0", "1e999999", "\ufffd", "1_000", " 7 "]),
    st.integers(0, 10**6).map(str),
)
_CSV_PRICE = st.one_of(
    st.integers(48_000, 4_800_000).map(lambda n: str(n * Decimal("0.05"))),
    st.decimals(min_value=Decimal("2000"), max_value=Decimal("250000"), places=2).map(str),
    _CELL,
)
_CSV_TS = st.one_of(
    st.integers(1_700_000_000_000_000_000, 1_700_000_000_100_000_000).map(str),
    st.sampled_from(
        [
            "2026-01-02T09:15:00.250+05:30",
            "2026-01-02T09:15:00Z",
            "2026-01-02T09:15:00",
            " 1700000000000000000",
            "1700000000000000000 ",
        ]
    ),
    _CELL,
)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    columns = draw(
        st.sampled_from(
            [
                ["ts", "instrument", "bid", "ask", "last", "volume"],
                ["ts", "instrument", "bid", "ask"],
                ["instrument", "ts", "ask", "bid", "bid_size", "ask_size", "last"],
                [" ts ", "instrument", "bid", "ask", "volume"],
                ["ts", "instrument", "bid", "ask", "bid", "last", "ts"],  # repeated: last wins
            ]
        )
    )
    lines = [",".join(columns)]
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", "a,b", '"unterminated', "1,2,3,4,5,6,7,8"])))
            continue
        cells: list[str] = []  # one draw per position: a repeated column differs
        mid = draw(_CSV_PRICE)
        for column in columns:
            name = column.strip()
            if name == "ts":
                cells.append(draw(_CSV_TS))
            elif name == "instrument":
                cells.append(draw(st.sampled_from(["NIFTY", "NIFTY", " NIFTY", "OTHER", ""])))
            elif name in ("bid", "ask", "last"):
                cells.append(mid if draw(st.booleans()) else draw(_CSV_PRICE))
            else:
                cells.append(draw(_CELL))
        if draw(st.integers(0, 9)) == 0:
            cells = cells[: draw(st.integers(1, len(cells)))]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _outcomes(items: Any) -> list[Any]:
    # Encoded ticks (Decimal exponents count) and the full text of each error.
    return [
        str(item) if isinstance(item, Exception) else msgspec.json.encode(item) for item in items
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(text=csv_texts())
def test_the_csv_reader_yields_the_same_ticks_and_errors_as_before(
    text: str, tmp_path_factory: Any
) -> None:
    path = Path(tmp_path_factory.mktemp("csv")) / "quotes.csv"
    path.write_text(text, encoding="utf-8")
    now = _outcomes(csv_replay._parse_file(str(path), INSTRUMENTS))
    before = _outcomes(csv_replay_985fe81._parse_file(str(path), INSTRUMENTS))
    assert now == before


def test_blank_lines_are_skipped_and_a_bad_row_after_them_is_named_by_its_own_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text(
        "ts,instrument,bid,ask\n1,NIFTY,24000,24000.05\n\n\n2,NIFTY,oops,24000\n"
        "3,NIFTY,24000,24000.05\n",
        encoding="utf-8",
    )
    now = list(csv_replay._parse_file(str(path), INSTRUMENTS))
    assert _outcomes(now) == _outcomes(csv_replay_985fe81._parse_file(str(path), INSTRUMENTS))
    errors = [item for item in now if isinstance(item, csv_replay.TickDataError)]
    assert [(error.line, error.column) for error in errors] == [(5, "bid")]
