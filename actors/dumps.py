"""Actor-state dumps: gathered for ``GET /debug/actors``, SIGUSR1 and crash post-mortems.

Gathering asks every actor in the directory with a timeout from the CALLING thread, never from
inside an actor's handler (an actor blocking on another's ask can deadlock). A dead or slow
actor shows up in the dump as such instead of failing the whole dump.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.directory import ActorUnavailable
from adapters.logs import write_state_dump
from domain.messages import QuerySnapshot

if TYPE_CHECKING:
    from actors.directory import ActorDirectory

__all__ = ["dump_kind", "gather_snapshots", "write_dump_in_background"]

logger = logging.getLogger(__name__)

# A dump's kind becomes part of its file name, where write_state_dump allows only these.
_UNSAFE_IN_KIND = re.compile(r"[^A-Za-z0-9_-]")
_MAX_KIND_LENGTH = 64


def dump_kind(text: str) -> str:
    """``text`` made fit for a dump file name: ``postmortem-feed:synthetic`` becomes
    ``postmortem-feed_synthetic`` (actor names hold ``:``; the dump itself keeps the real name).
    """
    return _UNSAFE_IN_KIND.sub("_", text)[:_MAX_KIND_LENGTH] or "dump"


def gather_snapshots(directory: ActorDirectory, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Ask every registered actor for ``snapshot()``; failures become ``{"error": ...}``."""
    dump: dict[str, Any] = {}
    for name, ref in sorted(directory.items()):
        if not ref.is_alive():
            dump[name] = {"alive": False}
            continue
        try:
            dump[name] = directory.ask(name, QuerySnapshot(), timeout_s=timeout_s)
        except ActorUnavailable as error:
            dump[name] = {"alive": ref.is_alive(), "error": str(error)}
        except Exception as error:
            dump[name] = {"alive": ref.is_alive(), "error": f"snapshot failed: {error!r}"}
    return dump


def write_dump_in_background(
    *,
    directory: ActorDirectory,
    logs_dir: str | Path,
    kind: str,
    now_ns: int,
    extra: Mapping[str, Any] | None = None,
    on_written: Callable[[Path], None] | None = None,
) -> threading.Thread:
    """Gather and write a dump on a helper thread, so an actor can ask for one safely.

    ``kind`` may hold any characters (an actor name such as ``strategy:orb_1``): it is made
    fit for the file name with ``dump_kind``.
    """
    kind = dump_kind(kind)

    def run() -> None:
        try:
            dump = {"actors": gather_snapshots(directory), **(extra or {})}
            path = write_state_dump(logs_dir, dump, kind=kind, now_ns=now_ns)
            logger.warning("state dump (%s) written to %s", kind, path)
            if on_written is not None:
                on_written(path)
        except Exception:
            logger.exception("state dump (%s) failed", kind)

    thread = threading.Thread(target=run, name=f"state-dump-{kind}", daemon=True)
    thread.start()
    return thread
