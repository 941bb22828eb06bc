"""Smoke test of ``python -m tools.torture``: one trial end to end through the CLI, and the
book checks on hand-made books (so a check that can never fail would be noticed).

The real runs (hundreds of trials) are not part of the suite; see docs/torture.md. This proves
the tool itself works: it starts the engine, kills it 0-50 ms after a ``POST /pause``,
restarts it, runs every check and writes its JSON line and summary. The pause fault is chosen
because the code it exercises is expected to pass (an answered pause is stored before the
answer), so a failure here is a broken tool or a real regression, not a known open finding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.torture import Books, book_violations

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_one_pause_kill_trial_restarts_checks_the_books_and_reports_clean(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.jsonl"
    keep = tmp_path / "kept"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.torture",
            "--trials",
            "1",
            "--seed",
            "5",
            "--action",
            "kill_pause",
            "--results",
            str(results),
            "--keep-failures",
            str(keep),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    report = completed.stdout + completed.stderr
    [line] = results.read_text().splitlines()
    trial = json.loads(line)
    assert trial["action"] == "kill_pause"
    assert trial["outcome"] == "clean", report
    assert completed.returncode == 0, report
    # The fault happened and the restart was observed: a kill 0-50 ms after the request, a
    # new incarnation that leads at a later epoch, and the settle checks ran.
    assert 0 <= trial["kill_delay_ms"] <= 50
    assert trial["at_restart"]["epoch"] >= 2
    assert "settle_s" in trial["durations_s"]
    assert "Violations by kind" in completed.stdout
    assert not keep.exists()  # nothing kept when the trial is clean


def books(**overrides: object) -> Books:
    # One protected long position of 50 NIFTY-FUT, the same in both books.
    fields: dict[str, object] = {
        "open_positions": {"P1": {"instrument": "NIFTY-FUT", "side": "BUY", "quantity": 50}},
        "engine_net": {"NIFTY-FUT": 50},
        "venue_net": {"NIFTY-FUT": 50},
        "engine_legs": {"P1": {"STOP": [50], "TARGET": [50]}},
        "venue_legs": {"P1": {"STOP": [50], "TARGET": [50]}},
        "duplicates": [],
        "resubmits": [],
        "orphans": [],
        "in_flight": [],
        "working_orders": 2,
    }
    fields.update(overrides)
    return Books(**fields)  # type: ignore[arg-type]


def test_book_checks_pass_on_consistent_books_and_name_each_kind_of_damage() -> None:
    assert book_violations(books()) == []

    drift = book_violations(books(venue_net={"NIFTY-FUT": 100, "INFY": -3}))
    assert [v.kind for v in drift] == ["position_drift"]
    assert drift[0].detail == {
        "INFY": {"engine": 0, "venue": -3},
        "NIFTY-FUT": {"engine": 50, "venue": 100},
    }

    # A missing stop at the venue, and a target sized to an older quantity in the engine.
    unprotected = book_violations(
        books(
            engine_legs={"P1": {"STOP": [50], "TARGET": [25]}},
            venue_legs={"P1": {"TARGET": [50]}},
        )
    )
    assert [v.kind for v in unprotected] == ["unprotected_position"]
    assert [(d["books"], d["working_stop_quantities"]) for d in unprotected[0].detail] == [
        ("engine", [50]),
        ("venue", []),
    ]

    # Two working stops for one position are as wrong as none.
    doubled = book_violations(books(engine_legs={"P1": {"STOP": [50, 50], "TARGET": [50]}}))
    assert [v.kind for v in doubled] == ["unprotected_position"]

    found = book_violations(
        books(
            duplicates=[{"table": "venue_orders", "client_order_id": "P1S", "copies": 2}],
            resubmits=[{"client_order_id": "P1E", "submit_count": 2, "status": "FILLED"}],
            orphans=[{"client_order_id": "P2S", "reason": "POSITION_CLOSED"}],
        )
    )
    assert [v.kind for v in found] == [
        "duplicate_client_order_id",
        "venue_resubmit",
        "orphan_sibling",
    ]
