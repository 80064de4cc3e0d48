"""series_state says until when a series is learning

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16 10:00:00

Series are scored from ``min_history`` rows with bands that are wider while their
history is short; ``learning_until`` is about when that ends (epoch seconds), NULL once it
has (or for series scored before this revision, until their next cycle). A nullable
column: SQLite adds it without rebuilding the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("series_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("learning_until", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series_state", schema=None) as batch_op:
        batch_op.drop_column("learning_until")
