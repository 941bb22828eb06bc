"""Benchmark: flatten N bracketed positions at Kite's published rate limits (issue 9).

``python -m tools.bench_kite_flatten [--positions 50] [--fresh-minute] [--no-flatten-reserve]``
(``make bench-kite``)
runs the engine (``configs/demo_kite.yaml``: the threaded gateway at 10 order requests/s and
200/min) against the local fake Kite (``tools.fake_kite``, which counts every request) over
real sockets on the wall clock. It opens N brackets (MARKET entry, then the SL-M stop and the
LIMIT target once filled), flattens, and prints:

- how long opening and protecting the N brackets took;
- how long the flatten took until Kite shows no open position and none of our orders working,
  and until the first unit and half of them were closed;
- the most order requests Kite saw in any second and in any minute (never above the limits);
- whether the engine HALTed, and how many client ids Kite holds more than once (none);
- how many entries waited for the gateway's flatten reserve, and the flatten's floor at the
  per-second limit alone (N target cancels + N stops made MARKET orders, at 10/s).

Prints numbers, never fails on timing. ``--fresh-minute`` waits for the per-minute window to
clear before the flatten (opening N brackets uses 3N of the 200 requests a minute).
``--no-flatten-reserve`` switches the gateway's flatten reserve off (``broker.flatten_reserve``),
which is how the engine ran before it: the entries may then use the whole minute, and the
flatten after them waits for the minute to roll.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from adapters.brokers.kite import encode_tag
from domain.enums import LegKind, OrderType, Side, TradingState
from domain.messages import FlattenAll, QueryPositions, QueryTradingState, TradePlan
from domain.plans import client_order_id, plan_client_id
from launcher.config import load_config
from launcher.engine import Engine
from tools.fake_kite import FakeKite

REPO_ROOT = Path(__file__).resolve().parents[1]
_OPEN_STATUSES = ("OPEN", "TRIGGER PENDING")
# Wide enough that only the broker's limits bound the bench (up to 100 brackets).
BENCH_RISK: dict[str, Any] = {
    "max_concurrent_positions": 110,
    "portfolio_heat_cap_pct": Decimal("100"),
    "per_trade_risk_pct": Decimal("1"),
    "max_trades_per_hour": 1000,
    "per_symbol_exposure_cap_rupees": Decimal("100000000"),
}


def _wait(condition: Any, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _closing_times(fake: FakeKite, started: float) -> dict[str, float]:
    """Watch the quantity open at Kite (the brackets share three symbols, so it is counted in
    units, not positions) until half of it is closed: seconds from ``started`` to the first
    close and to the half."""

    def open_units() -> int:
        return sum(abs(int(row["quantity"])) for row in fake.positions()["net"])

    initial = open_units()
    times: dict[str, float] = {}
    deadline = started + 600
    while "half" not in times and time.monotonic() < deadline:
        still_open = open_units()
        elapsed = round(time.monotonic() - started, 2)
        if still_open < initial:
            times.setdefault("first", elapsed)
        if still_open <= initial / 2:
            times["half"] = elapsed
        time.sleep(0.02)
    return times


def _engine(fake: FakeKite, root: Path, *, flatten_reserve: bool = True) -> Engine:
    config = load_config(REPO_ROOT / "configs" / "demo_kite.yaml", environ={}, dotenv_path=None)
    config = config.model_copy(
        update={
            "data_dir": str(root / "data"),
            "logs_dir": str(root / "logs"),
            "database_url": f"sqlite:///{root / 'vigil.db'}",
            "strategies": (),  # the bench is the strategy
            "risk": config.risk.model_copy(update=BENCH_RISK),
            "broker": config.broker.model_copy(update={"flatten_reserve": flatten_reserve}),
            "kite": config.kite.model_copy(
                update={
                    "api_key": SecretStr(fake.api_key),
                    "access_token": SecretStr(fake.create_session()),
                    "access_token_file": None,
                    "rest_base_url": fake.base_url,
                    "ws_base_url": fake.ws_url,
                }
            ),
        }
    )
    (root / "logs").mkdir(exist_ok=True)
    engine = Engine(config, run_http=False)
    engine.start()
    _wait(lambda: engine.gate.entry_denial(engine.clock.now_ns()) is None, 60, "entries allowed")
    ticks = engine.metrics.ticks_total.labels(feed=engine.feed_name)
    _wait(lambda: ticks._value.get() >= 10, 60, "ticks")
    return engine


def _on_tick(price: Decimal) -> Decimal:
    tick = Decimal("0.05")
    return (price / tick).quantize(Decimal(1)) * tick


def bracket_plan(
    fake: FakeKite, *, now_ns: int, symbol: str, strategy: str, quantity: int = 1
) -> TradePlan:
    """A BUY bracket around the fake's last price (stop and target 5 % away: the fake's walk
    moves about 1 % in three minutes, so no bracket closes by itself while the others open and
    the flatten closes all N), MARKET entry, as a strategy would send it to the risk actor."""
    last = Decimal(str(fake.quote(f"NSE:{symbol}")["last_price"]))
    fields: dict[str, Any] = {
        "strategy": strategy,
        "instrument": symbol,
        "side": Side.BUY,
        "entry_price": last,
        "stop_price": _on_tick(last * Decimal("0.95")),
        "target_price": _on_tick(last * Decimal("1.05")),
        "quantity": quantity,
        "signal_ts": now_ns,
    }
    return TradePlan(
        plan_client_id=plan_client_id(**fields),
        entry_type=OrderType.MARKET,
        ts_init=now_ns,
        **fields,
    )


def send_bracket_plans(engine: Engine, fake: FakeKite, positions: int) -> list[str]:
    symbols = ("INFY", "RELIANCE", "SBIN")
    plan_ids = []
    for index in range(positions):
        plan = bracket_plan(
            fake,
            now_ns=engine.clock.now_ns() + index,
            symbol=symbols[index % len(symbols)],
            # one bracket per strategy and instrument: a strategy name per three plans
            strategy=f"bench{index // len(symbols):02d}",
        )
        engine.directory.tell("risk", plan)
        plan_ids.append(plan.plan_client_id)
    return plan_ids


def brackets_protected(fake: FakeKite, plan_ids: list[str]) -> bool:
    working = {
        order.get("tag")
        for order in fake.orders()
        if str(order.get("status", "")).upper() in _OPEN_STATUSES
    }
    return all(
        encode_tag(client_order_id(plan, LegKind.STOP)) in working
        and encode_tag(client_order_id(plan, LegKind.TARGET)) in working
        for plan in plan_ids
    )


def flat_at_kite(fake: FakeKite) -> bool:
    if any(int(row["quantity"]) != 0 for row in fake.positions()["net"]):
        return False
    return not any(str(o.get("status", "")).upper() in _OPEN_STATUSES for o in fake.orders())


def run(positions: int, *, fresh_minute: bool, flatten_reserve: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-kite-") as directory:
        fake = FakeKite(account_type="DEMO", step_interval_s=0.1, heartbeat_interval_s=0.5)
        fake.start()
        engine = _engine(fake, Path(directory), flatten_reserve=flatten_reserve)
        try:
            started = time.monotonic()
            plan_ids = send_bracket_plans(engine, fake, positions)
            _wait(
                lambda: brackets_protected(fake, plan_ids), 300, f"{positions} brackets protected"
            )
            open_s = time.monotonic() - started
            if fresh_minute:
                time.sleep(61)  # the per-minute window clears (a benchmark, not a test)
            engine.directory.ask(
                "order", FlattenAll(reason="bench", ts_init=engine.clock.now_ns()), timeout_s=30
            )
            flatten_started = time.monotonic()
            closed_at = _closing_times(fake, flatten_started)
            _wait(lambda: flat_at_kite(fake), 600, "flat at Kite")
            flatten_s = time.monotonic() - flatten_started
            _wait(
                lambda: not engine.directory.ask("order", QueryPositions(), timeout_s=10),
                60,
                "the engine flat",
            )
            control = engine.directory.ask("kill_switch", QueryTradingState(), timeout_s=10)
            tags = Counter(o.get("tag") for o in fake.orders())
            assert engine.gateway is not None
            reserve = engine.gateway.snapshot().get("flatten_reserve", {})
            per_s = engine.config.broker.rate_limit_per_s or 0
            return {
                "positions": positions,
                "open_and_protect_s": round(open_s, 2),
                "flatten_s": round(flatten_s, 2),
                "first_closed_s": closed_at.get("first"),
                "half_closed_s": closed_at.get("half"),
                "fresh_minute": fresh_minute,
                "flatten_reserve": flatten_reserve,
                "entries_held_for_reserve": reserve.get("entries_held_total", 0),
                "flatten_floor_s": round(2 * positions / per_s, 1) if per_s else None,
                "order_requests_per_s_max": fake.order_requests_per_second_max(),
                "order_requests_per_min_max": fake.order_requests_per_minute_max(),
                "order_requests_total": len(fake.request_log(category="order")),
                "halted": control.state.state is TradingState.HALTED,
                "halt_reason": control.state.halt_reason,
                "duplicate_client_ids": sum(1 for count in tags.values() if count > 1),
            }
        finally:
            engine.stop()
            fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=50)
    parser.add_argument(
        "--fresh-minute",
        action="store_true",
        help="wait for the per-minute window to clear before the flatten",
    )
    parser.add_argument(
        "--no-flatten-reserve",
        action="store_true",
        help="switch the gateway's flatten reserve off (how the engine ran before it)",
    )
    args = parser.parse_args(argv)
    result = run(
        args.positions,
        fresh_minute=args.fresh_minute,
        flatten_reserve=not args.no_flatten_reserve,
    )
    for key, value in result.items():
        print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
