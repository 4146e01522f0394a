"""recommendations: the rep a call plan's answer was made for

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:00:00

A rep call plan's answers record the rep they were planned for (the rep_id of
/v1/reps/{rep_id}/suggestions). The requester is the API key that asked, which
for a plan an admin's key fetched (a CRM pushing every rep's plan) is the admin's:
without the rep, an audit could not tell who was sent to which HCP. Other answers,
and rows stored before, have none. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.add_column(sa.Column("rep_id", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("rep_id")
