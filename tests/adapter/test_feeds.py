"""Feeds: the synthetic market, CSV replay and the pump thread (real threads, no sleeps)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.feeds import (
    CsvTickReplay,
    FeedPump,
    SyntheticMarket,
    TickDataError,
    build_tick_source,
    read_ticks,
)
from adapters.feeds.csv_replay import LOG_FIRST_BAD_ROWS, MAX_RECORDED_BAD_LINES
from domain.clock import NANOS_PER_SECOND, ManualClock
from domain.config import FeedConfig
from domain.instruments import Instrument
from domain.market_data import tick_rejection
from domain.messages.market import Tick, TicksReceived

D = Decimal
T0 = 1_767_225_600 * NANOS_PER_SECOND
SAMPLE_CSV = Path(__file__).resolve().parents[1] / "resources" / "ticks_sample.csv"

INSTRUMENTS = [
    Instrument(symbol="NIFTY-FUT", lot_size=50, reference_price=D("24000"), freeze_quantity=1800),
    Instrument(symbol="BANKNIFTY-FUT", lot_size=15, reference_price=D("52000")),
    Instrument(symbol="RELIANCE", lot_size=1, reference_price=D("2900"), max_spread_ticks=10),
    Instrument(symbol="INFY", lot_size=1, reference_price=D("1800"), max_spread_ticks=10),
]
BY_SYMBOL = {instrument.symbol: instrument for instrument in INSTRUMENTS}


def run_market(market: SyntheticMarket, calls: int, step_ns: int = 250_000_000) -> list[Tick]:
    ticks: list[Tick] = []
    for call in range(calls):
        ticks.extend(market.next_ticks(T0 + call * step_ns))
    return ticks


class TestSyntheticMarket:
    def test_same_seed_and_calls_give_the_same_ticks(self) -> None:
        config = FeedConfig(seed=42)

        first = run_market(SyntheticMarket(INSTRUMENTS, config), 500)
        second = run_market(SyntheticMarket(INSTRUMENTS, config), 500)

        assert first == second

    def test_a_different_seed_gives_a_different_market(self) -> None:
        first = run_market(SyntheticMarket(INSTRUMENTS, FeedConfig(seed=1)), 200)
        second = run_market(SyntheticMarket(INSTRUMENTS, FeedConfig(seed=2)), 200)

        assert [t.last for t in first] != [t.last for t in second]

    def test_each_instrument_has_its_own_stream_unaffected_by_the_others(self) -> None:
        config = FeedConfig(seed=42)
        alone = run_market(SyntheticMarket([BY_SYMBOL["INFY"]], config), 300)
        together = run_market(SyntheticMarket(INSTRUMENTS, config), 300)

        assert alone == [tick for tick in together if tick.instrument == "INFY"]

    def test_returns_one_tick_per_instrument_stamped_with_now(self) -> None:
        market = SyntheticMarket(INSTRUMENTS, FeedConfig())

        ticks = market.next_ticks(T0 + 123)

        assert [tick.instrument for tick in ticks] == [i.symbol for i in INSTRUMENTS]
        assert all(tick.ts_event == tick.ts_init == T0 + 123 for tick in ticks)

    def test_quotes_stay_valid_over_ten_thousand_ticks_with_blowouts_and_band_hits(
        self,
    ) -> None:
        config = FeedConfig(
            seed=3,
            volatility_bps=8.0,
            spread_blowout_probability=0.01,
            band_hit_probability=0.002,
        )
        market = SyntheticMarket(INSTRUMENTS, config)

        ticks = run_market(market, 2500)

        assert len(ticks) == 10_000
        blowouts = band_hits = normal_spreads = 0
        for tick in ticks:
            instrument = BY_SYMBOL[tick.instrument]
            lower, upper = instrument.band()
            assert lower <= tick.bid < tick.ask <= upper, tick
            assert tick.bid <= tick.last <= tick.ask, tick
            for price in (tick.bid, tick.ask, tick.last):
                assert price % instrument.tick_size == 0, tick
            assert tick.bid_size > 0 and tick.ask_size > 0 and tick.volume > 0, tick
            spread_ticks = tick.spread / instrument.tick_size
            if spread_ticks > instrument.max_spread_ticks:
                blowouts += 1
            if spread_ticks <= 3:
                normal_spreads += 1
            if tick.ask == upper or tick.bid == lower:
                band_hits += 1
        assert blowouts > 0
        assert band_hits > 0
        assert normal_spreads > 0.9 * len(ticks)

    def test_mean_reverts_after_being_pushed_to_the_band(self) -> None:
        instrument = BY_SYMBOL["RELIANCE"]
        config = FeedConfig(seed=5, volatility_bps=2.0, band_hit_probability=0.01)
        market = SyntheticMarket([instrument], config)
        lower, upper = instrument.band()
        width = upper - lower

        ticks = run_market(market, 3000)

        first_hit = next(
            index for index, tick in enumerate(ticks) if tick.ask == upper or tick.bid == lower
        )
        later = ticks[first_hit + 250]
        assert lower + width / 10 < later.last < upper - width / 10

    @pytest.mark.parametrize("band_pct", ["100", "150", "2000"])
    def test_never_quotes_a_price_the_feed_actor_would_reject_even_with_a_huge_band(
        self, band_pct: str
    ) -> None:
        # Before the fix a band of 100 % or more let the walk quote zero and negative prices.
        wide = Instrument(symbol="WIDE", reference_price=D("10"), price_band_pct=D(band_pct))
        config = FeedConfig(seed=11, volatility_bps=50.0, band_hit_probability=0.05)
        previous: Tick | None = None

        for tick in run_market(SyntheticMarket([wide], config), 2000):
            assert tick_rejection(tick, wide, previous) is None, tick
            previous = tick

    def test_refuses_a_band_too_narrow_to_quote_in(self) -> None:
        tiny = Instrument(symbol="X", reference_price=D("1"), price_band_pct=D("1"))

        with pytest.raises(ValueError, match="narrower than two ticks"):
            SyntheticMarket([tiny], FeedConfig())


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ticks.csv"
    path.write_text(text)
    return path


HEADER = "ts,instrument,bid,ask,last,volume\n"
GOOD_ROW = "2026-01-02T09:15:00+05:30,RELIANCE,2900.00,2900.10,2900.05,10\n"


class TestCsvReplay:
    def test_reads_the_sample_file_in_order_with_mid_for_a_missing_last(self) -> None:
        ticks = list(read_ticks(SAMPLE_CSV, BY_SYMBOL))

        assert len(ticks) == 200
        assert {tick.instrument for tick in ticks} == {"NIFTY-FUT", "RELIANCE"}
        assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(ticks))
        # 2026-01-02T09:15:00+05:30 is 03:45:00 UTC.
        assert ticks[0].ts_event == (1_767_225_600 + 86_400 + 13_500) * NANOS_PER_SECOND
        blank_last = ticks[6]  # line 8 of the file leaves ``last`` empty
        assert blank_last.last == (blank_last.bid + blank_last.ask) / 2

    def test_accepts_integer_epoch_nanoseconds_and_optional_columns(self, tmp_path: Path) -> None:
        path = write_csv(
            tmp_path,
            f"ts,instrument,bid,ask\n{T0 + 1},RELIANCE,2900.00,2900.05\n"
            f"{T0 + 1},INFY,1800,1800.05\n",
        )

        ticks = list(read_ticks(path, BY_SYMBOL))

        assert [tick.ts_event for tick in ticks] == [T0 + 1, T0 + 1]
        assert ticks[0].last == D("2900.025")
        assert ticks[0].volume == 0

    @pytest.mark.parametrize(
        ("row", "column", "rule"),
        [
            ("2026-01-02T09:15:01+05:30,TCS,1,2,1,1\n", "instrument", "unknown instrument"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2901,2900,2900,1\n", "bid", "bid above ask"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,0,2900,2900,1\n", "bid", "non-positive price"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2900,-1,2900,1\n", "ask", "non-positive price"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2900,29o1,2900,1\n", "ask", "unparseable number"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2900,2901,NaN,1\n", "last", "unparseable number"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2900,2901,2900,1.5\n", "volume", "unparseable"),
            ("2026-01-02T09:14:59+05:30,RELIANCE,2900,2901,2900,1\n", "ts", "went backwards"),
            ("2026-01-02T09:15:01,RELIANCE,2900,2901,2900,1\n", "ts", "no timezone"),
            ("yesterday,RELIANCE,2900,2901,2900,1\n", "ts", "unparseable timestamp"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,sNaN,2901,2900,1\n", "bid", "not finite"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,2900,Infinity,2900,1\n", "ask", "not finite"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,1e999999,9e999999,,1\n", "*", "ABSURD_PRICE"),
            ("2026-01-02T09:15:01+05:30,RELIANCE,29000.5,29001,29001,1\n", "*", "ABSURD_PRICE"),
            ("99999999999999999999999,RELIANCE,2900,2901,2900,1\n", "*", "BAD_TIMESTAMP"),
        ],
    )
    def test_names_file_line_column_and_rule_of_a_bad_row(
        self, tmp_path: Path, row: str, column: str, rule: str
    ) -> None:
        path = write_csv(tmp_path, HEADER + GOOD_ROW + GOOD_ROW + row)

        with pytest.raises(TickDataError) as caught:
            list(read_ticks(path, BY_SYMBOL))

        error = caught.value
        assert error.line == 4
        assert error.column == column
        assert rule in error.rule
        assert str(path) in str(error)
        assert f":4: column {column!r}" in str(error)

    def test_names_a_missing_required_column(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "ts,instrument,bid\n2026-01-02T09:15:00Z,RELIANCE,1\n")

        with pytest.raises(TickDataError) as caught:
            list(read_ticks(path, BY_SYMBOL))

        assert (caught.value.line, caught.value.column) == (1, "ask")

    def test_names_an_unknown_column(self, tmp_path: Path) -> None:
        path = write_csv(tmp_path, "ts,instrument,bid,ask,lst\n")

        with pytest.raises(TickDataError, match="'lst'"):
            list(read_ticks(path, BY_SYMBOL))


class Collector:
    """A sink that records batches and lets the test wait on a condition with a deadline."""

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[TicksReceived] = []
        self.arrivals: list[float] = []
        self._fail_first = fail_first
        self._calls = 0
        self._condition = threading.Condition()

    def __call__(self, batch: TicksReceived) -> None:
        with self._condition:
            self._calls += 1
            if self._calls <= self._fail_first:
                raise RuntimeError("consumer actor is dead")
            self.batches.append(batch)
            self.arrivals.append(time.monotonic())
            self._condition.notify_all()

    def count(self) -> int:
        with self._condition:
            return len(self.batches)

    def ticks(self) -> list[Tick]:
        with self._condition:
            return [tick for batch in self.batches for tick in batch.ticks]

    def wait_for(self, predicate: Callable[[Collector], bool], timeout_s: float = 5.0) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: predicate(self), timeout_s)


@pytest.fixture
def pumps() -> Iterator[list[FeedPump]]:
    started: list[FeedPump] = []
    yield started
    for pump in started:
        pump.stop(timeout_s=2.0)


def start_pump(pumps: list[FeedPump], pump: FeedPump) -> FeedPump:
    pumps.append(pump)
    pump.start()
    return pump


class TestFeedPump:
    def test_paces_the_synthetic_market_at_its_tick_interval_stamped_by_the_clock(
        self, pumps: list[FeedPump]
    ) -> None:
        clock = ManualClock(T0)
        sink = Collector()
        market = SyntheticMarket(INSTRUMENTS, FeedConfig(tick_interval_ms=20))
        start_pump(pumps, FeedPump(name="synthetic", sink=sink, source=market, clock=clock))

        assert sink.wait_for(lambda s: s.count() >= 11)

        gaps = sink.arrivals[10] - sink.arrivals[0]
        assert gaps >= 10 * 0.020 * 0.9
        first = sink.batches[0]
        assert first.feed == "synthetic"
        assert [tick.instrument for tick in first.ticks] == [i.symbol for i in INSTRUMENTS]
        assert all(tick.ts_event == T0 for tick in first.ticks)

    def test_stops_promptly_in_the_middle_of_a_long_interval(self, pumps: list[FeedPump]) -> None:
        sink = Collector()
        market = SyntheticMarket(INSTRUMENTS, FeedConfig(tick_interval_ms=60_000))
        pump = start_pump(
            pumps, FeedPump(name="slow", sink=sink, source=market, clock=ManualClock(T0))
        )
        assert sink.wait_for(lambda s: s.count() >= 1)

        started = time.monotonic()
        pump.stop(timeout_s=2.0)

        assert time.monotonic() - started < 1.0
        assert not pump.is_alive
        assert pump.wait_finished(0)

    def test_stall_stops_emission_without_stopping_the_thread_and_resume_restarts_it(
        self, pumps: list[FeedPump]
    ) -> None:
        sink = Collector()
        market = SyntheticMarket(INSTRUMENTS, FeedConfig(tick_interval_ms=10))
        pump = start_pump(
            pumps, FeedPump(name="synthetic", sink=sink, source=market, clock=ManualClock(T0))
        )
        assert sink.wait_for(lambda s: s.count() >= 3)

        pump.stall()
        stalled_at = sink.count()

        assert pump.paused()
        # Ten intervals pass with nothing new, while the thread stays alive.
        assert not sink.wait_for(lambda s: s.count() > stalled_at, timeout_s=0.1)
        assert pump.is_alive
        pump.resume()
        assert not pump.paused()
        assert sink.wait_for(lambda s: s.count() >= stalled_at + 3)

    def test_keeps_going_when_the_sink_raises(self, pumps: list[FeedPump]) -> None:
        sink = Collector(fail_first=3)
        market = SyntheticMarket(INSTRUMENTS, FeedConfig(tick_interval_ms=5))
        pump = start_pump(
            pumps, FeedPump(name="synthetic", sink=sink, source=market, clock=ManualClock(T0))
        )

        assert sink.wait_for(lambda s: s.count() >= 2)
        assert pump.sink_errors == 3
        assert pump.is_alive

    def test_replays_a_file_paced_by_its_timestamp_gaps_divided_by_speed(
        self, pumps: list[FeedPump]
    ) -> None:
        clock = ManualClock(T0 + 10**12)
        sink = Collector()
        source = read_ticks(SAMPLE_CSV, BY_SYMBOL)
        # The file spans 49.75 s; at 100x it takes about half a second.
        pump = start_pump(
            pumps, FeedPump(name="csv", sink=sink, source=source, clock=clock, speed=100.0)
        )

        assert pump.wait_finished(10.0)
        ticks = sink.ticks()
        recorded = list(read_ticks(SAMPLE_CSV, BY_SYMBOL))
        assert pump.exhausted
        assert pump.error is None
        assert [tick.ts_event for tick in ticks] == [tick.ts_event for tick in recorded]
        assert all(tick.ts_init == T0 + 10**12 for tick in ticks)
        assert sink.arrivals[-1] - sink.arrivals[0] >= 49.75 / 100 * 0.9

    def test_replays_as_fast_as_possible_in_batches_at_speed_zero(
        self, pumps: list[FeedPump]
    ) -> None:
        sink = Collector()
        pump = start_pump(
            pumps,
            FeedPump(
                name="csv",
                sink=sink,
                source=read_ticks(SAMPLE_CSV, BY_SYMBOL),
                clock=ManualClock(T0),
                speed=0,
                max_batch_ticks=64,
            ),
        )

        assert pump.wait_finished(5.0)
        sizes = [len(batch.ticks) for batch in sink.batches]
        assert sizes == [64, 64, 64, 8]

    def test_a_bad_row_is_skipped_and_the_replay_goes_on_to_the_end(
        self, tmp_path: Path, pumps: list[FeedPump]
    ) -> None:
        # Before the fix the bad row on line 4 ended the replay: only two ticks came out.
        path = write_csv(
            tmp_path,
            HEADER
            + GOOD_ROW
            + GOOD_ROW
            + "2026-01-02T09:15:01+05:30,RELIANCE,9,1,1,1\n"
            + GOOD_ROW.replace("09:15:00", "09:15:02"),
        )
        skipped: list[TickDataError] = []
        source = build_tick_source(
            FeedConfig(kind="csv", name="csv", csv_path=str(path)),
            BY_SYMBOL,
            on_bad_row=skipped.append,
        )
        sink = Collector()
        pump = start_pump(
            pumps, FeedPump(name="csv", sink=sink, source=source, clock=ManualClock(T0), speed=0)
        )

        assert pump.wait_finished(5.0)
        assert len(sink.ticks()) == 3
        assert pump.exhausted and pump.error is None
        assert [error.line for error in skipped] == [4]
        assert pump.snapshot()["source"]["bad_rows"] == 1
        assert pump.snapshot()["source"]["first_bad_row_lines"] == [4]

    def test_a_bad_header_still_ends_the_replay_with_the_reason(
        self, tmp_path: Path, pumps: list[FeedPump]
    ) -> None:
        path = write_csv(tmp_path, "ts,instrument,bid\n" + GOOD_ROW)
        source = CsvTickReplay(path, BY_SYMBOL)
        pump = start_pump(
            pumps, FeedPump(name="csv", sink=Collector(), source=source, clock=ManualClock(T0))
        )

        assert pump.wait_finished(5.0)
        assert isinstance(pump.error, TickDataError)
        assert (pump.error.line, pump.error.column) == (1, "ask")


ROW = "2026-01-02T09:15:{second:02d}+05:30,RELIANCE,{bid},{ask},{last},10\n"


def good_row(second: int) -> str:
    return ROW.format(second=second, bid="2900.00", ask="2900.10", last="2900.05")


class TestCsvTickReplaySkipsBadRows:
    def test_every_good_row_is_replayed_and_every_bad_line_is_reported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        lines: list[bytes] = [HEADER.encode()]
        bad_lines: list[int] = []

        def add(row: str | bytes, *, bad: bool) -> None:
            lines.append(row if isinstance(row, bytes) else row.encode())
            if bad:
                bad_lines.append(len(lines))

        add(good_row(0), bad=False)
        add("this is not a tick at all\n", bad=True)
        add(good_row(1), bad=False)
        add("2026-01-02T09:15:02+05:30,RELIANCE,2900.00\n", bad=True)  # missing columns
        add(ROW.format(second=2, bid="NaN", ask="2900.10", last="2900.05"), bad=True)
        add(ROW.format(second=2, bid="2900", ask="sNaN", last="2900.05"), bad=True)
        add(ROW.format(second=2, bid="9E+999999", ask="9E+999999", last=""), bad=True)
        add(ROW.format(second=2, bid="-Infinity", ask="2900.10", last=""), bad=True)
        add("yesterday,RELIANCE,2900.00,2900.10,2900.05,10\n", bad=True)
        add("y" * 100_000 + ",RELIANCE,2900.00,2900.10,2900.05,10\n", bad=True)
        add(good_row(3), bad=False)
        add(b"2026-01-02T09:15:04+05:30,RELIANCE,2900.00,2900.10,2900.05,1\xff0\n", bad=True)
        add("2026-01-02T09:15:04+05:30," + "x" * 200_000 + ",1,1,1,1\n", bad=True)
        add(good_row(1), bad=True)  # time went backwards
        add(good_row(5), bad=False)
        add(ROW.format(second=6, bid="2900.00", ask="2900.10", last="0"), bad=True)
        add(good_row(7), bad=False)
        path = tmp_path / "ticks.csv"
        path.write_bytes(b"".join(lines))
        skipped: list[int] = []
        replay = CsvTickReplay(path, BY_SYMBOL, on_bad_row=lambda error: skipped.append(error.line))

        with caplog.at_level("WARNING", logger="adapters.feeds.csv_replay"):
            ticks = list(replay)

        assert [tick.ts_event % (60 * NANOS_PER_SECOND) // NANOS_PER_SECOND for tick in ticks] == [
            0,
            1,
            3,
            5,
            7,
        ]
        assert all(tick.bid == D("2900.00") and tick.ask == D("2900.10") for tick in ticks)
        assert skipped == bad_lines
        assert replay.bad_row_lines == bad_lines
        assert (replay.ticks_read, replay.bad_rows, replay.finished) == (5, len(bad_lines), True)
        logged = " ".join(record.getMessage() for record in caplog.records)
        assert len(logged) < 20_000  # a huge bad cell is not copied into the log
        for line in bad_lines[:LOG_FIRST_BAD_ROWS]:
            assert f"ticks.csv:{line}:" in logged
        assert f"at lines {bad_lines}" in logged
        assert "finished: 5 ticks read, 12 bad rows skipped" in logged

    def test_a_file_of_garbage_does_not_flood_the_log(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = write_csv(tmp_path, HEADER + "garbage\n" * 5_000 + good_row(9))
        replay = CsvTickReplay(path, BY_SYMBOL)

        with caplog.at_level("WARNING", logger="adapters.feeds.csv_replay"):
            ticks = list(replay)

        assert len(ticks) == 1
        assert replay.bad_rows == 5_000
        assert len(replay.bad_row_lines) == MAX_RECORDED_BAD_LINES
        # The first ones one by one, then at most one line per interval, then the summary.
        assert len(caplog.records) <= LOG_FIRST_BAD_ROWS + 3
        assert "5000 bad rows skipped" in caplog.records[-1].getMessage()

    def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(self, tmp_path: Path) -> None:
        path = tmp_path / "ticks.csv"
        path.write_bytes(b"\xef\xbb\xbf" + (HEADER + good_row(0)).encode())

        assert len(list(CsvTickReplay(path, BY_SYMBOL))) == 1


class TestBuildTickSource:
    def test_builds_the_synthetic_market_by_default(self) -> None:
        source = build_tick_source(FeedConfig(), INSTRUMENTS)

        assert isinstance(source, SyntheticMarket)
        assert source.symbols == tuple(i.symbol for i in INSTRUMENTS)

    def test_builds_a_csv_replay_from_the_configured_path(self) -> None:
        config = FeedConfig(kind="csv", name="replay", csv_path=str(SAMPLE_CSV))

        source = build_tick_source(config, BY_SYMBOL)

        assert not isinstance(source, SyntheticMarket)
        assert len(list(source)) == 200


def test_a_synthetic_market_can_resume_from_given_prices() -> None:
    instruments = [
        Instrument(symbol="AAA", reference_price=Decimal("100"), tick_size=Decimal("0.05")),
        Instrument(symbol="BBB", reference_price=Decimal("200"), tick_size=Decimal("0.05")),
    ]
    market = SyntheticMarket(
        instruments, FeedConfig(volatility_bps=0.0), start_prices={"AAA": Decimal("104.37")}
    )
    first = {tick.instrument: tick for tick in market.next_ticks(1)}
    assert abs(first["AAA"].mid - Decimal("104.35")) <= Decimal("0.5")
    assert abs(first["BBB"].mid - Decimal("200")) <= Decimal("0.5")
