"""Samples partitioned by day on PostgreSQL (migration 0012): an existing database
upgraded with its samples, partitions made ahead, rows of a new day taken out of the
default partition, retention dropping whole days, ingest unchanged."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from anomon import store
from anomon.config import RetentionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.retention import RetainJob
from anomon.store.partitions import DAY, day_partitions, partition_name, partitioned
from tests.conftest import save_samples

pytestmark = pytest.mark.postgres


def _samples(times: list[int], series: int = 3) -> list[Sample]:
    info = SeriesInfo("host", "web-1", SeriesKind.RESOURCE)
    return [
        Sample(SeriesKey.of("cpu", {"core": str(c)}), info, ts, float(ts % 1000 + c))
        for c in range(series)
        for ts in times
    ]


def _where(engine: store.Engine) -> dict[str, int]:
    """Rows per partition."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT tableoid::regclass::text, count(*) FROM samples GROUP BY 1"
        ).all()
    return {str(name): int(n) for name, n in rows}


def test_an_existing_database_is_upgraded_with_every_sample_kept(postgres_schema_url: str) -> None:
    engine = store.open_engine(postgres_schema_url)
    try:
        store.upgrade(engine, "0011")
        now = int(time.time())
        today = now // DAY * DAY
        far = [86_400 * 3, today + 100 * DAY]  # 1970, and months ahead: no day for them
        times = [today - 3 * DAY + 10, today - DAY + 20, now - 5, now + 60, *far]
        save_samples(engine, _samples(times))
        with engine.connect() as conn:
            assert not partitioned(conn)
        store.upgrade(engine)
        with engine.connect() as conn:
            assert partitioned(conn)
            days = day_partitions(conn)
            count = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
        assert count == 3 * len(times)
        assert days[0] == today - 3 * DAY and days[-1] == today + 7 * DAY  # a week ahead
        where = _where(engine)
        assert where[partition_name(today - 3 * DAY)] == 3
        assert where["samples_default"] == 3 * len(far)
        assert store.check(engine) == []  # the partitions are not differences
        # reads and writes are unchanged: a duplicate is skipped, a new point stored
        save_samples(engine, _samples([now - 5, now + 1]))
        total = 3 * (len(times) + 1)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one() == total
        store.downgrade(engine, "0011")
        with engine.connect() as conn:
            assert not partitioned(conn)
            assert conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one() == total
    finally:
        engine.dispose()


def test_days_are_made_ahead_taking_their_rows_from_the_default_partition(
    engine: store.Engine, database_url: str
) -> None:
    if engine.dialect.name != "postgresql":
        assert store.make_partitions(engine, now=int(time.time())) == 0  # SQLite: one table
        assert store.drop_partitions_before(engine, int(time.time())) == 0
        return
    now = int(time.time())
    today = now // DAY * DAY
    later = today + 10 * DAY + 5  # beyond the week made at upgrade: the default's
    save_samples(engine, _samples([later]))
    assert _where(engine) == {"samples_default": 3}
    assert store.make_partitions(engine, now=now, ahead=12) == 5  # days 8 to 12
    assert _where(engine) == {partition_name(today + 10 * DAY): 3}
    assert store.make_partitions(engine, now=now, ahead=12) == 0  # nothing twice


def test_retention_drops_whole_days_then_deletes_the_rows_left(postgres_schema_url: str) -> None:
    engine = store.open_engine(postgres_schema_url)
    try:
        store.upgrade(engine, "0011")
        now = datetime.now(UTC)
        today = int(now.timestamp()) // DAY * DAY
        # ten days back, a point every 6 hours
        times = [today - 10 * DAY + 6 * 3600 * k for k in range(44)]
        stored = [t for t in times if t < int(now.timestamp())]
        save_samples(engine, _samples(stored))
        store.upgrade(engine)
        kept = RetentionConfig.model_validate({"samples": "5d"})
        cutoff = int((now - timedelta(days=5)).timestamp())
        with engine.connect() as conn:
            before = day_partitions(conn)
        deleted = RetainJob(engine, kept, clock=lambda: now).run_once()
        with engine.connect() as conn:
            after = day_partitions(conn)
            oldest = conn.exec_driver_sql("SELECT min(ts) FROM samples").scalar_one()
            left = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
        gone = [day for day in before if day + DAY <= cutoff]
        assert gone and deleted["sample_partitions"] == len(gone)
        assert after == [day for day in before if day not in gone]
        assert oldest >= cutoff
        assert left == 3 * len([t for t in stored if t >= cutoff])
        # the older rows of the boundary day went one by one, the rest with their days
        boundary = [t for t in stored if t < cutoff and not any(d <= t < d + DAY for d in gone)]
        assert boundary and deleted["samples"] == 3 * len(boundary)
    finally:
        engine.dispose()
