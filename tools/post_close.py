"""Post-close: the daily report of one trading day, as Markdown, JSON and a PNG chart.

``python -m tools.post_close [--database-url URL] [--day YYYY-MM-DD] [--out reports/]
[--config PATH] [--store]`` (``make post-close``) reads the engine's database and writes
``<out>/<day>/report.md``, ``report.json`` and ``equity.png``. It only reads, unless ``--store``
also puts the JSON into the ``daily_reports`` table (``DailyReportRepository``).

The day is the exchange-local date in the configured exchange zone (``scheduler.timezone`` of
``--config``, Asia/Kolkata by default; ``domain.calendar``, the definition the engine uses for
PnL today and the day figures): every row whose time falls in ``[00:00, 24:00)`` local of
``--day`` (default: today there). What comes from where:

- **signals** (per strategy), **approved plans** (per strategy) and **blocked plans by reason**:
  the day figures the risk actor counted as it decided (``day_figure_counts``, migration 0005;
  ``adapters.storage.day_figures``). ``approved_with_entry_order`` is the distinct plans with an
  ENTRY order in ``orders`` (every approval the order actor booked).
- **orders**: ``orders`` rows created that day, by leg and by status.
- **fills**: ``fills`` rows whose ``ts_event_ns`` falls on the day.
- **trades**: one per plan with a fill that day, built from its fills in time order with the
  engine's own position arithmetic (``domain.positions.apply_fill``): quantity, average entry
  and exit, realized PnL. A plan still holding quantity is OPEN. ``consistency`` compares the
  fills' realized PnL with the ``positions`` table's for the same plans.
- **win rate**: closed trades with PnL > 0 over all closed trades.
- **max heat**: the high-water mark of portfolio heat the risk actor saw that day, and when
  (``day_heat``).
- **order-ack latency**: the day's acks per bucket of ``trader_order_latency_ms``
  (``day_figure_counts``); p50/p95/p99 are nearest-rank over the buckets, reported as the upper
  bound of the bucket holding the rank (the true value is at most that).
- **flatten durations** (p50/p95/max): ``FLATTEN`` rows of ``events`` (the order actor's
  ``FlattenCompleted``, ``duration_ms``).
- **tripwires**: ``TRIPWIRE`` rows of ``events`` and ``audit_log`` (action ``TRIPWIRE``); the
  count of firings is the audit rows with outcome ``FIRED`` (``tripwires_fired``).
- **kill-switch events**: ``KILL_SWITCH`` rows of ``events``, ``KILL_SWITCH*`` rows of
  ``audit_log``. **EOD**: ``EOD_TIGHTEN`` / ``EOD_HARD_FLAT`` rows of either table.
- **reconcile**: ``tools.reconcile.reconcile`` over the whole database (duplicates, orphans).
- **config SHA** and **git SHA**: what each engine start recorded (``engine_starts``): every
  start that day, and the last start before it (an engine running into the day). More than one
  config SHA is flagged (``config_changed``). For a day with no recorded start the config
  ``--config`` names as it is now and this checkout's ``git rev-parse HEAD`` are given instead,
  and ``config_source`` says so.

A day recorded before migration 0005 has no day figures: signals, blocked plans, max heat and
ack latency are then reported as ``not stored`` (never estimated), and ``not_stored`` says why.

Exit codes: 0 written, 2 the database cannot be read or the day is malformed.
``build_report(database, day)`` returns the same ``DailyReport`` for tests and tools.burnin.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from adapters.metrics import ORDER_LATENCY_BUCKETS_MS
from adapters.storage.database import Database, create_database_engine
from adapters.storage.repositories import (
    DayFiguresRepository,
    EngineStart,
    EngineStartRepository,
    UnitOfWork,
)
from adapters.storage.tables import audit_log, events, fills, orders, positions
from domain.calendar import EXCHANGE_TZ, exchange_zone
from domain.calendar import day_bounds_ns as calendar_day_bounds_ns
from domain.clock import NANOS_PER_SECOND
from domain.day_figures import DayFigures, histogram_percentile
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
    "engine_start_view",
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


class EngineStartView(msgspec.Struct, frozen=True, kw_only=True):
    """An engine start as the report shows it (``engine_starts``)."""

    time_local: str
    ts_ns: int
    instance_id: str
    lease_holder: str
    config_sha: str
    git_sha: str
    mode: str
    timezone: str
    before_the_day: bool  # started earlier and may have run into the day


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
    signals: int | str
    signals_by_strategy: dict[str, int] | str
    plans: dict[str, Any]
    orders: dict[str, Any]
    fills: dict[str, Any]
    trades: list[Trade]
    pnl: dict[str, Any]
    max_heat_rupees: str
    max_heat_at: str
    latency: dict[str, Any]
    flattens: list[StoredEvent]
    tripwires: list[StoredEvent]
    kill_switch: list[StoredEvent]
    eod: list[StoredEvent]
    reconcile: ReconcileReport
    consistency: dict[str, Any]
    not_stored: list[str]
    engine_starts: list[EngineStartView] = []
    config_shas: list[str] = []
    config_changed: bool = False


# ---------------------------------------------------------------------------------------------
# BUILDING THE REPORT
# ---------------------------------------------------------------------------------------------


def day_bounds_ns(day: str, tz: ZoneInfo = EXCHANGE_TZ) -> tuple[int, int]:
    """``[start, end)`` of the trading day ``day`` (``YYYY-MM-DD``) in ``tz``, in epoch ns
    (``domain.calendar.day_bounds_ns``: local midnight to the next).

    Raises:
        ValueError: ``day`` is not a ``YYYY-MM-DD`` date.
    """
    return calendar_day_bounds_ns(day, tz)


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
    tz: ZoneInfo = EXCHANGE_TZ,
) -> DailyReport:
    """Read one trading day (local date in ``tz``) from ``database`` (one read transaction,
    then the reconcile). ``git_sha``/``config_sha``/``config_source`` are used only for a day
    without a recorded engine start.

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read (e.g. tables missing).
    """
    start, end = day_bounds_ns(day, tz)
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
        figures = DayFiguresRepository(connection).figures(day)
        starts_repository = EngineStartRepository(connection)
        starts = starts_repository.between(start, end)
        carried = starts_repository.last_before(start)
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
    stored = [_from_event(row, tz) for row in event_rows] + [
        _from_audit(row, tz) for row in audit_rows
    ]
    stored.sort(key=lambda item: item.ts_ns)

    not_stored = (
        []
        if figures is not None
        else [
            "signals, approved and blocked plans, max heat, order-ack latency: no day figures "
            "were stored for this day (recorded from migration 0005 on; only the live metrics "
            "trader_risk_blocks_total, trader_portfolio_heat_rupees and trader_order_latency_ms "
            "held them before)"
        ]
    )
    start_views = [engine_start_view(item, tz, before_the_day=False) for item in starts]
    if carried is not None and (figures is not None or not starts):
        start_views.insert(0, engine_start_view(carried, tz, before_the_day=True))
    config_shas = list(dict.fromkeys(view.config_sha for view in start_views))
    git_shas = list(dict.fromkeys(view.git_sha for view in start_views))
    if start_views:
        config_sha = ", ".join(config_shas)
        git_sha = ", ".join(git_shas)
        config_source = "recorded at engine start (engine_starts)" + (
            f"; {len(config_shas)} different configs ran this day" if len(config_shas) > 1 else ""
        )
    else:
        config_source = f"{config_source}; no engine start recorded for this day".lstrip("; ")
    return DailyReport(
        trading_day=day,
        timezone=str(tz),
        window_start_ns=start,
        window_end_ns=end,
        database=database_label,
        generated_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        git_sha=git_sha,
        config_sha=config_sha,
        config_source=config_source,
        signals=NOT_STORED if figures is None else figures.signals,
        signals_by_strategy=NOT_STORED if figures is None else figures.signals_by_strategy,
        plans=_plans(figures, len(approved)),
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
        max_heat_rupees=_max_heat(figures),
        max_heat_at=(
            NOT_STORED
            if figures is None
            else "n/a"
            if figures.max_heat is None
            else _local(figures.max_heat.ts_ns, tz)
        ),
        latency={
            "flatten_ms": {
                "count": len(durations),
                "p50": percentile(durations, 0.50),
                "p95": percentile(durations, 0.95),
                "max": max(durations, default=None),
            },
            "order_ack_ms": NOT_STORED if figures is None else _ack_latency(figures),
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
        engine_starts=start_views,
        config_shas=config_shas,
        config_changed=len(config_shas) > 1,
    )


def _plans(figures: DayFigures | None, with_entry_order: int) -> dict[str, Any]:
    if figures is None:
        return {
            "approved": with_entry_order,
            "approved_with_entry_order": with_entry_order,
            "blocked": NOT_STORED,
            "blocked_by_reason": NOT_STORED,
        }
    return {
        "approved": figures.approved,
        "approved_by_strategy": figures.approved_by_strategy,
        "approved_with_entry_order": with_entry_order,
        "blocked": figures.blocked,
        "blocked_by_reason": figures.blocked_by_reason,
    }


def _max_heat(figures: DayFigures | None) -> str:
    if figures is None:
        return NOT_STORED
    return "0" if figures.max_heat is None else format(figures.max_heat.rupees, "f")


def _ack_latency(figures: DayFigures) -> dict[str, Any]:
    buckets = figures.ack_latency_buckets

    def upper_bound(fraction: float) -> float | str | None:
        value = histogram_percentile(buckets, ORDER_LATENCY_BUCKETS_MS, fraction)
        if value is not None and math.isinf(value):
            return f"> {ORDER_LATENCY_BUCKETS_MS[-1]:g}"
        return value

    return {
        "count": figures.acks,
        "buckets": {key: buckets[key] for key in _bucket_order(buckets)},
        "p50": upper_bound(0.50),
        "p95": upper_bound(0.95),
        "p99": upper_bound(0.99),
        "percentiles_are": "upper bounds of trader_order_latency_ms buckets (ms)",
    }


def _bucket_order(buckets: dict[str, int]) -> list[str]:
    return sorted(buckets, key=lambda key: math.inf if key == "+Inf" else float(key))


def engine_start_view(start: EngineStart, tz: ZoneInfo, *, before_the_day: bool) -> EngineStartView:
    """``start`` as the report shows it, its time local to ``tz``."""
    return EngineStartView(
        time_local=_local(start.ts_ns, tz),
        ts_ns=start.ts_ns,
        instance_id=start.instance_id,
        lease_holder=start.lease_holder,
        config_sha=start.config_sha,
        git_sha=start.git_sha,
        mode=start.mode,
        timezone=start.timezone,
        before_the_day=before_the_day,
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


def _local(ts_ns: int, tz: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(ts_ns / NANOS_PER_SECOND, tz=UTC).astimezone(tz)
    return moment.isoformat(timespec="milliseconds")


def _from_event(row: Any, tz: ZoneInfo) -> StoredEvent:
    return StoredEvent(
        source="events", ts_ns=row.ts_ns, time_ist=_local(row.ts_ns, tz), name=row.event,
        detail=row.payload,
    )  # fmt: skip


def _from_audit(row: Any, tz: ZoneInfo) -> StoredEvent:
    detail = f"{row.outcome} by {row.who}: {row.detail}".strip()
    return StoredEvent(
        source="audit_log", ts_ns=row.ts_ns, time_ist=_local(row.ts_ns, tz), name=row.action,
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
    tz = ZoneInfo(report.timezone)
    pnl = report.pnl
    flatten = report.latency["flatten_ms"]
    win_rate = "n/a" if pnl["win_rate"] is None else f"{pnl['win_rate'] * 100:.1f} %"
    config_line = f"- config SHA: `{report.config_sha}` ({report.config_source})"
    if report.config_changed:
        config_line += f" **CONFIG CHANGED DURING THE DAY: {len(report.config_shas)} configs ran**"
    lines = [
        f"# Vigil daily report: {report.trading_day} ({report.timezone})",
        "",
        f"- database: `{report.database}`",
        f"- generated: {report.generated_at}",
        f"- git SHA: `{report.git_sha}`",
        config_line,
        "",
        "![equity](equity.png)",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
        f"| signals | {report.signals}{_by_key(report.signals_by_strategy)} |",
        f"| approved plans | {report.plans['approved']}"
        f"{_by_key(report.plans.get('approved_by_strategy'))} |",
        f"| blocked plans | {report.plans['blocked']}"
        f"{_by_key(report.plans['blocked_by_reason'])} |",
        f"| orders | {report.orders['total']} |",
        f"| fills | {report.fills['total']} (quantity {report.fills['quantity']}) |",
        f"| trades closed / open | {pnl['closed_trades']} / {pnl['open_trades']} |",
        f"| realized PnL | {pnl['realized']} |",
        f"| wins / losses | {pnl['wins']} / {pnl['losses']} |",
        f"| win rate | {win_rate} |",
        f"| best / worst trade | {_figure(pnl['best'])} / {_figure(pnl['worst'])} |",
        f"| max heat (rupees) | {report.max_heat_rupees}"
        f"{'' if report.max_heat_at in (NOT_STORED, 'n/a') else f' at {report.max_heat_at}'} |",
        f"| flatten ms p50 / p95 / max (n={flatten['count']}) | {_figure(flatten['p50'])} / "
        f"{_figure(flatten['p95'])} / {_figure(flatten['max'])} |",
        f"| order-ack latency | {_ack_line(report.latency['order_ack_ms'])} |",
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
        "| opened (local) | plan | strategy | instrument | side | qty | entry | exit | PnL "
        "| status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_local(trade.opened_ns, tz)[11:23]} | `{trade.plan_client_id}` | {trade.strategy} | "
        f"{trade.instrument} | {trade.side} | {trade.quantity} | {trade.entry_price} | "
        f"{_figure(trade.exit_price)} | {trade.pnl:.2f} | {trade.status} |"
        for trade in report.trades
    ]
    lines += [
        "",
        "## Engine starts",
        "",
        *[
            f"- {start.time_local} `{start.instance_id}` ({start.lease_holder}) "
            f"{start.mode} config `{start.config_sha[:12]}` git `{start.git_sha[:12]}`"
            + (" (started before the day)" if start.before_the_day else "")
            for start in report.engine_starts
        ],
    ]
    if not report.engine_starts:
        lines.append("- none recorded")
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


def _by_key(counts: Any) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    return " (" + ", ".join(f"{key} {value}" for key, value in counts.items()) + ")"


def _ack_line(latency: Any) -> str:
    if not isinstance(latency, dict):
        return str(latency)
    if not latency["count"]:
        return "no acks"
    return (
        f"p50 / p95 / p99 <= {_figure(latency['p50'])} / {_figure(latency['p95'])} / "
        f"{_figure(latency['p99'])} ms (n={latency['count']}, bucket upper bounds)"
    )


def write_chart(report: DailyReport, path: Path) -> None:
    """The equity curve (cumulative realized PnL at each trade's close, local time) over per-trade
    PnL bars, as a PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib import pyplot

    tz = ZoneInfo(report.timezone)
    closed = sorted(
        (trade for trade in report.trades if trade.closed_ns is not None),
        key=lambda trade: trade.closed_ns or 0,
    )
    times = [
        datetime.fromtimestamp((trade.closed_ns or 0) / NANOS_PER_SECOND, tz=tz) for trade in closed
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
        bottom.set_xlabel(f"close time ({report.timezone})")
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
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
    """``git rev-parse HEAD`` of ``root`` (``launcher.provenance.git_sha``), or ``unknown``."""
    from launcher.provenance import git_sha as checkout_sha

    return checkout_sha(root)


def _config(path: str | None) -> tuple[str, str, str | None, ZoneInfo]:
    """(config SHA, where it came from, the config's database URL, its exchange zone) or an
    explanation (and the default zone)."""
    from launcher.config import ConfigError, config_sha, load_config

    try:
        config = load_config(path)
    except ConfigError as error:
        first_line = str(error).splitlines()[0] if str(error) else "ConfigError"
        return "unknown", f"config did not load: {first_line}", None, EXCHANGE_TZ
    source = path or os.environ.get("VIGIL_CONFIG") or "configs/paper.yaml"
    zone = exchange_zone(config.scheduler.timezone)
    return config_sha(config), f"{source} as it is now", config.database_url, zone


def config_database_url(path: str | None = None) -> str | None:
    """The ``database_url`` of the config the engine would load (None if it does not load)."""
    return _config(path)[2]


def today_ist(now: datetime | None = None, tz: ZoneInfo = EXCHANGE_TZ) -> str:
    """Today's date in the exchange's zone (``tz``, IST by default)."""
    return (now or datetime.now(UTC)).astimezone(tz).date().isoformat()


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
        description="Write the daily report (Markdown, JSON, PNG) of one trading day.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: $DATABASE_URL, else the config's database_url)",
    )
    parser.add_argument(
        "--day",
        default=None,
        help="YYYY-MM-DD in the exchange zone (scheduler.timezone; default: today there)",
    )
    parser.add_argument("--out", default="reports", help="output folder (default: reports/)")
    parser.add_argument(
        "--config",
        default=None,
        help="config giving the exchange zone and database (default: the engine's); its SHA "
        "is reported only for a day with no recorded engine start",
    )
    parser.add_argument(
        "--store", action="store_true", help="also store the JSON in the daily_reports table"
    )
    arguments = parser.parse_args(argv)
    sha, source, config_url, zone = _config(arguments.config)
    day = arguments.day or today_ist(tz=zone)
    try:
        day_bounds_ns(day, zone)
    except ValueError:
        print(f"post_close: --day must be YYYY-MM-DD, was {day!r}", file=sys.stderr)
        return EXIT_ERROR
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
            tz=zone,
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
