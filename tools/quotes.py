"""Seeded synthetic quotes as a CSV that ``adapters.feeds.csv_replay`` reads (the replay
benchmark's input, and any replay or backtest that wants a large, reproducible file).

``python -m tools.quotes --rows 1000000 --out quotes.csv --seed 1`` writes ``ts, instrument,
bid, ask, last, volume`` rows (``ts`` in integer epoch nanoseconds, never going backwards) for
the instruments of a config (``configs/paper.yaml`` by default: NIFTY-FUT, BANKNIFTY-FUT,
RELIANCE, INFY). The same arguments always give the same bytes.

The market: rows start at 09:15 IST on a Monday (``--start`` another instant, e.g.
``2026-01-05T09:00:00+05:30``), 5-40 ms apart (1M rows fill about one 6.25-hour NSE
session), or, with ``--end``, evenly spaced so that the rows span ``[start, end]`` (a whole
simulated day, pre-open to close, in a few thousand rows: the scheduler's replay test); each
row quotes one instrument picked at random. Every instrument's
mid moves in whole ticks with a slowly changing drift (so there are trends for the EMA
pullback and breakouts for the ORB strategy), is pulled back when it strays more than 3 % from
its reference price (so it never leaves the price band), and is quoted 1-3 ticks wide (inside
``max_spread_ticks``). Prices are written with the instrument's tick size as exact decimals.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_CONFIG", "QuoteInstrument", "instruments_from_config", "main", "write_quotes"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "paper.yaml"
SESSION_START_NS = 1_767_584_700_000_000_000  # 2026-01-05 03:45:00 UTC = 09:15 IST, a Monday
"""Where the first row is stamped."""

_DRIFT_CHANGE_PROBABILITY = 0.002  # a new trend every ~500 quotes of an instrument
_MAX_DEVIATION = 0.03  # of the reference price, before the walk is pulled back


@dataclass(frozen=True)
class QuoteInstrument:
    """What the generator needs of an instrument: its symbol, reference price and tick."""

    symbol: str
    reference_price: Decimal
    tick_size: Decimal
    max_spread_ticks: int = 3


def instruments_from_config(path: Path) -> list[QuoteInstrument]:
    """The instruments of an engine config file (only the fields the generator uses).

    Raises:
        ValueError: the file has no ``instruments`` list.
    """
    data: Any = yaml.safe_load(path.read_text())
    items = data.get("instruments") if isinstance(data, dict) else None
    if not items:
        raise ValueError(f"{path}: no 'instruments' list to generate quotes for")
    return [
        QuoteInstrument(
            symbol=str(item["symbol"]),
            reference_price=Decimal(str(item["reference_price"])),
            tick_size=Decimal(str(item["tick_size"])),
            max_spread_ticks=int(item.get("max_spread_ticks", 3)),
        )
        for item in items
    ]


class _Walk:
    """One instrument's mid, in whole ticks, and how its quotes are written."""

    def __init__(self, instrument: QuoteInstrument) -> None:
        self.symbol = instrument.symbol
        exponent = -int(instrument.tick_size.as_tuple().exponent)
        self._decimals = max(exponent, 0)
        self._scale = 10**self._decimals
        # Prices are integers of 1/scale; one tick is tick_units of them (0.05 -> 5 of 0.01).
        self._tick_units = int(instrument.tick_size * self._scale)
        self._reference_ticks = int(instrument.reference_price / instrument.tick_size)
        self.mid_ticks = self._reference_ticks
        # A step of about 1 bp of the price, at least one tick.
        self._sigma = max(1.0, self._reference_ticks * 0.0001)
        self._limit = self._reference_ticks * _MAX_DEVIATION
        self._max_spread = max(1, min(3, instrument.max_spread_ticks))
        self.drift = 0.0

    def step(self, rng: random.Random) -> tuple[str, str, str]:
        if rng.random() < _DRIFT_CHANGE_PROBABILITY:
            self.drift = rng.gauss(0.0, 0.3) * self._sigma
        deviation = self.mid_ticks - self._reference_ticks
        pull = -0.5 * self._sigma if deviation > self._limit else 0.0
        if deviation < -self._limit:
            pull = 0.5 * self._sigma
        self.mid_ticks += round(rng.gauss(self.drift + pull, self._sigma))
        self.mid_ticks = max(self.mid_ticks, self._max_spread + 1)
        spread = rng.randint(1, self._max_spread)
        bid = self.mid_ticks - spread // 2
        ask = bid + spread
        last = bid if rng.random() < 0.5 else ask
        return self._price(bid), self._price(ask), self._price(last)

    def _price(self, ticks: int) -> str:
        units = ticks * self._tick_units
        if not self._decimals:
            return str(units)
        whole, fraction = divmod(units, self._scale)
        return f"{whole}.{fraction:0{self._decimals}d}"


def write_quotes(
    out: Path,
    *,
    rows: int,
    seed: int,
    instruments: Sequence[QuoteInstrument],
    start_ns: int = SESSION_START_NS,
    end_ns: int | None = None,
) -> int:
    """Write ``rows`` quotes to ``out``; return the number of rows written.

    ``end_ns``: space the rows evenly so the last is stamped at (about) ``end_ns``; by
    default they are 5-40 ms apart.

    Raises:
        ValueError: ``rows`` is negative, there are no instruments, or ``end_ns`` is not after
            ``start_ns``.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if end_ns is not None and end_ns <= start_ns:
        raise ValueError(f"end ({end_ns}) must be after start ({start_ns})")
    even_gap_ns = (end_ns - start_ns) // max(rows, 1) if end_ns is not None else None
    if not instruments:
        raise ValueError("no instruments to generate quotes for")
    rng = random.Random(seed)
    walks = [_Walk(instrument) for instrument in instruments]
    ts = start_ns
    with out.open("w", encoding="ascii", newline="") as handle:
        handle.write("ts,instrument,bid,ask,last,volume\n")
        lines: list[str] = []
        for _ in range(rows):
            ts += even_gap_ns if even_gap_ns is not None else rng.randint(5, 40) * 1_000_000
            walk = walks[rng.randrange(len(walks))]
            bid, ask, last = walk.step(rng)
            lines.append(f"{ts},{walk.symbol},{bid},{ask},{last},{rng.randint(1, 500)}\n")
            if len(lines) >= 10_000:
                handle.writelines(lines)
                lines.clear()
        handle.writelines(lines)
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.quotes",
        description="Write seeded synthetic quotes as a replayable CSV (same seed, same bytes).",
    )
    parser.add_argument("--rows", type=int, required=True, help="quotes to write")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to (over)write")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="engine config whose instruments are quoted (default configs/paper.yaml)",
    )
    parser.add_argument(
        "--start",
        type=_instant_ns,
        default=SESSION_START_NS,
        help="first row's time, ISO 8601 with offset (default 2026-01-05T09:15:00+05:30)",
    )
    parser.add_argument(
        "--end",
        type=_instant_ns,
        default=None,
        help="space the rows evenly up to this ISO 8601 time (default: 5-40 ms apart)",
    )
    return parser


def _instant_ns(text: str) -> int:
    """An ISO 8601 time with its offset as epoch nanoseconds (argparse type)."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from error
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (e.g. +05:30)")
    delta = instant - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Write the file; 2 on bad arguments (a clear message, nothing written)."""
    options = _parser().parse_args(argv)
    if options.rows < 0:
        print(f"--rows must be >= 0, got {options.rows}", file=sys.stderr)
        return 2
    try:
        instruments = instruments_from_config(options.config)
    except (OSError, ValueError, KeyError, yaml.YAMLError) as error:
        print(f"cannot read instruments from {options.config}: {error}", file=sys.stderr)
        return 2
    if options.end is not None and options.end <= options.start:
        print("--end must be after --start", file=sys.stderr)
        return 2
    written = write_quotes(
        options.out,
        rows=options.rows,
        seed=options.seed,
        instruments=instruments,
        start_ns=options.start,
        end_ns=options.end,
    )
    print(f"wrote {written:,} quotes for {len(instruments)} instruments to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
