"""What people read: anomalies by time, metric and labels; one incident in full."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select

from anomon.errors import UsageError
from anomon.model import Event, IncidentRecord, NotificationStatus
from anomon.store.engine import translated
from anomon.store.lookup import find_series
from anomon.store.outbox import incidents_for_notice
from anomon.store.schema import Anomaly, Incident, Notification, Series

CHUNK = 500  # series ids per IN list
# the columns of AnomalyRow and NotificationRow, in their order
ANOMALY_COLUMNS = (
    Anomaly.id, Anomaly.ts, Series.metric, Series.labels, Series.entity, Anomaly.value,
    Anomaly.expected, Anomaly.score, Anomaly.severity, Anomaly.direction, Anomaly.incident_id,
)  # fmt: skip
NOTIFICATION_COLUMNS = (
    Notification.id, Notification.receiver, Notification.event, Notification.status,
    Notification.attempts, Notification.created_at, Notification.sent_at,
    Notification.last_error, Notification.output,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    """One anomaly with its series' name."""

    id: int
    ts: int
    metric: str
    labels: dict[str, str]
    entity: str
    value: float
    expected: float | None
    score: float
    severity: str
    direction: str
    incident_id: int | None


def list_anomalies(
    engine: Engine, *, since: int, metric: str | None = None,
    labels: Mapping[str, str] | None = None, limit: int = 100,
) -> list[AnomalyRow]:  # fmt: skip
    """Return the newest ``limit`` anomalies at or after ``since`` (epoch seconds) of the
    series named ``metric`` (any if None) whose labels include ``labels``, newest first."""
    query = (
        select(*ANOMALY_COLUMNS)
        .join(Series, Series.id == Anomaly.series_id)
        .where(Anomaly.ts >= since)
        .order_by(Anomaly.ts.desc(), Anomaly.id.desc())
        .limit(limit)
    )
    if metric is not None:
        query = query.where(Series.metric == metric)
    if not labels:
        return _anomaly_rows(engine, [query])
    # labels are canonical JSON: match them on the (few) series, then read by series id
    ids = [row.id for row in find_series(engine, metric=metric, labels=labels)]
    chunks = [
        query.where(Anomaly.series_id.in_(ids[i : i + CHUNK])) for i in range(0, len(ids), CHUNK)
    ]
    rows = _anomaly_rows(engine, chunks)
    return sorted(rows, key=lambda r: (r.ts, r.id), reverse=True)[:limit]


def _anomaly_rows(engine: Engine, queries: list[Select[Any]]) -> list[AnomalyRow]:
    with translated(engine, "reading anomalies"), engine.connect() as conn:
        return _rows(conn, queries)


def _rows(conn: Connection, queries: list[Select[Any]]) -> list[AnomalyRow]:
    return [
        AnomalyRow(aid, ts, metric, json.loads(labels), *rest)
        for query in queries
        for aid, ts, metric, labels, *rest in conn.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """One notification of an incident and how its delivery went."""

    id: int
    receiver: str
    event: Event
    status: NotificationStatus
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    output: str | None  # what a program receiver printed


@dataclass(frozen=True, slots=True)
class IncidentDetail(IncidentRecord):
    """An incident in full: what a message shows of it, people's marks on it (its
    ``version`` read before the rest, so a write conditioned on it never rests on older
    facts), how many anomalies it has, its top ones and every notification."""

    anomaly_count: int = 0
    anomalies: list[AnomalyRow] = field(default_factory=list)
    notifications: list[NotificationRow] = field(default_factory=list)


def incident_detail(engine: Engine, incident_id: int, *, anomaly_limit: int = 20) -> IncidentDetail:
    """Return incident ``incident_id`` with its top anomalies (by score) and every
    notification. Raises UsageError when there is none."""
    anomalies = (
        select(*ANOMALY_COLUMNS)
        .join(Series, Series.id == Anomaly.series_id)
        .where(Anomaly.incident_id == incident_id)
        .order_by(Anomaly.score.desc(), Anomaly.ts)
        .limit(anomaly_limit)
    )
    count = select(func.count()).where(Anomaly.incident_id == incident_id)
    notifications = (
        select(*NOTIFICATION_COLUMNS)
        .where(Notification.incident_id == incident_id)
        .order_by(Notification.id)
    )
    marks = select(Incident.version).where(Incident.id == incident_id)
    with translated(engine, "reading an incident"), engine.connect() as conn:
        # the version first: the facts read after it are as new or newer, so a write
        # conditioned on it (resolve_by_hand) never rests on older facts
        version = conn.execute(marks).scalar_one_or_none()
    found = incidents_for_notice(engine, [incident_id]).get(incident_id)
    if found is None or version is None:
        raise UsageError(f"no incident with id {incident_id}")
    with translated(engine, "reading an incident"), engine.connect() as conn:
        top = _rows(conn, [anomalies])
        sent = [
            NotificationRow(i, receiver, Event(event), NotificationStatus(status), *rest)
            for i, receiver, event, status, *rest in conn.execute(notifications)
        ]
        total = conn.execute(count).scalar_one()
    own = {f.name: getattr(found, f.name) for f in fields(IncidentRecord)}
    return IncidentDetail(
        **(own | {"version": version}),
        anomaly_count=total,
        anomalies=top,
        notifications=sent,
    )
