"""maintenance_runs: the trail of every prune and erasure

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 00:00:00

``nextbest prune`` and ``nextbest erase`` delete rows. An erasure kept one
suppression per HCP saying who and when, but a prune left nothing: a deleted
answer could not be told from one never logged, nor who deleted it. One row per
run now records who ran it, when it started and ended, its cutoff and options,
the rows it deleted per table, and whether it finished or was interrupted (and
why). In the database itself, so it is backed up and restored with the rows it
speaks of. A new table: existing rows are untouched, and no run before this
revision is recorded. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arguments", sa.String(256), nullable=True),
        sa.Column("hcps", sa.Integer(), nullable=True),
        sa.Column("recommendations", sa.Integer(), nullable=False),
        sa.Column("recommendation_items", sa.Integer(), nullable=False),
        sa.Column("feedback_events", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_maintenance_runs")),
        sa.CheckConstraint(
            "outcome IN ('running', 'finished', 'interrupted')",
            name=op.f("ck_maintenance_runs_outcome"),
        ),
    )
    op.create_index(op.f("ix_maintenance_runs_started_at"), "maintenance_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_maintenance_runs_started_at"), table_name="maintenance_runs")
    op.drop_table("maintenance_runs")
