"""series_state.last_score: each series' score at its latest scored row

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-20 10:00:00

The console's series explorer (and plain SQL) show a series' current score beside its
latest value and expected value. A nullable column: no downtime; rows get it at their
series' next detection cycle.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("series_state", sa.Column("last_score", sa.Float(precision=53), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series_state") as batch:
        batch.drop_column("last_score")
