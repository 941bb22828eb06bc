"""``http.token`` and ``http.tokens`` are checked when the config loads: every operator name
usable, every token non-empty and belonging to one name; the messages never hold a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from domain.config import HttpConfig
from launcher.config import ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]

ALICE = "alice-token-0123456789"


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ({"token": ALICE, "tokens": {"admin": "other-token-0123456789"}}, "'admin'"),
        ({"tokens": {"alice": ALICE, "bob": ALICE}}, "same token"),
        ({"token": ALICE, "tokens": {"bob": f"  {ALICE} "}}, "same token"),
        ({"tokens": {"alice": "   "}}, "empty"),
        ({"tokens": {"local": ALICE}}, "unusable operator name"),
        ({"tokens": {" ": ALICE}}, "unusable operator name"),
    ],
    ids=["admin-taken", "shared", "shared-with-spaces", "empty", "local", "blank-name"],
)
def test_unusable_tokens_are_refused_at_load_without_showing_them(
    http: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        HttpConfig.model_validate(http)

    # The messages (what the launcher prints; it never prints a section's raw input).
    messages = " ".join(detail["msg"] for detail in refused.value.errors())
    assert expected in messages
    assert ALICE not in messages


def test_named_tokens_load_beside_the_admin_token() -> None:
    config = HttpConfig.model_validate(
        {"token": "admin-token-0123456789", "tokens": {"alice": ALICE, "bob": "bob-token-01234"}}
    )

    assert sorted(config.tokens) == ["alice", "bob"]
    assert ALICE not in repr(config)


def test_the_launchers_config_error_names_the_operators_not_the_tokens(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text())
    profile["http"] = {"tokens": {"alice": ALICE, "bob": ALICE}}
    path = tmp_path / "shared-token.yaml"
    path.write_text(yaml.safe_dump(profile))

    with pytest.raises(ConfigError) as refused:
        load_config(str(path))

    assert "'alice' and 'bob' are the same token" in str(refused.value)
    assert ALICE not in str(refused.value)
