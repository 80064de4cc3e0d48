"""Read-only queries on a user's own database, for the ``sql`` and ``predictions`` sources.

The sources may not import SQLAlchemy (only the store does), so the daemon hands them
an :class:`ExternalDatabase` made here. Any SQLAlchemy URL works once its driver is
installed. Every query runs with a time limit where the database supports one
(PostgreSQL's ``statement_timeout``, an interrupt on SQLite) and inside a transaction
that is rolled back, so a source never writes. Failures are StoreErrors of one line
with the password hidden.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.pool import NullPool

from anomon.errors import StoreError
from anomon.store.engine import _parse_url, redact, translated

Rows = tuple[list[str], list[Sequence[Any]]]


class ExternalDatabase:
    """One user database that queries are read from; ``timeout`` bounds each query."""

    def __init__(self, url: str, *, timeout: timedelta) -> None:
        self.label = redact(url)
        self._timeout = timeout
        self._deadline = float("inf")
        self._engine = _external_engine(url, timeout)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine, "connect", self._interrupt_at_deadline)

    def query(self, sql: str, params: Mapping[str, Any]) -> Rows:
        """Run ``sql`` with the bind parameters among ``params`` that it uses.

        Returns the column names and the rows. ``:name`` marks a bind parameter; names
        in ``params`` that the query does not use are left out. Raises StoreError.
        """
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

    def _interrupt_at_deadline(self, dbapi_connection: Any, _record: Any) -> None:
        # SQLite has no statement timeout: a progress handler aborts a query that
        # runs past the deadline (it then fails with "interrupted").
        dbapi_connection.set_progress_handler(
            lambda: int(time.monotonic() > self._deadline), 10_000
        )


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
        connect_args = {"connect_timeout": seconds, "options": f"{given} {limits}".strip()}
    elif parsed.get_backend_name() == "sqlite":
        connect_args = {"timeout": timeout.total_seconds()}
    try:
        return create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreError(f"no driver for {redact(parsed)}: {exc}") from None


def open_database(url: str, timeout: timedelta) -> ExternalDatabase:
    """Open a user database for a source (the :data:`~anomon.sources.OpenDatabase` hook)."""
    return ExternalDatabase(url, timeout=timeout)
