"""Post-close and the burn-in scorer on a real trading day: 20,000 seeded quotes replayed through
the engine (``tools.replay.replay_file``) into a SQLite file, then ``python -m tools.post_close``
and ``python -m tools.burnin`` as an operator runs them.

The report's figures are held against a direct SQL reading of the same database (sqlite3,
no SQLAlchemy, no code of ours). The burn-in's EOD rows are written through the engine's own
``EventRepository`` (as the Scheduler will write them), the FLATTEN row with the order actor's
``FlattenCompleted`` payload.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from adapters.storage import Database, UnitOfWork, create_database_engine
from domain.calendar import EXCHANGE_TZ
from domain.clock import NANOS_PER_SECOND
from domain.messages.control import AuditEntry
from domain.messages.orders import FlattenCompleted
from tests.adapter.test_reconcile import plant_duplicate_client_order_id
from tools import quotes
from tools.post_close import build_report, render_markdown, tripwires_fired
from tools.replay import replay_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-01-05"  # tools.quotes starts its rows at 09:15 IST on this Monday
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def ist_ns(hour: int, minute: int, second: int = 0, day: str = DAY) -> int:
    moment = datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}:{second:02d}")
    return int(moment.replace(tzinfo=EXCHANGE_TZ).timestamp()) * NANOS_PER_SECOND


@pytest.fixture(scope="module")
def replayed_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite file of one replayed morning (about 45 brackets, entries through exits)."""
    folder = tmp_path_factory.mktemp("post-close-day")
    quotes_file = folder / "quotes.csv"
    assert quotes.main(["--rows", "20000", "--out", str(quotes_file)]) == 0
    database_file = folder / "day.db"
    result = replay_file(quotes_file, database_url=f"sqlite:///{database_file}")
    assert result.orders > 10 and result.fills > 10, result
    return database_file


@pytest.fixture
def day_copy(replayed_day: Path, tmp_path: Path) -> Path:
    """A private copy of the replayed day that a test may add rows to."""
    copy = tmp_path / "day.db"
    shutil.copy(replayed_day, copy)
    return copy


def tool_environment() -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "VIGIL_CONFIG")
    }
    environment["PYTHONPATH"] = str(REPO_ROOT)
    return environment


def run_tool(module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=tool_environment(),
        check=False,
    )


def direct_sql_figures(database_file: Path, day: str = DAY) -> dict[str, object]:
    """What the database says about ``day``, read with plain SQL."""
    start = ist_ns(0, 0, day=day)
    end = start + 24 * 3600 * NANOS_PER_SECOND
    with sqlite3.connect(database_file) as connection:
        order_count = connection.execute(
            "SELECT COUNT(*) FROM orders WHERE created_ns >= ? AND created_ns < ?", (start, end)
        ).fetchone()[0]
        by_leg_status = {
            (leg, status): count
            for leg, status, count in connection.execute(
                "SELECT leg, status, COUNT(*) FROM orders WHERE created_ns >= ? AND created_ns < ?"
                " GROUP BY leg, status",
                (start, end),
            )
        }
        entries = connection.execute(
            "SELECT COUNT(DISTINCT plan_client_id) FROM orders WHERE leg = 'ENTRY'"
            " AND created_ns >= ? AND created_ns < ?",
            (start, end),
        ).fetchone()[0]
        fill_rows = connection.execute(
            "SELECT plan_client_id, side, quantity, price FROM fills"
            " WHERE ts_event_ns >= ? AND ts_event_ns < ?",
            (start, end),
        ).fetchall()
        position_pnl = [
            Decimal(text)
            for (text,) in connection.execute("SELECT realized_pnl FROM positions").fetchall()
        ]
        # The day figures the engine stored (migration 0005), per kind.
        day_figures = {
            kind: total
            for kind, total in connection.execute(
                "SELECT kind, SUM(count) FROM day_figure_counts WHERE trading_day = ?"
                " GROUP BY kind",
                (day,),
            )
        }
        max_heat = connection.execute(
            "SELECT max_heat FROM day_heat WHERE trading_day = ?", (day,)
        ).fetchone()
        config_shas = [
            sha
            for (sha,) in connection.execute(
                "SELECT DISTINCT config_sha FROM engine_starts WHERE ts_ns >= ? AND ts_ns < ?",
                (start, end),
            )
        ]
    # A round trip's realized PnL is its cash flow: what the sells took in minus what the buys
    # paid (prices are exact decimal text on SQLite).
    net: dict[str, int] = defaultdict(int)
    cash: dict[str, Decimal] = defaultdict(Decimal)
    for plan, side, quantity, price in fill_rows:
        sign = 1 if side == "BUY" else -1
        net[plan] += sign * quantity
        cash[plan] -= sign * quantity * Decimal(price)
    closed = {plan: cash[plan] for plan in net if net[plan] == 0}
    return {
        "orders": order_count,
        "by_leg_status": by_leg_status,
        "approved": entries,
        "fills": len(fill_rows),
        "fill_quantity": sum(row[2] for row in fill_rows),
        "closed_pnl": sum(closed.values(), Decimal(0)),
        "closed_trades": len(closed),
        "wins": sum(1 for pnl in closed.values() if pnl > 0),
        "positions_realized": sum(position_pnl, Decimal(0)),
        "day_figures": day_figures,
        "max_heat": None if max_heat is None else Decimal(max_heat[0]),
        "config_shas": config_shas,
    }


def add_events(database_file: Path, *rows: tuple[str, int, dict[str, object]]) -> None:
    """Append rows to ``events`` through the engine's repository."""
    database = Database(create_database_engine(f"sqlite:///{database_file}"))
    try:
        with UnitOfWork(database) as uow:
            for event, ts_ns, payload in rows:
                uow.events.append(event, payload, ts_ns=ts_ns, instance_id="vigil-test")
    finally:
        database.dispose()


def flatten_row(
    ts_ns: int, duration_ms: float, reason: str = "operator"
) -> tuple[str, int, dict[str, object]]:
    completed = FlattenCompleted(
        reason=reason,
        positions_closed=1,
        orders_cancelled=2,
        remaining_positions=0,
        remaining_working_orders=0,
        duration_ms=duration_ms,
        ts_event=ts_ns,
    )
    return "FLATTEN", ts_ns, msgspec.to_builtins(completed)


def a_burn_in_day(database_file: Path, *, hard_flat: bool = True) -> None:
    rows = [
        ("EOD_TIGHTEN", ist_ns(15, 20, 1), {"stops_tightened": 1}),
        flatten_row(ist_ns(11, 0), 180.0),
    ]
    if hard_flat:
        # The scheduler's hard flat as the engine records it: the order actor's FLATTEN with
        # reason eod_hard_flat (and, as an older name, an EOD_HARD_FLAT row).
        rows.append(flatten_row(ist_ns(15, 25, 2), 420.0, reason="eod_hard_flat"))
        rows.append(("EOD_HARD_FLAT", ist_ns(15, 25, 1), {"positions": 1}))
    else:
        rows.append(flatten_row(ist_ns(15, 25, 2), 420.0))  # an operator's, not the EOD's
    add_events(database_file, *rows)


# ---------------------------------------------------------------------------------------------
# POST-CLOSE
# ---------------------------------------------------------------------------------------------


def test_the_report_figures_equal_a_direct_sql_reading_of_the_same_database(
    replayed_day: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    completed = run_tool(
        "tools.post_close",
        "--database-url",
        f"sqlite:///{replayed_day}",
        "--day",
        DAY,
        "--out",
        str(out),
        "--config",
        str(REPO_ROOT / "configs" / "paper.yaml"),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    folder = out / DAY
    report = json.loads((folder / "report.json").read_text())
    truth = direct_sql_figures(replayed_day)

    assert report["orders"]["total"] == truth["orders"]
    flattened = {
        (leg, status): count
        for leg, counts in report["orders"]["by_leg"].items()
        for status, count in counts.items()
    }
    assert flattened == truth["by_leg_status"]
    assert report["plans"]["approved"] == truth["approved"]
    assert report["fills"]["total"] == truth["fills"]
    assert report["fills"]["quantity"] == truth["fill_quantity"]
    closed = [trade for trade in report["trades"] if trade["status"] == "CLOSED"]
    assert len(closed) == truth["closed_trades"]
    assert sum(Decimal(trade["pnl"]) for trade in closed) == truth["closed_pnl"]
    assert report["pnl"]["wins"] == truth["wins"]
    assert report["pnl"]["win_rate"] == round(truth["wins"] / truth["closed_trades"], 4)
    assert Decimal(report["pnl"]["realized"]) == truth["positions_realized"]
    assert report["consistency"]["agrees"] is True
    assert report["reconcile"]["clean"] is True
    assert len(report["git_sha"]) == 40 and len(report["config_sha"]) == 64
    # the figures the engine counted as it decided (day_figure_counts, day_heat, engine_starts)
    figures = truth["day_figures"]
    assert report["signals"] == figures["signals"] > 0
    assert report["signals"] == report["plans"]["approved"] + report["plans"]["blocked"]
    assert report["plans"]["approved"] == figures["approved"] == truth["approved"]
    assert report["plans"]["blocked"] == figures.get("blocked", 0)
    assert Decimal(report["max_heat_rupees"]) == truth["max_heat"] > 0
    assert report["latency"]["order_ack_ms"]["count"] == figures["ack_latency_ms"] > 0
    assert report["config_shas"] == truth["config_shas"] == [report["config_sha"]]
    assert report["not_stored"] == []

    assert (folder / "equity.png").read_bytes().startswith(PNG_SIGNATURE)
    markdown = (folder / "report.md").read_text()
    # prices and PnL in plain notation (an average exit of 51940 once showed as 5.194E+4)
    assert "E+" not in markdown and "E+" not in (folder / "report.json").read_text()
    assert f"| orders | {truth['orders']} |" in markdown
    assert f"| realized PnL | {report['pnl']['realized']} |" in markdown
    assert f"orders={truth['orders']} fills={truth['fills']}" in completed.stdout


def test_a_day_is_the_ist_calendar_day(replayed_day: Path, tmp_path: Path) -> None:
    # The session opens 09:15 IST = 03:45 UTC on the 5th: the UTC date is the same, but the day
    # before in IST holds nothing, and the report of the 6th is empty too.
    for day in ("2026-01-04", "2026-01-06"):
        completed = run_tool(
            "tools.post_close",
            "--database-url",
            f"sqlite:///{replayed_day}",
            "--day",
            day,
            "--out",
            str(tmp_path),
        )
        assert completed.returncode == 0, completed.stderr
        report = json.loads((tmp_path / day / "report.json").read_text())
        assert report["orders"]["total"] == 0 and report["fills"]["total"] == 0
        assert (tmp_path / day / "equity.png").read_bytes().startswith(PNG_SIGNATURE)


def test_post_close_refuses_a_missing_database_and_a_bad_day(tmp_path: Path) -> None:
    out = str(tmp_path / "reports")
    missing = run_tool(
        "tools.post_close", "--database-url", f"sqlite:///{tmp_path / 'no.db'}", "--out", out
    )
    assert missing.returncode == 2
    assert "no SQLite database" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "no.db").exists(), "a report tool must not create a database"
    bad_day = run_tool("tools.post_close", "--day", "05-01-2026", "--out", out)
    assert bad_day.returncode == 2 and "YYYY-MM-DD" in bad_day.stderr
    assert not (tmp_path / "reports").exists()
    burnin_missing = run_tool("tools.burnin", "--database-url", f"sqlite:///{tmp_path / 'no.db'}")
    assert burnin_missing.returncode == 2 and "Traceback" not in burnin_missing.stderr


# ---------------------------------------------------------------------------------------------
# BURN-IN
# ---------------------------------------------------------------------------------------------


def burnin(database_file: Path) -> tuple[int, dict[str, bool], str]:
    completed = run_tool(
        "tools.burnin", "--database-url", f"sqlite:///{database_file}", "--day", DAY, "--json"
    )
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    document = json.loads(completed.stdout)
    return (
        completed.returncode,
        {item["item"]: item["passed"] for item in document["items"]},
        completed.stdout,
    )


def test_burnin_passes_a_day_with_the_eod_tighten_and_hard_flat(day_copy: Path) -> None:
    a_burn_in_day(day_copy)
    code, items, output = burnin(day_copy)
    assert items == {
        "FLATTEN_P95": True,
        "NO_DUPLICATE_CLIENT_ORDER_ID": True,
        "NO_ORPHAN_SIBLINGS": True,
        "EOD_TIGHTEN": True,
        "EOD_HARD_FLAT": True,
        "RECONCILE_CLEAN": True,
    }, output
    assert code == 0
    text = run_tool("tools.burnin", "--database-url", f"sqlite:///{day_copy}", "--day", DAY)
    assert text.returncode == 0 and "BURN-IN: PASS" in text.stdout


def test_burnin_fails_a_day_whose_hard_flat_was_skipped(day_copy: Path) -> None:
    a_burn_in_day(day_copy, hard_flat=False)
    code, items, output = burnin(day_copy)
    assert code == 1
    assert [name for name, passed in items.items() if not passed] == ["EOD_HARD_FLAT"], output


def test_burnin_fails_an_eod_at_the_wrong_time(day_copy: Path) -> None:
    a_burn_in_day(day_copy, hard_flat=False)
    add_events(day_copy, ("EOD_HARD_FLAT", ist_ns(15, 29), {"positions": 1}))
    code, items, output = burnin(day_copy)
    assert code == 1 and items["EOD_HARD_FLAT"] is False
    assert "only outside 15:25 IST + 60s: 15:29:00.000" in output


def test_burnin_fails_a_slow_flatten(day_copy: Path) -> None:
    a_burn_in_day(day_copy)
    add_events(day_copy, flatten_row(ist_ns(12, 0), 2500.0))
    # three flattens: the nearest-rank p95 is the slowest
    code, items, output = burnin(day_copy)
    assert code == 1 and items["FLATTEN_P95"] is False
    assert "p95=2500.0ms" in output


def test_burnin_fails_on_a_duplicate_client_order_id(day_copy: Path) -> None:
    a_burn_in_day(day_copy)
    plant_duplicate_client_order_id(f"sqlite:///{day_copy}", "PDUPE")
    code, items, output = burnin(day_copy)
    assert code == 1
    assert items["NO_DUPLICATE_CLIENT_ORDER_ID"] is False, output
    assert items["RECONCILE_CLEAN"] is False
    assert "PDUPE x2" in output


def test_the_report_lists_tripwires_kill_switch_and_eod_rows_of_the_day(day_copy: Path) -> None:
    database = Database(create_database_engine(f"sqlite:///{day_copy}"))
    try:
        with UnitOfWork(database) as uow:
            for ts_ns, action, outcome in (
                (ist_ns(10, 0), "TRIPWIRE", "FIRED"),
                (ist_ns(10, 5), "TRIPWIRE", "CLEARED"),
                (ist_ns(11, 0), "TRIPWIRE", "FIRED"),
                (ist_ns(11, 1), "KILL_SWITCH", "TRIPPED"),
                (ist_ns(0, 0, day="2026-01-06"), "TRIPWIRE", "FIRED"),  # the next IST day
            ):
                uow.audit.append(
                    AuditEntry(
                        ts_ns=ts_ns, who="watchdog", address="in-process", action=action,
                        outcome=outcome, detail="market_quality 4 in 60s",
                    ),
                    instance_id="vigil-test",
                )  # fmt: skip
            uow.events.append(
                "KILL_SWITCH",
                {"reason": "DAILY_LOSS_LIMIT", "active": True},
                ts_ns=ist_ns(11, 1),
                instance_id="vigil-test",
            )
        report = build_report(database, DAY)
    finally:
        database.dispose()
    assert tripwires_fired(report) == 2
    assert [item.outcome for item in report.tripwires] == ["FIRED", "CLEARED", "FIRED"]
    assert [(item.source, item.name) for item in report.kill_switch] == [
        ("events", "KILL_SWITCH"),
        ("audit_log", "KILL_SWITCH"),
    ]
    assert "| tripwires fired | 2 |" in render_markdown(report)
