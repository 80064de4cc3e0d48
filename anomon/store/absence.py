"""What the absent-data watch reads: each source's collections, the series that have
gone quiet, and the open ``source_down`` and ``series_absent`` incidents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session

from anomon.model import SERIES_ABSENT, SOURCE_DOWN, IncidentRecord, IncidentStatus, IncidentWrite
from anomon.store.engine import translated
from anomon.store.incidents import stored_incident, write_incidents
from anomon.store.schema import CollectionRun, Incident, Series, SeriesState


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A source's collections: the first (exact only when none succeeded: else a good
    one), the last, the last successful one, and the last one's error (None: it
    succeeded)."""

    source: str
    first_at: datetime
    last_at: datetime
    last_ok_at: datetime | None
    last_error: str | None


def source_health(engine: Engine, sources: Sequence[str]) -> dict[str, SourceHealth]:
    """The collections so far of each of ``sources`` that has any.

    A few index lookups per source on ``(source, started_at)`` (its last run, its last
    good run, its first run when it never had a good one), never a scan of the runs: the
    watch asks every few seconds and a month of runs is hundreds of thousands of rows.
    """
    found: dict[str, SourceHealth] = {}
    with translated(engine, "reading the sources' collections"), engine.connect() as conn:
        for source in sources:
            runs = select(CollectionRun.started_at, CollectionRun.error).where(
                CollectionRun.source == source
            )
            last = conn.execute(runs.order_by(CollectionRun.started_at.desc()).limit(1)).first()
            if last is None:
                continue
            good = runs.where(CollectionRun.error.is_(None))
            ok = conn.execute(good.order_by(CollectionRun.started_at.desc()).limit(1)).first()
            first = (
                conn.execute(runs.order_by(CollectionRun.started_at).limit(1)).one()
                if ok is None
                else None
            )
            found[source] = SourceHealth(
                source=source,
                first_at=(first or ok or last).started_at,
                last_at=last.started_at,
                last_ok_at=None if ok is None else ok.started_at,
                last_error=last.error,
            )
    return found


def open_absences(engine: Engine) -> dict[str, IncidentRecord]:
    """The firing ``source_down`` incidents, by source."""
    return {a.entity: a for a in _firing(engine, SOURCE_DOWN)}


def open_series_absences(engine: Engine) -> dict[int, IncidentRecord]:
    """The firing ``series_absent`` incidents, by the id of the series they are about
    (their ``series_id`` label)."""
    return {int(a.labels.get("series_id", 0)): a for a in _firing(engine, SERIES_ABSENT)}


def _firing(engine: Engine, metric: str) -> list[IncidentRecord]:
    query = select(Incident).where(
        Incident.status == IncidentStatus.FIRING, Incident.metric == metric
    )
    with translated(engine, f"reading the open {metric} incidents"), Session(engine) as session:
        return [stored_incident(row) for row in session.scalars(query)]


@dataclass(frozen=True, slots=True)
class QuietSeries:
    """A series whose last scored sample is older than its source's cutoff."""

    id: int
    metric: str
    labels: str
    source: str
    entity: str
    last_ts: int


def quiet_series(
    engine: Engine, cutoffs: Mapping[str, int], retired: Mapping[str, int] | None = None
) -> list[QuietSeries]:
    """The series of each source in ``cutoffs`` whose last scored sample is older than
    the source's cutoff (epoch seconds) but not older than its ``retired`` cutoff (where
    one is given: a series gone for good is no longer quiet, it is retired): one query,
    on the few that have gone quiet."""
    if not cutoffs:
        return []
    retired = retired or {}

    def gone_quiet(source: str, cutoff: int) -> Any:
        found = and_(Series.source == source, SeriesState.last_ts < cutoff)
        if source in retired:
            found = and_(found, SeriesState.last_ts >= retired[source])
        return found

    query = (
        select(
            Series.id, Series.metric, Series.labels, Series.source, Series.entity,
            SeriesState.last_ts,
        )
        .join(SeriesState, SeriesState.series_id == Series.id)
        .where(
            or_(*(gone_quiet(source, cutoff) for source, cutoff in sorted(cutoffs.items())))
        )
        .order_by(Series.id)
    )  # fmt: skip
    with translated(engine, "reading the series gone quiet"), engine.connect() as conn:
        return [QuietSeries(*row) for row in conn.execute(query)]


def last_sample_times(engine: Engine, series_ids: Sequence[int]) -> dict[int, int]:
    """The time of each series' last scored sample (series without one are left out)."""
    if not series_ids:
        return {}
    query = select(SeriesState.series_id, SeriesState.last_ts).where(
        SeriesState.series_id.in_(sorted(set(series_ids))), SeriesState.last_ts.is_not(None)
    )
    with translated(engine, "reading the series' last samples"), engine.connect() as conn:
        return {sid: int(ts) for sid, ts in conn.execute(query)}


def save_incidents(
    engine: Engine, writes: Sequence[IncidentWrite], *, now: datetime
) -> list[int | None]:
    """Apply incident writes (with their notifications) in one transaction; return each
    one's incident id, None for one that lost a race to another writer."""
    with translated(engine, "storing incident changes"), engine.begin() as conn:
        return write_incidents(conn, writes, now=now)
