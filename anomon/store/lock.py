"""One writer per SQLite database: a second ``anomon run`` on the same file is refused.

The lock is an exclusive ``flock`` on ``<database>.lock`` holding the owner's pid; the
kernel drops it when the process ends, however it ends (``kill -9`` included), so a
crash never leaves a stale lock. PostgreSQL needs none: several processes may share it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Engine

from anomon.errors import StoreError


class WriterLock:
    """Held while the daemon runs; :meth:`release` (or the process's end) frees it."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    def release(self) -> None:
        """Free the lock."""
        self._handle.close()


def writer_lock(engine: Engine) -> WriterLock | None:
    """Take the writer lock of a SQLite file database; None for other databases.

    Raises StoreError naming the other process when the lock is held.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve().with_name(Path(database).name + ".lock")
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:  # a read-only or missing folder: SQLite could not write there either
        raise StoreError(
            f"cannot create the writer lock {path}: {exc.strerror or exc}; the database's "
            "folder must exist and be writable (SQLite writes its journal there too)"
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise StoreError(
            f"another anomon (pid {owner}) is already running on {database}; "
            "SQLite takes one writer (stop it, or use PostgreSQL for several)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return WriterLock(handle)
