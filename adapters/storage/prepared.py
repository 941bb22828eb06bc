"""Statements compiled once, executed many times with plain parameters.

A writer that stores many rows per batch (the order write-behind, the paper venue's writer)
pays for SQLAlchemy's statement building, cache-key generation and per-row ``execute`` on
every row if it builds ``update(...).values(**row)`` each time: in a flatten of 50 positions
that was most of the venue writer's CPU. A ``PreparedStatement`` is compiled for the dialect
once, keeps the bind processors of its columns (``ExactDecimal`` and the like), and turns a
batch of row dicts into the driver's parameters for one ``exec_driver_sql`` executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Dialect, Table, bindparam

__all__ = ["PreparedStatement", "upsert_statement"]


class PreparedStatement:
    """A statement compiled once for ``dialect``, with the bind processors of ``table``'s
    columns, so a batch goes to the driver as plain parameters (one executemany).

    Bind names that are not columns of ``table`` (a WHERE key such as ``b_id``) pass through
    unprocessed.
    """

    def __init__(self, statement: Any, table: Table, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        # Positional paramstyles (SQLite's qmark) need the names' order; named ones (psycopg's
        # pyformat) take a mapping.
        self._positions: list[str] | None = (
            list(compiled.positiontup) if compiled.positional else None
        )
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name in compiled.binds:
            column = table.columns.get(name)
            if column is None:
                continue
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor

    def parameters(self, row: Mapping[str, Any]) -> Any:
        """The driver's parameters for one row (a tuple or a mapping, as the dialect wants)."""
        processors = self._processors
        values = {
            name: (processors[name](value) if name in processors else value)
            for name, value in row.items()
        }
        if self._positions is None:
            return values
        return tuple(values[name] for name in self._positions)

    def execute_many(self, connection: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run the statement once per row in one executemany; return the driver's rowcount
        (the rows changed in total where the driver counts them, else -1)."""
        parameters = [self.parameters(row) for row in rows]
        if not parameters:
            return 0
        result = connection.exec_driver_sql(self.sql, parameters)
        return int(result.rowcount)


def upsert_statement(
    insert: Any, table: Table, key: str, dialect: Dialect, *, skip: Iterable[str] = ("id",)
) -> PreparedStatement:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of every column (but ``skip``), prepared.

    Args:
        insert: the dialect's ``insert`` (``adapters.storage.repositories.dialect_insert``).
        table: the table written.
        key: the unique column the conflict is on.
        dialect: the connection's dialect.
        skip: columns neither inserted nor updated (a surrogate id).
    """
    skipped = set(skip)
    columns = [c.name for c in table.columns if c.name not in skipped]
    statement = insert(table).values({name: bindparam(name) for name in columns})
    changes = {name: statement.excluded[name] for name in columns if name != key}
    return PreparedStatement(
        statement.on_conflict_do_update(index_elements=[key], set_=changes), table, dialect
    )
