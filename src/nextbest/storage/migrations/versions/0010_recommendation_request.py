"""recommendations: the number of items asked for and the softmax temperature

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 00:00:00

An answer with two items may have been asked for two, or for five of which only
two were allowed and worth their cost; the log kept the items but not the ``k``
of the request. Softmax exploration logged its draw's propensities but not the
temperature they were drawn at (``epsilon`` is 0 for it). Both are now stored
with each answer (``k_requested``, ``temperature``; NULL for rows stored before,
and ``temperature`` NULL for epsilon-greedy answers). Written by hand,
self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.add_column(sa.Column("k_requested", sa.Integer, nullable=True))
        batch.add_column(sa.Column("temperature", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("temperature")
        batch.drop_column("k_requested")
