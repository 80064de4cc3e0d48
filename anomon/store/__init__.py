"""The store: the only package that touches SQLAlchemy and Alembic.

Engines (:mod:`.engine`), the schema (:mod:`.schema`), migrations (:mod:`.migrate`)
and typed query functions, one module per concern.
"""

from sqlalchemy import Engine

from anomon.store.collections import CollectionResult, last_collections, save_collection
from anomon.store.detections import (
    ScoredSeries,
    read_recent,
    read_unscored,
    save_detection,
    series_to_score,
)
from anomon.store.engine import check_writable, open_engine, redact
from anomon.store.external import ExternalDatabase, open_database
from anomon.store.migrate import (
    check,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from anomon.store.samples import Points, insert_samples, read_history
from anomon.store.series import SeriesRegistry

__all__ = [
    "CollectionResult",
    "Engine",
    "ExternalDatabase",
    "Points",
    "ScoredSeries",
    "SeriesRegistry",
    "check",
    "check_writable",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "insert_samples",
    "last_collections",
    "open_database",
    "open_engine",
    "read_history",
    "read_recent",
    "read_unscored",
    "redact",
    "save_collection",
    "save_detection",
    "series_to_score",
    "upgrade",
]
