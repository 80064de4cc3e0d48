"""What detection reads and writes: unscored samples, recent history, anomalies, state.

A detection cycle reads, per batch of series, every sample past the series' watermark
(``series_state.scored_until``) in one query, and writes its anomalies, the new
watermarks and its ``detection_runs`` row in one transaction. Anomalies are unique per
(series, ts), so a cycle that is run again after a crash adds nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, Engine, exists, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from anomon.model import AnomalyRecord, IncidentWrite, SeriesKind
from anomon.store.engine import translated
from anomon.store.incidents import write_incidents
from anomon.store.samples import SERIES_PER_QUERY, Points, split_by_series
from anomon.store.schema import Anomaly, DetectionRun, Sample, Series, SeriesState


@dataclass(frozen=True, slots=True)
class ScoredSeries:
    """A series as detection sees it."""

    id: int
    metric: str
    entity: str
    kind: str
    scored_until: int | None
    labels: str = "{}"
    source: str = ""


def series_to_score(engine: Engine, *, retire_after: int = 0) -> list[ScoredSeries]:
    """Return every series with its watermark (None: never scored), but the retired.

    Retired (``retire_after`` > 0 seconds): its latest scored sample is more than
    ``retire_after`` older than the latest of any series of its source, and no sample
    of it waits past its watermark — a label set gone for good (a replaced pod's) that
    detection need not keep in memory. Judged against its source's own latest time,
    not the clock, so a backfilled or finished source's history is never retired; a
    series whose samples come back is returned again.
    """
    query = (
        select(
            Series.id,
            Series.metric,
            Series.entity,
            Series.kind,
            SeriesState.scored_until,
            Series.labels,
            Series.source,
        )
        .outerjoin(SeriesState, SeriesState.series_id == Series.id)
        .where(Series.kind != SeriesKind.HISTOGRAM)  # stored for SQL, never scored
        .order_by(Series.id)
    )
    if retire_after > 0:
        latest = (
            select(Series.source, func.max(SeriesState.last_ts).label("latest"))
            .join(SeriesState, SeriesState.series_id == Series.id)
            .group_by(Series.source)
            .subquery()
        )
        waiting = exists().where(
            Sample.series_id == Series.id, Sample.ts > SeriesState.scored_until
        )
        query = query.outerjoin(latest, latest.c.source == Series.source).where(
            or_(
                SeriesState.last_ts.is_(None),
                SeriesState.last_ts >= latest.c.latest - retire_after,
                waiting,
            )
        )
    with translated(engine, "reading series to score"), engine.connect() as conn:
        return [ScoredSeries(*row) for row in conn.execute(query)]


def read_unscored(
    conn: Connection,
    series_ids: Sequence[int],
    *,
    until: int | None = None,
    after: Mapping[int, int | None] | None = None,
) -> dict[int, Points]:
    """Return each series' samples past its watermark (and at or before ``until``, epoch
    seconds, when given), oldest first (one query per batch).

    ``after``: the watermarks as the caller read them (None: never scored). They bound
    each batch's index scan from below (at the lowest of them), so the cost follows the
    new rows, not each series' history; the stored watermark still decides exactly.
    """
    bound = "" if until is None else f" AND p.ts <= {int(until)}"
    sql = (
        "SELECT p.series_id, p.ts, p.value FROM samples p "
        "LEFT JOIN series_state w ON w.series_id = p.series_id "
        f"WHERE p.series_id IN ({{marks}}) AND p.ts > COALESCE(w.scored_until, -1){bound}"
        " AND p.ts > {floor} ORDER BY p.series_id, p.ts"
    )
    known = after or {}

    def floor(chunk: Sequence[int]) -> int:
        return min((_or_before(known.get(sid)) for sid in chunk), default=-1)

    return _batched(conn, sql, series_ids, (), floor=floor)


def _or_before(watermark: int | None) -> int:
    return -(2**62) if watermark is None else int(watermark)


def read_recent(conn: Connection, series_ids: Sequence[int], *, rows: int) -> dict[int, Points]:
    """Return each series' last ``rows`` scored samples (up to its watermark), oldest first."""
    sql = (
        "SELECT series_id, ts, value FROM ("
        " SELECT p.series_id, p.ts, p.value, ROW_NUMBER() OVER ("
        "  PARTITION BY p.series_id ORDER BY p.ts DESC) AS age"
        " FROM samples p JOIN series_state w ON w.series_id = p.series_id"
        " WHERE p.series_id IN ({marks}) AND p.ts <= w.scored_until"
        ") recent WHERE age <= {limit} ORDER BY series_id, ts"
    )
    return _batched(conn, sql, series_ids, (), limit=rows)


def read_seed(
    conn: Connection, series_ids: Sequence[int], *, before: int, seed: int, rows: int
) -> dict[int, Points]:
    """A fresh start at ``before`` (epoch seconds; a deploy): each series' last ``seed``
    samples older than it, then its last ``rows`` scored samples from it on, oldest first."""
    earlier = _batched(
        conn,
        "SELECT series_id, ts, value FROM ("
        " SELECT p.series_id, p.ts, p.value, ROW_NUMBER() OVER ("
        "  PARTITION BY p.series_id ORDER BY p.ts DESC) AS age"
        f" FROM samples p WHERE p.series_id IN ({{marks}}) AND p.ts < {int(before)}"
        ") recent WHERE age <= {limit} ORDER BY series_id, ts",
        series_ids,
        (),
        limit=seed,
    )
    later = (
        {}
        if rows <= 0
        else _batched(
            conn,
            "SELECT series_id, ts, value FROM ("
            " SELECT p.series_id, p.ts, p.value, ROW_NUMBER() OVER ("
            "  PARTITION BY p.series_id ORDER BY p.ts DESC) AS age"
            " FROM samples p JOIN series_state w ON w.series_id = p.series_id"
            f" WHERE p.series_id IN ({{marks}}) AND p.ts >= {int(before)}"
            " AND p.ts <= w.scored_until"
            ") recent WHERE age <= {limit} ORDER BY series_id, ts",
            series_ids,
            (),
            limit=rows,
        )
    )
    found: dict[int, Points] = {}
    for sid in set(earlier) | set(later):
        parts = [p for p in (earlier.get(sid), later.get(sid)) if p is not None]
        found[sid] = Points(
            np.concatenate([p.ts for p in parts]), np.concatenate([p.values for p in parts])
        )
    return found


def first_sample_time(conn: Connection, series_ids: Sequence[int]) -> int | None:
    """The time of the earliest sample of any of ``series_ids`` (None: none has one)."""
    if not series_ids:
        return None
    query = select(func.min(Sample.ts)).where(Sample.series_id.in_(sorted(set(series_ids))))
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else int(found)


def _batched(
    conn: Connection,
    sql: str,
    series_ids: Sequence[int],
    extra: tuple[int, ...],
    limit: int = 0,
    floor: Callable[[Sequence[int]], int] | None = None,
) -> dict[int, Points]:
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    found: dict[int, Points] = {}
    unique = sorted(set(series_ids))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, len(unique), SERIES_PER_QUERY):
            chunk = unique[start : start + SERIES_PER_QUERY]
            lowest = int(floor(chunk)) if floor is not None else 0
            text = sql.format(marks=", ".join([mark] * len(chunk)), limit=int(limit), floor=lowest)
            cursor.execute(text, [*chunk, *extra])
            found.update(split_by_series(list(cursor.fetchall())))
    finally:
        cursor.close()
    return found


LatestRow = tuple[int, float | None, float | None, float | None]  # ts, value, expected, score


def _latest_columns(row: LatestRow | None) -> dict[str, int | float | None]:
    """``series_state``'s latest-row columns; non-finite numbers are stored as NULL."""
    if row is None:
        return {"last_ts": None, "last_value": None, "last_expected": None, "last_score": None}
    ts, value, expected, score = row

    def finite(x: float | None) -> float | None:
        return x if x is not None and math.isfinite(x) else None

    return {
        "last_ts": ts,
        "last_value": finite(value),
        "last_expected": finite(expected),
        "last_score": finite(score),
    }


# series_state's columns set by a cycle, with their PostgreSQL array types: one value per
# series each; updated_at (the cycle's end) is one value for all
_STATE_ARRAYS = {
    "series_id": "bigint",
    "scored_until": "bigint",
    "quality": "varchar",
    "learning_until": "bigint",
    "last_ts": "bigint",
    "last_value": "float8",
    "last_expected": "float8",
    "last_score": "float8",
}
_STATE_COLUMNS = (*list(_STATE_ARRAYS)[1:], "updated_at")  # what an upsert sets
# PostgreSQL: every series' state in one statement, each column one array. Row by row
# (executemany), the upserts cost the server about as much CPU as the rest of a cycle's
# queries; as multi-row VALUES (SQLAlchemy's insertmanyvalues) they cost the daemon
# more Python time than they saved the server.
_PG_STATES = (
    f"INSERT INTO series_state ({', '.join(_STATE_ARRAYS)}, updated_at) "
    "SELECT s.*, %(updated_at)s FROM unnest("
    + ", ".join(f"%({name})s::{kind}[]" for name, kind in _STATE_ARRAYS.items())
    + ") AS s ON CONFLICT (series_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE_COLUMNS)
)


def _save_states(conn: Connection, states: Sequence[Mapping[str, object]]) -> None:
    """Upsert each series' ``series_state`` row (one dict per series, every column)."""
    if conn.dialect.name == "postgresql":
        columns = {name: [row[name] for row in states] for name in _STATE_ARRAYS}
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_PG_STATES, {**columns, "updated_at": states[0]["updated_at"]})
        finally:
            cursor.close()
        return
    upsert = sqlite_insert(SeriesState)
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[SeriesState.series_id],
            set_={name: upsert.excluded[name] for name in _STATE_COLUMNS},
        ),
        states,
    )


def save_detection(
    engine: Engine,
    *,
    anomalies: Sequence[AnomalyRecord],
    scored_until: Mapping[int, int],
    quality: Mapping[int, str],
    started_at: datetime,
    learning_until: Mapping[int, int | None] | None = None,
    latest: Mapping[int, LatestRow] | None = None,
    finished_at: datetime,
    points: int,
    config_hash: str,
    detector_version: str,
    error: str | None = None,
    incidents: Sequence[IncidentWrite] = (),
    lost: list[int] | None = None,
) -> int:
    """Write a cycle's incident changes (with their outbox rows), anomalies, watermarks
    (with each series' data-quality state, while it is learning until about when, and
    its latest row: ``latest`` maps a series to (ts, value, expected, score))
    and run row in one transaction.

    An anomaly whose ``incident`` indexes into ``incidents`` is linked to that incident.
    Returns how many anomalies were new (re-running a cycle stores none twice); the
    series of incident writes that lost to another writer are appended to ``lost``.
    """
    insert_for = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {
            "series_id": a.series_id,
            "ts": a.ts,
            "value": a.value,
            "expected": a.expected,
            "score": a.score,
            "detector_scores": json.dumps(dict(a.detector_scores), sort_keys=True),
            "direction": a.direction,
            "severity": a.severity,
            "config_hash": config_hash,
            "detector_version": detector_version,
            "detected_at": finished_at,
        }
        for a in anomalies
    ]
    states = [
        {
            "series_id": sid,
            "scored_until": until,
            "quality": quality.get(sid, "ok"),
            "learning_until": (learning_until or {}).get(sid),
            **_latest_columns((latest or {}).get(sid)),
            "updated_at": finished_at,
        }
        for sid, until in scored_until.items()
    ]
    with translated(engine, "storing a detection cycle"), engine.begin() as conn:
        ids = write_incidents(conn, incidents, now=finished_at)
        if lost is not None:
            lost += [
                w.series_id
                for w, i in zip(incidents, ids, strict=True)
                if i is None and w.series_id is not None
            ]
        for row, anomaly in zip(rows, anomalies, strict=True):
            row["incident_id"] = None if anomaly.incident is None else ids[anomaly.incident]
        new = 0
        if rows:
            statement = insert_for(Anomaly).on_conflict_do_nothing().returning(Anomaly.id)
            new = len(conn.execute(statement, rows).all())
        if states:
            _save_states(conn, states)
        conn.execute(
            insert(DetectionRun).values(
                started_at=started_at,
                finished_at=finished_at,
                series_scored=len(states),
                points_scored=points,
                anomalies=new,
                error=error,
                config_hash=config_hash,
            )
        )
    return new
