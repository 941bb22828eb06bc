"""The order actor's write-ahead journal: order_journal.

One append-only row per broker call the order actor makes (place, resend, cancel, cancel
resend, resize), written by one fenced INSERT before the call (``adapters/storage/journal.py``);
the relational tables follow behind it in batches (``adapters/storage/write_behind.py``), which
delete the entries they have caught up with. ``seq`` is never reused (AUTOINCREMENT on SQLite,
a sequence on PostgreSQL), and a partial unique index refuses a second PLACE of one
``client_order_id``.

Revision ID: 0003_order_journal
Revises: 0002_venue_tables
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0003_order_journal"
down_revision = "0002_venue_tables"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_journal",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("client_order_id", sa.String(40), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_order_journal"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_order_journal_place_client_order_id",
        "order_journal",
        ["client_order_id"],
        unique=True,
        sqlite_where=sa.text("kind = 'PLACE'"),
        postgresql_where=sa.text("kind = 'PLACE'"),
    )


def downgrade() -> None:
    op.drop_index("uq_order_journal_place_client_order_id", table_name="order_journal")
    op.drop_table("order_journal")
