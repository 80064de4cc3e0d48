"""``kind = "alertmanager"``: incidents pushed to Alertmanager's API, as Prometheus does.

Each incident is one alert, ``POST <url>/api/v2/alerts`` (a JSON list of postable
alerts): ``labels`` are the incident's routing labels (series labels, ``metric``,
``entity``, ``source``, ``kind``, ``severity``) plus ``alertname`` (the metric), names
made valid for Prometheus and empty values left out (Alertmanager's rules); annotations
carry the summary, the description, the value, the expected value and the incident id;
``startsAt`` is when it opened. A firing alert's ``endsAt`` is :data:`ENDS_AFTER`
``resend_every`` ahead, and the daemon re-sends every firing incident each
``resend_every``, so Alertmanager never times out a live alert and resolves one whose
sender died (Prometheus: four resend delays); a resolved alert's ``endsAt`` is when it
resolved. ``severity`` is a label (people route and inhibit on it), so an incident that
escalates becomes a new ``critical`` alert; its ``warning`` alert is no longer re-sent
and Alertmanager resolves it at its ``endsAt`` (at most ``ENDS_AFTER`` resend intervals
later; posting a resolved twin instead would show a "resolved" warning that never fired).
Alertmanager then does its own grouping, inhibition, silences and repeats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from anomon import __version__
from anomon.alerts import render
from anomon.alerts.model import IncidentView, Notice
from anomon.alerts.post import Poster
from anomon.alerts.webhook import post_checked, safe_url
from anomon.config import AlertmanagerReceiverConfig
from anomon.model import IncidentStatus, prometheus_label_name

ENDS_AFTER = 4  # a firing alert's endsAt: this many resend intervals ahead
API_PATH = "/api/v2/alerts"

JSON = dict[str, Any]


class AlertmanagerNotifier:
    """POST each notice's incidents to one Alertmanager as postable alerts."""

    def __init__(self, config: AlertmanagerReceiverConfig) -> None:
        self.name = config.name
        self.resend_every = config.resend_every
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"anomon/{__version__}",
            **config.headers,
        }
        self._seconds = config.timeout.total_seconds()
        url = config.url.rstrip("/") + API_PATH
        self._poster = Poster(url, timeout=self._seconds)
        self._where = safe_url(url)

    def send(self, notice: Notice) -> None:
        """Post the notice's incidents; raise DeliveryError if Alertmanager refuses them
        (a 400 is permanent: the same alerts would be refused again)."""
        alerts = postable_alerts(notice.incidents, now=notice.sent_at, ttl=self._ttl)
        body = json.dumps(alerts, separators=(",", ":"), allow_nan=False).encode()
        post_checked(self._poster, body, self._headers, where=self._where, seconds=self._seconds)

    @property
    def _ttl(self) -> timedelta:
        return ENDS_AFTER * self.resend_every

    def close(self) -> None:
        """Release the HTTP connections."""
        self._poster.close()


def postable_alerts(
    incidents: Sequence[IncidentView], *, now: datetime, ttl: timedelta
) -> list[JSON]:
    """Alertmanager's ``PostableAlerts`` for ``incidents`` at ``now`` (firing ones end
    ``ttl`` from now unless re-sent)."""
    alerts: list[JSON] = []
    for incident in incidents:
        labels = alert_labels(incident)
        firing = incident.status == IncidentStatus.FIRING
        ends = now + ttl if firing else (incident.resolved_at or incident.last_seen_at)
        alert = {
            "labels": labels,
            "annotations": _annotations(incident),
            "startsAt": render.rfc3339(incident.opened_at),
            "endsAt": render.rfc3339(max(ends, incident.opened_at)),
        }
        if incident.url:  # Alertmanager's UI links "Source" to it
            alert["generatorURL"] = incident.url
        alerts.append(alert)
    return alerts


def alert_labels(incident: IncidentView) -> dict[str, str]:
    """The alert's identity: the routing labels and ``alertname``, valid and non-empty."""
    found: dict[str, str] = {}
    for name, value in incident.labels.items():
        if value:  # Alertmanager treats an empty label as absent
            found.setdefault(prometheus_label_name(name), value)
    found["alertname"] = incident.metric
    found["severity"] = incident.severity
    return found


def _annotations(incident: IncidentView) -> dict[str, str]:
    found = {
        "summary": render.summary(incident),
        "description": render.description(incident),
        "anomon_incident": str(incident.id),
        "peak_score": render.format_score(incident.peak_score),
    }
    if render.finite(incident.value) is not None:
        found["value"] = render.format_number(incident.value)
    if render.finite(incident.expected) is not None:
        found["expected"] = render.format_number(incident.expected)
    return render.with_annotations(incident, found)
