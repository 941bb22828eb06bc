"""``python -m tools.dump_state``: print the engine's actor-state dump readably.

Fetches ``GET /debug/actors`` from a running engine (or reads a dump file written on SIGUSR1
or after a crash) and prints one section per actor as YAML. Exits 1 when the engine cannot
be reached, with the address it tried.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["format_dump", "main"]


def format_dump(dump: dict[str, Any], *, actor: str | None = None) -> str:
    """Render a dump: a header, then each actor's state as YAML."""
    actors: dict[str, Any] = dump.get("actors", {})
    lines = []
    header = {key: value for key, value in dump.items() if key != "actors"}
    if header:
        lines.append(yaml.safe_dump(header, sort_keys=True).rstrip())
    for name in sorted(actors):
        if actor is not None and name != actor:
            continue
        lines.append(f"\n=== {name} ===")
        lines.append(yaml.safe_dump(actors[name], sort_keys=True, width=100).rstrip())
    if actor is not None and actor not in actors:
        lines.append(f"\n(no actor named {actor!r}; known: {', '.join(sorted(actors))})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dump_state", description=__doc__)
    default_url = f"http://127.0.0.1:{os.environ.get('VIGIL_HTTP_PORT', '8000')}"
    parser.add_argument("--url", default=default_url, help=f"engine admin URL ({default_url})")
    parser.add_argument("--file", type=Path, help="read a dump file instead of the engine")
    parser.add_argument("--actor", help="show only this actor")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    args = parser.parse_args(argv)
    if args.file is not None:
        try:
            dump = json.loads(args.file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"cannot read dump {args.file}: {error}", file=sys.stderr)
            return 1
    else:
        try:
            response = httpx.get(f"{args.url}/debug/actors", timeout=10)
            response.raise_for_status()
            dump = response.json()
        except httpx.HTTPError as error:
            print(f"cannot fetch {args.url}/debug/actors: {error}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(dump, indent=2, sort_keys=True))
    else:
        print(format_dump(dump, actor=args.actor), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
