"""The detection job: score what was collected since the last cycle, store anomalies.

Series are scored as *entities* in one :class:`~anomon.detect.fleet.Fleet` (one pooled
forest): the series of one source about one thing — its ``entity`` (a host, a model
server) and, where its labels have them, one ``model`` and ``version`` — are aligned on
the times that source stamped them (one collection = one row; a series missing from a
row is a missing value, not a failure), so the forest sees a host or a model going
wrong on several metrics at once. Each series keeps its own score — its own detectors',
raised to the entity's on the rows where it drives an entity anomaly
(:meth:`~anomon.detect.entity.Scores.contributors`) — so an anomaly the forest finds in
joint deviations is recorded on the series behind it (less what its overrides' minimum
effect and people's feedback tolerate: :func:`with_effect`). The alarm rules run on the
entity's score, the largest of its series' (:mod:`anomon.service.alerting`): one event
of an entity is one incident.

The fleet's windows live in memory; after a restart (or when an entity gains a series)
they are rebuilt from the last ``warmup_rows`` scored samples of each series, and
scoring goes on from each series' watermark, so nothing is lost or scored twice. A
sample older than its entity's last scored row (a series that joined late, or a source
that stamps series out of order) is stored but not scored.

One bad series never stops the fleet: a cycle that fails on the data (anything but a
store error) is retried in halves until the series that fail it are found; they are set
aside for an hour (named in the log, the run row and a counter) and the rest is scored.
Samples stamped beyond ``[samples] max_ahead`` of now are never read, so no watermark
moves past the samples still to come.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig, SeriesSettings
from anomon.detect import DETECTOR_VERSION
from anomon.detect.entity import STALE_STEPS, Scores, default_direction
from anomon.detect.fleet import Fleet
from anomon.detect.rules import CRITICAL_SCORE
from anomon.errors import AnomonError, UsageError, summarise
from anomon.model import (
    AnomalyRecord,
    DeployRecord,
    IncidentStatus,
    SeriesKey,
    Severity,
    describe_key,
    escape_controls,
)
from anomon.service.alerting import (
    Alarms,
    Members,
    plan_incidents,
    resolve_incident,
)
from anomon.service.telemetry import Telemetry
from anomon.sources.quality import DRIFT_METRICS, ESTIMATED_METRICS, LABEL_ARRIVAL_METRICS
from anomon.timeutil import Clock, format_duration, from_epoch, to_epoch, utcnow

log = logging.getLogger("anomon.detect")

READ_SERIES = 1000  # series read per query batch (whole entities, at least one)
QUARANTINE = timedelta(hours=1)  # how long a series that fails the cycle is set aside
SLICE_POINTS = 250_000  # rows scored per fleet call when there is a backlog
# A model version, or a model deployed again (``anomon deploy``), starts from this many
# rows of what ran before it: a baseline of its own within about as many rows, yet a
# new version much worse than the last is told at once, not learnt as its normal.
SEED_ROWS = 50

EntityKey = tuple[str, str, str, str]  # source, entity, model, version
UnitKey = tuple[str, str, str]  # entity, model, version: what one incident is about
Rows = tuple[np.ndarray, np.ndarray]  # times, values (rows, metrics)
# an alarm unit's rows from one scored entity: times, scores, leading series, at_once
Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# What a model's windows say before their labels (CBPE estimates, drift): known when a window
# closes, a day before its labelled metrics. An entity's rows are scored once, in time
# order, so they are an entity (and alarm unit) of their own: in one with the labelled
# metrics, those would come for rows already scored and never be judged. So is how many
# of a window's predictions got their label by label_delay: known only once it is settled.
BEFORE_LABELS = frozenset((*ESTIMATED_METRICS, *DRIFT_METRICS))
BEFORE_LABELS_STAGE = "\x00before labels"  # in the key's entity: never a real entity name
LABEL_ARRIVAL_STAGE = "\x00label arrival"
STAGES = {
    **dict.fromkeys(BEFORE_LABELS, BEFORE_LABELS_STAGE),
    **dict.fromkeys(LABEL_ARRIVAL_METRICS, LABEL_ARRIVAL_STAGE),
}
SHOWN_STAGES = {BEFORE_LABELS_STAGE: " (before labels)", LABEL_ARRIVAL_STAGE: " (label arrival)"}


def entity_key(series: store.ScoredSeries) -> EntityKey:
    """The entity a series is scored with: its source, entity, and model and version
    labels if it has them (a model version is part of a model's identity); a model's
    estimates before labels (:data:`BEFORE_LABELS`) and its label arrival
    (:data:`~anomon.sources.quality.LABEL_ARRIVAL_METRICS`) are entities apart."""
    return _entity_key(series.source, series.entity, series.labels, series.metric)


@functools.lru_cache(maxsize=1 << 16)
def _entity_key(source: str, entity: str, labels: str, metric: str = "") -> EntityKey:
    # a series' labels never change: each cycle asks again, the JSON is read once
    found = json.loads(labels)
    stage = STAGES.get(metric, "")
    return source, entity + stage, found.get("model", ""), found.get("version", "")


def plain_entity(entity: str) -> str:
    """An entity key's entity without its stage: the entity its series name."""
    for stage in SHOWN_STAGES:
        entity = entity.replace(stage, "")
    return entity


def _shown(key: EntityKey) -> str:
    """An entity key as people read it: ``source / entity / model / version``."""
    source, entity, model, version = key
    for stage, shown in SHOWN_STAGES.items():
        entity = entity.replace(stage, shown)
    return " / ".join(part for part in (source, entity, model, version) if part)


def config_hash(config: DetectionConfig) -> str:
    """A short stable fingerprint of the detection settings, stored with each anomaly."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


@dataclass
class DetectJob:
    """Score every series' new samples; write anomalies, incident changes (with their
    notifications), watermarks and a run row, all in one transaction."""

    engine: store.Engine
    config: DetectionConfig
    clock: Clock = field(default=utcnow)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    telemetry: Telemetry | None = None
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    # whether this worker scores an entity (several workers: see membership)
    owns: Callable[[EntityKey], bool] | None = None
    fleet: Fleet[EntityKey] = field(init=False)
    quarantine: dict[int, tuple[datetime, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._hash = config_hash(self.config)
        self._forget()

    def _forget(self) -> None:
        """Drop the in-memory windows and alarm state; the next cycle rebuilds both from
        the store, which is the truth (watermarks, scored rows, firing incidents)."""
        self.fleet = Fleet[EntityKey](self.config)
        self.members: dict[EntityKey, list[int]] = {}  # each entity's series, column order
        self.unit_ids: dict[UnitKey, list[int]] = {}  # each alarm unit's series, id order
        self.settings: dict[int, SeriesSettings] = {}  # each series' overrides
        self.alarms = Alarms(self.config, self.alerts)
        self.deploys: list[DeployRecord] = []  # recorded with `anomon deploy`, oldest first
        self.deploys_seen: int | None = None  # the last deploy id read
        # the version each model on each entity was deployed at last: (model, entity) ->
        # (at, version), so that a deploy is recorded once, whichever entity finds it
        self.deployed: dict[tuple[str, str], tuple[datetime, str]] = {}

    def __call__(self) -> None:
        started = self.clock()
        try:
            points, anomalies = self._isolating(started)
        except AnomonError as exc:
            log.error("detection cycle failed: %s", exc)
            self._forget()  # the windows took in rows the store did not keep
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("detection cycle failed unexpectedly")
            self._forget()
            return
        if self.telemetry is not None:
            self.telemetry.record_detection((self.clock() - started).total_seconds())
        log.debug("detection: %d points scored, %d new anomalies", points, anomalies)

    def _isolating(self, started: datetime) -> tuple[int, int]:
        """Run the cycle; if it fails on the data (not the store), find the series that
        make it fail by halving, set them aside for :data:`QUARANTINE`, and score the rest.

        A store failure (AnomonError) is the database's, not a series', and is raised: it
        would fail every half alike.
        """
        now = self.clock()
        self.quarantine = {sid: q for sid, q in self.quarantine.items() if q[0] > now}
        retire_after = int(self.config.absent.series_retire_after.total_seconds())
        every = store.series_to_score(self.engine, retire_after=retire_after)
        if retire_after:  # judged on every live series, the other workers' too
            self._resolve_retired(every)
        if self.owns is not None:  # the others' entities are theirs to score
            owns = self.owns
            every = [s for s in every if owns(entity_key(s))]
        self._let_go({entity_key(s) for s in every})
        self._follow_deploys()
        series = [s for s in every if s.id not in self.quarantine]
        # an entity's series side by side, so that halving splits as few entities as it can
        series.sort(key=lambda s: (entity_key(s), s.id))
        try:
            return self._cycle(started, series)
        except AnomonError:
            raise
        except Exception as exc:
            log.error(
                "detection cycle failed (%s: %s); looking for the series that cause it",
                type(exc).__name__,
                exc,
            )
            self._forget()  # the windows took in rows that were not stored
        return self._halves(started, series)

    def _let_go(self, live: set[EntityKey]) -> None:
        """Drop the windows and alarm state of the entities none of whose series is to
        be scored any more (retired: ``series_to_score``), so a daemon that sees label
        sets come and go for months keeps only the living in memory. One that comes back
        is rebuilt from the store, as after a restart."""
        gone = [key for key in self.members if key not in live]
        if not gone:
            return
        self._drop(gone)
        log.info(
            "detection: %d entit%s retired (no sample for %s before their source's latest): %s",
            len(gone),
            "y" if len(gone) == 1 else "ies",
            format_duration(self.config.absent.series_retire_after),
            escape_controls(summarise([_shown(key) for key in gone], 3)),
        )

    def _resolve_retired(self, every: list[store.ScoredSeries]) -> None:
        """Resolve the firing incidents of things that are gone: an incident whose series
        is retired, and no series of its entity (and model / version) is scored any more,
        would fire for ever. Its receivers are told it resolved, as by hand."""
        live = {s.id for s in every}
        units = {(plain_entity(key[1]), key[2], key[3]) for key in map(entity_key, every)}
        firing = store.search_incidents(self.engine, status=IncidentStatus.FIRING, limit=10_000)
        for incident in firing:
            labels = incident.labels
            unit = (incident.entity, labels.get("model", ""), labels.get("version", ""))
            if incident.series_id is None or incident.series_id in live or unit in units:
                continue  # absent-data incidents have their own watch; the unit goes on
            try:
                resolve_incident(self.engine, self.alerts, incident.id, now=self.clock())
            except UsageError:
                continue  # resolved meanwhile (by a person, by another writer)
            log.info(
                "incident %d resolved: its series are retired (no sample for %s)",
                incident.id,
                format_duration(self.config.absent.series_retire_after),
            )

    def _follow_deploys(self) -> None:
        """Read the deploys recorded since the last cycle; an entity of a model that has
        no ``version`` label starts afresh at its deploy (dropped now, rebuilt by the
        next warm-up from :data:`SEED_ROWS` rows before the deploy and its rows since)."""
        new = store.list_deploys(self.engine, after_id=self.deploys_seen)
        if not new:
            return
        self.deploys_seen = max(d.id or 0 for d in new)
        self._deployed(new)
        told = [d for d in new if d.origin == "cli"]
        self.deploys += told
        restart = [key for key in self.members if self._deployed_at(key, told) is not None]
        if restart:
            self._drop(restart)
            log.info(
                "detection: %d entit%s a new baseline at a deploy: %s",
                len(restart),
                "y starts" if len(restart) == 1 else "ies start",
                escape_controls(summarise([_shown(key) for key in restart], 3)),
            )

    def _deployed(self, deploys: Sequence[DeployRecord]) -> None:
        """Note the latest version deployed of each model on each entity."""
        for deploy in deploys:
            where = (deploy.model, deploy.entity)
            if where not in self.deployed or self.deployed[where][0] <= deploy.at:
                self.deployed[where] = (deploy.at, deploy.version)

    def _record_label_deploys(self, deploys: Sequence[DeployRecord]) -> None:
        """Record deploys found from version labels, but those of a version that is the
        latest deployed of its model on its entity already (another of its entities -- its
        estimates before labels, its label arrival -- found it first)."""
        new: dict[tuple[str, str, str], DeployRecord] = {}
        for deploy in sorted(deploys, key=lambda d: d.at):
            latest = self.deployed.get((deploy.model, deploy.entity))
            if latest is not None and latest[1] == deploy.version:
                continue
            new.setdefault((deploy.model, deploy.entity, deploy.version), deploy)
        if not new:
            return
        store.record_deploys(self.engine, list(new.values()), now=self.clock())
        self._deployed(list(new.values()))
        for deploy in new.values():
            log.info("detection: %s", escape_controls(f"deploy of {deploy.describe()} found"))

    @staticmethod
    def _deployed_at(key: EntityKey, deploys: list[DeployRecord]) -> int | None:
        """When an entity of no ``version`` label was last deployed (epoch seconds), by
        ``deploys``; None if never (a versioned entity is new at each version anyway)."""
        _, entity, model, version = key
        if version:
            return None
        plain = plain_entity(entity)
        times = [to_epoch(d.at) for d in deploys if d.covers(plain, {"model": model})]
        return max(times, default=None)

    def _drop(self, gone: list[EntityKey]) -> None:
        """Drop the windows and alarm state of entities (the next warm-up rebuilds any
        that is still to be scored)."""
        for key in gone:
            for sid in self.members.pop(key):
                self.settings.pop(sid, None)
            self.fleet.remove(key)
        for unit_key in {key[1:] for key in gone}:
            ids = sorted(sid for key, m in self.members.items() if key[1:] == unit_key for sid in m)
            old = self.unit_ids.pop(unit_key, [])
            if old and (not ids or ids[0] != old[0]):  # else the same unit goes on
                self.alarms.forget(old[0])
            if ids:  # the unit's other sources' series go on, keyed by their first
                self.unit_ids[unit_key] = ids
                self.alarms.configure(ids[0], self._unit_settings(ids))

    def _halves(self, started: datetime, series: list[store.ScoredSeries]) -> tuple[int, int]:
        """Score ``series`` in halves, recursively; quarantine a single series that fails."""
        if len(series) == 1:
            self._set_aside(series[0], started)
            return 0, 0
        middle = len(series) // 2
        points = anomalies = 0
        for half in (series[:middle], series[middle:]):
            if not half:
                continue
            try:
                done = self._cycle(started, half)
            except AnomonError:
                raise
            except Exception:
                self._forget()
                done = self._halves(started, half)
            points, anomalies = points + done[0], anomalies + done[1]
        return points, anomalies

    def _set_aside(self, series: store.ScoredSeries, started: datetime) -> None:
        try:
            self._cycle(started, [series])
        except AnomonError:
            raise
        except Exception as exc:
            self._forget()
            reason = f"{type(exc).__name__}: {exc}"[:200]
            self.quarantine[series.id] = (started + QUARANTINE, reason)
            if self.telemetry is not None:
                self.telemetry.detection_quarantined.inc()
            log.error(
                "detection: series %d (%s) set aside for %s: it fails the cycle with %s",
                series.id,
                describe_key(SeriesKey(series.metric, series.labels)),
                format_duration(QUARANTINE),
                reason,
            )

    def _cycle(self, started: datetime, series: list[store.ScoredSeries]) -> tuple[int, int]:
        groups = by_entity(series)
        self._warm_up(groups)
        now = to_epoch(self.clock())
        latest = now + int(self.samples.max_ahead.total_seconds())
        stale_after = 10 * int(self.config.interval.total_seconds())
        known = {s.id: s for s in series}
        anomalies: list[AnomalyRecord] = []
        cycle: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        parts: dict[UnitKey, list[Part]] = {}  # each alarm unit's rows, per source
        read_until: dict[int, int] = {}
        quality: dict[int, str] = {}
        learning: dict[int, int | None] = {}
        last_rows: dict[int, store.LatestRow] = {}

        watermarks = {s.id: s.scored_until for s in series}

        def unscored(conn: Any, ids: list[int]) -> dict[int, store.Points]:
            # never past now: a stored future time would move the watermark beyond
            # every correct sample still to come
            return store.read_unscored(conn, ids, until=latest, after=watermarks)

        taught = store.feedback_tolerances(self.engine)
        for batch in self._slices(list(groups), unscored, read_until):
            self._record_switches(batch)
            results = self.fleet.update(batch)
            scored_now: list[int] = []
            for key, scores in results.items():
                detector = self.fleet.entities[key]
                states = detector.quality(now, stale_after=stale_after)
                until = detector.learning_until()
                ts, values = batch[key]
                own = series_scores(scores, self.config.threshold)
                per_series = np.full(values.shape, np.nan)
                for column, sid in enumerate(self.members[key]):
                    has = ~np.isnan(values[:, column])
                    if not has.any():
                        continue
                    settings = self.settings[sid]
                    score = with_effect(
                        own, scores.expected, values, has, column, settings, taught.get(sid)
                    )
                    per_series[has, column] = score
                    times = ts[has]
                    cycle[sid] = (times, score)
                    scored_now.append(sid)
                    anomalies += _records(
                        sid,
                        times,
                        values[has, column],
                        scores,
                        has,
                        column,
                        score,
                        settings.threshold,
                    )
                    quality[sid] = states[column]
                    learning[sid] = until[column] if states[column] == "learning" else None
                    expected = float(scores.expected[has, column][-1])
                    last_rows[sid] = (
                        int(times[-1]),
                        float(values[has, column][-1]),
                        expected,
                        float(score[-1]),
                    )
                unit, leading = self._unit_scores(key, per_series)
                leads = np.asarray(self.members[key])[leading]
                parts.setdefault(key[1:], []).append((ts, unit, leads, _at_once(scores, leading)))
            if self.telemetry is not None:
                self.telemetry.record_scores(
                    (sid, known[sid].metric, known[sid].entity, known[sid].labels, last)
                    for sid in scored_now
                    if np.isfinite(last := float(cycle[sid][1][-1]))
                )
        points = sum(ts.size for ts, _ in cycle.values())
        units: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # alarm unit -> its rows
        members: dict[int, Members] = {}
        for unit_key, found in parts.items():
            # every source's entity about the same thing, in id order: the first keys the
            # unit and its incidents
            ids = self.unit_ids[unit_key]
            ts, unit, leads, at_once = merged(found)
            units[ids[0]] = (ts, unit)
            members[ids[0]] = Members(ids, leads, at_once)
        incidents, anomalies = plan_incidents(
            self.engine, self.alarms, units, anomalies, now=started, members=members
        )
        lost: list[int] = []
        new = store.save_detection(
            self.engine,
            anomalies=anomalies,
            scored_until=read_until,
            quality=quality,
            learning_until=learning,
            latest=last_rows,
            started_at=started,
            finished_at=self.clock(),
            points=points,
            error=self._set_aside_line(),
            config_hash=self._hash,
            detector_version=DETECTOR_VERSION,
            incidents=incidents,
            lost=lost,
        )
        for write in incidents:  # what people need to see in the log, once it is stored
            if write.change is not None and write.series_id not in lost:
                log.info("%s", escape_controls(write.describe()))
        if lost:  # another writer changed these incidents first: start again from its truth
            log.info("detection: %d incident change(s) lost to another writer", len(lost))
            self._forget()
        return points, new

    def _unit_scores(self, key: EntityKey, per_series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An entity's alarm score per row and the column of the series leading it
        (:func:`unit_scores` with its series' own thresholds)."""
        own = [self.settings[sid].threshold for sid in self.members[key]]
        return unit_scores(per_series, own, self.config.threshold)

    def _set_aside_line(self) -> str | None:
        """The run row's error: the series detection skips, and why."""
        if not self.quarantine:
            return None
        shown = [f"series {sid}: {reason}" for sid, (_, reason) in self.quarantine.items()]
        return f"{len(shown)} series set aside: {summarise(shown, 3)}"

    def _slices(
        self,
        keys: list[EntityKey],
        read: Callable[[Any, list[int]], dict[int, store.Points]],
        read_until: dict[int, int] | None = None,
    ) -> Iterator[dict[EntityKey, Rows]]:
        """Read the rows of the entities ``keys``, aligned, in batches of about
        SLICE_POINTS points; ``read_until`` gets the last time read of each series.

        A steady cycle (a few rows per entity) is one batch, so the fleet scores it in
        one call; a cold start or a restart (thousands of rows per series) is scored in
        slices, so memory stays bounded by a slice, not by the backlog.
        """
        batch: dict[EntityKey, Rows] = {}
        size = 0
        for chunk in _chunks(keys, self.members, READ_SERIES):
            ids = [sid for key in chunk for sid in self.members[key]]
            with self.engine.connect() as conn:
                points = read(conn, ids)
            for key in chunk:
                found = [points.get(sid) for sid in self.members[key]]
                if read_until is not None:
                    read_until |= {
                        sid: int(p.ts[-1])
                        for sid, p in zip(self.members[key], found, strict=True)
                        if p is not None and p.ts.size
                    }
                rows = aligned(found, after=self.fleet.entities[key].last_ts)
                if rows[0].size:
                    batch[key] = rows
                    size += rows[1].size
            if size >= SLICE_POINTS:
                yield batch
                batch, size = {}, 0
        if batch:
            yield batch

    def _warm_up(self, groups: dict[EntityKey, list[store.ScoredSeries]]) -> None:
        """Add new entities to the fleet (and rebuild one whose series changed); rebuild
        the windows and alarm state of the series scored before (the store says which
        have a firing incident)."""
        fresh = [
            key for key, members in groups.items() if self.members.get(key) != members_of(members)
        ]
        if not fresh:
            return
        for key in fresh:
            self.members[key] = members_of(groups[key])
            for s in groups[key]:
                self.settings[s.id] = self.config.settings_for(s.metric, json.loads(s.labels))
            self.fleet.add(
                key,
                [s.metric for s in groups[key]],
                directions=[
                    self.settings[s.id].direction or default_direction(s.metric, self.config)
                    for s in groups[key]
                ],
                thresholds=[self.settings[s.id].threshold for s in groups[key]],
            )
        touched = {key[1:] for key in fresh}
        for unit_key in touched:
            self.unit_ids[unit_key] = []
        for key, ids in self.members.items():
            if key[1:] in touched:
                self.unit_ids[key[1:]] += ids
        for unit_key in touched:
            self.unit_ids[unit_key].sort()
            ids = self.unit_ids[unit_key]
            self.alarms.configure(ids[0], self._unit_settings(ids))
        seen = [key for key in fresh if any(s.scored_until is not None for s in groups[key])]
        self._seed_versions([key for key in fresh if key not in seen], groups)
        if not seen:
            return
        firing = store.firing_series(self.engine)
        taught = store.feedback_tolerances(self.engine)
        scored: dict[UnitKey, list[Part]] = {}  # each alarm unit's rows scored before
        if self.config.warmup_rows:
            # rows scored before: only the windows and the alarm rules' state are kept
            for batch in self._warm_batches(seen):
                for key, scores in self.fleet.update(batch).items():
                    own = series_scores(scores, self.config.threshold)
                    values = batch[key][1]
                    per_series = np.full(values.shape, np.nan)
                    for column, sid in enumerate(self.members[key]):
                        has = ~np.isnan(values[:, column])
                        per_series[has, column] = with_effect(
                            own,
                            scores.expected,
                            values,
                            has,
                            column,
                            self.settings[sid],
                            taught.get(sid),
                        )
                    unit, leading = self._unit_scores(key, per_series)
                    leads = np.asarray(self.members[key])[leading]
                    scored.setdefault(key[1:], []).append(
                        (batch[key][0], unit, leads, _at_once(scores, leading))
                    )
        for unit_key in {key[1:] for key in seen}:
            ids = self.unit_ids[unit_key]
            was_firing = any(sid in firing for sid in ids)
            found = scored.get(unit_key)
            _, unit, _, at_once = merged(found) if found else _NO_ROWS
            self.alarms.warm(ids[0], unit, firing=was_firing, at_once=at_once)

    def _warm_batches(self, keys: list[EntityKey]) -> Iterator[dict[EntityKey, Rows]]:
        """The rows the windows of ``keys`` are rebuilt from: each entity's last
        ``warmup_rows`` scored rows, or, for one deployed since (``anomon deploy``),
        :data:`SEED_ROWS` rows before its deploy and its scored rows since."""
        rows = self.config.warmup_rows
        starts: dict[int | None, list[EntityKey]] = {}
        for key in keys:
            starts.setdefault(self._deployed_at(key, self.deploys), []).append(key)
        for start, chosen in starts.items():

            def read(conn: Any, ids: list[int], at: int | None = start) -> dict[int, store.Points]:
                if at is None:
                    return store.read_recent(conn, ids, rows=rows)
                return store.read_seed(conn, ids, before=at, seed=SEED_ROWS, rows=rows)

            yield from self._slices(chosen, read)

    def _seed_versions(
        self, keys: list[EntityKey], groups: dict[EntityKey, list[store.ScoredSeries]]
    ) -> None:
        """Start each new version of a model from the last :data:`SEED_ROWS` rows of its
        previous version (the one of the same source, entity and model scored last), its
        series matched by metric and labels but ``version``; record the deploy (at the
        new version's first sample) where there was a previous one."""
        found: dict[tuple[str, str, str], DeployRecord] = {}
        for key in keys:
            _, entity, model, version = key
            before = [
                other
                for other in groups
                if other[:3] == key[:3] and other[3] != version and other in self.members
            ]
            if not version or not before:
                continue
            previous = max(before, key=lambda k: max(s.scored_until or 0 for s in groups[k]))
            by_name = {_unversioned(s): s.id for s in groups[previous]}
            columns = [by_name.get(_unversioned(s)) for s in groups[key]]
            with self.engine.connect() as conn:
                start = store.first_sample_time(conn, self.members[key])
                if start is None:
                    continue
                points = store.read_seed(
                    conn, [sid for sid in columns if sid is not None], before=start,
                    seed=SEED_ROWS, rows=0,
                )  # fmt: skip
            rows = aligned(
                [points.get(sid) if sid is not None else None for sid in columns], after=None
            )
            if rows[0].size:
                self.fleet.update({key: rows})  # their scores were the previous version's
            plain = plain_entity(entity)
            deploy = DeployRecord(
                at=from_epoch(start), model=model, version=version, entity=plain,
                note=f"the version label changed from {previous[3]}", origin="label",
            )  # fmt: skip
            earlier = found.get((model, plain, version))
            if earlier is None or deploy.at < earlier.at:
                found[(model, plain, version)] = deploy
        self._record_label_deploys(list(found.values()))

    def _record_switches(self, batch: dict[EntityKey, Rows]) -> None:
        """Record the deploy of a version that comes back (a rollback): its rows resume
        after a gap of more than :data:`~anomon.detect.entity.STALE_STEPS` of its steps,
        during which another version of the same model ran. Two versions that run side by
        side (a canary) have no such gap: no deploy. A version new to the fleet is
        :meth:`_seed_versions`' (scored from its predecessor's rows)."""
        gapped = []  # the versioned entities whose rows resume after a gap
        for key, (ts, _) in batch.items():
            detector = self.fleet.entities[key]
            last = detector.last_ts
            if not key[3] or last is None or not ts.size:
                continue
            if int(ts[0]) - last > STALE_STEPS * max(detector.mean_step(), 1.0):
                gapped.append((key, ts, last))
        if not gapped:
            return
        # the versions of each model, once (a restart after an outage: every entity)
        versions: dict[tuple[str, str, str], list[EntityKey]] = {}
        for other in self.fleet.entities:
            if other[3]:
                versions.setdefault(other[:3], []).append(other)
        found: list[DeployRecord] = []
        for key, ts, last in gapped:
            _, entity, model, version = key
            ran: dict[str, int] = {}  # another version of the model -> its latest row
            for other in versions[key[:3]]:
                if other[3] == version:
                    continue
                latest = self.fleet.entities[other].last_ts
                if other in batch and batch[other][0].size:
                    below = batch[other][0][batch[other][0] < ts[0]]
                    latest = max(latest or 0, int(below[-1])) if below.size else latest
                if latest is not None and latest > last:
                    ran[other[3]] = latest
            if not ran:
                continue
            previous = max(ran, key=ran.__getitem__)
            found.append(
                DeployRecord(
                    at=from_epoch(int(ts[0])),
                    model=model,
                    version=version,
                    entity=plain_entity(entity),
                    origin="label",
                    note=f"the version label changed from {previous}, back to {version}",
                )
            )
        self._record_label_deploys(found)

    def _unit_settings(self, ids: list[int]) -> SeriesSettings:
        """The alarm rules of an alarm unit: the largest ``open_after`` and
        ``resolve_after`` its series' overrides set (the threshold is each series' own,
        mapped)."""
        found = [self.settings[sid] for sid in ids]
        opens = [s.open_after for s in found if s.open_after is not None]
        resolves = [s.resolve_after for s in found if s.resolve_after is not None]
        return SeriesSettings(
            threshold=self.config.threshold,
            open_after=max(opens, default=None),
            resolve_after=max(resolves, default=None),
        )


_NO_ROWS: Part = (
    np.empty(0, dtype=np.int64),
    np.empty(0),
    np.empty(0, dtype=np.int64),
    np.empty(0, dtype=bool),
)


def _unversioned(series: store.ScoredSeries) -> tuple[str, str]:
    """A series' metric and labels but its ``version``: the same series of another
    version of its model."""
    labels = json.loads(series.labels)
    labels.pop("version", None)
    return series.metric, json.dumps(labels, sort_keys=True)


def merged(parts: list[Part]) -> Part:
    """One alarm unit's rows from several sources' entities, in time order (a source's
    rows stay in their order; rows of the same time stay apart)."""
    if len(parts) == 1:
        return parts[0]
    joined = [np.concatenate([part[i] for part in parts]) for i in range(4)]
    order = np.argsort(joined[0], kind="stable")
    return joined[0][order], joined[1][order], joined[2][order], joined[3][order]


def by_entity(series: list[store.ScoredSeries]) -> dict[EntityKey, list[store.ScoredSeries]]:
    """The series by entity, each entity's in id order."""
    groups: dict[EntityKey, list[store.ScoredSeries]] = {}
    for s in sorted(series, key=lambda s: s.id):
        groups.setdefault(entity_key(s), []).append(s)
    return groups


def members_of(series: list[store.ScoredSeries]) -> list[int]:
    """An entity's series ids in column order."""
    return [s.id for s in series]


def _chunks(
    keys: list[EntityKey], members: dict[EntityKey, list[int]], most: int
) -> Iterator[list[EntityKey]]:
    """Whole entities, about ``most`` series at a time (an entity larger alone)."""
    chunk: list[EntityKey] = []
    count = 0
    for key in keys:
        if chunk and count + len(members[key]) > most:
            yield chunk
            chunk, count = [], 0
        chunk.append(key)
        count += len(members[key])
    if chunk:
        yield chunk


def aligned(points: list[store.Points | None], *, after: int | None) -> Rows:
    """The rows of an entity: every time any of its series has a sample (later than
    ``after``), with each series' value in its column and NaN where it has none."""
    present = [p.ts for p in points if p is not None and p.ts.size]
    if not present:
        return np.empty(0, dtype=np.int64), np.empty((0, len(points)))
    times = present[0] if len(present) == 1 else np.unique(np.concatenate(present))
    if after is not None:
        times = times[times > after]
    values = np.full((times.size, len(points)), np.nan)
    for column, p in enumerate(points):
        if p is None or not p.ts.size or not times.size:
            continue
        at = np.searchsorted(times, p.ts)
        hit = at < times.size
        hit[hit] = times[at[hit]] == p.ts[hit]
        values[at[hit], column] = p.values[hit]
    return times.astype(np.int64), values


def _at_once(scores: Scores, column: np.ndarray) -> np.ndarray:
    """Where one severe row of an entity may open an incident: where the series leading
    it may (:attr:`Scores.at_once`: its baseline has spread, and the row goes past every
    deviation it has shown in its references)."""
    at_once: np.ndarray = scores.at_once[np.arange(column.size), column]
    return at_once


def with_effect(
    own: np.ndarray,
    expected: np.ndarray,
    values: np.ndarray,
    rows: np.ndarray,
    column: int,
    settings: SeriesSettings,
    tolerance: store.Tolerance | None = None,
) -> np.ndarray:
    """One series' scores on its ``rows``, 0 where the value is closer to what was
    expected than its override's ``min_effect_abs`` / ``min_effect_rel`` (a deviation too
    small to matter to anyone is no anomaly, however rare), or within the ``tolerance``
    people's verdicts taught in that direction (a deviation like one marked
    ``false_alarm`` or ``expected`` is not raised again)."""
    score: np.ndarray = own[rows, column]
    taught = tolerance is not None and (tolerance.up > 0 or tolerance.down > 0)
    if not (settings.min_effect_abs or settings.min_effect_rel or taught):
        return score
    hoped = expected[rows, column]
    deviation = values[rows, column] - hoped  # NaN expected: compares False, not small
    least = np.maximum(settings.min_effect_abs, settings.min_effect_rel * np.abs(hoped))
    small = np.abs(deviation) < least
    if tolerance is not None:
        small |= ((deviation > 0) & (deviation <= tolerance.up)) | (
            (deviation < 0) & (-deviation <= tolerance.down)
        )
    return np.where(small, 0.0, score)


def unit_scores(
    per_series: np.ndarray, thresholds: Sequence[float], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """An entity's alarm score per row and the column of the series that leads it
    there: the largest of its series' scores ``(rows, series)``, each mapped so that its
    own threshold lands on the entity's ``threshold`` (a series whose override says 90
    counts as abnormal from 90). NaN where no series has a score."""
    own = np.asarray(thresholds, dtype=np.float64)
    mapped = np.where(
        per_series >= own[None, :],
        np.maximum(per_series, threshold),
        np.minimum(per_series, np.nextafter(threshold, 0.0)),
    )
    filled = np.where(np.isnan(mapped), -np.inf, mapped)
    column = np.argmax(filled, axis=1)
    best = filled[np.arange(filled.shape[0]), column]
    return np.where(np.isinf(best), np.nan, best), column


def series_scores(scores: Scores, threshold: float) -> np.ndarray:
    """Each series' score per row, ``(rows, metrics)``: its own detectors' score, or the
    entity's where the series drives an entity anomaly."""
    drivers = scores.contributors(threshold)
    return np.where(drivers, scores.score[:, None], scores.metric_scores)


def _records(
    series_id: int,
    ts: np.ndarray,
    values: np.ndarray,
    scores: Scores,
    rows: np.ndarray,
    column: int,
    own: np.ndarray,
    threshold: float,
) -> list[AnomalyRecord]:
    """The anomalies of one series of an entity: its rows (``rows`` of the entity's)
    whose own score ``own`` reaches ``threshold``."""
    expected_all = scores.expected[rows, column]
    detectors = {name: v[rows] for name, v in scores.detectors.items()}
    found = []
    for i in np.flatnonzero(own >= threshold).tolist():
        value, expected = float(values[i]), float(expected_all[i])
        found.append(
            AnomalyRecord(
                series_id=series_id,
                ts=int(ts[i]),
                value=value,
                expected=expected if np.isfinite(expected) else None,
                score=float(own[i]),
                detector_scores={name: float(v[i]) for name, v in detectors.items()},
                direction="up" if not np.isfinite(expected) or value >= expected else "down",
                severity=Severity.CRITICAL if own[i] >= CRITICAL_SCORE else Severity.WARNING,
            )
        )
    return found
