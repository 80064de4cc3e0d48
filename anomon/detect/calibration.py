"""Calibration: every detector's raw score becomes a 0-100 score from its own history.

The raw score of a row is compared with the distribution of that detector's raw scores
over a long trailing reference of the same series, summarised by order statistics at
fixed tail levels (``levels``: the median, 1 in 10, 1 in 100) and, for the z-score
detectors, its maximum. A raw score between two levels gets the rarity in between
(linear in the raw score, logarithmic in the probability); past the rarest level each
further step of the last level spacing is taken as ten times rarer (an exponential
tail), and that step is never smaller than :data:`RANGE_FLOOR` of the reference's range.
The score is ``100 * tanh(decades / DECADES_SCALE)`` where ``decades`` is ``-log10`` of
the tail probability:

    q50 -> 0,  q90 -> 27,  q99 -> 50,  p = 1e-3 -> 68,  1e-4 -> 80,  1e-6 -> 93,  1e-8 -> 98

so a threshold means the same rarity for every detector and every series, and the
score keeps ordering extreme events (a cap would make every big spike 100 alike).

Why the range floor: a metric that is flat nearly always and spikes now and then has
``q90 == q99``; without the floor its next ordinary spike would be a one-in-1e50 event
and it would out-shout every other metric of its host. With it, a spike as large as the
largest ever seen is at most 50 decades past the tail: still rare, no longer infinite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DECADES_SCALE = 4.0 / np.arctanh(0.8)  # a tail probability of 1e-4 scores exactly 80
# The forest's reference: the median, 1 in 10 and 1 in 100.
CALIBRATION_QUANTILES = (0.5, 0.9, 0.99)
# The z-score detectors' reference: the median, 1 in 10 and 1 in 100, then the maximum
# (1.0 is not a tail level: it only sets the range floor). More tail levels (1 in 1,000)
# were measured and lost: the far tail of a long reference holds its past faults, and
# extrapolating from the q90-q99 spacing ranks new extremes better.
RARITY_QUANTILES = (0.5, 0.9, 0.99, 1.0)
RANGE_FLOOR = 0.02  # the tail's decade step, as a share of the reference's range
# tanh reaches 1.0 in float64 from about 19 of its units (70 decades): past this a score
# of 100 tells no more, and the decades it stands for are taken as this many
MAX_DECADES = 50.0


def level_decades(levels: Sequence[float]) -> FloatArray:
    """``-log10(1 - level)`` of each tail level, the median pinned at 0 decades."""
    tail = np.asarray([level for level in levels if level < 1.0], dtype=np.float64)
    decades = -np.log10(1.0 - tail)
    decades[0] = 0.0  # the median is "nothing unusual", not "1 in 2"
    return decades


def calibrate(
    raw: FloatArray,
    reference: FloatArray,
    *,
    span_floor: float | FloatArray,
    levels: Sequence[float] = CALIBRATION_QUANTILES,
    prior: FloatArray | Sequence[float] | None = None,
    prior_weight: float = 0.0,
) -> FloatArray:
    """Map raw scores to 0-100 given their reference ``(rows, [quantiles..., count])``.

    ``levels`` are the quantile levels of the reference's columns, ascending, starting at
    the median; a last level of 1.0 is the reference's maximum and only sets the range
    floor. With a ``prior`` (the tail quantiles the raw score has when nothing is wrong),
    the quantiles of a short history are shrunk towards it, as if ``prior_weight`` rows
    of ordinary data had been seen: a detector with little history neither panics at
    its first unusual value nor ignores it; a row with no reference at all is judged on
    the prior alone.

    ``span_floor`` (one value, or one per row) is the smallest spacing per decade that
    counts as a real spread in the raw score's units, so a detector whose history is
    nearly constant does not call every small change a one-in-a-million event. Rows
    without reference quantiles (NaN) or without a raw score score 0.
    """
    decades_of = calibrated_decades(
        raw,
        reference,
        span_floor=span_floor,
        levels=levels,
        prior=prior,
        prior_weight=prior_weight,
    )
    score = decades_score(decades_of)
    return np.where(np.isnan(score), 0.0, score)


def calibrated_decades(
    raw: FloatArray,
    reference: FloatArray,
    *,
    span_floor: float | FloatArray,
    levels: Sequence[float] = CALIBRATION_QUANTILES,
    prior: FloatArray | Sequence[float] | None = None,
    prior_weight: float = 0.0,
) -> FloatArray:
    """The ``-log10`` tail probability of each raw score (NaN where it cannot be told)."""
    has_max = levels[-1] >= 1.0
    knots_at = level_decades(levels)
    k = knots_at.size
    quantiles, count = reference[:, :k], reference[:, -1:]
    if prior is not None and prior_weight > 0:
        expected = np.broadcast_to(np.asarray(prior, dtype=np.float64), quantiles.shape)
        shrunk = (count * quantiles + prior_weight * expected) / (count + prior_weight)
        # no reference yet (its first row): the prior alone
        quantiles = np.where(np.isnan(quantiles), expected, shrunk)
    # knots never closer than span_floor per decade: a flat reference has a real slope
    floor = np.asarray(span_floor, dtype=np.float64)
    widths = np.diff(quantiles, axis=1)
    steps = np.maximum(widths, (floor[:, None] if floor.ndim else floor) * np.diff(knots_at))
    knots = np.concatenate([quantiles[:, :1], quantiles[:, :1] + np.cumsum(steps, axis=1)], axis=1)
    tail = np.maximum(steps[:, -1] / (knots_at[-1] - knots_at[-2]), floor)
    if has_max:
        spread = reference[:, k] - reference[:, 0]
        tail = np.fmax(tail, RANGE_FLOOR * spread)
    x = raw[:, None] if raw.ndim == 1 else raw
    # the segment each raw score falls in: 0 below the first knot, k past the last
    segment = np.sum(x >= knots, axis=1)
    inner = np.clip(segment - 1, 0, k - 2)
    rows = np.arange(knots.shape[0])
    lo, hi = knots[rows, inner], knots[rows, inner + 1]
    within = knots_at[inner] + (raw - lo) / (hi - lo) * (knots_at[inner + 1] - knots_at[inner])
    beyond = knots_at[-1] + (raw - knots[:, -1]) / tail
    below = (raw - knots[:, 0]) / steps[:, 0] * knots_at[1]
    out = np.where(segment >= k, beyond, np.where(segment == 0, below, within))
    invalid = np.isnan(raw) | np.isnan(knots).any(axis=1)
    return np.where(invalid, np.nan, out)


def decades_score(decades: npt.ArrayLike) -> FloatArray:
    """The 0-100 score of a ``-log10`` tail probability: ``100 * tanh(decades /
    DECADES_SCALE)``, none below 0 (NaN stays NaN)."""
    found: FloatArray = 100.0 * np.tanh(np.maximum(decades, 0.0) / DECADES_SCALE)
    return found


def score_decades(score: FloatArray) -> FloatArray:
    """The decades (``-log10`` tail probability) a 0-100 score stands for: the inverse of
    ``100 * tanh(decades / DECADES_SCALE)``. A score of 100 (the float's tanh has run out)
    is :data:`MAX_DECADES`; NaN counts as 0, no evidence."""
    share = np.clip(np.nan_to_num(score, nan=0.0) / 100.0, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        found = DECADES_SCALE * np.arctanh(share)
    clipped: FloatArray = np.minimum(found, MAX_DECADES)
    return clipped
