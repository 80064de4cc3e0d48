"""series state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:53:24.691015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import anomon.store.types


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('series_state',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('scored_until', sa.BigInteger(), nullable=False),
    sa.Column('quality', sa.String(length=20), nullable=False),
    sa.Column('updated_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_series_state_series_id_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_id', name=op.f('pk_series_state'))
    )


def downgrade() -> None:
    op.drop_table('series_state')
