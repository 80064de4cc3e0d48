"""Whole-array window metrics agree with sklearn.metrics, window by window."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from anomon.sources.quality import Labelled, classification_metrics, confusion_matrices


def _random_log(seed: int, classes: int, windows: int, rows: int) -> Labelled:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, rows)
    noisy = rng.integers(0, classes, rows)
    predicted = np.where(rng.random(rows) < 0.7, truth, noisy)
    raw = rng.random((rows, classes)) + 2.0 * np.eye(classes)[truth] * rng.random((rows, 1))
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    scores = probabilities[:, 1] if classes == 2 else probabilities
    # ties on purpose: AUC must use midranks
    scores = np.round(scores, 2)
    return Labelled(
        window=rng.integers(0, windows, rows),
        truth=truth,
        predicted=predicted,
        windows=windows,
        classes=classes,
        scores=scores.astype(np.float64),
    )


def _expected(log: Labelled, w: int, average: str) -> dict[str, float]:
    picked = log.window == w
    y, p = log.truth[picked], log.predicted[picked]
    scores = log.scores[picked] if log.scores is not None else None
    kwargs = {"average": average, "zero_division": 0}
    if average == "binary":
        kwargs["pos_label"] = 1
    expected = {
        "accuracy": metrics.accuracy_score(y, p),
        "precision": metrics.precision_score(y, p, **kwargs),
        "recall": metrics.recall_score(y, p, **kwargs),
        "f1": metrics.f1_score(y, p, **kwargs),
    }
    assert scores is not None
    labels = list(range(log.classes))
    if scores.ndim == 2:
        scores = scores / scores.sum(axis=1, keepdims=True)
    expected["log_loss"] = metrics.log_loss(y, scores, labels=labels)
    if len(set(y.tolist())) == log.classes:
        if scores.ndim == 1:
            expected["roc_auc"] = metrics.roc_auc_score(y, scores)
        else:
            expected["roc_auc"] = metrics.roc_auc_score(
                y, scores, multi_class="ovr", average=average, labels=labels
            )
    return expected


@pytest.mark.parametrize(
    ("classes", "average"), [(2, "binary"), (2, "macro"), (3, "macro"), (4, "weighted")]
)
def test_it_matches_sklearn_metrics_in_every_window(classes: int, average: str) -> None:
    log = _random_log(seed=classes, classes=classes, windows=12, rows=900)
    got = classification_metrics(log, average=average, positive=1)
    for w in range(log.windows):
        for name, value in _expected(log, w, average).items():
            assert got[name][w] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, w)


def test_it_leaves_auc_undefined_for_a_window_with_one_class() -> None:
    log = Labelled(
        window=np.array([0, 0, 1, 1]),
        truth=np.array([1, 1, 0, 1]),
        predicted=np.array([1, 0, 0, 1]),
        windows=3,
        classes=2,
        scores=np.array([0.9, 0.2, 0.1, 0.8]),
    )
    got = classification_metrics(log, average="binary", positive=1)
    assert np.isnan(got["roc_auc"][0])
    assert got["roc_auc"][1] == 1.0
    assert got["accuracy"][0] == 0.5
    assert all(np.isnan(values[2]) for values in got.values())  # no rows at all


def test_it_counts_every_row_in_its_windows_confusion_matrix() -> None:
    log = _random_log(seed=7, classes=3, windows=5, rows=400)
    matrices = confusion_matrices(log)
    assert matrices.shape == (5, 3, 3)
    assert matrices.sum() == 400
    w = 2
    picked = log.window == w
    assert (matrices[w] == metrics.confusion_matrix(log.truth[picked], log.predicted[picked])).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_agree_with_sklearn_window_by_window(seed: int) -> None:
    from anomon.sources.quality import regression_metrics

    rng = np.random.default_rng(seed)
    windows, rows = 6, 400
    window = rng.integers(0, windows - 2, rows)  # two windows without rows
    target = rng.normal(100, 20, rows)
    target[window == 1] = 42.0  # a constant target: R² is 1 or 0 (sklearn's finite rule)
    predicted = target + rng.normal(3, 10, rows)
    window = np.append(window, windows - 2)  # a window of one row: R² undefined
    target, predicted = np.append(target, 5.0), np.append(predicted, 6.0)
    got = regression_metrics(window, predicted, target, windows)
    for w in range(windows - 2):
        y, p = target[window == w], predicted[window == w]
        assert got["mae"][w] == pytest.approx(metrics.mean_absolute_error(y, p))
        assert got["rmse"][w] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, p)))
        assert got["mape"][w] == pytest.approx(metrics.mean_absolute_percentage_error(y, p))
        assert got["r2"][w] == pytest.approx(metrics.r2_score(y, p))
        assert got["bias"][w] == pytest.approx(np.mean(p - y))
    assert np.isnan(got["r2"][windows - 2]) and got["mae"][windows - 2] == pytest.approx(1.0)
    assert all(np.isnan(values[windows - 1]) for values in got.values())


def test_drift_distances_match_scipys_definitions_window_by_window() -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    from anomon.sources.quality import DRIFT_BINS, PSI_FLOOR, drift_metrics, reference_sketch

    rng = np.random.default_rng(3)
    reference = rng.beta(0.6, 0.6, 5000)
    reference_positive = reference > 0.5
    windows = 4
    parts = [rng.beta(0.6, 0.6, 800), rng.beta(2, 2, 800), rng.beta(0.6, 2.5, 800)]
    scores = np.concatenate(parts)
    window = np.repeat(np.arange(3), 800)  # the fourth window has no rows
    positive = scores > 0.5
    got = drift_metrics(window, scores, positive, reference, reference_positive, windows)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, DRIFT_BINS + 1)[1:-1]))
    theirs = np.bincount(np.searchsorted(edges, reference, side="right")) / reference.size
    for w, values in enumerate(parts):
        mine = np.bincount(np.searchsorted(edges, values, side="right"), minlength=theirs.size)
        mine = mine / values.size
        a, b = np.maximum(mine, PSI_FLOOR), np.maximum(theirs, PSI_FLOOR)
        assert got["drift_psi"][w] == pytest.approx(np.sum((a - b) * np.log(a / b)))
        assert got["drift_js"][w] == pytest.approx(jensenshannon(mine, theirs, base=2))
        sketch = reference_sketch(np.sort(reference))
        assert got["drift_wasserstein"][w] == pytest.approx(wasserstein_distance(values, sketch))
        # the sketch stands for the reference: within a thousandth
        exact = wasserstein_distance(values, reference)
        assert got["drift_wasserstein"][w] == pytest.approx(exact, abs=1e-3)
        mix = [np.mean(values <= 0.5), np.mean(values > 0.5)]
        base = [np.mean(~reference_positive), np.mean(reference_positive)]
        assert got["drift_class_js"][w] == pytest.approx(jensenshannon(mix, base, base=2))
        assert got["mean_confidence"][w] == pytest.approx(np.mean(np.maximum(values, 1 - values)))
        assert got["low_margin_share"][w] == pytest.approx(np.mean(np.abs(values - 0.5) < 0.1))
    assert got["drift_js"][0] < 0.05 < got["drift_js"][1]  # the same shape, then a shift
    assert all(np.isnan(values[3]) for values in got.values())


def test_a_multiclass_models_drift_is_measured_on_its_top_class_and_class_mix() -> None:
    from scipy.spatial.distance import jensenshannon

    from anomon.sources.quality import drift_metrics, top_two

    rng = np.random.default_rng(8)
    reference = rng.dirichlet([0.4, 0.4, 0.4], 4000)
    unsure = rng.dirichlet([3.0, 3.0, 3.0], 900)  # the model got unsure
    shifted = rng.dirichlet([0.4, 0.4, 2.0], 900)  # it predicts the third class far more
    windows = 2
    scores = np.vstack([unsure, shifted])
    window = np.repeat(np.arange(2), 900)
    top, margin = top_two(scores)
    reference_top, _ = top_two(reference)
    got = drift_metrics(
        window, top, scores.argmax(axis=1), reference_top, reference.argmax(axis=1), windows,
        classes=3, margin=margin,
    )  # fmt: skip
    base = np.bincount(reference.argmax(axis=1), minlength=3) / reference.shape[0]
    for w, part in enumerate((unsure, shifted)):
        shares = part / part.sum(axis=1, keepdims=True)
        ordered = np.sort(shares, axis=1)
        mix = np.bincount(part.argmax(axis=1), minlength=3) / part.shape[0]
        assert got["drift_class_js"][w] == pytest.approx(jensenshannon(mix, base, base=2))
        assert got["mean_confidence"][w] == pytest.approx(ordered[:, -1].mean())
        assert got["low_margin_share"][w] == pytest.approx(
            np.mean(ordered[:, -1] - ordered[:, -2] < 0.2)
        )
    assert got["drift_js"][0] > got["drift_js"][1]  # unsure: its top probability moved
    assert got["drift_class_js"][1] > 3 * got["drift_class_js"][0]  # shifted: its mix did
