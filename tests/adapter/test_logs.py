"""JSON-lines logging, redaction and state dumps, written to a temp directory."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.logs import (
    REDACTED,
    JsonFormatter,
    _write_synchronously_from_now_on,
    configure_logging,
    flush_logging,
    log_event,
    shutdown_logging,
    write_state_dump,
)
from domain.enums import Mode
from domain.messages.orders import FlattenCompleted

SECRET = "kite-api-secret-8f3a"
NOW_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    shutdown_logging()
    root.setLevel(level)


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def _lines(logs_dir: Path, file_name: str = "vigil.log") -> list[dict[str, Any]]:
    assert flush_logging()  # the writer thread has written every line logged so far
    text = (logs_dir / file_name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


class TestJsonLines:
    def test_each_record_is_one_json_object_with_the_standard_keys(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        logging.getLogger("actors.order").info("placed %d orders", 3)
        logging.getLogger("actors.risk").warning("heat near cap")

        first, second = _lines(logs_dir)
        assert first["level"] == "INFO"
        assert first["logger"] == "actors.order"
        assert first["event"] == "LOG"
        assert first["message"] == "placed 3 orders"
        assert first["ts"].endswith("Z")
        assert "T" in first["ts"]
        assert second["level"] == "WARNING"
        assert "exc" not in first

    def test_extra_fields_are_written_alongside(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        logging.getLogger("x").info(
            "mode switched", extra={"event": "MODE_SWITCH", "mode": Mode.LIVE, "epoch": 4}
        )

        (line,) = _lines(logs_dir)
        assert line["event"] == "MODE_SWITCH"
        assert line["mode"] == "LIVE"
        assert line["epoch"] == 4

    def test_exception_text_goes_in_exc(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        try:
            raise ZeroDivisionError("broker figures divided by zero")
        except ZeroDivisionError:
            logging.getLogger("x").exception("handler failed")

        (line,) = _lines(logs_dir)
        assert line["level"] == "ERROR"
        assert "Traceback" in line["exc"]
        assert "ZeroDivisionError: broker figures divided by zero" in line["exc"]

    def test_level_filters_records_below_it(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, level="WARNING", stream=False)

        logging.getLogger("x").info("quiet")
        logging.getLogger("x").error("loud")

        assert [line["message"] for line in _lines(logs_dir)] == ["loud"]

    def test_an_unknown_level_is_refused(self, logs_dir: Path) -> None:
        with pytest.raises(ValueError, match="LOUD"):
            configure_logging(logs_dir=logs_dir, level="LOUD", stream=False)

    def test_stream_writes_the_same_json_to_stderr(
        self, logs_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging(logs_dir=logs_dir, stream=True)

        logging.getLogger("x").info("to both")
        assert flush_logging()

        stderr_lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [line["message"] for line in stderr_lines] == ["to both"]
        assert [line["message"] for line in _lines(logs_dir)] == ["to both"]

    def test_a_bad_format_string_still_formats_a_line(self) -> None:
        # Built by hand: pytest's own capture handler would raise on this record first.
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "two %s %s", ("one",), None)

        line = json.loads(JsonFormatter().format(record))

        assert "two %s %s" in line["message"]


class TestIdempotence:
    def test_configuring_twice_does_not_duplicate_handlers_or_lines(self, logs_dir: Path) -> None:
        root = logging.getLogger()
        before = len(root.handlers)

        configure_logging(logs_dir=logs_dir, stream=True)
        after_first = len(root.handlers)
        configure_logging(logs_dir=logs_dir, stream=True)

        assert len(root.handlers) == after_first == before + 1  # one queue handler
        logging.getLogger("x").warning("once")
        assert [line["message"] for line in _lines(logs_dir)] == ["once"]

    def test_reconfiguring_moves_to_the_new_directory(self, tmp_path: Path) -> None:
        configure_logging(logs_dir=tmp_path / "a", stream=False)
        configure_logging(logs_dir=tmp_path / "b", stream=False)

        logging.getLogger("x").warning("here")

        assert (tmp_path / "a" / "vigil.log").read_text() == ""
        assert [line["message"] for line in _lines(tmp_path / "b")] == ["here"]

    def test_shutdown_removes_only_our_handlers(self, logs_dir: Path) -> None:
        root = logging.getLogger()
        theirs = logging.NullHandler()
        root.addHandler(theirs)
        try:
            configure_logging(logs_dir=logs_dir, stream=False)
            shutdown_logging()

            assert theirs in root.handlers
            assert not any(getattr(h, "_vigil", False) for h in root.handlers)
        finally:
            root.removeHandler(theirs)


class TestRedaction:
    def test_a_configured_secret_is_redacted_from_the_message(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, secrets=[SECRET], stream=False)

        logging.getLogger("x").info("login with %s failed", SECRET)

        (line,) = _lines(logs_dir)
        assert SECRET not in json.dumps(line)
        assert line["message"] == f"login with {REDACTED} failed"

    def test_a_configured_secret_is_redacted_from_extra_fields(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, secrets=[SECRET], stream=False)

        logging.getLogger("x").info(
            "request",
            extra={"url": f"https://api.example/session?k={SECRET}", "nested": {"key": SECRET}},
        )

        (line,) = _lines(logs_dir)
        assert SECRET not in json.dumps(line)
        assert line["url"] == f"https://api.example/session?k={REDACTED}"
        assert line["nested"] == {"key": REDACTED}

    def test_bearer_credentials_and_token_parameters_are_redacted_without_configuration(
        self, logs_dir: Path
    ) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        logging.getLogger("x").info(
            "sent Authorization: Bearer abc.DEF-123 to /x?access_token=zzz9&limit=5"
        )

        (line,) = _lines(logs_dir)
        assert "abc.DEF-123" not in line["message"]
        assert "zzz9" not in line["message"]
        assert f"Bearer {REDACTED}" in line["message"]
        assert f"access_token={REDACTED}&limit=5" in line["message"]

    def test_fields_named_like_secrets_are_redacted(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        logging.getLogger("x").info("login", extra={"password": "hunter22", "api_key": "k-1"})

        (line,) = _lines(logs_dir)
        assert line["password"] == REDACTED
        assert line["api_key"] == REDACTED

    def test_a_secret_inside_an_exception_is_redacted(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, secrets=[SECRET], stream=False)

        try:
            raise ConnectionError(f"refused for key {SECRET}")
        except ConnectionError:
            logging.getLogger("x").exception("connect failed")

        (line,) = _lines(logs_dir)
        assert SECRET not in line["exc"]
        assert REDACTED in line["exc"]


class TestLogEvent:
    def test_log_event_writes_the_event_and_encodes_structs_and_decimals(
        self, logs_dir: Path
    ) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)
        completed = FlattenCompleted(
            reason="risk_cap",
            positions_closed=2,
            orders_cancelled=4,
            remaining_positions=0,
            remaining_working_orders=0,
            duration_ms=41.5,
            ts_event=NOW_NS,
        )

        log_event(
            logging.getLogger("actors.order"),
            "FLATTEN",
            "flatten completed",
            result=completed,
            pnl=Decimal("-120.25"),
            path=Path("/tmp/x"),
        )

        (line,) = _lines(logs_dir)
        assert line["event"] == "FLATTEN"
        assert line["message"] == "flatten completed"
        assert line["result"]["positions_closed"] == 2
        assert line["pnl"] == "-120.25"
        assert line["path"] == "/tmp/x"

    def test_log_event_renames_fields_that_clash_with_record_attributes(
        self, logs_dir: Path
    ) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        log_event(logging.getLogger("x"), "TRIPWIRE", "fired", name="spread", level=logging.ERROR)

        (line,) = _lines(logs_dir)
        assert line["level"] == "ERROR"
        assert line["logger"] == "x"
        assert line["name_"] == "spread"


class TestWriterThread:
    """The caller only queues a record; the vigil-log-writer thread writes it."""

    def test_a_stuck_stderr_does_not_block_the_caller(
        self, logs_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        release = threading.Event()
        writer_reached_stderr = threading.Event()

        class StuckStream(io.StringIO):
            def write(self, text: str) -> int:
                writer_reached_stderr.set()
                release.wait(10)
                return super().write(text)

        monkeypatch.setattr(sys, "stderr", StuckStream())
        configure_logging(logs_dir=logs_dir, stream=True)
        returned = threading.Event()

        def log_one_line() -> None:
            logging.getLogger("x").warning("while stderr is stuck")
            returned.set()

        caller = threading.Thread(target=log_one_line, name="caller")
        caller.start()
        try:
            assert returned.wait(5), "the caller waited for stderr"
            assert writer_reached_stderr.wait(5)
        finally:
            release.set()
            caller.join(10)
        (line,) = _lines(logs_dir)
        assert line["message"] == "while stderr is stuck"
        assert line["thread"] == "caller"  # the caller's thread, not the writer's

    def test_the_message_is_merged_when_logged_not_when_written(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)
        fills = [1]

        logging.getLogger("x").info("fills=%s", fills)
        fills.append(2)

        (line,) = _lines(logs_dir)
        assert line["message"] == "fills=[1]"

    def test_a_field_that_cannot_be_written_costs_its_line_not_the_writer(
        self, logs_dir: Path
    ) -> None:
        configure_logging(logs_dir=logs_dir, stream=False)

        class Unprintable:
            def __repr__(self) -> str:
                raise RuntimeError("no repr")

            __str__ = __repr__

        logging.getLogger("x").info("bad", extra={"field": Unprintable()})
        logging.getLogger("x").info("good")

        assert [line["message"] for line in _lines(logs_dir)] == ["good"]

    def test_lines_logged_after_the_exit_hook_are_still_redacted_and_written(
        self, logs_dir: Path
    ) -> None:
        configure_logging(logs_dir=logs_dir, secrets=[SECRET], stream=False)
        logging.getLogger("x").info("queued")

        _write_synchronously_from_now_on()  # what atexit runs
        logging.getLogger("x").info(f"from a later exit hook: {SECRET}")

        lines = _lines(logs_dir)
        assert [line["message"] for line in lines] == [
            "queued",
            f"from a later exit hook: {REDACTED}",
        ]

    def test_lines_logged_before_a_clean_exit_are_all_written(self, logs_dir: Path) -> None:
        # No shutdown_logging() call: the exit hook must drain the queue on its own.
        script = (
            "import logging, sys\n"
            "from adapters.logs import configure_logging\n"
            "configure_logging(logs_dir=sys.argv[1], stream=False)\n"
            "for i in range(2000):\n"
            "    logging.getLogger('x').info('line %d', i)\n"
        )
        repo_root = Path(__file__).resolve().parents[2]
        subprocess.run(
            [sys.executable, "-c", script, str(logs_dir)], cwd=repo_root, check=True, timeout=60
        )

        text = (logs_dir / "vigil.log").read_text(encoding="utf-8")
        messages = [json.loads(line)["message"] for line in text.splitlines()]
        assert messages == [f"line {i}" for i in range(2000)]


class TestStateDump:
    def test_dump_is_pretty_json_named_by_kind_and_utc_time(self, logs_dir: Path) -> None:
        path = write_state_dump(
            logs_dir,
            {"order": {"cash": Decimal("1.50"), "mode": Mode.PAPER}},
            kind="sigusr1",
            now_ns=NOW_NS,
        )

        assert path == logs_dir / "state-dump-sigusr1-20260101T000000.123Z.json"
        text = path.read_text(encoding="utf-8")
        assert "\n  " in text
        assert json.loads(text) == {"order": {"cash": "1.50", "mode": "PAPER"}}

    def test_a_second_dump_in_the_same_millisecond_does_not_overwrite_the_first(
        self, logs_dir: Path
    ) -> None:
        first = write_state_dump(logs_dir, {"n": 1}, kind="crash", now_ns=NOW_NS)
        second = write_state_dump(logs_dir, {"n": 2}, kind="crash", now_ns=NOW_NS)

        assert first != second
        assert json.loads(first.read_text()) == {"n": 1}
        assert json.loads(second.read_text()) == {"n": 2}
        assert sorted(p.name for p in logs_dir.iterdir()) == [
            "state-dump-crash-20260101T000000.123Z-1.json",
            "state-dump-crash-20260101T000000.123Z.json",
        ]

    def test_dump_redacts_configured_secrets(self, logs_dir: Path) -> None:
        configure_logging(logs_dir=logs_dir, secrets=[SECRET], stream=False)

        path = write_state_dump(
            logs_dir,
            {"broker": {"note": f"key {SECRET}", "token": "t-1"}},
            kind="manual",
            now_ns=NOW_NS,
        )

        assert SECRET not in path.read_text()
        assert json.loads(path.read_text())["broker"]["token"] == REDACTED

    @pytest.mark.parametrize("kind", ["../escape", "a b", ""])
    def test_a_kind_that_is_not_a_plain_word_is_refused(self, logs_dir: Path, kind: str) -> None:
        with pytest.raises(ValueError, match="kind"):
            write_state_dump(logs_dir, {}, kind=kind, now_ns=NOW_NS)
