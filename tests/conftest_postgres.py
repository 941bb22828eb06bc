"""A throwaway PostgreSQL server for tests marked ``postgres`` (a pytest plugin module).

Register it once from the top-level ``tests/conftest.py`` with
``pytest_plugins = ["tests.conftest_postgres"]``; a test module may also name it in its own
``pytest_plugins`` (registering twice is a no-op).

``postgres_url`` (session scope) runs ``initdb`` and ``pg_ctl`` in a fresh temp dir, listening
on a free localhost port and on a unix socket in that dir, creates a database, yields a
``postgresql+psycopg://`` URL over the socket, and stops the server at teardown. As root it
runs the server as the ``postgres`` OS user (initdb refuses root). It skips, saying why, when
the binaries, psycopg or the ``postgres`` user are missing. ``VIGIL_PG_BIN`` names the folder
holding ``initdb``/``pg_ctl`` when they are not in a standard place.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["find_postgres_bin", "postgres_url"]

_DATABASE_NAME = "vigil_test"
_START_TIMEOUT_S = 60


def find_postgres_bin() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    candidates: list[Path] = []
    if override := os.environ.get("VIGIL_PG_BIN"):
        candidates.append(Path(override))

    def version_key(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(piece) for piece in part.split(".") if piece.isdigit())

    candidates += [
        Path(path)
        for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    ]
    candidates += [Path(path) for path in sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)]
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(Path(pg_ctl).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str], *, run_as: str | None) -> list[str]:
    if run_as is None:
        return command
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", run_as, "--", *command]
    return ["su", run_as, "-s", "/bin/sh", "-c", " ".join(_quote(part) for part in command)]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _run(command: list[str], *, what: str, log_file: Path | None = None) -> None:
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=_START_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        server_log = ""
        if log_file is not None and log_file.exists():
            server_log = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"{what} failed with exit code {completed.returncode}: command={command} "
            f"stdout={completed.stdout[-2000:]!r} stderr={completed.stderr[-2000:]!r} "
            f"server_log={server_log!r}"
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a private PostgreSQL server and yield a SQLAlchemy URL to a fresh database."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: .venv/bin/pip install 'psycopg[binary]'")
    binaries = find_postgres_bin()
    if binaries is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found in "
            "/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, PATH or $VIGIL_PG_BIN; "
            "install them with `apt-get install -y postgresql`"
        )
    run_as: str | None = None
    if os.geteuid() == 0:
        import pwd

        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run initdb as")
        run_as = "postgres"

    base = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
    if run_as is not None:
        os.chown(base, server_user.pw_uid, server_user.pw_gid)
    data_dir = base / "data"
    log_file = base / "server.log"
    port = _free_port()
    pg_ctl = str(binaries / "pg_ctl")
    started = False
    try:
        _run(
            _as_server_user(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                run_as=run_as,
            ),
            what="initdb",
        )
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        _run(
            _as_server_user(
                [
                    pg_ctl,
                    "-D",
                    str(data_dir),
                    "-l",
                    str(log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "start",
                ],
                run_as=run_as,
            ),
            what="pg_ctl start",
            log_file=log_file,
        )
        started = True
        admin = f"host={base} port={port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {_DATABASE_NAME}")
        yield f"postgresql+psycopg://postgres@/{_DATABASE_NAME}?host={base}&port={port}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run(
                    _as_server_user(
                        [pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
                        run_as=run_as,
                    ),
                    what="pg_ctl stop",
                )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the throwaway server for this test alone."""
    name = f"vigil_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
