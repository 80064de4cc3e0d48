"""Absent data is an event: a source that keeps failing opens a ``source_down`` incident.

Prometheus' ``up == 0``: a source whose collections have failed for longer than
``[detection.absent] source_down_after`` (and at least :data:`MISSED_RUNS` of its
intervals: an hourly source is not down after five minutes) opens an incident of its
own — metric ``source_down``, entity the source, ``kind = "absent"``, severity
``critical`` — routed, silenced, grouped and notified like any other; its first good
collection resolves it (as does removing the source from the config). The watch reads
only the ``collection_runs`` the collection jobs write, so it sees a source that hangs
(its runs time out) as well as one that refuses connections.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anomon import store
from anomon.alerts.incidents import Episode
from anomon.alerts.routing import Silence, silenced
from anomon.config import AbsentConfig, AlertsConfig
from anomon.errors import AnomonError
from anomon.model import IncidentWrite, OutboxEntry, canonical_labels, escape_controls
from anomon.service.alerting import active_silences, outbox_entries
from anomon.timeutil import Clock, to_epoch, utcnow

log = logging.getLogger("anomon.absent")

MISSED_RUNS = 3  # a source is down only once this many of its intervals have failed
DOWN_SEVERITY = "critical"
DOWN_SCORE = 100.0  # no data is as sure as a score gets


@dataclass
class AbsenceJob:
    """Open and resolve the ``source_down`` incidents of the configured sources.

    ``intervals`` maps each enabled source's name to its collection interval.
    """

    engine: store.Engine
    config: AbsentConfig
    alerts: AlertsConfig
    intervals: Mapping[str, timedelta]
    clock: Clock = field(default=utcnow)

    def __call__(self) -> None:
        try:
            self.run_once()
        except AnomonError as exc:
            log.error("absent-data watch failed: %s", exc)
        except Exception:  # the scheduler must never see an exception
            log.exception("absent-data watch failed unexpectedly")

    def run_once(self) -> list[IncidentWrite]:
        """One look: write the incident changes due now; return them."""
        now = self.clock()
        writes = plan_source_down(
            store.source_health(self.engine, sorted(self.intervals)),
            store.open_absences(self.engine),
            intervals=self.intervals,
            config=self.config,
            alerts=self.alerts,
            silences=active_silences(self.engine, self.alerts, now),
            now=now,
        )
        if writes:
            ids = store.save_incidents(self.engine, writes, now=now)
            for write, incident_id in zip(writes, ids, strict=True):
                if incident_id is not None:  # else another writer got there first
                    log.warning("%s", escape_controls(write.describe()))
        return writes


def plan_source_down(
    health: Mapping[str, store.SourceHealth],
    open_now: Mapping[str, store.OpenAbsence],
    *,
    intervals: Mapping[str, timedelta],
    config: AbsentConfig,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> list[IncidentWrite]:
    """The ``source_down`` incidents to open (a configured source failing for long
    enough) and to resolve (it succeeded, or is no longer configured). Pure."""
    writes: list[IncidentWrite] = []
    if not config.enabled:
        return writes
    for name, interval in sorted(intervals.items()):
        seen = health.get(name)
        if seen is None:
            continue  # never collected yet: nothing is known
        since = seen.last_ok_at or seen.first_at
        wait = max(config.source_down_after, MISSED_RUNS * interval)
        down = seen.last_error is not None and now - since >= wait
        if down and name not in open_now:
            writes.append(_opening(name, since, alerts, silences, now))
        elif seen.last_error is None and name in open_now:
            back = seen.last_ok_at or now
            writes.append(_resolving(open_now[name], back, alerts, now))
    for name, absence in sorted(open_now.items()):
        if name not in intervals:  # removed or disabled: nothing will ever resolve it
            writes.append(_resolving(absence, now, alerts, now))
    return writes


def source_down_labels(source: str) -> dict[str, str]:
    """The routing labels of a source's ``source_down`` incident."""
    return {
        "metric": store.SOURCE_DOWN,
        "entity": source,
        "source": source,
        "kind": "absent",
        "severity": DOWN_SEVERITY,
    }


def _opening(
    source: str, since: datetime, alerts: AlertsConfig, silences: Sequence[Silence], now: datetime
) -> IncidentWrite:
    labels = source_down_labels(source)
    episode = Episode(
        incident_id=None,
        version=None,
        opened_at=since,
        last_seen_at=now,
        peak_score=DOWN_SCORE,
        severity=DOWN_SEVERITY,
        notices=[("firing", to_epoch(now))],
    )
    quiet = silenced(labels, silences, now)
    outbox = () if quiet or not alerts.enabled else tuple(_entries(source, episode, alerts, now))
    return IncidentWrite(
        series_id=None,
        entity=source,
        metric=store.SOURCE_DOWN,
        labels=canonical_labels(labels),
        status="firing",
        severity=DOWN_SEVERITY,
        peak_score=DOWN_SCORE,
        opened_at=since,
        last_seen_at=now,
        silenced=quiet,
        outbox=outbox,
        change="opened",
    )


def _resolving(
    absence: store.OpenAbsence, back: datetime, alerts: AlertsConfig, now: datetime
) -> IncidentWrite:
    episode = Episode(
        incident_id=absence.id,
        version=absence.version,
        opened_at=absence.opened_at,
        last_seen_at=back,
        peak_score=DOWN_SCORE,
        severity=absence.severity,
        status="resolved",
        resolved_at=back,
        notices=[("resolved", to_epoch(now))],
    )
    quiet = absence.silenced
    outbox = (
        () if quiet or not alerts.enabled else tuple(_entries(absence.entity, episode, alerts, now))
    )
    return IncidentWrite(
        series_id=None,
        entity=absence.entity,
        metric=store.SOURCE_DOWN,
        labels=absence.labels,
        status="resolved",
        severity=absence.severity,
        peak_score=DOWN_SCORE,
        opened_at=absence.opened_at,
        last_seen_at=back,
        resolved_at=back,
        silenced=quiet,
        incident_id=absence.id,
        version=absence.version,
        outbox=outbox,
        change="resolved",
    )


def _entries(
    source: str, episode: Episode, alerts: AlertsConfig, now: datetime
) -> list[OutboxEntry]:
    labels = {**source_down_labels(source), "severity": episode.severity}
    return outbox_entries(f"{store.SOURCE_DOWN}:{source}", episode, labels, alerts, now)
