"""Post-close: the daily report of one IST trading day, as Markdown, JSON and a PNG chart.

``python -m tools.post_close [--database-url URL] [--day YYYY-MM-DD] [--out reports/]
[--config PATH] [--store]`` (``make post-close``) reads the engine's database and writes
``<out>/<day>/report.md``, ``report.json`` and ``equity.png``. It only reads, unless ``--store``
also puts the JSON into the ``daily_reports`` table (``DailyReportRepository``).

The day is the exchange-local date (Asia/Kolkata, ``domain.calendar``): every row whose time
falls in ``[00:00, 24:00)`` IST of ``--day`` (default: today in IST). What comes from where:

- **orders**: ``orders`` rows created that day, by leg and by status; **approved plans** are the
  distinct plans with an ENTRY order (every plan the risk actor approves becomes one).
- **fills**: ``fills`` rows whose ``ts_event_ns`` falls on the day.
- **trades**: one per plan with a fill that day, built from its fills in time order with the
  engine's own position arithmetic (``domain.positions.apply_fill``): quantity, average entry
  and exit, realized PnL. A plan still holding quantity is OPEN. ``consistency`` compares the
  fills' realized PnL with the ``positions`` table's for the same plans.
- **win rate**: closed trades with PnL > 0 over all closed trades.
- **flatten durations** (p50/p95/max): ``FLATTEN`` rows of ``events`` (the order actor's
  ``FlattenCompleted``, ``duration_ms``).
- **tripwires**: ``TRIPWIRE`` rows of ``events`` and ``audit_log`` (action ``TRIPWIRE``); the
  count of firings is the audit rows with outcome ``FIRED`` (``tripwires_fired``).
- **kill-switch events**: ``KILL_SWITCH`` rows of ``events``, ``KILL_SWITCH*`` rows of
  ``audit_log``. **EOD**: ``EOD_TIGHTEN`` / ``EOD_HARD_FLAT`` rows of either table.
- **reconcile**: ``tools.reconcile.reconcile`` over the whole database (duplicates, orphans).
- **config SHA**: of the config ``--config`` names (default: what the engine would load,
  ``VIGIL_CONFIG`` or configs/paper.yaml) as it is now; the database does not record the SHA
  the engine ran with. **git SHA**: ``git rev-parse HEAD`` of this checkout.

Not stored anywhere, so reported as ``not stored`` (never estimated): signals (strategy
evaluations that produced a plan), blocked plans by reason (only the live counter
``trader_risk_blocks_total``), max portfolio heat (only the live gauge
``trader_portfolio_heat_rupees``), order-ack latency percentiles (only the live histogram
``trader_order_latency_ms``).

Exit codes: 0 written, 2 the database cannot be read or the day is malformed.
``build_report(database, day)`` returns the same ``DailyReport`` for tests and tools.burnin.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from adapters.storage.database import Database, create_database_engine
from adapters.storage.repositories import UnitOfWork
from adapters.storage.tables import audit_log, events, fills, orders, positions
from domain.calendar import EXCHANGE_TZ, start_of_trading_day_ns
from domain.clock import NANOS_PER_SECOND
from domain.enums import LegKind, Side
from domain.positions import apply_fill, flat
from tools.reconcile import DEFAULT_DATABASE_URL, ReconcileReport, reconcile

__all__ = [
    "NOT_STORED",
    "DailyReport",
    "StoredEvent",
    "Trade",
    "build_report",
    "config_database_url",
    "day_bounds_ns",
    "main",
    "percentile",
    "render_markdown",
    "tripwires_fired",
    "write_chart",
    "write_report",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_STORED = "not stored"
"""The value of a figure the database does not hold."""

EXIT_WRITTEN = 0
EXIT_ERROR = 2

_TRIPWIRE = "TRIPWIRE"
_KILL_SWITCH = "KILL_SWITCH"
_EOD_ACTIONS = ("EOD_TIGHTEN", "EOD_HARD_FLAT")
_FLATTEN = "FLATTEN"


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One plan's round trip on the day, from its fills. ``pnl`` is realized PnL (rupees)."""

    plan_client_id: str
    strategy: str
    instrument: str
    side: str
    quantity: int
    entry_price: Decimal
    exit_price: Decimal | None
    opened_ns: int
    closed_ns: int | None
    status: str  # OPEN or CLOSED
    pnl: Decimal
    fills: int


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``events`` (source ``events``) or ``audit_log`` (source ``audit_log``)."""

    source: str
    ts_ns: int
    time_ist: str
    name: str
    detail: str
    outcome: str = ""  # audit_log rows: FIRED, CLEARED, ACCEPTED, TRIPPED...


def _as_eod(item: StoredEvent) -> StoredEvent | None:
    """The row as an end-of-day action, or None. Besides rows named ``EOD_TIGHTEN`` /
    ``EOD_HARD_FLAT``, what the scheduler makes the engine record counts: the order actor's
    ``TIGHTEN_STOPS`` event, and its ``FLATTEN`` event whose reason is ``eod_hard_flat`` (the
    flatten that actually ran, not only the decision)."""
    if item.name in _EOD_ACTIONS:
        return item
    if item.name == "TIGHTEN_STOPS":
        return msgspec.structs.replace(item, name="EOD_TIGHTEN")
    if item.source == "events" and item.name == _FLATTEN and "eod_hard_flat" in item.detail:
        return msgspec.structs.replace(item, name="EOD_HARD_FLAT")
    return None


class DailyReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything post-close says about one day; see the module docstring for the sources."""

    trading_day: str
    timezone: str
    window_start_ns: int
    window_end_ns: int
    database: str
    generated_at: str
    git_sha: str
    config_sha: str
    config_source: str
    signals: str
    plans: dict[str, Any]
    orders: dict[str, Any]
    fills: dict[str, Any]
    trades: list[Trade]
    pnl: dict[str, Any]
    max_heat_rupees: str
    latency: dict[str, Any]
    flattens: list[StoredEvent]
    tripwires: list[StoredEvent]
    kill_switch: list[StoredEvent]
    eod: list[StoredEvent]
    reconcile: ReconcileReport
    consistency: dict[str, Any]
    not_stored: list[str]


# ---------------------------------------------------------------------------------------------
# BUILDING THE REPORT
# ---------------------------------------------------------------------------------------------


def day_bounds_ns(day: str) -> tuple[int, int]:
    """``[start, end)`` of the IST calendar day ``day`` (``YYYY-MM-DD``) in epoch ns.

    Raises:
        ValueError: ``day`` is not a ``YYYY-MM-DD`` date.
    """
    parsed = date.fromisoformat(day)
    noon = datetime(parsed.year, parsed.month, parsed.day, 12, tzinfo=EXCHANGE_TZ)
    noon_ns = int(noon.timestamp()) * NANOS_PER_SECOND
    start = start_of_trading_day_ns(noon_ns)
    # The next day's midnight, through the calendar (a zone with DST would not be 24 h).
    end = start_of_trading_day_ns(noon_ns + 24 * 3600 * NANOS_PER_SECOND)
    return start, end


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in (0, 1]) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def build_report(
    database: Database,
    day: str,
    *,
    database_label: str = "",
    git_sha: str = "unknown",
    config_sha: str = "unknown",
    config_source: str = "",
    now: datetime | None = None,
) -> DailyReport:
    """Read one IST day from ``database`` (one read transaction, then the reconcile).

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read (e.g. tables missing).
    """
    start, end = day_bounds_ns(day)
    with database.transaction() as connection:
        order_rows = connection.execute(
            select(orders)
            .where(orders.c.created_ns >= start, orders.c.created_ns < end)
            .order_by(orders.c.created_ns, orders.c.id)
        ).all()
        fill_rows = connection.execute(
            select(fills)
            .where(fills.c.ts_event_ns >= start, fills.c.ts_event_ns < end)
            .order_by(fills.c.ts_event_ns, fills.c.id)
        ).all()
        plan_ids = sorted({row.plan_client_id for row in fill_rows})
        position_rows = (
            connection.execute(select(positions).where(positions.c.position_id.in_(plan_ids))).all()
            if plan_ids
            else []
        )
        strategy_of = {row.plan_client_id: row.strategy for row in order_rows}
        if plan_ids:
            strategy_of.update(
                {
                    row.plan_client_id: row.strategy
                    for row in connection.execute(
                        select(orders.c.plan_client_id, orders.c.strategy).where(
                            orders.c.plan_client_id.in_(plan_ids)
                        )
                    )
                }
            )
        event_rows = connection.execute(
            select(events)
            .where(events.c.ts_ns >= start, events.c.ts_ns < end)
            .order_by(events.c.ts_ns, events.c.id)
        ).all()
        audit_rows = connection.execute(
            select(audit_log)
            .where(audit_log.c.ts_ns >= start, audit_log.c.ts_ns < end)
            .order_by(audit_log.c.ts_ns, audit_log.c.id)
        ).all()
    reconciled = reconcile(database)

    by_leg: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_status: dict[str, int] = defaultdict(int)
    for row in order_rows:
        by_leg[row.leg][row.status] += 1
        by_status[row.status] += 1
    approved = sorted({row.plan_client_id for row in order_rows if row.leg == LegKind.ENTRY.value})

    trades = _trades(fill_rows, strategy_of)
    closed = [trade for trade in trades if trade.status == "CLOSED"]
    wins = [trade for trade in closed if trade.pnl > 0]
    realized = sum((trade.pnl for trade in trades), Decimal(0))
    stored_realized = sum((row.realized_pnl for row in position_rows), Decimal(0))

    flatten_events = [row for row in event_rows if row.event == _FLATTEN]
    durations = [
        float(duration)
        for duration in (
            msgspec.json.decode(row.payload).get("duration_ms") for row in flatten_events
        )
        if isinstance(duration, (int, float))
    ]
    stored = [_from_event(row) for row in event_rows] + [_from_audit(row) for row in audit_rows]
    stored.sort(key=lambda item: item.ts_ns)

    not_stored = [
        "signals: strategy evaluations that produced a plan are not stored",
        "blocked plans by reason: only the live counter trader_risk_blocks_total holds them",
        "max heat: only the live gauge trader_portfolio_heat_rupees holds portfolio heat",
        "order-ack latency percentiles: only the live histogram trader_order_latency_ms",
    ]
    return DailyReport(
        trading_day=day,
        timezone=str(EXCHANGE_TZ),
        window_start_ns=start,
        window_end_ns=end,
        database=database_label,
        generated_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        git_sha=git_sha,
        config_sha=config_sha,
        config_source=config_source,
        signals=NOT_STORED,
        plans={"approved": len(approved), "blocked_by_reason": NOT_STORED},
        orders={
            "total": len(order_rows),
            "by_status": dict(sorted(by_status.items())),
            "by_leg": {leg: dict(sorted(counts.items())) for leg, counts in sorted(by_leg.items())},
        },
        fills={
            "total": len(fill_rows),
            "quantity": sum(row.quantity for row in fill_rows),
            "plans": len(plan_ids),
        },
        trades=trades,
        pnl={
            "realized": realized,
            "closed_trades": len(closed),
            "open_trades": len(trades) - len(closed),
            "wins": len(wins),
            "losses": sum(1 for trade in closed if trade.pnl < 0),
            "win_rate": round(len(wins) / len(closed), 4) if closed else None,
            "best": max((trade.pnl for trade in closed), default=None),
            "worst": min((trade.pnl for trade in closed), default=None),
        },
        max_heat_rupees=NOT_STORED,
        latency={
            "flatten_ms": {
                "count": len(durations),
                "p50": percentile(durations, 0.50),
                "p95": percentile(durations, 0.95),
                "max": max(durations, default=None),
            },
            "order_ack_ms": NOT_STORED,
        },
        flattens=[item for item in stored if item.source == "events" and item.name == _FLATTEN],
        tripwires=[item for item in stored if item.name == _TRIPWIRE],
        kill_switch=[item for item in stored if item.name.startswith(_KILL_SWITCH)],
        eod=[eod for item in stored if (eod := _as_eod(item)) is not None],
        reconcile=reconciled,
        consistency={
            "realized_from_fills": realized,
            "realized_in_positions": stored_realized,
            "positions_found": len(position_rows),
            "agrees": realized == stored_realized and len(position_rows) == len(plan_ids),
        },
        not_stored=not_stored,
    )


def _trades(fill_rows: Iterable[Any], strategy_of: dict[str, str]) -> list[Trade]:
    by_plan: dict[str, list[Any]] = defaultdict(list)
    for row in fill_rows:
        by_plan[row.plan_client_id].append(row)
    trades = []
    for plan_id, rows in by_plan.items():
        first = rows[0]
        position = flat(first.instrument)
        entry_side = Side(first.side)
        entry_quantity = 0
        entry_value = Decimal(0)
        exit_quantity = 0
        exit_value = Decimal(0)
        for row in rows:
            position = apply_fill(position, Side(row.side), row.quantity, row.price)
            if Side(row.side) is entry_side:
                entry_quantity += row.quantity
                entry_value += row.price * row.quantity
            else:
                exit_quantity += row.quantity
                exit_value += row.price * row.quantity
        is_closed = position.quantity == 0
        trades.append(
            Trade(
                plan_client_id=plan_id,
                strategy=strategy_of.get(plan_id, ""),
                instrument=first.instrument,
                side=entry_side.value,
                quantity=entry_quantity,
                entry_price=_average(entry_value, entry_quantity),
                exit_price=_average(exit_value, exit_quantity) if exit_quantity else None,
                opened_ns=first.ts_event_ns,
                closed_ns=rows[-1].ts_event_ns if is_closed else None,
                status="CLOSED" if is_closed else "OPEN",
                pnl=position.realized_pnl,
                fills=len(rows),
            )
        )
    trades.sort(key=lambda trade: (trade.opened_ns, trade.plan_client_id))
    return trades


def _average(value: Decimal, quantity: int) -> Decimal:
    if not quantity:
        return Decimal(0)
    # normalize() alone writes 51940 as 5.194E+4; format "f" keeps plain notation.
    return Decimal(format((value / quantity).quantize(Decimal("0.0001")).normalize(), "f"))


def _ist(ts_ns: int) -> str:
    moment = datetime.fromtimestamp(ts_ns / NANOS_PER_SECOND, tz=UTC).astimezone(EXCHANGE_TZ)
    return moment.isoformat(timespec="milliseconds")


def _from_event(row: Any) -> StoredEvent:
    return StoredEvent(
        source="events", ts_ns=row.ts_ns, time_ist=_ist(row.ts_ns), name=row.event,
        detail=row.payload,
    )  # fmt: skip


def _from_audit(row: Any) -> StoredEvent:
    detail = f"{row.outcome} by {row.who}: {row.detail}".strip()
    return StoredEvent(
        source="audit_log", ts_ns=row.ts_ns, time_ist=_ist(row.ts_ns), name=row.action,
        detail=detail, outcome=row.outcome,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# RENDERING
# ---------------------------------------------------------------------------------------------


def _figure(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def tripwires_fired(report: DailyReport) -> int:
    """Firings: the watchdog's ``audit_log`` TRIPWIRE rows with outcome FIRED (a clearing is
    not a firing); without any audit row, the ``events`` table's TRIPWIRE rows."""
    audited = [item for item in report.tripwires if item.source == "audit_log"]
    if audited:
        return sum(1 for item in audited if item.outcome == "FIRED")
    return len(report.tripwires)


def render_markdown(report: DailyReport) -> str:
    """The report an operator reads, in Markdown."""
    pnl = report.pnl
    flatten = report.latency["flatten_ms"]
    win_rate = "n/a" if pnl["win_rate"] is None else f"{pnl['win_rate'] * 100:.1f} %"
    lines = [
        f"# Vigil daily report: {report.trading_day} ({report.timezone})",
        "",
        f"- database: `{report.database}`",
        f"- generated: {report.generated_at}",
        f"- git SHA: `{report.git_sha}`",
        f"- config SHA: `{report.config_sha}` ({report.config_source})",
        "",
        "![equity](equity.png)",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
        f"| signals | {report.signals} |",
        f"| approved plans | {report.plans['approved']} |",
        f"| blocked plans by reason | {report.plans['blocked_by_reason']} |",
        f"| orders | {report.orders['total']} |",
        f"| fills | {report.fills['total']} (quantity {report.fills['quantity']}) |",
        f"| trades closed / open | {pnl['closed_trades']} / {pnl['open_trades']} |",
        f"| realized PnL | {pnl['realized']} |",
        f"| wins / losses | {pnl['wins']} / {pnl['losses']} |",
        f"| win rate | {win_rate} |",
        f"| best / worst trade | {_figure(pnl['best'])} / {_figure(pnl['worst'])} |",
        f"| max heat (rupees) | {report.max_heat_rupees} |",
        f"| flatten ms p50 / p95 / max (n={flatten['count']}) | {_figure(flatten['p50'])} / "
        f"{_figure(flatten['p95'])} / {_figure(flatten['max'])} |",
        f"| order-ack latency | {report.latency['order_ack_ms']} |",
        f"| tripwires fired | {tripwires_fired(report)} |",
        f"| kill-switch events | {len(report.kill_switch)} |",
        f"| reconcile | {'CLEAN' if report.reconcile.clean else 'FINDINGS'} |",
        f"| fills vs positions PnL | "
        f"{'agree' if report.consistency['agrees'] else 'DISAGREE'} "
        f"({report.consistency['realized_from_fills']} vs "
        f"{report.consistency['realized_in_positions']}) |",
        "",
        "## Orders by leg and status",
        "",
        "| leg | " + " | ".join(sorted(report.orders["by_status"])) + " |",
        "|---|" + "---|" * len(report.orders["by_status"]),
    ]
    for leg, counts in report.orders["by_leg"].items():
        cells = [str(counts.get(status, 0)) for status in sorted(report.orders["by_status"])]
        lines.append(f"| {leg} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Trades",
        "",
        "| opened (IST) | plan | strategy | instrument | side | qty | entry | exit | PnL "
        "| status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_ist(trade.opened_ns)[11:23]} | `{trade.plan_client_id}` | {trade.strategy} | "
        f"{trade.instrument} | {trade.side} | {trade.quantity} | {trade.entry_price} | "
        f"{_figure(trade.exit_price)} | {trade.pnl:.2f} | {trade.status} |"
        for trade in report.trades
    ]
    for title, items in (
        ("Tripwires", report.tripwires),
        ("Kill switch", report.kill_switch),
        ("End of day (EOD_TIGHTEN, EOD_HARD_FLAT)", report.eod),
        ("Flattens", report.flattens),
    ):
        lines += ["", f"## {title}", ""]
        lines += [f"- {item.time_ist} {item.name} ({item.source}): {item.detail}" for item in items]
        if not items:
            lines.append("- none")
    reconciled = report.reconcile
    lines += [
        "",
        "## Reconcile",
        "",
        f"- duplicate client_order_id: {len(reconciled.duplicates)}",
        *[f"  - `{item.client_order_id}` x{item.copies}" for item in reconciled.duplicates],
        f"- orphan OCO siblings: {len(reconciled.orphans)}",
        *[
            f"  - `{item.client_order_id}` {item.leg} {item.status} {item.reason}"
            for item in reconciled.orphans
        ],
        f"- result: {'CLEAN' if reconciled.clean else 'FINDINGS'}",
        "",
        "## Not stored",
        "",
        *[f"- {item}" for item in report.not_stored],
        "",
    ]
    return "\n".join(lines)


def write_chart(report: DailyReport, path: Path) -> None:
    """The equity curve (cumulative realized PnL at each trade's close, IST) over per-trade
    PnL bars, as a PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib import pyplot

    closed = sorted(
        (trade for trade in report.trades if trade.closed_ns is not None),
        key=lambda trade: trade.closed_ns or 0,
    )
    times = [
        datetime.fromtimestamp((trade.closed_ns or 0) / NANOS_PER_SECOND, tz=EXCHANGE_TZ)
        for trade in closed
    ]
    equity: list[float] = []
    running = Decimal(0)
    for trade in closed:
        running += trade.pnl
        equity.append(float(running))
    figure, (top, bottom) = pyplot.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": (2, 1)}
    )
    try:
        figure.suptitle(
            f"Vigil {report.trading_day}: realized PnL {report.pnl['realized']}, "
            f"{report.pnl['closed_trades']} closed trades"
        )
        if closed:
            top.step(times, equity, where="post", color="tab:blue")
            top.fill_between(times, equity, step="post", alpha=0.15, color="tab:blue")
            colours = ["tab:green" if trade.pnl > 0 else "tab:red" for trade in closed]
            # Bars a little narrower than the mean gap between closes (matplotlib dates: days).
            span_days = max((times[-1] - times[0]).total_seconds(), 60.0) / 86400
            width = 0.6 * span_days / len(closed)
            bottom.bar(times, [float(trade.pnl) for trade in closed], width=width, color=colours)
        else:
            top.text(0.5, 0.5, "no closed trades", ha="center", va="center",
                     transform=top.transAxes)  # fmt: skip
        top.axhline(0, color="grey", linewidth=0.8)
        bottom.axhline(0, color="grey", linewidth=0.8)
        top.set_ylabel("equity (rupees)")
        bottom.set_ylabel("trade PnL")
        bottom.set_xlabel("close time (IST)")
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=EXCHANGE_TZ))
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
    finally:
        pyplot.close(figure)


def write_report(report: DailyReport, out_dir: Path) -> Path:
    """Write ``report.md``, ``report.json`` and ``equity.png`` under ``out_dir/<day>/``;
    returns that folder."""
    folder = out_dir / report.trading_day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    write_chart(report, folder / "equity.png")
    return folder


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def git_sha(root: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` of ``root``, or ``unknown`` outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _config(path: str | None) -> tuple[str, str, str | None]:
    """(config SHA, where it came from, the config's database URL) or an explanation."""
    from launcher.config import ConfigError, config_sha, load_config

    try:
        config = load_config(path)
    except ConfigError as error:
        first_line = str(error).splitlines()[0] if str(error) else "ConfigError"
        return "unknown", f"config did not load: {first_line}", None
    source = path or os.environ.get("VIGIL_CONFIG") or "configs/paper.yaml"
    return config_sha(config), f"{source} as it is now", config.database_url


def config_database_url(path: str | None = None) -> str | None:
    """The ``database_url`` of the config the engine would load (None if it does not load)."""
    return _config(path)[2]


def today_ist(now: datetime | None = None) -> str:
    """Today's date in the exchange's zone."""
    return (now or datetime.now(UTC)).astimezone(EXCHANGE_TZ).date().isoformat()


def open_database(url: str) -> Database:
    """Open ``url`` without migrating; a missing SQLite file is a clear error.

    Raises:
        FileNotFoundError: a SQLite URL whose file does not exist.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not os.path.exists(path):
            raise FileNotFoundError(
                f"no SQLite database at {path!r}; start the engine or run "
                "`alembic upgrade head` first"
            )
    return Database(create_database_engine(url))


def redacted(url: str) -> str:
    """``url`` with its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 written, 2 error)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.post_close",
        description="Write the daily report (Markdown, JSON, PNG) of one IST trading day.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $DATABASE_URL, else the config's database_url)",
    )
    parser.add_argument("--day", default=None, help="YYYY-MM-DD in IST (default: today in IST)")
    parser.add_argument("--out", default="reports", help="output folder (default: reports/)")
    parser.add_argument(
        "--config", default=None, help="config whose SHA to record (default: the engine's)"
    )
    parser.add_argument(
        "--store", action="store_true", help="also store the JSON in the daily_reports table"
    )
    arguments = parser.parse_args(argv)
    day = arguments.day or today_ist()
    try:
        day_bounds_ns(day)
    except ValueError:
        print(f"post_close: --day must be YYYY-MM-DD, was {day!r}", file=sys.stderr)
        return EXIT_ERROR
    sha, source, config_url = _config(arguments.config)
    url = (
        arguments.database_url
        or os.environ.get("DATABASE_URL")
        or config_url
        or DEFAULT_DATABASE_URL
    )
    label = redacted(url)
    try:
        database = open_database(url)
    except FileNotFoundError as error:
        print(f"post_close: {error} (url={label})", file=sys.stderr)
        return EXIT_ERROR
    try:
        report = build_report(
            database,
            day,
            database_label=label,
            git_sha=git_sha(),
            config_sha=sha,
            config_source=source,
        )
        if arguments.store:
            with UnitOfWork(database) as uow:
                uow.daily_reports.put(
                    day,
                    msgspec.to_builtins(report),
                    ts_ns=int(datetime.now(UTC).timestamp() * NANOS_PER_SECOND),
                )
    except SQLAlchemyError as error:
        print(f"post_close: cannot read the database {label}: {error}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        database.dispose()
    folder = write_report(report, Path(arguments.out))
    pnl = report.pnl
    print(
        f"post_close {day}: orders={report.orders['total']} fills={report.fills['total']} "
        f"trades={len(report.trades)} realized_pnl={pnl['realized']} "
        f"reconcile={'CLEAN' if report.reconcile.clean else 'FINDINGS'} -> {folder}"
    )
    return EXIT_WRITTEN


if __name__ == "__main__":
    sys.exit(main())
