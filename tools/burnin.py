"""Burn-in scorer: PASS or FAIL per item of the AITRAPP runbook's burn-in checklist, for one day.

``python -m tools.burnin [--database-url URL] [--day YYYY-MM-DD] [--json]`` reads the same
figures as the daily report (``tools.post_close.build_report``: one IST day, the reconcile of
the whole database) and prints one line per item, then ``BURN-IN: PASS`` or ``BURN-IN: FAIL``.
Exit code 0 only when every item passes, 1 when one fails, 2 when the database cannot be read.

The items, and what each looks for in storage:

1. ``FLATTEN_P95``: the day's ``FLATTEN`` rows in ``events`` (the order actor writes one per
   completed flatten, payload ``FlattenCompleted`` with ``duration_ms``) have a nearest-rank
   p95 of at most ``--flatten-p95-ms`` (2000). No flatten that day is a FAIL: the checklist
   asks for a measured figure.
2. ``NO_DUPLICATE_CLIENT_ORDER_ID``: the reconcile finds no ``client_order_id`` twice.
3. ``NO_ORPHAN_SIBLINGS``: the reconcile finds no working STOP/TARGET without its position.
4. ``EOD_TIGHTEN``: a row named ``EOD_TIGHTEN`` (``events.event`` or ``audit_log.action``) at
   or after ``--tighten-at`` (15:20 IST) that day and less than ``--eod-tolerance-s`` (60 s)
   later.
5. ``EOD_HARD_FLAT``: likewise a row named ``EOD_HARD_FLAT`` in ``[--hard-flat-at (15:25),
   + tolerance)``. Rows of the same name outside the window do not count (an EOD at the wrong
   time is a FAIL that says when it happened).
6. ``RECONCILE_CLEAN``: the reconcile is clean and the day's realized PnL from the fills equals
   the ``positions`` table's for the same plans (the daily report's ``consistency``).

What the scheduler makes the engine record counts as these (tools.post_close ``_as_eod``): the
order actor's ``TIGHTEN_STOPS`` event, and its ``FLATTEN`` event with reason ``eod_hard_flat``;
so do rows named ``EOD_TIGHTEN`` and ``EOD_HARD_FLAT`` (an event name or an audit action).
``score(report, ...)`` returns the items for tests.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime, time

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from domain.calendar import EXCHANGE_TZ
from domain.clock import NANOS_PER_SECOND
from tools.post_close import (
    DailyReport,
    StoredEvent,
    build_report,
    config_database_url,
    day_bounds_ns,
    open_database,
    redacted,
    today_ist,
)
from tools.reconcile import DEFAULT_DATABASE_URL

__all__ = ["EOD_HARD_FLAT", "EOD_TIGHTEN", "CheckResult", "main", "score"]

EOD_TIGHTEN = "EOD_TIGHTEN"
EOD_HARD_FLAT = "EOD_HARD_FLAT"

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """One checklist item: its name, whether it passed, and the figures that decided."""

    item: str
    passed: bool
    detail: str


def _at(day: str, clock_time: time) -> int:
    start, _ = day_bounds_ns(day)
    midnight = datetime.fromtimestamp(start / NANOS_PER_SECOND, tz=EXCHANGE_TZ)
    moment = datetime.combine(midnight.date(), clock_time, tzinfo=EXCHANGE_TZ)
    return int(moment.timestamp()) * NANOS_PER_SECOND


def _eod_check(report: DailyReport, name: str, scheduled: time, tolerance_s: float) -> CheckResult:
    opens = _at(report.trading_day, scheduled)
    closes = opens + int(tolerance_s * NANOS_PER_SECOND)
    rows: list[StoredEvent] = [item for item in report.eod if item.name == name]
    on_time = [item for item in rows if opens <= item.ts_ns < closes]
    window = f"{scheduled.strftime('%H:%M')} IST + {tolerance_s:g}s"
    if on_time:
        return CheckResult(
            item=name, passed=True, detail=f"at {on_time[0].time_ist[11:23]} (window {window})"
        )
    if rows:
        seen = ", ".join(item.time_ist[11:23] for item in rows)
        return CheckResult(item=name, passed=False, detail=f"only outside {window}: {seen}")
    return CheckResult(item=name, passed=False, detail=f"no {name} row that day ({window})")


def score(
    report: DailyReport,
    *,
    flatten_p95_ms: float = 2000.0,
    tighten_at: time = time(15, 20),
    hard_flat_at: time = time(15, 25),
    eod_tolerance_s: float = 60.0,
) -> list[CheckResult]:
    """The checklist's items for ``report``, in the runbook's order."""
    flatten = report.latency["flatten_ms"]
    p95 = flatten["p95"]
    if p95 is None:
        flatten_result = CheckResult(
            item="FLATTEN_P95",
            passed=False,
            detail="no FLATTEN recorded that day: nothing measured",
        )
    else:
        flatten_result = CheckResult(
            item="FLATTEN_P95",
            passed=p95 <= flatten_p95_ms,
            detail=f"p95={p95:.1f}ms limit={flatten_p95_ms:g}ms n={flatten['count']}",
        )
    reconciled = report.reconcile
    duplicates = ", ".join(
        f"{item.client_order_id} x{item.copies}" for item in reconciled.duplicates[:5]
    )
    orphans = ", ".join(
        f"{item.client_order_id} {item.leg} {item.reason}" for item in reconciled.orphans[:5]
    )
    consistency = report.consistency
    problems = []
    if not reconciled.clean:
        problems.append(
            f"reconcile FINDINGS ({len(reconciled.duplicates)} duplicates, "
            f"{len(reconciled.orphans)} orphans)"
        )
    if not consistency["agrees"]:
        problems.append(
            f"realized PnL from fills {consistency['realized_from_fills']} != positions "
            f"{consistency['realized_in_positions']} "
            f"({consistency['positions_found']} positions for {report.fills['plans']} plans)"
        )
    return [
        flatten_result,
        CheckResult(
            item="NO_DUPLICATE_CLIENT_ORDER_ID",
            passed=not reconciled.duplicates,
            detail=f"{len(reconciled.duplicates)} duplicated"
            + (f": {duplicates}" if duplicates else ""),
        ),
        CheckResult(
            item="NO_ORPHAN_SIBLINGS",
            passed=not reconciled.orphans,
            detail=f"{len(reconciled.orphans)} orphans" + (f": {orphans}" if orphans else ""),
        ),
        _eod_check(report, EOD_TIGHTEN, tighten_at, eod_tolerance_s),
        _eod_check(report, EOD_HARD_FLAT, hard_flat_at, eod_tolerance_s),
        CheckResult(
            item="RECONCILE_CLEAN",
            passed=not problems,
            detail="; ".join(problems)
            or f"clean; realized PnL {consistency['realized_from_fills']} agrees with positions",
        ),
    ]


def _clock_time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected HH:MM, was {text!r}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 when every item passes, 1 when one fails, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.burnin",
        description="Score one IST day against the runbook's burn-in checklist. "
        "Exit 0 all PASS, 1 a FAIL, 2 error.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $DATABASE_URL, else the engine config's database_url)",
    )
    parser.add_argument("--day", default=None, help="YYYY-MM-DD in IST (default: today in IST)")
    parser.add_argument("--flatten-p95-ms", type=float, default=2000.0)
    parser.add_argument("--tighten-at", type=_clock_time, default=time(15, 20))
    parser.add_argument("--hard-flat-at", type=_clock_time, default=time(15, 25))
    parser.add_argument("--eod-tolerance-s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print the items as JSON")
    arguments = parser.parse_args(argv)
    day = arguments.day or today_ist()
    try:
        day_bounds_ns(day)
    except ValueError:
        print(f"burnin: --day must be YYYY-MM-DD, was {day!r}", file=sys.stderr)
        return EXIT_ERROR
    url = (
        arguments.database_url
        or os.environ.get("DATABASE_URL")
        or config_database_url()
        or DEFAULT_DATABASE_URL
    )
    label = redacted(url)
    try:
        database = open_database(url)
    except FileNotFoundError as error:
        print(f"burnin: {error} (url={label})", file=sys.stderr)
        return EXIT_ERROR
    try:
        report = build_report(database, day, database_label=label)
    except SQLAlchemyError as error:
        print(f"burnin: cannot read the database {label}: {error}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        database.dispose()
    results = score(
        report,
        flatten_p95_ms=arguments.flatten_p95_ms,
        tighten_at=arguments.tighten_at,
        hard_flat_at=arguments.hard_flat_at,
        eod_tolerance_s=arguments.eod_tolerance_s,
    )
    passed = all(result.passed for result in results)
    if arguments.json:
        print(msgspec.json.encode({"day": day, "passed": passed, "items": results}).decode())
    else:
        print(f"Vigil burn-in {day} ({label})")
        for result in results:
            verdict = "PASS" if result.passed else "FAIL"
            print(f"  {verdict}  {result.item:<30} {result.detail}")
        print(f"BURN-IN: {'PASS' if passed else 'FAIL'}")
    return EXIT_PASS if passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
