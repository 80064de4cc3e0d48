"""Incidents and the outbox: written with conditional updates, read for routing.

Every incident change is applied with ``WHERE id = ? AND version = ?`` (and a new
incident against the one-firing-incident-per-series index), so when two writers race
exactly one wins; the notifications a change causes are inserted in the same
transaction, only for the changes that won, keyed by idempotency key so writing the
same change twice stores it once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from anomon.model import (
    Feedback,
    IncidentRecord,
    IncidentStatus,
    IncidentWrite,
    NotificationStatus,
    OutboxEntry,
    Severity,
)
from anomon.store.engine import translated
from anomon.store.schema import Incident, Notification, Series


@dataclass(frozen=True, slots=True)
class SeriesMeta:
    """What routing needs of a series."""

    id: int
    metric: str
    labels: dict[str, str]
    source: str
    entity: str
    kind: str


def series_meta(conn: Connection, series_ids: Sequence[int]) -> dict[int, SeriesMeta]:
    """Return the metric, labels, source, entity and kind of each series."""
    found: dict[int, SeriesMeta] = {}
    unique = sorted(set(series_ids))
    for start in range(0, len(unique), 500):
        query = select(
            Series.id, Series.metric, Series.labels, Series.source, Series.entity, Series.kind
        ).where(Series.id.in_(unique[start : start + 500]))
        for sid, metric, labels, source, entity, kind in conn.execute(query):
            found[sid] = SeriesMeta(sid, metric, json.loads(labels), source, entity, kind)
    return found


def latest_incidents(conn: Connection, series_ids: Sequence[int]) -> dict[int, IncidentRecord]:
    """Return the newest incident of each series that has one."""
    found: dict[int, IncidentRecord] = {}
    unique = sorted(set(series_ids))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        newest = (
            select(func.max(Incident.id))
            .where(Incident.series_id.in_(chunk))
            .group_by(Incident.series_id)
        )
        rows = Session(bind=conn).scalars(select(Incident).where(Incident.id.in_(newest)))
        for row in rows:
            assert row.series_id is not None
            found[row.series_id] = stored_incident(row)
    return found


def stored_incident(row: Incident) -> IncidentRecord:
    """The plain form of an ``incidents`` row: the one place a row becomes an incident
    (statuses, severity and feedback as their enums)."""
    return IncidentRecord(
        id=row.id,
        status=IncidentStatus(row.status),
        severity=Severity(row.severity),
        peak_score=row.peak_score,
        opened_at=row.opened_at,
        last_seen_at=row.last_seen_at,
        resolved_at=row.resolved_at,
        version=row.version,
        silenced=row.silenced,
        series_id=row.series_id,
        metric=row.metric,
        entity=row.entity,
        labels=json.loads(row.labels),
        acknowledged_at=row.acknowledged_at,
        feedback=None if row.feedback is None else Feedback(row.feedback),
    )


def incident_context(
    engine: Engine, series_ids: Sequence[int]
) -> tuple[dict[int, IncidentRecord], dict[int, SeriesMeta]]:
    """Return the latest incident and the routing facts of each of ``series_ids``."""
    with translated(engine, "reading incidents"), engine.connect() as conn:
        return latest_incidents(conn, series_ids), series_meta(conn, series_ids)


def firing_series(engine: Engine) -> set[int]:
    """Return the series that have a firing incident."""
    query = select(Incident.series_id).where(Incident.status == IncidentStatus.FIRING)
    with translated(engine, "reading firing incidents"), engine.connect() as conn:
        return {sid for sid in conn.execute(query).scalars() if sid is not None}


def write_incidents(
    conn: Connection, writes: Sequence[IncidentWrite], *, now: datetime
) -> list[int | None]:
    """Apply each write (insert or conditional update) and enqueue its outbox entries.

    Returns the incident id of each write, None for one that lost a race (its entries
    are not written). Runs in the caller's transaction.
    """
    ids: list[int | None] = []
    last_sent: dict[tuple[str, str], datetime | None] = {}  # one lookup per group
    for write in writes:
        incident_id = _insert(conn, write) if write.incident_id is None else _update(conn, write)
        ids.append(incident_id)
        if incident_id is not None and write.outbox:
            enqueue(conn, incident_id, write.outbox, now=now, last_sent=last_sent)
    return ids


def _values(write: IncidentWrite) -> dict[str, object]:
    return {
        "status": write.status,
        "severity": write.severity,
        "peak_score": write.peak_score,
        "last_seen_at": write.last_seen_at,
        "resolved_at": write.resolved_at,
        "silenced": write.silenced,
    }


def _insert(conn: Connection, write: IncidentWrite) -> int | None:
    insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert_for(Incident)
        .values(
            series_id=write.series_id,
            entity=write.entity,
            metric=write.metric,
            labels=write.labels,
            opened_at=write.opened_at,
            version=1,
            **_values(write),
        )
        .on_conflict_do_nothing(index_elements=["series_id"], index_where=text("status = 'firing'"))
        .returning(Incident.id)
    )
    return conn.execute(statement).scalar_one_or_none()


def _update(conn: Connection, write: IncidentWrite) -> int | None:
    values = _values(write)
    if write.reopened:
        values["acknowledged_at"] = None
    statement = (
        update(Incident)
        .where(Incident.id == write.incident_id, Incident.version == write.version)
        .values(version=Incident.version + 1, **values)
    )
    return write.incident_id if conn.execute(statement).rowcount == 1 else None


def enqueue(
    conn: Connection,
    incident_id: int,
    entries: Sequence[OutboxEntry],
    *,
    now: datetime,
    last_sent: dict[tuple[str, str], datetime | None] | None = None,
) -> int:
    """Insert outbox rows for ``incident_id``; return how many were new.

    An entry waits until ``not_before`` and until ``group_interval`` after the last
    notification of its (receiver, group) was sent, so a group is told at most that often.
    """
    insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = []
    last_sent = {} if last_sent is None else last_sent
    for entry in entries:
        due = entry.not_before
        if entry.group_interval > timedelta(0):
            group = (entry.receiver, entry.group_key)
            if group not in last_sent:
                last_sent[group] = _last_sent(conn, *group)
            last = last_sent[group]
            if last is not None:
                due = max(due, last + entry.group_interval)
        rows.append(
            {
                "incident_id": incident_id,
                "receiver": entry.receiver,
                "group_key": entry.group_key,
                "route": entry.route,
                "group_labels": entry.group_labels,
                "event": entry.event,
                "status": NotificationStatus.PENDING,
                "idempotency_key": entry.key,
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": now,
            }
        )
    statement = insert_for(Notification).on_conflict_do_nothing().returning(Notification.id)
    return len(conn.execute(statement, rows).all()) if rows else 0


def _last_sent(conn: Connection, receiver: str, group_key: str) -> datetime | None:
    query = select(func.max(Notification.sent_at)).where(
        Notification.receiver == receiver, Notification.group_key == group_key
    )
    value: datetime | None = conn.execute(query).scalar_one_or_none()
    return value
