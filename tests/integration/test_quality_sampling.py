"""Model quality in the daemon's detection job, judged by its sample size (issue 15,
point 1), on SQLite and PostgreSQL: hourly windows as the predictions source stores them
(accuracy, labelled_rows and predictions of one model), scored from the third window."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Incident, Series, SeriesState
from tests.conftest import save_samples

HOUR = 3600
START = 1_796_000_000 // HOUR * HOUR
DETECTION = DetectionConfig.model_validate({"forest": {"enabled": False}, "seasonality": []})


def store_windows(
    engine: store.Engine,
    rows: list[tuple[float, ...]],
    names: tuple[str, ...] = ("accuracy", "labelled_rows", "predictions"),
) -> None:
    """Store hourly windows (by default accuracy, labelled_rows and predictions) of model
    churn, v3."""
    info = SeriesInfo("predictions", "churn", SeriesKind.QUALITY)
    labels = {"model": "churn", "version": "3"}
    for i, row in enumerate(rows):
        samples = [
            Sample(SeriesKey.of(name, labels), info, START + HOUR * i, value)
            for name, value in zip(names, row, strict=True)
        ]
        save_samples(engine, samples, at=datetime.fromtimestamp(START + HOUR * (i + 1), UTC))


def firing(engine: store.Engine) -> list[tuple[str, dict[str, str]]]:
    with Session(engine) as session:
        found = session.scalars(select(Incident).where(Incident.status == "firing"))
        return [(i.metric, json.loads(i.labels)) for i in found]


@pytest.mark.parametrize(("labels", "opens"), [(4000, True), (40, False)])
def test_an_accuracy_drop_opens_an_incident_by_its_sample_size_from_the_fourth_window(
    engine: store.Engine, labels: int, opens: bool
) -> None:
    rng = np.random.default_rng(1)
    normal = [(rng.binomial(labels, 0.92) / labels, labels, labels) for _ in range(3)]
    store_windows(engine, [*normal, (0.85, labels, labels)])
    clock = lambda: datetime.fromtimestamp(START + HOUR * 4 + 60, UTC)  # noqa: E731
    job = DetectJob(engine, DETECTION, clock=clock, alerts=AlertsConfig())
    job()
    found = firing(engine)
    if opens:
        ((metric, routed),) = found
        assert metric == "accuracy" and routed["version"] == "3"
        assert routed["severity"] == "critical"
    else:
        assert found == []
    with Session(engine) as session:  # scored, not waiting days for a history
        states = {s.quality for s in session.scalars(select(SeriesState))}
    assert "learning" in states and "too_short" not in states  # (constant counts: flat)


@pytest.mark.parametrize(("labels", "opens"), [(4000, True), (40, False)])
def test_a_binary_models_f1_and_auc_drop_opens_an_incident_by_their_sample_size(
    engine: store.Engine, labels: int, opens: bool
) -> None:
    """F1 and ROC AUC, as the predictions source stores them for a binary model (with
    the positives they are measured on): scored from the fourth window by their sampling
    error. 0.80 -> 0.70 (F1) and 0.90 -> 0.82 (AUC) is about ten standard errors on 4,000
    labels, one on 40."""
    names = ("f1", "roc_auc", "predicted_positives", "actual_positives", "labelled_rows")
    rng = np.random.default_rng(2)
    positives = 0.3 * labels
    f1_error, auc_error = 0.45 / np.sqrt(labels), 0.3 / np.sqrt(labels)
    normal = [
        (
            0.80 + rng.normal(0, f1_error),
            0.90 + rng.normal(0, auc_error),
            positives,
            positives,
            labels,
        )
        for _ in range(3)
    ]
    store_windows(engine, [*normal, (0.70, 0.82, positives, positives, labels)], names)
    clock = lambda: datetime.fromtimestamp(START + HOUR * 4 + 60, UTC)  # noqa: E731
    DetectJob(engine, DETECTION, clock=clock, alerts=AlertsConfig())()
    found = firing(engine)
    if opens:
        ((metric, routed),) = found  # one incident of the model, led by one of them
        assert metric in ("f1", "roc_auc") and routed["severity"] == "critical"
    else:
        assert found == []
    with Session(engine) as session:  # the drop is on record either way, as scored
        scores = dict(
            session.execute(
                select(Series.metric, Anomaly.score).join(Anomaly, Anomaly.series_id == Series.id)
            ).all()
        )
    assert (min(scores.get("f1", 0.0), scores.get("roc_auc", 0.0)) >= 95.0) is opens


def test_the_estimates_before_labels_do_not_keep_the_labelled_metrics_from_being_scored(
    engine: store.Engine,
) -> None:
    """A window's estimate is stored when it closes, its accuracy a day later: scored as
    one entity (one watermark), the accuracy would come for rows already scored and be
    stored unjudged; as two, a drop in the late accuracy is found."""
    info = SeriesInfo("predictions", "churn", SeriesKind.QUALITY)
    labels = {"model": "churn", "version": "3"}
    rng = np.random.default_rng(2)
    accuracy = rng.binomial(1000, 0.92, 20) / 1000
    accuracy[15] = 0.80  # 14 standard errors: an anomaly, once judged

    def stored(hours: range, *, estimates: bool, at_hour: int) -> None:
        samples = [
            Sample(SeriesKey.of(name, labels), info, START + HOUR * i, value)
            for i in hours
            for name, value in (
                (("estimated_accuracy", 0.92),)
                if estimates
                else (("accuracy", float(accuracy[i])), ("labelled_rows", 1000.0))
            )
        ]
        save_samples(engine, samples, at=datetime.fromtimestamp(START + HOUR * at_hour, UTC))

    now = {"hour": 0}
    clock = lambda: datetime.fromtimestamp(START + HOUR * now["hour"], UTC)  # noqa: E731
    job = DetectJob(engine, DETECTION, clock=clock, alerts=AlertsConfig())  # one daemon
    stored(range(30), estimates=True, at_hour=31)  # each window when it closed
    stored(range(6), estimates=False, at_hour=31)  # the labels of the first six are in
    now["hour"] = 31
    job()
    stored(range(6, 20), estimates=False, at_hour=40)  # a day later, the next ones'
    now["hour"] = 40
    job()
    with Session(engine) as session:
        found = session.execute(
            select(Series.metric, Anomaly.ts).join(Anomaly, Anomaly.series_id == Series.id)
        ).all()
    assert ("accuracy", START + HOUR * 15) in found


def test_a_label_feed_that_stops_opens_an_incident_of_its_own_entity(
    engine: store.Engine,
) -> None:
    """How many of a window's predictions got their label is known once the window is
    settled (label_delay after it), long after its accuracy was scored: an entity of its
    own, so the late coverage is judged, and a feed that stops opens an incident."""
    info = SeriesInfo("predictions", "churn", SeriesKind.QUALITY)
    labels = {"model": "churn", "version": "3"}
    rng = np.random.default_rng(3)
    sent = rng.poisson(1000, 30).astype(float)
    labelled = rng.binomial(sent.astype(int), 0.98).astype(float)
    labelled[27:] = rng.binomial(sent[27:].astype(int), 0.05)  # the feed stopped at hour 27

    def stored(names: tuple[str, ...], values: list[np.ndarray], at_hour: int) -> None:
        samples = [
            Sample(SeriesKey.of(name, labels), info, START + HOUR * i, float(column[i]))
            for i in range(30)
            for name, column in zip(names, values, strict=True)
        ]
        save_samples(engine, samples, at=datetime.fromtimestamp(START + HOUR * at_hour, UTC))

    now = {"hour": 31}
    clock = lambda: datetime.fromtimestamp(START + HOUR * now["hour"], UTC)  # noqa: E731
    job = DetectJob(engine, DETECTION, clock=clock, alerts=AlertsConfig())
    accuracy = rng.binomial(labelled.astype(int), 0.9) / np.maximum(labelled, 1)
    stored(("accuracy", "labelled_rows", "predictions"), [accuracy, labelled, sent], 31)
    job()  # the windows' realised metrics, scored as they come
    assert firing(engine) == []
    coverage = labelled / sent
    stored(("label_coverage", "settled_predictions"), [coverage, sent], 55)  # settled
    now["hour"] = 55
    job()
    ((metric, routed),) = firing(engine)
    assert metric == "label_coverage" and routed["model"] == "churn"
    with Session(engine) as session:
        found = session.execute(
            select(Series.metric, Anomaly.ts).join(Anomaly, Anomaly.series_id == Series.id)
        ).all()
    assert {ts for metric, ts in found if metric == "label_coverage"} == {
        START + HOUR * i for i in (27, 28, 29)
    }
    assert not [m for m, _ in found if m == "settled_predictions"]  # a size: never judged
