"""Plain data that flows between the packages: samples and series identities."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
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
