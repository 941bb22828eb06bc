"""A replayed file is a backtest: every tick evaluated, and the same orders on every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.messages import QuerySnapshot
from launcher.config import load_config
from launcher.engine import Engine, strategy_actor_name
from tests.helpers import make_config, wait_until
from tools.replay import ReplayError, main, replay_file, write_synthetic_csv

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"
TICKS = 3_000  # 750 steps of 4 instruments, 250 ms apart: ~190 s of market, 2 s bars


def test_two_replays_of_one_file_place_the_same_orders_and_evaluate_every_tick(
    tmp_path: Path,
) -> None:
    quotes = tmp_path / "quotes.csv"
    write_synthetic_csv(quotes, TICKS, PAPER)
    first = replay_file(quotes, config=PAPER)
    second = replay_file(quotes, config=PAPER)
    assert first.ticks == TICKS
    # Both strategies of the paper profile trade all four instruments: every tick, twice.
    assert first.strategies == 2
    assert first.evaluations == first.expected_evaluations == TICKS * 2
    assert first.evaluations_by_strategy == {"orb_1": TICKS, "ema_1": TICKS}
    assert first.orders > 0 and first.fills > 0
    assert (second.digest, second.orders, second.fills, second.pnl) == (
        first.digest,
        first.orders,
        first.fills,
        first.pnl,
    )


def test_the_ema_strategy_alone_places_orders_on_a_replay(tmp_path: Path) -> None:
    """Before: at full speed the conflating mailbox left ~1 tick per 2 s bar and EMA placed 0."""
    paper = load_config(PAPER, environ={}, dotenv_path=None)
    ema_only = paper.model_copy(
        update={"strategies": tuple(s for s in paper.strategies if s.kind == "ema_pullback")}
    )
    quotes = tmp_path / "quotes.csv"
    write_synthetic_csv(quotes, TICKS, ema_only)
    result = replay_file(quotes, config=ema_only)
    assert result.evaluations == TICKS
    assert result.orders > 0


def test_a_csv_feed_at_full_speed_is_not_conflated(tmp_path: Path) -> None:
    """The engine's own pump over a file: strategies see every tick (a TickQueue, the feed
    waits for them), where a conflating mailbox kept only the latest per instrument."""
    quotes = tmp_path / "quotes.csv"
    paper = load_config(PAPER, environ={}, dotenv_path=None)
    write_synthetic_csv(quotes, 4_000, paper)
    config = make_config(
        tmp_path,
        instruments=[item.model_dump(mode="json") for item in paper.instruments],
        strategies=[s.model_dump(mode="json") for s in paper.strategies],
        feed={"kind": "csv", "name": "replay", "csv_path": str(quotes), "replay_speed": 0},
        feed_mailbox_ticks=500,
    )
    engine = Engine(config, run_ticker=False, run_feed=True, run_http=False)
    engine.start()
    try:
        for strategy in ("orb_1", "ema_1"):
            state = wait_until(
                lambda name=strategy: (
                    (
                        s := engine.directory.ask(
                            strategy_actor_name(name), QuerySnapshot(), timeout_s=5
                        )
                    )["ticks_seen"]
                    >= 4_000
                    and s
                ),
                timeout_s=120,
                message=f"{strategy} saw every tick",
            )
            assert state["ticks_seen"] == 4_000
            assert state["ticks_conflated"] == 0
    finally:
        engine.stop()


def test_a_missing_or_empty_file_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ReplayError, match="REPLAY_UNREADABLE"):
        replay_file(tmp_path / "absent.csv", config=PAPER)
    empty = tmp_path / "empty.csv"
    empty.write_text("ts,instrument,bid,ask\n")
    assert main([str(empty), "--config", str(PAPER)]) == 1
    assert (
        capsys.readouterr().err.strip() == f"replay failed: REPLAY_EMPTY: {empty} has no valid tick"
    )
