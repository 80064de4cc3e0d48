"""What a fault test checks in the database after the kills: every collection's points
stored once, and the outbox by status."""

from __future__ import annotations

from sqlalchemy import Connection


def points_by_source(conn: Connection) -> dict[str, tuple[int, int]]:
    """Per source: the points its collection runs recorded, and the samples stored."""
    recorded: dict[str, int] = dict(
        conn.exec_driver_sql(
            "SELECT source, coalesce(sum(points), 0) FROM collection_runs GROUP BY source"
        )
        .tuples()
        .all()
    )
    stored: dict[str, int] = dict(
        conn.exec_driver_sql(
            "SELECT s.source, count(*) FROM samples p JOIN series s ON s.id = p.series_id "
            "GROUP BY s.source"
        )
        .tuples()
        .all()
    )
    return {
        source: (int(recorded.get(source, 0)), int(stored.get(source, 0)))
        for source in {*recorded, *stored}
    }


def outbox(conn: Connection) -> dict[str, int]:
    """The notifications by status."""
    return {
        status: int(n)
        for status, n in conn.exec_driver_sql(
            "SELECT status, count(*) FROM notifications GROUP BY status"
        ).all()
    }
