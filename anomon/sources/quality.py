"""Classification and regression quality of many windows at once, on whole arrays.

The ``predictions`` source needs accuracy, precision, recall, F1, log loss and ROC AUC
for every (group, window) of a prediction log. Calling ``sklearn.metrics`` once per
window costs about a millisecond of input checking each, which dominates on a week of
hourly windows per model; here one ``bincount`` builds every window's confusion matrix
and the metrics follow from it. The definitions are sklearn's, to the letter (the
tests compare every metric with ``sklearn.metrics`` on random windows):

* precision / recall / F1 with ``zero_division=0``; ``binary`` is the positive class,
  ``macro`` the mean over the classes present in the window (in truth or prediction),
  ``weighted`` the mean weighted by each class's true count;
* log loss with probabilities clipped to ``[eps, 1 - eps]`` (multiclass rows
  normalised to sum to one first); ROC AUC by the rank-sum (Mann-Whitney) identity with
  midranks for ties, one-vs-rest for multiclass (macro or support-weighted).

Undefined values (AUC of a window with one class only) are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Labelled:
    """The labelled rows of a log, coded: ``window`` in ``[0, windows)``, ``truth`` and
    ``predicted`` in ``[0, len(classes))``; ``scores`` is None, the probability of the
    positive class (1-D), or one column per class (2-D, in ``classes`` order)."""

    window: IntArray
    truth: IntArray
    predicted: IntArray
    windows: int
    classes: int
    scores: FloatArray | None = None


def classification_metrics(rows: Labelled, *, average: str, positive: int) -> dict[str, FloatArray]:
    """Return accuracy, precision, recall, f1 (and log_loss, roc_auc with scores) per window;
    for ``binary``, also ``predicted_positives`` and ``actual_positives`` (the labelled
    rows predicted / truly of the positive class: what precision and recall are measured on).

    ``average`` is ``binary`` (of class code ``positive``), ``macro`` or ``weighted``.
    Windows without labelled rows are NaN throughout.
    """
    matrix = confusion_matrices(rows)
    total = matrix.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.trace(matrix, axis1=1, axis2=2) / total
    metrics = {"accuracy": accuracy, **_precision_recall_f1(matrix, average, positive)}
    if rows.scores is not None:
        metrics["log_loss"] = _log_loss(rows, positive)
        metrics["roc_auc"] = _roc_auc(rows, positive, average)
    empty = total == 0
    for values in metrics.values():
        values[empty] = np.nan
    return metrics


def confusion_matrices(rows: Labelled) -> IntArray:
    """Return one confusion matrix (truth x predicted) per window, shape (W, K, K)."""
    k = rows.classes
    flat = (rows.window * k + rows.truth) * k + rows.predicted
    return np.bincount(flat, minlength=rows.windows * k * k).reshape(rows.windows, k, k)


def _precision_recall_f1(matrix: IntArray, average: str, positive: int) -> dict[str, FloatArray]:
    hits = np.diagonal(matrix, axis1=1, axis2=2).astype(np.float64)
    support = matrix.sum(axis=2).astype(np.float64)  # true count per class
    claimed = matrix.sum(axis=1).astype(np.float64)  # predicted count per class
    per_class = {
        "precision": _ratio(hits, claimed),
        "recall": _ratio(hits, support),
        "f1": _ratio(2 * hits, support + claimed),
    }
    if average == "binary":
        found = {name: values[:, positive].copy() for name, values in per_class.items()}
        # the samples precision and recall are proportions of (sampling.py judges them so)
        found["predicted_positives"] = claimed[:, positive].copy()
        found["actual_positives"] = support[:, positive].copy()
        return found
    # macro: the classes present in the window (sklearn's labels=None); weighted: support
    weights = ((support + claimed) > 0).astype(np.float64) if average == "macro" else support
    norm = weights.sum(axis=1)
    return {
        name: np.where(norm > 0, (values * weights).sum(axis=1) / np.maximum(norm, 1), 0.0)
        for name, values in per_class.items()
    }


def _ratio(top: FloatArray, bottom: FloatArray) -> FloatArray:
    """``top / bottom`` with 0 where ``bottom`` is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def _log_loss(rows: Labelled, positive: int) -> FloatArray:
    scores = _scores(rows)
    if scores.ndim == 1:
        p = np.clip(scores, EPS, 1 - EPS)
        hit = rows.truth == positive
        losses = -np.where(hit, np.log(p), np.log1p(-p))
    else:
        p = np.clip(scores / scores.sum(axis=1, keepdims=True), EPS, 1 - EPS)
        losses = -np.log(p[np.arange(p.shape[0]), rows.truth])
    return _window_mean(rows, losses)


def _roc_auc(rows: Labelled, positive: int, average: str) -> FloatArray:
    scores = _scores(rows)
    if scores.ndim == 1:
        return binary_auc(rows.window, rows.truth == positive, scores, rows.windows)
    return _multiclass_auc(rows, scores, "macro" if average == "binary" else average)


def binary_auc(
    window: IntArray, hit: npt.NDArray[np.bool_], score: FloatArray, windows: int
) -> FloatArray:
    """ROC AUC per window from the rank sum of the positives (midranks for ties)."""
    order = np.lexsort((score, window))
    w, s, h = window[order], score[order], hit[order]
    n = w.size
    position = np.arange(n)
    starts = np.r_[True, w[1:] != w[:-1]] if n else np.zeros(0, dtype=bool)
    rank0 = position - np.maximum.accumulate(np.where(starts, position, 0))
    tie_start = starts | np.r_[True, s[1:] != s[:-1]] if n else starts
    group = np.cumsum(tie_start) - 1
    first = rank0[tie_start]
    size = np.bincount(group)
    midrank = (first + (size - 1) / 2.0 + 1.0)[group]
    positives = np.bincount(w, weights=h, minlength=windows)
    count = np.bincount(w, minlength=windows).astype(np.float64)
    negatives = count - positives
    rank_sum = np.bincount(w, weights=midrank * h, minlength=windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    auc[(positives == 0) | (negatives == 0)] = np.nan
    return auc


def _multiclass_auc(rows: Labelled, scores: FloatArray, average: str) -> FloatArray:
    """One-vs-rest AUC per window, like sklearn's ``multi_class="ovr"``: undefined (NaN)
    when a class is missing from the window's truth."""
    probabilities = scores / scores.sum(axis=1, keepdims=True)
    per_class = np.stack(
        [
            binary_auc(rows.window, rows.truth == k, probabilities[:, k], rows.windows)
            for k in range(rows.classes)
        ],
        axis=1,
    )
    if average == "macro":
        return np.asarray(per_class.mean(axis=1))  # NaN if any class is undefined
    support = confusion_matrices(rows).sum(axis=2).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((per_class * support).sum(axis=1) / support.sum(axis=1))


def _scores(rows: Labelled) -> FloatArray:
    assert rows.scores is not None
    return rows.scores


def _window_mean(rows: Labelled, values: FloatArray) -> FloatArray:
    count = np.bincount(rows.window, minlength=rows.windows).astype(np.float64)
    total = np.bincount(rows.window, weights=values, minlength=rows.windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


REGRESSION_METRICS = ("mae", "rmse", "mape", "r2", "bias")


def regression_metrics(
    window: IntArray, predicted: FloatArray, target: FloatArray, windows: int
) -> dict[str, FloatArray]:
    """Return mae, rmse, mape, r2 and bias (mean of prediction - target) per window.

    ``window`` codes each labelled row's window in ``[0, windows)``. sklearn's
    definitions: ``mean_absolute_error``, the root of ``mean_squared_error``,
    ``mean_absolute_percentage_error`` (a fraction, |target| floored at machine
    epsilon) and ``r2_score`` (NaN for fewer than two rows; with a constant target,
    1 if every prediction is exact, else 0). Windows without rows are NaN throughout.
    """
    n = np.bincount(window, minlength=windows).astype(np.float64)
    error = predicted - target
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_target = np.bincount(window, weights=target, minlength=windows) / n
        # sums of squares around each window's own mean: two passes, no cancellation
        total = np.bincount(window, weights=(target - mean_target[window]) ** 2, minlength=windows)
        squared = np.bincount(window, weights=error**2, minlength=windows)
        found = {
            "mae": np.bincount(window, weights=np.abs(error), minlength=windows) / n,
            "rmse": np.sqrt(squared / n),
            "mape": np.bincount(
                window, weights=np.abs(error) / np.maximum(np.abs(target), EPS), minlength=windows
            )
            / n,
            "bias": np.bincount(window, weights=error, minlength=windows) / n,
        }
        r2 = 1.0 - squared / total
    constant = total == 0
    r2 = np.where(constant, np.where(squared == 0, 1.0, 0.0), r2)
    found["r2"] = np.where(n < 2, np.nan, r2)
    for values in found.values():
        values[n == 0] = np.nan
    return found


# Once a window is settled (older than label_delay): the share of its predictions that got
# a label by then, and how many predictions that share is of. A label feed that stops (or
# falls behind) shows here as a drop, judged in units of its sampling error.
LABEL_ARRIVAL_METRICS = ("label_coverage", "settled_predictions")

ESTIMATED_METRICS = (
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
)


def estimated_metrics(
    window: IntArray,
    predicted_positive: npt.NDArray[np.bool_],
    probability: FloatArray,
    windows: int,
) -> dict[str, FloatArray]:
    """Confidence-based performance estimation (NannyML's CBPE) of a binary classifier
    per window, without labels: each row's calibrated probability of the positive class
    ``probability`` is its expected share of a true positive (if predicted positive) or
    a false negative (if not), so the window's expected confusion matrix is a sum, and
    accuracy, precision, recall and F1 follow from it (0 where undefined, as sklearn's
    ``zero_division=0``). Windows without rows are NaN."""
    p = np.asarray(probability, dtype=np.float64)
    yes = np.asarray(predicted_positive, dtype=bool)
    n = np.bincount(window, minlength=windows).astype(np.float64)
    tp = _sums(window[yes], p[yes], windows)
    fp = _sums(window[yes], 1.0 - p[yes], windows)
    fn = _sums(window[~yes], p[~yes], windows)
    tn = _sums(window[~yes], 1.0 - p[~yes], windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        found = {
            "estimated_accuracy": (tp + tn) / n,
            "estimated_precision": _ratio(tp, tp + fp),
            "estimated_recall": _ratio(tp, tp + fn),
            "estimated_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
    for values in found.values():
        values[n == 0] = np.nan
    return found


def estimated_multiclass_metrics(
    window: IntArray,
    predicted: IntArray,
    probabilities: FloatArray,
    windows: int,
    *,
    average: str,
) -> dict[str, FloatArray]:
    """CBPE of a multiclass classifier per window: row ``i``'s calibrated probabilities
    ``probabilities[i]`` (one column per class, summing to 1) are its expected shares of
    the true classes, so the window's expected confusion matrix (true x predicted) is a
    sum; accuracy is its diagonal's share, and precision, recall and F1 per class follow,
    averaged ``macro`` (over the classes predicted or expected in the window) or
    ``weighted`` (by each class's expected true count). Windows without rows are NaN."""
    k = probabilities.shape[1]
    cell = window * k + predicted  # (window, predicted class) of each row
    # expected[w, true, predicted]: the probabilities of each true class, summed per cell
    expected = np.stack(
        [
            np.bincount(cell, weights=probabilities[:, j], minlength=windows * k).reshape(
                windows, k
            )
            for j in range(k)
        ],
        axis=1,
    )
    n = np.bincount(window, minlength=windows).astype(np.float64)
    tp = np.einsum("wcc->wc", expected)
    predicted_count = expected.sum(axis=1)
    true_mass = expected.sum(axis=2)
    precision = _ratio(tp, predicted_count)
    recall = _ratio(tp, true_mass)
    f1 = _ratio(2 * tp, predicted_count + true_mass)
    if average == "weighted":
        weights = true_mass
    else:  # macro: the classes the window predicts or is expected to hold
        weights = ((predicted_count > 0) | (true_mass > 1e-9)).astype(np.float64)
    total = np.maximum(weights.sum(axis=1), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        found = {
            "estimated_accuracy": tp.sum(axis=1) / n,
            "estimated_precision": (precision * weights).sum(axis=1) / total,
            "estimated_recall": (recall * weights).sum(axis=1) / total,
            "estimated_f1": (f1 * weights).sum(axis=1) / total,
        }
    for values in found.values():
        values[n == 0] = np.nan
    return found


def _sums(window: IntArray, weights: FloatArray, windows: int) -> FloatArray:
    """The sum of ``weights`` per window."""
    return np.bincount(window, weights=weights, minlength=windows).astype(np.float64)


DRIFT_METRICS = (
    "drift_psi",
    "drift_js",
    "drift_wasserstein",
    "drift_class_js",
    "mean_confidence",
    "low_margin_share",
)
DRIFT_BINS = 10  # reference deciles
LOW_MARGIN = 0.1  # a score within this of 0.5 is a prediction the model is unsure of
# (multiclass: top two classes within twice this of each other)
PSI_FLOOR = 1e-4  # a bin's share never below this in the PSI (an empty bin is not infinite)
REFERENCE_SKETCH = 1000  # quantiles that stand for the reference in the Wasserstein distance


def drift_metrics(
    window: IntArray,
    scores: FloatArray,
    predicted: npt.NDArray[np.bool_] | IntArray,
    reference: FloatArray,
    reference_predicted: npt.NDArray[np.bool_] | IntArray,
    windows: int,
    *,
    classes: int = 2,
    margin: FloatArray | None = None,
) -> dict[str, FloatArray]:
    """How far each window's scores and predicted classes are from the ``reference``
    ones, per window, without labels.

    ``scores`` are a binary model's probability of its positive class (``predicted``
    then says which rows are predicted positive), or a multiclass model's probability of
    its top class (``predicted`` the class codes, below ``classes``, and ``margin`` each
    row's top probability less its second). ``drift_psi`` (population stability index)
    and ``drift_js`` (Jensen-Shannon distance, base 2: scipy's ``jensenshannon``) compare
    the shares of the rows in bins fixed by the reference's deciles;
    ``drift_wasserstein`` is the exact first Wasserstein distance between the window's
    scores and the reference's (scipy's ``wasserstein_distance``), the reference taken as
    its :func:`reference_sketch` (1,000 quantiles: within 0.1% of the reference's range,
    at a twentieth of the cost per window); ``drift_class_js`` the Jensen-Shannon
    distance of the predicted-class mix; ``mean_confidence`` the mean probability of the
    class predicted (binary: ``max(s, 1 - s)``) and ``low_margin_share`` the share of
    rows whose top two classes are within ``2 * LOW_MARGIN`` of each other (binary: a
    score within LOW_MARGIN of 0.5). Distances, not p-values (which flag any large
    window). Windows without rows are NaN.
    """
    n = np.bincount(window, minlength=windows).astype(np.float64)
    ordered = np.sort(reference)
    edges = np.unique(np.quantile(ordered, np.linspace(0, 1, DRIFT_BINS + 1)[1:-1]))
    bins = edges.size + 1
    where = np.searchsorted(edges, scores, side="right")
    counts = np.bincount(window * bins + where, minlength=windows * bins).reshape(windows, bins)
    mine = counts / np.maximum(n, 1.0)[:, None]
    ref = np.bincount(np.searchsorted(edges, ordered, side="right"), minlength=bins)
    theirs = ref / max(ordered.size, 1)
    a, b = np.maximum(mine, PSI_FLOOR), np.maximum(theirs, PSI_FLOOR)
    if margin is None:  # a binary model's score: its confidence and margin from 0.5
        confidence, margin = np.maximum(scores, 1.0 - scores), np.abs(2.0 * scores - 1.0)
    else:
        confidence = scores
    everything = np.zeros(reference_predicted.size, dtype=np.int64)
    found = {
        "drift_psi": ((a - b) * np.log(a / b)).sum(axis=1),
        "drift_js": _js_distance(mine, theirs[None, :]),
        "drift_wasserstein": _wasserstein_each(window, scores, reference_sketch(ordered), windows),
        "drift_class_js": _js_distance(
            _class_shares(window, predicted, classes, windows),
            _class_shares(everything, reference_predicted, classes, 1),
        ),
        "mean_confidence": _sums(window, confidence, windows) / np.maximum(n, 1.0),
        "low_margin_share": _sums(window, (margin < 2 * LOW_MARGIN).astype(np.float64), windows)
        / np.maximum(n, 1.0),
    }
    for values in found.values():
        values[n == 0] = np.nan
    return found


def top_two(probabilities: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each row's top class probability and its margin over the second, the rows'
    scores normalised to sum to 1 (what a multiclass model's drift is measured on)."""
    shares = probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
    ordered = np.sort(shares, axis=1)
    second = ordered[:, -2] if shares.shape[1] > 1 else np.zeros(shares.shape[0])
    return ordered[:, -1], ordered[:, -1] - second


def reference_sketch(ordered: FloatArray) -> FloatArray:
    """REFERENCE_SKETCH evenly spaced quantiles of sorted reference values (all of them
    when there are fewer)."""
    if ordered.size <= REFERENCE_SKETCH:
        return ordered
    levels = (np.arange(REFERENCE_SKETCH) + 0.5) / REFERENCE_SKETCH
    sketch: FloatArray = np.quantile(ordered, levels)
    return sketch


def _class_shares(
    window: IntArray, predicted: npt.NDArray[np.bool_] | IntArray, classes: int, windows: int
) -> FloatArray:
    """Each window's shares of rows per predicted class, ``(windows, classes)``."""
    codes = predicted.astype(np.int64)
    counts = np.bincount(window * classes + codes, minlength=windows * classes)
    table = counts.reshape(windows, classes).astype(np.float64)
    shares: FloatArray = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
    return shares


def _js_distance(p: FloatArray, q: FloatArray) -> FloatArray:
    """Row-wise Jensen-Shannon distance, base 2 (scipy's ``jensenshannon``): the root of
    the mean of the two Kullback-Leibler divergences from their midpoint."""
    m = (p + q) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        right = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    divergence: FloatArray = np.maximum((left + right) / 2.0, 0.0)
    return np.sqrt(divergence)


def _wasserstein_each(
    window: IntArray, scores: FloatArray, ordered: FloatArray, windows: int
) -> FloatArray:
    """The first Wasserstein distance of each window's scores to the sorted reference:
    the integral of the absolute difference of the two empirical CDFs, exactly as scipy
    computes it (one sort per window; the reference is sorted once)."""
    found = np.full(windows, np.nan)
    order = np.lexsort((scores, window))
    starts = np.searchsorted(window[order], np.arange(windows + 1))
    for w in range(windows):
        values = scores[order[starts[w] : starts[w + 1]]]
        if values.size == 0 or ordered.size == 0:
            continue
        everything = np.sort(np.concatenate([values, ordered]))
        deltas = np.diff(everything)
        u = np.searchsorted(values, everything[:-1], side="right") / values.size
        v = np.searchsorted(ordered, everything[:-1], side="right") / ordered.size
        found[w] = float(np.sum(np.abs(u - v) * deltas))
    return found
