"""Quality judged in units of its sampling error, volumes as counts (issue 15, point 1):
a table of cases through the entity detector, as the daemon and replay run it."""

from __future__ import annotations

import numpy as np
import pytest

from anomon.config import DetectionConfig
from anomon.detect import Solo
from anomon.detect.sampling import (
    AUC,
    COUNT,
    F1,
    PROPORTION,
    SIZE,
    SamplingModel,
    sample_rows,
    sampling_models,
)
from anomon.sources.quality import binary_auc

HOUR = 3600
START = 1_796_000_000 // HOUR * HOUR
MODEL = ["accuracy", "labelled_rows", "predictions"]  # the predictions source's series
CONFIG = DetectionConfig.model_validate({"forest": {"enabled": False}, "seasonality": []})


def windows(
    count: int, *, accuracy: float, labels: int, seed: int = 0, predictions: int | None = None
) -> np.ndarray:
    """``count`` hourly windows of a model whose accuracy is ``accuracy``, measured on
    about ``labels`` labels each (binomial and Poisson noise, as real windows have)."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(labels, count).astype(float)
    hits = rng.binomial(n.astype(int), accuracy)
    sent = n + rng.poisson(predictions - labels, count) if predictions else n
    return np.column_stack([hits / n, n, sent])


def last_scores(history: np.ndarray, new_row: list[float]) -> np.ndarray:
    """Each metric's own score for ``new_row`` after ``history`` (one window per hour)."""
    detector = Solo(MODEL, CONFIG)
    rows = np.vstack([history, [new_row]])
    scores = detector.update(START + HOUR * np.arange(len(rows)), rows)
    return scores.metric_scores[-1]


def test_the_series_of_a_predictions_source_get_their_sampling_models() -> None:
    assert sampling_models([*MODEL, "f1", "precision", "predicted_positives", "recall"]) == [
        SamplingModel(PROPORTION, 1),
        SamplingModel(SIZE),  # labelled_rows: a sample size, not judged
        SamplingModel(COUNT),
        None,  # f1: judged by rarity (it is no proportion of one sample)
        SamplingModel(PROPORTION, 5),  # precision: of the rows predicted positive
        SamplingModel(SIZE),
        None,  # recall without actual_positives: no sample size, judged by rarity
    ]
    assert sampling_models(["accuracy", "predictions"]) == [None, None]  # no labelled_rows
    # a settled window's share of labelled predictions, on how many predictions it had
    assert sampling_models(["label_coverage", "settled_predictions"]) == [
        SamplingModel(PROPORTION, 1),
        SamplingModel(SIZE),
    ]


@pytest.mark.parametrize(
    ("coverage", "alarms"),
    [
        (0.97, False),  # 97 % of 500 labelled by label_delay against a usual 98 %: noise
        (0.60, True),  # the labels feed fell behind: 40 % of the window still unlabelled
        (0.0, True),  # the feed stopped
    ],
)
def test_a_label_feed_that_stops_or_falls_behind_alarms(coverage: float, alarms: bool) -> None:
    """Label arrival, judged once a window is settled: a proportion on its predictions."""
    rng = np.random.default_rng(7)
    n = rng.poisson(500, 24).astype(float)
    history = np.column_stack([rng.binomial(n.astype(int), 0.98) / n, n])
    detector = Solo(["label_coverage", "settled_predictions"], CONFIG)
    rows = np.vstack([history, [coverage, 500.0]])
    scores = detector.update(START + HOUR * np.arange(len(rows)), rows)
    assert not scores.anomaly[:-1].any()  # ordinary hours never alarm
    assert bool(scores.metric_scores[-1, 0] >= CONFIG.threshold) is alarms
    assert scores.metric_scores[-1, 1] == 0.0  # the size is never judged
    more = Solo(["label_coverage", "settled_predictions"], CONFIG)
    rows[-1, 0] = 1.0  # every label in: never bad (coverage's bad way is down), so it
    # scores what no deviation at all does (the one-sided tail of z = 0, 1 in 2)
    assert more.update(START + HOUR * np.arange(len(rows)), rows).metric_scores[-1, 0] < 10.0


@pytest.mark.parametrize(
    ("labels", "alarms"),
    [
        (4000, True),  # 0.92 -> 0.85 on 4,000 labels: 16 standard errors, at once
        (40, False),  # the same drop on 40 labels: 1.6 standard errors, noise
    ],
)
def test_an_accuracy_drop_alarms_by_its_sample_size_from_the_third_window(
    labels: int, alarms: bool
) -> None:
    history = windows(3, accuracy=0.92, labels=labels)  # three windows: the baseline
    accuracy, _, _ = last_scores(history, [0.85, labels, labels])
    assert bool(accuracy >= CONFIG.threshold) is alarms
    if alarms:
        assert accuracy >= 95.0  # critical: one in ten million, and more


def test_a_long_history_widens_by_the_variation_between_windows_not_the_sample() -> None:
    """Once 20 windows show an accuracy that moves more than its sampling error (a
    model that is better on some hours than others), a move of that size is normal."""
    rng = np.random.default_rng(4)
    history = windows(48, accuracy=0.92, labels=4000)
    history[:, 0] += rng.normal(0, 0.02, 48)  # +-2 points between windows
    accuracy, _, _ = last_scores(history, [0.90, 4000, 4000])
    assert accuracy < CONFIG.threshold  # 1 sd of the hours' variation
    accuracy, _, _ = last_scores(history, [0.80, 4000, 4000])
    assert accuracy >= CONFIG.threshold  # 6 of them


@pytest.mark.parametrize(
    ("predictions", "labelled", "quiet"),
    [
        (118, 120, True),  # the 118 against 120: the noise of a count
        (120, 106, True),  # a window still filling (106 of 120 labels so far)
        (120, 50, True),  # ... first reported with min_labels = 50 of them
        (40, 120, False),  # traffic fell to a third: an event
        (300, 120, False),  # or rose to 2.5 times
    ],
)
def test_volumes_are_judged_as_counts(predictions: int, labelled: int, quiet: bool) -> None:
    """Predictions are a count; the labelled rows a sample size, never judged."""
    history = windows(30, accuracy=0.9, labels=120, predictions=120)
    _, labelled_score, predictions_score = last_scores(history, [0.9, labelled, predictions])
    assert bool(max(labelled_score, predictions_score) < CONFIG.threshold) is quiet


def test_the_first_windows_are_too_short_then_learning_then_ok() -> None:
    detector = Solo(MODEL, CONFIG)
    rows = windows(25, accuracy=0.9, labels=500)
    ts = START + HOUR * np.arange(25)
    detector.update(ts[:2], rows[:2])
    assert detector.detector.quality(int(ts[1]), stale_after=600)[0] == "too_short"
    detector.update(ts[2:5], rows[2:5])
    assert detector.detector.quality(int(ts[4]), stale_after=600)[0] == "learning"
    assert detector.detector.learning_until()[0] == int(ts[4]) + (20 - 5) * HOUR
    detector.update(ts[5:], rows[5:])
    assert detector.detector.quality(int(ts[-1]), stale_after=600)[0] == "ok"


def test_a_window_without_its_label_count_is_not_judged_on_accuracy() -> None:
    history = windows(10, accuracy=0.92, labels=4000)
    accuracy, _, _ = last_scores(history, [0.5, float("nan"), 4000])
    assert accuracy == 0.0


BINARY = ["f1", "roc_auc", "predicted_positives", "actual_positives", "labelled_rows"]


def binary_windows(
    count: int, *, labels: int, rng: np.random.Generator, separation: float = 1.5
) -> np.ndarray:
    """``count`` windows of a binary model (30 % positives, scores that separate the
    classes by ``separation`` sigmas, cut half-way) on about ``labels`` labels each:
    the columns of :data:`BINARY`."""
    n = rng.poisson(labels, count)
    window = np.repeat(np.arange(count), n)
    truth = rng.random(window.size) < 0.3
    score = rng.normal(truth * separation, 1.0)
    predicted = score > separation / 2
    hits = np.bincount(window, truth & predicted, count)
    claimed = np.bincount(window, predicted, count)
    actual = np.bincount(window, truth, count)
    auc = binary_auc(window, truth, score, count)
    return np.column_stack([2 * hits / (claimed + actual), auc, claimed, actual, n])


@pytest.mark.parametrize("labels", [60, 400, 2000])
def test_f1_and_auc_have_the_sampling_error_of_their_effective_rows(labels: int) -> None:
    """F1's effective rows (delta method) give its spread over windows within 10 %;
    Hanley-McNeil's AUC variance is, as is known, a little wide for binormal scores
    (never narrower: a wider error alarms less, not more)."""
    rows = binary_windows(1000, labels=labels, rng=np.random.default_rng(labels))
    f1, auc, claimed, actual, n = rows.T
    kind = np.full(f1.size, F1)
    f1_rows = sample_rows(kind, np.full(f1.size, np.median(f1)), claimed, actual)
    f1_error = np.sqrt(np.median(f1) * (1 - np.median(f1)) / np.median(f1_rows))
    assert f1_error == pytest.approx(f1.std(), rel=0.10)
    auc_rows = sample_rows(np.full(f1.size, AUC), np.full(f1.size, np.median(auc)), actual, n)
    auc_error = np.sqrt(np.median(auc) * (1 - np.median(auc)) / np.median(auc_rows))
    assert np.std(auc) * 0.95 <= auc_error <= np.std(auc) * 1.3
    # a proportion's rows are its own; a window with no positives has no AUC error
    assert (
        sample_rows(np.array([PROPORTION]), np.array([0.9]), np.array([50.0]), np.array([7.0]))[0]
        == 50
    )
    assert sample_rows(np.array([AUC]), np.array([0.9]), np.array([0.0]), np.array([50.0]))[0] == 0


def test_a_binary_models_f1_and_auc_are_judged_by_their_sample_size() -> None:
    """F1 and ROC AUC of a binary model are judged on the windows' labels, as accuracy
    is: scored from the third window, and a window first reported with few labels (its
    noise is wide) is no alarm where the same value on thousands of labels is one.
    Judged by rarity they waited 50 windows to be scored at all, and after three weeks
    the small window below scored 97 (F1) and 99.7 (AUC) against the narrow spread of
    complete ones."""
    assert sampling_models(BINARY) == [
        SamplingModel(F1, 2, 3),
        SamplingModel(AUC, 3, 4),
        SamplingModel(SIZE),
        SamplingModel(SIZE),
        SamplingModel(SIZE),
    ]
    rng = np.random.default_rng(3)
    history = binary_windows(500, labels=3000, rng=rng)  # three weeks of hours
    f1, auc = np.median(history[:, 0]), np.median(history[:, 1])

    def scores(rows: np.ndarray) -> np.ndarray:
        detector = Solo(BINARY, CONFIG)
        found = detector.update(START + HOUR * np.arange(len(rows)), rows)
        assert not found.anomaly[: len(rows) - 1].any()  # ordinary windows never alarm
        return found.metric_scores[-1, :2]

    # 40 labels (12 positives): F1 0.1 and AUC 0.08 below their usual, one standard error
    small = [f1 - 0.1, auc - 0.08, 12.0, 12.0, 40.0]
    assert (scores(np.vstack([history, [small]])) < CONFIG.threshold).all()
    # the same on 3,000 labels: eight and ten standard errors, from the third window on
    large = [f1 - 0.1, auc - 0.08, 900.0, 900.0, 3000.0]
    assert (scores(np.vstack([history, [large]])) >= 95.0).all()
    assert (scores(np.vstack([history[:3], [large]])) >= CONFIG.threshold).all()
    # better than usual is never bad (their bad way is down)
    assert (scores(np.vstack([history, [[f1 + 0.1, auc + 0.05, 900, 900, 3000]]])) < 10).all()
