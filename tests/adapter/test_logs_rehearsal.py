"""A rehearsal of LIVE says so in every log line: the real logging set-up, written to a file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.logs import configure_logging, flush_logging, log_event, shutdown_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    shutdown_logging()
    root.setLevel(level)


def _lines(logs_dir: Path) -> list[dict[str, Any]]:
    assert flush_logging()
    text = (logs_dir / "vigil.log").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _log_one_of_each() -> None:
    logging.getLogger("actors.order").info("placed %d orders", 3)
    log_event(logging.getLogger("actors.kill_switch"), "MODE_SWITCH", "Mode switched to LIVE")
    logging.getLogger("sqlalchemy.engine").warning("a library's own line")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("actors.broker").exception("broker call failed")
    # An extra field of the same name cannot hide the tag.
    logging.getLogger("actors.risk").info("risk blocked", extra={"rehearsal": "no"})
    # Already tagged by its caller: not tagged twice.
    logging.getLogger("launcher").info("REHEARSAL engine started")


def test_every_line_of_a_rehearsal_says_rehearsal(tmp_path: Path) -> None:
    configure_logging(logs_dir=tmp_path, stream=False, rehearsal=True)
    _log_one_of_each()

    lines = _lines(tmp_path)
    assert len(lines) == 6
    for line in lines:
        assert line["rehearsal"] == "REHEARSAL", line
        assert line["message"].startswith("REHEARSAL "), line
    messages = [line["message"] for line in lines]
    assert messages[0] == "REHEARSAL placed 3 orders"
    assert messages[1] == "REHEARSAL Mode switched to LIVE"
    assert lines[1]["event"] == "MODE_SWITCH"
    assert "boom" in lines[3]["exc"]
    assert messages[5] == "REHEARSAL engine started"


def test_stderr_lines_say_rehearsal_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(logs_dir=tmp_path, stream=True, rehearsal=True)
    logging.getLogger("actors.order").info("placed")
    assert flush_logging()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["rehearsal"] == "REHEARSAL"
    assert line["message"] == "REHEARSAL placed"


def test_ordinary_lines_carry_no_rehearsal_tag(tmp_path: Path) -> None:
    configure_logging(logs_dir=tmp_path, stream=False)
    _log_one_of_each()

    lines = _lines(tmp_path)
    assert lines[0]["message"] == "placed 3 orders"
    assert all(not line["message"].startswith("REHEARSAL ") for line in lines[:5])
    assert lines[4]["rehearsal"] == "no"  # an extra field is just an extra field
    assert all("rehearsal" not in line for line in lines[:4])
