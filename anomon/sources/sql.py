"""``kind = "sql"``: any query, on any database SQLAlchemy reaches, returning metric rows.

Each row is one sample: ``metric`` (the series name), ``value`` (a number), an optional
``ts`` (epoch seconds, a timestamp or ISO 8601; none means the collection time) and
every other column a label. The query may use the bind parameters ``:since`` and
``:until`` (epoch seconds): the end of the last collection whose rows were stored (one
interval back for the first) and now, so the range of a collection that failed, was
abandoned at its deadline or could not be stored is read again by the next one. A row
that is not a finite number, has no metric name or repeats a series and time already in
the answer is skipped and named in the collection's error; the other rows are stored
(and the range is read: a bad row is not read again). The database is reached through
a :class:`~.base.Database` passed in; the store's refuses a query of more than one
statement and any write (see :mod:`anomon.store.external`), failing the collection
with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from anomon.config import SqlSourceConfig
from anomon.errors import SourceError, StoreError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import (
    Backfillable,
    OpenDatabase,
    PartialCollection,
    SourceContext,
    split_range,
    summarise,
)
from anomon.timeutil import parse_instant, to_epoch

BACKFILL_CHUNK = timedelta(days=1)


class SqlSource(Backfillable, config=SqlSourceConfig):
    """Collect the rows of one query. ``open_database`` makes the connection (the store's)."""

    def __init__(self, config: SqlSourceConfig, *, open_database: OpenDatabase) -> None:
        super().__init__(config)
        self._config = config
        self._db = open_database(config.url, config.timeout)
        self._info = SeriesInfo(
            config.name, config.entity or config.name, SeriesKind(config.series_kind)
        )
        self._since: datetime | None = None
        self._until: datetime | None = None  # the end of the last range, until stored

    @classmethod
    def build(cls, config: SqlSourceConfig, context: SourceContext) -> SqlSource:
        """Connect through the store's ``open_database``."""
        return cls(config, open_database=context.open_database)

    def collect(self, now: datetime) -> list[Sample]:
        """Run the query for ``[since, now)``; once its rows are stored (:meth:`saved`)
        the next one starts where this one ended."""
        since = self._since or now - self._config.interval
        self._until = now
        return self.collect_range(since, now)

    def saved(self) -> None:
        """The last collection's rows are stored (a partial one's valid rows: the rest
        were named in its error): the next range starts where it ended. A collection
        abandoned at its deadline, or whose rows could not be stored, is never told
        so, and its range is read again."""
        if self._until is not None:
            self._since, self._until = self._until, None

    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Split ``[since, until)`` into days, each one query."""
        return split_range(since, until, BACKFILL_CHUNK)

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Run the query with ``:since = start`` and ``:until = end``; rows without ``ts``
        are stamped ``end``. Raises SourceError, or PartialCollection for skipped rows."""
        try:
            columns, rows = self._db.query(
                self._config.query, {"since": to_epoch(start), "until": to_epoch(end)}
            )
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        samples, problems = rows_to_samples(
            columns, rows, default_ts=to_epoch(end), info=self._info, labels=self._config.labels
        )
        if problems and not samples:
            raise SourceError(f"{self._db.label}: {summarise(problems)}")
        if problems:
            raise PartialCollection(f"{self._db.label}: {summarise(problems)}", samples)
        return samples

    def close(self) -> None:
        """Release the database connections."""
        self._db.close()


def rows_to_samples(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    default_ts: int,
    info: SeriesInfo,
    labels: dict[str, str],
) -> tuple[list[Sample], list[str]]:
    """Turn (metric, value[, ts][, labels...]) rows into samples; return them and the
    problems met (one line each)."""
    names = [column.lower() for column in columns]
    if "metric" not in names or "value" not in names:
        raise SourceError(f"the query must return columns metric and value, got: {list(columns)}")
    metric_at, value_at = names.index("metric"), names.index("value")
    ts_at = names.index("ts") if "ts" in names else None
    label_at = [
        (i, columns[i]) for i in range(len(columns)) if i not in (metric_at, value_at, ts_at)
    ]
    found: dict[tuple[SeriesKey, int], Sample] = {}
    problems: list[str] = []
    for number, row in enumerate(rows, start=1):
        try:
            key = _key(row[metric_at], row, label_at, labels)
            ts = default_ts if ts_at is None or row[ts_at] is None else parse_instant(row[ts_at])
            value = _finite(row[value_at])
        except ValueError as exc:
            problems.append(f"row {number}: {exc}")
            continue
        if (key, ts) in found:
            problems.append(f"row {number}: duplicate of {key.metric}{key.labels} at {ts}")
        found[key, ts] = Sample(key, info, ts, value)
    return list(found.values()), problems


def _key(
    metric: Any, row: Sequence[Any], label_at: list[tuple[int, str]], extra: dict[str, str]
) -> SeriesKey:
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric is not a name: {metric!r}")
    labels = {name: str(row[i]) for i, name in label_at if row[i] is not None}
    return SeriesKey.of(metric, {**labels, **extra})


def _finite(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"value is not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"value is not a finite number: {value!r}")
    return number
