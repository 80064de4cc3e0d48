"""Engines for SQLite (the embedded default) and PostgreSQL, and database error translation.

:func:`open_engine` is the one place an engine is made. SQLite gets WAL, foreign keys,
``busy_timeout`` and ``synchronous=NORMAL`` (durable against a process crash, the
daemon's failure mode) on every connection; ``postgresql://`` URLs use psycopg 3.
:func:`translated` turns driver errors into :class:`~anomon.errors.StoreError` with
one readable line and the password hidden.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from anomon.errors import StoreError


def open_engine(
    url: str,
    *,
    busy_timeout: timedelta = timedelta(seconds=5),
    statement_timeout: timedelta | None = None,
) -> Engine:
    """Create an engine for ``url``; nothing connects until first use.

    PostgreSQL connections give up connecting after CONNECT_TIMEOUT and, with
    ``statement_timeout``, cancel any statement that runs longer (so a lock held
    elsewhere cannot hang a job forever). Raises StoreError for a malformed URL, a
    missing driver or a SQLite file whose directory does not exist.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT}
        )
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreError(
            f"no driver for {redact(parsed)}: install anomon[postgres] ({exc})"
        ) from None
    if statement_timeout is not None:
        _limit_statements(engine, statement_timeout)
    return engine


CONNECT_TIMEOUT = 10  # seconds a new PostgreSQL connection may take


def _limit_statements(engine: Engine, timeout: timedelta) -> None:
    """Set ``statement_timeout`` on every new PostgreSQL connection of ``engine``.

    A SET, not the ``options`` connect parameter: the URL may carry its own options
    (a search_path), and poolers refuse unknown startup parameters.
    """
    milliseconds = max(1, int(timeout.total_seconds() * 1000))

    @event.listens_for(engine, "connect")
    def _timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET statement_timeout = {milliseconds}")
        finally:
            cursor.close()
        dbapi_connection.commit()  # a rolled-back SET would be undone


def check_writable(engine: Engine) -> None:
    """Raise StoreError unless the database accepts writes (file modes, read-only replicas).

    Call it once the schema exists (it touches ``alembic_version`` on SQLite).
    """
    with translated(engine, "checking that the database is writable"), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # a write that changes nothing and is rolled back; a read-only file refuses it
            # (taking the write lock alone succeeds in WAL mode, so it proves nothing)
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            conn.rollback()
        elif conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
            raise StoreError(f"database {database_label(engine)} is read-only (a standby?)")


# query parameters of a database URL shown in messages; every other one's value is
# hidden: libpq takes ``?password=`` (and ``sslpassword``), other drivers tokens and keys
# under names of their own
SHOWN_QUERY_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "sslmode",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
        "charset",
        "mode",
        "uri",
        "unix_socket",
    }
)


def redact(url: str | URL) -> str:
    """Render a database URL with its password hidden, in its authority and its query:
    the value of every query parameter not in :data:`SHOWN_QUERY_KEYS` is ``***``."""
    parsed = url if isinstance(url, URL) else _parse_url(url)
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    query = [
        f"{key}={value if key.lower() in SHOWN_QUERY_KEYS else '***'}"
        for key, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return shown + ("?" + "&".join(query) if query else "")


def database_label(engine: Engine) -> str:
    """Return the engine's URL with the password hidden, for messages."""
    return redact(engine.url)


@contextmanager
def translated(engine: Engine, doing: str) -> Iterator[None]:
    """Re-raise database errors met while ``doing`` as one-line StoreErrors."""
    try:
        yield
    except DBAPIError as exc:
        raise StoreError(f"{doing} on {database_label(engine)} failed: {_reason(exc)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"{doing} on {database_label(engine)} failed: {exc}") from exc


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number ("[::1")
        raise StoreError(f"not a valid database URL: {url.split('@')[-1]!r}") from None


def _sqlite_engine(url: URL, busy_timeout: timedelta) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StoreError(
                f"cannot open SQLite database {database}: folder {folder} does not exist"
            )
    engine = create_engine(url, connect_args={"timeout": busy_timeout.total_seconds()})
    timeout_ms = int(busy_timeout.total_seconds() * 1000)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # Only takes effect on a new, empty file: 8 KiB pages pack the clustered
            # samples key ~7% tighter than the 4 KiB default.
            cursor.execute("PRAGMA page_size = 8192")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return engine


def _reason(exc: DBAPIError) -> str:
    """Return the driver's own message, first line only, with a hint where one helps."""
    original = exc.orig
    message = str(original).strip().splitlines()[0] if str(original).strip() else repr(original)
    if isinstance(original, sqlite3.OperationalError) and "readonly" in message:
        return f"{message} (is the database file or its folder read-only?)"
    if isinstance(original, sqlite3.OperationalError) and (
        "disk I/O error" in message or "disk is full" in message
    ):
        return f"{message} (is the disk full, or a file size limit reached?)"
    return message


def ping(engine: Engine) -> None:
    """Raise StoreError unless the database answers a trivial query."""
    with translated(engine, "checking the database"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
