"""What people do to incidents: list them, acknowledge, resolve, give feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from anomon.errors import UsageError
from anomon.model import Feedback, IncidentStatus, OutboxEntry, Severity
from anomon.store.engine import translated
from anomon.store.incidents import enqueue
from anomon.store.schema import Incident

FEEDBACK = tuple(verdict.value for verdict in Feedback)


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One incident as ``anomon incidents list`` shows it."""

    id: int
    status: IncidentStatus
    severity: Severity
    metric: str
    entity: str
    peak_score: float
    opened_at: datetime
    resolved_at: datetime | None
    acknowledged: bool
    silenced: bool
    feedback: Feedback | None


def list_incidents(
    engine: Engine, *, everything: bool = False, limit: int = 50
) -> list[IncidentRow]:
    """Return the firing incidents (with ``everything``, the newest ``limit`` of all)."""
    acknowledged = Incident.acknowledged_at.is_not(None).label("acknowledged")
    query = select(
        Incident.id, Incident.status, Incident.severity, Incident.metric, Incident.entity,
        Incident.peak_score, Incident.opened_at, Incident.resolved_at,
        acknowledged, Incident.silenced, Incident.feedback,
    ).order_by(Incident.id.desc()).limit(limit)  # fmt: skip
    if not everything:
        query = query.where(Incident.status == IncidentStatus.FIRING)
    with translated(engine, "listing incidents"), engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        IncidentRow(
            id=row.id,
            status=IncidentStatus(row.status),
            severity=Severity(row.severity),
            metric=row.metric,
            entity=row.entity,
            peak_score=row.peak_score,
            opened_at=row.opened_at,
            resolved_at=row.resolved_at,
            acknowledged=row.acknowledged,
            silenced=row.silenced,
            feedback=None if row.feedback is None else Feedback(row.feedback),
        )
        for row in rows
    ]


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
