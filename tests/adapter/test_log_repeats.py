"""ErrorRepeats (a repeating error is one line, then a count per window) and the redactor that
the API shares with the logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.logs import (
    REDACTED,
    ErrorRepeats,
    configure_logging,
    current_redactor,
    shutdown_logging,
)

SECOND_NS = 1_000_000_000
LOGGER = "vigil.test.repeats"


@pytest.fixture
def repeats(caplog: pytest.LogCaptureFixture) -> ErrorRepeats:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return ErrorRepeats(logging.getLogger(LOGGER), window_ns=60 * SECOND_NS)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


class TestErrorRepeats:
    def test_the_first_occurrence_is_logged_whole_and_repeats_are_counted(
        self, repeats: ErrorRepeats, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert repeats.error("disk", "disk full", now_ns=0, event="STORAGE", actor="order")
        for second in range(1, 28):
            assert not repeats.error("disk", "disk full", now_ns=second * SECOND_NS)

        assert _messages(caplog) == ["disk full"]
        assert caplog.records[0].event == "STORAGE"  # type: ignore[attr-defined]

    def test_a_window_that_ends_writes_one_summary_with_the_count_and_the_fields(
        self, repeats: ErrorRepeats, caplog: pytest.LogCaptureFixture
    ) -> None:
        repeats.error("disk", "disk full", now_ns=0, event="STORAGE", actor="order")
        for second in range(1, 28):
            repeats.error("disk", "disk full", now_ns=second * SECOND_NS)
        repeats.flush(60 * SECOND_NS)

        assert _messages(caplog) == ["disk full", "same error x27 in 60s: disk full"]
        summary = caplog.records[-1]
        assert summary.repeats == 27 and summary.actor == "order"  # type: ignore[attr-defined]

    def test_a_quiet_window_makes_the_next_occurrence_news_again(
        self, repeats: ErrorRepeats, caplog: pytest.LogCaptureFixture
    ) -> None:
        repeats.error("disk", "disk full", now_ns=0)
        repeats.flush(61 * SECOND_NS)
        repeats.error("disk", "disk full", now_ns=62 * SECOND_NS)

        assert _messages(caplog) == ["disk full", "disk full"]

    def test_resolved_summarises_what_was_counted(
        self, repeats: ErrorRepeats, caplog: pytest.LogCaptureFixture
    ) -> None:
        repeats.error("disk", "disk full", now_ns=0)
        repeats.error("disk", "disk full", now_ns=5 * SECOND_NS)
        repeats.resolved("disk", 10 * SECOND_NS)
        repeats.error("disk", "disk full", now_ns=11 * SECOND_NS)

        assert _messages(caplog) == ["disk full", "same error x1 in 10s: disk full", "disk full"]

    def test_different_keys_are_counted_apart(
        self, repeats: ErrorRepeats, caplog: pytest.LogCaptureFixture
    ) -> None:
        repeats.error("order", "order crashed", now_ns=0)
        repeats.error("risk", "risk crashed", now_ns=0)
        repeats.error("order", "order crashed", now_ns=SECOND_NS)

        assert _messages(caplog) == ["order crashed", "risk crashed"]


class TestCurrentRedactor:
    @pytest.fixture(autouse=True)
    def _restore_root_logger(self) -> Iterator[None]:
        level = logging.getLogger().level
        yield
        shutdown_logging()
        logging.getLogger().setLevel(level)

    def test_without_logging_configured_it_redacts_the_given_secrets_and_the_patterns(
        self,
    ) -> None:
        redactor = current_redactor(["admin-token-1234"])

        text = redactor.text("x admin-token-1234 y token=abcdef Bearer qwerty")
        assert "admin-token-1234" not in text and "abcdef" not in text and "qwerty" not in text
        assert text.count(REDACTED) == 3

    def test_it_also_redacts_what_the_log_handlers_were_configured_with(
        self, tmp_path: Path
    ) -> None:
        configure_logging(logs_dir=tmp_path, secrets=["kite-secret-99"], stream=False)

        redactor = current_redactor(["admin-token-1234"])

        assert redactor.text("kite-secret-99 admin-token-1234") == f"{REDACTED} {REDACTED}"
