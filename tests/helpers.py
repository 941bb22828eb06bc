"""Test helpers: waiting on conditions, config builders, tick builders."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from domain.config import EngineConfig
from domain.messages import Tick

__all__ = ["eventually", "make_config", "make_tick", "wait_until"]

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, timeout_s: float = 10.0, message: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except AssertionError as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}{detail}")
        time.sleep(0.005)


def eventually(assertion: Callable[[], None], *, timeout_s: float = 10.0) -> None:
    """Retry an assertion until it passes or the deadline expires (then re-raise it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            assertion()
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def make_config(tmp_path: Path, **overrides: Any) -> EngineConfig:
    """A small engine config rooted in ``tmp_path``: two instruments, one strategy each kind."""
    data: dict[str, Any] = {
        "instance_id": "vigil-test",
        "database_url": f"sqlite:///{tmp_path / 'data' / 'vigil.db'}",
        "data_dir": str(tmp_path / "data"),
        "logs_dir": str(tmp_path / "logs"),
        "instruments": [
            {
                "symbol": "AAA",
                "lot_size": 1,
                "tick_size": "0.05",
                "reference_price": "100",
                "freeze_quantity": 10000,
                "max_spread_ticks": 10,
            },
            {
                "symbol": "BBB",
                "lot_size": 10,
                "tick_size": "0.05",
                "reference_price": "200",
                "freeze_quantity": 10000,
                "max_spread_ticks": 10,
            },
        ],
        "strategies": [
            {"name": "orb_1", "kind": "orb", "instruments": ["AAA", "BBB"]},
            {"name": "ema_1", "kind": "ema_pullback", "instruments": ["AAA", "BBB"]},
        ],
        "paper_broker": {"latency_ms": 0},
        "http": {"port": 0},
        "risk": {
            "capital_rupees": "1000000",
            "per_trade_risk_pct": "0.1",
            "portfolio_heat_cap_pct": "5",
            "max_order_size": 1000,
            "max_concurrent_positions": 50,
            "per_symbol_exposure_cap_rupees": "10000000",
            "max_trades_per_hour": 1000,
        },
        "supervision": {"backoff_initial_s": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return EngineConfig.model_validate(data)


def make_tick(
    instrument: str,
    bid: str | Decimal,
    ask: str | Decimal,
    *,
    ts: int,
    last: str | Decimal | None = None,
) -> Tick:
    bid_d, ask_d = Decimal(bid), Decimal(ask)
    return Tick(
        instrument=instrument,
        bid=bid_d,
        ask=ask_d,
        last=Decimal(last) if last is not None else (bid_d + ask_d) / 2,
        bid_size=100,
        ask_size=100,
        volume=100,
        ts_event=ts,
        ts_init=ts,
    )
