"""consent events: an index of each HCP's opt-outs and opt-ins

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00

Every served answer reads its HCP's consent events (``opted_out``, ``opted_in``)
over all time; a partial index holds just those rows, so the read does not walk
the HCP's every contact and decision. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONSENT = sa.text("event_type IN ('opted_out', 'opted_in')")


def upgrade() -> None:
    op.create_index(
        "ix_feedback_events_consent",
        "feedback_events",
        ["hcp_id", "occurred_at"],
        sqlite_where=_CONSENT,
        postgresql_where=_CONSENT,
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_events_consent", table_name="feedback_events")
