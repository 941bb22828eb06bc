"""The day figures and the engine starts: day_figure_counts, day_heat, engine_starts.

``day_figure_counts`` holds per trading day the counts the daily report needs and no other
table holds (signals per strategy, approved plans per strategy, blocked plans per denial code,
order acks per latency bucket, and how often the day was stored); ``day_heat`` the day's
high-water mark of portfolio heat and when it was reached. Both are only ever added to (counts)
or raised (heat) by ``adapters.storage.day_figures.DayFiguresRecorder``, so the figures of
several engine processes on one day add up. ``engine_starts`` records each start's config SHA
and git SHA (``launcher.engine.Engine.start``). A day stored before this revision has no rows:
the report says "not stored" for it.

Revision ID: 0005_day_figures
Revises: 0004_audit_log
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0005_day_figures"
down_revision = "0004_audit_log"
branch_labels = None
depends_on = None


def _money() -> sa.types.TypeEngine:
    return sa.Numeric(20, 6).with_variant(sa.String(48), "sqlite")


def upgrade() -> None:
    op.create_table(
        "day_figure_counts",
        sa.Column("trading_day", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trading_day", "kind", "key", name="pk_day_figure_counts"),
    )
    op.create_table(
        "day_heat",
        sa.Column("trading_day", sa.String(10), nullable=False),
        sa.Column("max_heat", _money(), nullable=False),
        sa.Column("max_heat_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trading_day", name="pk_day_heat"),
    )
    op.create_table(
        "engine_starts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("trading_day", sa.String(10), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("lease_holder", sa.String(64), nullable=False),
        sa.Column("config_sha", sa.String(64), nullable=False),
        sa.Column("git_sha", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_engine_starts"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_engine_starts_ts_ns", "engine_starts", ["ts_ns"])


def downgrade() -> None:
    op.drop_index("ix_engine_starts_ts_ns", table_name="engine_starts")
    op.drop_table("engine_starts")
    op.drop_table("day_heat")
    op.drop_table("day_figure_counts")
