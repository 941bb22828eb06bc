"""Micro-benchmark of the paper venue's hot calls: ``submit_order`` and ``on_tick`` at 10 and
200 working orders. Not a test (pytest does not collect it); run it from a repository root so
that root's code is measured, e.g. the same script against two checkouts back to back:

    cd /work/main && PYTHONPATH=. python /path/to/paper_venue_bench.py
    cd /work/wt-venue && PYTHONPATH=. python tests/adapter/paper_venue_bench.py

Prints one JSON line: microseconds per call (median and p95 over the timed calls).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from adapters.brokers.paper import PaperBroker
from adapters.storage.database import Database, upgrade_schema
from domain.clock import ManualClock
from domain.config import PaperBrokerConfig
from domain.enums import OrderType, Side
from domain.instruments import Instrument
from domain.messages import OrderRequest, Tick

SYMBOLS = [f"S{index}" for index in range(4)]
INSTRUMENTS = {
    symbol: Instrument(
        symbol=symbol,
        lot_size=1,
        tick_size=Decimal("0.05"),
        freeze_quantity=10_000,
        reference_price=Decimal("100"),
    )
    for symbol in SYMBOLS
}


def _settle(broker: PaperBroker) -> None:
    flush = getattr(broker, "flush", None)
    if flush is not None:
        flush()


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns)
    return {
        "p50_us": round(statistics.median(samples) / 1000, 2),
        "p95_us": round(samples[int(len(samples) * 0.95)] / 1000, 2),
        "mean_us": round(statistics.fmean(samples) / 1000, 2),
    }


def _broker(directory: Path, name: str) -> tuple[PaperBroker, ManualClock, Database]:
    url = f"sqlite:///{directory / name}"
    upgrade_schema(url)
    database = Database.from_url(url)
    clock = ManualClock()
    broker = PaperBroker(
        config=PaperBrokerConfig(latency_ms=1, slippage_ticks=0),
        instruments=INSTRUMENTS,
        database=database,
        clock=clock,
    )
    broker.set_report_sink(lambda report: None)
    broker.connect()
    return broker, clock, database


def _tick(symbol: str, bid: Decimal, clock: ManualClock) -> Tick:
    now = clock.now_ns()
    return Tick(
        instrument=symbol,
        bid=bid,
        ask=bid + Decimal("0.05"),
        last=bid,
        ts_event=now,
        ts_init=now,
    )


def _resting(client_order_id: str, symbol: str, index: int) -> OrderRequest:
    # Far from the market (100): buy limits below 90, sell stops below 90, sell limits above
    # 110, buy stops above 110. None can be crossed by the timed quotes (99..101).
    offset = Decimal(index % 50) * Decimal("0.05")
    kind = index % 4
    side = Side.BUY if kind in (0, 3) else Side.SELL
    order_type = OrderType.LIMIT if kind in (0, 2) else OrderType.STOP
    price = Decimal("90") - offset if kind in (0, 1) else Decimal("110") + offset
    return OrderRequest(
        client_order_id=client_order_id,
        instrument=symbol,
        side=side,
        order_type=order_type,
        quantity=1,
        price=price if order_type is OrderType.LIMIT else None,
        trigger_price=price if order_type is OrderType.STOP else None,
    )


def bench_submit(directory: Path, count: int) -> dict[str, float]:
    broker, _clock, database = _broker(directory, "submit.db")
    samples: list[int] = []
    for index in range(count):
        request = _resting(f"SUB{index}", SYMBOLS[index % len(SYMBOLS)], index)
        started = time.perf_counter_ns()
        broker.submit_order(request)
        samples.append(time.perf_counter_ns() - started)
    _settle(broker)
    broker.close()
    database.dispose()
    return _percentiles(samples)


def bench_tick(directory: Path, working: int, ticks: int) -> dict[str, float]:
    broker, clock, database = _broker(directory, f"tick{working}.db")
    for symbol in SYMBOLS:
        broker.on_tick(_tick(symbol, Decimal("100"), clock))
    for index in range(working):
        broker.submit_order(_resting(f"W{index}", SYMBOLS[index % len(SYMBOLS)], index))
    clock.advance(nanos=2_000_000)
    broker.on_time(clock.now_ns())
    _settle(broker)
    samples: list[int] = []
    for index in range(ticks):
        bid = Decimal("99") + Decimal(index % 40) * Decimal("0.05")
        tick = _tick(SYMBOLS[index % len(SYMBOLS)], bid, clock)
        started = time.perf_counter_ns()
        broker.on_tick(tick)
        samples.append(time.perf_counter_ns() - started)
    _settle(broker)
    assert not [fill for fill in broker.list_fills()], "a timed quote crossed a resting order"
    broker.close()
    database.dispose()
    return _percentiles(samples)


def main() -> None:
    submits = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    ticks = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        result = {
            "code": str(Path.cwd()),
            "submit_order": bench_submit(path, submits),
            "on_tick_10_working": bench_tick(path, 10, ticks),
            "on_tick_200_working": bench_tick(path, 200, ticks),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
