"""recommendation_items: the reasons each served item was shown with

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:00:00

A served item carries short sentences for a rep or a reader (recent contacts,
the measured effect for HCPs like this one). They depend on the contact history
of the moment, so they cannot be rebuilt later: support answering "why did Dr X
get this?" and an audit need them as shown. Stored as a JSON list of strings;
rows stored before have none (NULL). Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendation_items") as batch:
        batch.add_column(sa.Column("reasons", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendation_items") as batch:
        batch.drop_column("reasons")
