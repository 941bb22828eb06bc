"""Post-close database reconcile: duplicate client order ids and orphan OCO siblings.

``python -m tools.reconcile [--database-url URL] [--json]`` runs the checks of
``tools/reconcile_db.sql`` through SQLAlchemy on any ``DATABASE_URL`` (default: the
environment's ``DATABASE_URL``, else ``sqlite:///data/vigil.db``), prints a report and exits
0 when clean, 1 when duplicates or orphans were found, 2 when the database cannot be read
(missing file, missing tables, no connection). It only reads; it never migrates or repairs.

An orphan sibling is a working (not FILLED/CANCELLED/REJECTED) STOP or TARGET order whose
bracket is CLOSED/CANCELLED (``BRACKET_CLOSED``), whose position is CLOSED or has an open
quantity of 0 (``POSITION_CLOSED``), or that has no position at all (``NO_POSITION``).
``reconcile(database)`` is the same check for tests and for the engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from adapters.storage.database import Database, create_database_engine
from adapters.storage.tables import brackets, fills, orders, positions
from domain.enums import LegKind, OrderStatus
from domain.oco import BracketStatus

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DuplicateOrder",
    "OrphanSibling",
    "ReconcileReport",
    "format_report",
    "main",
    "reconcile",
]

DEFAULT_DATABASE_URL = "sqlite:///data/vigil.db"

_TERMINAL = tuple(status.value for status in OrderStatus if status.is_terminal)
_SIBLING_LEGS = (LegKind.STOP.value, LegKind.TARGET.value)
_INACTIVE_BRACKETS = (BracketStatus.CLOSED.value, BracketStatus.CANCELLED.value)

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class DuplicateOrder(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    copies: int


class OrphanSibling(msgspec.Struct, frozen=True, kw_only=True):
    """A working STOP/TARGET left without a live position. ``reason`` is BRACKET_CLOSED,
    POSITION_CLOSED or NO_POSITION."""

    client_order_id: str
    plan_client_id: str
    leg: str
    status: str
    reason: str
    bracket_status: str | None
    position_status: str | None
    position_quantity: int | None


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the reconcile found; ``clean`` is True when there are neither duplicates nor
    orphans. ``summary`` holds counts: orders_by_status, orders, working_orders,
    open_positions, active_brackets, fills."""

    duplicates: list[DuplicateOrder]
    orphans: list[OrphanSibling]
    summary: dict[str, Any]
    clean: bool


def reconcile(database: Database) -> ReconcileReport:
    """Run every check in one read transaction.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read (e.g. tables missing).
    """
    with database.transaction() as connection:
        duplicate_rows = connection.execute(
            select(orders.c.client_order_id, func.count().label("copies"))
            .group_by(orders.c.client_order_id)
            .having(func.count() > 1)
            .order_by(orders.c.client_order_id)
        ).all()

        bracket_closed = brackets.c.status.in_(_INACTIVE_BRACKETS)
        position_closed = and_(
            positions.c.position_id.is_not(None),
            or_(positions.c.status == "CLOSED", positions.c.quantity == 0),
        )
        no_position = positions.c.position_id.is_(None)
        reason = case(
            (bracket_closed, "BRACKET_CLOSED"),
            (position_closed, "POSITION_CLOSED"),
            else_="NO_POSITION",
        ).label("reason")
        orphan_rows = connection.execute(
            select(
                orders.c.client_order_id,
                orders.c.plan_client_id,
                orders.c.leg,
                orders.c.status,
                reason,
                brackets.c.status.label("bracket_status"),
                positions.c.status.label("position_status"),
                positions.c.quantity.label("position_quantity"),
            )
            .select_from(
                orders.outerjoin(
                    brackets, brackets.c.plan_client_id == orders.c.plan_client_id
                ).outerjoin(positions, positions.c.position_id == orders.c.plan_client_id)
            )
            .where(
                orders.c.leg.in_(_SIBLING_LEGS),
                orders.c.status.not_in(_TERMINAL),
                or_(bracket_closed, position_closed, no_position),
            )
            .order_by(orders.c.client_order_id)
        ).all()

        by_status = {
            status: int(count)
            for status, count in connection.execute(
                select(orders.c.status, func.count())
                .group_by(orders.c.status)
                .order_by(orders.c.status)
            )
        }

        def count(statement: Any) -> int:
            return int(connection.execute(statement).scalar_one())

        summary: dict[str, Any] = {
            "orders_by_status": by_status,
            "orders": sum(by_status.values()),
            "working_orders": sum(
                number for status, number in by_status.items() if status not in _TERMINAL
            ),
            "open_positions": count(
                select(func.count()).select_from(positions).where(positions.c.status == "OPEN")
            ),
            "active_brackets": count(
                select(func.count())
                .select_from(brackets)
                .where(brackets.c.status.not_in(_INACTIVE_BRACKETS))
            ),
            "fills": count(select(func.count()).select_from(fills)),
        }

    duplicates = [
        DuplicateOrder(client_order_id=row.client_order_id, copies=int(row.copies))
        for row in duplicate_rows
    ]
    orphans = [
        OrphanSibling(
            client_order_id=row.client_order_id,
            plan_client_id=row.plan_client_id,
            leg=row.leg,
            status=row.status,
            reason=row.reason,
            bracket_status=row.bracket_status,
            position_status=row.position_status,
            position_quantity=row.position_quantity,
        )
        for row in orphan_rows
    ]
    return ReconcileReport(
        duplicates=duplicates,
        orphans=orphans,
        summary=summary,
        clean=not duplicates and not orphans,
    )


def format_report(report: ReconcileReport, *, database_label: str) -> str:
    """The human-readable report ``main`` prints."""
    lines = [f"Vigil reconcile: {database_label}", ""]
    lines.append(f"Duplicate client_order_id: {len(report.duplicates)}")
    lines += [
        f"  {duplicate.client_order_id}  copies={duplicate.copies}"
        for duplicate in report.duplicates
    ]
    lines.append(f"Orphan OCO siblings: {len(report.orphans)}")
    lines += [
        f"  {orphan.client_order_id}  leg={orphan.leg} status={orphan.status} "
        f"reason={orphan.reason} plan={orphan.plan_client_id} "
        f"bracket={orphan.bracket_status or 'NONE'} "
        + (
            "position=NONE"
            if orphan.position_status is None
            else f"position={orphan.position_status} quantity={orphan.position_quantity}"
        )
        for orphan in report.orphans
    ]
    summary = report.summary
    lines += [
        "",
        "Summary:",
        f"  orders={summary['orders']} working_orders={summary['working_orders']} "
        f"open_positions={summary['open_positions']} "
        f"active_brackets={summary['active_brackets']} fills={summary['fills']}",
    ]
    lines += [
        f"  orders {status}: {number}" for status, number in summary["orders_by_status"].items()
    ]
    lines += ["", "RESULT: CLEAN" if report.clean else "RESULT: FINDINGS (see above)"]
    return "\n".join(lines)


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 clean, 1 findings, 2 error)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.reconcile",
        description="Check the engine database for duplicate client order ids and orphan "
        "OCO siblings. Exit 0 clean, 1 findings, 2 error.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLAlchemy URL (default: $DATABASE_URL, else {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    arguments = parser.parse_args(argv)
    url = arguments.database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    label = _redacted(url)

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not os.path.exists(path):
            print(
                f"reconcile: no SQLite database at {path!r} (url={label}); start the engine or "
                "run `alembic upgrade head` first",
                file=sys.stderr,
            )
            return EXIT_ERROR
    database = Database(create_database_engine(url))
    try:
        report = reconcile(database)
    except SQLAlchemyError as error:
        print(f"reconcile: cannot read the database {label}: {error}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        database.dispose()
    if arguments.json:
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
    else:
        print(format_report(report, database_label=label))
    return EXIT_CLEAN if report.clean else EXIT_FINDINGS


if __name__ == "__main__":
    sys.exit(main())
