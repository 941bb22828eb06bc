"""Smoke test of ``python -m tools.bench``: every section at toy sizes (``--tiny``), so none of
the eight benchmarks can rot unnoticed. No timing is asserted: on a loaded machine any number
is possible; what must hold is that each section runs, reports its figures and writes them to
the JSON file. Also the quote generator the replay benchmark feeds on: same seed, same bytes,
and every row a tick the strict CSV reader accepts.

The real run is ``make bench``; see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.feeds.csv_replay import read_ticks
from domain.instruments import Instrument
from tools.bench import SECTIONS
from tools.quotes import DEFAULT_CONFIG, instruments_from_config, main, write_quotes

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(150)
@pytest.mark.parametrize("section", SECTIONS)
def test_each_bench_section_runs_at_toy_size_and_writes_its_figures(
    tmp_path: Path, section: str
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.bench",
            "--tiny",
            "--only",
            section,
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=REPO_ROOT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    [result_file] = tmp_path.glob("*.json")
    document = json.loads(result_file.read_text())
    assert list(document["sections"]) == [section]
    entry = document["sections"][section]
    assert entry["error"] is None, entry["error"]
    assert entry["figures"] is not None
    assert entry["summary"], "the section gave no row for the summary table"
    assert document["machine"]["cpu"] and document["machine"]["date"]
    # Each summary row is printed in the table, with its target beside it.
    for label, _measured, target in entry["summary"]:
        assert label in output
        assert target


def test_quotes_are_deterministic_and_every_row_is_a_valid_tick(tmp_path: Path) -> None:
    quote_instruments = instruments_from_config(DEFAULT_CONFIG)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["--rows", "3000", "--out", str(first), "--seed", "9"]) == 0
    write_quotes(second, rows=3000, seed=9, instruments=quote_instruments)
    assert first.read_bytes() == second.read_bytes()
    other = tmp_path / "c.csv"
    write_quotes(other, rows=3000, seed=10, instruments=quote_instruments)
    assert other.read_bytes() != first.read_bytes()

    instruments = {
        q.symbol: Instrument(
            symbol=q.symbol,
            lot_size=1,
            tick_size=q.tick_size,
            freeze_quantity=10_000,
            price_band_pct=Decimal("10"),
            reference_price=q.reference_price,
            max_spread_ticks=q.max_spread_ticks,
        )
        for q in quote_instruments
    }
    ticks = list(read_ticks(first, instruments))  # strict: the first bad row would raise
    assert len(ticks) == 3000
    assert {tick.instrument for tick in ticks} == set(instruments)


def test_quotes_refuse_a_negative_row_count_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    assert main(["--rows", "-1", "--out", str(out)]) == 2
    assert not out.exists()
