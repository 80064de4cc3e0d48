"""Ingest benchmark: anomon's sample write path against the raw limits of each database.

Inserts 1,000,000 samples (1,000 series x 1,000 timestamps) in transactions of 10,000
rows, in the order the daemon writes them (every series at one timestamp, then the
next), through :func:`anomon.store.insert_samples`; and the same rows through raw
``sqlite3.executemany`` into an equivalent table (same column types, same clustered
key, ``ON CONFLICT DO NOTHING``) and through PostgreSQL ``COPY``.

Prints readable figures, then one JSON line with the keys named in issue #2.
PostgreSQL comes from ANOMON_TEST_DATABASE_URL, else 127.0.0.1:5432 (database
``test``), else one started by ``scripts/postgres start``.

    python benchmarks/ingest.py [--series 1000] [--points 1000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

from anomon import store
from anomon.model import SeriesInfo, SeriesKey

ROOT = Path(__file__).resolve().parent.parent
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def make_batches(series_ids: np.ndarray, points: int, batch: int) -> list[Batch]:
    """Return the samples as (ids, ts, values) arrays in daemon order, cut into batches."""
    n = len(series_ids)
    ts = np.repeat(1_700_000_000 + 15 * np.arange(points, dtype=np.int64), n)
    ids = np.tile(series_ids, points)
    rng = np.random.default_rng(7)
    values = np.round(rng.normal(50.0, 10.0, size=ts.size), 3)
    return [
        (ids[i : i + batch], ts[i : i + batch], values[i : i + batch])
        for i in range(0, ts.size, batch)
    ]


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def write_through_anomon(engine: store.Engine, args: argparse.Namespace) -> tuple[float, int]:
    """Create the series, time the batched writes through the store; return (seconds, rows)."""
    batches = make_batches(create_series(engine, args.series), args.points, args.batch)

    def run() -> None:
        for ids, ts, vals in batches:
            with engine.begin() as conn:
                store.insert_samples(conn, ids, ts, vals)

    return timed(run), _count(engine)


def anomon_sqlite(folder: Path, args: argparse.Namespace) -> tuple[float, int, float]:
    """Return (seconds, rows, bytes per sample) for anomon's store on a SQLite file."""
    path = folder / "anomon.db"
    engine = store.open_engine(f"sqlite:///{path}")
    store.ensure_schema(engine, migrate=False)
    empty = _file_size(path)
    seconds, rows = write_through_anomon(engine, args)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return seconds, rows, (_file_size(path) - empty) / rows


def raw_sqlite(folder: Path, args: argparse.Namespace) -> tuple[float, int]:
    """Return (seconds, rows) for plain sqlite3.executemany into an equivalent table."""
    db = sqlite3.connect(folder / "raw.db")
    db.execute("PRAGMA page_size = 8192")  # as anomon's engine sets on a new file
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(
        "CREATE TABLE samples (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
        "value FLOAT NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
    )
    batches = make_batches(np.arange(1, args.series + 1), args.points, args.batch)
    sql = "INSERT INTO samples (series_id, ts, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"

    def run() -> None:
        for ids, ts, vals in batches:
            with db:
                db.executemany(sql, zip(ids.tolist(), ts.tolist(), vals.tolist(), strict=True))

    seconds = timed(run)
    rows = db.execute("SELECT count(*) FROM samples").fetchone()[0]
    db.close()
    return seconds, rows


def anomon_postgres(url: str, args: argparse.Namespace) -> tuple[float, int]:
    """Return (seconds, rows) for anomon's store on PostgreSQL, in a scratch schema."""
    with scratch_schema(url) as schema_url:
        engine = store.open_engine(schema_url)
        store.ensure_schema(engine, migrate=False)
        seconds, rows = write_through_anomon(engine, args)
        engine.dispose()
    return seconds, rows


def copy_postgres(url: str, args: argparse.Namespace) -> tuple[float, int]:
    """Return (seconds, rows) for PostgreSQL binary COPY into an equivalent table."""
    batches = make_batches(np.arange(1, args.series + 1), args.points, args.batch)
    with scratch_schema(url) as schema_url, psycopg.connect(_libpq(schema_url)) as db:
        db.execute(
            "CREATE TABLE samples (series_id integer NOT NULL, ts bigint NOT NULL, "
            "value double precision NOT NULL, PRIMARY KEY (series_id, ts))"
        )
        db.commit()

        def run() -> None:
            for ids, ts, vals in batches:
                with (
                    db.transaction(),
                    db.cursor() as cur,
                    cur.copy(
                        "COPY samples (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.write(binary_copy(ids, ts, vals))

        seconds = timed(run)
        rows = db.execute("SELECT count(*) FROM samples").fetchone()[0]  # type: ignore[index]
    return seconds, rows


def binary_copy(ids: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> bytes:
    """The fastest COPY input we know: binary format built by numpy in one pass."""
    rows = np.empty(
        ids.size,
        dtype=[
            ("n", ">i2"),
            ("l1", ">i4"),
            ("id", ">i4"),
            ("l2", ">i4"),
            ("ts", ">i8"),
            ("l3", ">i4"),
            ("v", ">f8"),
        ],
    )
    rows["n"], rows["l1"], rows["l2"], rows["l3"] = 3, 4, 8, 8
    rows["id"], rows["ts"], rows["v"] = ids, ts, vals
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


def create_series(engine: store.Engine, count: int) -> np.ndarray:
    registry = store.SeriesRegistry()
    wanted = {
        SeriesKey.of("bench", {"i": str(i)}): SeriesInfo("bench", "bench") for i in range(count)
    }
    with engine.begin() as conn:
        found = registry.resolve(conn, wanted, source="bench", now=datetime.now(UTC))
    return np.array(sorted(found.ids.values()), dtype=np.int64)


def _count(engine: store.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one())


def _file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class scratch_schema:  # noqa: N801 - used as a context manager, reads like contextlib's
    """Create a throwaway schema and yield a URL whose search_path points at it."""

    def __init__(self, url: str) -> None:
        self.url, self.name = url, f"bench_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        with psycopg.connect(_libpq(self.url), autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(_libpq(self.url), autocommit=True) as db:
            db.execute(f"DROP SCHEMA {self.name} CASCADE")


def postgres_url() -> Iterator[str | None]:
    """Yield a PostgreSQL URL: the env's, the local server's, or one started for the run."""
    url = os.environ.get("ANOMON_TEST_DATABASE_URL")
    if url:
        yield url
        return
    local = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        psycopg.connect(local, connect_timeout=3).close()
        yield local
        return
    except psycopg.OperationalError:
        pass
    script = ROOT / "scripts" / "postgres"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        print(f"PostgreSQL: could not start one: {started.stderr.strip()}")
        yield None
        return
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(script), "stop"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    total = args.series * args.points
    print(f"ingest: {total:,} samples, {args.series:,} series, {args.batch:,} rows per transaction")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        a_s, a_rows, per_sample = anomon_sqlite(folder, args)
        r_s, r_rows = raw_sqlite(folder, args)
    assert a_rows == r_rows == total, (a_rows, r_rows, total)
    result = {
        "sqlite_rows_per_s": round(total / a_s),
        "sqlite_raw_rows_per_s": round(total / r_s),
        "sqlite_ratio": round(r_s / a_s, 3),
        "sqlite_bytes_per_sample": round(per_sample, 2),
        "postgres_rows_per_s": None,
        "postgres_copy_rows_per_s": None,
        "postgres_ratio": None,
    }
    print(f"SQLite  anomon  {result['sqlite_rows_per_s']:>12,} rows/s  ({a_s:.2f} s)")
    print(f"SQLite  raw     {result['sqlite_raw_rows_per_s']:>12,} rows/s  ({r_s:.2f} s)")
    print(f"SQLite  ratio   {result['sqlite_ratio']:>12.3f}  (target >= 0.8)")
    print(f"SQLite  size    {per_sample:>12.2f} bytes per stored sample  (target <= 25)")
    for url in postgres_url():
        if url is None:
            break
        p_s, p_rows = anomon_postgres(url, args)
        c_s, c_rows = copy_postgres(url, args)
        assert p_rows == c_rows == total, (p_rows, c_rows, total)
        result["postgres_rows_per_s"] = round(total / p_s)
        result["postgres_copy_rows_per_s"] = round(total / c_s)
        result["postgres_ratio"] = round(c_s / p_s, 3)
        print(f"Postgres anomon {result['postgres_rows_per_s']:>12,} rows/s  ({p_s:.2f} s)")
        print(f"Postgres COPY   {result['postgres_copy_rows_per_s']:>12,} rows/s  ({c_s:.2f} s)")
        print(f"Postgres ratio  {result['postgres_ratio']:>12.3f}  (target >= 0.5)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
