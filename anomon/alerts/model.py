"""What the notifiers are given: incidents as people see them, grouped into one notice.

Plain frozen data, built by the daemon from the store and handed to a notifier; the
notifiers never read the database. Times are aware UTC datetimes; point times in
``Points`` are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Protocol

from anomon.model import DeployRecord, Event, IncidentRecord, IncidentStatus


@dataclass(frozen=True)
class Points:
    """A series around an incident, for charts: times (epoch s), values, expected values
    (NaN where unknown) and the times of its anomalous points."""

    ts: Sequence[int]
    values: Sequence[float]
    expected: Sequence[float] = ()
    anomalies: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class IncidentView(IncidentRecord):
    """One incident as a notification shows it: the incident (its ``labels`` are the
    routing labels: the series' own plus ``metric``, ``entity``, ``source``, ``kind`` and
    ``severity``; ``value`` / ``expected`` its leading series' latest when the message was
    written) and what only a message has.

    ``points``: its series around it, for a chart (None without one).
    ``notification_keys`` are the stable keys of the notifications about it that this
    message carries (a receiver drops a change it has seen, however it was grouped).
    ``annotations`` are the free texts its ``[[detection.overrides]]`` give it
    (``summary``, ``runbook_url``, ``dashboard_url``, ...), shown by every format; a
    ``deploy`` of its model or entity shortly before it opened is one of them too
    (``deploy``: "churn v2 at 2026-12-07 09:30:00Z, 12 min before it opened"), unless an
    override names its own.
    """

    points: Points | None = None
    notification_keys: Sequence[str] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    deploy: DeployRecord | None = None
    url: str = ""  # its page in the console ("" without [daemon] external_url)

    @classmethod
    def of(
        cls,
        incident: IncidentRecord,
        *,
        points: Points | None = None,
        annotations: Mapping[str, str] | None = None,
        deploy: DeployRecord | None = None,
        external_url: str = "",
    ) -> IncidentView:
        """The view of a stored incident (with a chart's ``points``, the
        ``annotations`` of its overrides, the deploy it followed and its page under
        ``external_url``)."""
        own = {f.name: getattr(incident, f.name) for f in fields(IncidentRecord)}
        shown = dict(annotations or {})
        if deploy is not None:
            shown = {"deploy": deploy_text(deploy, incident.opened_at), **shown}
        page = incident_url(external_url, incident.id)
        return cls(**own, points=points, annotations=shown, deploy=deploy, url=page)


def incident_url(external_url: str, incident_id: int) -> str:
    """The console's page of an incident ("" when anomon has no external URL)."""
    return f"{external_url.rstrip('/')}/incidents/{incident_id}" if external_url else ""


def deploy_text(deploy: DeployRecord, opened_at: datetime) -> str:
    """``churn v2 at 2026-12-07 09:30:00Z, 12 min before it opened`` (and its note)."""
    minutes = max(int((opened_at - deploy.at).total_seconds() // 60), 0)
    text = f"{deploy.describe()} at {deploy.at:%Y-%m-%d %H:%M:%S}Z, {minutes} min before it opened"
    return f"{text} ({deploy.note})" if deploy.note else text


def latest_deploy(
    deploys: Sequence[DeployRecord], incident: IncidentRecord, window: timedelta
) -> DeployRecord | None:
    """The last deploy about ``incident``'s model or entity in the ``window`` before it
    opened (None: none)."""
    earliest = incident.opened_at - window
    found = [
        d
        for d in deploys
        if earliest <= d.at <= incident.opened_at and d.covers(incident.entity, incident.labels)
    ]
    return max(found, key=lambda d: d.at, default=None)


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

    def send(self, notice: Notice) -> str | None:
        """Deliver ``notice`` or raise DeliveryError; return what the receiver printed,
        if it is a program (kept in the notification's row), else None."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
