"""`python -m tools.test_loop` (`make test-loop`): N runs in a row, stop at the first failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.test_loop import main


def suite(directory: Path, *, fail_from_run: int | None) -> Path:
    """A one-test suite that fails from its ``fail_from_run``-th run on (counted in a file)."""
    counter = directory / "runs.txt"
    test_file = directory / "test_sample.py"
    test_file.write_text(
        "from pathlib import Path\n"
        f"COUNTER = Path({str(counter)!r})\n"
        "def test_sample():\n"
        "    run = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1\n"
        "    COUNTER.write_text(str(run))\n"
        f"    assert {fail_from_run!r} is None or run < {fail_from_run!r}, f'run {{run}}'\n"
    )
    return test_file


def test_every_run_passing_prints_each_run_and_the_durations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_file = suite(tmp_path, fail_from_run=None)

    status = main(["--runs", "3", "--failure-log", str(tmp_path / "failure.log"), str(test_file)])

    out = capsys.readouterr().out
    assert status == 0
    assert [line.split(":")[0] for line in out.splitlines()[:3]] == [
        "run 1/3",
        "run 2/3",
        "run 3/3",
    ]
    assert "all 3 runs passed; duration min" in out
    assert not (tmp_path / "failure.log").exists()


def test_the_loop_stops_at_the_first_failure_and_keeps_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_file = suite(tmp_path, fail_from_run=2)
    failure_log = tmp_path / "logs" / "failure.log"

    status = main(["--runs", "5", "--failure-log", str(failure_log), str(test_file)])

    out = capsys.readouterr().out
    assert status == 1
    assert "run 2/5: FAILED" in out and "run 3/5" not in out
    assert "FAILED " in out and "test_sample" in out  # the failing test, named
    assert (
        f"1 of 5 runs passed before the failure; full output of the failing run: {failure_log}"
        in out
    )
    assert "AssertionError: run 2" in failure_log.read_text()
