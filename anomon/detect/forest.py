"""IsolationForest (scikit-learn's, as it is) over rarity features of an entity's row.

The features of a row summarise how rare each metric's deviation is at that row, in
decades (``-log10`` of its tail probability, from the metric's own calibrated point and
seasonal scores): the largest, the second largest and the mean point rarity, and the
largest and mean seasonal rarity. They mean the same for every metric and do not depend
on how many metrics an entity has, so one forest can serve every entity of a fleet (a
pooled model: a 50-tree forest per series would not fit 10,000 series in a small
daemon; see README, "Detectors").

Rarity, not the raw robust z: a heavy-tailed metric (a loss on 50 labels) is five
spreads out routinely, and a model's accuracy or volumes are judged by their sampling
error, not their spread (:mod:`anomon.detect.sampling`). Fed the raw z, the pooled forest
took those routine rows of one entity for the strangest rows of the fleet; fed the
rarity each metric's own detectors measured, it sees what they see. (On the SMD dev
machines as one entity each, the forest alone went from best F1 / AUC-PR 0.27 / 0.17 to
0.47 / 0.36.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from anomon.config import ForestConfig
from anomon.imports import scikit_learn

if TYPE_CHECKING:  # imported where a forest is fitted (anomon.imports says why)
    from sklearn.ensemble import IsolationForest

FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES = ("point_max", "point_second", "point_mean", "seasonal_max", "seasonal_mean")
FEATURES = 5  # the columns of summary_features


def summary_features(point: FloatArray, seasonal: FloatArray) -> FloatArray:
    """Return the ``(rows, 5)`` feature matrix from ``(rows, metrics)`` rarities in
    decades (:func:`~anomon.detect.calibration.score_decades` of the metrics' calibrated
    point and seasonal scores: no NaN, a metric without a baseline is 0, no evidence, and
    none past :data:`~anomon.detect.calibration.MAX_DECADES`, beyond which a row is simply
    extreme and the trees' splits stay useful).
    """
    if point.shape[1] == 1:  # one metric: every summary is that metric's score
        return np.column_stack([point, point, point, seasonal, seasonal])
    ordered = np.sort(point, axis=1)
    return np.column_stack(
        [
            ordered[:, -1],
            ordered[:, -2],
            point.mean(axis=1),
            seasonal.max(axis=1),
            seasonal.mean(axis=1),
        ]
    )


def rarity_cap(fitted_rows: int) -> float:
    """The most decades (``-log10`` tail probability) a forest that learnt normal from
    ``fitted_rows`` rows can claim: 1 in that many rows.

    A row the trees isolate at once is unlike every row they learnt from, and that is
    all they can tell: not how much rarer than 1 in their sample it is. Past its
    reference's 1 in 100 the forest's calibration extrapolates from the spacing of a
    raw score that has a hard ceiling (a row isolated at the first split of every tree),
    so without this bound a maximally isolated row scored wherever that ceiling happened
    to land -- past the threshold in one demo run, with every metric mild.
    """
    return float(np.log10(max(fitted_rows, 1)))


def fit_forest(features: FloatArray, config: ForestConfig) -> IsolationForest:
    """Fit a forest on clean feature rows (the caller leaves anomalies out)."""
    forest: IsolationForest = scikit_learn("ensemble").IsolationForest(
        n_estimators=config.n_estimators,
        max_samples=min(config.max_samples, len(features)),
        random_state=config.random_state,
    )
    return forest.fit(features)


def forest_raw_score(forest: IsolationForest, features: FloatArray) -> FloatArray:
    """Return the anomaly score of each row: minus ``score_samples``, higher = stranger."""
    if features.shape[0] == 0:
        return np.empty(0)
    scores: FloatArray = forest.score_samples(features)
    return -scores


class ForestPool:
    """One forest shared by many entities, trained on a sample of their clean rows.

    The features are scale-free, so rows of every entity are comparable. The pool keeps
    a uniform reservoir sample (seeded, so deterministic) of ``train_window`` clean rows
    of everything it has been shown, and fits when ``min_train`` rows (clean or not) have
    been offered, then after every ``refit_every`` more: at fixed row counts, so a caller
    that offers rows in pieces ending at those counts (:meth:`due_in`) gets the same
    forest whatever the pieces. One small forest instead of one per series, and one
    ``score_samples`` call per cycle instead of one per entity.
    """

    def __init__(self, config: ForestConfig) -> None:
        self.config = config
        self.model: IsolationForest | None = None
        self._reservoir = np.empty((0, len(FEATURE_NAMES)))
        self._seen = 0  # clean rows offered so far
        self._offered = 0  # rows offered so far, clean or not: the refit schedule's clock
        self._next_fit = max(config.min_train, 1)
        self.fitted_rows = 0  # the clean rows the current model learnt from
        self._rng = np.random.default_rng(config.random_state)

    def due_in(self) -> int | None:
        """How many more rows may be offered before the forest is (re)fitted: a caller
        scores at most that many, learns them, then scores on (None: no forest)."""
        if not self.config.enabled:
            return None
        return max(self._next_fit - self._offered, 1)

    def score(self, features: FloatArray) -> FloatArray:
        """Return the raw score of each row (NaN until the first fit)."""
        if self.model is None or not self.config.enabled:
            return np.full(features.shape[0], np.nan)
        return forest_raw_score(self.model, features)

    def learn(self, features: FloatArray, anomalous: npt.NDArray[np.bool_]) -> None:
        """Offer rows (anomalies are left out); refit when due."""
        clean = features[~anomalous]
        capacity = self.config.train_window
        room = max(0, capacity - self._reservoir.shape[0])
        self._reservoir = np.concatenate([self._reservoir, clean[:room]])
        rest = clean[room:]
        if rest.shape[0]:  # reservoir sampling: row n replaces a slot with probability k / n
            seen = self._seen + room + np.arange(1, rest.shape[0] + 1)
            slots = (self._rng.random(rest.shape[0]) * seen).astype(np.int64)
            keep = slots < capacity
            self._reservoir[slots[keep]] = rest[keep]
        self._seen += clean.shape[0]
        self._offered += features.shape[0]
        due = False
        while self._offered >= self._next_fit:
            due, self._next_fit = True, self._next_fit + self.config.refit_every
        # a reservoir of nearly only anomalies is no picture of normal: wait for more
        enough = self._reservoir.shape[0] >= min(self.config.min_train, 50)
        if self.config.enabled and due and enough:
            self.model = fit_forest(self._reservoir, self.config)
            self.fitted_rows = self._reservoir.shape[0]
