"""serving_rules: the text of every serving rules file answers were made under

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 01:30:00

Each logged answer names the rules it was made under by a fingerprint (the first
12 hex digits of the file's SHA-256, revision 0006), but the file's text was kept
nowhere: once edited, an audit could not say which caps or withdrawals an old
answer was made under. One row per fingerprint now keeps the text, stored by
the first worker or ``picks --log`` run that read it. A new table: answers
logged before keep only their fingerprint. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "serving_rules",
        sa.Column("fingerprint", sa.String(12), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("first_stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_serving_rules")),
    )


def downgrade() -> None:
    op.drop_table("serving_rules")
