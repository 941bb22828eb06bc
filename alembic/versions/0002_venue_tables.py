"""Paper venue books: venue_orders, venue_fills, venue_positions, venue_meta.

The paper broker's own record, kept apart from the engine's tables so that it outlives an
engine crash (``adapters/brokers/paper/books.py`` defines the same tables for the code).
Money columns use the engine's ``ExactDecimal`` storage: NUMERIC(20, 6) on PostgreSQL, canonical
text on SQLite.

Revision ID: 0002_venue_tables
Revises: 0001_engine_tables
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0002_venue_tables"
down_revision = "0001_engine_tables"
branch_labels = None
depends_on = None


def _money() -> sa.types.TypeEngine:
    return sa.Numeric(20, 6).with_variant(sa.String(48), "sqlite")


def upgrade() -> None:
    op.create_table(
        "venue_orders",
        sa.Column("venue_order_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("client_order_id", sa.String(128), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", _money(), nullable=True),
        sa.Column("trigger_price", _money(), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("filled_quantity", sa.Integer(), nullable=False),
        sa.Column("average_fill_price", _money(), nullable=True),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("is_accepted", sa.Boolean(), nullable=False),
        sa.Column("is_triggered", sa.Boolean(), nullable=False),
        sa.Column("ts_received", sa.BigInteger(), nullable=False),
        sa.Column("ack_due_ns", sa.BigInteger(), nullable=False),
        sa.Column("cancel_due_ns", sa.BigInteger(), nullable=True),
        sa.Column("modify_quantity", sa.Integer(), nullable=True),
        sa.Column("modify_due_ns", sa.BigInteger(), nullable=True),
        sa.Column("submit_count", sa.Integer(), nullable=False),
        sa.Column("ts_updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("venue_order_id", name="pk_venue_orders"),
        sa.UniqueConstraint("seq", name="uq_venue_orders_seq"),
        sa.UniqueConstraint("client_order_id", name="uq_venue_orders_client_order_id"),
    )
    op.create_index("ix_venue_orders_status", "venue_orders", ["status"])
    op.create_index("ix_venue_orders_ts_received", "venue_orders", ["ts_received"])

    op.create_table(
        "venue_fills",
        sa.Column("trade_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("venue_order_id", sa.String(32), nullable=False),
        sa.Column("client_order_id", sa.String(128), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", _money(), nullable=False),
        sa.Column("ts_event", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trade_id", name="pk_venue_fills"),
        sa.UniqueConstraint("seq", name="uq_venue_fills_seq"),
    )
    op.create_index("ix_venue_fills_venue_order_id", "venue_fills", ["venue_order_id"])
    op.create_index("ix_venue_fills_ts_event", "venue_fills", ["ts_event"])

    op.create_table(
        "venue_positions",
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("average_price", _money(), nullable=False),
        sa.Column("realized_pnl", _money(), nullable=False),
        sa.Column("ts_updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("instrument", name="pk_venue_positions"),
    )

    op.create_table(
        "venue_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_venue_meta"),
    )


def downgrade() -> None:
    op.drop_table("venue_meta")
    op.drop_table("venue_positions")
    op.drop_index("ix_venue_fills_ts_event", table_name="venue_fills")
    op.drop_index("ix_venue_fills_venue_order_id", table_name="venue_fills")
    op.drop_table("venue_fills")
    op.drop_index("ix_venue_orders_ts_received", table_name="venue_orders")
    op.drop_index("ix_venue_orders_status", table_name="venue_orders")
    op.drop_table("venue_orders")
