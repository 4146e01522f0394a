"""recommendations, feedback events: indexes of each HCP id as the near-id check folds it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 00:00:00

``nextbest erase`` of an id no row names looks for ids spelled alike but for case
and leading zeros (``H000002`` for ``h000002``), comparing ``lower(ltrim(hcp_id,
'0'))``: without an index on that expression the look-up read both tables whole,
seconds per erasure on a year of log. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOLDED = sa.text("lower(ltrim(hcp_id, '0'))")


def upgrade() -> None:
    op.create_index("ix_recommendations_hcp_id_folded", "recommendations", [_FOLDED])
    op.create_index("ix_feedback_events_hcp_id_folded", "feedback_events", [_FOLDED])


def downgrade() -> None:
    # Named in full: `nextbest db downgrade` reads what a step drops from these calls.
    op.drop_index("ix_feedback_events_hcp_id_folded", table_name="feedback_events")
    op.drop_index("ix_recommendations_hcp_id_folded", table_name="recommendations")
