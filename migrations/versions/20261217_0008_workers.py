"""workers: each running anomon process and its heartbeat

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-17 10:00:00

``anomon run`` registers a row at start and renews ``heartbeat_at`` while it runs, so
``anomon status`` can say whether a daemon is running on this database and since when
(and a later version can share work between several). A new table: no downtime.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import anomon.store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("started_at", anomon.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", anomon.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", anomon.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index(op.f("ix_workers_heartbeat_at"), "workers", ["heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_workers_heartbeat_at"), table_name="workers")
    op.drop_table("workers")
