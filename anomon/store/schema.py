"""The database schema: typed SQLAlchemy models of every table (DESIGN.md §4).

The schema changes only through Alembic (``migrations/``), whose ``env.py`` imports
:data:`metadata` from here. Point times (``samples.ts``, ``anomalies.ts``) are integer
seconds since the Unix epoch, UTC: a clustered ``(series_id, ts)`` key of small integers
keeps a sample near 23 bytes on disk, the write path free of datetime conversion, and
plain SQL and Grafana read it directly (``to_timestamp(ts)``, ``datetime(ts, 'unixepoch')``).
``samples`` has no foreign key to ``series`` on purpose: on PostgreSQL the per-row check
cuts ``COPY`` throughput threefold, and the store is its only writer (series and their
samples are created and deleted together by store functions).
Every other instant is a :class:`~anomon.store.types.UTCDateTime`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from anomon.model import Event, Feedback, IncidentStatus, NotificationStatus, Severity, sql_in
from anomon.store.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Declarative base bound to the one :data:`metadata`."""

    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


class Series(Base):
    """One metric stream, identified by its metric name and canonical label set."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("metric", "labels"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(String(200))
    labels: Mapped[str] = mapped_column(Text, doc="canonical JSON: keys sorted, no spaces")
    source: Mapped[str] = mapped_column(String(200))
    entity: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    unit: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime]


class SeriesState(Base):
    """Where detection stands on a series: scored up to ``scored_until`` (epoch seconds)."""

    __tablename__ = "series_state"

    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    scored_until: Mapped[int] = mapped_column(BigInteger, doc="s since epoch, UTC")
    quality: Mapped[str] = mapped_column(String(20), default="ok")
    learning_until: Mapped[int | None] = mapped_column(
        BigInteger, default=None, doc="while learning: about when it will have, s since epoch"
    )
    last_ts: Mapped[int | None] = mapped_column(
        BigInteger, default=None, doc="the latest scored row, s since epoch"
    )
    last_value: Mapped[float | None] = mapped_column(Float(precision=53), default=None)
    last_expected: Mapped[float | None] = mapped_column(
        Float(precision=53), default=None, doc="what the detectors expected at last_ts"
    )
    last_score: Mapped[float | None] = mapped_column(
        Float(precision=53), default=None, doc="its score (0-100) at last_ts"
    )
    updated_at: Mapped[datetime]


class Sample(Base):
    """One value of one series at one instant; re-inserting the same key is a no-op."""

    __tablename__ = "samples"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own attribute

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, doc="s since epoch, UTC")
    value: Mapped[float] = mapped_column(Float(precision=53))


class CollectionRun(Base):
    """One pull of one source: when, how many points, and the error if it failed."""

    __tablename__ = "collection_runs"
    __table_args__ = (Index("ix_collection_runs_source_started_at", "source", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    points: Mapped[int] = mapped_column(Integer, default=0)
    series_created: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class DetectionRun(Base):
    """One detection cycle over every due series."""

    __tablename__ = "detection_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    series_scored: Mapped[int] = mapped_column(Integer, default=0)
    points_scored: Mapped[int] = mapped_column(Integer, default=0)
    anomalies: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))


class Incident(Base):
    """An episode of anomalies of one series (or entity): the unit people are notified about."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_status_opened_at", "status", "opened_at"),
        CheckConstraint(sql_in("status", IncidentStatus), name="status"),
        CheckConstraint(sql_in("severity", Severity), name="severity"),
        CheckConstraint(f"feedback IS NULL OR {sql_in('feedback', Feedback)}", name="feedback"),
        # one firing incident per series: a second writer's open loses, not duplicates
        Index(
            "uq_incidents_firing_series_id",
            "series_id",
            unique=True,
            sqlite_where=text("status = 'firing'"),
            postgresql_where=text("status = 'firing'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int | None] = mapped_column(
        ForeignKey("series.id", ondelete="SET NULL"), index=True
    )
    entity: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(200), default="")
    labels: Mapped[str] = mapped_column(
        Text, default="{}", doc="canonical JSON: the routing labels (series labels, metric, ...)"
    )
    status: Mapped[str] = mapped_column(String(20), doc="firing | resolved")
    severity: Mapped[str] = mapped_column(String(20))
    peak_score: Mapped[float] = mapped_column(Float(precision=53))
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    silenced: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback: Mapped[str | None] = mapped_column(
        String(20), doc="confirmed | false_alarm | expected"
    )
    version: Mapped[int] = mapped_column(Integer, default=1, doc="bumped by every change")


class Anomaly(Base):
    """One anomalous point; unique per (series, ts) so re-running detection adds nothing."""

    __tablename__ = "anomalies"
    __table_args__ = (UniqueConstraint("series_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    ts: Mapped[int] = mapped_column(BigInteger, index=True, doc="s since epoch, UTC")
    value: Mapped[float] = mapped_column(Float(precision=53))
    expected: Mapped[float | None] = mapped_column(Float(precision=53))
    score: Mapped[float] = mapped_column(Float(precision=53), doc="0-100")
    detector_scores: Mapped[str] = mapped_column(Text, doc="JSON object: detector -> 0-100")
    direction: Mapped[str] = mapped_column(String(10), doc="up | down")
    severity: Mapped[str] = mapped_column(String(20))
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    config_hash: Mapped[str] = mapped_column(String(64))
    detector_version: Mapped[str] = mapped_column(String(40))
    detected_at: Mapped[datetime]


class Notification(Base):
    """The outbox: one message about one incident change to one receiver."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        # the last send of a group (group_interval): an index-only max(sent_at)
        Index("ix_notifications_receiver_group_key", "receiver", "group_key", "sent_at"),
        CheckConstraint(sql_in("event", Event), name="event"),
        CheckConstraint(sql_in("status", NotificationStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    receiver: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str] = mapped_column(
        String(400), default="", doc="notifications with the same receiver and key go together"
    )
    route: Mapped[str] = mapped_column(
        String(200), default="", doc="the route's path (its matchers): what mute times name"
    )
    group_labels: Mapped[str] = mapped_column(
        Text, default="{}", doc="canonical JSON: the route's group_by labels of this group"
    )
    event: Mapped[str] = mapped_column(String(20), doc="firing | resolved | repeat")
    status: Mapped[str] = mapped_column(
        String(20), doc="pending | sending | sent | dead | silenced"
    )
    idempotency_key: Mapped[str] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(
        Text, doc="what a program receiver printed (its last 4,000 characters)"
    )
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    message_key: Mapped[str | None] = mapped_column(
        String(100), doc="the message it was first tried in: a retry sends that message again"
    )


class Silence(Base):
    """Label matchers and a time range during which incidents are recorded, not notified."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matchers: Mapped[str] = mapped_column(Text, doc="JSON list of {name, value, op}")
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]


class Worker(Base):
    """An ``anomon run`` process: registered at start, its heartbeat renewed while it
    runs, ``stopped_at`` set when it stops cleanly (a killed one just stops beating)."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]


class Deploy(Base):
    """A model (or entity) deployed at ``at``: recorded by ``anomon deploy`` or found by
    detection when a model's ``version`` label changes. Drawn on plots and Grafana, and
    named in the notifications of incidents that open soon after it."""

    __tablename__ = "deploys"
    __table_args__ = (UniqueConstraint("model", "entity", "version", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    model: Mapped[str] = mapped_column(String(200), doc="'' : a deploy of the entity itself")
    version: Mapped[str] = mapped_column(String(200))
    entity: Mapped[str] = mapped_column(String(200), doc="'' : the model wherever it runs")
    note: Mapped[str] = mapped_column(Text, default="")
    origin: Mapped[str] = mapped_column(String(20), doc="'cli' or 'label'")
    created_at: Mapped[datetime]
