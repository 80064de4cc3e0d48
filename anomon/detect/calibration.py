"""Calibration: every detector's raw score becomes a 0-100 score from its own history.

The raw score of a row is compared with the distribution of that detector's raw scores
over the trailing ``calibration_window`` rows of the same series: its median ``q50``,
``q90`` and ``q99``. The tail beyond ``q90`` is taken as exponential (each further
``q99 - q90`` is ten times rarer), which gives a tail probability ``p`` for any raw
score, however extreme. The score is ``20 * -log10(p)``, capped at 100:

    q50 -> 0,  q90 -> 20,  q99 -> 40,  p = 1e-3 -> 60,  1e-4 -> 80,  1e-5 -> 100

so a threshold means the same rarity for every detector and every series.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

POINTS_PER_DECADE = 20.0
CALIBRATION_QUANTILES = (0.5, 0.9, 0.99)


def calibrate(raw: FloatArray, quantiles: FloatArray, *, span_floor: float) -> FloatArray:
    """Map raw scores to 0-100 given their reference quantiles ``(rows, [q50, q90, q99])``.

    ``span_floor`` is the smallest ``q99 - q90`` (and ``q90 - q50``) that counts as a
    real spread in the raw score's units, so a detector whose history is nearly constant
    does not call every small change a one-in-a-million event. Rows without reference
    quantiles (NaN) or without a raw score score 0.
    """
    q50, q90, q99 = quantiles[:, 0], quantiles[:, 1], quantiles[:, 2]
    body = np.maximum(q90 - q50, span_floor)
    tail = np.maximum(q99 - q90, span_floor)
    decades = np.where(raw <= q90, (raw - q50) / body, 1.0 + (raw - q90) / tail)
    score = np.clip(POINTS_PER_DECADE * decades, 0.0, 100.0)
    return np.where(np.isnan(score), 0.0, score)
