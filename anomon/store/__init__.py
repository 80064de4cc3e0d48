"""The store: the only package that touches SQLAlchemy and Alembic.

Engines (:mod:`.engine`), the schema (:mod:`.schema`), migrations (:mod:`.migrate`)
and typed query functions, one module per concern.
"""

from sqlalchemy import Engine

from anomon.store.absence import (
    QuietSeries,
    SourceHealth,
    last_sample_times,
    open_absences,
    open_series_absences,
    quiet_series,
    save_incidents,
    source_health,
)
from anomon.store.collections import CollectionResult, last_collections, save_collection
from anomon.store.deploys import list_deploys, record_deploys
from anomon.store.detections import (
    LatestRow,
    ScoredSeries,
    first_sample_time,
    read_recent,
    read_seed,
    read_unscored,
    save_detection,
    series_to_score,
)
from anomon.store.engine import check_writable, open_engine, ping, redact
from anomon.store.external import ExternalDatabase, open_database
from anomon.store.feedback import TaughtSeries, Tolerance, feedback_tolerances, taught_series
from anomon.store.incident_actions import (
    FEEDBACK,
    acknowledge,
    firing_incident_ids,
    give_feedback,
    list_incidents,
    resolve_by_hand,
    search_incidents,
)
from anomon.store.incidents import (
    SeriesMeta,
    enqueue,
    firing_series,
    incident_context,
    latest_incidents,
    series_meta,
    write_incidents,
)
from anomon.store.lock import WriterLock, writer_lock
from anomon.store.lookup import SeriesRow, every_series_meta, find_series, incident_spans
from anomon.store.migrate import (
    check,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from anomon.store.outbox import (
    RUN_STARTED,
    Claimed,
    RepeatCandidate,
    SeriesAround,
    claim_due,
    enqueue_many,
    incidents_for_notice,
    keep_messages,
    mark_started,
    outbox_counts,
    record_outcomes,
    repeat_candidates,
    series_around,
    stored_silences,
)
from anomon.store.reports import (
    AnomalyRow,
    IncidentDetail,
    NotificationRow,
    incident_detail,
    list_anomalies,
)
from anomon.store.retention import Cutoffs, delete_old
from anomon.store.samples import Points, insert_samples, read_history
from anomon.store.series import SeriesRegistry
from anomon.store.silences import SilenceRow, add_silence, expire_silence, list_silences
from anomon.store.status import (
    DeadNotification,
    DetectionCycle,
    SourceStatus,
    Status,
    last_detection,
    read_status,
)
from anomon.store.workers import (
    HEARTBEAT,
    WorkerStatus,
    beat,
    read_workers,
    register_worker,
)

__all__ = [
    "FEEDBACK",
    "HEARTBEAT",
    "RUN_STARTED",
    "AnomalyRow",
    "Claimed",
    "CollectionResult",
    "Cutoffs",
    "DeadNotification",
    "DetectionCycle",
    "Engine",
    "ExternalDatabase",
    "IncidentDetail",
    "LatestRow",
    "NotificationRow",
    "Points",
    "QuietSeries",
    "RepeatCandidate",
    "ScoredSeries",
    "SeriesAround",
    "SeriesMeta",
    "SeriesRegistry",
    "SeriesRow",
    "SilenceRow",
    "SourceHealth",
    "SourceStatus",
    "Status",
    "TaughtSeries",
    "Tolerance",
    "WorkerStatus",
    "WriterLock",
    "acknowledge",
    "add_silence",
    "beat",
    "check",
    "check_writable",
    "claim_due",
    "current_revision",
    "delete_old",
    "downgrade",
    "enqueue",
    "enqueue_many",
    "ensure_schema",
    "every_series_meta",
    "expire_silence",
    "feedback_tolerances",
    "find_series",
    "firing_incident_ids",
    "firing_series",
    "first_sample_time",
    "give_feedback",
    "head_revision",
    "incident_context",
    "incident_detail",
    "incident_spans",
    "incidents_for_notice",
    "insert_samples",
    "keep_messages",
    "last_collections",
    "last_detection",
    "last_sample_times",
    "latest_incidents",
    "list_anomalies",
    "list_deploys",
    "list_incidents",
    "list_silences",
    "mark_started",
    "open_absences",
    "open_database",
    "open_engine",
    "open_series_absences",
    "outbox_counts",
    "ping",
    "quiet_series",
    "read_history",
    "read_recent",
    "read_seed",
    "read_status",
    "read_unscored",
    "read_workers",
    "record_deploys",
    "record_outcomes",
    "redact",
    "register_worker",
    "repeat_candidates",
    "resolve_by_hand",
    "save_collection",
    "save_detection",
    "save_incidents",
    "search_incidents",
    "series_around",
    "series_meta",
    "series_to_score",
    "source_health",
    "stored_silences",
    "taught_series",
    "upgrade",
    "write_incidents",
    "writer_lock",
]
