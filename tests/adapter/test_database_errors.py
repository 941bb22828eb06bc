"""``Database.from_url`` at start-up: every way a database can be unusable is one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.storage.database import Database, DatabaseUnavailable, redact_database_url


def unusable(url: str) -> str:
    with pytest.raises(DatabaseUnavailable) as caught:
        Database.from_url(url)
    text = str(caught.value)
    assert "\n" not in text
    return text


class TestSqlite:
    def test_a_missing_folder_is_created(self, tmp_path: Path) -> None:
        database = Database.from_url(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'vigil.db'}")
        database.dispose()
        assert (tmp_path / "new" / "deeper" / "vigil.db").exists()

    def test_a_folder_that_cannot_be_created_names_the_file_and_the_cause(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "a-file").write_text("")
        text = unusable(f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'vigil.db'}")
        assert f"SQLite file {tmp_path / 'a-file' / 'sub' / 'vigil.db'}" in text
        assert "cannot be created: a part of it is a file" in text

    def test_a_directory_in_place_of_the_file_is_named(self, tmp_path: Path) -> None:
        (tmp_path / "vigil.db").mkdir()
        text = unusable(f"sqlite:///{tmp_path / 'vigil.db'}")
        assert str(tmp_path / "vigil.db") in text and "is a directory" in text

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; permissions mean nothing")
    def test_an_unwritable_folder_is_named(self, tmp_path: Path) -> None:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            text = unusable(f"sqlite:///{folder / 'vigil.db'}")
        finally:
            folder.chmod(0o755)
        assert f"its folder {folder} is not writable" in text


class TestUrls:
    def test_a_malformed_url_says_what_a_url_looks_like(self) -> None:
        text = unusable("data/vigil.db")
        assert "database data/vigil.db cannot be used: not a database URL" in text
        assert "sqlite:///" in text

    def test_an_unknown_driver_is_named(self) -> None:
        text = unusable("oracle+nonesuch://scott:tiger@db/orcl")
        assert "unknown database driver" in text and "nonesuch" in text
        assert "tiger" not in text

    def test_an_unreachable_server_is_named_without_its_password(self) -> None:
        text = unusable("postgresql+psycopg://vigil:hunter2secret@127.0.0.1:9/vigil")
        assert "postgresql+psycopg://vigil:***@127.0.0.1:9/vigil" in text
        assert "hunter2secret" not in text
        assert "refused" in text.lower()

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
            ("sqlite:///data/vigil.db", "sqlite:///data/vigil.db"),
            ("not a url://u:pw@h", "not a url://u:***@h"),
        ],
    )
    def test_redaction_hides_the_password_even_in_a_url_that_does_not_parse(
        self, url: str, shown: str
    ) -> None:
        assert redact_database_url(url) == shown
