"""Series identities: get-or-create many series at once, with an in-process cache.

A steady daemon sees the same series every cycle, so :class:`SeriesRegistry` keeps
the ``SeriesKey -> (id, source)`` map and goes to the database only for keys it has not
seen: one SELECT per batch of keys, one INSERT of the missing ones, one SELECT of their
ids. A series belongs to the source that created it: another source writing the same
metric and labels is refused, unless the owner is no longer configured (a renamed or
removed source), in which case the writer adopts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from anomon.model import SeriesInfo, SeriesKey
from anomon.store.schema import Series

KEYS_PER_QUERY = 400  # 2 bind parameters each: well inside SQLite's 32,766 limit


@dataclass
class Resolved:
    """What :meth:`SeriesRegistry.resolve` found: the ids of the keys the source may
    write, how many series it created, and the keys owned by another source."""

    ids: dict[SeriesKey, int] = field(default_factory=dict)
    created: int = 0
    foreign: dict[SeriesKey, str] = field(default_factory=dict)  # key -> owning source


class SeriesRegistry:
    """Map series keys to their ids and owning sources, creating the series that do not
    exist yet.

    Ids never change once assigned, and an owner changes only through this registry's
    adoption, so the cache needs no invalidation; a registry belongs to one database.
    """

    def __init__(self) -> None:
        self._known: dict[SeriesKey, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, key: object) -> bool:
        return key in self._known

    def resolve(
        self,
        conn: Connection,
        wanted: Mapping[SeriesKey, SeriesInfo],
        *,
        source: str,
        now: datetime,
        max_new: int | None = None,
        adoptable: Callable[[str], bool] | None = None,
    ) -> Resolved:
        """Return the ids of the keys in ``wanted`` that ``source`` may write.

        When more than ``max_new`` series would be created, none is (the cardinality
        guard) and the keys without a series are left out. A key whose series belongs to
        another source is left out and listed in ``foreign`` — unless ``adoptable(owner)``
        says the owner is gone, and then ``source`` takes the series over. Runs in the
        caller's transaction: if it rolls back, call :meth:`forget` with the same keys so
        the cache holds nothing that was never committed.
        """
        missing = [key for key in wanted if key not in self._known]
        result = Resolved()
        if missing:
            found = _select(conn, missing)
            absent = [key for key in missing if key not in found]
            if max_new is not None and len(absent) > max_new:
                absent = []
            if absent:
                inserted = _insert_series(conn, absent, wanted, now)
                result.created = len(inserted)
                found.update({key: (sid, source) for key, sid in inserted.items()})
                raced = [key for key in absent if key not in inserted]
                if raced:  # another writer created them between our SELECT and INSERT
                    found.update(_select(conn, raced))
            self._known.update(found)
        adopt = []
        for key in wanted:
            if key not in self._known:
                continue
            series_id, owner = self._known[key]
            if owner == source:
                result.ids[key] = series_id
            elif adoptable is not None and adoptable(owner):
                adopt.append(key)
            else:
                result.foreign[key] = owner
        if adopt:
            conn.execute(
                update(Series)
                .where(Series.id.in_([self._known[key][0] for key in adopt]))
                .values(source=source)
            )
            for key in adopt:
                self._known[key] = (self._known[key][0], source)
                result.ids[key] = self._known[key][0]
        return result

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        """Drop ``keys`` from the cache (after a rolled-back transaction)."""
        for key in keys:
            self._known.pop(key, None)


def _select(conn: Connection, keys: Sequence[SeriesKey]) -> dict[SeriesKey, tuple[int, str]]:
    found: dict[SeriesKey, tuple[int, str]] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = [(key.metric, key.labels) for key in keys[start : start + KEYS_PER_QUERY]]
        query = select(Series.id, Series.metric, Series.labels, Series.source).where(
            tuple_(Series.metric, Series.labels).in_(chunk)
        )
        for series_id, metric, labels, owner in conn.execute(query):
            found[SeriesKey(metric, labels)] = (series_id, owner)
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
