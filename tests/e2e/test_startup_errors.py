"""Clear start-up errors: a busy admin port or an unusable database stops the start early,
in one line that names what and why, with a non-zero exit, no traceback and no lease taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.storage.database import Database, upgrade_schema
from adapters.storage.tables import leader_lease
from tests.e2e.conftest import Launcher, fast_paper_config, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def lease_rows(database_url: str) -> int:
    database = Database.from_url(database_url)
    try:
        with database.transaction() as connection:
            return int(connection.execute(select(func.count()).select_from(leader_lease)).scalar())
    finally:
        database.dispose()


def assert_one_clear_line(launcher: Launcher, *expected: str) -> None:
    stderr = (launcher.workdir / "stderr.log").read_text()
    assert "Traceback" not in stderr, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("cannot start: ")]
    for text in expected:
        assert text in line, line


def test_a_busy_admin_port_stops_the_start_before_the_lease_is_taken(
    tmp_path: Path, busy_port: int
) -> None:
    launcher = Launcher(tmp_path, fast_paper_config(tmp_path), busy_port)
    # The database exists and is migrated, so "no lease row" means the lease was never taken.
    upgrade_schema(launcher.database_url)
    try:
        launcher.start()
        assert launcher.wait_exit() != 0
        assert lease_rows(launcher.database_url) == 0
        assert_one_clear_line(launcher, f"admin HTTP port {busy_port}", "127.0.0.1")
    finally:
        launcher.close()


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (
            lambda root: f"sqlite:///{root / 'a-file' / 'vigil.db'}",
            lambda root: [str(root / "a-file" / "vigil.db"), "a part of it is a file"],
        ),
        (
            lambda root: f"sqlite:///{root}",
            lambda root: [str(root), "is a directory"],
        ),
        (
            lambda root: "not a database url",
            lambda root: ["not a database url", "not a database URL"],
        ),
        (
            lambda root: f"postgresql+psycopg://vigil:hunter2secret@127.0.0.1:{free_port()}/vigil",
            lambda root: ["postgresql+psycopg://vigil:***@127.0.0.1:", "Connection refused"],
        ),
    ],
    ids=["parent-is-a-file", "path-is-a-directory", "malformed-url", "postgres-unreachable"],
)
def test_an_unusable_database_stops_the_start_naming_it_and_the_cause(
    tmp_path: Path,
    make_url,
    expected,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    launcher = Launcher(tmp_path, fast_paper_config(tmp_path), free_port())
    try:
        launcher.start({"DATABASE_URL": make_url(tmp_path)})
        assert launcher.wait_exit() != 0
        assert_one_clear_line(launcher, *expected(tmp_path))
        assert "hunter2secret" not in (tmp_path / "stderr.log").read_text()
    finally:
        launcher.close()


def test_an_unusable_journal_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, fast_paper_config(tmp_path), free_port())
    upgrade_schema(launcher.database_url)
    database_file = Path(launcher.database_url.removeprefix("sqlite:///"))
    journal_file = database_file.with_name(f"{database_file.stem}.journal{database_file.suffix}")
    journal_file.mkdir()  # a directory where the journal file belongs
    try:
        launcher.start()
        assert launcher.wait_exit() != 0
        assert lease_rows(launcher.database_url) == 0
        assert_one_clear_line(launcher, "JOURNAL_UNAVAILABLE", str(journal_file))
    finally:
        launcher.close()


def test_a_non_loopback_bind_without_an_admin_token_stops_the_start(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, fast_paper_config(tmp_path), free_port())
    upgrade_schema(launcher.database_url)
    environment = {"VIGIL_HTTP_HOST": "0.0.0.0"}
    try:
        launcher.start(environment)
        assert launcher.wait_exit() != 0
        assert lease_rows(launcher.database_url) == 0
        assert_one_clear_line(launcher, "http.host=0.0.0.0", "VIGIL_ADMIN_TOKEN")
    finally:
        launcher.close()
