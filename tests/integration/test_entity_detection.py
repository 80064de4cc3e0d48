"""Entities in the daemon: a source's series about one host or model scored together."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from anomon import store
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, DetectionRun, Incident, Series, SeriesState
from tests.loopback import receive

START = 1_700_000_000 - 1_700_000_000 % 86_400
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONFIG = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})
ROWS = 900


def _host(rows: range, metrics: dict[str, np.ndarray], *, skip: dict[str, int] | None = None):
    info = SeriesInfo("node", "host-1", SeriesKind.RESOURCE, "")
    every = skip or {}
    return [
        Sample(SeriesKey.of(name, {"host": "host-1"}), info, START + 60 * i, float(values[i]))
        for i in rows
        for name, values in metrics.items()
        if not (name in every and i % every[name] == 0)
    ]


def _models(rows: range, values: np.ndarray) -> list[Sample]:
    info = SeriesInfo("srv", "srv", SeriesKind.LATENCY, "ms")
    return [
        Sample(SeriesKey.of("latency_p99", {"model": m}), info, START + 60 * i, float(values[i]))
        for i in rows
        for m in ("churn", "fraud")
    ]


def _save(engine: store.Engine, source: str, samples: list[Sample]) -> None:
    store.save_collection(
        engine, store.SeriesRegistry(), source=source, started_at=NOW, finished_at=NOW,
        samples=samples,
    )  # fmt: skip


def _metrics(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "cpu": 40 + rng.normal(0, 2, ROWS),
        "memory": 60 + rng.normal(0, 1, ROWS),
        "disk": 20 + rng.normal(0, 1, ROWS),
    }


def _ids(engine: store.Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(select(Series.metric, Series.labels, Series.id)).all()
    return {(metric, labels): sid for metric, labels, sid in rows}


def test_a_sources_series_about_one_host_or_model_are_one_entity(engine: store.Engine) -> None:
    metrics = _metrics(1)
    metrics["memory"][800] += 25  # one metric of the host goes wrong
    _save(engine, "node", _host(range(ROWS), metrics))
    _save(engine, "srv", _models(range(ROWS), 100 + np.random.default_rng(2).normal(0, 3, ROWS)))
    job = DetectJob(engine, CONFIG, clock=lambda: NOW)
    job()
    ids = _ids(engine)
    host = [ids[(m, '{"host":"host-1"}')] for m in ("cpu", "memory", "disk")]
    assert job.members == {
        ("node", "host-1", "", ""): sorted(host),
        ("srv", "srv", "churn", ""): [ids[("latency_p99", '{"model":"churn"}')]],
        ("srv", "srv", "fraud", ""): [ids[("latency_p99", '{"model":"fraud"}')]],
    }
    assert len(job.fleet.entities[("node", "host-1", "", "")].metrics) == 3
    with engine.connect() as conn:
        found = conn.execute(
            select(Anomaly.series_id, Anomaly.value, Anomaly.expected).where(
                Anomaly.ts == START + 60 * 800
            )
        ).all()
    # the anomaly is recorded on the series behind it, with its own value and expected
    assert [sid for sid, _, _ in found] == [ids[("memory", '{"host":"host-1"}')]]
    (_, value, expected) = found[0]
    assert value == metrics["memory"][800] and abs(expected - 60) < 1


def test_a_series_missing_from_some_rows_is_a_missing_value(engine: store.Engine) -> None:
    metrics = _metrics(3)
    metrics["cpu"][850] += 30
    _save(engine, "node", _host(range(ROWS), metrics, skip={"disk": 5}))
    job = DetectJob(engine, CONFIG, clock=lambda: NOW)
    job()
    with engine.connect() as conn:
        marks = set(conn.execute(select(SeriesState.scored_until)).scalars())
        run = conn.execute(select(DetectionRun.points_scored, DetectionRun.error)).one()
        hits = conn.execute(select(Anomaly.ts)).scalars().all()
    assert marks == {START + 60 * (ROWS - 1)}  # every series scored to the end
    assert run.error is None
    assert run.points_scored == 3 * ROWS - len(range(0, ROWS, 5))  # each series' own rows
    assert START + 60 * 850 in hits


def test_a_series_that_joins_an_entity_later_is_scored_from_then_on(
    engine: store.Engine,
) -> None:
    metrics = _metrics(4)
    two = {name: metrics[name] for name in ("cpu", "memory")}
    _save(engine, "node", _host(range(600), two))
    job = DetectJob(engine, CONFIG, clock=lambda: NOW)
    job()
    before = set(_anomaly_times(engine))
    metrics["disk"][880] += 20
    _save(engine, "node", _host(range(600, ROWS), metrics))  # disk appears at row 600
    job()
    ids = _ids(engine)
    assert job.members[("node", "host-1", "", "")] == sorted(
        ids[(m, '{"host":"host-1"}')] for m in ("cpu", "memory", "disk")
    )
    with engine.connect() as conn:
        marks = dict(conn.execute(select(SeriesState.series_id, SeriesState.scored_until)).all())
        disk = (
            conn.execute(
                select(Anomaly.ts).where(Anomaly.series_id == ids[("disk", '{"host":"host-1"}')])
            )
            .scalars()
            .all()
        )
    assert set(marks.values()) == {START + 60 * (ROWS - 1)}
    assert START + 60 * 880 in disk
    assert before <= set(_anomaly_times(engine))  # nothing scored twice, nothing lost
    assert len(_anomaly_times(engine)) == len(set(_anomaly_times(engine)))


def _anomaly_times(engine: store.Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(Anomaly.series_id, Anomaly.ts)).all()]


@pytest.mark.parametrize("kind", ["host", "model"])
def test_an_entity_going_wrong_on_several_metrics_is_one_incident_with_true_values(
    engine: store.Engine, kind: str
) -> None:
    rng = np.random.default_rng(8)
    if kind == "host":
        info, labels = SeriesInfo("node", "host-1", SeriesKind.RESOURCE, ""), {"host": "h1"}
        metrics = {"cpu": 40 + rng.normal(0, 2, ROWS), "memory": 60 + rng.normal(0, 1, ROWS),
                   "disk": 20 + rng.normal(0, 1, ROWS)}  # fmt: skip
        wrong = {"cpu": 25.0, "memory": 30.0}
    else:
        info = SeriesInfo("srv", "srv", SeriesKind.LATENCY, "ms")
        labels = {"model": "churn", "version": "3"}
        metrics = {"latency_p50": 50 + rng.normal(0, 1, ROWS),
                   "latency_p99": 200 + rng.normal(0, 4, ROWS),
                   "requests": 100 + rng.normal(0, 3, ROWS)}  # fmt: skip
        wrong = {"latency_p50": 20.0, "latency_p99": 120.0}
    for name, shift in wrong.items():
        metrics[name][840:852] += shift  # twelve minutes of two metrics going wrong
    source = info.source
    samples = [
        Sample(SeriesKey.of(name, labels), info, START + 60 * i, float(values[i]))
        for i in range(ROWS)
        for name, values in metrics.items()
    ]
    with receive() as hook:
        alerts = AlertsConfig.model_validate(
            {"receiver": "hook", "group_wait": "0s",
             "receivers": [{"name": "hook", "kind": "webhook", "url": f"{hook.url}/hook"}]}
        )  # fmt: skip
        clock = lambda: datetime.fromtimestamp(START + 60 * 846, UTC)  # noqa: E731
        job = DetectJob(engine, CONFIG, clock=clock, alerts=alerts,
                        samples=SamplesConfig(max_ahead=timedelta(hours=3)))  # fmt: skip
        _save(engine, source, [s for s in samples if s.ts <= START + 60 * 846])
        job()
        DeliverJob(engine, alerts, build_notifiers(alerts), clock=clock)()
        bodies = [json.loads(request.body) for request in hook.requests]
    with engine.connect() as conn:
        opened = conn.execute(select(Incident.id, Incident.metric, Incident.status)).all()
        latest = dict(
            conn.execute(
                select(Series.metric, SeriesState.last_value).join(
                    SeriesState, SeriesState.series_id == Series.id
                )
            ).all()
        )
    assert len(opened) == 1 and opened[0].status == "firing"  # one event, one incident
    assert opened[0].metric in wrong  # opened for a series that went wrong
    (body,) = bodies
    (shown,) = body["incidents"]
    behind = {c["metric"]: c for c in shown["contributors"]}
    assert set(behind) == set(wrong)  # the series that went wrong, no other
    for name, c in behind.items():
        assert c["value"] == latest[name]  # its value now, from the samples
        assert c["expected"] is not None and c["value"] - c["expected"] > wrong[name] / 2
    lead = shown["contributors"][0]
    assert (shown["value"], shown["expected"]) == (lead["value"], lead["expected"])


def test_one_model_seen_by_two_sources_going_wrong_is_one_incident(engine: store.Engine) -> None:
    # the case: p50 and p99 from a scrape, p99 from the JSON stats, one spike
    rng = np.random.default_rng(12)
    labels = {"model": "churn"}
    scrape = SeriesInfo("scrape", "churn-model", SeriesKind.LATENCY, "ms")
    stats = SeriesInfo("stats", "churn-model", SeriesKind.LATENCY, "ms")
    shown = {
        ("scrape", "latency_p50"): 50 + rng.normal(0, 1, ROWS),
        ("scrape", "latency_p99"): 200 + rng.normal(0, 4, ROWS),
        ("stats", "latency_p99_ms"): 210 + rng.normal(0, 4, ROWS),
    }
    for values in shown.values():
        values[840:852] *= 3  # the spike, seen by both sources
    clock = lambda: datetime.fromtimestamp(START + 60 * 846, UTC)  # noqa: E731
    job = DetectJob(engine, CONFIG, clock=clock,
                    samples=SamplesConfig(max_ahead=timedelta(hours=3)))  # fmt: skip
    for source, info, offset in (("scrape", scrape, 0), ("stats", stats, 7)):
        _save(engine, source, [
            Sample(SeriesKey.of(metric, labels), info, START + 60 * i + offset,
                   float(values[i]))
            for (where, metric), values in shown.items() if where == source
            for i in range(847)
        ])  # fmt: skip
    job()
    assert len(job.members) == 2  # two entities scored, one per source
    with engine.connect() as conn:
        opened = conn.execute(select(Incident.id, Incident.status)).all()
        linked = conn.execute(
            select(Series.source, Series.metric)
            .join(Anomaly, Anomaly.series_id == Series.id)
            .where(Anomaly.incident_id == opened[0].id)
            .distinct()
        ).all()
    assert len(opened) == 1 and opened[0].status == "firing"  # one event, one incident
    assert {source for source, _ in linked} == {"scrape", "stats"}  # both sources behind it
