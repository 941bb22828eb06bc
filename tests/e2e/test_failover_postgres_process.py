"""Acceptance 3 with real processes: two ``python -m launcher`` on one throwaway PostgreSQL,
the same profile (same instance_id), a 2 s lease renewed every 0.5 s; SIGKILL the leader while
its strategies trade. The standby takes the lease, takes over the old brackets, trades, and
when the operator flattens it, it cancels the old leader's stops and targets and closes every
position. Prints the wall time from the SIGKILL to the takeover and to the new leader's first
order the venue took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from adapters.storage.database import Database
from tests.e2e.conftest import Launcher, fast_paper_config, free_port
from tests.helpers import wait_until
from tools.reconcile import reconcile

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(300)]

TERMINAL = ("FILLED", "CANCELLED", "REJECTED")


def process(tmp_path: Path, name: str, database_url: str) -> Launcher:
    workdir = tmp_path / name
    workdir.mkdir()
    path = fast_paper_config(workdir)
    config = yaml.safe_load(path.read_text())
    config["database_url"] = database_url
    config["leader"] = {"lease_ttl_s": 2.0, "renew_interval_s": 0.5}
    path.write_text(yaml.safe_dump(config))
    return Launcher(workdir, path, free_port())


def query(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def answers(launcher: Launcher) -> bool:
    assert launcher.process is not None
    if launcher.process.poll() is not None:
        raise AssertionError(f"engine exited: {launcher.stderr()}")
    try:
        return launcher.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def open_positions(url: str) -> set[str]:
    rows = query(url, "SELECT position_id FROM positions WHERE status = 'OPEN' AND quantity > 0")
    return {row["position_id"] for row in rows}


def test_sigkill_of_the_leader_hands_the_book_to_the_standby(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    url = fresh_postgres_url
    first = process(tmp_path, "a", url)
    second = process(tmp_path, "b", url)
    try:
        first.start()
        first.wait_ready(timeout_s=60)
        second.start()
        wait_until(lambda: answers(second), timeout_s=60, message="standby up")
        wait_until(
            lambda: len(open_positions(url)) >= 2, timeout_s=120, message="two open positions"
        )
        [lease] = query(url, "SELECT holder, epoch FROM leader_lease")
        at_kill = open_positions(url)
        first.kill()
        killed = time.monotonic()

        def new_lease() -> dict[str, Any] | None:
            [row] = query(url, "SELECT holder, epoch FROM leader_lease")
            return row if row["epoch"] == lease["epoch"] + 1 else None

        def takeover_logged() -> bool:
            return bool(second.log_lines("TAKEOVER"))

        def first_new_order() -> bool:
            rows = query(
                url,
                "SELECT o.client_order_id FROM orders o JOIN venue_orders v "
                "ON v.client_order_id = o.client_order_id WHERE o.epoch = :epoch",
                epoch=lease["epoch"] + 1,
            )
            return bool(rows)

        taken = wait_until(new_lease, timeout_s=30, message="standby takes the lease")
        assert taken["holder"] != lease["holder"]
        wait_until(takeover_logged, timeout_s=30, message="takeover finished")
        takeover_s = time.monotonic() - killed
        wait_until(first_new_order, timeout_s=90, message="the new leader's first order")
        first_order_s = time.monotonic() - killed
        print(
            f"\nFAILOVER (2 processes, PostgreSQL, lease_ttl_s=2, renew_interval_s=0.5): "
            f"SIGKILL -> takeover {takeover_s:.2f} s, -> first order at the venue "
            f"{first_order_s:.2f} s (wall; the first order waits for a strategy signal)"
        )
        second.wait_ready(timeout_s=30)

        # The standby manages what the dead leader left: flattening cancels the old stops and
        # targets and closes every position, old ones included.
        assert at_kill
        assert second.post("/flatten", json={"reason": "failover drill"}).status_code == 200

        def flat() -> bool:
            working = query(
                url,
                f"SELECT client_order_id FROM venue_orders WHERE status NOT IN {TERMINAL}",
            )
            return not open_positions(url) and not working

        wait_until(flat, timeout_s=60, message="flat after the flatten")
        for plan_id in at_kill:
            legs = query(
                url,
                "SELECT leg, status, epoch FROM orders WHERE plan_client_id = :plan",
                plan=plan_id,
            )
            assert all(row["status"] in TERMINAL for row in legs), legs
        database = Database.from_url(url, migrate=False)
        try:
            assert reconcile(database).clean
        finally:
            database.dispose()
        venue_net = query(url, "SELECT instrument FROM venue_positions WHERE quantity <> 0")
        assert venue_net == []
        assert second.terminate() == 0
    finally:
        first.close()
        second.close()
