"""Many entities scored together: what the daemon's detection cycle runs.

Each entity keeps its own trailing windows and seasonal profiles; the forest is pooled
(:class:`~anomon.detect.forest.ForestPool`): every cycle the new rows of all entities are
scored by one ``score_samples`` call, and their clean rows feed one shared training
sample. A cycle's cost is proportional to the new rows, not to the history.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from anomon.config import DetectionConfig
from anomon.detect.entity import (
    EntityDetector,
    Scores,
    calibrate_forest,
    fast_path_ok,
    finish_many,
    forest_calibration,
    prepare_many,
)
from anomon.detect.forest import ForestPool
from anomon.detect.zscore import Direction

Key = TypeVar("Key", bound=Hashable)


class Fleet(Generic[Key]):
    """The detectors of every entity, and the forest they share."""

    def __init__(self, config: DetectionConfig) -> None:
        self.config = config
        self.pool = ForestPool(config.forest)
        # the forest's features are unit-free, so its scores share one calibration too
        self.forest_history = forest_calibration(config)
        self.entities: dict[Key, EntityDetector] = {}

    def add(
        self,
        key: Key,
        metrics: Sequence[str],
        *,
        directions: Sequence[Direction] | None = None,
    ) -> EntityDetector:
        """Register an entity (its metrics in column order) and return its detector."""
        detector = EntityDetector(metrics, self.config, directions=directions, pooled=True)
        self.entities[key] = detector
        return detector

    def update(self, rows: Mapping[Key, tuple[npt.ArrayLike, npt.ArrayLike]]) -> dict[Key, Scores]:
        """Score the new rows of some entities: ``{key: (ts, values (rows, metrics))}``.

        Raises KeyError for an entity that was never added, ValueError for bad rows
        (before anything is scored, so a bad entity does not advance the others).
        Entities with one metric and one new row -- a steady daemon cycle -- are scored
        together with whole-array operations; the others one by one. Either way the
        numbers are the same.
        """
        checked = {key: self.entities[key].validated(*batch) for key, batch in rows.items()}
        fast = [
            key for key, (ts, _) in checked.items() if fast_path_ok(self.entities[key], ts.size)
        ]
        chosen = set(fast)
        slow = [key for key in checked if key not in chosen]
        many = prepare_many(
            [self.entities[key] for key in fast],
            np.array([checked[key][0][0] for key in fast], dtype=np.int64),
            np.array([checked[key][1][0, 0] for key in fast], dtype=np.float64),
        )
        pending = {key: self.entities[key].prepare(*checked[key]) for key in slow}
        features = np.concatenate([many.features, *(p.features for p in pending.values())])
        forest = calibrate_forest(self.pool.score(features), self.forest_history)
        scores = dict(
            zip(
                fast,
                finish_many([self.entities[k] for k in fast], many, forest[: len(fast)]),
                strict=True,
            )
        )
        start = len(fast)
        for key, part in pending.items():
            size = part.times.size
            scores[key] = self.entities[key].finish(part, forest[start : start + size])
            start += size
        flags = [scores[key].anomaly for key in (*fast, *slow)]
        self.pool.learn(features, np.concatenate(flags) if flags else np.empty(0, dtype=bool))
        return {key: scores[key] for key in checked}
