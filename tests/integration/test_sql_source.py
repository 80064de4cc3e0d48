"""The sql source against real databases: a SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from anomon import store
from anomon.config import SqlSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.service.jobs import CollectJob
from anomon.sources import PartialCollection, SqlSource
from tests.conftest import run_cli

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _config(url: str, query: str, **extra: object) -> SqlSourceConfig:
    return SqlSourceConfig.model_validate(
        {"name": "warehouse", "kind": "sql", "url": url, "query": query, **extra}
    )


def _source(url: str, query: str, **extra: object) -> SqlSource:
    return SqlSource(_config(url, query, **extra), open_database=store.open_database)


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (name TEXT, ts INTEGER, seconds REAL, region TEXT)")
        conn.executemany(
            "INSERT INTO jobs VALUES (?, ?, ?, ?)",
            [
                ("etl", int(NOW.timestamp()) - 600, 12.5, "eu"),
                ("etl", int(NOW.timestamp()) - 60, 14.0, "eu"),
                ("train", int(NOW.timestamp()) - 30, 300.0, "us"),
            ],
        )
    return f"sqlite:///{path}"


def test_it_turns_rows_into_samples_with_labels_and_times(warehouse: str) -> None:
    source = _source(
        warehouse,
        "SELECT 'job_seconds' AS metric, seconds AS value, ts, name AS job, region FROM jobs",
        labels={"team": "ml"},
    )
    samples = source.collect(NOW)
    got = {(s.key, s.ts): s.value for s in samples}
    key = SeriesKey.of("job_seconds", {"job": "etl", "region": "eu", "team": "ml"})
    assert got[key, int(NOW.timestamp()) - 60] == 14.0
    assert len(samples) == 3
    source.close()


def test_it_stamps_rows_without_ts_with_the_collection_time(warehouse: str) -> None:
    source = _source(warehouse, "SELECT 'jobs' AS metric, count(*) AS value FROM jobs")
    (sample,) = source.collect(NOW)
    assert (sample.value, sample.ts) == (3.0, int(NOW.timestamp()))


def test_it_passes_since_and_until_and_moves_since_forward(warehouse: str) -> None:
    source = _source(
        warehouse,
        "SELECT 'recent' AS metric, count(*) AS value FROM jobs WHERE ts >= :since AND ts < :until",
        interval="2m",
    )
    (first,) = source.collect(NOW)  # the first looks one interval back: two rows
    assert first.value == 2.0
    source.saved()  # stored: the next range starts where this one ended
    (second,) = source.collect(NOW + timedelta(minutes=1))  # since = NOW: none
    assert second.value == 0.0


def test_it_names_rows_it_skips_and_keeps_the_rest(warehouse: str) -> None:
    source = _source(
        warehouse,
        "SELECT 'x' AS metric, 1.5 AS value UNION ALL SELECT 'y', 'abc' "
        "UNION ALL SELECT NULL, 2 UNION ALL SELECT 'x', 9",
    )
    with pytest.raises(PartialCollection) as caught:
        source.collect(NOW)
    message = str(caught.value)
    assert "row 2: value is not a number: 'abc'" in message
    assert "row 3: metric is not a name" in message
    assert "row 4: duplicate of x" in message
    assert [s.value for s in caught.value.samples] == [9.0]


def test_it_refuses_a_query_without_metric_and_value_columns(warehouse: str) -> None:
    source = _source(warehouse, "SELECT name, seconds FROM jobs")
    with pytest.raises(SourceError, match="must return columns metric and value"):
        source.collect(NOW)


def test_it_reports_a_broken_query_in_one_line_without_the_password(
    tmp_path: Path, warehouse: str
) -> None:
    source = _source(
        "postgresql://reader:hunter2@127.0.0.1:1/nowhere", "SELECT 'a' AS metric, 1 AS value"
    )
    with pytest.raises(SourceError) as caught:
        source.collect(NOW)
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)
    # libpq's other form: the password a query parameter (sslpassword too)
    in_query = _source(
        "postgresql:///nowhere?host=127.0.0.1&port=1&user=reader&password=hunter3"
        "&sslpassword=hunter4",
        "SELECT 'a' AS metric, 1 AS value",
    )
    with pytest.raises(SourceError) as caught:
        in_query.collect(NOW)
    message = str(caught.value)
    assert "hunter3" not in message and "hunter4" not in message
    assert "host=127.0.0.1&port=1&user=reader&password=***&sslpassword=***" in message
    sqlite = _source(warehouse, "SELECT * FROM missing_table")
    with pytest.raises(SourceError, match="no such table: missing_table"):
        sqlite.collect(NOW)
    missing = _source(f"sqlite:///{tmp_path / 'x.db'}", "SELECT 'a' AS metric, 1 AS value")
    with pytest.raises(SourceError, match=r"x\.db failed: unable to open database file"):
        missing.collect(NOW)
    assert not (tmp_path / "x.db").exists()  # read-only: a wrong path is not a new file


def test_it_stops_a_query_that_runs_past_its_timeout(warehouse: str) -> None:
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT 'n' AS metric, count(*) AS value FROM n"
    )
    source = _source(warehouse, slow, timeout="300ms")
    started = datetime.now(UTC)
    with pytest.raises(SourceError, match="interrupted"):
        source.collect(NOW)
    assert datetime.now(UTC) - started < timedelta(seconds=5)


def test_it_never_writes_to_the_database(warehouse: str) -> None:
    source = _source(
        warehouse, "DELETE FROM jobs RETURNING 'deleted' AS metric, 1 AS value, rowid AS row"
    )
    with pytest.raises(SourceError, match="not authorized"):  # more: test_sql_read_only.py
        source.collect(NOW)
    with sqlite3.connect(warehouse.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (3,)


@pytest.mark.postgres
def test_it_reads_postgresql_and_refuses_writes_there(postgres_schema_url: str) -> None:
    import psycopg

    libpq = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("CREATE TABLE lag (topic text, seconds double precision, at timestamptz)")
        conn.execute("INSERT INTO lag VALUES ('orders', 4.5, '2026-11-22T11:59:00Z')")
    source = _source(
        postgres_schema_url,
        "SELECT 'lag_seconds' AS metric, seconds AS value, at AS ts, topic FROM lag",
    )
    (sample,) = source.collect(NOW)
    assert (sample.value, sample.ts) == (4.5, int(NOW.timestamp()) - 60)
    assert sample.key == SeriesKey.of("lag_seconds", {"topic": "orders"})
    writer = _source(postgres_schema_url, "DELETE FROM lag RETURNING 'x' AS metric, 1 AS value")
    with pytest.raises(SourceError, match="read-only"):
        writer.collect(NOW)


def test_backfill_stores_a_sql_sources_history_once_and_explains_bad_requests(
    tmp_path: Path, database_url: str
) -> None:
    warehouse = tmp_path / "warehouse.db"
    now = int(datetime.now(UTC).timestamp())
    with sqlite3.connect(warehouse) as conn:
        conn.execute("CREATE TABLE loads (ts INTEGER, n INTEGER)")
        conn.executemany(
            "INSERT INTO loads VALUES (?, ?)", [(now - h * 3600 - 1800, h) for h in range(1, 73)]
        )
    config = tmp_path / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        '[[sources]]\nname = "loads"\nkind = "sql"\n'
        f'url = "sqlite:///{warehouse}"\n'
        "query = \"SELECT 'rows_loaded' AS metric, n AS value, ts FROM loads "
        'WHERE ts >= :since AND ts < :until"\n'
        '[[sources]]\nname = "host"\nkind = "system"\n',
        encoding="utf-8",
    )
    first = run_cli("backfill", "--source", "loads", "--since", "2d", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert "backfill loads: 2 chunk(s), 47 new point(s), 1 new series, 0 failed" in first.stdout
    again = run_cli("backfill", "--source", "loads", "--since", "2d", "-c", str(config))
    assert "0 new point(s)" in again.stdout
    engine = store.open_engine(database_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one() == 47
    engine.dispose()
    unknown = run_cli("backfill", "--source", "nope", "--since", "1d", "-c", str(config))
    assert unknown.returncode == 2
    assert "Error: no source named 'nope' in the config (sources: loads, host)" in unknown.stderr
    system = run_cli("backfill", "--source", "host", "--since", "1d", "-c", str(config))
    assert system.returncode == 2
    assert "of kind 'system', which cannot backfill" in system.stderr


def _stored(engine: store.Engine) -> list[tuple[str, int, float]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT series.metric, samples.ts, samples.value FROM samples "
                "JOIN series ON series.id = samples.series_id ORDER BY 1, 2"
            )
        )
        return [(str(m), int(t), float(v)) for m, t, v in rows]


class _Gated(SqlSource):
    """A sql source whose collections wait for ``gate`` first (a query slow to convert)."""

    def __init__(self, config: SqlSourceConfig) -> None:
        super().__init__(config, open_database=store.open_database)
        self.gate = threading.Event()

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        self.gate.wait(10)
        return super().collect_range(start, end)


def test_a_collection_abandoned_at_its_deadline_is_read_again(
    warehouse: str, engine: store.Engine
) -> None:
    config = _config(
        warehouse,
        "SELECT 'job_seconds' AS metric, seconds AS value, ts, name AS job "
        "FROM jobs WHERE ts >= :since AND ts < :until",
        interval="2m",
        timeout="1s",
    )
    source = _Gated(config)
    clock = [NOW]
    job = CollectJob(
        source, engine, store.SeriesRegistry(), deadline=config.timeout, clock=lambda: clock[0]
    )
    try:
        job()  # [NOW - 2m, NOW) has two rows; the collection outlives its deadline
        (abandoned,) = store.last_collections(engine, "warehouse")
        assert abandoned.error == "timed out after 1s (collection abandoned)"
        source.gate.set()  # it finishes late: its rows are thrown away
        assert job._straggler is not None
        job._straggler.join(10)
        assert _stored(engine) == []
        clock[0] = NOW + timedelta(minutes=1)
        job.backoff.skip = 0
        job()  # reads [NOW - 2m, NOW + 1m): the abandoned range again
        assert _stored(engine) == [
            ("job_seconds", int(NOW.timestamp()) - 60, 14.0),
            ("job_seconds", int(NOW.timestamp()) - 30, 300.0),
        ]
        clock[0] = NOW + timedelta(minutes=2)
        job()  # [NOW + 1m, NOW + 2m): nothing new, and nothing read twice
        assert len(_stored(engine)) == 2
        assert store.last_collections(engine, "warehouse")[0].error is None
    finally:
        source.close()


def test_a_partial_collections_range_is_not_read_again(
    warehouse: str, engine: store.Engine
) -> None:
    source = _source(  # a count, and a second row that is no number: the count is stored
        warehouse,
        "SELECT 'recent' AS metric, count(*) AS value FROM jobs "
        "WHERE ts >= :since AND ts < :until UNION ALL SELECT 'bad', 'abc'",
        interval="2m",
    )
    clock = [NOW]
    job = CollectJob(source, engine, store.SeriesRegistry(), clock=lambda: clock[0])
    try:
        job()
        clock[0] = NOW + timedelta(minutes=1)
        job()  # since = NOW: no row is counted twice (it was 2 again before)
        assert _stored(engine) == [
            ("recent", int(NOW.timestamp()), 2.0),
            ("recent", int(NOW.timestamp()) + 60, 0.0),
        ]
        assert "row 2: value is not a number: 'abc'" in (
            store.last_collections(engine, "warehouse")[0].error or ""
        )
    finally:
        source.close()
