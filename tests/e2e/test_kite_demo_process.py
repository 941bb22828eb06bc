"""What ``make demo-kite`` runs, as processes: ``python -m tools.fake_kite`` (a DEMO account),
``python -m tools.kite_login`` through the fake's login page writing the token file, then
``python -m launcher --config configs/demo_kite.yaml`` (pointed at the fake's port). The engine
comes up ready, with market data and an order stream from the fake, and stops cleanly; the
access token never reaches its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO_ROOT, Launcher, free_port
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def fake_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.fake_kite", "--port", str(port), "--account-type", "DEMO"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "fake.log", "ab"),  # noqa: SIM115
    )
    yield port
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def test_the_demo_processes_start_log_in_trade_data_and_stop(
    fake_port: int, tmp_path: Path
) -> None:
    token_file = tmp_path / "data" / "kite_access_token"
    base = f"http://127.0.0.1:{fake_port}"
    login = subprocess.run(
        [
            sys.executable, "-m", "tools.kite_login",
            "--api-key", "fake_api_key", "--api-secret", "fake_api_secret",
            "--base-url", base, "--login-base", base,
            "--fetch-request-token", "--wait-s", "20", "--write", str(token_file),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    token = token_file.read_text().strip()
    assert token and token not in login.stdout

    config = yaml.safe_load((REPO_ROOT / "configs" / "demo_kite.yaml").read_text())
    config.update(database_url="sqlite:///data/vigil.db", data_dir="data", logs_dir="logs")
    config["kite"].update(
        rest_base_url=base,
        ws_base_url=f"ws://127.0.0.1:{fake_port}/ws",
        access_token_file=str(token_file),
    )
    config_path = tmp_path / "demo_kite.yaml"
    config_path.write_text(yaml.safe_dump(config))
    launcher = Launcher(tmp_path, config_path, free_port())
    try:
        launcher.start()
        launcher.wait_ready(timeout_s=60)

        def streams_fresh() -> bool:
            status = launcher.get("/status").json()
            ages = status["marketdata_age_s"]
            return (
                status["trading_state"] == "ACTIVE"
                and status["armed"] is True
                and ages.get("kite") is not None
                and ages["kite"] < 5
                and status["order_stream_age_s"] is not None
                and status["order_stream_age_s"] < 5
            )

        wait_until(streams_fresh, timeout_s=30, message="ticks and order stream from the fake")
        assert launcher.terminate() == 0
    finally:
        launcher.close()
    log = launcher.log_file.read_text()
    assert "connected: account FK0001" in log
    assert token not in log
    state = httpx.get(f"{base}/_fake/state", timeout=5).json()
    assert state["account_type"] == "DEMO"
