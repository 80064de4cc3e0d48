"""Sample values: batched, idempotent writes and batched history reads.

The write path is the hot one (every collection of every source), so it skips the ORM
and SQL compilation and works on whole arrays:

* SQLite: one prepared ``INSERT … ON CONFLICT DO NOTHING`` run by ``executemany``.
* PostgreSQL: the batch is encoded once, by numpy, in ``COPY``'s binary format and
  copied straight into ``samples`` inside a savepoint — the common case, new points
  only, runs at ``COPY`` speed. If any point is already stored the savepoint is rolled
  back and the same bytes go through a temporary table and ``INSERT … ON CONFLICT DO
  NOTHING``, so re-ingesting stays a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

SERIES_PER_QUERY = 500  # history reads: one query per this many series

_SQLITE_INSERT = (
    "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_SQLITE_REPLACE = (
    "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?) "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value "
    "WHERE samples.value != excluded.value"
)
_PG_ON_CONFLICT = {
    False: "ON CONFLICT DO NOTHING",
    True: "ON CONFLICT (series_id, ts) DO UPDATE SET value = EXCLUDED.value "
    "WHERE samples.value IS DISTINCT FROM EXCLUDED.value",
}

# PostgreSQL binary COPY: signature, flags, header extension length; rows; trailer (-1).
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PG_COPY_TRAILER = b"\xff\xff"
_PG_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("id_len", ">i4"),
        ("series_id", ">i4"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
    ]
)
_PG_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS anomon_samples_stage "
    "(series_id integer, ts bigint, value double precision) ON COMMIT DELETE ROWS"
)


class Points(NamedTuple):
    """The stored points of one series, oldest first: ``ts`` int64 seconds, ``values`` float64."""

    ts: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


def insert_samples(
    conn: Connection,
    series_ids: npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    replace: bool = False,
) -> int:
    """Insert aligned arrays of samples; return how many were new (or, with ``replace``,
    new or changed).

    ``ts`` is whole seconds since the Unix epoch (UTC). Points whose (series_id, ts) is
    already stored are skipped, so re-ingesting is a no-op; with ``replace`` their
    value is overwritten instead (a recomputed window). Runs in the caller's
    transaction. Raises ValueError for misaligned arrays or non-finite values.
    """
    ids = np.asarray(series_ids, dtype=np.int64)
    times = np.asarray(ts, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if not ids.shape == times.shape == vals.shape or ids.ndim != 1:
        raise ValueError(
            "series_ids, ts and values must be aligned 1-D arrays, got shapes "
            f"{ids.shape}, {times.shape}, {vals.shape}"
        )
    if not np.isfinite(vals).all():
        raise ValueError("sample values must be finite, got NaN or infinity")
    if ids.size == 0:
        return 0
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        return _copy_postgres(raw, _pg_copy_bytes(ids, times, vals), replace=replace)
    cursor = raw.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(
            _SQLITE_REPLACE if replace else _SQLITE_INSERT,
            zip(ids.tolist(), times.tolist(), vals.tolist(), strict=True),
        )
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _pg_copy_bytes(ids: np.ndarray, times: np.ndarray, vals: np.ndarray) -> bytes:
    """Encode the rows in PostgreSQL's binary COPY format, all at once."""
    rows = np.empty(ids.size, dtype=_PG_ROW)
    rows["fields"], rows["id_len"], rows["ts_len"], rows["value_len"] = 3, 4, 8, 8
    rows["series_id"], rows["ts"], rows["value"] = ids, times, vals
    return _PG_COPY_HEADER + rows.tobytes() + _PG_COPY_TRAILER


def _copy_postgres(raw: Any, payload: bytes, *, replace: bool) -> int:
    """COPY new points straight in; fall back to a staged ON CONFLICT insert on a duplicate."""
    import psycopg  # the postgres extra; only reached on a PostgreSQL engine

    try:
        with raw.transaction(), raw.cursor() as cursor:
            with cursor.copy(
                "COPY samples (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)
            return int(cursor.rowcount)
    except psycopg.errors.UniqueViolation:
        pass
    with raw.cursor() as cursor:
        cursor.execute(_PG_STAGE)
        with cursor.copy("COPY anomon_samples_stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(payload)
        cursor.execute(
            f"INSERT INTO samples SELECT * FROM anomon_samples_stage {_PG_ON_CONFLICT[replace]}"
        )
        inserted = int(cursor.rowcount)
        cursor.execute("TRUNCATE anomon_samples_stage")
        return inserted


def read_history(
    conn: Connection,
    series_ids: Sequence[int],
    *,
    since: int | None = None,
    until: int | None = None,
) -> dict[int, Points]:
    """Return the points of every series in ``series_ids`` with ``since <= ts < until``.

    Times are epoch seconds. One query per :data:`SERIES_PER_QUERY` series, never one
    per series. Series with no points in the range map to empty arrays.
    """
    history = dict.fromkeys(series_ids, _EMPTY)
    unique = sorted(set(series_ids))
    for start in range(0, len(unique), SERIES_PER_QUERY):
        rows = _fetch(conn, unique[start : start + SERIES_PER_QUERY], since, until)
        history.update(split_by_series(rows))
    return history


_EMPTY = Points(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


def _fetch(
    conn: Connection, chunk: Sequence[int], since: int | None, until: int | None
) -> list[tuple[int, int, float]]:
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    where = [f"series_id IN ({', '.join([mark] * len(chunk))})"]
    params: list[int] = list(chunk)
    if since is not None:
        where.append(f"ts >= {mark}")
        params.append(since)
    if until is not None:
        where.append(f"ts < {mark}")
        params.append(until)
    sql = (
        f"SELECT series_id, ts, value FROM samples WHERE {' AND '.join(where)} "
        "ORDER BY series_id, ts"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def split_by_series(rows: list[tuple[int, int, float]]) -> dict[int, Points]:
    """Split rows sorted by (series_id, ts) into one Points per series."""
    if not rows:
        return {}
    table = np.array(rows, dtype=np.float64)  # ids and epoch seconds are exact in float64
    ids = table[:, 0].astype(np.int64)
    times = table[:, 1].astype(np.int64)
    vals = np.ascontiguousarray(table[:, 2])
    starts = np.flatnonzero(np.diff(ids, prepend=ids[0] - 1))
    ends = np.append(starts[1:], ids.size)
    return {int(ids[a]): Points(times[a:b], vals[a:b]) for a, b in zip(starts, ends, strict=True)}
