"""Collections: the samples of one pull of one source and its ``collection_runs`` row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from anomon.model import Sample, SeriesInfo, SeriesKey
from anomon.store.engine import translated
from anomon.store.samples import insert_samples
from anomon.store.schema import CollectionRun, Series
from anomon.store.series import SeriesRegistry


@dataclass(frozen=True, slots=True)
class CollectionResult:
    """What one collection stored."""

    points: int
    series_created: int
    error: str | None = None


def save_collection(
    engine: Engine,
    registry: SeriesRegistry,
    *,
    source: str,
    started_at: datetime,
    finished_at: datetime,
    samples: Sequence[Sample],
    error: str | None = None,
    max_series: int | None = None,
    replace: bool = False,
) -> CollectionResult:
    """Store ``samples`` and the ``collection_runs`` row of one pull, in one transaction.

    ``error`` marks a failed (or partly failed) pull; whatever valid samples it got are
    still stored, and a pull that got nothing is saved with no samples. Samples already
    stored are skipped. Raises StoreError if the database refuses, in which case
    nothing of this collection is stored.

    ``max_series`` caps how many series ``source`` may own: a collection that would go
    past it creates no new series, stores the samples of the series that exist, and says
    so in its ``error``.

    ``replace`` overwrites the values of points already stored (a source that
    recomputes past windows) instead of skipping them.
    """
    wanted: dict[SeriesKey, SeriesInfo] = {sample.key: sample.info for sample in samples}
    try:
        with (
            translated(engine, f"storing a collection of source {source!r}"),
            engine.begin() as conn,
        ):
            budget = None
            if max_series is not None:
                owned = conn.execute(
                    select(func.count()).select_from(Series).where(Series.source == source)
                ).scalar_one()
                budget = max(0, max_series - int(owned))
            ids, created = registry.resolve(conn, wanted, now=finished_at, max_new=budget)
            refused = len(wanted) - len(ids)
            if refused:
                guard = (
                    f"cardinality guard: {refused} new series refused "
                    f"(source {source!r} may have at most max_series={max_series})"
                )
                error = f"{error}; {guard}" if error else guard
            kept = [sample for sample in samples if sample.key in ids]
            points = insert_samples(
                conn,
                [ids[sample.key] for sample in kept],
                [sample.ts for sample in kept],
                [sample.value for sample in kept],
                replace=replace,
            )
            conn.execute(
                insert(CollectionRun).values(
                    source=source,
                    started_at=started_at,
                    finished_at=finished_at,
                    points=points,
                    series_created=created,
                    error=error,
                )
            )
    except BaseException:
        registry.forget(wanted)
        raise
    return CollectionResult(points=points, series_created=created, error=error)


def last_collections(engine: Engine, source: str, limit: int = 10) -> list[CollectionRun]:
    """Return the newest ``limit`` collection runs of ``source``, newest first."""
    query = (
        select(CollectionRun)
        .where(CollectionRun.source == source)
        .order_by(CollectionRun.started_at.desc(), CollectionRun.id.desc())
        .limit(limit)
    )
    with translated(engine, "reading collection runs"), Session(engine) as session:
        return list(session.scalars(query))
