"""Engine tables: orders, fills, brackets, positions, events, lease, kill switch, control, reports

Tables: orders, fills, brackets, positions, events, leader_lease, kill_switch, control_state,
daily_reports.

Revision ID: 0001_engine_tables
Revises:
Create Date: 2025-01-01

Written by hand. Constraint and index names follow the naming convention of
adapters/storage/metadata.py, so an autogenerate comparison against adapters/storage/tables.py
finds nothing to do. Money is NUMERIC(20, 6) on PostgreSQL and canonical text on SQLite (see
``ExactDecimal`` in adapters/storage/tables.py for why).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001_engine_tables"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _money() -> sa.types.TypeEngine:
    return sa.Numeric(20, 6).with_variant(sa.String(48), "sqlite")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(40), nullable=False),
        sa.Column("plan_client_id", sa.String(40), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("leg", sa.String(16), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", _money(), nullable=True),
        sa.Column("trigger_price", _money(), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("filled_quantity", sa.Integer(), nullable=False),
        sa.Column("average_fill_price", _money(), nullable=True),
        sa.Column("broker_order_id", sa.String(64), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
    )
    op.create_index("ix_orders_plan_client_id", "orders", ["plan_client_id"])
    op.create_index("ix_orders_status", "orders", ["status"])

    op.create_table(
        "fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(40), nullable=False),
        sa.Column("plan_client_id", sa.String(40), nullable=False),
        sa.Column("broker_order_id", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", _money(), nullable=False),
        sa.Column("ts_event_ns", sa.BigInteger(), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
        sa.UniqueConstraint("trade_id", name="uq_fills_trade_id"),
    )
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])
    op.create_index("ix_fills_plan_client_id", "fills", ["plan_client_id"])

    op.create_table(
        "brackets",
        sa.Column("plan_client_id", sa.String(40), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("entry_order_id", sa.String(40), nullable=True),
        sa.Column("stop_order_id", sa.String(40), nullable=True),
        sa.Column("target_order_id", sa.String(40), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("plan_client_id", name="pk_brackets"),
    )
    op.create_index("ix_brackets_status", "brackets", ["status"])

    op.create_table(
        "positions",
        sa.Column("position_id", sa.String(40), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("average_price", _money(), nullable=False),
        sa.Column("realized_pnl", _money(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("position_id", name="pk_positions"),
    )
    op.create_index("ix_positions_status", "positions", ["status"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_ts_ns", "events", ["ts_ns"])
    op.create_index("ix_events_event", "events", ["event"])

    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_ns", sa.BigInteger(), nullable=False),
        sa.Column("renewed_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leader_lease"),
    )

    op.create_table(
        "kill_switch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("activated_ns", sa.BigInteger(), nullable=True),
        sa.Column("reset_ns", sa.BigInteger(), nullable=True),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kill_switch"),
    )

    op.create_table(
        "control_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_control_state"),
    )

    op.create_table(
        "daily_reports",
        sa.Column("trading_day", sa.String(10), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trading_day", name="pk_daily_reports"),
    )


def downgrade() -> None:
    op.drop_table("daily_reports")
    op.drop_table("control_state")
    op.drop_table("kill_switch")
    op.drop_table("leader_lease")
    op.drop_index("ix_events_event", table_name="events")
    op.drop_index("ix_events_ts_ns", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_positions_status", table_name="positions")
    op.drop_table("positions")
    op.drop_index("ix_brackets_status", table_name="brackets")
    op.drop_table("brackets")
    op.drop_index("ix_fills_plan_client_id", table_name="fills")
    op.drop_index("ix_fills_client_order_id", table_name="fills")
    op.drop_table("fills")
    op.drop_index("ix_orders_status", table_name="orders")
    op.drop_index("ix_orders_plan_client_id", table_name="orders")
    op.drop_table("orders")
