"""Shared fixtures: a manual clock, temp storage, and engines whose teardown stops every actor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from domain.clock import ManualClock
from domain.config import EngineConfig
from launcher.engine import Engine
from tests.helpers import make_config

pytest_plugins = ["tests.conftest_postgres"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine_factory(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Engine]]:
    """Build and start engines on a manual clock with no ticker and no feed pump.

    The test drives time (``clock.advance`` + ``engine.fire_timer()``) and market data
    (``engine.publish_ticks``). Every engine is stopped at teardown, and so is any actor left.
    """
    engines: list[Engine] = []

    def build(
        config: EngineConfig | None = None, *, run_http: bool = False, **kwargs: Any
    ) -> Engine:
        engine = Engine(
            config or make_config(tmp_path),
            clock=kwargs.pop("clock", clock),
            run_ticker=False,
            run_feed=False,
            run_http=run_http,
            **kwargs,
        )
        engines.append(engine)
        engine.start()
        return engine

    yield build
    for engine in reversed(engines):
        engine.stop()
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
