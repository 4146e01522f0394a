"""recommendations: the probability the serving policy had of answering with no action

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00

Every logged answer records the probability its serving policy had of answering
the request with no action at all, holdout included, as the policy computed it
when it answered. Off-policy evaluation and retraining divide the outcome of a
holdout or empty answer by it; rebuilt later by re-scoring, it misses what the
live rules (caps, cool-downs, dismissals, opt-outs) and a send list's consent had
excluded at the time. Rows stored before stay without it, and keep the re-scored
value. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.add_column(sa.Column("p_no_action", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("p_no_action")
