"""Smoke test of ``python -m tools.torture``: one trial end to end through the CLI.

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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]


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
