"""The outbox: claim due notifications atomically, record what became of them.

A claim is one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``:
on PostgreSQL two delivery workers never claim the same row; SQLite has one writer at
a time anyway. A claimed row is ``sending`` until its lease (``next_attempt_at``) ends;
a worker that dies mid-send leaves it to be claimed again once the lease is over, and
the idempotency key lets the receiver drop the second copy. A notification remembers the
message it was first tried in (``message_key``), so a retry sends the same set again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.orm import Session

from anomon.model import (
    Contributor,
    Event,
    IncidentRecord,
    IncidentStatus,
    NotificationStatus,
    OutboxEntry,
)
from anomon.store.engine import translated
from anomon.store.incidents import enqueue, stored_incident
from anomon.store.samples import read_history
from anomon.store.schema import Anomaly, Incident, Notification, Series, SeriesState, Silence
from anomon.timeutil import from_epoch


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification this worker now holds."""

    id: int
    incident_id: int
    receiver: str
    group_key: str
    event: Event
    key: str
    attempts: int
    created_at: datetime
    message_key: str | None = None  # the message it was first tried in, if any
    route: str = ""  # the path of the route that chose it
    group_labels: Mapping[str, str] = field(default_factory=dict)  # its group's labels
    last_error: str | None = None  # its last attempt's error (or RUN_STARTED), if any


def claim_due(engine: Engine, *, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
    """Claim up to ``limit`` due notifications (oldest first) until ``now + lease``."""
    due = (
        select(Notification.id)
        .where(
            Notification.status.in_((NotificationStatus.PENDING, NotificationStatus.SENDING)),
            Notification.next_attempt_at <= now,
        )
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Notification)
        .where(Notification.id.in_(due.scalar_subquery()))
        .values(
            status=NotificationStatus.SENDING,
            attempts=Notification.attempts + 1,
            next_attempt_at=now + lease,
        )
        .returning(
            Notification.id,
            Notification.incident_id,
            Notification.receiver,
            Notification.group_key,
            Notification.event,
            Notification.idempotency_key,
            Notification.attempts,
            Notification.created_at,
            Notification.message_key,
            Notification.route,
            Notification.group_labels,
            Notification.last_error,
        )
    )
    with translated(engine, "claiming notifications"), engine.begin() as conn:
        rows = conn.execute(statement).all()
    claimed = [
        Claimed(
            id=row.id,
            incident_id=row.incident_id,
            receiver=row.receiver,
            group_key=row.group_key,
            event=Event(row.event),
            key=row.idempotency_key,
            attempts=row.attempts,
            created_at=row.created_at,
            message_key=row.message_key,
            route=row.route,
            group_labels=_labels(row.group_labels),
            last_error=row.last_error,
        )
        for row in rows
    ]
    return sorted(claimed, key=lambda c: c.id)


# what a program receiver's row says while the program runs: a row claimed again with it
# was being run when anomon stopped, and is not run a second time
RUN_STARTED = "started; no outcome was recorded (anomon stopped while it ran)"


def release_claims(engine: Engine, *, now: datetime) -> int:
    """Make every claim still held (``sending`` with its lease not over) due at ``now``;
    return how many there were.

    Only for a process that knows it is the only one delivering (the SQLite writer
    lock): the claims it finds are a run's that ended without recording them (a crash,
    ``kill -9``), and waiting for their leases would hold those notifications back for
    up to the whole lease. Released, a row is claimed again like one whose lease ran
    out: a program receiver's RUN_STARTED mark is kept, so a program that may have run
    is not run again.
    """
    statement = (
        update(Notification)
        .where(
            Notification.status == NotificationStatus.SENDING,
            Notification.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    with translated(engine, "releasing an earlier run's claims"), engine.begin() as conn:
        return int(conn.execute(statement).rowcount or 0)


def mark_started(engine: Engine, claims: Mapping[int, int]) -> None:
    """Mark claimed rows (id -> attempts when claimed) as being run now (RUN_STARTED)."""
    with translated(engine, "marking notifications as started"), engine.begin() as conn:
        for row, attempts in claims.items():
            conn.execute(
                update(Notification)
                .where(
                    Notification.id == row,
                    Notification.status == NotificationStatus.SENDING,
                    Notification.attempts == attempts,
                )
                .values(last_error=RUN_STARTED)
            )


def _labels(text: str) -> dict[str, str]:
    """Labels stored as canonical JSON (an object of strings)."""
    found = json.loads(text)
    return {str(name): str(value) for name, value in found.items()}


def keep_messages(engine: Engine, messages: Mapping[str, Sequence[int]]) -> None:
    """Record which message each claimed notification is about to be tried in
    (message key -> ids), where it has none yet: a retry sends the same set again."""
    pairs = [{"row": i, "key": key} for key, ids in messages.items() for i in ids]
    if not pairs:
        return
    statement = (
        update(Notification)
        .where(Notification.id == bindparam("row"), Notification.message_key.is_(None))
        .values(message_key=bindparam("key"))
        .execution_options(synchronize_session=False)
    )
    with translated(engine, "recording notification messages"), engine.begin() as conn:
        conn.execute(statement, pairs)  # one executemany


def record_outcomes(
    engine: Engine,
    *,
    claims: Mapping[int, int],
    sent: Sequence[int],
    retry: Mapping[int, tuple[str, datetime]],
    dead: Mapping[int, str],
    silenced: Sequence[int],
    silenced_incidents: Sequence[int],
    released: Sequence[int] = (),
    deferred: Mapping[int, datetime] | None = None,
    output: Mapping[int, str] | None = None,
    now: datetime,
) -> None:
    """Record a delivery run's outcomes in one transaction (a few statements, not one
    per notification where they share a value).

    ``claims`` maps each claimed id to its attempt count when claimed: an outcome is
    written only while the row is still this claim (``sending`` with that count), so a
    worker whose lease ran out never overwrites what the next claimer recorded.
    ``released`` rows were claimed but not tried: they go back as they were; so do the
    ``deferred`` ones, due again at the time given (their receiver just failed).
    ``output`` is what a program receiver printed for a row, sent or not.
    """
    with translated(engine, "recording notification outcomes"), engine.begin() as conn:

        def set_rows(ids: Sequence[int], **values: object) -> None:
            for attempts, same in _by_value({i: claims[i] for i in ids if i in claims}).items():
                for start in range(0, len(same), 500):
                    conn.execute(
                        update(Notification)
                        .where(
                            Notification.id.in_(same[start : start + 500]),
                            Notification.status == NotificationStatus.SENDING,
                            Notification.attempts == attempts,
                        )
                        .values(**values)
                    )

        for text, ids in _by_value(dict(output or {})).items():
            set_rows(ids, output=text)
        set_rows(sent, status=NotificationStatus.SENT, sent_at=now, last_error=None)
        set_rows(silenced, status=NotificationStatus.SILENCED, last_error=None)
        for error, ids in _by_value(dict(dead)).items():
            set_rows(ids, status=NotificationStatus.DEAD, last_error=error)
        for (error, at), ids in _by_value(dict(retry)).items():
            set_rows(ids, status=NotificationStatus.PENDING, last_error=error, next_attempt_at=at)
        set_rows(
            released,
            status=NotificationStatus.PENDING,
            attempts=Notification.attempts - 1,
            next_attempt_at=now,
        )
        for at, ids in _by_value(dict(deferred or {})).items():
            set_rows(
                ids,
                status=NotificationStatus.PENDING,
                attempts=Notification.attempts - 1,
                next_attempt_at=at,
            )
        if silenced_incidents:
            conn.execute(
                update(Incident)
                .where(Incident.id.in_(list(silenced_incidents)))
                .values(silenced=True)
            )


def _by_value(mapping: Mapping[int, Any]) -> dict[Any, list[int]]:
    grouped: dict[Any, list[int]] = {}
    for key, value in mapping.items():
        grouped.setdefault(value, []).append(key)
    return grouped


def enqueue_many(
    engine: Engine, entries: Mapping[int, Sequence[OutboxEntry]], *, now: datetime
) -> int:
    """Enqueue outbox entries per incident in one transaction; return how many were new."""
    last_sent: dict[tuple[str, str], datetime | None] = {}
    with translated(engine, "enqueueing notifications"), engine.begin() as conn:
        return sum(
            enqueue(conn, iid, rows, now=now, last_sent=last_sent) for iid, rows in entries.items()
        )


def incidents_for_notice(engine: Engine, incident_ids: Sequence[int]) -> dict[int, IncidentRecord]:
    """Return each incident with its series' latest value and expectation (as they are
    now, when a message is written; the strongest anomaly's where the series has no
    latest row yet) and its strongest anomaly's direction and detector scores."""
    ids = sorted(set(incident_ids))
    found: dict[int, IncidentRecord] = {}
    # one anomaly per incident: its strongest, the latest of equal ones. Scores top out
    # at 100, so a long incident has thousands of equal peaks: the database picks one,
    # rather than sending every tied row here (20 s a notice at 200,000 anomalies)
    ranked = (
        select(
            Anomaly.id,
            func.row_number()
            .over(
                partition_by=Anomaly.incident_id,
                order_by=(Anomaly.score.desc(), Anomaly.ts.desc(), Anomaly.id.desc()),
            )
            .label("rank"),
        )
        .where(Anomaly.incident_id.in_(ids))
        .subquery()
    )
    strongest = select(ranked.c.id).where(ranked.c.rank == 1)
    query = (
        select(Incident, Anomaly, SeriesState)
        .outerjoin(SeriesState, SeriesState.series_id == Incident.series_id)
        .outerjoin(Anomaly, (Anomaly.incident_id == Incident.id) & Anomaly.id.in_(strongest))
        .where(Incident.id.in_(ids))
        .order_by(Incident.id)
    )
    with translated(engine, "reading incidents"), Session(engine) as session:
        behind = _contributors(session, ids)
        for incident, anomaly, state in session.execute(query).tuples():
            if incident.id not in found:
                found[incident.id] = _incident_data(
                    incident, anomaly, state, tuple(behind.get(incident.id, ()))
                )
    return found


def _contributors(session: Session, ids: Sequence[int]) -> dict[int, list[Contributor]]:
    """The series whose anomalies are linked to each incident, strongest first, with
    their latest value and expectation."""
    peaks = (
        select(
            Anomaly.incident_id,
            Anomaly.series_id,
            func.max(Anomaly.score).label("peak"),
        )
        .where(Anomaly.incident_id.in_(ids))
        .group_by(Anomaly.incident_id, Anomaly.series_id)
        .subquery()
    )
    query = (
        select(
            peaks.c.incident_id,
            Series.id,
            Series.metric,
            Series.labels,
            peaks.c.peak,
            SeriesState.last_value,
            SeriesState.last_expected,
        )
        .join(Series, Series.id == peaks.c.series_id)
        .outerjoin(SeriesState, SeriesState.series_id == Series.id)
        .order_by(peaks.c.incident_id, peaks.c.peak.desc(), Series.id)
    )
    found: dict[int, list[Contributor]] = {}
    for incident_id, sid, metric, labels, peak, value, expected in session.execute(query):
        found.setdefault(incident_id, []).append(
            Contributor(sid, metric, json.loads(labels), float(peak), value, expected)
        )
    return found


def _incident_data(
    incident: Incident,
    anomaly: Anomaly | None,
    state: SeriesState | None,
    contributors: tuple[Contributor, ...],
) -> IncidentRecord:
    lead = contributors[0] if contributors else None
    value: float | None
    expected: float | None
    # the leading series' latest row when it has one (what it is now), else the
    # incident's own series', else the strongest anomaly
    if lead is not None and lead.value is not None:
        value, expected = lead.value, lead.expected
    elif state is not None and state.last_ts is not None:
        value, expected = state.last_value, state.last_expected
    else:
        value = anomaly.value if anomaly else None
        expected = anomaly.expected if anomaly else None
    return replace(
        stored_incident(incident),
        value=value,
        expected=expected,
        value_at=from_epoch(state.last_ts) if state is not None and state.last_ts else None,
        direction=anomaly.direction if anomaly else None,
        detector_scores=json.loads(anomaly.detector_scores) if anomaly else {},
        contributors=contributors,
    )


@dataclass(frozen=True, slots=True)
class SeriesAround:
    """A series' points around an incident, its expected values and anomalous times."""

    ts: list[int]
    values: list[float]
    expected: list[float]
    anomalies: list[int]


def series_around(engine: Engine, series_id: int, *, since: int, until: int) -> SeriesAround:
    """Return the points of ``series_id`` in ``[since, until)`` and its anomalies there."""
    with translated(engine, "reading a series for a chart"), engine.connect() as conn:
        points = read_history(conn, [series_id], since=since, until=until)[series_id]
        marked = conn.execute(
            select(Anomaly.ts, Anomaly.expected)
            .where(Anomaly.series_id == series_id, Anomaly.ts >= since, Anomaly.ts < until)
            .order_by(Anomaly.ts)
        ).all()
    expected = np.full(points.ts.size, np.nan)
    where = {int(ts): e for ts, e in marked if e is not None}
    for i, ts in enumerate(points.ts.tolist()):
        if ts in where:
            expected[i] = where[ts]
    return SeriesAround(
        points.ts.tolist(),
        points.values.tolist(),
        expected.tolist(),
        [int(ts) for ts, _ in marked],
    )


@dataclass(frozen=True, slots=True)
class RepeatCandidate:
    """A firing, unacknowledged incident and when each receiver last heard of it."""

    incident_id: int
    labels: dict[str, str]
    opened_at: datetime
    last_heard: dict[str, datetime]  # receiver -> last sent (or silenced) notification
    pending: frozenset[str]  # receivers with a notification still queued


def repeat_candidates(engine: Engine, *, heard_before: datetime) -> list[RepeatCandidate]:
    """Return the firing, unacknowledged incidents opened at or before ``heard_before``,
    with when each receiver last heard of them (a notification sent, or dropped by a
    silence) and which receivers have one still queued. Dead notifications do not
    count as heard: the incident is repeated once the receiver is back."""
    live = (
        Incident.status == IncidentStatus.FIRING,
        Incident.acknowledged_at.is_(None),
        Incident.opened_at <= heard_before,
    )
    sends = (
        select(
            Notification.incident_id,
            Notification.receiver,
            Notification.status,
            func.max(func.coalesce(Notification.sent_at, Notification.created_at)),
        )
        .join(Incident, Incident.id == Notification.incident_id)
        .where(*live)
        .group_by(Notification.incident_id, Notification.receiver, Notification.status)
    )
    with translated(engine, "reading incidents for repeats"), engine.connect() as conn:
        incidents = conn.execute(
            select(Incident.id, Incident.labels, Incident.opened_at).where(*live)
        ).all()
        heard: dict[int, dict[str, datetime]] = {}
        pending: dict[int, set[str]] = {}
        for incident_id, receiver, status, at in conn.execute(sends):
            if status in (NotificationStatus.PENDING, NotificationStatus.SENDING):
                pending.setdefault(incident_id, set()).add(receiver)
            elif (
                status in (NotificationStatus.SENT, NotificationStatus.SILENCED) and at is not None
            ):
                known = heard.setdefault(incident_id, {})
                at = _aware(at)
                known[receiver] = max(at, known.get(receiver, at))
    return [
        RepeatCandidate(
            iid, json.loads(labels), opened, heard.get(iid, {}), frozenset(pending.get(iid, ()))
        )
        for iid, labels, opened in incidents
    ]


def _aware(moment: datetime | str) -> datetime:
    # coalesce() loses the column type on SQLite: its ISO text comes back as it is stored
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def outbox_counts(engine: Engine) -> dict[str, int]:
    """Return how many notifications there are in each status."""
    query = select(Notification.status, func.count()).group_by(Notification.status)
    with translated(engine, "counting notifications"), engine.connect() as conn:
        return {status: int(count) for status, count in conn.execute(query)}


def stored_silences(
    engine: Engine, *, now: datetime
) -> list[tuple[list[dict[str, str]], datetime, datetime]]:
    """Return the matchers, start and end of every silence not yet over at ``now``."""
    query = select(Silence.matchers, Silence.starts_at, Silence.ends_at).where(
        Silence.ends_at > now
    )
    with translated(engine, "reading silences"), engine.connect() as conn:
        return [(json.loads(m), start, end) for m, start, end in conn.execute(query)]
