"""`python -m launcher --config configs/rehearsal.yaml`: the process a LIVE rehearsal runs.

Every line it logs, from its first to its last, says REHEARSAL, and the secrets it was given
through the environment never appear in its log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, Launcher, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LIVE_ENABLE_TOKEN = "rehearsal-live-enable-token-0123456789abcdef"
ADMIN_TOKEN = "rehearsal-admin-token-0123456789abcdef"


@pytest.mark.parametrize("profile", ["rehearsal.yaml", "canary_live.yaml"])
def test_every_line_of_a_rehearsal_process_says_rehearsal(tmp_path: Path, profile: str) -> None:
    launcher = Launcher(tmp_path, REPO_ROOT / "configs" / profile, free_port())
    try:
        launcher.start({"LIVE_ENABLE_TOKEN": LIVE_ENABLE_TOKEN, "VIGIL_ADMIN_TOKEN": ADMIN_TOKEN})
        launcher.wait_ready(timeout_s=30)
        assert launcher.terminate() == 0
    finally:
        launcher.close()

    logs_dir = tmp_path / "logs" / ("rehearsal" if profile == "rehearsal.yaml" else "canary")
    text = (logs_dir / "vigil.log").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) > 5  # start-up, connect, leadership, stop
    for line in lines:
        assert line["rehearsal"] == "REHEARSAL", line
        assert line["message"].startswith("REHEARSAL "), line
    assert any("connected" in line["message"] for line in lines)
    assert LIVE_ENABLE_TOKEN not in text
    assert ADMIN_TOKEN not in text
