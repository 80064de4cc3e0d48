"""Deploys: recorded by ``anomon deploy`` or found by detection, read by plots, the
delivery of notifications and ``anomon deploys``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from anomon.model import DeployRecord
from anomon.store.engine import translated
from anomon.store.schema import Deploy


def record_deploys(engine: Engine, deploys: Sequence[DeployRecord], *, now: datetime) -> int:
    """Store deploys; one already stored (same model, entity, version and time) is kept
    as it is. Return how many were new."""
    if not deploys:
        return 0
    insert_for = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {
            "at": d.at,
            "model": d.model,
            "version": d.version,
            "entity": d.entity,
            "note": d.note,
            "origin": d.origin,
            "created_at": now,
        }
        for d in deploys
    ]
    statement = insert_for(Deploy).on_conflict_do_nothing().returning(Deploy.id)
    with translated(engine, "recording deploys"), engine.begin() as conn:
        return len(conn.execute(statement, rows).all())


def list_deploys(
    engine: Engine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    about: tuple[str, Mapping[str, str]] | None = None,
) -> list[DeployRecord]:
    """The deploys at or after ``since`` and at or before ``until`` (and with an id above
    ``after_id``: the ones recorded since a reader last looked; ``about`` an entity and
    labels: the ones :meth:`~anomon.model.DeployRecord.covers`), oldest first."""
    query = select(Deploy).order_by(Deploy.at, Deploy.id)
    if since is not None:
        query = query.where(Deploy.at >= since)
    if until is not None:
        query = query.where(Deploy.at <= until)
    if after_id is not None:
        query = query.where(Deploy.id > after_id)
    with translated(engine, "reading deploys"), engine.connect() as conn:
        found = [
            DeployRecord(
                at=row.at,
                model=row.model,
                version=row.version,
                entity=row.entity,
                note=row.note,
                origin=row.origin,
                id=row.id,
            )
            for row in conn.execute(query)
        ]
    return found if about is None else [d for d in found if d.covers(*about)]
