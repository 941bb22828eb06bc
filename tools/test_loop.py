"""``python -m tools.test_loop``: run the whole test suite N times in a row, as ``make test-loop``.

Acceptance needs ``make test`` to pass 10 times in a row on a 2-core machine: one green run
proves little about a suite whose failures depend on scheduling. Each run is a fresh
``python -m pytest`` process (fresh interpreter, fresh temp dirs), so nothing carries over
between runs. The loop stops at the first failing run, prints how many passed before it and
how long each took, and keeps that run's full output in a file; the output of passing runs is
not kept.

Exit status: 0 when every run passed, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

_SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.test_loop", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="how many runs in a row (10)")
    parser.add_argument(
        "--failure-log",
        default="logs/test-loop-failure.log",
        help="where the failing run's full output is kept (logs/test-loop-failure.log)",
    )
    parser.add_argument(
        "pytest_args",
        nargs="*",
        help="passed to pytest after '--' (default: the whole suite, -q -p no:cacheprovider)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, was {args.runs}")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args]
    failure_log = Path(args.failure_log)
    durations: list[float] = []
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        if completed.returncode != 0:
            failure_log.parent.mkdir(parents=True, exist_ok=True)
            failure_log.write_text(completed.stdout + completed.stderr, encoding="utf-8")
            print(f"run {run}/{args.runs}: FAILED (exit {completed.returncode}) in {elapsed:.0f} s")
            for line in completed.stdout.splitlines():
                if _SUMMARY_LINE.match(line):
                    print(f"  {line}")
            print(
                f"{len(durations)} of {args.runs} runs passed before the failure; "
                f"full output of the failing run: {failure_log}"
            )
            return 1
        durations.append(elapsed)
        print(f"run {run}/{args.runs}: passed in {elapsed:.0f} s", flush=True)
    print(
        f"all {args.runs} runs passed; duration min {min(durations):.0f} s, "
        f"median {statistics.median(durations):.0f} s, max {max(durations):.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
