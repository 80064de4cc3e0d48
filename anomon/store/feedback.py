"""What people's verdicts teach detection: tolerances learnt from incidents marked
``false_alarm`` or ``expected``.

Derived, never stored apart: each cycle reads, per series and direction, the largest
deviation (``|value - expected|``) among the anomalies of the incidents so marked. A
verdict changed back (``confirmed``) takes its tolerance away with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from anomon.model import Feedback
from anomon.store.engine import translated
from anomon.store.schema import Anomaly, Incident, Series

TAUGHT_BY = (Feedback.FALSE_ALARM, Feedback.EXPECTED)  # verdicts that say "this is not a problem"
MARGIN = 1.2  # a tolerance is this much wider than the largest deviation marked


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a series may deviate up and down (in its unit) before it is an anomaly,
    learnt from ``incidents`` incidents people marked as no problem."""

    series_id: int
    up: float
    down: float
    incidents: int


def feedback_tolerances(engine: Engine) -> dict[int, Tolerance]:
    """The tolerance of every series with anomalies in an incident marked as no problem."""
    deviation = func.abs(Anomaly.value - Anomaly.expected)
    query = (
        select(
            Anomaly.series_id,
            Anomaly.direction,
            func.max(deviation),
            func.count(func.distinct(Anomaly.incident_id)),
        )
        .join(Incident, Incident.id == Anomaly.incident_id)
        .where(Incident.feedback.in_(TAUGHT_BY), Anomaly.expected.is_not(None))
        .group_by(Anomaly.series_id, Anomaly.direction)
    )
    found: dict[int, Tolerance] = {}
    with translated(engine, "reading feedback"), engine.connect() as conn:
        for sid, direction, largest, incidents in conn.execute(query):
            was = found.get(sid, Tolerance(sid, 0.0, 0.0, 0))
            width = float(largest) * MARGIN
            found[sid] = Tolerance(
                sid,
                up=width if direction == "up" else was.up,
                down=width if direction == "down" else was.down,
                incidents=max(was.incidents, int(incidents)),
            )
    return found


@dataclass(frozen=True, slots=True)
class TaughtSeries:
    """A series with a tolerance, as ``anomon status`` lists it."""

    series_id: int
    metric: str
    entity: str
    up: float
    down: float
    incidents: int


def taught_series(engine: Engine, *, limit: int = 20) -> list[TaughtSeries]:
    """The series with a tolerance learnt from feedback (the first ``limit``, by id)."""
    tolerances = feedback_tolerances(engine)
    ids = sorted(tolerances)[:limit]
    if not ids:
        return []
    query = select(Series.id, Series.metric, Series.entity).where(Series.id.in_(ids))
    with translated(engine, "reading feedback"), engine.connect() as conn:
        names = {sid: (metric, entity) for sid, metric, entity in conn.execute(query)}
    return [
        TaughtSeries(sid, *names[sid], tolerances[sid].up, tolerances[sid].down,
                     tolerances[sid].incidents)
        for sid in ids
        if sid in names
    ]  # fmt: skip
