"""A determined query cannot write through the ``sql`` or ``predictions`` source (issue 11,
point 13): on PostgreSQL ``COMMIT; BEGIN READ WRITE; DELETE …`` deleted rows, on SQLite
``ATTACH`` created a file. Real databases: a SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from anomon import store
from anomon.config import PredictionsSourceConfig, SqlSourceConfig
from anomon.errors import SourceError
from anomon.sources import PredictionsSource, SqlSource
from anomon.store import external

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ROWS = [("etl", 12.5), ("train", 300.0)]
# PostgreSQL's words for a write, or a way out, in a read-only transaction
REFUSED = (
    "in a read-only transaction|read-write mode must be set before any query"
    "|invalid transaction termination"
)


def _source(url: str, query: str) -> SqlSource:
    config = SqlSourceConfig.model_validate(
        {"name": "warehouse", "kind": "sql", "url": url, "query": query}
    )
    return SqlSource(config, open_database=store.open_database)


def _refused(url: str, query: str, match: str) -> None:
    source = _source(url, query)
    try:
        with pytest.raises(SourceError, match=match):
            source.collect(NOW)
    finally:
        source.close()


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (name TEXT, seconds REAL)")
        conn.executemany("INSERT INTO jobs VALUES (?, ?)", ROWS)
    return path


@pytest.fixture
def postgres(postgres_schema_url: str) -> Any:
    """A table ``jobs`` in a fresh schema; yields (SQLAlchemy URL, open psycopg connection)."""
    libpq = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (name text, seconds double precision)")
        conn.cursor().executemany("INSERT INTO jobs VALUES (%s, %s)", ROWS)
        yield postgres_schema_url, conn


def _jobs(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.mark.postgres
@pytest.mark.parametrize("bound", ["", " WHERE :since < :until"])
def test_postgresql_refuses_a_query_that_ends_its_read_only_transaction(
    postgres: Any, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    url, conn = postgres
    attack = (
        "COMMIT; BEGIN READ WRITE; DELETE FROM jobs; COMMIT; "
        f"SELECT 'x' AS metric, 1 AS value{bound}"
    )
    _refused(url, attack, r"expected one statement, got 5 \(separated by ';'\)")
    assert _jobs(conn) == 2
    # should the count ever be fooled, the server still runs one statement at most
    monkeypatch.setattr(external, "statement_count", lambda _sql, _dialect: 1)
    _refused(url, attack, "cannot insert multiple commands into a prepared statement")
    assert _jobs(conn) == 2


@pytest.mark.postgres
@pytest.mark.parametrize(
    "attack",
    [
        "WITH gone AS (DELETE FROM jobs RETURNING 1) SELECT 'x' AS metric, count(*) AS value "
        "FROM gone",
        "DO $$BEGIN SET LOCAL transaction_read_only = off; DELETE FROM jobs; END$$",
        "DO $$BEGIN COMMIT; SET TRANSACTION READ WRITE; DELETE FROM jobs; END$$",
        "SELECT 'x' AS metric, 1 AS value FROM (SELECT set_config('transaction_read_only', "
        "'off', true)) AS s",
    ],
)
def test_postgresql_refuses_a_single_statement_that_writes(postgres: Any, attack: str) -> None:
    url, conn = postgres
    _refused(url, attack, REFUSED)
    assert _jobs(conn) == 2


@pytest.mark.postgres
def test_postgresql_a_session_setting_does_not_outlive_its_query(postgres: Any) -> None:
    url, conn = postgres
    loosen = _source(
        url,
        "SELECT set_config('default_transaction_read_only', 'off', false) AS metric, 1 AS value",
    )
    assert [s.key.metric for s in loosen.collect(NOW)] == ["off"]
    loosen.close()
    _refused(url, "DELETE FROM jobs RETURNING 'x' AS metric, 1 AS value", REFUSED)
    assert _jobs(conn) == 2


@pytest.mark.parametrize(
    "attack",
    [
        "ATTACH DATABASE '{evil}' AS evil",
        "ATTACH DATABASE 'file:{evil}?mode=rwc' AS evil",
        "VACUUM INTO '{evil}'",
        "DELETE FROM jobs RETURNING 'x' AS metric, 1 AS value",
        "CREATE TEMP TABLE t AS SELECT 'x' AS metric, 1 AS value",
        "PRAGMA query_only = OFF",
        "BEGIN IMMEDIATE",
    ],
)
def test_sqlite_refuses_attach_and_every_write(
    sqlite_file: Path, tmp_path: Path, attack: str
) -> None:
    evil = tmp_path / "evil.db"
    denied = "failed: (not authorized|authorization denied)$"
    _refused(f"sqlite:///{sqlite_file}", attack.format(evil=evil), denied)
    assert not evil.exists()
    with sqlite3.connect(sqlite_file) as conn:
        assert _jobs(conn) == 2


def test_sqlite_opens_the_file_read_only_even_when_the_url_asks_for_more(
    sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///file:{sqlite_file}?mode=rwc&uri=true"
    read = _source(url, "SELECT name AS metric, seconds AS value FROM jobs")
    assert sorted(s.value for s in read.collect(NOW)) == [12.5, 300.0]
    read.close()
    # with the authorizer off, the file's read-only mode still refuses the write
    monkeypatch.setattr(external, "_only_reads", lambda *_: sqlite3.SQLITE_OK)
    _refused(url, "DELETE FROM jobs RETURNING 'x' AS metric, 1 AS value", "readonly database")
    with sqlite3.connect(sqlite_file) as conn:
        assert _jobs(conn) == 2


def test_sqlite_refuses_two_statements_and_keeps_semicolons_in_literals_and_comments(
    sqlite_file: Path,
) -> None:
    url = f"sqlite:///{sqlite_file}"
    _refused(url, "SELECT 'x' AS metric, 1 AS value; DELETE FROM jobs", "got 2")
    _refused(url, "SELECT 'x' AS metric, 1 AS value;\n-- a note\nDELETE FROM jobs;", "got 2")
    fine = _source(
        url,
        "SELECT 'a;b' AS metric, count(*) AS value /* ; */ FROM jobs -- counted; all\n;",
    )
    (sample,) = fine.collect(NOW)
    assert (sample.key.metric, sample.value) == ("a;b", 2.0)
    fine.close()
    with sqlite3.connect(sqlite_file) as conn:
        assert _jobs(conn) == 2


def test_the_predictions_source_refuses_the_same_attacks(sqlite_file: Path) -> None:
    config = PredictionsSourceConfig.model_validate(
        {
            "name": "quality",
            "kind": "predictions",
            "url": f"sqlite:///{sqlite_file}",
            "query": "SELECT * FROM jobs WHERE 0; DELETE FROM jobs",
        }
    )
    source = PredictionsSource(config, open_database=store.open_database, clock=lambda: NOW)
    with pytest.raises(SourceError, match="expected one statement, got 2"):
        source.collect(NOW)
    source.close()
    with sqlite3.connect(sqlite_file) as conn:
        assert _jobs(conn) == 2


MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306


@pytest.fixture
def mariadb() -> Iterator[tuple[str, Any, str]]:
    """A fresh table of ``jobs`` in the ``test`` database of the MariaDB (or MySQL) this
    kind of machine runs on 127.0.0.1:3306 (root, empty password); skipped where there
    is none. Yields (SQLAlchemy URL, an autocommit pymysql connection, the table)."""
    pymysql = pytest.importorskip("pymysql", reason="the mysql extra (pymysql) is not installed")
    try:
        conn = pymysql.connect(
            host=MARIADB_HOST,
            port=MARIADB_PORT,
            user="root",
            password="",
            database="test",
            connect_timeout=3,
            autocommit=True,
        )
    except pymysql.MySQLError as exc:
        pytest.skip(f"no MariaDB / MySQL answers on {MARIADB_HOST}:{MARIADB_PORT}: {exc}")
    table = f"jobs_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (name VARCHAR(20), seconds DOUBLE)")
        cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", ROWS)
    try:
        yield f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/test", conn, table
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}, {table}_probe")
        conn.close()


def _rows_in(conn: Any, table: str) -> int:
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return int(cursor.fetchone()[0])


def test_mariadb_is_read_through_the_sql_source(mariadb: tuple[str, Any, str]) -> None:
    url, _, table = mariadb
    source = _source(url, f"SELECT name AS metric, seconds AS value FROM {table}")
    try:
        got = {s.key.metric: s.value for s in source.collect(NOW)}
    finally:
        source.close()
    assert got == dict(ROWS)


@pytest.mark.parametrize(
    "attack",
    [
        "CREATE TABLE {table}_probe AS SELECT * FROM {table}",  # the issue's: it ran
        "DROP TABLE {table}",
        "DELETE FROM {table}",
        "UPDATE {table} SET seconds = 0",
    ],
)
def test_mariadb_refuses_a_statement_that_writes(
    mariadb: tuple[str, Any, str], attack: str
) -> None:
    url, conn, table = mariadb
    _refused(url, attack.format(table=table), "Cannot execute statement in a READ ONLY")
    assert _rows_in(conn, table) == 2
    with conn.cursor() as cursor:
        assert cursor.execute(f"SHOW TABLES LIKE '{table}_probe'") == 0


def test_mariadb_queries_stop_at_the_sources_timeout(mariadb: tuple[str, Any, str]) -> None:
    """The issue's case: SELECT SLEEP(15) with timeout = "2s" ran 15.1 s and was recorded
    as a success. Now the server interrupts it at the limit and the source fails."""
    url, _, _ = mariadb
    config = SqlSourceConfig.model_validate(
        {
            "name": "warehouse",
            "kind": "sql",
            "url": url,
            "timeout": "2s",
            "query": "SELECT 'x' AS metric, SLEEP(15) AS value",
        }
    )
    source = SqlSource(config, open_database=store.open_database)
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"max_statement_time|maximum statement execution"):
            source.collect(NOW)
    finally:
        source.close()
    assert time.monotonic() - started < 6
