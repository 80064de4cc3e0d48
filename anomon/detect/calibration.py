"""Calibration: every detector's raw score becomes a 0-100 score from its own history.

The raw score of a row is compared with the distribution of that detector's raw scores
over the trailing ``calibration_window`` rows of the same series: its median ``q50``,
``q90`` and ``q99``. The tail beyond ``q90`` is taken as exponential (each further
``q99 - q90`` is ten times rarer), which gives a tail probability ``p`` for any raw
score, however extreme. The score is ``100 * tanh(-log10(p) / DECADES_SCALE)``:

    q50 -> 0,  q90 -> 27,  q99 -> 50,  p = 1e-3 -> 68,  1e-4 -> 80,  1e-6 -> 93,  1e-8 -> 98

so a threshold means the same rarity for every detector and every series, and the
score keeps ordering extreme events (a cap would make every big spike 100 alike).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DECADES_SCALE = 4.0 / np.arctanh(0.8)  # a tail probability of 1e-4 scores exactly 80
CALIBRATION_QUANTILES = (0.5, 0.9, 0.99)


def calibrate(
    raw: FloatArray,
    reference: FloatArray,
    *,
    span_floor: float,
    prior: FloatArray | tuple[float, float, float] | None = None,
    prior_weight: float = 0.0,
) -> FloatArray:
    """Map raw scores to 0-100 given their reference ``(rows, [q50, q90, q99, count])``.

    With a ``prior`` (the q50, q90, q99 the raw score has when nothing is wrong), the
    reference quantiles of a short history are shrunk towards it, as if ``prior_weight``
    rows of ordinary data had been seen: a detector with little history neither
    panics at its first unusual value nor ignores it.

    ``span_floor`` is the smallest ``q99 - q90`` (and ``q90 - q50``) that counts as a
    real spread in the raw score's units, so a detector whose history is nearly constant
    does not call every small change a one-in-a-million event. Rows without reference
    quantiles (NaN) or without a raw score score 0.
    """
    quantiles, count = reference[:, :3], reference[:, 3:4]
    if prior is not None and prior_weight > 0:
        quantiles = (count * quantiles + prior_weight * np.asarray(prior)) / (count + prior_weight)
    q50, q90, q99 = quantiles[:, 0], quantiles[:, 1], quantiles[:, 2]
    body = np.maximum(q90 - q50, span_floor)
    tail = np.maximum(q99 - q90, span_floor)
    decades = np.where(raw <= q90, (raw - q50) / body, 1.0 + (raw - q90) / tail)
    score = 100.0 * np.tanh(np.maximum(decades, 0.0) / DECADES_SCALE)
    return np.where(np.isnan(score), 0.0, score)
