"""Finding series by what people know of them, and their incidents' time spans."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select

from anomon.store import schema
from anomon.store.engine import translated
from anomon.store.incidents import SeriesMeta
from anomon.store.schema import Incident, Series
from anomon.timeutil import to_epoch


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One series: its id, name, labels, entity and unit."""

    id: int
    metric: str
    labels: dict[str, str]
    entity: str
    unit: str


def find_series(
    engine: Engine, *, series_id: int | None = None, metric: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[SeriesRow]:  # fmt: skip
    """Return the series with ``series_id``, or named ``metric`` whose labels include
    ``labels``, ordered by id."""
    query = select(Series.id, Series.metric, Series.labels, Series.entity, Series.unit)
    if series_id is not None:
        query = query.where(Series.id == series_id)
    if metric is not None:
        query = query.where(Series.metric == metric)
    wanted = dict(labels or {})
    with translated(engine, "finding series"), engine.connect() as conn:
        rows = [
            SeriesRow(sid, name, json.loads(text), entity, unit)
            for sid, name, text, entity, unit in conn.execute(query.order_by(Series.id))
        ]
    return [r for r in rows if all(r.labels.get(k) == v for k, v in wanted.items())]


@dataclass(frozen=True, slots=True)
class SeriesStatus:
    """A series as the console's explorer lists it: what it is, and where detection
    stands on it (its data-quality state, and its latest value, expectation and score)."""

    id: int
    metric: str
    labels: dict[str, str]
    entity: str
    source: str
    unit: str
    quality: str | None  # None: never scored
    learning_until: int | None
    last_ts: int | None
    last_value: float | None
    last_expected: float | None
    last_score: float | None


def search_series(
    engine: Engine,
    *,
    metric: str | None = None,
    labels: Mapping[str, str] | None = None,
    entity: str | None = None,
    series_id: int | None = None,
    limit: int = 200,
) -> list[SeriesStatus]:
    """The series named ``metric`` (a ``*`` in it matches anything), of ``entity``,
    whose labels include ``labels``, with their detection state; at most ``limit``."""
    state = schema.SeriesState
    query = (
        select(
            Series.id, Series.metric, Series.labels, Series.entity, Series.source, Series.unit,
            state.quality, state.learning_until, state.last_ts, state.last_value,
            state.last_expected, state.last_score,
        )
        .outerjoin(state, state.series_id == Series.id)
        .order_by(Series.metric, Series.id)
    )  # fmt: skip
    if series_id is not None:
        query = query.where(Series.id == series_id)
    if metric:
        pattern = metric.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Series.metric.like(pattern.replace("*", "%"), escape="\\"))
    if entity:
        query = query.where(Series.entity == entity)
    wanted = dict(labels or {})
    found: list[SeriesStatus] = []
    with translated(engine, "finding series"), engine.connect() as conn:
        rows = conn.execution_options(yield_per=1000).execute(query)
        try:  # streamed: the labels are matched here, so no LIMIT can be given to SQL
            for sid, name, text, *rest in rows:
                own = json.loads(text)
                if all(own.get(k) == v for k, v in wanted.items()):
                    found.append(SeriesStatus(sid, name, own, *rest))
                    if len(found) >= limit:
                        break
        finally:
            rows.close()
    return found


def incident_spans(
    engine: Engine, series_id: int, *, since: int, until: int
) -> list[tuple[int, int]]:
    """Return (opened, resolved or last seen) in epoch seconds of the series' incidents
    that overlap ``[since, until)``."""
    query = select(Incident.opened_at, Incident.resolved_at, Incident.last_seen_at).where(
        Incident.series_id == series_id
    )
    with translated(engine, "reading incidents"), engine.connect() as conn:
        spans = [
            (to_epoch(opened), to_epoch(resolved or seen))
            for opened, resolved, seen in conn.execute(query)
        ]
    return [(a, b) for a, b in spans if b >= since and a < until]


def every_series_meta(engine: Engine) -> list[SeriesMeta]:
    """The metric, labels, source, entity and kind of every series (what silences and
    routes match against, less the severity)."""
    query = select(
        Series.id, Series.metric, Series.labels, Series.source, Series.entity, Series.kind
    )
    with translated(engine, "reading the series"), engine.connect() as conn:
        return [
            SeriesMeta(sid, metric, json.loads(labels), source, entity, kind)
            for sid, metric, labels, source, entity, kind in conn.execute(query.order_by(Series.id))
        ]
