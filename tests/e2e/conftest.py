"""End-to-end harness: ``python -m launcher`` as a subprocess, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fast_paper_config(workdir: Path) -> Path:
    """configs/paper.yaml, sped up so that trades come within seconds, not minutes."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text())
    config["instance_id"] = "vigil-e2e"
    config["feed"]["tick_interval_ms"] = 50
    config["feed"]["volatility_bps"] = 1.0
    for strategy in config["strategies"]:
        strategy["bar_interval_s"] = 1
    path = workdir / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Launcher:
    """One engine process in ``workdir`` (its data/ and logs/ live there)."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workdir / 'data' / 'vigil.db'}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "vigil.log"

    def start(self, environment: dict[str, str] | None = None) -> None:
        """Start the process; ``environment`` adds or overrides variables (DATABASE_URL...)."""
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "VIGIL_HTTP_PORT": str(self.port),
        }
        env.pop("DATABASE_URL", None)
        env.pop("VIGIL_DATA_DIR", None)
        env.update(environment or {})
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--config", str(self.config)],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "stderr.log", "ab"),  # noqa: SIM115
        )

    def wait_ready(self, timeout_s: float = 15.0) -> float:
        """Wait for ``GET /ready`` 200; returns seconds since the process started."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"engine exited with {self.process.returncode}: {self.stderr()}"
                )
            try:
                response = self.client.get("/ready")
            except httpx.TransportError:
                return False
            last_answer[0] = response.text[:2000]
            return response.status_code == 200

        # A timeout says why the engine was not ready (its /ready blockers).
        last_answer = ["no answer"]
        try:
            wait_until(ready, timeout_s=timeout_s, message="/ready 200")
        except AssertionError as error:
            raise AssertionError(f"{error}; last /ready answer: {last_answer[0]}") from None
        return time.monotonic() - self.started_at

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to end by itself; returns its exit code."""
        assert self.process is not None
        return self.process.wait(timeout_s)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def stderr(self) -> str:
        path = self.workdir / "stderr.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def log_lines(self, text: str) -> list[str]:
        if not self.log_file.exists():
            return []
        return [line for line in self.log_file.read_text().splitlines() if text in line]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.client.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    engine = Launcher(tmp_path, fast_paper_config(tmp_path), free_port())
    yield engine
    engine.close()
