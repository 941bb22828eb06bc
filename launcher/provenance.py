"""What code a process runs: the git SHA of the checkout (recorded at each engine start).

``git_sha()`` is ``$VIGIL_GIT_SHA`` when set (an image built without ``.git`` sets it at build
time), else ``git rev-parse HEAD`` of the repository this file lives in, else ``unknown``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["GIT_SHA_ENV", "REPO_ROOT", "git_sha"]

REPO_ROOT = Path(__file__).resolve().parents[1]
GIT_SHA_ENV = "VIGIL_GIT_SHA"


def git_sha(root: Path = REPO_ROOT) -> str:
    """The commit checked out at ``root`` (see the module docstring); never raises."""
    from_environment = os.environ.get(GIT_SHA_ENV, "").strip()
    if from_environment:
        return from_environment[:64]
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
