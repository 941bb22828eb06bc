"""``python -m tools.kite_login`` against the fake Kite over HTTP: the login URL, the request
token exchange with its checksum, and the token file a running adapter picks up."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.fake_kite import FakeKite
from tools.kite_login import checksum, login_url, main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    server = FakeKite()
    server.start()
    yield server
    server.stop()


def test_without_a_request_token_it_prints_kites_login_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--api-key", "abc123"]) == 0

    out = capsys.readouterr().out
    assert "https://kite.zerodha.com/connect/login?v=3&api_key=abc123" in out


def test_the_checksum_is_sha256_of_key_token_and_secret(fake: FakeKite) -> None:
    assert checksum(fake.api_key, "tok", fake.api_secret) == fake.checksum("tok")
    assert login_url("k", "http://x/") == "http://x/connect/login?v=3&api_key=k"


def test_it_exchanges_a_request_token_and_writes_the_access_token_privately(
    fake: FakeKite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "secrets" / "kite_access_token"

    code = main(
        [
            "--api-key", fake.api_key,
            "--api-secret", fake.api_secret,
            "--base-url", fake.base_url,
            "--login-base", fake.base_url,
            "--fetch-request-token",
            "--write", str(token_file),
        ]
    )  # fmt: skip

    assert code == 0
    access_token = token_file.read_text().strip()
    out = capsys.readouterr().out
    assert access_token and access_token not in out  # written, never printed
    assert "Logged in as FK0001" in out and str(token_file) in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_a_wrong_secret_is_refused_with_a_message_and_no_token(
    fake: FakeKite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "kite_access_token"
    code = main(
        [
            "--api-key", fake.api_key,
            "--api-secret", "wrong",
            "--base-url", fake.base_url,
            "--login-base", fake.base_url,
            "--fetch-request-token",
            "--write", str(token_file),
        ]
    )  # fmt: skip

    assert code == 1
    assert "refused" in capsys.readouterr().err
    assert not token_file.exists()
