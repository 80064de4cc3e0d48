"""Read-only queries on a user's own database, for the ``sql`` and ``predictions`` sources.

The sources may not import SQLAlchemy (only the store does), so the daemon hands them
an :class:`ExternalDatabase` made here. Any SQLAlchemy URL works once its driver is
installed. Every query runs with a time limit where the database supports one
(PostgreSQL's ``statement_timeout``, an interrupt on SQLite) and inside a transaction
that is rolled back. Failures are StoreErrors of one line with the password hidden.

A query is one statement: more (``COMMIT; BEGIN READ WRITE; DELETE …``) is refused
before anything is sent. The query cannot write either, whatever it says:

* PostgreSQL: sessions start with ``default_transaction_read_only`` and each query's
  transaction is made ``READ ONLY`` first; every statement goes through the extended
  protocol (psycopg prepares it), which refuses a second statement, so the query can
  neither end the read-only transaction nor start another.
* SQLite: the file is opened read-only by URI (``mode=ro``; a missing file is an error,
  not a new empty file) and an authorizer allows only reading, so ``ATTACH`` or
  ``VACUUM INTO`` cannot create a file and the driver refuses a second statement.
* MariaDB / MySQL (``mysql+pymysql://``): every session starts ``SET SESSION
  TRANSACTION READ ONLY`` (MariaDB 10.11 then refuses even ``CREATE TABLE … AS SELECT``
  and ``DROP``, which would otherwise commit implicitly) and with a server-side time limit
  (MariaDB's ``max_statement_time``, MySQL's ``max_execution_time``), backed by the
  driver's read timeout; a session setting dies with its connection (one per query).

On other databases only the one-statement rule holds: give anomon an account that can
only read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.pool import NullPool

from anomon.errors import StoreError
from anomon.store.engine import _parse_url, redact, translated
from anomon.store.statements import statement_count

Rows = tuple[list[str], list[Sequence[Any]]]


class ExternalDatabase:
    """One user database that queries are read from; ``timeout`` bounds each query."""

    def __init__(self, url: str, *, timeout: timedelta) -> None:
        self.label = redact(url)
        self._timeout = timeout
        self._deadline = float("inf")
        self._engine = _external_engine(url, timeout)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", self._guard_sqlite)
        elif self._engine.dialect.name in ("mysql", "mariadb"):
            event.listen(self._engine, "connect", self._guard_mysql)

    def query(self, sql: str, params: Mapping[str, Any]) -> Rows:
        """Run ``sql`` with the bind parameters among ``params`` that it uses.

        Returns the column names and the rows. ``:name`` marks a bind parameter; names
        in ``params`` that the query does not use are left out. Raises StoreError, also
        for a query of more than one statement and for one that tries to write.
        """
        statements = statement_count(sql, self._engine.dialect.name)
        if statements > 1:
            raise StoreError(
                f"query on {self.label}: expected one statement, got {statements} "
                "(separated by ';'); a source's query may only read"
            )
        statement = text(sql)
        wanted = set(statement.compile().params)
        bound = {name: value for name, value in params.items() if name in wanted}
        missing = wanted - set(bound)
        if missing:
            raise StoreError(
                f"query on {self.label} uses unknown parameters: {', '.join(sorted(missing))} "
                f"(expected some of: {', '.join(sorted(params))})"
            )
        self._deadline = time.monotonic() + self._timeout.total_seconds()
        try:
            with translated(self._engine, "querying"), self._engine.connect() as conn:
                if self._engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                result = conn.execute(statement, bound)
                columns = [str(name) for name in result.keys()]  # noqa: SIM118 - a Result, not a dict
                # the driver's own tuples: a Row object per row would double the cost
                rows = list(result.cursor.fetchall()) if result.returns_rows else []
                conn.rollback()
        finally:
            self._deadline = float("inf")
        return columns, rows

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    def _guard_mysql(self, dbapi_connection: Any, _record: Any) -> None:
        """Read-only sessions with a server-side time limit on MariaDB and MySQL."""
        seconds = max(self._timeout.total_seconds(), 0.001)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone()
            if "mariadb" in str(version).lower():
                cursor.execute(f"SET SESSION max_statement_time = {seconds:.3f}")
            else:  # MySQL: SELECTs only, in milliseconds; the driver's timeout backs it
                cursor.execute(f"SET SESSION max_execution_time = {int(seconds * 1000)}")
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
        finally:
            cursor.close()

    def _guard_sqlite(self, dbapi_connection: Any, _record: Any) -> None:
        # SQLite has no statement timeout: a progress handler aborts a query that
        # runs past the deadline (it then fails with "interrupted").
        dbapi_connection.set_progress_handler(
            lambda: int(time.monotonic() > self._deadline), 10_000
        )
        dbapi_connection.set_authorizer(_only_reads)


# what a query may do on SQLite: read tables, call functions, recurse in a CTE
_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# pragmas that take an argument and still only read (also as pragma_table_info(...))
_READ_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)


def _only_reads(action: int, arg1: str | None, arg2: str | None, *_: str | None) -> int:
    """SQLite authorizer: allow reading, deny the rest (writes, ATTACH, VACUUM INTO,
    transactions, pragmas that set a value)."""
    if action in _READS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or arg1 in _READ_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _external_engine(url: str, timeout: timedelta) -> Engine:
    parsed = _parse_url(url)
    seconds = max(1, int(timeout.total_seconds()))
    connect_args: dict[str, Any] = {}
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        limits = f"-c statement_timeout={seconds * 1000} -c default_transaction_read_only=on"
        given = parsed.query.get("options")  # e.g. a search_path in the URL: keep it
        given = given if isinstance(given, str) else " ".join(given or ())
        parsed = parsed.difference_update_query(["options"])
        connect_args = {
            "connect_timeout": seconds,
            "options": f"{given} {limits}".strip(),
            "prepare_threshold": 0,  # prepare every statement: the extended protocol
        }
    elif parsed.get_backend_name() == "sqlite":
        return _read_only_sqlite(parsed, timeout)
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        # the server's limit interrupts the query; the driver's read timeout is the
        # backstop for what it does not cover (MySQL limits SELECTs only)
        connect_args = {"connect_timeout": seconds, "read_timeout": seconds + 5}
    try:
        return create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreError(f"no driver for {redact(parsed)}: {exc}") from None


def _read_only_sqlite(parsed: URL, timeout: timedelta) -> Engine:
    """An engine whose connections open ``parsed``'s file read-only (``mode=ro``)."""
    uri = _read_only_uri(parsed)

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            uri, uri=True, timeout=timeout.total_seconds(), check_same_thread=False
        )

    # the URL only names the engine in messages: ``connect`` opens the file
    return create_engine(parsed.set(drivername="sqlite"), creator=connect, poolclass=NullPool)


# the URL's query keys that are SQLAlchemy's or sqlite3's, not SQLite URI parameters
_DRIVER_KEYS = frozenset({"uri", "mode", "timeout", "check_same_thread", "cached_statements",
                          "isolation_level", "detect_types", "factory"})  # fmt: skip


def _read_only_uri(parsed: URL) -> str:
    """The SQLite URI of ``parsed``'s database with ``mode=ro`` (a ``file:`` URI given
    in the URL keeps its other parameters, such as ``immutable=1``)."""
    database = parsed.database or ""
    if database.startswith("file:"):
        path, _, given = database.partition("?")
        kept = [f"{key}={value}" for key, value in parsed.query.items()
                if key not in _DRIVER_KEYS and isinstance(value, str)]  # fmt: skip
        kept += [part for part in given.split("&") if part and not part.startswith("mode=")]
        return f"{path}?{'&'.join([*kept, 'mode=ro'])}"
    if database in ("", ":memory:"):
        return "file::memory:?mode=ro"
    return f"file:{quote(database)}?mode=ro"  # %-escapes '?', '#' and '%' in the name


def open_database(url: str, timeout: timedelta) -> ExternalDatabase:
    """Open a user database for a source (the :data:`~anomon.sources.OpenDatabase` hook)."""
    return ExternalDatabase(url, timeout=timeout)
