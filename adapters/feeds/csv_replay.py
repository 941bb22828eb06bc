"""Replay of recorded quotes from a CSV file, validated row by row.

Columns (header required, order free):
    ts          required. ISO-8601 with a timezone (``2026-01-02T09:15:00.250+05:30``, ``Z``
                accepted, up to nanosecond fractions) or integer epoch nanoseconds.
    instrument  required. A configured symbol.
    bid, ask    required. Positive decimals, ``bid <= ask``.
    last        optional. Positive decimal; empty or absent means the mid.
    volume      optional. Non-negative integer; empty or absent means 0.
    bid_size, ask_size  optional. Non-negative integers.

Timestamps must not go backwards across the file (equal is fine). A violation is described by
a ``TickDataError`` naming the file, the line number (the header is line 1), the column and the
rule. Prices go through the same rule as the feed actor's (``domain.market_data``), so a row
with NaN, Infinity, ``1e999999`` or a price ten times off its reference never becomes a tick.

Two readers share the parsing:
- ``CsvTickReplay`` (what ``build_tick_source`` and so the engine use) skips a bad row and goes
  on: garbage text, a missing cell, a bad number or timestamp, bytes that are not UTF-8, a row
  the csv module cannot split. Each is counted (``bad_rows``, the first
  ``MAX_RECORDED_BAD_LINES`` line numbers in ``bad_row_lines``), handed to ``on_bad_row`` (the
  engine counts it in ``trader_ticks_rejected_total{feed,reason="BAD_ROW"}``) and logged with
  its line number: the first ``LOG_FIRST_BAD_ROWS`` one by one, then at most one line per
  ``BAD_ROW_LOG_INTERVAL_S`` with the running count, and a summary when the file ends, so a
  file of garbage cannot flood the log. Only a bad header (a missing or unknown column) or a
  file that cannot be opened ends the replay: no row of such a file could be read.
- ``read_ticks`` is strict: the first bad row raises its ``TickDataError`` (for tools and
  tests that want a file to be all good).

Ticks come out with ``ts_event = ts_init = ts``; the pump restamps ``ts_init`` on emission.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from domain.clock import NANOS_PER_SECOND
from domain.instruments import Instrument
from domain.market_data import tick_rejection
from domain.messages.market import Tick

__all__ = [
    "BAD_ROW_LOG_INTERVAL_S",
    "LOG_FIRST_BAD_ROWS",
    "MAX_RECORDED_BAD_LINES",
    "CsvTickReplay",
    "TickDataError",
    "parse_timestamp_ns",
    "read_ticks",
]

logger = logging.getLogger(__name__)

LOG_FIRST_BAD_ROWS = 10
"""Bad rows logged one by one before the log is rate-limited."""
BAD_ROW_LOG_INTERVAL_S = 10.0
"""After the first ones, at most one bad-row line per this many seconds (with the count)."""
MAX_RECORDED_BAD_LINES = 1000
"""How many bad line numbers ``CsvTickReplay.bad_row_lines`` keeps (the count goes on)."""

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
        shown = f" (value was {_excerpt(value)!r})" if value else ""
        super().__init__(f"{path}:{line}: column {column!r}: {rule}{shown}")


def _excerpt(text: str) -> str:
    # A bad cell can be a megabyte of garbage: messages and logs show a bounded excerpt.
    return text if len(text) <= 60 else text[:57] + "..."


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
    """Yield the ticks of a CSV file in file order; the first bad row raises.

    The file is read lazily; an error surfaces when its row is reached.

    Args:
        path: the CSV file.
        instruments: known instruments by symbol; any other symbol is an error.

    Raises:
        TickDataError: on a missing or unknown column, an unknown instrument, an unparseable
            number or timestamp, a price the feed actor would reject (NaN, infinite,
            non-positive, absurd), ``bid > ask``, a negative size or volume, a timestamp
            earlier than the previous row's, bytes that are not UTF-8, or a row the csv module
            cannot split.
        OSError: if the file cannot be opened.
    """
    for item in _parse_file(os.fspath(path), instruments):
        if isinstance(item, TickDataError):
            raise item
        yield item


class CsvTickReplay(Iterator[Tick]):
    """The ticks of a CSV file in file order, skipping (and counting, and logging) bad rows.

    Iterating opens the file lazily, on the first ``next`` (in the pump thread). Attributes are
    updated as the file is read and may be read from any thread.

    Args:
        path: the CSV file.
        instruments: known instruments by symbol; a row for any other symbol is a bad row.
        on_bad_row: called with each bad row's ``TickDataError`` (e.g. to bump a metric), in
            the reading thread; an exception from it is logged and ignored.

    Raises (from ``next``):
        TickDataError: the header is missing a required column or has an unknown one.
        OSError: the file cannot be opened.
    """

    validates_ticks: bool = True
    """Every tick handed out passed ``tick_rejection`` and time order (``TicksReceived``'s
    ``validated``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        instruments: Mapping[str, Instrument],
        *,
        on_bad_row: Callable[[TickDataError], None] | None = None,
    ) -> None:
        self.path: str = os.fspath(path)
        self._instruments = dict(instruments)
        self._on_bad_row = on_bad_row
        self._items: Iterator[Tick | TickDataError] | None = None
        self._unlogged_bad_rows = 0
        self._last_bad_row_log = float("-inf")
        self.ticks_read: int = 0
        """Good rows handed out so far."""
        self.bad_rows: int = 0
        """Rows skipped so far."""
        self.bad_row_lines: list[int] = []
        """Line numbers of the first ``MAX_RECORDED_BAD_LINES`` skipped rows."""
        self.finished: bool = False
        """The end of the file was reached."""

    def __iter__(self) -> CsvTickReplay:
        return self

    def __next__(self) -> Tick:
        if self._items is None:
            self._items = _parse_file(self.path, self._instruments)
        for item in self._items:
            if isinstance(item, TickDataError):
                self._skip(item)
                continue
            self.ticks_read += 1
            return item
        if not self.finished:
            self.finished = True
            self._log_summary()
        raise StopIteration

    def snapshot(self) -> dict[str, Any]:
        """Counters for debug dumps and the pump's snapshot."""
        return {
            "path": self.path,
            "ticks_read": self.ticks_read,
            "bad_rows": self.bad_rows,
            "first_bad_row_lines": self.bad_row_lines[:20],
            "finished": self.finished,
        }

    def _skip(self, error: TickDataError) -> None:
        self.bad_rows += 1
        if len(self.bad_row_lines) < MAX_RECORDED_BAD_LINES:
            self.bad_row_lines.append(error.line)
        if self._on_bad_row is not None:
            try:
                self._on_bad_row(error)
            except Exception:
                logger.exception("bad-row callback failed for %s:%d", error.path, error.line)
        self._unlogged_bad_rows += 1
        now = time.monotonic()
        if (
            self.bad_rows > LOG_FIRST_BAD_ROWS
            and now - self._last_bad_row_log < BAD_ROW_LOG_INTERVAL_S
        ):
            return
        self._last_bad_row_log = now
        logger.warning(
            "replay skipped a bad row: %s (%d skipped since the last such line, %d in all)",
            error,
            self._unlogged_bad_rows,
            self.bad_rows,
            extra={
                "event": "FEED_BAD_ROW",
                "path": error.path,
                "line": error.line,
                "column": error.column,
                "bad_rows": self.bad_rows,
            },
        )
        self._unlogged_bad_rows = 0

    def _log_summary(self) -> None:
        if self.bad_rows == 0:
            return
        shown = self.bad_row_lines[:20]
        more = "" if self.bad_rows <= len(shown) else f" and {self.bad_rows - len(shown)} more"
        logger.warning(
            "replay of %s finished: %d ticks read, %d bad rows skipped at lines %s%s",
            self.path,
            self.ticks_read,
            self.bad_rows,
            shown,
            more,
            extra={
                "event": "FEED_REPLAY_SUMMARY",
                "path": self.path,
                "ticks_read": self.ticks_read,
                "bad_rows": self.bad_rows,
            },
        )


def _parse_file(name: str, instruments: Mapping[str, Instrument]) -> Iterator[Tick | TickDataError]:
    # Bad rows come out as values, not raised, so one reader can skip them and the other stop.
    # "utf-8-sig" drops a byte-order mark; undecodable bytes become U+FFFD and fail their row
    # instead of ending the file.
    with open(name, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        try:
            fieldnames = next(reader, None) or []
        except csv.Error as error:
            raise TickDataError(name, 1, "*", f"unreadable header ({error})") from None
        header = [column.strip() for column in fieldnames]
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
        fast = _FastRows(header, instruments)
        previous_ts: int | None = None
        while True:
            line_before = reader.line_num
            try:
                cells = next(reader)
                while not cells:  # a blank line is no row, as csv.DictReader has it
                    line_before = reader.line_num
                    cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                # The csv module has consumed the line it could not split; reading goes on.
                yield TickDataError(
                    name, max(reader.line_num, line_before + 1), "*", f"unsplittable row ({error})"
                )
                continue
            tick = fast.tick(cells, previous_ts)
            if tick is None:
                # Anything unusual takes the row-by-row rules, which name what is wrong.
                line = reader.line_num
                try:
                    tick = _checked_row(
                        name, line, _as_dict(header, cells), instruments, previous_ts
                    )
                except TickDataError as error:
                    yield error
                    continue
                except Exception as error:
                    # A rule above missed a case: still one bad row, never the end of the replay.
                    yield TickDataError(
                        name, line, "*", f"unreadable row ({_excerpt(repr(error))})"
                    )
                    continue
            previous_ts = tick.ts_event
            yield tick


def _as_dict(header: list[str], cells: list[str]) -> dict[str | None, Any]:
    """The row as csv.DictReader gives it: extra cells under None, missing ones None."""
    row: dict[str | None, Any] = dict(zip(header, cells, strict=False))
    if len(cells) > len(header):
        row[None] = cells[len(header) :]
    else:
        for column in header[len(cells) :]:
            row[column] = None
    return row


class _FastRows:
    """The common row in one pass: every cell present, epoch-nanosecond time, plain numbers,
    a usable quote. Returns None for anything else, and the caller runs the full rules, so a
    row's outcome (its tick, or its error) is exactly what ``_checked_row`` decides."""

    def __init__(self, header: list[str], instruments: Mapping[str, Instrument]) -> None:
        self._width = len(header)
        self._instruments = instruments
        # A repeated column's last cell counts, as in csv.DictReader's dict.
        position = {column: index for index, column in enumerate(header)}
        self._ts = position["ts"]
        self._instrument = position["instrument"]
        self._bid = position["bid"]
        self._ask = position["ask"]
        self._last = position.get("last")
        self._sizes = tuple(position.get(column) for column in ("bid_size", "ask_size", "volume"))

    def tick(self, cells: list[str], previous_ts: int | None) -> Tick | None:
        if len(cells) != self._width or "\ufffd" in "".join(cells):
            return None
        raw_ts = cells[self._ts]
        if not raw_ts.isdigit() or not raw_ts.isascii():
            return None
        ts = int(raw_ts)
        if previous_ts is not None and ts < previous_ts:
            return None
        symbol = cells[self._instrument]
        instrument = self._instruments.get(symbol)
        if instrument is None:
            return None
        sizes = []
        for index in self._sizes:
            if index is None:
                sizes.append(0)
                continue
            text = cells[index]
            if not text:
                sizes.append(0)
            elif text.isdigit() and text.isascii():
                sizes.append(int(text))
            else:
                return None
        try:
            bid = Decimal(cells[self._bid])
            ask = Decimal(cells[self._ask])
            raw_last = "" if self._last is None else cells[self._last]
            last = Decimal(raw_last) if raw_last.strip() else None
        except (InvalidOperation, ValueError):
            return None
        tick = Tick(
            instrument=symbol,
            bid=bid,
            ask=ask,
            last=bid if last is None else last,
            bid_size=sizes[0],
            ask_size=sizes[1],
            volume=sizes[2],
            ts_event=ts,
            ts_init=ts,
        )
        # The feed actor's rule, as the full path applies it (a missing last is checked as the
        # bid, then becomes the mid).
        if tick_rejection(tick, instrument, None) is not None:
            return None
        if last is None:
            return msgspec.structs.replace(tick, last=(bid + ask) / 2)
        return tick


def _checked_row(
    name: str,
    line: int,
    row: Mapping[str | None, Any],
    instruments: Mapping[str, Instrument],
    previous_ts: int | None,
) -> Tick:
    if None in row:
        raise TickDataError(name, line, "*", "row has more fields than the header")
    for column, value in row.items():
        if isinstance(value, str) and "\ufffd" in value:
            raise TickDataError(name, line, str(column), "value is not valid UTF-8", value)
    tick = _parse_row(name, line, row, instruments)
    if previous_ts is not None and tick.ts_event < previous_ts:
        raise TickDataError(
            name,
            line,
            "ts",
            f"timestamp went backwards: ts={tick.ts_event} < previous {previous_ts}",
            str(row.get("ts") or ""),
        )
    return tick


def _parse_row(
    name: str, line: int, row: Mapping[str, str | None], instruments: Mapping[str, Instrument]
) -> Tick:
    def cell(column: str) -> str:
        return (row.get(column) or "").strip()

    raw_ts = cell("ts")
    try:
        ts = parse_timestamp_ns(raw_ts)
    except (ValueError, OverflowError) as error:
        raise TickDataError(
            name, line, "ts", f"unparseable timestamp ({_excerpt(str(error))})", raw_ts
        ) from None
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
    last = _price(name, line, "last", raw_last) if raw_last else None
    tick = Tick(
        instrument=symbol,
        bid=bid,
        ask=ask,
        last=bid if last is None else last,
        bid_size=_count(name, line, "bid_size", cell("bid_size")),
        ask_size=_count(name, line, "ask_size", cell("ask_size")),
        volume=_count(name, line, "volume", cell("volume")),
        ts_event=ts,
        ts_init=ts,
    )
    # The feed actor's own rule, before any arithmetic: the mid of 9E+999999 would overflow.
    reason = tick_rejection(tick, instruments[symbol], None)
    if reason is not None:
        raise TickDataError(
            name,
            line,
            "*",
            f"the feed would reject this tick: {reason.value} "
            f"(bid={bid} ask={ask} last={raw_last or '-'} ts={ts})",
        )
    if last is None:
        return msgspec.structs.replace(tick, last=(bid + ask) / 2)
    return tick


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
