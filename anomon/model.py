"""Plain data that flows between the packages: samples, series identities, anomalies,
incident changes and outbox entries."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

Labels = Mapping[str, str]


class SeriesKind(StrEnum):
    """What a series measures; the detectors pick their defaults by it."""

    QUALITY = "quality"
    LATENCY = "latency"
    RESOURCE = "resource"
    CUSTOM = "custom"


def canonical_labels(labels: Labels) -> str:
    """Return the one JSON text that stands for a label set: keys sorted, no spaces."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of a series: its metric name and canonical label set."""

    metric: str
    labels: str

    @classmethod
    def of(cls, metric: str, labels: Labels) -> SeriesKey:
        """Build the key of ``metric`` with ``labels`` (any order)."""
        return cls(metric, canonical_labels(labels))


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What is stored about a series besides its key."""

    source: str
    entity: str
    kind: SeriesKind = SeriesKind.CUSTOM
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One observed value of one series.

    ``ts`` is whole seconds since the Unix epoch, UTC. ``value`` is finite.
    """

    key: SeriesKey
    info: SeriesInfo
    ts: int
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"sample value must be finite, got: {self.value!r}")


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """One anomalous point as the store keeps it (see the ``anomalies`` table)."""

    series_id: int
    ts: int
    value: float
    expected: float | None
    score: float
    detector_scores: Mapping[str, float]
    direction: str
    severity: str
    incident: int | None = None  # index into the cycle's IncidentWrite list


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification to enqueue: ``event`` about an incident to ``receiver``.

    ``key`` is the idempotency key (stable: the same change gives the same key, so
    writing it twice stores it once). It is sent no sooner than ``not_before``, nor
    sooner than ``group_interval`` after the last notification of its group was sent.
    """

    receiver: str
    group_key: str
    event: str
    key: str
    not_before: datetime
    group_interval: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class IncidentWrite:
    """A new incident (``incident_id`` None) or a change to a stored one.

    A change is applied only if the stored incident still has ``version`` (one writer
    wins); its ``outbox`` entries are written in the same transaction, and only then.
    """

    series_id: int | None  # None: an incident of no stored series (tests, imports)
    entity: str
    metric: str
    labels: str  # canonical JSON of the routing labels
    status: str  # firing | resolved
    severity: str
    peak_score: float
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    silenced: bool = False
    reopened: bool = False  # fires again: a past acknowledgement no longer holds
    incident_id: int | None = None
    version: int | None = None
    outbox: tuple[OutboxEntry, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StoredIncident:
    """What tracking needs of a series' latest stored incident."""

    id: int
    status: str
    severity: str
    peak_score: float
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    version: int
    silenced: bool = False
