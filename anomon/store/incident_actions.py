"""What people do to incidents: list them, acknowledge, resolve, give feedback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from anomon.errors import UsageError
from anomon.model import Feedback, IncidentRecord, IncidentStatus, OutboxEntry
from anomon.store.engine import translated
from anomon.store.incidents import enqueue, stored_incident
from anomon.store.schema import Incident

FEEDBACK = tuple(verdict.value for verdict in Feedback)


def list_incidents(
    engine: Engine, *, everything: bool = False, limit: int = 50
) -> list[IncidentRecord]:
    """Return the firing incidents (with ``everything``, the newest ``limit`` of all)."""
    status = None if everything else IncidentStatus.FIRING
    return search_incidents(engine, status=status, limit=limit)


def search_incidents(
    engine: Engine,
    *,
    status: IncidentStatus | None = None,
    severity: str | None = None,
    entity: str | None = None,
    metric: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    series_id: int | None = None,
    limit: int = 50,
) -> list[IncidentRecord]:
    """The incidents that match every filter given (``since``: opened or still seen
    since then; ``series_id``: stored under that series, an entity's first), newest
    first; ``before_id`` pages on (the ids below the last shown)."""
    query = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    if entity:
        query = query.where(Incident.entity == entity)
    if metric:
        query = query.where(Incident.metric == metric)
    if since is not None:
        query = query.where(Incident.last_seen_at >= since)
    if before_id is not None:
        query = query.where(Incident.id < before_id)
    if series_id is not None:
        query = query.where(Incident.series_id == series_id)
    with translated(engine, "listing incidents"), Session(engine) as session:
        return [stored_incident(row) for row in session.scalars(query)]


def firing_incident_ids(engine: Engine) -> list[int]:
    """The ids of every firing incident (what a receiver that keeps state is re-sent)."""
    query = (
        select(Incident.id).where(Incident.status == IncidentStatus.FIRING).order_by(Incident.id)
    )
    with translated(engine, "listing firing incidents"), engine.connect() as conn:
        return list(conn.execute(query).scalars())


def acknowledge(engine: Engine, incident_id: int, *, now: datetime) -> None:
    """Mark an incident acknowledged: it is no longer repeated. Raises UsageError."""
    _change(engine, incident_id, acknowledged_at=now)


def give_feedback(engine: Engine, incident_id: int, label: str) -> None:
    """Store a verdict on an incident (confirmed, false_alarm or expected)."""
    if label not in FEEDBACK:
        raise UsageError(f"feedback must be one of {', '.join(FEEDBACK)}, got: {label!r}")
    _change(engine, incident_id, feedback=label)


def resolve_by_hand(
    engine: Engine,
    incident_id: int,
    *,
    version: int,
    outbox: Sequence[OutboxEntry],
    now: datetime,
) -> bool:
    """Resolve firing incident ``incident_id`` as of ``now`` and queue ``outbox`` (its
    ``resolved`` notifications) in one transaction, only if it is still firing at
    ``version``; return False (nothing written) if a change came first."""
    statement = (
        update(Incident)
        .where(
            Incident.id == incident_id,
            Incident.version == version,
            Incident.status == IncidentStatus.FIRING,
        )
        .values(status=IncidentStatus.RESOLVED, resolved_at=now, version=Incident.version + 1)
    )
    with translated(engine, "resolving an incident"), engine.begin() as conn:
        if conn.execute(statement).rowcount != 1:
            return False
        if outbox:
            enqueue(conn, incident_id, outbox, now=now)
    return True


def _change(engine: Engine, incident_id: int, **values: object) -> None:
    # No version bump: these columns are people's, not the state machine's, so an
    # acknowledgement never makes the detection job's next change of the incident lose.
    statement = update(Incident).where(Incident.id == incident_id).values(**values)
    with translated(engine, "changing an incident"), engine.begin() as conn:
        if conn.execute(statement).rowcount != 1:
            raise UsageError(f"no incident with id {incident_id}")
