"""Samples partitioned by day on PostgreSQL: partitions made ahead, old days dropped.

Since migration 0012, ``samples`` on PostgreSQL is partitioned by range of ``ts``: one
partition per UTC day (``samples_pYYYYMMDD``) and ``samples_default`` for the times no
day partition covers. :func:`make_partitions` makes the days to come (the leader's
retention job runs it, and every daemon once at start); a day made while the default
partition holds rows of it takes those rows along, so none is ever refused.
:func:`drop_partitions_before` drops the days wholly older than the retention cutoff —
one catalogue change instead of a delete per row; the retention job then deletes the
rows left before the cutoff (the boundary day, the default partition) as before.
Several workers may call both at once: a transaction-level advisory lock lets one at
a time through. On SQLite (one table) both do nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from anomon.store.engine import translated

DAY = 86_400
AHEAD_DAYS = 7  # the days made ahead of today
PREFIX = "samples_p"
DEFAULT = "samples_default"
_LOCK = 0x616E6F6D6F6E  # "anomon": the advisory lock key of partition changes


def partition_name(day: int) -> str:
    """The partition of the UTC day starting at ``day`` (epoch seconds)."""
    return PREFIX + datetime.fromtimestamp(day, UTC).strftime("%Y%m%d")


def is_partition(table: str) -> bool:
    """Whether ``table`` is one of the partitions of ``samples`` (by its name)."""
    if table == DEFAULT:
        return True
    digits = table.removeprefix(PREFIX)
    return table.startswith(PREFIX) and len(digits) == 8 and digits.isdigit()


def partitioned(conn: Connection) -> bool:
    """Whether ``samples`` is a partitioned table here (PostgreSQL at revision 0012+)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
        "WHERE partrelid = to_regclass('samples'))"
    ).scalar()
    return bool(found)


def day_partitions(conn: Connection) -> list[int]:
    """The day partitions of ``samples``: the epoch second each day starts, oldest first."""
    names = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('samples')"
    ).scalars()
    days = []
    for name in names:
        if is_partition(name) and name != DEFAULT:
            day = datetime.strptime(name.removeprefix(PREFIX), "%Y%m%d").replace(tzinfo=UTC)
            days.append(int(day.timestamp()))
    return sorted(days)


def make_partitions(engine: Engine, *, now: int, ahead: int = AHEAD_DAYS) -> int:
    """Make the missing day partitions from today to ``ahead`` days after; return how
    many were made."""
    with translated(engine, "making sample partitions"), engine.begin() as conn:
        if not partitioned(conn):
            return 0
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK})")
        have = set(day_partitions(conn))
        today = now // DAY * DAY
        wanted = [today + k * DAY for k in range(ahead + 1)]
        for day in wanted:
            if day not in have:
                _attach(conn, day)
        return len([day for day in wanted if day not in have])


def _attach(conn: Connection, day: int) -> None:
    """Make the partition of ``day``, moving its rows out of the default partition
    first (attaching checks that the default holds none of them)."""
    name, end = partition_name(day), day + DAY
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE ts >= {day} AND ts < {end} "
        f"RETURNING series_id, ts, value) INSERT INTO {name} SELECT series_id, ts, value FROM moved"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE samples ATTACH PARTITION {name} FOR VALUES FROM ({day}) TO ({end})"
    )


def drop_partitions_before(engine: Engine, cutoff: int) -> int:
    """Drop the day partitions that end at or before ``cutoff`` (epoch seconds): all
    their samples are past retention. Returns how many were dropped."""
    with translated(engine, "dropping old sample partitions"), engine.begin() as conn:
        if not partitioned(conn):
            return 0
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK})")
        old = [day for day in day_partitions(conn) if day + DAY <= cutoff]
        for day in old:
            conn.exec_driver_sql(f"DROP TABLE {partition_name(day)}")
        return len(old)
