"""The admin API is never served beyond loopback without an admin token."""

from __future__ import annotations

import pytest

from domain.config import HttpConfig
from launcher.preflight import StartupError, check_admin_exposure


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "trading-box.lan"])
def test_a_non_loopback_host_without_a_token_is_refused_in_one_line(host: str) -> None:
    with pytest.raises(StartupError) as refused:
        check_admin_exposure(HttpConfig(host=host))

    message = str(refused.value)
    assert "\n" not in message
    assert f"http.host={host}" in message
    assert "VIGIL_ADMIN_TOKEN" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_loopback_host_needs_no_token(host: str) -> None:
    check_admin_exposure(HttpConfig(host=host))


@pytest.mark.parametrize(
    "http",
    [
        {"host": "0.0.0.0", "token": "admin-token-0123456789"},
        {"host": "0.0.0.0", "tokens": {"alice": "alice-token-0123456789"}},
    ],
    ids=["admin-token", "named-token"],
)
def test_a_non_loopback_host_with_a_token_may_start(http: dict[str, object]) -> None:
    check_admin_exposure(HttpConfig.model_validate(http))
