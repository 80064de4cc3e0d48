"""Joint deviations grade an entity's alarm: two metrics far out together are rarer than one.

An entity's score is the rarity of its most unusual metric: a row alarms when one
metric's deviation is as rare as the threshold says (1 in 10,000 at 80), whatever the
others do. When a second metric is far out on the same row, the row is rarer than
either alone: with ``n`` metrics having a value in the row, ``d1 >= d2`` the two
largest rarities in decades (``-log10`` of each one's tail probability), independence
gives the largest a chance of about ``n * 10**-d1`` and the second largest
``C(n, 2) * 10**-(2 * d2)``. On the scale the entity's score already uses (a metric's
own rarity, with the same multiplicity convention), the pair stands for

    ``joint = 2 * d2 - log10((n - 1) / 2)`` decades,

and an alarming row's score is raised to that when it is larger -- within its band: a
row below ``open_at_once`` (95) stays below it, so the grade never decides whether an
incident opens at once or is critical; it orders the alarms of each band and names the
second metric as a driver. A host of 14 metrics whose CPU and latency are both at 1 in
10,000 scores just under 95 (one whose CPU alone is, 80); both at 1 in 10 million,
99.9 (either alone: 95.8).

Only rows already at the threshold are graded, and none across a band. Metrics of one
thing are correlated (a model's p50 and p99 latency come from one histogram; its
drift_psi and drift_js measure one shift), so independence overstates them: graded
freely, two correlated metrics at 1 in 300 each in a host of 14 (1 in 75 in an entity
of two) would pass the threshold on an ordinary day, and in a demo run drift_psi (88)
and drift_js (76) of an ordinary window scored 95 and opened an incident at once. So
the threshold keeps its meaning (the rarity of one metric's deviation), and so do the
bands above it; a second metric far out makes an alarm surer, not merely possible.

On the SMD dev machines (one entity each) this raised the mean best F1 / AUC-PR from
0.486 / 0.386 to 0.500 / 0.421, every machine's AUC-PR with it; grading every row
instead (alarms from two mild deviations) gave 0.490 / 0.420, and a lower F1 on
machine-2-1; keeping every graded row below 95 kept almost none of it (0.491 / 0.388):
the pairs that rank faults first are far out together. A series whose override sets
its own threshold is judged by it: a row is graded only where some metric reaches its
own threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from anomon.detect.calibration import decades_score, score_decades

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
    return decades_score(joint)


def graded(
    score: FloatArray,
    joint: FloatArray,
    alarming: npt.NDArray[np.bool_],
    bands: Sequence[float] = (),
) -> FloatArray:
    """``score``, raised on the ``alarming`` rows to ``joint`` (what their two most
    unusual metrics stand for together: :func:`joint_scores`, NaN where an entity has one
    metric), but never across a boundary of ``bands`` the row's own score is below (the
    alarm rules' ``open_at_once``, the critical severity): the grade orders alarms within
    the band their own evidence put them in; other rows unchanged. Alarming: a row where
    some metric reaches its own threshold (an override may set one per series) and the
    score the lowest of them."""
    lifted = np.fmax(score, joint)
    ceiling = np.full(score.shape, np.inf)
    for bound in sorted(bands):  # the first boundary above each row's own score
        ceiling = np.where((score < bound) & np.isinf(ceiling), np.nextafter(bound, 0.0), ceiling)
    found: FloatArray = np.where(alarming, np.minimum(lifted, ceiling), score)
    return found


def joint_leads(
    score: FloatArray, joint: FloatArray, metric_scores: FloatArray
) -> npt.NDArray[np.bool_]:
    """Which rows got their score from two metrics together, ``(rows,)``: the pair's
    score ``joint`` is above every metric's own and the row's ``score`` was raised above
    them too (to the pair's, or to the top of its band: :func:`graded`). On those rows
    both of the two most unusual metrics drive the anomaly."""
    own = np.fmax.reduce(np.nan_to_num(metric_scores, nan=0.0), axis=1, initial=0.0)
    lifted: npt.NDArray[np.bool_] = (joint > own) & (score > own)  # NaN: never
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
