"""What the notifiers are given: incidents as people see them, grouped into one notice.

Plain frozen data, built by the daemon from the store and handed to a notifier; the
notifiers never read the database. Times are aware UTC datetimes; point times in
``Points`` are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from anomon.model import Contributor, Event, IncidentStatus, Severity


@dataclass(frozen=True)
class Points:
    """A series around an incident, for charts: times (epoch s), values, expected values
    (NaN where unknown) and the times of its anomalous points."""

    ts: Sequence[int]
    values: Sequence[float]
    expected: Sequence[float] = ()
    anomalies: Sequence[int] = ()


@dataclass(frozen=True)
class IncidentView:
    """One incident as a notification shows it.

    ``labels`` are the routing labels: the series' own plus ``metric``, ``entity``,
    ``source``, ``kind`` and ``severity``. ``status`` is ``firing`` or ``resolved``.
    ``value`` / ``expected`` are the series' latest value and what the detectors expected
    of it when the message was written (None if unknown).
    ``notification_keys`` are the stable keys of the notifications about it that this
    message carries (a receiver drops a change it has seen, however it was grouped).
    ``contributors`` are the series behind it, strongest first (several for an
    entity's incident); ``value`` / ``expected`` are then the first one's.
    ``annotations`` are the free texts its ``[[detection.overrides]]`` give it
    (``summary``, ``runbook_url``, ``dashboard_url``, ...), shown by every format.
    """

    id: int
    metric: str
    entity: str
    labels: Mapping[str, str]
    status: IncidentStatus
    severity: Severity
    peak_score: float
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    acknowledged: bool = False
    value: float | None = None
    expected: float | None = None
    direction: str | None = None
    detector_scores: Mapping[str, float] = field(default_factory=dict)
    points: Points | None = None
    notification_keys: Sequence[str] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    contributors: Sequence[Contributor] = ()


@dataclass(frozen=True)
class Notice:
    """One message to one receiver about a group of incidents.

    ``event`` is ``firing``, ``resolved`` or ``repeat`` (the newest change in the
    group); ``key`` is derived from the sorted keys of the notifications it carries, so
    it is the same whenever the same notifications are sent together (a retry, a message
    sent again after a crash: the outbox keeps a failed message's notifications
    together), and ``notification_keys`` are each notification's own stable key, for a
    receiver that deduplicates per change; ``group_labels`` are the ``group_by`` labels.
    """

    receiver: str
    event: Event
    key: str
    group_key: str
    group_labels: Mapping[str, str]
    incidents: Sequence[IncidentView]
    sent_at: datetime
    test: bool = False
    notification_keys: Sequence[str] = ()  # each notification's own stable key

    @property
    def status(self) -> str:
        """``firing`` if any incident in the notice still fires, else ``resolved``."""
        firing = any(i.status == IncidentStatus.FIRING for i in self.incidents)
        return IncidentStatus.FIRING if firing else IncidentStatus.RESOLVED


class Notifier(Protocol):
    """Sends notices to one receiver.

    ``send`` raises :class:`~anomon.errors.DeliveryError` with ``permanent`` set when
    retrying cannot help (HTTP 4xx other than 408 / 429, a refused recipient, a bad
    login); messages never contain secrets.
    """

    name: str

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise DeliveryError."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
