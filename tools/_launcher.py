"""One ``python -m launcher`` subprocess for the developer tools (``tools.torture``).

The tools-side twin of ``tests/e2e/conftest.Launcher`` (tools never import ``tests/``): start
the engine in a work directory, wait for a condition on it with a deadline, signal it
(SIGKILL, SIGSTOP/SIGCONT, SIGTERM) and read its log. Nothing here knows about trials or
checks; ``tools.torture`` does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "REPO_ROOT",
    "EngineExited",
    "EngineProcess",
    "free_port",
    "send_raw_post",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

_POLL_S = 0.02
T = TypeVar("T")


class EngineExited(RuntimeError):
    """The engine process ended while we were waiting on it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], T], *, timeout_s: float, message: str, poll_s: float = _POLL_S
) -> T:
    """Poll ``condition`` every ``poll_s`` until it returns something truthy; return that
    value.

    Raises:
        TimeoutError: ``timeout_s`` passed first (the message names what was awaited).
        EngineExited: raised by ``condition`` (not retried: the process is gone).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f}s waiting for {message}")
        time.sleep(poll_s)


def send_raw_post(port: int, path: str, body: dict[str, Any]) -> socket.socket:
    """POST ``body`` as JSON to the engine on a raw socket and return it unread: "the request
    was sent" is then an exact instant (``sendall`` returned), so a kill can follow it by a
    measured delay; the answer, if any, is read after the kill."""
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    connection = socket.create_connection(("127.0.0.1", port), timeout=2)
    connection.sendall(request)
    return connection


class EngineProcess:
    """The engine in ``workdir`` (its data/, logs/ and stderr.log live there).

    Args:
        workdir: the process's cwd; relative paths of the config resolve against it.
        config: the YAML profile to start with.
        port: the admin HTTP port (``VIGIL_HTTP_PORT``).
        database_url: passed as ``DATABASE_URL`` (it overrides the config's), so that a
            password in it never lands in a config file that a failed run keeps; None keeps
            the config's URL.
    """

    def __init__(
        self, workdir: Path, config: Path, port: int, *, database_url: str | None = None
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port
        self.database_url = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "vigil.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the engine was not started"
        return self.process.pid

    def start(self) -> None:
        """Start a new incarnation (the previous one must have ended)."""
        assert self.process is None or self.process.poll() is not None, "still running"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "VIGIL_HTTP_PORT": str(self.port)}
        # The config names the database unless we were given one: an inherited DATABASE_URL
        # would override it.
        env.pop("DATABASE_URL", None)
        if self.database_url is not None:
            env["DATABASE_URL"] = self.database_url
        self.started_at = time.monotonic()
        with open(self.workdir / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "launcher", "--config", str(self.config)],
                cwd=self.workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get_json(self, path: str) -> Any | None:
        """``GET path`` as JSON, or None when the server does not answer (yet)."""
        if not self.alive():
            assert self.process is not None
            raise EngineExited(
                f"engine exited with {self.process.returncode}: {self.stderr_tail()}"
            )
        try:
            return self.client.get(path).json()
        except (httpx.TransportError, ValueError):
            return None

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a clean stop: lease released); returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def stderr_tail(self, characters: int = 3000) -> str:
        path = self.workdir / "stderr.log"
        return path.read_text(errors="replace")[-characters:] if path.exists() else ""

    def log_lines(self, text: str) -> list[str]:
        if not self.log_file.exists():
            return []
        return [
            line for line in self.log_file.read_text(errors="replace").splitlines() if text in line
        ]

    def close(self) -> None:
        """Kill the process if it still runs (also when stopped by SIGSTOP)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.client.close()
