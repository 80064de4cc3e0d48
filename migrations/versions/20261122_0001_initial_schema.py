"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 06:37:18.332651
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import anomon.store.types


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('collection_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('started_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('series_created', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collection_runs'))
    )
    with op.batch_alter_table('collection_runs', schema=None) as batch_op:
        batch_op.create_index('ix_collection_runs_source_started_at', ['source', 'started_at'], unique=False)

    op.create_table('detection_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', anomon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('series_scored', sa.Integer(), nullable=False),
    sa.Column('points_scored', sa.Integer(), nullable=False),
    sa.Column('anomalies', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_detection_runs'))
    )
    with op.batch_alter_table('detection_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_detection_runs_started_at'), ['started_at'], unique=False)

    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=200), nullable=False),
    sa.Column('labels', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('entity', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('unit', sa.String(length=40), nullable=False),
    sa.Column('created_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('metric', 'labels', name=op.f('uq_series_metric_labels'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_entity'), ['entity'], unique=False)

    op.create_table('silences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('matchers', sa.Text(), nullable=False),
    sa.Column('starts_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silences'))
    )
    with op.batch_alter_table('silences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_silences_ends_at'), ['ends_at'], unique=False)

    op.create_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_id', sa.Integer(), nullable=True),
    sa.Column('entity', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('severity', sa.String(length=20), nullable=False),
    sa.Column('peak_score', sa.Float(precision=53), nullable=False),
    sa.Column('opened_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', anomon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_at', anomon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('silenced', sa.Boolean(), nullable=False),
    sa.Column('feedback', sa.String(length=20), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_incidents_series_id_series'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_incidents_series_id'), ['series_id'], unique=False)
        batch_op.create_index('ix_incidents_status_opened_at', ['status', 'opened_at'], unique=False)

    op.create_table('samples',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('series_id', 'ts', name=op.f('pk_samples')),
    sqlite_with_rowid=False
    )
    op.create_table('anomalies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('expected', sa.Float(precision=53), nullable=True),
    sa.Column('score', sa.Float(precision=53), nullable=False),
    sa.Column('detector_scores', sa.Text(), nullable=False),
    sa.Column('direction', sa.String(length=10), nullable=False),
    sa.Column('severity', sa.String(length=20), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('detector_version', sa.String(length=40), nullable=False),
    sa.Column('detected_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_anomalies_incident_id_incidents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['series_id'], ['series.id'], name=op.f('fk_anomalies_series_id_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomalies')),
    sa.UniqueConstraint('series_id', 'ts', name=op.f('uq_anomalies_series_id_ts'))
    )
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anomalies_incident_id'), ['incident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_anomalies_ts'), ['ts'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('receiver', sa.String(length=200), nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('idempotency_key', sa.String(length=100), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', anomon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', anomon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_notifications_incident_id_incidents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_notifications_idempotency_key'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_status_next_attempt_at')

    op.drop_table('notifications')
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anomalies_ts'))
        batch_op.drop_index(batch_op.f('ix_anomalies_incident_id'))

    op.drop_table('anomalies')
    op.drop_table('samples')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_status_opened_at')
        batch_op.drop_index(batch_op.f('ix_incidents_series_id'))

    op.drop_table('incidents')
    with op.batch_alter_table('silences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_silences_ends_at'))

    op.drop_table('silences')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_entity'))

    op.drop_table('series')
    with op.batch_alter_table('detection_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_detection_runs_started_at'))

    op.drop_table('detection_runs')
    with op.batch_alter_table('collection_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_collection_runs_source_started_at')

    op.drop_table('collection_runs')
