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

The series are the ``predictions`` source's, by name (:func:`sampling_models`): in an
entity with a ``labelled_rows`` column, ``accuracy`` is a proportion on it, ``precision``
one on ``predicted_positives`` and ``recall`` one on ``actual_positives`` (binary
models), and ``predictions`` is a count. Those sample sizes (``labelled_rows``,
``predicted_positives``, ``actual_positives``) are not judged at all (kind SIZE): they
grow while a window's labels come in, and a window is first reported with part of them,
so they would be compared with complete windows and cry wolf. A feed of labels that
stops is seen instead in an entity of its own, reported once a window is settled:
``label_coverage``, a proportion on ``settled_predictions`` (a size). For these metrics
this score replaces the rarity-calibrated ones; their expected value stays the
baseline median.
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

NONE, PROPORTION, COUNT, SIZE = 0, 1, 2, 3  # the kinds, as codes for whole-array work
# a proportion -> the column of the rows it is measured on
SAMPLE_SIZE_OF = {
    "accuracy": "labelled_rows",
    "precision": "predicted_positives",
    "recall": "actual_positives",
    "label_coverage": "settled_predictions",  # a settled window's share labelled
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
    ``size``) or COUNT."""

    kind: int
    size: int = -1


def sampling_models(metrics: Sequence[str]) -> list[SamplingModel | None]:
    """The sampling model of each of an entity's metrics (None: judged by rarity)."""
    column = {name: i for i, name in reversed(list(enumerate(metrics)))}  # the first one
    found: list[SamplingModel | None] = []
    for name in metrics:
        size = SAMPLE_SIZE_OF.get(name)
        if size is not None and size in column:
            found.append(SamplingModel(PROPORTION, column[size]))
        elif name in COUNTS and "labelled_rows" in column:
            found.append(SamplingModel(COUNT))
        elif name in SIZES and ("labelled_rows" in column or "label_coverage" in column):
            found.append(SamplingModel(SIZE))
        else:
            found.append(None)
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
    """0-100 scores of values ``x`` of PROPORTION or COUNT metrics (elementwise).

    ``q`` holds each value's baseline quartiles and count (``(rows, 4)``), ``n`` the
    rows a proportion was measured on and ``n_typical`` the baseline median of that
    count; ``up`` / ``down`` weigh rises and drops (1 / 0: the bad direction). A value
    without a baseline, or a proportion without a sample size, scores 0.
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
    observed = ((q[:, 2] - q[:, 0]) / IQR_TO_SIGMA) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        # p0 moved half a row towards 1/2: a baseline of exactly 1 (or 0) has a variance
        p0 = (np.clip(median, 0.0, 1.0) * n_typical + 0.5) / (n_typical + 1.0)
        binomial = p0 * (1.0 - p0)
        now = np.where(kind == PROPORTION, binomial / n, np.maximum(median, 1.0))
        typical = np.where(kind == PROPORTION, binomial / n_typical, np.maximum(median, 1.0))
        extra = np.where(rows >= SPREAD_ROWS, np.maximum(observed - typical, 0.0), 0.0)
        z: FloatArray = (x - median) / np.sqrt(now + extra)
    usable = (kind == COUNT) | ((kind == PROPORTION) & (n > 0))
    return np.where(usable, z, np.nan)
