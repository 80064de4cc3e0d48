"""The Numenta Anomaly Benchmark (NAB) score, implemented from NAB's published rules.

For every file, each row gets a *sweep score*: inside a labelled window, a true-positive
reward that falls along a scaled sigmoid from ``tp_weight`` at the window's left edge to
about 0 at its right edge; outside, a false-positive penalty of ``fp_weight`` scaled by
the same sigmoid of the distance past the previous window (a row just after a window
costs little, three window widths later the full penalty). Rows of the probationary
period (the first 15% of a file, at most 750 rows) are not scored. A window counts once,
with its best (earliest) detection; an undetected window costs ``fn_weight``.

One threshold is swept over the whole corpus; the best total is normalised so that the
null detector (no detections) scores 0 and a perfect one (every window at its left
edge) scores 100. Everything is whole-array numpy: the sweep is a cumulative sum of
score changes ordered by threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PROBATION_PERCENT = 0.15

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Profile:
    """NAB's cost matrix."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile(1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile(1.0, 0.11, 2.0),
}


@dataclass(frozen=True, slots=True)
class ScoredFile:
    """The rows of one file prepared for the sweep.

    ``window`` is the window number of each scorable row (-1 outside windows);
    ``position`` the row's sigmoid position (see :func:`scaled_sigmoid`).
    """

    scores: FloatArray
    window: npt.NDArray[np.int64]
    position: FloatArray
    windows: int


@dataclass(frozen=True, slots=True)
class SweepResult:
    """The best threshold of a corpus for one profile, and what it scored."""

    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalized(self) -> float:
        """The NAB score: 0 for the null detector, 100 for a perfect one."""
        if self.perfect == self.null:
            return 0.0
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def scaled_sigmoid(position: FloatArray) -> FloatArray:
    """NAB's reward curve: 2·sigmoid(-5·position) - 1, and -1 from position 3 on."""
    return np.where(position >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0)


def probation_length(rows: int) -> int:
    """Rows at the start of a file that are never scored."""
    return int(min(np.floor(PROBATION_PERCENT * rows), PROBATION_PERCENT * 5000))


def prepare(scores: FloatArray, window_bounds: Sequence[tuple[int, int]]) -> ScoredFile:
    """Compute the window and sigmoid position of every scorable row of one file.

    ``window_bounds`` are (first row, last row) pairs, inclusive, in order, not
    overlapping. Rows in the probationary period are dropped.
    """
    rows = scores.size
    index = np.arange(rows)
    window = np.full(rows, -1, dtype=np.int64)
    position = np.full(rows, 3.0)  # before any window: the full false-positive penalty
    for number, (left, right) in enumerate(window_bounds):
        width = right - left + 1
        inside = slice(left, right + 1)
        window[inside] = number
        position[inside] = -(right - index[inside] + 1) / width
        after_end = window_bounds[number + 1][0] if number + 1 < len(window_bounds) else rows
        past = slice(right + 1, after_end)
        position[past] = np.abs(right - index[past]) / max(width - 1, 1)
    keep = index >= probation_length(rows)
    kept_windows = np.unique(window[keep & (window >= 0)])
    renumber = np.full(len(window_bounds) + 1, -1, dtype=np.int64)
    renumber[kept_windows] = np.arange(kept_windows.size)
    return ScoredFile(
        scores=np.asarray(scores, dtype=np.float64)[keep],
        window=renumber[window[keep]],
        position=position[keep],
        windows=int(kept_windows.size),
    )


def sweep(files: Sequence[ScoredFile], profile: Profile) -> SweepResult:
    """Find the threshold that maximises the corpus' raw score for ``profile``.

    A row is a detection when its score is >= the threshold.
    """
    offsets = np.cumsum([0] + [f.windows for f in files])
    scores = np.concatenate([f.scores for f in files])
    window = np.concatenate(
        [
            np.where(f.window >= 0, f.window + offset, -1)
            for f, offset in zip(files, offsets, strict=False)
        ]
    )
    reward = scaled_sigmoid(np.concatenate([f.position for f in files]))
    total_windows = int(offsets[-1])
    base = -profile.fn_weight * total_windows
    gain = np.where(
        window >= 0,
        reward * profile.tp_weight / scaled_sigmoid(np.array(-1.0)),
        reward * profile.fp_weight,
    )

    order = np.argsort(-scores, kind="stable")
    scores, window, gain = scores[order], window[order], gain[order]
    delta = np.where(window < 0, gain, 0.0)
    # inside a window only improvements of the window's best detection count
    in_window = window >= 0
    if in_window.any():
        delta[in_window] = _window_improvements(
            window[in_window], gain[in_window], profile.fn_weight
        )
    running = base + np.cumsum(delta)
    # the score at a threshold includes every row scoring >= it: the last row of each tie
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    candidates = running[last_of_tie]
    best = int(np.argmax(candidates)) if candidates.size else -1
    if best < 0 or candidates[best] <= base:
        return SweepResult(
            threshold=float("inf"), raw=base, null=base, perfect=profile.tp_weight * total_windows
        )
    return SweepResult(
        threshold=float(scores[last_of_tie][best]),
        raw=float(candidates[best]),
        null=base,
        perfect=profile.tp_weight * total_windows,
    )


def _window_improvements(
    window: npt.NDArray[np.int64], gain: FloatArray, fn_weight: float
) -> FloatArray:
    """For rows in threshold order, how much each raises its window's best score."""
    out = np.zeros(gain.size)
    for number in np.unique(window):
        rows = np.flatnonzero(window == number)
        best = np.maximum.accumulate(gain[rows])
        out[rows] = np.diff(best, prepend=-fn_weight)
    return out


def score_at(files: Sequence[ScoredFile], profile: Profile, threshold: float) -> float:
    """Return the corpus' raw score when rows scoring >= ``threshold`` are detections."""
    total = 0.0
    max_tp = scaled_sigmoid(np.array(-1.0))
    for f in files:
        hit = f.scores >= threshold
        reward = scaled_sigmoid(f.position)
        total += float(np.sum(reward[hit & (f.window < 0)])) * profile.fp_weight
        for number in range(f.windows):
            detected = hit & (f.window == number)
            total += (
                float(reward[detected].max() * profile.tp_weight / max_tp)
                if detected.any()
                else -profile.fn_weight
            )
    return total


def nab_scores(files: Mapping[str, ScoredFile]) -> dict[str, SweepResult]:
    """Return the best sweep of every NAB profile over ``files``."""
    return {name: sweep(list(files.values()), profile) for name, profile in PROFILES.items()}
