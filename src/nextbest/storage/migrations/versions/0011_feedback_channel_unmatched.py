"""feedback events: whether an opt-out's channel is still to be read against a catalog

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 00:00:00

An opt-out sent while no model is served names its channel as its sender spells it
('e-mail', 'fax'), with no catalog to read it against; it was compared with the
catalog channels as stored once a model served, so it withdrew nothing. Such an
opt-out is now marked (``channel_unmatched`` true) and read against the served
catalog at each read, as it would have been read on arrival with a model served.
Rows stored before stay unmarked (NULL) and are read as stored: nothing tells
which of them were stored with no model. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feedback_events") as batch:
        batch.add_column(sa.Column("channel_unmatched", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback_events") as batch:
        batch.drop_column("channel_unmatched")
