"""The store on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import insert, select

from anomon import store
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.store import samples as samples_module
from anomon.store.schema import CollectionRun, Series, SeriesState

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def sample(metric: str, ts: int, value: float, **labels: str) -> Sample:
    return Sample(
        SeriesKey.of(metric, labels),
        SeriesInfo("src", "model-a", SeriesKind.LATENCY, "ms"),
        ts,
        value,
    )


def save(
    engine: store.Engine,
    registry: store.SeriesRegistry,
    samples: list[Sample],
    error: str | None = None,
) -> store.CollectionResult:
    return store.save_collection(
        engine,
        registry,
        source="src",
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1),
        samples=samples,
        error=error,
    )


def count(engine: store.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_it_ingests_a_collection_with_its_run_row(engine: store.Engine) -> None:
    batch = [sample("latency_p99", 1000 + i, float(i), model="a") for i in range(5)]
    batch += [sample("latency_p99", 1000, 9.0, model="b")]
    result = save(engine, store.SeriesRegistry(), batch)
    assert (result.points, result.series_created) == (6, 2)
    runs = store.last_collections(engine, "src")
    assert [(r.points, r.series_created, r.error) for r in runs] == [(6, 2, None)]
    assert runs[0].started_at == NOW and runs[0].finished_at.tzinfo is UTC


def test_reingesting_the_same_samples_changes_nothing(engine: store.Engine) -> None:
    batch = [sample("acc", 1000 + i, 0.9, model=m) for i in range(50) for m in "abc"]
    save(engine, store.SeriesRegistry(), batch)
    with engine.connect() as conn:
        before = conn.exec_driver_sql(
            "SELECT series_id, ts, value FROM samples ORDER BY 1, 2"
        ).all()
    changed = [sample("acc", 1000 + i, 0.1, model=m) for i in range(50) for m in "abc"]
    result = save(engine, store.SeriesRegistry(), changed)  # a fresh cache: ids come from the db
    assert (result.points, result.series_created) == (0, 0)
    with engine.connect() as conn:
        after = conn.exec_driver_sql("SELECT series_id, ts, value FROM samples ORDER BY 1, 2").all()
    assert after == before
    assert count(engine, "series") == 3


def test_a_partly_new_batch_stores_only_the_new_points(engine: store.Engine) -> None:
    registry = store.SeriesRegistry()
    save(engine, registry, [sample("acc", t, 1.0) for t in (10, 20)])
    result = save(engine, registry, [sample("acc", t, 2.0) for t in (20, 30, 30)])
    assert result.points == 1
    with engine.connect() as conn:
        points = store.read_history(conn, [1])[1]
    assert points.ts.tolist() == [10, 20, 30] and points.values.tolist() == [1.0, 1.0, 2.0]


def test_a_failed_collection_is_a_row_not_a_crash(engine: store.Engine) -> None:
    result = save(engine, store.SeriesRegistry(), [], error="connection refused")
    assert result.points == 0
    assert [r.error for r in store.last_collections(engine, "src")] == ["connection refused"]


def test_series_are_unique_on_metric_and_canonical_labels(engine: store.Engine) -> None:
    first, second = store.SeriesRegistry(), store.SeriesRegistry()
    with engine.begin() as conn:
        wanted = {SeriesKey.of("m", {"a": "1", "b": "2"}): SeriesInfo("s", "e")}
        found_1 = first.resolve(conn, wanted, source="s", now=NOW)
    with engine.begin() as conn:
        same = {SeriesKey.of("m", {"b": "2", "a": "1"}): SeriesInfo("s", "e")}
        found_2 = second.resolve(conn, same, source="s", now=NOW)
    assert list(found_1.ids.values()) == list(found_2.ids.values())
    assert (found_1.created, found_2.created) == (1, 0)
    with engine.connect() as conn:
        row = conn.execute(select(Series.metric, Series.labels, Series.kind)).one()
    assert tuple(row) == ("m", '{"a":"1","b":"2"}', "custom")


def test_a_collection_that_fails_midway_stores_nothing_and_caches_no_ids(
    engine: store.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("disk on fire")

    registry = store.SeriesRegistry()
    monkeypatch.setattr("anomon.store.collections.insert_samples", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save(engine, registry, [sample("m", 1, 1.0)])
    assert len(registry) == 0
    assert (count(engine, "series"), count(engine, "collection_runs")) == (0, 0)
    monkeypatch.undo()
    assert save(engine, registry, [sample("m", 1, 1.0)]).series_created == 1


def test_it_reads_the_history_of_many_series_by_time_range(engine: store.Engine) -> None:
    registry = store.SeriesRegistry()
    batch = [
        sample("m", 100 * t, float(s * 1000 + t), s=str(s)) for s in range(30) for t in range(20)
    ]
    save(engine, registry, batch)
    with engine.connect() as conn:
        ids = [int(i) for i in conn.exec_driver_sql("SELECT id FROM series ORDER BY id").scalars()]
        history = store.read_history(conn, [*ids, 999_999], since=500, until=1000)
    assert set(history) == {*ids, 999_999}
    assert history[999_999].ts.size == 0
    for index, series_id in enumerate(ids):
        assert history[series_id].ts.tolist() == [500, 600, 700, 800, 900]
        assert history[series_id].values.tolist() == [index * 1000 + t for t in range(5, 10)]
        assert history[series_id].ts.dtype == np.int64


def test_history_reads_take_one_query_per_batch_of_series(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = store.open_engine(f"sqlite:///{tmp_path}/q.db")
    store.upgrade(engine)
    save(
        engine,
        store.SeriesRegistry(),
        [sample("m", t, 1.0, s=str(s)) for s in range(10) for t in range(3)],
    )
    monkeypatch.setattr(samples_module, "SERIES_PER_QUERY", 4)
    statements: list[str] = []
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.set_trace_callback(statements.append)
        history = store.read_history(conn, list(range(1, 11)))
        raw.set_trace_callback(None)
    assert sum(len(points.ts) for points in history.values()) == 30
    assert len([s for s in statements if s.startswith("SELECT series_id")]) == 3  # 4 + 4 + 2


def test_insert_samples_validates_its_arrays(engine: store.Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="aligned"):
            store.insert_samples(conn, [1, 2], [1], [1.0, 2.0])
        with pytest.raises(ValueError, match="finite"):
            store.insert_samples(conn, [1], [1], [float("nan")])
        assert store.insert_samples(conn, [], [], []) == 0


def test_timestamps_must_be_aware_and_come_back_in_utc(engine: store.Engine) -> None:
    plus_two = datetime(2026, 11, 22, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(
            insert(CollectionRun).values(
                source="tz", started_at=plus_two, finished_at=plus_two, points=0, series_created=0
            )
        )
    (run,) = store.last_collections(engine, "tz")
    assert run.started_at == NOW and run.started_at.tzinfo is UTC
    with pytest.raises(Exception, match="timezone-aware"), engine.begin() as conn:
        conn.execute(
            insert(CollectionRun).values(
                source="tz",
                started_at=datetime(2026, 1, 1),  # noqa: DTZ001
                finished_at=NOW,
                points=0,
                series_created=0,
            )
        )


def test_the_cardinality_guard_refuses_new_series_past_max_series(engine: store.Engine) -> None:
    registry = store.SeriesRegistry()
    first = store.save_collection(
        engine,
        registry,
        source="src",
        started_at=NOW,
        finished_at=NOW,
        max_series=3,
        samples=[sample("m", 1, 1.0, i=str(i)) for i in range(2)],
    )
    assert (first.series_created, first.error) == (2, None)
    burst = [sample("m", 2, 2.0, i=str(i)) for i in range(6)]  # 2 known, 4 new: over by 3
    result = store.save_collection(
        engine, registry, source="src", started_at=NOW, finished_at=NOW, samples=burst, max_series=3
    )
    assert (result.points, result.series_created) == (2, 0)
    assert (
        result.error
        == "cardinality guard: 4 new series refused (source 'src' may have at most max_series=3)"
    )
    assert store.last_collections(engine, "src")[0].error == result.error
    assert count(engine, "series") == 2
    one_more = store.save_collection(
        engine,
        registry,
        source="src",
        started_at=NOW,
        finished_at=NOW,
        samples=burst[:3],
        max_series=3,
    )
    assert (one_more.series_created, one_more.error) == (1, None)


def test_a_replacing_collection_overwrites_stored_values_and_counts_only_changes(
    engine: store.Engine,
) -> None:
    registry = store.SeriesRegistry()
    at = datetime(2026, 11, 22, tzinfo=UTC)
    info = SeriesInfo("quality", "churn", SeriesKind.QUALITY)

    def save(values: list[float], *, replace: bool) -> int:
        samples = [
            Sample(SeriesKey.of("accuracy", {"hour": str(i)}), info, 3600 * i, v)
            for i, v in enumerate(values)
        ]
        return store.save_collection(
            engine,
            registry,
            source="quality",
            started_at=at,
            finished_at=at,
            samples=samples,
            replace=replace,
        ).points

    assert save([0.9, 0.8, 0.7], replace=True) == 3
    assert save([0.9, 0.85, 0.7], replace=False) == 0  # plain: stored points win
    assert save([0.9, 0.85, 0.7], replace=True) == 1  # only the changed value counts
    assert save([0.9, 0.85, 0.7], replace=True) == 0
    with engine.connect() as conn:
        values = conn.exec_driver_sql("SELECT value FROM samples ORDER BY ts").scalars().all()
    assert values == [0.9, 0.85, 0.7]


def test_retention_deletes_only_what_is_past_its_cutoff_in_batches(engine: store.Engine) -> None:
    from anomon.config import RetentionConfig
    from anomon.model import IncidentWrite
    from anomon.service.retention import RetainJob

    now = datetime(2026, 12, 1, tzinfo=UTC)
    day = 86_400
    info = SeriesInfo("system", "host", SeriesKind.RESOURCE)
    key = SeriesKey.of("cpu", {"host": "h"})
    today = int(now.timestamp())
    samples = [Sample(key, info, today - day * d - i, 1.0) for d in (1, 100) for i in range(300)]
    store.save_collection(
        engine,
        store.SeriesRegistry(),
        source="system",
        started_at=now - timedelta(days=40),
        finished_at=now,
        samples=samples,
    )
    old = now - timedelta(days=400)
    with engine.begin() as conn:
        store.write_incidents(
            conn,
            [
                IncidentWrite(None, "h", "cpu", "{}", "resolved", "warning", 85, old, old, old),
                IncidentWrite(None, "h", "cpu", "{}", "firing", "warning", 85, old, old),
            ],
            now=old,
        )
    config = RetentionConfig.model_validate({"batch_size": 100})
    deleted = RetainJob(engine, config, clock=lambda: now).run_once()
    assert deleted["samples"] == 300  # in three batches of 100 (and one empty look)
    assert deleted["collection_runs"] == 1 and deleted["incidents"] == 1
    with engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT min(ts), count(*) FROM samples").one()
        statuses = conn.exec_driver_sql("SELECT status FROM incidents").scalars().all()
    assert tuple(kept) == (today - day - 299, 300)
    assert statuses == ["firing"]  # a firing incident is never deleted, however old


def test_a_cycles_series_state_is_written_and_rewritten_column_by_column(
    engine: store.Engine,
) -> None:
    """Every column of ``series_state`` as a cycle writes it (on PostgreSQL one statement
    of arrays for all series), a non-finite number stored as NULL, a second cycle
    overwriting the first."""
    save(engine, store.SeriesRegistry(), [sample("m", 100, 1.0, n=str(n)) for n in range(3)])
    with engine.connect() as conn:
        a, b, c = conn.execute(select(Series.id).order_by(Series.id)).scalars().all()

    def cycle(
        at: datetime,
        latest: dict[int, store.LatestRow],
        quality: dict[int, str] | None = None,
        learning_until: dict[int, int | None] | None = None,
    ) -> None:
        store.save_detection(
            engine, anomalies=[], scored_until={sid: row[0] for sid, row in latest.items()},
            quality=quality or {}, learning_until=learning_until, latest=latest,
            started_at=at, finished_at=at, points=len(latest), config_hash="h",
            detector_version="v",
        )  # fmt: skip

    cycle(
        NOW,
        {
            a: (100, 1.5, 1.0, 20.0),
            b: (100, float("nan"), None, float("inf")),
            c: (90, 2.0, 2.5, 0.0),
        },
        quality={b: "stale", c: "learning"},
        learning_until={c: 4000},
    )
    later = NOW + timedelta(minutes=1)
    cycle(later, {a: (160, 3.0, 1.1, 95.5)})
    state = SeriesState
    query = select(
        state.series_id, state.scored_until, state.quality, state.learning_until,
        state.last_ts, state.last_value, state.last_expected, state.last_score,
        state.updated_at,
    ).order_by(state.series_id)  # fmt: skip
    with engine.connect() as conn:  # the ORM's columns: timestamps come back aware
        found = [tuple(row) for row in conn.execute(query)]
    assert found == [
        (a, 160, "ok", None, 160, 3.0, 1.1, 95.5, later),
        (b, 100, "stale", None, 100, None, None, None, NOW),
        (c, 90, "learning", 4000, 90, 2.0, 2.5, 0.0, NOW),
    ]
