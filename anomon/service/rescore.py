"""Re-scoring a stored history: ``anomon replay --series``.

The daemon's detection path over samples already in the database, from a fresh fleet
and writing nothing: the named series' entity (every series scored with it, aligned as
the daemon aligns them) is scored with the config's ``[detection]``, each series'
overrides, and the tolerances that people's verdicts taught
(:func:`anomon.store.feedback_tolerances`). So after ``anomon incidents feedback ID
false_alarm`` the next replay of the same history shows the marked deviation at 0, and
a larger one still scored; ``feedback=False`` gives the scores without what was taught.

The windows start empty at ``since``: the first rows of the range are the warm-up, as
for ``anomon replay`` of a file without ``--train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anomon import store
from anomon.config import DetectionConfig
from anomon.detect.entity import default_direction
from anomon.detect.fleet import Solo
from anomon.errors import UsageError
from anomon.service.detection import (
    aligned,
    by_entity,
    entity_key,
    series_scores,
    unit_scores,
    with_effect,
)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Rescored:
    """One series' stored history scored again, on the rows where it has a value.

    ``score`` is the series' score as the daemon records it (its own detectors', or its
    entity's where it drives an entity anomaly, less its overrides' minimum effect and
    the taught ``tolerance``); ``entity_score`` the alarm score of its entity on the same
    rows (the largest of its series'); ``anomaly`` where ``score`` reaches the series'
    threshold.
    """

    series: store.ScoredSeries
    members: list[store.ScoredSeries]  # the series scored with it, column order
    ts: npt.NDArray[np.int64]
    value: FloatArray
    expected: FloatArray
    score: FloatArray
    entity_score: FloatArray
    anomaly: npt.NDArray[np.bool_]
    tolerance: store.Tolerance | None


def rescore(
    engine: store.Engine,
    config: DetectionConfig,
    series_id: int,
    *,
    since: int,
    until: int,
    feedback: bool = True,
) -> Rescored:
    """Score the samples in ``[since, until)`` of the entity of ``series_id`` again."""
    every = store.series_to_score(engine)
    chosen = next((s for s in every if s.id == series_id), None)
    if chosen is None:
        raise UsageError(f"series {series_id} is not scored (a histogram, or no such series)")
    members = by_entity(every)[entity_key(chosen)]
    ids = [s.id for s in members]
    with engine.connect() as conn:
        points = store.read_history(conn, ids, since=since, until=until)
    ts, values = aligned([points[sid] for sid in ids], after=None)
    settings = [config.settings_for(s.metric, json.loads(s.labels)) for s in members]
    directions = [
        found.direction or default_direction(s.metric, config)
        for s, found in zip(members, settings, strict=True)
    ]
    thresholds = [found.threshold for found in settings]
    detector = Solo(
        [s.metric for s in members], config, directions=directions, thresholds=thresholds
    )
    scores = detector.update(ts, values)
    taught = store.feedback_tolerances(engine) if feedback else {}
    own = series_scores(scores, config.threshold)
    per_series = np.full(values.shape, np.nan)
    for column, (s, found) in enumerate(zip(members, settings, strict=True)):
        has = ~np.isnan(values[:, column])
        per_series[has, column] = with_effect(
            own, scores.expected, values, has, column, found, taught.get(s.id)
        )
    entity, _ = unit_scores(per_series, thresholds, config.threshold)
    column = ids.index(series_id)
    has = ~np.isnan(values[:, column])
    score = per_series[has, column]
    return Rescored(
        series=chosen,
        members=members,
        ts=ts[has],
        value=values[has, column],
        expected=scores.expected[has, column],
        score=score,
        entity_score=entity[has],
        anomaly=score >= settings[column].threshold,
        tolerance=taught.get(series_id),
    )
