"""recommendations: the random split that chose the answering version

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 00:00:00

With a challenger answering a share of the HCPs (NEXTBEST_CHALLENGER_SHARE), a
draw per HCP chooses which version answers it. Each answer such a draw chose now
records the version it could have chosen instead (``split_with``) and the
probability it had of choosing the version that answered (``split_share``): the
gate values the decision with the mixture of both versions' probabilities of its
action, which the random split makes the probability it was served with. NULL
where no draw chose (no challenger, an HCP or a day only one version can answer,
a rep's plan) and for rows stored before. Written by hand, self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, not batch mode: on SQLite a batch rebuilds the table from what
    # it reflects, which leaves out 0013's index of the folded HCP id.
    op.add_column("recommendations", sa.Column("split_with", sa.String(64), nullable=True))
    op.add_column("recommendations", sa.Column("split_share", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("recommendations", "split_share")
    op.drop_column("recommendations", "split_with")
