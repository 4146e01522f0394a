"""recommendations: the fingerprint of the serving rules an answer was made under

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00

Every worker re-reads the serving rules file (frequency caps, cool-downs,
withdrawn_actions) at a reload, each at a slightly different moment. Answers
record the fingerprint of the rules their worker held (the first 12 hex digits
of the SHA-256 of the file's bytes), so an audit can tell which caps and
withdrawals were in force for each. Rows stored before have none. Written by
hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.add_column(sa.Column("rules_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("rules_fingerprint")
