"""Collections: the samples of one pull of one source and its ``collection_runs`` row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from anomon.errors import summarise
from anomon.model import Sample, SampleWindow, SeriesInfo, SeriesKey, describe_key, screen_samples
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
    window: SampleWindow | None = None,
    adoptable: Callable[[str], bool] | None = None,
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

    Samples are screened first, the same way on every database: a series whose name or
    labels break the rules of :func:`~anomon.model.series_key_problem`, and a sample
    whose time is outside ``window``, are refused and named in ``error``; so is a series
    that belongs to another source (see :class:`SeriesRegistry` for ``adoptable``). The
    rest of the collection is stored.
    """
    samples, refused = screen_samples(samples, window, registry)
    if refused:
        error = _joined(error, f"{len(refused)} series refused: {summarise(refused, 3)}")
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
            found = registry.resolve(
                conn, wanted, source=source, now=finished_at, max_new=budget, adoptable=adoptable
            )
            ids, created = found.ids, found.created
            if found.foreign:
                error = _joined(error, _foreign(found.foreign))
            guarded = len(wanted) - len(ids) - len(found.foreign)
            if guarded:
                error = _joined(
                    error,
                    f"cardinality guard: {guarded} new series refused "
                    f"(source {source!r} may have at most max_series={max_series})",
                )
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


def _joined(error: str | None, more: str) -> str:
    return f"{error}; {more}" if error else more


def _foreign(owners: dict[SeriesKey, str]) -> str:
    """One line for the series another source owns (a series belongs to one source)."""
    first, owner = next(iter(owners.items()))
    others = f" and {len(owners) - 1} more" if len(owners) > 1 else ""
    return (
        f"{len(owners)} series belong to another source: {describe_key(first)} is source "
        f"{owner!r}'s{others}; give the sources labels that tell their series apart"
    )


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
