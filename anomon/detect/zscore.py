"""Robust z-scores: the deviation from a median in units of a robust spread.

The pieces the time-series runner (:mod:`anomon.detect.entity`) applies causally with
trailing statistics: the spread (:func:`robust_scale`, widened for short histories by
:func:`small_sample_inflation`), the offset (:func:`robust_offset`) and the direction
that is bad (:func:`weighted_directional`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri, stdtrit

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


DIRECTION_WEIGHTS: dict[str, tuple[float, float]] = {
    "up": (1.0, 0.0),
    "down": (0.0, 1.0),
    "both": (1.0, 1.0),
}


def weighted_directional(
    z: FloatArray, up: FloatArray | float, down: FloatArray | float
) -> FloatArray:
    """How far ``z`` goes the bad way, with a direction per value: ``(up, down)`` weights
    1 / 0 for rises and drops (:data:`DIRECTION_WEIGHTS`); never below 0."""
    return np.maximum(np.maximum(z * up, -z * down), 0.0)
