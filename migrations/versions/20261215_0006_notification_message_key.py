"""notifications remember the message they were first tried in

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-15 10:00:00

``message_key`` keeps the notifications of a failed message together, so a retry sends
the same set under the same Idempotency-Key even when newer notifications of the group
are due meanwhile. A nullable column: SQLite adds it without rebuilding the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_key", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("message_key")
