"""Robust z-scores: the deviation from a median in units of a robust spread.

:func:`robust_deviation` is the one formula; :class:`RobustZScoreDetector` applies it
to i.i.d. rows as a scikit-learn outlier estimator, and the time-series runner applies
it causally with trailing statistics. Sign convention (scikit-learn's, everywhere in
anomon): ``score_samples`` is higher for more normal rows, ``decision_function`` is
``score_samples - offset_`` and negative means anomalous, ``predict`` returns -1 for
anomalies and 1 for normal rows.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri, stdtrit
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

FloatArray = npt.NDArray[np.float64]
Direction = Literal["up", "down", "both"]

IQR_TO_SIGMA = 1.349  # the interquartile range of a normal distribution, in sigmas


def robust_scale(
    q25: FloatArray,
    q75: FloatArray,
    magnitude: FloatArray,
    *,
    scale_floor_rel: float = 1e-3,
) -> FloatArray:
    """The robust spread behind a z-score: the interquartile range in sigmas.

    Floored at ``scale_floor_rel`` of the series' level ``magnitude`` (and at the float
    resolution) so a flat series does not divide by zero.
    """
    scale = np.maximum((q75 - q25) / IQR_TO_SIGMA, scale_floor_rel * magnitude)
    return np.maximum(scale, np.finfo(np.float64).eps * np.maximum(magnitude, 1.0))


# The IQR estimate of sigma from n normal rows has the sampling variance of a sample
# standard deviation with about n / 2.72 degrees of freedom (asymptotic variance of the
# IQR estimator, 1.36 sigma^2 / n, against 1 / (2 nu) for a t scale).
IQR_DEGREES_PER_ROW = 1.0 / 2.72
_INFLATION_ROWS = 4096  # past this many rows the inflation is below 0.2%: none


def small_sample_inflation(rows: FloatArray) -> FloatArray:
    """How much wider a spread estimated from ``rows`` rows must be taken, honestly.

    A new row's deviation from the median of ``n`` rows has variance ``sigma^2 (1 +
    pi / (2 n))`` (the median's own error), and a spread estimated from few rows is
    itself uncertain, which turns a normal tail into a Student-t one. The factor is the
    ratio of the t to the normal 99th percentile, with the IQR estimate's degrees of
    freedom, times the first term: 3.9 for 5 rows, 1.8 for 10, 1.1 for 50, 1.003 for
    2,000, 1 from 4,096 on (or without a count).
    """
    n = np.nan_to_num(np.asarray(rows, dtype=np.float64), nan=float(_INFLATION_ROWS))
    index = np.clip(n, 2, _INFLATION_ROWS).astype(np.int64)
    factors: FloatArray = _inflation_table()[index]
    return factors


_TABLE: list[FloatArray] = []


def _inflation_table() -> FloatArray:
    """:func:`small_sample_inflation` for 0 to ``_INFLATION_ROWS`` rows, built once."""
    if not _TABLE:
        n = np.maximum(np.arange(_INFLATION_ROWS + 1, dtype=np.float64), 2.0)
        degrees = np.maximum(n * IQR_DEGREES_PER_ROW, 1.0)
        ratio = stdtrit(degrees, 0.99) / ndtri(0.99)
        table = ratio * np.sqrt(1.0 + np.pi / (2.0 * n))
        table[-1] = 1.0
        _TABLE.append(table)
    return _TABLE[0]


def robust_offset(
    values: FloatArray,
    median: FloatArray,
    magnitude: FloatArray,
    *,
    min_deviation_abs: float = 0.0,
    min_deviation_rel: float = 0.0,
) -> FloatArray:
    """``values - median``, with a deviation smaller than ``max(min_deviation_abs,
    min_deviation_rel * magnitude)`` counted as none: tiny wiggles on quiet series never
    alert."""
    offset = values - median
    negligible = np.abs(offset) < np.maximum(min_deviation_abs, min_deviation_rel * magnitude)
    return np.where(negligible, 0.0, offset)


def robust_deviation(
    values: FloatArray,
    q25: FloatArray,
    median: FloatArray,
    q75: FloatArray,
    *,
    min_deviation_abs: float = 0.0,
    min_deviation_rel: float = 0.0,
    scale_floor_rel: float = 1e-3,
    level: FloatArray | None = None,
) -> FloatArray:
    """Return ``(values - median) / scale``, signed, with two guards for quiet series.

    ``scale`` is :func:`robust_scale` (the series' level is ``level``, default
    ``|median|``) and small offsets count as none (:func:`robust_offset`).
    """
    magnitude = np.abs(median if level is None else level)
    scale = robust_scale(q25, q75, magnitude, scale_floor_rel=scale_floor_rel)
    offset = robust_offset(
        values,
        median,
        magnitude,
        min_deviation_abs=min_deviation_abs,
        min_deviation_rel=min_deviation_rel,
    )
    return offset / scale


DIRECTION_WEIGHTS: dict[str, tuple[float, float]] = {
    "up": (1.0, 0.0),
    "down": (0.0, 1.0),
    "both": (1.0, 1.0),
}


def directional(z: FloatArray, direction: Direction) -> FloatArray:
    """Return how far ``z`` goes the bad way: ``up`` keeps rises, ``down`` drops, ``both``
    either."""
    up, down = DIRECTION_WEIGHTS[direction]
    return weighted_directional(z, up, down)


def weighted_directional(
    z: FloatArray, up: FloatArray | float, down: FloatArray | float
) -> FloatArray:
    """:func:`directional` with a direction per value: weights 1 / 0 for rises and drops.

    The one formula both the per-series and the fleet-wide paths use, so they agree.
    """
    return np.maximum(np.maximum(z * up, -z * down), 0.0)


class RobustZScoreDetector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """Flag rows whose robust z-score in any column is unusual.

    ``fit`` learns each column's quartiles; ``score_samples`` is minus the largest
    directional z-score of a row (higher = more normal). ``offset_`` is ``-threshold``
    when ``contamination="auto"``, else the training score below which that share of
    the training rows lies (as in scikit-learn's IsolationForest).
    """

    def __init__(
        self,
        *,
        threshold: float = 3.5,
        contamination: float | str = "auto",
        direction: Direction = "both",
        min_deviation_abs: float = 0.0,
        min_deviation_rel: float = 0.0,
    ) -> None:
        self.threshold = threshold
        self.contamination = contamination
        self.direction = direction
        self.min_deviation_abs = min_deviation_abs
        self.min_deviation_rel = min_deviation_rel

    def fit(self, X: Any, y: Any = None) -> RobustZScoreDetector:  # noqa: N803 - sklearn's name
        """Learn the quartiles of every column of ``X``; return self."""
        if self.threshold <= 0:
            raise ValueError(f"threshold must be positive, got: {self.threshold}")
        if self.direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, got: {self.direction!r}")
        if self.contamination != "auto" and not (
            isinstance(self.contamination, float | int) and 0 < self.contamination <= 0.5
        ):
            raise ValueError(
                f"contamination must be 'auto' or in (0, 0.5], got: {self.contamination!r}"
            )
        data = validate_data(self, X, dtype=np.float64)
        self.q25_, self.median_, self.q75_ = np.percentile(data, [25, 50, 75], axis=0)
        if self.contamination == "auto":
            self.offset_ = -float(self.threshold)
        else:
            share = float(self.contamination)
            self.offset_ = float(np.percentile(self.score_samples(data), 100 * share))
        return self

    def score_samples(self, X: Any) -> FloatArray:  # noqa: N803
        """Return minus the largest directional robust z-score of each row."""
        check_is_fitted(self)
        data = validate_data(self, X, dtype=np.float64, reset=False)
        z = robust_deviation(
            data,
            self.q25_,
            self.median_,
            self.q75_,
            min_deviation_abs=self.min_deviation_abs,
            min_deviation_rel=self.min_deviation_rel,
        )
        worst: FloatArray = np.max(directional(z, self.direction), axis=1)
        return -worst

    def decision_function(self, X: Any) -> FloatArray:  # noqa: N803
        """Return ``score_samples - offset_``: negative for anomalous rows."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> npt.NDArray[np.int64]:  # noqa: N803
        """Return -1 for anomalous rows and 1 for normal ones."""
        return np.where(self.decision_function(X) < 0, -1, 1)
