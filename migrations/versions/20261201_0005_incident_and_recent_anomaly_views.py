"""views for everyday questions: open incidents and recent anomalies with their series

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:50:00

A later migration that rebuilds ``incidents``, ``anomalies`` or ``series`` with
``batch_alter_table`` on SQLite must drop these views first and create them again after:
SQLite checks every view when the rebuilt table is renamed into place. The columns
are listed, not ``*``: PostgreSQL fixes a view's columns when it is created, SQLite
when it is read, and the two must agree.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the epoch seconds of one day ago, evaluated when the view is read
DAY_AGO = {
    "sqlite": "CAST(strftime('%s', 'now', '-1 day') AS INTEGER)",
    "postgresql": "CAST(extract(epoch FROM now() - interval '1 day') AS BIGINT)",
}


def upgrade() -> None:
    day_ago = DAY_AGO[op.get_bind().dialect.name]
    op.execute(
        """
        CREATE VIEW incidents_open AS
        SELECT i.id, i.series_id, i.metric, s.labels, i.entity, s.source, s.unit,
               i.severity, i.peak_score, i.opened_at, i.last_seen_at, i.acknowledged_at,
               i.silenced, i.feedback,
               (SELECT count(*) FROM anomalies a WHERE a.incident_id = i.id) AS anomalies
        FROM incidents i LEFT JOIN series s ON s.id = i.series_id
        WHERE i.status = 'firing'
        """
    )
    op.execute(
        f"""
        CREATE VIEW anomalies_recent AS
        SELECT id, series_id, metric, labels, entity, source, kind, unit, ts, at, value,
               expected, score, severity, direction, detector_scores, incident_id,
               config_hash, detector_version
        FROM anomalies_named WHERE ts >= {day_ago}
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW anomalies_recent")
    op.execute("DROP VIEW incidents_open")
