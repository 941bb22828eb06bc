"""`make paper` as shipped: the default profile is ready fast and trades within a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, Launcher, free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_the_default_paper_profile_is_ready_within_15s_and_orders_flow_within_60s(
    tmp_path: Path,
) -> None:
    launcher = Launcher(tmp_path, REPO_ROOT / "configs" / "paper.yaml", free_port())
    try:
        launcher.start()
        assert launcher.wait_ready(timeout_s=15) <= 15
        wait_until(
            lambda: launcher.get("/orders").json()["count"] > 0,
            timeout_s=60 - launcher.wait_ready(),
            message="orders within 60 s of the start",
        )
        status = launcher.get("/status").json()
        assert status["mode"] == "PAPER" and status["armed"] and status["is_leader"]
        assert launcher.terminate() == 0
    finally:
        launcher.close()
