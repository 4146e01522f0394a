"""feedback events: who sent each one; recommendations: the time decided for

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00

Every feedback event records its requester (the API key's name, or the command
that stored a file's rows), so that an audit can say who withdrew or gave consent
and who decided on a suggestion; and every logged answer the decision time it
was made for (a plan for tomorrow is served today), which the report and the gate
replay it at. Rows stored before stay without them. Written by hand,
self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback_events") as batch:
        batch.add_column(sa.Column("requester", sa.String(128), nullable=True))
    with op.batch_alter_table("recommendations") as batch:
        batch.add_column(sa.Column("decided_for", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("decided_for")
    with op.batch_alter_table("feedback_events") as batch:
        batch.drop_column("requester")
