"""Joint deviations grade an entity's alarm: two metrics far out together are rarer than one.

An entity's score is the rarity of its most unusual metric: a row alarms when one
metric's deviation is as rare as the threshold says (1 in 10,000 at 80), whatever the
others do. When a second metric is far out on the same row, the row is rarer than
either alone: with ``n`` metrics having a value in the row, ``d1 >= d2`` the two
largest rarities in decades
(``-log10`` of each one's tail probability), independence gives the largest a chance of
about ``n * 10**-d1`` and the second largest ``C(n, 2) * 10**-(2 * d2)``. On the scale
the entity's score already uses (a metric's own rarity, with the same multiplicity
convention), the pair stands for

    ``joint = 2 * d2 - log10((n - 1) / 2)`` decades,

and an alarming row's score is raised to that when it is larger: a host of 14 metrics
whose CPU and latency are both at 1 in 10,000 scores 96 (it would open an incident at
once), one whose CPU alone is, 80.

Only rows already at the threshold are graded. Metrics of one thing are correlated (a
model's p50 and p99 latency come from one histogram), so independence overstates how
rare two *mild* deviations together are: two correlated metrics at 1 in 300 each in a
host of 14 (1 in 75 in an entity of two) would pass the threshold, on an ordinary day.
Above the threshold the row is an alarm anyway,
and a second metric far out makes it surer, not merely possible. So the threshold keeps
its meaning (the rarity of one metric's deviation), and joint evidence decides how loud
an alarm is: the incident's peak, its severity, whether it opens at once. On the SMD dev
machines (one entity each), this raised the mean best F1 / AUC-PR from 0.486 / 0.386 to
0.500 / 0.424, every machine's AUC-PR with it; grading every row instead (alarms from
two mild deviations) gave 0.490 / 0.420, and lower F1 on machine-2-1. A series whose
override sets its own threshold is judged by it: a row is graded only where some
metric reaches its own threshold.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from anomon.detect.calibration import DECADES_SCALE, score_decades

FloatArray = npt.NDArray[np.float64]


def joint_scores(metric_scores: FloatArray) -> FloatArray:
    """The 0-100 score the two most unusual metrics of each row stand for together,
    from ``(rows, metrics)`` per-metric scores (NaN: no value); 0 where a row has fewer
    than two metrics with a value."""
    rows, metrics = metric_scores.shape
    if metrics < 2 or rows == 0:
        return np.zeros(rows)
    decades = score_decades(metric_scores)  # NaN: 0, no evidence
    present = np.count_nonzero(~np.isnan(metric_scores), axis=1)
    second = -np.partition(-decades, 1, axis=1)[:, 1]
    with np.errstate(divide="ignore"):
        multiplicity = np.log10(np.maximum(present - 1, 1) / 2.0)
    joint = np.where(present >= 2, 2.0 * second - multiplicity, 0.0)
    found: FloatArray = 100.0 * np.tanh(np.maximum(joint, 0.0) / DECADES_SCALE)
    return found


def graded(score: FloatArray, joint: FloatArray, alarming: npt.NDArray[np.bool_]) -> FloatArray:
    """``score``, raised on the ``alarming`` rows to ``joint`` (what their two most
    unusual metrics stand for together: :func:`joint_scores`, NaN where an entity has one
    metric); other rows unchanged. Alarming: a row where some metric reaches its own
    threshold (an override may set one per series) and the score the lowest of them."""
    found: FloatArray = np.where(alarming, np.fmax(score, joint), score)
    return found


def joint_leads(
    score: FloatArray, joint: FloatArray, metric_scores: FloatArray
) -> npt.NDArray[np.bool_]:
    """Which rows got their score from two metrics together, ``(rows,)``: the pair's
    score ``joint`` is above every metric's own and the row's ``score`` reached it. On
    those rows both of the two most unusual metrics drive the anomaly."""
    own = np.fmax.reduce(np.nan_to_num(metric_scores, nan=0.0), axis=1, initial=0.0)
    lifted: npt.NDArray[np.bool_] = (joint > own) & (score >= joint)  # NaN: never
    return lifted


def top_two(metric_scores: FloatArray) -> npt.NDArray[np.bool_]:
    """``(rows, metrics)``: the two metrics with the largest own scores of each row."""
    rows, metrics = metric_scores.shape
    chosen = np.zeros((rows, metrics), dtype=bool)
    if rows == 0 or metrics == 0:
        return chosen
    filled = np.where(np.isnan(metric_scores), -np.inf, metric_scores)
    order = np.argsort(-filled, axis=1, kind="stable")[:, :2]
    chosen[np.arange(rows)[:, None], order] = True
    return chosen & np.isfinite(filled)
