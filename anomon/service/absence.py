"""Absent data is an event: a source that keeps failing opens a ``source_down`` incident,
a series that stops arriving while its source collects a ``series_absent`` one.

Prometheus' ``up == 0``: a source whose collections have failed for longer than
``[detection.absent] source_down_after`` (and at least :data:`MISSED_RUNS` of its
intervals: an hourly source is not down after five minutes) opens an incident of its
own — metric ``source_down``, entity the source, ``kind = "absent"``, severity
``critical`` — routed, silenced, grouped and notified like any other; its first good
collection resolves it (as does removing the source from the config). The watch reads
only the ``collection_runs`` the collection jobs write, so it sees a source that hangs
(its runs time out) as well as one that refuses connections.

Prometheus' ``absent()``: a series whose last sample is older than ``[detection.absent]
series_absent_after`` (and :data:`MISSED_RUNS` of its source's intervals) before its
source's last successful collection opens a ``series_absent`` incident — metric
``series_absent``, the series' own labels plus ``series_metric`` and ``series_id``,
``kind = "absent"``, severity ``warning`` — resolved by its next sample. Only sources
that stamp every series at every collection are watched (not ``sql`` and ``predictions``,
whose rows carry their own times, nor a ``logs`` pattern that aggregates values and is
silent when nothing matched); an override with ``absent = false`` lets a series come and
go. A source that is down is ``source_down``'s: its series are not absent on top of it.
A series with no sample for ``series_retire_after`` (a day) before its source's last good
collection is retired: its incident resolves (the log says "retired") and it is not
watched again until a sample of it comes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from anomon import store
from anomon.alerts.incidents import Episode
from anomon.alerts.routing import Silence
from anomon.config import (
    AbsentConfig,
    AlertsConfig,
    DetectionConfig,
    SourceBase,
)
from anomon.errors import AnomonError
from anomon.model import (
    SERIES_ABSENT,
    SOURCE_DOWN,
    Event,
    IncidentRecord,
    IncidentStatus,
    IncidentWrite,
    Severity,
    escape_controls,
)
from anomon.service.alerting import active_silences, episode_write, incident_write
from anomon.timeutil import Clock, from_epoch, to_epoch, utcnow

log = logging.getLogger("anomon.absent")

MISSED_RUNS = 3  # a source is down only once this many of its intervals have failed
DOWN_SEVERITY = Severity.CRITICAL
DOWN_SCORE = 100.0  # no data is as sure as a score gets
ABSENT_SEVERITY = Severity.WARNING  # one series of a source that works: someone should look


@dataclass(frozen=True)
class Watched:
    """A source whose series are all expected at every collection, but ``skip``."""

    interval: timedelta
    skip: frozenset[str] = frozenset()


def watched_sources(sources: Sequence[SourceBase]) -> dict[str, Watched]:
    """The enabled sources whose series should arrive at every collection."""
    found: dict[str, Watched] = {}
    for source in sources:
        skip = source.may_go_quiet()  # the kind knows: SourceBase.may_go_quiet
        if source.enabled and skip is not None:
            found[source.name] = Watched(source.interval, skip)
    return found


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
    watched: Mapping[str, Watched] = field(default_factory=dict)
    detection: DetectionConfig = field(default_factory=DetectionConfig)

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
        health = store.source_health(self.engine, sorted(self.intervals))
        silences = active_silences(self.engine, self.alerts, now)
        writes = plan_source_down(
            health,
            store.open_absences(self.engine),
            intervals=self.intervals,
            config=self.config,
            alerts=self.alerts,
            silences=silences,
            now=now,
        )
        writes += self._series_absent(health, silences, now)
        if writes:
            ids = store.save_incidents(self.engine, writes, now=now)
            for write, incident_id in zip(writes, ids, strict=True):
                if incident_id is not None:  # else another writer got there first
                    log.warning("%s", escape_controls(write.describe()))
        return writes

    def _series_absent(
        self,
        health: Mapping[str, store.SourceHealth],
        silences: Sequence[Silence],
        now: datetime,
    ) -> list[IncidentWrite]:
        """The ``series_absent`` incidents to open and to resolve now."""
        if not (self.config.enabled and self.config.series_absent_after):
            return []
        cutoffs = series_cutoffs(health, self.watched, self.config)
        retired = retire_cutoffs(health, self.watched, self.config)
        open_now = store.open_series_absences(self.engine)
        return plan_series_absent(
            store.quiet_series(self.engine, cutoffs, retired),
            open_now,
            store.last_sample_times(self.engine, list(open_now)),
            retired=retired,
            watched=self.watched,
            detection=self.detection,
            alerts=self.alerts,
            silences=silences,
            now=now,
        )


def series_cutoffs(
    health: Mapping[str, store.SourceHealth],
    watched: Mapping[str, Watched],
    config: AbsentConfig,
) -> dict[str, int]:
    """Per watched source that is collecting: the time (epoch seconds) a series' last
    sample must be older than to be absent — its last good collection, less the wait."""
    found: dict[str, int] = {}
    for name, source in watched.items():
        seen = health.get(name)
        if seen is None or seen.last_ok_at is None or seen.last_error is not None:
            continue  # not collecting: source_down's, or nothing known yet
        wait = max(config.series_absent_after, MISSED_RUNS * source.interval)
        found[name] = to_epoch(seen.last_ok_at - wait)
    return found


def retire_cutoffs(
    health: Mapping[str, store.SourceHealth],
    watched: Mapping[str, Watched],
    config: AbsentConfig,
) -> dict[str, int]:
    """Per watched source that is collecting: the time (epoch seconds) a series' last
    sample must be older than to be retired — its last good collection, less
    ``series_retire_after`` (none when that is 0: never)."""
    if not config.series_retire_after:
        return {}
    found: dict[str, int] = {}
    for name in watched:
        seen = health.get(name)
        if seen is None or seen.last_ok_at is None or seen.last_error is not None:
            continue  # not collecting: nothing can be told about its series
        found[name] = to_epoch(seen.last_ok_at - config.series_retire_after)
    return found


def plan_series_absent(
    quiet: Sequence[store.QuietSeries],
    open_now: Mapping[int, IncidentRecord],
    last_seen: Mapping[int, int],
    *,
    retired: Mapping[str, int] | None = None,
    watched: Mapping[str, Watched],
    detection: DetectionConfig,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> list[IncidentWrite]:
    """The ``series_absent`` incidents to open (a quiet series of a collecting source,
    not let off by an override) and to resolve (a sample came after its opening, its
    source is no longer watched, or it is retired: its last sample is older than its
    source's ``retired`` cutoff — a label set gone for good, such as a replaced pod's,
    stops firing after ``series_retire_after``). Pure."""
    retired = retired or {}
    writes: list[IncidentWrite] = []
    for series in quiet:
        if series.id in open_now or series.metric in watched[series.source].skip:
            continue
        labels = json.loads(series.labels)
        if not detection.settings_for(series.metric, labels).absent:
            continue
        episode = Episode(
            incident_id=None,
            version=None,
            opened_at=from_epoch(series.last_ts),
            last_seen_at=now,
            peak_score=DOWN_SCORE,
            severity=ABSENT_SEVERITY,
            notices=[(Event.FIRING, to_epoch(now))],
        )
        write = incident_write(
            None, series_absent_meta(series), episode, alerts, silences, now,
            identity=f"{SERIES_ABSENT}:{series.id}",
        )  # fmt: skip
        writes.append(replace(write, change="opened"))
    for sid, absence in sorted(open_now.items()):
        labels = dict(absence.labels)
        back = last_seen.get(sid)
        returned = back is not None and back > to_epoch(absence.opened_at)
        metric = labels.get("series_metric", "")
        let_off = not detection.settings_for(metric, labels).absent
        source = labels.get("source", "")
        gone = back is not None and source in retired and back < retired[source]
        if returned or let_off or gone or source not in watched:
            at = from_epoch(back) if returned and back is not None else now
            write = _resolving_series(sid, absence, at, alerts, silences, now)
            writes.append(replace(write, change="retired") if gone and not returned else write)
    return writes


def series_absent_meta(series: store.QuietSeries) -> store.SeriesMeta:
    """What routing sees of a series' ``series_absent`` incident: metric
    ``series_absent``, the series' labels plus ``series_metric`` and ``series_id``."""
    labels = {
        **json.loads(series.labels),
        "series_metric": series.metric,
        "series_id": str(series.id),
    }
    return store.SeriesMeta(0, SERIES_ABSENT, labels, series.source, series.entity, "absent")


def _resolving_series(
    sid: int,
    absence: IncidentRecord,
    back: datetime,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> IncidentWrite:
    episode = resolved_episode(absence, back, now)
    labels = {**absence.labels, "severity": absence.severity}  # as opened
    write = episode_write(
        None, absence.entity, SERIES_ABSENT, labels, f"{SERIES_ABSENT}:{sid}",
        episode, alerts, silences, now,
    )  # fmt: skip
    return replace(write, change="resolved")


def plan_source_down(
    health: Mapping[str, store.SourceHealth],
    open_now: Mapping[str, IncidentRecord],
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
        notices=[(Event.FIRING, to_epoch(now))],
    )
    return _write(source, episode, alerts, silences, now, "opened")


def _resolving(
    absence: IncidentRecord,
    back: datetime,
    alerts: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> IncidentWrite:
    episode = resolved_episode(absence, back, now)
    return _write(absence.entity, episode, alerts, silences, now, "resolved")


def resolved_episode(absence: IncidentRecord, back: datetime, now: datetime) -> Episode:
    """An absent-data incident resolved: the data is back since ``back``, told ``now``."""
    return Episode(
        incident_id=absence.id,
        version=absence.version,
        opened_at=absence.opened_at,
        last_seen_at=back,
        peak_score=DOWN_SCORE,
        severity=absence.severity,
        status=IncidentStatus.RESOLVED,
        resolved_at=back,
        notices=[(Event.RESOLVED, to_epoch(now))],
    )


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
