"""``anomon backfill``: pull a source's history so detection has a baseline on day one.

A source that can backfill (``prometheus_query`` through ``query_range``, ``predictions``
and ``sql`` by recomputing past windows) splits the range into chunks; each chunk is
one collection, stored in one transaction with its ``collection_runs`` row, exactly as
the daemon stores a live one. Points already stored are skipped, so running a backfill
twice stores nothing new. A chunk that fails is recorded and the next one goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anomon.config import Config
from anomon.errors import SourceError, UsageError
from anomon.model import SampleWindow
from anomon.sources import Backfillable, PartialCollection, build_source
from anomon.store import Engine, SeriesRegistry, open_database, save_collection
from anomon.timeutil import Clock, utcnow

Progress = Callable[[int, int, int], None]
"""Called after each chunk with (chunks done, chunks in all, points stored so far)."""


@dataclass
class BackfillResult:
    """What a backfill stored, and the chunks that failed (their error lines)."""

    chunks: int = 0
    points: int = 0
    series_created: int = 0
    failures: list[str] = field(default_factory=list)


def backfill(
    config: Config,
    engine: Engine,
    source_name: str,
    *,
    since: timedelta,
    progress: Progress | None = None,
    clock: Clock = utcnow,
) -> BackfillResult:
    """Store the history of ``source_name`` over the last ``since``.

    Raises UsageError for an unknown source or a kind that cannot backfill.
    """
    source = _backfillable(config, source_name)
    until = clock()
    chunks = source.backfill_chunks(until - since, until)
    result = BackfillResult(chunks=len(chunks))
    registry = SeriesRegistry()
    limit = next(s.max_series for s in config.sources if s.name == source_name)
    rules = _Rules(
        limit,
        config.samples.window(until, reach_back=since + timedelta(days=1)),
        frozenset(s.name for s in config.sources),
    )
    try:
        for done, (start, end) in enumerate(chunks, start=1):
            _store_chunk(source, engine, registry, start, end, rules, result, clock)
            if progress is not None:
                progress(done, len(chunks), result.points)
    finally:
        source.close()
    return result


def _backfillable(config: Config, name: str) -> Backfillable:
    found = next((s for s in config.sources if s.name == name), None)
    if found is None:
        known = ", ".join(s.name for s in config.sources) or "none"
        raise UsageError(f"no source named {name!r} in the config (sources: {known})")
    source = build_source(found, open_database=open_database)
    if not isinstance(source, Backfillable):
        source.close()
        raise UsageError(
            f"source {name!r} is of kind {found.kind!r}, which cannot backfill "
            "(prometheus_query, predictions and sql can)"
        )
    return source


@dataclass(frozen=True)
class _Rules:
    """What a backfill's samples must keep to, as the daemon's collections do."""

    max_series: int
    window: SampleWindow
    configured: frozenset[str]

    def adoptable(self, owner: str) -> bool:
        return owner not in self.configured


def _store_chunk(
    source: Backfillable,
    engine: Engine,
    registry: SeriesRegistry,
    start: datetime,
    end: datetime,
    rules: _Rules,
    result: BackfillResult,
    clock: Clock,
) -> None:
    started = clock()
    error = None
    try:
        samples = source.collect_range(start, end)
    except PartialCollection as exc:
        samples, error = exc.samples, str(exc)
    except SourceError as exc:
        samples, error = [], str(exc)
    stored = save_collection(
        engine,
        registry,
        source=source.name,
        started_at=started,
        finished_at=clock(),
        samples=samples,
        error=error,
        max_series=rules.max_series,
        replace=source.replaces_samples,
        window=rules.window,
        adoptable=rules.adoptable,
    )
    result.points += stored.points
    result.series_created += stored.series_created
    if stored.error:
        result.failures.append(f"{start.isoformat()} to {end.isoformat()}: {stored.error}")
