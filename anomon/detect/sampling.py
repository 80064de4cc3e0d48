"""Metrics judged in units of their own sampling error: model quality and volumes.

A model's accuracy per window is a proportion measured on ``labelled_rows`` labels: an
accuracy of 0.80 from 40 labels is far less sure than one from 4,000, and judging both
against the rarity of past deviations (the other detectors) cries wolf on small windows
and waits days for a history to calibrate against. Counts of a window (``predictions``,
``labelled_rows``) are volumes: 118 against a usual 120 is noise of a count, not an
event. Here both are judged as a statistician would:

* a **proportion** ``p`` measured on ``n`` rows against its baseline ``p0`` (the median
  of the past windows): ``z = (p - p0) / sqrt(p0 (1 - p0) / n + tau²)``;
* a **count** ``c`` against its baseline ``mu``: ``z = (c - mu) / sqrt(mu + tau²)``
  (Poisson);

where ``tau²`` is the variation between windows beyond sampling (overdispersion, as
in a funnel plot): the observed variance of the past values (their interquartile range)
less the sampling variance a typical window has, once :data:`SPREAD_ROWS` windows
give it; before that it is 0 and a metric is judged on its sampling error alone, from
its :data:`MIN_WINDOWS`-th window on. ``z`` becomes a 0-100 score through the normal
tail, on the scale of the calibrated detectors (a tail probability of 1e-4 scores 80).

Two quality metrics of a binary model are no proportion of one sample, but their
sampling error is known all the same, and is put as the rows of a proportion with the
same error (an *effective* sample size, :func:`sample_rows`):

* **F1** is ``2 TP / (PP + AP)`` (``PP`` the labelled rows predicted positive, ``AP``
  those truly positive). Given the rows that count (TP + FP + FN) it is a function of
  the binomial share ``TP / (TP + FP + FN)``, and the delta method gives it the error of
  a proportion on ``(PP + AP) / (2 - F1)`` rows: between ``(PP + AP) / 2`` and ``PP + AP``;
* **ROC AUC** has the error of the Mann-Whitney statistic on ``AP`` positives and ``N``
  negatives (Hanley and McNeil, 1982): ``V = (A (1 - A) + (AP - 1)(Q1 - A²) + (N - 1)
  (Q2 - A²)) / (AP N)``, ``Q1 = A / (2 - A)``, ``Q2 = 2 A² / (1 + A)``, which is a
  proportion on ``A (1 - A) / V`` rows.

Both are taken at the baseline's value (the error the metric has when nothing changed).

The series are the ``predictions`` source's, by name (:func:`sampling_models`): in an
entity with a ``labelled_rows`` column, ``accuracy`` is a proportion on it, ``precision``
one on ``predicted_positives`` and ``recall`` one on ``actual_positives``, ``f1`` one on
the effective rows of both and ``roc_auc`` one on those of ``actual_positives`` and
``labelled_rows`` (binary models), and ``predictions`` is a count. Those sample sizes
(``labelled_rows``, ``predicted_positives``, ``actual_positives``) are not judged at
all (kind SIZE): they grow while a window's labels come in, and a window is first
reported with part of them, so they would be compared with complete windows and cry
wolf. A feed of labels that stops is seen instead in an entity of its own, reported
once a window is settled: ``label_coverage``, a proportion on ``settled_predictions``
(a size). For these metrics this score replaces the rarity-calibrated ones; their
expected value stays the baseline median. Log loss is a mean of per-row losses whose
spread no window reports: it is judged by rarity, as any other metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from anomon.detect.calibration import decades_score
from anomon.detect.zscore import IQR_TO_SIGMA

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# the kinds, as codes for whole-array work: F1 and AUC are judged as proportions on
# their effective rows (sample_rows)
NONE, PROPORTION, COUNT, SIZE, F1, AUC = 0, 1, 2, 3, 4, 5
PROPORTIONS = (PROPORTION, F1, AUC)
# a proportion -> the column of the rows it is measured on
SAMPLE_SIZE_OF = {
    "accuracy": "labelled_rows",
    "precision": "predicted_positives",
    "recall": "actual_positives",
    "label_coverage": "settled_predictions",  # a settled window's share labelled
}
# a binary model's metric of no one sample -> its kind and the two columns of its rows
EFFECTIVE_SIZES_OF = {
    "f1": (F1, "predicted_positives", "actual_positives"),
    "roc_auc": (AUC, "actual_positives", "labelled_rows"),
}
COUNTS = ("predictions",)
# the rows a proportion is measured on: they grow while a window's labels come in, so a
# window first reported with part of its labels would be judged against complete ones
SIZES = ("labelled_rows", "predicted_positives", "actual_positives", "settled_predictions")
MIN_WINDOWS = 3  # a baseline median needs this many windows: scored from the 3rd on
SPREAD_ROWS = 20  # windows before the variation between windows is estimated


@dataclass(frozen=True, slots=True)
class SamplingModel:
    """How one metric is judged: ``kind`` PROPORTION (on the rows counted in column
    ``size``), F1 (``size`` the predicted positives, ``other`` the actual ones), AUC
    (``size`` the actual positives of the ``other`` labelled rows) or COUNT."""

    kind: int
    size: int = -1
    other: int = -1


def sampling_models(metrics: Sequence[str]) -> list[SamplingModel | None]:
    """The sampling model of each of an entity's metrics (None: judged by rarity)."""
    column = {name: i for i, name in reversed(list(enumerate(metrics)))}  # the first one
    found: list[SamplingModel | None] = []
    for name in metrics:
        size = SAMPLE_SIZE_OF.get(name)
        kind, first, second = EFFECTIVE_SIZES_OF.get(name, (NONE, "", ""))
        if size is not None and size in column:
            found.append(SamplingModel(PROPORTION, column[size]))
        elif kind != NONE and first in column and second in column:
            found.append(SamplingModel(kind, column[first], column[second]))
        elif name in COUNTS and "labelled_rows" in column:
            found.append(SamplingModel(COUNT))
        elif name in SIZES and ("labelled_rows" in column or "label_coverage" in column):
            found.append(SamplingModel(SIZE))
        else:
            found.append(None)
    return found


def sample_rows(
    kind: IntArray, baseline: FloatArray, size: FloatArray, other: FloatArray
) -> FloatArray:
    """The rows of a proportion whose sampling error each value's metric has at its
    ``baseline`` value (elementwise; NaN for a kind that is no proportion).

    PROPORTION: ``size`` itself. F1: ``(size + other) / (2 - F1)``, ``size`` and ``other``
    the predicted and actual positives. AUC: ``A (1 - A) / V``, ``V`` the Hanley-McNeil
    variance of an AUC ``A`` on ``size`` positives of ``other`` labelled rows.
    """
    a = np.clip(baseline, 1e-6, 1.0 - 1e-6)  # an AUC of exactly 1 has a variance too
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_rows = (size + other) / (2.0 - a)
        positives, negatives = size, other - size
        q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
        variance = (
            a * (1.0 - a) + (positives - 1.0) * (q1 - a * a) + (negatives - 1.0) * (q2 - a * a)
        ) / (positives * negatives)
        auc_rows = np.where(positives * negatives > 0, a * (1.0 - a) / variance, 0.0)
    found: FloatArray = np.select(
        [kind == PROPORTION, kind == F1, kind == AUC], [size, f1_rows, auc_rows], np.nan
    )
    return found


def sampled_scores(
    kind: IntArray,
    x: FloatArray,
    q: FloatArray,
    n: FloatArray,
    n_typical: FloatArray,
    up: FloatArray | float,
    down: FloatArray | float,
) -> FloatArray:
    """0-100 scores of values ``x`` of proportions (PROPORTION, F1, AUC) or COUNT metrics
    (elementwise).

    ``q`` holds each value's baseline quartiles and count (``(rows, 4)``), ``n`` the
    rows a proportion was measured on and ``n_typical`` those of a typical window (for
    F1 and AUC, their effective rows: :func:`sample_rows`); ``up`` / ``down`` weigh rises
    and drops (1 / 0: the bad direction). A value without a baseline, or a proportion
    without a sample size, scores 0.
    """
    z = sampled_z(kind, x, q, n, n_typical)
    bad = np.maximum(np.maximum(z * up, -z * down), 0.0)
    two_sided = np.broadcast_to(np.asarray(up) + np.asarray(down) >= 2, bad.shape)
    # -log10 of the tail probability, from log_ndtr: exact far into the tail
    decades = -(log_ndtr(-bad) + np.where(two_sided, np.log(2.0), 0.0)) / np.log(10.0)
    score = decades_score(decades)
    return np.where(np.isfinite(score), score, 0.0)


def sampled_z(
    kind: IntArray, x: FloatArray, q: FloatArray, n: FloatArray, n_typical: FloatArray
) -> FloatArray:
    """The deviation of each value from its baseline median in units of its sampling
    error plus the variation between windows (NaN where it cannot be told)."""
    median, rows = q[:, 1], q[:, 3]
    proportion = np.isin(kind, PROPORTIONS)
    observed = ((q[:, 2] - q[:, 0]) / IQR_TO_SIGMA) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        # p0 moved half a row towards 1/2: a baseline of exactly 1 (or 0) has a variance
        p0 = (np.clip(median, 0.0, 1.0) * n_typical + 0.5) / (n_typical + 1.0)
        binomial = p0 * (1.0 - p0)
        now = np.where(proportion, binomial / n, np.maximum(median, 1.0))
        typical = np.where(proportion, binomial / n_typical, np.maximum(median, 1.0))
        extra = np.where(rows >= SPREAD_ROWS, np.maximum(observed - typical, 0.0), 0.0)
        z: FloatArray = (x - median) / np.sqrt(now + extra)
    usable = (kind == COUNT) | (proportion & (n > 0))
    return np.where(usable, z, np.nan)
