"""Replay of recorded ticks from CSV through the real feed pump and feed actor."""

from __future__ import annotations

from pathlib import Path

from domain.clock import ManualClock
from domain.messages import QuerySnapshot
from launcher.engine import Engine
from tests.helpers import make_config, wait_until

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "ticks_sample.csv"


def test_a_csv_file_replays_in_full_through_the_feed(tmp_path: Path, clock: ManualClock) -> None:
    rows = len(SAMPLE.read_text().splitlines()) - 1
    config = make_config(
        tmp_path,
        instruments=[
            {"symbol": "NIFTY-FUT", "lot_size": 50, "reference_price": "24000"},
            {"symbol": "RELIANCE", "reference_price": "2900"},
        ],
        strategies=[
            {"name": "ema_1", "kind": "ema_pullback", "instruments": ["NIFTY-FUT", "RELIANCE"]}
        ],
        feed={"kind": "csv", "name": "replay", "csv_path": str(SAMPLE), "replay_speed": 0},
    )
    engine = Engine(config, clock=clock, run_ticker=False, run_feed=True, run_http=False)
    engine.start()
    try:
        feed = wait_until(
            lambda: (
                (state := engine.directory.ask("feed:replay", QuerySnapshot(), timeout_s=5))[
                    "accepted"
                ]
                == rows
                and state
            ),
            message=f"{rows} replayed ticks",
        )
        assert feed["rejected"] == {}
        assert set(feed["last_prices"]) == {"NIFTY-FUT", "RELIANCE"}
        assert engine.pump is not None and engine.pump.exhausted
        last_ts = max(price["ts_event"] for price in feed["last_prices"].values())
        wait_until(
            lambda: (
                engine.directory.ask("strategy:ema_1", QuerySnapshot(), timeout_s=5)["last_tick_ts"]
                == last_ts
            ),
            message="the strategy saw the last tick",
        )
    finally:
        engine.stop()
