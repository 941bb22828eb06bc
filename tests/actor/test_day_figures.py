"""The day figures (issue 8, post-close): counted by the engine as it decides, stored per trading
day, added up across restarts, and read back by the post-close report.

An engine on a manual clock is driven through a day: plans approved and blocked with known
reasons, entries and protective legs acknowledged after a known venue latency (30 ms, then
300 ms after a restart with another config), and a heat peak. The engine is stopped and started
again mid-day; the figures of both processes add up, and ``tools.post_close`` prints exactly
the driven numbers (and flags the two configs that ran). A last test shows the trading day
(realized PnL today and the day figures) follows the configured exchange zone, not IST.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.storage import Database, UnitOfWork
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.messages import PortfolioUpdated, QueryLastPortfolio, QueryRisk
from launcher.engine import Engine
from tests.actor.conftest import Desk
from tests.helpers import make_config
from tools.post_close import build_report, render_markdown

pytestmark = pytest.mark.timeout(120)

IST = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
DAY = "2026-01-05"


def at(zone: ZoneInfo, day: str, hour: int, minute: int = 0) -> int:
    moment = datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}:00").replace(tzinfo=zone)
    return int(moment.timestamp()) * NANOS_PER_SECOND


def acks_observed(desk: Desk) -> int:
    """Acks the order actor has observed (the live histogram's count)."""
    value = desk.engine.metrics.registry.get_sample_value("trader_order_latency_ms_count")
    return int(value or 0)


def venue_orders(desk: Desk) -> int:
    """Orders the paper venue has received (acknowledged or not)."""
    assert desk.engine.broker is not None
    return len(desk.engine.broker.list_orders())


def last_portfolio(desk: Desk) -> PortfolioUpdated:
    return desk.engine.directory.ask("risk", QueryLastPortfolio(), timeout_s=5)


def risk_blocks(desk: Desk) -> dict[str, int]:
    return desk.engine.directory.ask("risk", QueryRisk(), timeout_s=5).blocks


def open_bracket(desk: Desk, latency_s: float, **plan: str | int) -> None:
    """An approved plan whose entry, stop and target are each acknowledged ``latency_s`` after
    they were sent: the clock moves only once everything due has been sent."""
    orders, acks = venue_orders(desk), acks_observed(desk)
    desk.send_plan(**plan)  # type: ignore[arg-type]
    # At least: with no latency the venue acknowledges and fills at once and the stop and
    # target follow before a look can see the entry alone (the counts only grow).
    desk.settle(lambda: venue_orders(desk) >= orders + 1, what="the entry sent")
    desk.step(latency_s)  # the entry is acknowledged and fills at the quote
    desk.settle(
        lambda: acks_observed(desk) >= acks + 1 and venue_orders(desk) == orders + 3,
        what="the entry acknowledged, the stop and target sent",
    )
    desk.step(latency_s)
    desk.settle(lambda: acks_observed(desk) == acks + 3, what="the stop and target acknowledged")


def block(desk: Desk, reason: str, **plan: str | int) -> None:
    before = risk_blocks(desk).get(reason, 0)
    desk.send_plan(**plan)  # type: ignore[arg-type]
    desk.settle(lambda: risk_blocks(desk).get(reason, 0) == before + 1, what=f"a {reason} block")


def test_the_day_figures_add_up_across_a_restart_and_post_close_prints_them(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    clock.set(at(IST, DAY, 9, 30))

    def desk_with(latency_ms: int) -> Desk:
        config = make_config(tmp_path, strategies=[], paper_broker={"latency_ms": latency_ms})
        desk = Desk(engine_factory(config), clock)
        desk.ready_to_trade()
        return desk

    # -- the first process: venue latency 30 ms ------------------------------------------------
    desk = desk_with(30)
    first_sha = desk.engine.config_sha
    open_bracket(desk, 0.03, instrument="AAA", entry="100.10", stop="99.00")  # heat 11
    block(desk, "UNKNOWN_INSTRUMENT", instrument="ZZZ")
    block(desk, "POSITION_OPEN", instrument="AAA")  # orb_1 holds AAA already
    open_bracket(desk, 0.03, instrument="BBB", entry="200.10", stop="198.00", target="205.00")
    # heat 11 + 21 = 32; every ack took 30 ms
    assert acks_observed(desk) == 6
    desk.engine.stop()  # a clean stop stores everything counted

    # -- the same day, a second process with another config: venue latency 300 ms --------------
    clock.advance(3600)
    desk = desk_with(300)
    second_sha = desk.engine.config_sha
    assert second_sha != first_sha
    # 10:30:00.120 IST (four 30 ms steps, then an hour): the third bracket's working entry
    # takes the heat to its peak.
    peak_ns = clock.now_ns()
    open_bracket(desk, 0.3, instrument="AAA", entry="100.10", stop="99.60", strategy="ema_1")
    block(desk, "UNKNOWN_INSTRUMENT", instrument="ZZZ")
    assert acks_observed(desk) == 3
    database_url = desk.engine.config.database_url
    desk.engine.stop()

    database = Database.from_url(database_url, migrate=False)
    try:
        with UnitOfWork(database) as uow:
            figures = uow.day_figures.figures(DAY)
        report = build_report(database, DAY)
    finally:
        database.dispose()

    # Storage holds what both processes counted, added up (not the second one's alone).
    assert figures is not None
    assert figures.signals_by_strategy == {"ema_1": 1, "orb_1": 5}
    assert figures.approved_by_strategy == {"ema_1": 1, "orb_1": 2}
    assert figures.blocked_by_reason == {"POSITION_OPEN": 1, "UNKNOWN_INSTRUMENT": 2}
    assert figures.ack_latency_buckets == {"50": 6, "500": 3}
    assert figures.max_heat is not None
    assert figures.max_heat.rupees == Decimal("37")  # 11 + 21 + 5
    assert figures.max_heat.ts_ns == peak_ns

    # The report prints exactly those figures, and no figure is "not stored".
    assert report.signals == 6
    assert report.signals_by_strategy == {"ema_1": 1, "orb_1": 5}
    assert report.plans["approved"] == 3 == report.plans["approved_with_entry_order"]
    assert report.plans["blocked"] == 3
    assert report.plans["blocked_by_reason"] == {"POSITION_OPEN": 1, "UNKNOWN_INSTRUMENT": 2}
    assert report.max_heat_rupees == "37"
    assert report.max_heat_at == "2026-01-05T10:30:00.120+05:30"
    ack = report.latency["order_ack_ms"]
    assert (ack["count"], ack["p50"], ack["p95"], ack["p99"]) == (9, 50.0, 500.0, 500.0)
    assert ack["buckets"] == {"50": 6, "500": 3}
    assert report.not_stored == []
    # Both configs that ran that day are listed and flagged.
    assert report.config_shas == [first_sha, second_sha]
    assert report.config_changed is True
    assert [start.config_sha for start in report.engine_starts] == [first_sha, second_sha]
    markdown = render_markdown(report)
    assert "not stored" not in markdown
    assert "| signals | 6 (ema_1 1, orb_1 5) |" in markdown
    assert "| approved plans | 3 (ema_1 1, orb_1 2) |" in markdown
    assert "| blocked plans | 3 (POSITION_OPEN 1, UNKNOWN_INSTRUMENT 2) |" in markdown
    assert "| max heat (rupees) | 37 at 2026-01-05T10:30:00.120+05:30 |" in markdown
    assert "| order-ack latency | p50 / p95 / p99 <= 50.0 / 500.0 / 500.0 ms (n=9" in markdown
    assert "CONFIG CHANGED DURING THE DAY: 2 configs ran" in markdown


def test_the_trading_day_rolls_at_midnight_in_the_configured_exchange_zone(
    tmp_path: Path, clock: ManualClock, engine_factory: Callable[..., Engine]
) -> None:
    # 10:00 in New York on the 5th (20:30 IST).
    clock.set(at(NEW_YORK, DAY, 10))
    config = make_config(
        tmp_path,
        strategies=[],
        scheduler={"timezone": "America/New_York"},
        # Hours pass in this test: the lease must outlive the jumps.
        leader={"lease_ttl_s": 86_400},
    )
    desk = Desk(engine_factory(config), clock)
    desk.ready_to_trade()
    open_bracket(desk, 0.0, instrument="AAA", entry="100.10", stop="99.00", target="101.00")
    desk.quote("AAA", "101.50", "101.60")  # the target fills: a realized gain today

    def realized_today() -> Decimal:
        return desk.portfolio().portfolio.realized_pnl_today

    gain = desk.settle(realized_today, what="the target filled")
    assert gain > 0

    # Past midnight in India (00:30 IST on the 6th, 14:00 in New York): the same trading day.
    # (Hours without data: entries are paused as stale, so plans are blocked TRADING_PAUSED.)
    ist_midnight_passed = at(IST, "2026-01-06", 0, 30)
    clock.set(ist_midnight_passed)
    # The order actor's timer at this time has run (its roll included) once risk holds a
    # portfolio stamped with it (published after the roll, in the same handler).
    seen = desk.settle(
        lambda: (portfolio := last_portfolio(desk)).ts_event >= ist_midnight_passed and portfolio,
        what="a portfolio published after IST midnight",
    )
    assert seen.realized_pnl_today == gain
    assert realized_today() == gain
    desk.send_plan(instrument="ZZZ")  # blocked; counted on the New York day of the 5th
    desk.settle(lambda: sum(risk_blocks(desk).values()) == 1)

    # Past midnight in New York (00:01 on the 6th): a new day, realized PnL today is 0.
    clock.set(at(NEW_YORK, "2026-01-06", 0, 1))
    desk.settle(lambda: realized_today() == 0, what="realized PnL today rolled in New York")
    desk.send_plan(instrument="ZZZ")
    desk.settle(lambda: sum(risk_blocks(desk).values()) == 2)
    database_url = desk.engine.config.database_url
    desk.engine.stop()

    database = Database.from_url(database_url, migrate=False)
    try:
        with UnitOfWork(database) as uow:
            fifth = uow.day_figures.figures(DAY)
            sixth = uow.day_figures.figures("2026-01-06")
        report = build_report(database, DAY, tz=NEW_YORK)
    finally:
        database.dispose()
    assert fifth is not None and sixth is not None
    assert (fifth.signals, fifth.blocked, sixth.signals, sixth.blocked) == (2, 1, 1, 1)
    assert report.timezone == "America/New_York"
    assert (report.signals, report.plans["approved"], report.plans["blocked"]) == (2, 1, 1)
    assert report.pnl["realized"] == gain
