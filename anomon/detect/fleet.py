"""Many entities scored together: what the daemon's detection cycle runs.

Each entity keeps its own trailing windows and seasonal profiles; the forest is pooled
(:class:`~anomon.detect.forest.ForestPool`): every cycle the new rows of all entities are
scored by one ``score_samples`` call, and their clean rows feed one shared training
sample. A cycle's cost is proportional to the new rows, not to the history.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from anomon.config import DetectionConfig
from anomon.detect.entity import EntityDetector, Scores, calibrate_forest, forest_calibration
from anomon.detect.forest import ForestPool
from anomon.detect.zscore import Direction


class Fleet:
    """The detectors of every entity, and the forest they share."""

    def __init__(self, config: DetectionConfig) -> None:
        self.config = config
        self.pool = ForestPool(config.forest)
        # the forest's features are unit-free, so its scores share one calibration too
        self.forest_history = forest_calibration(config)
        self.entities: dict[Hashable, EntityDetector] = {}

    def add(
        self,
        key: Hashable,
        metrics: Sequence[str],
        *,
        directions: Sequence[Direction] | None = None,
    ) -> EntityDetector:
        """Register an entity (its metrics in column order) and return its detector."""
        detector = EntityDetector(metrics, self.config, directions=directions, pooled=True)
        self.entities[key] = detector
        return detector

    def update(
        self, rows: Mapping[Hashable, tuple[npt.ArrayLike, npt.ArrayLike]]
    ) -> dict[Hashable, Scores]:
        """Score the new rows of some entities: ``{key: (ts, values (rows, metrics))}``.

        Raises KeyError for an entity that was never added, ValueError for bad rows
        (before anything is scored, so a bad entity does not advance the others).
        """
        checked = {key: self.entities[key].validated(*batch) for key, batch in rows.items()}
        pending = {key: self.entities[key].prepare(*batch) for key, batch in checked.items()}
        sizes = [p.times.size for p in pending.values()]
        features = (
            np.concatenate([p.features for p in pending.values()]) if pending else np.empty((0, 5))
        )
        calibrated = calibrate_forest(self.pool.score(features), self.forest_history)
        parts = np.split(calibrated, np.cumsum(sizes)[:-1]) if sizes else []
        scores = {
            key: self.entities[key].finish(p, part)
            for (key, p), part in zip(pending.items(), parts, strict=True)
        }
        flags = [s.anomaly for s in scores.values()]
        self.pool.learn(features, np.concatenate(flags) if flags else np.empty(0, dtype=bool))
        return scores
