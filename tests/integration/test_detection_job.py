"""The detection job on a real database: anomalies, watermarks, restarts, no duplicates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from anomon import store
from anomon.config import DetectionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob, config_hash
from anomon.store.schema import Anomaly, DetectionRun, SeriesState

START = 1_700_000_000 - 1_700_000_000 % 86_400
ROWS, SPIKE = 1500, 1300
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONFIG = DetectionConfig.model_validate({"forest": {"min_train": 200}})


def collect(engine: store.Engine, first: int, last: int) -> None:
    rng = np.random.default_rng(11)
    values = 200 + rng.normal(0, 2, ROWS)
    values[SPIKE] += 60
    quiet = 50 + rng.normal(0, 1, ROWS)
    info = SeriesInfo("model-server", "model-a", SeriesKind.LATENCY, "ms")
    samples = [
        Sample(SeriesKey.of(metric, {"model": "a"}), info, START + 60 * i, float(series[i]))
        for i in range(first, last)
        for metric, series in (("latency_p99", values), ("throughput", quiet))
    ]
    store.save_collection(
        engine,
        store.SeriesRegistry(),
        source="model-server",
        started_at=NOW,
        finished_at=NOW,
        samples=samples,
    )


def anomalies(engine: store.Engine) -> list[Anomaly]:
    with engine.connect() as conn:
        return list(conn.execute(select(Anomaly).order_by(Anomaly.ts)).all())  # type: ignore[arg-type]


def test_it_scores_new_samples_once_and_resumes_after_a_restart(engine: store.Engine) -> None:
    collect(engine, 0, 1000)
    job = DetectJob(engine, CONFIG, clock=lambda: NOW)
    job()
    with engine.connect() as conn:
        marks = dict(conn.execute(select(SeriesState.series_id, SeriesState.scored_until)).all())
    assert set(marks.values()) == {START + 60 * 999}
    before = anomalies(engine)

    collect(engine, 1000, ROWS)
    DetectJob(engine, CONFIG, clock=lambda: NOW)()  # a restarted daemon: warm-up, then go on
    found = anomalies(engine)
    assert [(a.ts, a.series_id) for a in found[: len(before)]] == [
        (a.ts, a.series_id) for a in before
    ]
    spike = [a for a in found if a.ts == START + 60 * SPIKE]
    assert len(spike) == 1
    (hit,) = spike
    assert hit.direction == "up" and hit.value > hit.expected + 40
    assert 80 <= hit.score <= 100
    assert set(json.loads(hit.detector_scores)) == {
        "zscore",
        "seasonal",
        "forest",
        "limit",
        "joint",
    }
    assert hit.config_hash == config_hash(CONFIG)
    with engine.connect() as conn:  # the view people and Grafana read
        named = conn.exec_driver_sql(
            f"SELECT metric, entity, at, score FROM anomalies_named WHERE id = {hit.id}"
        ).one()
    assert (named.metric, named.entity, named.score) == ("latency_p99", "model-a", hit.score)
    assert str(named.at).startswith(str(datetime.fromtimestamp(hit.ts, UTC))[:16])

    job_again = DetectJob(engine, CONFIG, clock=lambda: NOW)
    job_again()  # nothing new to score: nothing new stored
    assert len(anomalies(engine)) == len(found)
    with engine.connect() as conn:
        runs = conn.execute(select(DetectionRun.points_scored, DetectionRun.anomalies)).all()
    assert [tuple(r) for r in runs] == [
        (2000, len(before)),
        (1000, len(found) - len(before)),
        (0, 0),
    ]


def test_a_restart_scores_exactly_like_an_uninterrupted_daemon(tmp_path: Path) -> None:
    def run(restart: bool) -> list[tuple[int, int, float, str]]:
        engine = store.open_engine(f"sqlite:///{tmp_path / f'restart-{restart}.db'}")
        store.upgrade(engine)
        job = DetectJob(engine, CONFIG, clock=lambda: NOW)
        collect(engine, 0, 1000)
        job()
        collect(engine, 1000, ROWS)
        (DetectJob(engine, CONFIG, clock=lambda: NOW) if restart else job)()
        found = [(a.series_id, a.ts, a.score, a.detector_scores) for a in anomalies(engine)]
        engine.dispose()
        return found

    uninterrupted = run(restart=False)
    assert any(ts == START + 60 * SPIKE for _, ts, _, _ in uninterrupted)
    assert run(restart=True) == uninterrupted


def test_a_backlog_scored_in_slices_gives_the_anomalies_of_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anomon.service.detection as detection

    def run(name: str) -> list[tuple[int, int, float]]:
        engine = store.open_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        store.upgrade(engine)
        collect(engine, 0, ROWS)
        DetectJob(engine, CONFIG, clock=lambda: NOW)()
        found = [(a.series_id, a.ts, round(a.score, 9)) for a in anomalies(engine)]
        engine.dispose()
        return found

    whole = run("whole")
    monkeypatch.setattr(detection, "READ_SERIES", 1)  # one series per read ...
    monkeypatch.setattr(detection, "SLICE_POINTS", 100)  # ... and per fleet call
    assert any(ts == START + 60 * SPIKE for _, ts, _ in whole)
    assert run("sliced") == whole
