"""A whole simulated trading day replayed through the scheduler (issue 8, acceptance 2).

``tools.quotes`` writes a day of quotes from 09:00 (pre-open) to 15:35 IST; ``replay_file``
runs the paper profile over it with the scheduler on, its timers on the replay's clock. The
replay's database then shows: no entry before 09:15 or from 15:20 on, every stop working at
15:20 tightened (a replacement STOP leg at or after 15:20), nothing open and nothing working
from the hard flat on, and the records of both (the TIGHTEN_STOPS and FLATTEN events).
"""

from __future__ import annotations

import json
from datetime import datetime, time
from decimal import ROUND_CEILING, ROUND_FLOOR
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from adapters.storage.database import Database
from adapters.storage.tables import (
    day_figure_counts,
    day_heat,
    engine_starts,
    events,
    fills,
    orders,
)
from domain.clock import NANOS_PER_SECOND
from domain.config import EngineConfig
from domain.enums import LegKind, OrderStatus, Side
from domain.schedule import EOD_FLATTEN_DETAIL
from launcher.config import load_config
from tools.burnin import score
from tools.post_close import NOT_STORED, build_report, render_markdown
from tools.quotes import QuoteInstrument, write_quotes
from tools.replay import replay_file

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"
IST = ZoneInfo("Asia/Kolkata")
DAY = (2026, 1, 5)  # a Monday session on the NSE calendar


def ist(hour: int, minute: int) -> int:
    return int(datetime(*DAY, hour, minute, tzinfo=IST).timestamp()) * NANOS_PER_SECOND


def write_day(path: Path, config: EngineConfig, *, rows: int, seed: int, end_ns: int) -> Path:
    """Seeded quotes over ``config``'s instruments from 09:00 IST (pre-open) to ``end_ns``."""
    write_quotes(
        path,
        rows=rows,
        seed=seed,
        instruments=[
            QuoteInstrument(
                symbol=item.symbol,
                reference_price=item.reference_price,
                tick_size=item.tick_size,
                max_spread_ticks=item.max_spread_ticks,
            )
            for item in config.instruments
        ],
        start_ns=ist(9, 0),
        end_ns=end_ns,
    )
    return path


def test_a_replayed_day_trades_only_in_session_tightens_at_1520_and_is_flat_at_1525(
    tmp_path: Path,
) -> None:
    paper = load_config(PAPER, environ={}, dotenv_path=None)
    # Wide stops and targets (15 and 30 ATRs): trades last long enough that some are open at
    # 15:20 and 15:25, so the tighten and the flat have work to do (with the profile's 1-2
    # ATRs every trade of this file has ended by then).
    held = tuple(
        strategy.model_copy(
            update={"params": {**strategy.params, "stop_atr": 15.0, "target_atr": 30.0}}
        )
        for strategy in paper.strategies
    )
    config = paper.model_copy(
        update={
            "strategies": held,
            "scheduler": paper.scheduler.model_copy(update={"enabled": True}),
            # One timer a second of replayed time is plenty for the schedule's marks.
            "heartbeats": paper.heartbeats.model_copy(update={"timer_interval_ms": 1000}),
        }
    )
    quotes = write_day(tmp_path / "day.csv", config, rows=8_000, seed=2, end_ns=ist(15, 35))
    instruments = {item.symbol: item for item in config.instruments}
    url = f"sqlite:///{tmp_path / 'day.db'}"
    result = replay_file(quotes, config=config, database_url=url)
    assert result.ticks == 8_000
    # Still a backtest with the scheduler on: a second run places the same orders.
    again = replay_file(quotes, config=config)
    assert (again.digest, again.orders, again.fills) == (result.digest, result.orders, result.fills)

    database = Database.from_url(url, migrate=False)
    try:
        with database.engine.connect() as connection:
            order_rows = connection.execute(select(orders)).all()
            fill_rows = connection.execute(select(fills).order_by(fills.c.ts_event_ns)).all()
            event_rows = connection.execute(select(events).order_by(events.c.ts_ns)).all()
    finally:
        database.dispose()

    entries = [row for row in order_rows if row.leg == LegKind.ENTRY.value]
    assert entries, "the strategies placed no entry in the session: the test proves nothing"
    assert all(ist(9, 15) <= row.created_ns < ist(15, 20) for row in entries), sorted(
        datetime.fromtimestamp(row.created_ns / NANOS_PER_SECOND, tz=IST).time()
        for row in entries
        if not ist(9, 15) <= row.created_ns < ist(15, 20)
    )

    # 15:20: the tighten ran (its record), and every position still open then got its stop
    # replaced at or after 15:20 (a STOP leg of a later sequence, created from 15:20).
    tightens = [row for row in event_rows if row.event == "TIGHTEN_STOPS"]
    assert len(tightens) == 1 and ist(15, 20) <= tightens[0].ts_ns < ist(15, 21)
    tightened = json.loads(tightens[0].payload)["tightened"]
    assert tightened, "no position was open in profit at 15:20: the test proves nothing"
    for plan_id in tightened:
        (entry,) = [row for row in entries if row.plan_client_id == plan_id]
        replacements = [
            row
            for row in order_rows
            if row.plan_client_id == plan_id
            and row.leg == LegKind.STOP.value
            and row.created_ns >= ist(15, 20)
        ]
        assert len(replacements) == 1, f"{plan_id}: tightened but no replacement stop"
        tick = instruments[entry.instrument].tick_size
        rounding = ROUND_CEILING if entry.side == Side.BUY.value else ROUND_FLOOR
        break_even = (entry.average_fill_price / tick).to_integral_value(rounding) * tick
        assert replacements[0].trigger_price == break_even

    # 15:25: the hard flat (the FLATTEN pause with the schedule's detail), then flat: the
    # net position of every instrument is zero from the first fill after it to the end, and
    # no order is left working.
    flattens = [
        row
        for row in event_rows
        if row.event == "PAUSE" and json.loads(row.payload).get("detail") == EOD_FLATTEN_DETAIL
    ]
    assert len(flattens) == 1 and ist(15, 25) <= flattens[0].ts_ns < ist(15, 26)
    (flat,) = [row for row in event_rows if row.event == "FLATTEN"]
    assert json.loads(flat.payload)["reason"] == EOD_FLATTEN_DETAIL
    assert json.loads(flat.payload)["positions_closed"] > 0
    net: dict[str, int] = {}
    for row in fill_rows:
        sign = 1 if row.side == Side.BUY.value else -1
        net[row.instrument] = net.get(row.instrument, 0) + sign * row.quantity
    assert all(quantity == 0 for quantity in net.values()), net
    late_fills = [row for row in fill_rows if row.ts_event_ns >= ist(15, 26)]
    assert late_fills == []
    assert all(row.status in {s.value for s in OrderStatus if s.is_terminal} for row in order_rows)
    created_after_flat = [row for row in order_rows if row.created_ns >= ist(15, 25)]
    assert all(row.leg == LegKind.EXIT.value for row in created_after_flat)

    # The post-close report of that day matches its storage, and the burn-in scorer passes it.
    database = Database.from_url(url, migrate=False)
    try:
        report = build_report(database, "2026-01-05")
        with database.engine.connect() as connection:
            counts = connection.execute(
                select(day_figure_counts).where(day_figure_counts.c.trading_day == "2026-01-05")
            ).all()
            (heat,) = connection.execute(
                select(day_heat).where(day_heat.c.trading_day == "2026-01-05")
            ).all()
            starts = connection.execute(select(engine_starts)).all()
    finally:
        database.dispose()
    assert report.orders["total"] == len(order_rows)
    assert report.fills["total"] == len(fill_rows)
    # The day figures the engine counted as it decided, as stored, are the report's figures.
    stored: dict[str, dict[str, int]] = {}
    for row in counts:
        stored.setdefault(row.kind, {})[row.key] = row.count
    assert report.signals_by_strategy == stored["signals"]
    assert report.signals == sum(stored["signals"].values()) > 0
    assert report.plans["approved"] == sum(stored["approved"].values())
    assert (
        report.plans["approved"]
        == report.plans["approved_with_entry_order"]
        == len({row.plan_client_id for row in entries})
    )
    assert report.plans["blocked_by_reason"] == stored.get("blocked", {})
    assert report.signals == report.plans["approved"] + report.plans["blocked"]
    assert report.max_heat_rupees == format(heat.max_heat, "f") and heat.max_heat > 0
    assert ist(9, 15) <= heat.max_heat_ns < ist(15, 35)
    ack = report.latency["order_ack_ms"]
    assert ack["buckets"] == stored["ack_latency_ms"]
    assert 0 < ack["count"] <= len(order_rows)
    assert None not in (ack["p50"], ack["p95"], ack["p99"])
    # One engine ran the day (the replay's own config: its database and work directory).
    assert len(starts) == 1 and report.config_shas == [starts[0].config_sha]
    assert report.config_sha == starts[0].config_sha and report.config_changed is False
    assert report.not_stored == []
    assert NOT_STORED not in render_markdown(report)
    results = {result.item: result for result in score(report)}
    assert all(result.passed for result in results.values()), results


def test_the_burn_in_scorer_fails_a_replayed_day_whose_hard_flat_was_skipped(
    tmp_path: Path,
) -> None:
    # The same kind of day, but the hard flat is scheduled after the file ends: no EOD flat.
    paper = load_config(PAPER, environ={}, dotenv_path=None)
    config = paper.model_copy(
        update={
            "scheduler": paper.scheduler.model_copy(
                update={"enabled": True, "flat_at": time(15, 29)}
            ),
            "heartbeats": paper.heartbeats.model_copy(update={"timer_interval_ms": 1000}),
        }
    )
    quotes = write_day(tmp_path / "day.csv", config, rows=4_000, seed=3, end_ns=ist(15, 28))
    url = f"sqlite:///{tmp_path / 'day.db'}"
    replay_file(quotes, config=config, database_url=url)
    database = Database.from_url(url, migrate=False)
    try:
        results = {result.item: result for result in score(build_report(database, "2026-01-05"))}
    finally:
        database.dispose()
    assert results["EOD_TIGHTEN"].passed, results
    assert not results["EOD_HARD_FLAT"].passed, results
