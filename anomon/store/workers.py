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
    """Renew a worker's heartbeat (and mark it stopped, at a clean stop). A worker that
    beats is not stopped, whatever another one marked (it took it for gone)."""
    values: dict[str, datetime | None] = {
        "heartbeat_at": now,
        "stopped_at": now if stopped else None,
    }
    with translated(engine, "renewing the daemon's heartbeat"), engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == worker_id).values(**values))


def read_workers(
    engine: Engine, *, now: datetime, alive_for: timedelta = ALIVE_FOR
) -> list[WorkerStatus]:
    """The workers alive at ``now`` (a heartbeat within ``alive_for``, not stopped), or
    else the one seen last: what ``status`` needs to say whether a daemon runs."""
    found = list_workers(engine, now=now, alive_for=alive_for)
    alive = [worker for worker in found if worker.alive]
    return alive or found[:1]


def live_workers(engine: Engine, *, now: datetime, alive_for: timedelta = ALIVE_FOR) -> list[int]:
    """The ids of the workers alive at ``now``: a heartbeat within ``alive_for``, not
    stopped (their leases still run)."""
    with translated(engine, "reading the live workers"), engine.connect() as conn:
        return list(
            conn.execute(
                select(Worker.id)
                .where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= now - alive_for)
                .order_by(Worker.id)
            ).scalars()
        )


def list_workers(
    engine: Engine, *, now: datetime, alive_for: timedelta = ALIVE_FOR, limit: int = 50
) -> list[WorkerStatus]:
    """The workers seen last (``limit``), newest heartbeat first, alive or not."""
    with translated(engine, "reading the workers"), engine.connect() as conn:
        rows = conn.execute(
            select(Worker).order_by(Worker.heartbeat_at.desc(), Worker.id.desc()).limit(limit)
        ).all()
    return [
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


def mark_stopped(engine: Engine, worker_ids: list[int], *, now: datetime) -> None:
    """Mark workers stopped (a process of this host that is gone: its lease need not
    run out before its share is taken)."""
    if not worker_ids:
        return
    with translated(engine, "marking workers stopped"), engine.begin() as conn:
        conn.execute(
            update(Worker)
            .where(Worker.id.in_(worker_ids), Worker.stopped_at.is_(None))
            .values(stopped_at=now)
        )
