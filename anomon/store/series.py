"""Series identities: get-or-create many series at once, with an in-process cache.

A steady daemon sees the same series every cycle, so :class:`SeriesRegistry` keeps
the ``SeriesKey -> id`` map and goes to the database only for keys it has not seen:
one SELECT per batch of keys, one INSERT of the missing ones, one SELECT of their ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from anomon.model import SeriesInfo, SeriesKey
from anomon.store.schema import Series

KEYS_PER_QUERY = 400  # 2 bind parameters each: well inside SQLite's 32,766 limit


class SeriesRegistry:
    """Map series keys to ids, creating the series that do not exist yet.

    Ids never change once assigned, so the cache needs no invalidation; a registry
    belongs to one database.
    """

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def resolve(
        self,
        conn: Connection,
        wanted: Mapping[SeriesKey, SeriesInfo],
        *,
        now: datetime,
        max_new: int | None = None,
    ) -> tuple[dict[SeriesKey, int], int]:
        """Return the ids of the keys in ``wanted`` and how many series were created.

        When more than ``max_new`` series would be created, none is (the cardinality
        guard) and the keys without a series are left out of the result. Runs in the
        caller's transaction: if it rolls back, call :meth:`forget` with the same keys so
        the cache holds no ids that were never committed.
        """
        missing = [key for key in wanted if key not in self._ids]
        created = 0
        if missing:
            found = _select_ids(conn, missing)
            absent = [key for key in missing if key not in found]
            if max_new is not None and len(absent) > max_new:
                absent = []
            if absent:
                inserted = _insert_series(conn, absent, wanted, now)
                created = len(inserted)
                found.update(inserted)
                raced = [key for key in absent if key not in inserted]
                if raced:  # another writer created them between our SELECT and INSERT
                    found.update(_select_ids(conn, raced))
            self._ids.update(found)
        return {key: self._ids[key] for key in wanted if key in self._ids}, created

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        """Drop ``keys`` from the cache (after a rolled-back transaction)."""
        for key in keys:
            self._ids.pop(key, None)


def _select_ids(conn: Connection, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
    found: dict[SeriesKey, int] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = [(key.metric, key.labels) for key in keys[start : start + KEYS_PER_QUERY]]
        query = select(Series.id, Series.metric, Series.labels).where(
            tuple_(Series.metric, Series.labels).in_(chunk)
        )
        for series_id, metric, labels in conn.execute(query):
            found[SeriesKey(metric, labels)] = series_id
    return found


def _insert_series(
    conn: Connection,
    keys: Sequence[SeriesKey],
    infos: Mapping[SeriesKey, SeriesInfo],
    now: datetime,
) -> dict[SeriesKey, int]:
    """Insert the series of ``keys``; return the ids of those this call created.

    A key another writer inserted concurrently is skipped (its insert wins).
    """
    rows = [
        {
            "metric": key.metric,
            "labels": key.labels,
            "source": infos[key].source,
            "entity": infos[key].entity,
            "kind": str(infos[key].kind),
            "unit": infos[key].unit,
            "created_at": now,
        }
        for key in keys
    ]
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(Series).on_conflict_do_nothing()
    result = conn.execute(statement.returning(Series.id, Series.metric, Series.labels), rows)
    return {SeriesKey(metric, labels): series_id for series_id, metric, labels in result}
