"""``python -m launcher``: load the config, build the engine, run until signalled.

SIGINT/SIGTERM stop the engine cleanly (children in reverse order, lease released).
SIGUSR1 writes an actor-state dump to the logs folder without stopping anything.

Exit codes: 0 after a clean stop; 2 for a configuration that cannot be used (bad YAML or
value, a logs folder that cannot be written); 1 when the engine cannot start. A start-up
failure the pre-flight foresaw (admin port taken, database unusable) is one line on stderr and
one ``START_FAILED`` log event, without a traceback: it is the operator's to fix, not a bug.
Anything else that fails the start is logged with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from actors.dumps import write_dump_in_background
from adapters.logs import configure_logging, log_event
from launcher.config import ConfigError, config_sha, load_config
from launcher.engine import Engine
from launcher.preflight import StartupError

__all__ = ["main"]

logger = logging.getLogger("launcher")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    parser.add_argument(
        "--config", help="YAML profile (default: $VIGIL_CONFIG or configs/paper.yaml)"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config, print its SHA, exit"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"config OK: instance={config.instance_id} sha={config_sha(config)}")
        return 0
    secrets = [
        secret.get_secret_value()
        for secret in (
            config.http.token,
            config.live.live_enable_token,
            *config.http.tokens.values(),
        )
        if secret is not None
    ]
    try:
        configure_logging(
            logs_dir=config.logs_dir,
            level=config.log_level,
            secrets=secrets,
            rehearsal=config.rehearsal,
        )
    except OSError as error:
        print(f"configuration error: logs_dir {config.logs_dir!r}: {error}", file=sys.stderr)
        return 2
    engine = Engine(config)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log_event(logger, "SIGNAL", f"received {signal.Signals(signum).name}: stopping")
        stop_requested.set()

    def dump_state(_signum: int, _frame: FrameType | None) -> None:
        write_dump_in_background(
            directory=engine.directory,
            logs_dir=config.logs_dir,
            kind="sigusr1",
            now_ns=engine.clock.now_ns(),
        )

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGUSR1, dump_state)
    try:
        engine.start()
    except StartupError as error:
        log_event(logger, "START_FAILED", str(error), level=logging.ERROR)
        print(f"cannot start: {error}", file=sys.stderr)
        engine.stop()
        return 1
    except Exception:
        logger.exception("engine failed to start")
        engine.stop()
        return 1
    while not stop_requested.wait(0.5):
        pass
    engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
