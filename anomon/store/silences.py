"""Silences kept in the database (``anomon silence add | list | expire``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from anomon.errors import UsageError
from anomon.store.engine import translated
from anomon.store.schema import Silence


@dataclass(frozen=True, slots=True)
class SilenceRow:
    """One stored silence."""

    id: int
    matchers: list[dict[str, str]]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str


def add_silence(
    engine: Engine,
    matchers: Sequence[dict[str, str]],
    *,
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    created_by: str,
    now: datetime,
) -> int:
    """Store a silence; return its id. ``matchers`` are ``{name, value, op}``."""
    with translated(engine, "adding a silence"), engine.begin() as conn:
        return int(
            conn.execute(
                insert(Silence)
                .values(
                    matchers=json.dumps(list(matchers)),
                    starts_at=starts_at,
                    ends_at=ends_at,
                    comment=comment,
                    created_by=created_by,
                    created_at=now,
                )
                .returning(Silence.id)
            ).scalar_one()
        )


def list_silences(engine: Engine, *, now: datetime, expired: bool = False) -> list[SilenceRow]:
    """Return the silences not over at ``now`` (with ``expired``, all of them)."""
    query = select(Silence).order_by(Silence.id)
    if not expired:
        query = query.where(Silence.ends_at > now)
    with translated(engine, "reading silences"), Session(engine) as session:
        return [
            SilenceRow(
                s.id, json.loads(s.matchers), s.starts_at, s.ends_at, s.comment, s.created_by
            )
            for s in session.scalars(query)
        ]


def expire_silence(engine: Engine, silence_id: int, *, now: datetime) -> None:
    """End silence ``silence_id`` now; raise UsageError if there is no such active silence."""
    with translated(engine, "expiring a silence"), engine.begin() as conn:
        changed = conn.execute(
            update(Silence)
            .where(Silence.id == silence_id, Silence.ends_at > now)
            .values(ends_at=now)
        ).rowcount
    if changed != 1:
        raise UsageError(f"no active silence with id {silence_id}")
