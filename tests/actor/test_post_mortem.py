"""Post-mortem dumps for every actor, whatever its name holds (``feed:*``, ``strategy:*``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.dumps import dump_kind
from domain.messages import InjectFault
from launcher.engine import feed_actor_name, strategy_actor_name
from tests.actor.conftest import Desk


@pytest.mark.parametrize(
    ("actor", "file_kind"),
    [
        (feed_actor_name("synthetic"), "postmortem-feed_synthetic"),
        (strategy_actor_name("orb_1"), "postmortem-strategy_orb_1"),
    ],
)
def test_a_crash_of_an_actor_named_with_a_colon_writes_a_readable_post_mortem(
    desk_factory: Callable[..., Desk], actor: str, file_kind: str
) -> None:
    desk = desk_factory(strategies=[{"name": "orb_1", "kind": "orb", "instruments": ["AAA"]}])
    assert desk.engine.directory.get(actor) is not None
    logs = Path(desk.engine.config.logs_dir)

    desk.engine.directory.tell(actor, InjectFault(detail="post-mortem drill"))

    dump_file = desk.settle(
        lambda: next(iter(logs.glob(f"state-dump-{file_kind}-*.json")), None),
        what=f"post-mortem file for {actor}",
    )
    dump = json.loads(dump_file.read_text())
    assert dump["crashed"] == actor  # the file name is sanitised, the content is not
    assert "post-mortem drill" in dump["error"]
    assert dump["crashed_snapshot"]["name"] == actor
    assert "order" in dump["actors"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("postmortem-risk", "postmortem-risk"),
        ("postmortem-feed:synthetic", "postmortem-feed_synthetic"),
        ("postmortem-strategy:orb 1/../x", "postmortem-strategy_orb_1____x"),
        ("", "dump"),
        ("x" * 100, "x" * 64),
    ],
)
def test_a_dump_kind_is_made_fit_for_a_file_name(kind: str, expected: str) -> None:
    assert dump_kind(kind) == expected
