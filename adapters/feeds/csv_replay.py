"""Replay of recorded quotes from a CSV file, validated row by row.

Columns (header required, order free):
    ts          required. ISO-8601 with a timezone (``2026-01-02T09:15:00.250+05:30``, ``Z``
                accepted, up to nanosecond fractions) or integer epoch nanoseconds.
    instrument  required. A configured symbol.
    bid, ask    required. Positive decimals, ``bid <= ask``.
    last        optional. Positive decimal; empty or absent means the mid.
    volume      optional. Non-negative integer; empty or absent means 0.
    bid_size, ask_size  optional. Non-negative integers.

Timestamps must not go backwards across the file (equal is fine). Any violation raises
``TickDataError`` naming the file, the line number (the header is line 1), the column and the
rule, so a bad file fails at the row that broke it rather than as an odd trade later.
Ticks come out with ``ts_event = ts_init = ts``; the pump restamps ``ts_init`` on emission.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from domain.clock import NANOS_PER_SECOND
from domain.instruments import Instrument
from domain.messages.market import Tick

__all__ = ["TickDataError", "parse_timestamp_ns", "read_ticks"]

REQUIRED_COLUMNS = ("ts", "instrument", "bid", "ask")
OPTIONAL_COLUMNS = ("last", "volume", "bid_size", "ask_size")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"^(?P<head>[^.]*T\d{2}:\d{2}:\d{2})(?:[.,](?P<fraction>\d+))?(?P<tail>.*)$")


class TickDataError(ValueError):
    """A row of a tick file broke a rule. Carries where and which rule."""

    def __init__(self, path: str, line: int, column: str, rule: str, value: str = "") -> None:
        self.path = path
        self.line = line
        self.column = column
        self.rule = rule
        self.value = value
        shown = f" (value was {value!r})" if value else ""
        super().__init__(f"{path}:{line}: column {column!r}: {rule}{shown}")


def parse_timestamp_ns(text: str) -> int:
    """Parse integer epoch nanoseconds or ISO-8601 with a timezone into epoch nanoseconds.

    Raises:
        ValueError: on anything else, including an ISO time without a timezone.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _FRACTION.match(text)
    if match is None:
        # A date without a time part; fromisoformat decides whether it is valid.
        parsed = datetime.fromisoformat(text)
        fraction_ns = 0
    else:
        fraction = match.group("fraction") or ""
        if len(fraction) > 9:
            raise ValueError(f"more than 9 fractional digits in {text!r}")
        parsed = datetime.fromisoformat(match.group("head") + match.group("tail"))
        fraction_ns = int(fraction.ljust(9, "0")) if fraction else 0
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    delta = parsed - _EPOCH
    whole_seconds = delta.days * 86_400 + delta.seconds
    return whole_seconds * NANOS_PER_SECOND + delta.microseconds * 1_000 + fraction_ns


def read_ticks(
    path: str | os.PathLike[str], instruments: Mapping[str, Instrument]
) -> Iterator[Tick]:
    """Yield the ticks of a CSV file in file order, validating each row.

    The file is read lazily; an error surfaces when its row is reached.

    Args:
        path: the CSV file.
        instruments: known instruments by symbol; any other symbol is an error.

    Raises:
        TickDataError: on a missing or unknown column, an unknown instrument, an unparseable
            number or timestamp, a non-positive price, ``bid > ask``, a negative size or
            volume, or a timestamp earlier than the previous row's.
        OSError: if the file cannot be opened.
    """
    name = os.fspath(path)
    with open(name, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [column.strip() for column in (reader.fieldnames or [])]
        reader.fieldnames = header
        for column in REQUIRED_COLUMNS:
            if column not in header:
                raise TickDataError(name, 1, column, "required column is missing")
        for column in header:
            if column not in REQUIRED_COLUMNS and column not in OPTIONAL_COLUMNS:
                raise TickDataError(
                    name,
                    1,
                    column,
                    f"unknown column; allowed are {[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]}",
                )
        previous_ts: int | None = None
        for row in reader:
            line = reader.line_num
            if None in row:
                raise TickDataError(name, line, "*", "row has more fields than the header")
            tick = _parse_row(name, line, row, instruments)
            if previous_ts is not None and tick.ts_event < previous_ts:
                raise TickDataError(
                    name,
                    line,
                    "ts",
                    f"timestamp went backwards: ts={tick.ts_event} < previous {previous_ts}",
                    row["ts"],
                )
            previous_ts = tick.ts_event
            yield tick


def _parse_row(
    name: str, line: int, row: Mapping[str, str | None], instruments: Mapping[str, Instrument]
) -> Tick:
    def cell(column: str) -> str:
        return (row.get(column) or "").strip()

    raw_ts = cell("ts")
    try:
        ts = parse_timestamp_ns(raw_ts)
    except ValueError as error:
        raise TickDataError(name, line, "ts", f"unparseable timestamp ({error})", raw_ts) from None
    symbol = cell("instrument")
    if symbol not in instruments:
        raise TickDataError(
            name, line, "instrument", f"unknown instrument; known are {sorted(instruments)}", symbol
        )
    bid = _price(name, line, "bid", cell("bid"))
    ask = _price(name, line, "ask", cell("ask"))
    if bid > ask:
        raise TickDataError(name, line, "bid", f"bid above ask: bid={bid} ask={ask}", cell("bid"))
    raw_last = cell("last")
    last = _price(name, line, "last", raw_last) if raw_last else (bid + ask) / 2
    return Tick(
        instrument=symbol,
        bid=bid,
        ask=ask,
        last=last,
        bid_size=_count(name, line, "bid_size", cell("bid_size")),
        ask_size=_count(name, line, "ask_size", cell("ask_size")),
        volume=_count(name, line, "volume", cell("volume")),
        ts_event=ts,
        ts_init=ts,
    )


def _price(name: str, line: int, column: str, text: str) -> Decimal:
    if not text:
        raise TickDataError(name, line, column, "value is missing")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise TickDataError(name, line, column, "unparseable number", text) from None
    if not value.is_finite():
        raise TickDataError(name, line, column, "unparseable number (not finite)", text)
    if value <= 0:
        raise TickDataError(name, line, column, "non-positive price", text)
    return value


def _count(name: str, line: int, column: str, text: str) -> int:
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise TickDataError(name, line, column, "unparseable number (whole number)", text) from None
    if value < 0:
        raise TickDataError(name, line, column, "negative quantity", text)
    return value
