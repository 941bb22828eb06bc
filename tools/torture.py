"""``python -m tools.torture --trials N``: crash the engine at random moments and check the books.

Each trial starts ``python -m launcher`` in a fresh work directory with a fast paper profile
(1 s bars, short indicators, a 2 s leader lease), waits for ``/ready`` and for open positions,
then does one fault at random:

``kill_flow``
    SIGKILL at a random instant (0-2 s) of steady order flow.
``kill_flatten``
    SIGKILL 0-50 ms after a ``POST /flatten`` was written to the socket.
``kill_pause``
    SIGKILL 0-50 ms after a ``POST /pause`` was written to the socket.
``stop_cont``
    SIGSTOP for 0.5-6 s (longer than the lease, often), SIGCONT, then either let it run on
    (``after_stop=continue``) or SIGKILL it 0-0.5 s later (``after_stop=kill``).

After a kill it restarts the engine on the same database and waits for ``/ready`` (the new
incarnation waits for the old lease to expire). It records ``/status`` at that moment, pauses
entries (so the books stop moving), and then waits, up to ``--settle-timeout``, until every
check below passes on one consistent read of the database; what still fails at the deadline is
a violation. The checks (``docs/torture.md`` explains each):

- ``duplicate_client_order_id``: a client order id twice in ``orders`` or ``venue_orders``.
- ``venue_resubmit``: the venue was sent one client order id more than once.
- ``orphan_sibling``: ``tools.reconcile`` finds a working stop/target without its position.
- ``position_drift``: the engine's open brackets, netted per instrument, differ from the paper
  venue's ``venue_positions``.
- ``unprotected_position``: an open position without exactly one working STOP and one working
  TARGET sized to it, in the engine's books or at the venue.
- ``active_with_flatten_pending``: the server had begun a flatten (the order actor's
  ``flatten requested`` log line names this trial's reason) and the book was not flat at the
  kill, yet the restart came up without the FLATTEN pause cause (so ACTIVE, unless something
  else paused or halted it).
- ``flatten_unfinished``: such a flatten did not finish (positions or working orders remain).
- ``pause_lost``: ``POST /pause`` was answered 200 before the kill, yet the restart had no
  OPERATOR pause.
- ``unsettled_in_flight``: orders still PENDING_SUBMIT/SUBMITTED/PENDING_CANCEL at the deadline.
- ``restart_not_ready`` / ``engine_exited``: the engine did not come back, or died.

A trial that never saw a position before its fault is ``inconclusive`` (not a violation).
Results go to ``--results`` as JSON lines; a summary table is printed; the exit code is 1 when
any trial had a violation, 0 otherwise. The work directory of every trial that was not clean
(config, ``data/``, ``logs/``, ``stderr.log``, ``trial.json``, a JSON dump of the tables) is
copied to ``--keep-failures``.

``--database-url`` runs the trials on another database (e.g. PostgreSQL) instead of a SQLite
file per trial. Every trial DROPS all of Vigil's tables there first, so the tool refuses a
database whose name does not contain ``torture``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from adapters.storage.database import Database, create_database_engine
from tools._launcher import (
    REPO_ROOT,
    EngineExited,
    EngineProcess,
    free_port,
    send_raw_post,
    wait_for,
)
from tools.reconcile import reconcile

__all__ = [
    "ACTIONS",
    "Books",
    "TrialResult",
    "Violation",
    "book_violations",
    "main",
    "read_books",
    "run_trial",
    "trial_config",
]

ACTIONS = ("kill_flow", "kill_flatten", "kill_pause", "stop_cont")

_TERMINAL = ("FILLED", "CANCELLED", "REJECTED")
_IN_FLIGHT = ("PENDING_SUBMIT", "SUBMITTED", "PENDING_CANCEL")
_SETTLE_POLL_S = 0.1
_FLOW_KILL_WINDOW_S = 2.0
_REQUEST_KILL_WINDOW_S = 0.05
_STOP_MIN_S, _STOP_MAX_S = 0.5, 6.0
_KILL_AFTER_CONT_MAX_S = 0.5


# ---------------------------------------------------------------------------- results
@dataclass
class Violation:
    """One failed check: ``kind`` is the check's name, ``detail`` what it saw."""

    kind: str
    detail: Any


@dataclass
class TrialResult:
    """Everything one trial did and found (one JSON line in ``--results``)."""

    trial: int
    seed: int
    action: str
    outcome: str = "clean"  # clean | violations | inconclusive
    kill_delay_ms: float | None = None
    stop_s: float | None = None
    after_stop: str | None = None
    violations: list[Violation] = field(default_factory=list)
    durations_s: dict[str, float] = field(default_factory=dict)
    at_fault: dict[str, Any] = field(default_factory=dict)
    at_restart: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    work_dir: str | None = None


# ---------------------------------------------------------------------------- config
def trial_config(workdir: Path, *, seed: int) -> Path:
    """``configs/paper.yaml`` made fast and calm for a trial; returns the written YAML's path.

    Orders appear within ~3 s of ``/ready``: 1 s bars and indicators of 2-3 bars. The lease is
    2 s (renewed every 0.5 s) so a restart after SIGKILL leads after ~2 s. The market has no
    band jumps or spread blowouts and the risk limits are wide, so no kill switch trip or heat
    flatten muddles what the fault did. The database is a SQLite file in ``workdir/data``
    unless the engine is given ``DATABASE_URL``.
    """
    config = yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text())
    config["instance_id"] = "vigil-torture"
    config["database_url"] = "sqlite:///data/vigil.db"
    config["feed"].update(
        seed=seed % 2**31,
        tick_interval_ms=50,
        volatility_bps=1.0,
        band_hit_probability=0.0,
        spread_blowout_probability=0.0,
    )
    config["leader"] = {"lease_ttl_s": 2.0, "renew_interval_s": 0.5}
    config["risk"].update(
        max_daily_loss_pct="50",
        portfolio_heat_cap_pct="20",
        max_trades_per_hour=100_000,
    )
    for strategy in config["strategies"]:
        strategy["bar_interval_s"] = 1
        if strategy["kind"] == "orb":
            strategy["params"] = {
                "range_bars": 1,
                "window_bars": 4,
                "atr_period": 2,
                "stop_atr": 1.0,
                "target_atr": 1.5,
            }
        else:
            strategy["params"] = {
                "fast_period": 2,
                "slow_period": 3,
                "atr_period": 2,
                "stop_atr": 1.5,
                "target_atr": 2.0,
                "cooldown_bars": 0,
            }
    path = workdir / "torture.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wipe_database(url: str) -> None:
    # Imported for their side effect: every Vigil table registers on the shared metadata.
    import adapters.brokers.paper.books
    import adapters.storage.tables  # noqa: F401
    from adapters.storage.metadata import metadata

    engine = create_database_engine(url)
    try:
        metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def _check_throwaway(url: str) -> str | None:
    database = make_url(url).database or ""
    if "torture" not in Path(database).name:
        return (
            f"--database-url names database {database!r}: every trial drops all of Vigil's "
            "tables there, so the name must contain 'torture' (create a throwaway one)"
        )
    return None


# ---------------------------------------------------------------------------- books
@dataclass
class Books:
    """One consistent read of the engine's and the venue's books."""

    open_positions: dict[str, dict[str, Any]]  # position_id -> instrument, side, quantity
    engine_net: dict[str, int]  # instrument -> signed open quantity
    venue_net: dict[str, int]
    engine_legs: dict[str, dict[str, list[int]]]  # plan -> leg -> remaining quantities
    venue_legs: dict[str, dict[str, list[int]]]
    duplicates: list[dict[str, Any]]
    resubmits: list[dict[str, Any]]
    orphans: list[dict[str, Any]]
    in_flight: list[dict[str, Any]]
    working_orders: int


def read_books(database: Database) -> Books:
    """Read both books in one transaction, plus ``tools.reconcile``'s orphan check."""
    with database.transaction() as connection:

        def rows(sql: str) -> list[dict[str, Any]]:
            return [dict(row._mapping) for row in connection.execute(text(sql))]

        open_rows = rows(
            "SELECT position_id, instrument, side, quantity FROM positions "
            "WHERE status = 'OPEN' AND quantity > 0"
        )
        venue_rows = rows("SELECT instrument, quantity FROM venue_positions")
        terminal = ", ".join(f"'{status}'" for status in _TERMINAL)
        engine_leg_rows = rows(
            "SELECT plan_client_id, leg, quantity, filled_quantity FROM orders "
            f"WHERE leg IN ('STOP', 'TARGET') AND status NOT IN ({terminal})"
        )
        venue_leg_rows = rows(
            "SELECT o.plan_client_id, o.leg, v.quantity, v.filled_quantity "
            "FROM venue_orders v JOIN orders o ON o.client_order_id = v.client_order_id "
            f"WHERE o.leg IN ('STOP', 'TARGET') AND v.status NOT IN ({terminal})"
        )
        venue_duplicates = rows(
            "SELECT client_order_id, COUNT(*) AS copies FROM venue_orders "
            "GROUP BY client_order_id HAVING COUNT(*) > 1"
        )
        resubmits = rows(
            "SELECT client_order_id, submit_count, status FROM venue_orders WHERE submit_count > 1"
        )
        in_flight = rows(
            "SELECT client_order_id, leg, status, updated_ns FROM orders WHERE status IN ("
            + ", ".join(f"'{status}'" for status in _IN_FLIGHT)
            + ")"
        )
        working = rows(f"SELECT COUNT(*) AS n FROM orders WHERE status NOT IN ({terminal})")
    report = reconcile(database)

    engine_net: dict[str, int] = defaultdict(int)
    for row in open_rows:
        engine_net[row["instrument"]] += row["quantity"] * (1 if row["side"] == "BUY" else -1)

    def legs(leg_rows: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
        grouped: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for row in leg_rows:
            grouped[row["plan_client_id"]][row["leg"]].append(
                row["quantity"] - row["filled_quantity"]
            )
        return {plan: dict(by_leg) for plan, by_leg in grouped.items()}

    return Books(
        open_positions={
            row["position_id"]: {
                "instrument": row["instrument"],
                "side": row["side"],
                "quantity": row["quantity"],
            }
            for row in open_rows
        },
        engine_net={k: v for k, v in engine_net.items() if v},
        venue_net={row["instrument"]: row["quantity"] for row in venue_rows if row["quantity"]},
        engine_legs=legs(engine_leg_rows),
        venue_legs=legs(venue_leg_rows),
        duplicates=[
            {"table": "orders", "client_order_id": d.client_order_id, "copies": d.copies}
            for d in report.duplicates
        ]
        + [{"table": "venue_orders", **row} for row in venue_duplicates],
        resubmits=resubmits,
        orphans=[
            {
                "client_order_id": o.client_order_id,
                "plan_client_id": o.plan_client_id,
                "leg": o.leg,
                "status": o.status,
                "reason": o.reason,
                "bracket_status": o.bracket_status,
                "position_status": o.position_status,
                "position_quantity": o.position_quantity,
            }
            for o in report.orphans
        ],
        in_flight=in_flight,
        working_orders=int(working[0]["n"]),
    )


def book_violations(books: Books) -> list[Violation]:
    """The checks that hold on any settled book, whatever the fault was."""
    found: list[Violation] = []
    if books.duplicates:
        found.append(Violation("duplicate_client_order_id", books.duplicates))
    if books.resubmits:
        found.append(Violation("venue_resubmit", books.resubmits))
    if books.orphans:
        found.append(Violation("orphan_sibling", books.orphans))
    if books.engine_net != books.venue_net:
        instruments = sorted(set(books.engine_net) | set(books.venue_net))
        found.append(
            Violation(
                "position_drift",
                {
                    instrument: {
                        "engine": books.engine_net.get(instrument, 0),
                        "venue": books.venue_net.get(instrument, 0),
                    }
                    for instrument in instruments
                    if books.engine_net.get(instrument, 0) != books.venue_net.get(instrument, 0)
                },
            )
        )
    unprotected = []
    for plan, position in sorted(books.open_positions.items()):
        quantity = position["quantity"]
        for where, legs in (("engine", books.engine_legs), ("venue", books.venue_legs)):
            plan_legs = legs.get(plan, {})
            if plan_legs.get("STOP") != [quantity] or plan_legs.get("TARGET") != [quantity]:
                unprotected.append(
                    {
                        "plan_client_id": plan,
                        "books": where,
                        "open_quantity": quantity,
                        "working_stop_quantities": plan_legs.get("STOP", []),
                        "working_target_quantities": plan_legs.get("TARGET", []),
                    }
                )
    if unprotected:
        found.append(Violation("unprotected_position", unprotected))
    return found


def _dump_tables(database: Database, destination: Path) -> None:
    tables = (
        "orders",
        "fills",
        "brackets",
        "positions",
        "events",
        "control_state",
        "kill_switch",
        "leader_lease",
        "venue_orders",
        "venue_fills",
        "venue_positions",
        "venue_meta",
    )
    dump: dict[str, Any] = {}
    with database.transaction() as connection:
        for table in tables:
            try:
                dump[table] = [
                    dict(row._mapping) for row in connection.execute(text(f"SELECT * FROM {table}"))
                ]
            except Exception as error:  # a missing table is worth a note, not a crash
                dump[table] = f"unreadable: {error}"
    destination.write_text(json.dumps(dump, indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return repr(value)


# ---------------------------------------------------------------------------- raw HTTP
def _read_status_code(connection: socket.socket) -> int | None:
    # After the kill: whatever the server wrote before dying is still in our socket buffer.
    connection.settimeout(0.5)
    received = b""
    try:
        while b"\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:
                break
            received += chunk
    except OSError:
        pass
    finally:
        connection.close()
    parts = received.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


# ---------------------------------------------------------------------------- trial
def _ready_or_halted(engine: EngineProcess) -> dict[str, Any] | None:
    # Ready, or leading but HALTED (ready is refused then, by design): either way the engine is
    # up and its books can be checked.
    ready = engine.get_json("/ready")
    if ready is None:
        return None
    status = engine.get_json("/status")
    if not isinstance(status, dict) or "trading_state" not in status:
        return None
    if ready.get("ready") or (status["is_leader"] and status["trading_state"] == "HALTED"):
        return status
    return None


def _restart_view(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "trading_state": status["trading_state"],
        "pause_causes": [cause["cause"] for cause in status["pause_causes"]],
        "halt_reason": status["halt_reason"],
        "epoch": status["epoch"],
        "positions_open": status["positions_open"],
        "working_orders": status["working_orders"],
    }


class _Trial:
    def __init__(
        self,
        *,
        index: int,
        seed: int,
        base_dir: Path,
        database_url: str | None,
        settle_timeout_s: float,
        startup_timeout_s: float,
        action: str | None,
    ) -> None:
        # A string seed is hashed (SHA-512), so neighbouring trial seeds give unrelated draws.
        self.rng = random.Random(f"vigil-torture:{seed}")
        self.result = TrialResult(trial=index, seed=seed, action=action or self.rng.choice(ACTIONS))
        self.workdir = base_dir / f"trial-{index:04d}"
        self.workdir.mkdir(parents=True)
        self.result.work_dir = str(self.workdir)
        self.database_url = database_url or f"sqlite:///{self.workdir / 'data' / 'vigil.db'}"
        self.settle_timeout_s = settle_timeout_s
        self.startup_timeout_s = startup_timeout_s
        if database_url is not None:
            _wipe_database(database_url)
        config = trial_config(self.workdir, seed=seed)
        self.engine = EngineProcess(self.workdir, config, free_port(), database_url=database_url)
        self.database: Database | None = None
        self.reason = f"torture-{index}-{seed}"
        self.started = time.monotonic()
        self.killed_at: float | None = None

    def violate(self, kind: str, detail: Any) -> None:
        self.result.violations.append(Violation(kind, detail))

    def run(self) -> TrialResult:
        try:
            self._run()
        except EngineExited as error:
            self.violate("engine_exited", str(error))
        except Exception as error:
            # The tool itself failed (an HTTP timeout, a database read): say so and go on with
            # the next trial; what was already found still counts.
            self.result.outcome = "inconclusive"
            self.result.notes.append(f"trial aborted: {type(error).__name__}: {error}")
        finally:
            self._finish()
        return self.result

    def _run(self) -> None:
        durations = self.result.durations_s
        self.engine.start()
        try:
            wait_for(
                lambda: _ready_or_halted(self.engine),
                timeout_s=self.startup_timeout_s,
                message="/ready on first start",
            )
        except TimeoutError as error:
            self.result.outcome = "inconclusive"
            self.result.notes.append(f"first start: {error}")
            return
        durations["start_s"] = round(time.monotonic() - self.engine.started_at, 3)
        self.database = Database(create_database_engine(self.database_url))
        flow_started = time.monotonic()
        try:
            wait_for(
                lambda: (self.engine.get_json("/status") or {}).get("positions_open", 0) >= 1,
                timeout_s=self.startup_timeout_s,
                message="an open position",
            )
        except TimeoutError as error:
            self.result.outcome = "inconclusive"
            self.result.notes.append(f"order flow: {error}")
            return
        durations["flow_s"] = round(time.monotonic() - flow_started, 3)

        killed, request = self._fault()
        if killed:
            self._record_at_kill(request)
            restart_started = time.monotonic()
            self.engine.start()
            if not self._wait_up("restart"):
                return
            durations["restart_s"] = round(time.monotonic() - restart_started, 3)
        else:
            if not self._wait_up("after SIGCONT"):
                return
        self._check_restart_state()
        settle_started = time.monotonic()
        self._settle()
        durations["settle_s"] = round(time.monotonic() - settle_started, 3)

    def _fault(self) -> tuple[bool, tuple[str, socket.socket] | None]:
        # Returns (killed, (kind, socket) of a request sent just before the kill).
        action = self.result.action
        if action == "kill_flow":
            delay = self.rng.uniform(0, _FLOW_KILL_WINDOW_S)
            self.result.kill_delay_ms = round(delay * 1000, 1)
            time.sleep(delay)  # the fault's random instant, not a synchronisation
            self._kill()
            return True, None
        if action in ("kill_flatten", "kill_pause"):
            path = "/flatten" if action == "kill_flatten" else "/pause"
            delay = self.rng.uniform(0, _REQUEST_KILL_WINDOW_S)
            self.result.kill_delay_ms = round(delay * 1000, 1)
            connection = send_raw_post(self.engine.port, path, {"reason": self.reason})
            time.sleep(delay)  # the fault's random instant after the request was sent
            self._kill()
            return True, (path, connection)
        assert action == "stop_cont", action
        time.sleep(self.rng.uniform(0, 1.0))
        stop_s = self.rng.uniform(_STOP_MIN_S, _STOP_MAX_S)
        self.result.stop_s = round(stop_s, 3)
        self.result.after_stop = self.rng.choice(("continue", "kill"))
        self.engine.signal(signal.SIGSTOP)
        time.sleep(stop_s)  # how long the process stays frozen
        self.engine.signal(signal.SIGCONT)
        if self.result.after_stop == "continue":
            return False, None
        delay = self.rng.uniform(0, _KILL_AFTER_CONT_MAX_S)
        self.result.kill_delay_ms = round(delay * 1000, 1)
        time.sleep(delay)
        self._kill()
        return True, None

    def _kill(self) -> None:
        self.engine.kill()
        self.killed_at = time.monotonic()

    def _record_at_kill(self, request: tuple[str, socket.socket] | None) -> None:
        assert self.database is not None
        at_fault = self.result.at_fault
        books = read_books(self.database)
        at_fault["open_positions"] = len(books.open_positions)
        at_fault["engine_net"] = books.engine_net
        at_fault["venue_net"] = books.venue_net
        at_fault["working_orders"] = books.working_orders
        at_fault["in_flight"] = len(books.in_flight)
        # Flat: nothing open in either book and nothing working (an entry could still fill).
        at_fault["book_flat"] = (
            not books.open_positions and not books.venue_net and not books.working_orders
        )
        rows = self._rows("SELECT value FROM control_state")
        at_fault["stored_control_state"] = [row["value"] for row in rows]
        at_fault["brackets_by_status"] = {
            row["status"]: row["n"]
            for row in self._rows("SELECT status, COUNT(*) AS n FROM brackets GROUP BY status")
        }
        at_fault["sibling_orders_by_status"] = {
            f"{row['leg']}:{row['status']}": row["n"]
            for row in self._rows(
                "SELECT leg, status, COUNT(*) AS n FROM orders WHERE leg IN ('STOP', 'TARGET') "
                "GROUP BY leg, status"
            )
        }
        if request is None:
            return
        path, connection = request
        at_fault["response_status"] = _read_status_code(connection)
        if path == "/flatten":
            # "Received" means the order actor began the flatten (it may have cancelled legs):
            # a request killed before that changed nothing, so restarting ACTIVE is right.
            at_fault["flatten_received"] = bool(
                self.engine.log_lines(f"flatten requested: {self.reason}")
            )
            at_fault["flatten_pause_logged"] = bool(
                self.engine.log_lines(f"entries paused: FLATTEN {self.reason}")
            )
        else:
            at_fault["pause_received"] = bool(
                self.engine.log_lines(f"entries paused: OPERATOR {self.reason}")
            )

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        assert self.database is not None
        with self.database.transaction() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql))]

    def _wait_up(self, what: str) -> bool:
        try:
            status = wait_for(
                lambda: _ready_or_halted(self.engine),
                timeout_s=self.startup_timeout_s,
                message=f"/ready {what}",
            )
        except TimeoutError as error:
            ready = self.engine.get_json("/ready")
            self.violate("restart_not_ready", {"error": str(error), "last_ready": ready})
            return False
        if self.killed_at is not None:
            self.result.durations_s["kill_to_ready_s"] = round(time.monotonic() - self.killed_at, 3)
        self.result.at_restart = _restart_view(status)
        return True

    def _flatten_pending(self) -> bool:
        at_fault = self.result.at_fault
        return bool(at_fault.get("flatten_received")) and not at_fault.get("book_flat", True)

    def _check_restart_state(self) -> None:
        restart = self.result.at_restart
        at_fault = self.result.at_fault
        causes = restart.get("pause_causes", [])
        # HALTED is no excuse: a HALT blocks entries but does not finish the flatten.
        if self._flatten_pending() and "FLATTEN" not in causes:
            self.violate(
                "active_with_flatten_pending",
                {
                    "restart_state": restart,
                    "at_kill": {
                        key: at_fault.get(key)
                        for key in (
                            "open_positions",
                            "engine_net",
                            "venue_net",
                            "working_orders",
                            "brackets_by_status",
                            "sibling_orders_by_status",
                        )
                    },
                    "kill_delay_ms": self.result.kill_delay_ms,
                    "stored_control_state": at_fault.get("stored_control_state"),
                },
            )
        if (
            self.result.action == "kill_pause"
            and at_fault.get("response_status") == 200
            and "OPERATOR" not in causes
        ):
            self.violate(
                "pause_lost", {"restart_state": restart, "kill_delay_ms": self.result.kill_delay_ms}
            )

    def _settle(self) -> None:
        # Freeze entries so the books stop growing; exits and protection go on.
        response = self.engine.post("/pause", json={"reason": "torture settle"})
        if response.status_code != 200:
            self.result.notes.append(f"settle pause answered {response.status_code}")
        flatten_pending = self._flatten_pending() and not any(
            v.kind == "active_with_flatten_pending" for v in self.result.violations
        )
        deadline = time.monotonic() + self.settle_timeout_s
        assert self.database is not None
        while True:
            if not self.engine.alive():
                raise EngineExited(f"engine exited while settling: {self.engine.stderr_tail()}")
            books = read_books(self.database)
            found = book_violations(books)
            if books.in_flight:
                found.append(Violation("unsettled_in_flight", books.in_flight))
            if flatten_pending and (books.open_positions or books.working_orders):
                found.append(
                    Violation(
                        "flatten_unfinished",
                        {
                            "open_positions": len(books.open_positions),
                            "working_orders": books.working_orders,
                        },
                    )
                )
            if not found or time.monotonic() >= deadline:
                self.result.violations.extend(found)
                return
            time.sleep(_SETTLE_POLL_S)

    def _finish(self) -> None:
        result = self.result
        if result.violations:
            result.outcome = "violations"
        if self.engine.alive():
            try:
                code = self.engine.terminate()
                if code != 0:
                    result.notes.append(f"clean stop exited with {code}")
            except Exception as error:
                result.notes.append(f"clean stop failed: {error}")
        self.engine.close()
        result.durations_s["total_s"] = round(time.monotonic() - self.started, 3)
        if self.database is not None:
            if result.outcome != "clean":
                try:
                    _dump_tables(self.database, self.workdir / "tables.json")
                except Exception as error:
                    result.notes.append(f"table dump failed: {error}")
            self.database.dispose()
        (self.workdir / "trial.json").write_text(
            json.dumps(asdict(result), indent=1, default=_json_default)
        )


def run_trial(
    index: int,
    seed: int,
    base_dir: Path,
    *,
    database_url: str | None = None,
    settle_timeout_s: float = 15.0,
    startup_timeout_s: float = 30.0,
    action: str | None = None,
) -> TrialResult:
    """Run one trial in ``base_dir/trial-<index>``; ``action`` None picks one from ``seed``."""
    return _Trial(
        index=index,
        seed=seed,
        base_dir=base_dir,
        database_url=database_url,
        settle_timeout_s=settle_timeout_s,
        startup_timeout_s=startup_timeout_s,
        action=action,
    ).run()


# ---------------------------------------------------------------------------- report
def format_summary(results: Sequence[TrialResult], *, seed: int, elapsed_s: float) -> str:
    """The table printed at the end: outcomes per action, then violations per kind."""
    lines = [f"Vigil torture: {len(results)} trials, seed {seed}, {elapsed_s:.0f} s", ""]
    header = f"{'action':<14}{'trials':>7}{'clean':>7}{'violating':>10}{'inconcl.':>9}{'mean s':>8}"
    lines += [header, "-" * len(header)]
    by_action: dict[str, list[TrialResult]] = defaultdict(list)
    for result in results:
        by_action[result.action].append(result)
    for action in (*ACTIONS, "all"):
        group = list(results) if action == "all" else by_action.get(action, [])
        if not group:
            continue
        outcomes = Counter(result.outcome for result in group)
        mean = sum(result.durations_s.get("total_s", 0) for result in group) / len(group)
        lines.append(
            f"{action:<14}{len(group):>7}{outcomes['clean']:>7}{outcomes['violations']:>10}"
            f"{outcomes['inconclusive']:>9}{mean:>8.1f}"
        )
    kinds: dict[str, list[int]] = defaultdict(list)
    for result in results:
        for kind in sorted({violation.kind for violation in result.violations}):
            kinds[kind].append(result.trial)
    lines += ["", "Violations by kind (trials with at least one):"]
    if not kinds:
        lines.append("  none")
    for kind, trials in sorted(kinds.items()):
        shown = ", ".join(str(trial) for trial in trials[:10])
        more = f", ... (+{len(trials) - 10})" if len(trials) > 10 else ""
        lines.append(f"  {kind:<28}{len(trials):>5}   trials {shown}{more}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 1 when any trial had a violation, 2 on bad arguments, else 0."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.torture",
        description="Crash the engine at random moments and check the books after restart.",
    )
    parser.add_argument("--trials", type=int, required=True, help="number of trials")
    parser.add_argument("--seed", type=int, default=None, help="seed of the whole run")
    parser.add_argument(
        "--keep-failures", type=Path, default=None, help="copy non-clean trials' dirs here"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="run on this database instead of a SQLite file per trial (wiped every trial; "
        "its name must contain 'torture')",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="JSON lines file (default: in the temp dir)"
    )
    parser.add_argument("--action", choices=ACTIONS, default=None, help="only this fault")
    parser.add_argument(
        "--trial-seed",
        type=int,
        default=None,
        help="replay one trial: its seed as printed (with --trials 1)",
    )
    parser.add_argument("--settle-timeout", type=float, default=15.0, help="seconds (15)")
    arguments = parser.parse_args(argv)
    if arguments.trials < 1:
        parser.error("--trials must be at least 1")
    if arguments.database_url is not None:
        problem = _check_throwaway(arguments.database_url)
        if problem is not None:
            parser.error(problem)
    seed = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(10**6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_path = arguments.results or Path(tempfile.gettempdir()) / f"vigil-torture-{stamp}.jsonl"
    base_dir = Path(tempfile.mkdtemp(prefix="vigil-torture-"))
    run_rng = random.Random(seed)
    print(f"torture: {arguments.trials} trials, seed {seed}, results {results_path}", flush=True)
    results: list[TrialResult] = []
    started = time.monotonic()
    try:
        with results_path.open("a") as results_file:
            for index in range(1, arguments.trials + 1):
                trial_seed = run_rng.randrange(2**32)
                if arguments.trial_seed is not None:
                    trial_seed = arguments.trial_seed
                result = run_trial(
                    index,
                    trial_seed,
                    base_dir,
                    database_url=arguments.database_url,
                    settle_timeout_s=arguments.settle_timeout,
                    action=arguments.action,
                )
                results.append(result)
                results_file.write(json.dumps(asdict(result), default=_json_default) + "\n")
                results_file.flush()
                kinds = ",".join(sorted({v.kind for v in result.violations})) or "-"
                if result.outcome == "inconclusive":
                    kinds = "; ".join(result.notes)
                print(
                    f"trial {index:>4} seed {trial_seed:>10} {result.action:<13} "
                    f"{result.outcome:<12} {result.durations_s.get('total_s', 0):>5.1f}s  {kinds}",
                    flush=True,
                )
                workdir = Path(result.work_dir or "")
                if result.outcome != "clean" and arguments.keep_failures is not None:
                    arguments.keep_failures.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(
                        workdir,
                        arguments.keep_failures / f"{workdir.name}-{result.action}",
                        dirs_exist_ok=True,
                    )
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    print()
    print(format_summary(results, seed=seed, elapsed_s=time.monotonic() - started))
    print(f"\nresults: {results_path}")
    return 1 if any(result.violations for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
