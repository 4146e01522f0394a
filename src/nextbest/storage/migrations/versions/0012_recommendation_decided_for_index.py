"""recommendations: an index of the time each answer was decided for

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 00:00:00

``picks --log`` notes the HCPs of its file that an earlier send already got answers
for, decided for the same day (``decided_for``), whenever those were logged (a send
rerun after midnight, a file for a past or coming date); the index keeps that read
to the day's answers however long the log. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_recommendations_decided_for", "recommendations", ["decided_for"])


def downgrade() -> None:
    op.drop_index("ix_recommendations_decided_for", table_name="recommendations")
