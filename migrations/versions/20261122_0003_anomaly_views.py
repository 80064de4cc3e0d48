"""views for everyday questions: anomalies with their series

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `at` is the point's time as a timestamp (UTC), for people and Grafana; `ts` stays the
# epoch seconds the tables use.
TIME = {"sqlite": "datetime(a.ts, 'unixepoch')", "postgresql": "to_timestamp(a.ts)"}


def upgrade() -> None:
    at = TIME[op.get_bind().dialect.name]
    op.execute(
        f"""
        CREATE VIEW anomalies_named AS
        SELECT a.id, a.series_id, s.metric, s.labels, s.entity, s.source, s.kind, s.unit,
               a.ts, {at} AS at, a.value, a.expected, a.score, a.severity, a.direction,
               a.detector_scores, a.incident_id, a.config_hash, a.detector_version
        FROM anomalies a JOIN series s ON s.id = a.series_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW anomalies_named")
