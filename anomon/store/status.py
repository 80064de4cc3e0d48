"""What ``anomon status`` shows: sources, series, incidents and the outbox, in a few queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from anomon.model import IncidentStatus, NotificationStatus, SeriesKind
from anomon.store.engine import translated
from anomon.store.schema import (
    CollectionRun,
    DetectionRun,
    Incident,
    Notification,
    Series,
    SeriesState,
)
from anomon.timeutil import from_epoch


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source's last collection, and its last successful one."""

    source: str
    last_at: datetime
    last_error: str | None
    last_ok_at: datetime | None
    failures: int = 0  # failed collections in a row since the last good one (backed off)


@dataclass(frozen=True, slots=True)
class DeadNotification:
    """A notification anomon gave up on."""

    id: int
    receiver: str
    event: str
    incident_id: int
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class LearningSeries:
    """A series scored with the wider bands of a short history, until about ``until``."""

    series_id: int
    metric: str
    labels: str
    entity: str
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Status:
    """The whole picture."""

    sources: list[SourceStatus]
    series_by_quality: dict[str, int]
    learning: list[LearningSeries]
    open_incidents: int
    outbox: dict[str, int]
    dead: list[DeadNotification]


def read_status(engine: Engine, *, dead_limit: int = 10, learning_limit: int = 20) -> Status:
    """Return the status of every part (one query each); of the learning series, the
    ``learning_limit`` that learn longest."""
    last = select(func.max(CollectionRun.id)).group_by(CollectionRun.source).scalar_subquery()
    ok = (
        select(CollectionRun.source, func.max(CollectionRun.started_at))
        .where(CollectionRun.error.is_(None))
        .group_by(CollectionRun.source)
    )
    # Grouped by the bare column and named in Python: a coalesce(quality, :param) in both
    # SELECT and GROUP BY is two bind parameters, two expressions to PostgreSQL.
    quality = (
        select(SeriesState.quality, func.count())
        .select_from(Series)
        .outerjoin(SeriesState, SeriesState.series_id == Series.id)
        .where(Series.kind != SeriesKind.HISTOGRAM)  # never scored: no quality to show
        .group_by(SeriesState.quality)
    )
    learning = (
        select(Series.id, Series.metric, Series.labels, Series.entity, SeriesState.learning_until)
        .join(SeriesState, SeriesState.series_id == Series.id)
        .where(SeriesState.quality == "learning")
        .order_by(SeriesState.learning_until.desc(), Series.id)
        .limit(learning_limit)
    )
    dead = (
        select(
            Notification.id,
            Notification.receiver,
            Notification.event,
            Notification.incident_id,
            Notification.attempts,
            Notification.last_error,
        )
        .where(Notification.status == NotificationStatus.DEAD)
        .order_by(Notification.id.desc())
        .limit(dead_limit)
    )
    latest_ok = ok.subquery()
    streak = (
        select(CollectionRun.source, func.count())
        .outerjoin(latest_ok, latest_ok.c.source == CollectionRun.source)
        .where(
            CollectionRun.error.is_not(None),
            (latest_ok.c[1].is_(None)) | (CollectionRun.started_at > latest_ok.c[1]),
        )
        .group_by(CollectionRun.source)
    )
    with translated(engine, "reading the status"), engine.connect() as conn:
        oks = dict(conn.execute(ok).tuples().all())
        failing = dict(conn.execute(streak).tuples().all())
        runs = conn.execute(
            select(CollectionRun.source, CollectionRun.started_at, CollectionRun.error)
            .where(CollectionRun.id.in_(last))
            .order_by(CollectionRun.source)
        ).all()
        return Status(
            sources=[
                SourceStatus(s, at, error, oks.get(s), failing.get(s, 0)) for s, at, error in runs
            ],
            series_by_quality={
                ("unscored" if state is None else state): count
                for state, count in conn.execute(quality).tuples()
            },
            learning=[
                LearningSeries(
                    sid, metric, labels, entity, None if until is None else from_epoch(until)
                )
                for sid, metric, labels, entity, until in conn.execute(learning)
            ],
            open_incidents=conn.execute(
                select(func.count())
                .select_from(Incident)
                .where(Incident.status == IncidentStatus.FIRING)
            ).scalar_one(),
            outbox=dict(
                conn.execute(
                    select(Notification.status, func.count()).group_by(Notification.status)
                )
                .tuples()
                .all()
            ),
            dead=[
                DeadNotification(nid, receiver, event, incident, attempts, error or "")
                for nid, receiver, event, incident, attempts, error in conn.execute(dead)
            ],
        )


@dataclass(frozen=True, slots=True)
class DetectionCycle:
    """The last detection cycle: when it ran, how long it took, what it did."""

    started_at: datetime
    seconds: float | None  # None: not finished
    points: int
    anomalies: int
    error: str | None


def last_detection(engine: Engine) -> DetectionCycle | None:
    """The newest ``detection_runs`` row (None before the first cycle)."""
    query = (
        select(
            DetectionRun.started_at,
            DetectionRun.finished_at,
            DetectionRun.points_scored,
            DetectionRun.anomalies,
            DetectionRun.error,
        )
        .order_by(DetectionRun.id.desc())
        .limit(1)
    )
    with translated(engine, "reading the last detection cycle"), engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    started, finished, points, anomalies, error = row
    return DetectionCycle(
        started_at=started,
        seconds=None if finished is None else (finished - started).total_seconds(),
        points=int(points),
        anomalies=int(anomalies),
        error=error,
    )
