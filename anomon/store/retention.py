"""Retention: delete old rows in bounded batches, so no delete holds the database long."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

from anomon.store.engine import translated

# Each statement deletes at most :batch rows picked by a subquery (SQLite has no
# DELETE ... LIMIT by default, PostgreSQL none at all); row values work on both.
_DELETES = {
    "samples": (
        "DELETE FROM samples WHERE (series_id, ts) IN "
        "(SELECT series_id, ts FROM samples WHERE ts < :before LIMIT :batch)"
    ),
    "collection_runs": (
        "DELETE FROM collection_runs WHERE id IN "
        "(SELECT id FROM collection_runs WHERE started_at < :before LIMIT :batch)"
    ),
    "detection_runs": (
        "DELETE FROM detection_runs WHERE id IN "
        "(SELECT id FROM detection_runs WHERE started_at < :before LIMIT :batch)"
    ),
    "anomalies": (
        "DELETE FROM anomalies WHERE id IN "
        "(SELECT id FROM anomalies WHERE ts < :before LIMIT :batch)"
    ),
    "notifications": (
        "DELETE FROM notifications WHERE id IN (SELECT n.id FROM notifications n "
        "JOIN incidents i ON i.id = n.incident_id "
        "WHERE i.status = 'resolved' AND i.resolved_at < :before LIMIT :batch)"
    ),
    "incidents": (
        "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents "
        "WHERE status = 'resolved' AND resolved_at < :before LIMIT :batch)"
    ),
}


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these go: point times in epoch seconds, run and incident times."""

    samples: int
    anomalies: int
    runs: datetime
    incidents: datetime


def delete_old(
    engine: Engine, cutoffs: Cutoffs, *, batch: int, max_batches: int = 100
) -> dict[str, int]:
    """Delete rows past their cutoff, ``batch`` rows per transaction, at most
    ``max_batches`` transactions per table; return how many rows went per table."""
    before = {
        "samples": cutoffs.samples,
        "collection_runs": cutoffs.runs,
        "detection_runs": cutoffs.runs,
        "anomalies": cutoffs.anomalies,
        "notifications": cutoffs.incidents,
        "incidents": cutoffs.incidents,
    }
    deleted: dict[str, int] = {}
    for table, sql in _DELETES.items():
        deleted[table] = 0
        for _ in range(max_batches):
            with translated(engine, f"deleting old {table}"), engine.begin() as conn:
                count = conn.execute(text(sql), {"before": before[table], "batch": batch}).rowcount
            deleted[table] += max(count, 0)
            if count < batch:
                break
    return deleted
