"""Many entities scored together: what the daemon's detection cycle runs.

Each entity keeps its own trailing windows and seasonal profiles; the forest is pooled
(:class:`~anomon.detect.forest.ForestPool`): every cycle the new rows of all entities of
two metrics or more (the only ones it judges) are scored by one ``score_samples`` call,
and their clean rows feed one shared training sample. A cycle's cost is proportional to
the new rows, not to the history.
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
    concat_scores,
    finish_many,
    forest_calibration,
    prepare_many,
)
from anomon.detect.forest import ForestPool, rarity_cap
from anomon.detect.params import DetectorParams
from anomon.detect.zscore import Direction

Key = TypeVar("Key", bound=Hashable)

# Up to this many new rows, an entity is cheaper through the whole-array path a row at
# a time (one metric: ~0.13 ms a row) than alone (~0.45 ms plus ~0.01 ms a row).
LAYERS = 4


class Fleet(Generic[Key]):
    """The detectors of every entity, and the forest they share."""

    def __init__(self, config: DetectionConfig | DetectorParams) -> None:
        self.params = DetectorParams.of(config)
        self.config = self.params.config
        self.pool = ForestPool(self.config.forest)
        # the forest's features are unit-free, so its scores share one calibration too
        self.forest_history = forest_calibration(self.params)
        self.entities: dict[Key, EntityDetector] = {}

    def add(
        self,
        key: Key,
        metrics: Sequence[str],
        *,
        directions: Sequence[Direction] | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> EntityDetector:
        """Register an entity (its metrics in column order, with their overridden
        directions and thresholds, if any) and return its detector."""
        detector = EntityDetector(
            metrics, self.params, directions=directions, thresholds=thresholds
        )
        self.entities[key] = detector
        return detector

    def remove(self, key: Key) -> None:
        """Let an entity go (its series are gone); the pooled forest keeps what it learnt."""
        del self.entities[key]

    def update(self, rows: Mapping[Key, tuple[npt.ArrayLike, npt.ArrayLike]]) -> dict[Key, Scores]:
        """Score the new rows of some entities: ``{key: (ts, values (rows, metrics))}``.

        Raises KeyError for an entity that was never added, ValueError for bad rows
        (before anything is scored, so a bad entity does not advance the others).
        Entities with at most :data:`LAYERS` new rows are scored together with
        whole-array operations over all their metrics, one layer of new rows at a time;
        the others one by one, in pieces that end where the pooled forest is refitted.
        Either way the per-entity numbers are the same, and an entity alone (a
        :class:`Solo`, what ``replay`` runs) gets the same scores however its rows are
        batched: the forest is refitted at the same row counts.
        """
        checked = {key: self.entities[key].validated(*batch) for key, batch in rows.items()}
        fast = [key for key, (ts, _) in checked.items() if ts.size <= LAYERS]
        chosen = set(fast)
        slow = [key for key in checked if key not in chosen]
        # entities with few new rows go through the whole-array path one layer at a time
        # (layer j: the j-th new row of each entity that has one): a cycle that fell a few
        # rows behind costs a few whole-array passes, not a slow pass over every entity
        depth = max((checked[key][0].size for key in fast), default=0)
        layers = [[key for key in fast if checked[key][0].size > j] for j in range(depth)]
        parts: dict[Key, list[Scores]] = {key: [] for key in checked}
        for j, layer in enumerate(layers):
            prepared = prepare_many(
                [self.entities[key] for key in layer],
                np.array([checked[key][0][j] for key in layer], dtype=np.int64),
                np.concatenate([checked[key][1][j] for key in layer]).astype(np.float64),
            )
            # the forest only for the entities it takes part in (two metrics or more)
            joint = np.array([self.entities[key].uses("forest") for key in layer], dtype=bool)
            forest = np.full(len(layer), np.nan)
            if joint.any():
                forest[joint] = self._forest(prepared.features[joint])
            done = finish_many([self.entities[key] for key in layer], prepared, forest)
            for key, part in zip(layer, done, strict=True):
                parts[key].append(part)
            if joint.any():
                anomalous = np.concatenate([p.anomaly for p in done])
                self.pool.learn(prepared.features[joint], anomalous[joint])
        for key in slow:
            ts, values = checked[key]
            detector = self.entities[key]
            if not detector.uses("forest"):  # neither scored by the pool nor teaching it
                pending = detector.prepare(ts, values)
                parts[key].append(detector.finish(pending, np.full(ts.size, np.nan)))
                continue
            start = 0
            while start < ts.size:
                room = self.pool.due_in()
                end = ts.size if room is None else min(ts.size, start + room)
                pending = detector.prepare(ts[start:end], values[start:end])
                part = detector.finish(pending, self._forest(pending.features))
                self.pool.learn(pending.features, part.anomaly)
                parts[key].append(part)
                start = end
        return {key: concat_scores(parts[key], len(self.entities[key].metrics)) for key in checked}

    def _forest(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The pooled forest's calibrated score of feature rows."""
        return calibrate_forest(
            self.pool.score(features),
            self.forest_history,
            max_decades=rarity_cap(self.pool.fitted_rows),
        )


class Solo:
    """One entity scored alone: a fleet of one. What ``anomon replay`` and ``evaluate``
    run, and the same code as the daemon's fleet (one path, one pooled forest)."""

    def __init__(
        self,
        metrics: Sequence[str],
        config: DetectionConfig | DetectorParams,
        *,
        directions: Sequence[Direction] | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        self.fleet = Fleet[int](config)
        self.detector = self.fleet.add(0, metrics, directions=directions, thresholds=thresholds)

    def update(self, ts: npt.ArrayLike, values: npt.ArrayLike) -> Scores:
        """Score new rows: ``ts`` epoch seconds (never decreasing), ``values``
        ``(rows, metrics)``. Raises ValueError for misshapen input or times that go back."""
        return self.fleet.update({0: (ts, values)})[0]
