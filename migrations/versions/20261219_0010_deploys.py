"""deploys: model versions deployed, recorded or found from a version label

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-19 10:00:00

``anomon deploy`` records a deploy, and detection records one when a model's ``version``
label changes; plots, the Grafana dashboards and notifications show them. A new table:
no downtime.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import anomon.store.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deploys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", anomon.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("entity", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("created_at", anomon.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploys")),
        sa.UniqueConstraint(
            "model", "entity", "version", "at", name=op.f("uq_deploys_model_entity_version_at")
        ),
    )
    op.create_index(op.f("ix_deploys_at"), "deploys", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_deploys_at"), table_name="deploys")
    op.drop_table("deploys")
