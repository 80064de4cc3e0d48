"""series_state says until when a series is learning, and its latest value

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16 10:00:00

Series are scored from ``min_history`` rows with bands that are wider while their
history is short; ``learning_until`` is about when that ends (epoch seconds), NULL once it
has. ``last_ts``, ``last_value`` and ``last_expected`` are a series' latest scored row and
what the detectors expected of it: notifications tell the value as it is when they are
written, not the one of whichever anomaly row was strongest. All NULL for series scored
before this revision until their next cycle; nullable columns: SQLite adds them without
rebuilding the table.
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
        batch_op.add_column(sa.Column("last_ts", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_value", sa.Float(precision=53), nullable=True))
        batch_op.add_column(sa.Column("last_expected", sa.Float(precision=53), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series_state", schema=None) as batch_op:
        batch_op.drop_column("last_expected")
        batch_op.drop_column("last_value")
        batch_op.drop_column("last_ts")
        batch_op.drop_column("learning_until")
