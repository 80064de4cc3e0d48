"""The ``workers`` table: which ``anomon run`` processes are alive on this database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update

from anomon.store.engine import translated
from anomon.store.schema import Worker

HEARTBEAT = timedelta(seconds=15)  # how often a running daemon renews its row
ALIVE_FOR = 4 * HEARTBEAT  # a heartbeat older than this: that daemon is gone
FORGET_AFTER = timedelta(days=30)  # rows of daemons gone this long are deleted


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One registered daemon process; ``alive`` when its heartbeat is recent and it has
    not stopped."""

    id: int
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool


def register_worker(engine: Engine, *, host: str, pid: int, version: str, now: datetime) -> int:
    """Add this process as a worker; return its id. Rows of workers gone for
    :data:`FORGET_AFTER` are deleted (a restart a day keeps a month of rows)."""
    with translated(engine, "registering the daemon"), engine.begin() as conn:
        conn.execute(delete(Worker).where(Worker.heartbeat_at < now - FORGET_AFTER))
        statement = insert(Worker).values(
            host=host[:255],
            pid=pid,
            version=version[:50],
            started_at=now,
            heartbeat_at=now,
            stopped_at=None,
        )
        return int(conn.execute(statement.returning(Worker.id)).scalar_one())


def beat(engine: Engine, worker_id: int, *, now: datetime, stopped: bool = False) -> None:
    """Renew a worker's heartbeat (and mark it stopped, at a clean stop)."""
    values: dict[str, datetime] = {"heartbeat_at": now}
    if stopped:
        values["stopped_at"] = now
    with translated(engine, "renewing the daemon's heartbeat"), engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == worker_id).values(**values))


def read_workers(
    engine: Engine, *, now: datetime, alive_for: timedelta = ALIVE_FOR
) -> list[WorkerStatus]:
    """The workers alive at ``now`` (a heartbeat within ``alive_for``, not stopped), or
    else the one seen last: what ``status`` needs to say whether a daemon runs."""
    with translated(engine, "reading the daemon's heartbeat"), engine.connect() as conn:
        rows = conn.execute(
            select(Worker).order_by(Worker.heartbeat_at.desc(), Worker.id.desc()).limit(50)
        ).all()
    found = [
        WorkerStatus(
            id=row.id,
            host=row.host,
            pid=row.pid,
            version=row.version,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            stopped_at=row.stopped_at,
            alive=row.stopped_at is None and now - row.heartbeat_at <= alive_for,
        )
        for row in rows
    ]
    alive = [worker for worker in found if worker.alive]
    return alive or found[:1]
