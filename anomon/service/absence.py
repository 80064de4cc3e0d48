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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from anomon import store
from anomon.alerts.incidents import Episode
from anomon.alerts.routing import Silence
from anomon.config import AbsentConfig, AlertsConfig
from anomon.errors import AnomonError
from anomon.model import SOURCE_DOWN, IncidentWrite, escape_controls
from anomon.service.alerting import active_silences, incident_write
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
            writes.append(_resolving(open_now[name], back, alerts, silences, now))
    for name, absence in sorted(open_now.items()):
        if name not in intervals:  # removed or disabled: nothing will ever resolve it
            writes.append(_resolving(absence, now, alerts, silences, now))
    return writes


def source_down_meta(source: str) -> store.SeriesMeta:
    """What routing sees of a source's ``source_down`` incident: metric ``source_down``,
    entity and source the source's name, kind ``absent``, no labels of its own."""
    return store.SeriesMeta(0, SOURCE_DOWN, {}, source, source, "absent")


def _opening(
    source: str, since: datetime, alerts: AlertsConfig, silences: Sequence[Silence], now: datetime
) -> IncidentWrite:
    episode = Episode(
        incident_id=None,
        version=None,
        opened_at=since,
        last_seen_at=now,
        peak_score=DOWN_SCORE,
        severity=DOWN_SEVERITY,
        notices=[("firing", to_epoch(now))],
    )
    return _write(source, episode, alerts, silences, now, "opened")


def _resolving(
    absence: store.OpenAbsence,
    back: datetime,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
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
    return _write(absence.entity, episode, alerts, silences, now, "resolved")


def _write(
    source: str,
    episode: Episode,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
    change: str,
) -> IncidentWrite:
    """The incident write of ``episode``, as any incident's is (routing labels, silences,
    notifications), keyed by the source rather than a series."""
    write = incident_write(
        None, source_down_meta(source), episode, alerts, silences, now,
        identity=f"{SOURCE_DOWN}:{source}",
    )  # fmt: skip
    return replace(write, change=change)
