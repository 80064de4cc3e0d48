"""The detection job: score what was collected since the last cycle, store anomalies.

Each series is scored as an entity of one metric in one :class:`~anomon.detect.fleet.Fleet`
(one pooled forest). The fleet's windows live in memory; after a restart they are
rebuilt from the last ``warmup_rows`` scored samples of each series, and scoring goes on
from each series' watermark, so nothing is lost or scored twice.

One bad series never stops the fleet: a cycle that fails on the data (anything but a
store error) is retried in halves until the series that fail it are found; they are set
aside for an hour (named in the log, the run row and a counter) and the rest is scored.
Samples stamped beyond ``[samples] max_ahead`` of now are never read, so no watermark
moves past the samples still to come.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.detect import DETECTOR_VERSION
from anomon.detect.entity import Scores
from anomon.detect.fleet import Fleet
from anomon.errors import AnomonError, summarise
from anomon.model import AnomalyRecord, SeriesKey, describe_key, escape_controls
from anomon.service.alerting import CRITICAL_SCORE, Alarms, plan_incidents
from anomon.service.telemetry import Telemetry
from anomon.timeutil import Clock, format_duration, to_epoch, utcnow

log = logging.getLogger("anomon.detect")

READ_SERIES = 1000  # series read per query batch
QUARANTINE = timedelta(hours=1)  # how long a series that fails the cycle is set aside
SLICE_POINTS = 250_000  # rows scored per fleet call when there is a backlog


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
    fleet: Fleet[int] = field(init=False)
    quarantine: dict[int, tuple[datetime, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._hash = config_hash(self.config)
        self._forget()

    def _forget(self) -> None:
        """Drop the in-memory windows and alarm state; the next cycle rebuilds both from
        the store, which is the truth (watermarks, scored rows, firing incidents)."""
        self.fleet = Fleet[int](self.config)
        self.alarms = Alarms(self.config, self.alerts)

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
        series = [s for s in store.series_to_score(self.engine) if s.id not in self.quarantine]
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
        self._warm_up([s for s in series if s.id not in self.fleet.entities])
        now = to_epoch(self.clock())
        latest = now + int(self.samples.max_ahead.total_seconds())
        stale_after = 10 * int(self.config.interval.total_seconds())
        known = {s.id: s for s in series}
        anomalies: list[AnomalyRecord] = []
        cycle: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        quality: dict[int, str] = {}
        learning: dict[int, int | None] = {}
        last_rows: dict[int, store.LatestRow] = {}

        def unscored(conn: Any, ids: list[int]) -> dict[int, store.Points]:
            # never past now: a stored future time would move the watermark beyond
            # every correct sample still to come
            return store.read_unscored(conn, ids, until=latest)

        for batch in self._slices(list(known), unscored):
            results = self.fleet.update(batch)
            for sid, scores in results.items():
                anomalies += _records(sid, batch[sid], scores)
                cycle[sid] = (batch[sid][0], scores.score)
                detector = self.fleet.entities[sid]
                quality[sid] = detector.quality(now, stale_after=stale_after)[0]
                learning[sid] = detector.learning_until()[0] if quality[sid] == "learning" else None
                ts, values = batch[sid]
                if ts.size:
                    expected = float(scores.expected[-1, 0])
                    last_rows[sid] = (int(ts[-1]), float(values[-1, 0]), expected)
            if self.telemetry is not None:
                self.telemetry.record_scores(
                    (sid, known[sid].metric, known[sid].entity, known[sid].labels, last)
                    for sid, scores in results.items()
                    if scores.score.size and np.isfinite(last := float(scores.score[-1]))
                )
        points = sum(ts.size for ts, _ in cycle.values())
        incidents, anomalies = plan_incidents(
            self.engine, self.alarms, cycle, anomalies, now=started
        )
        lost: list[int] = []
        new = store.save_detection(
            self.engine,
            anomalies=anomalies,
            scored_until={sid: int(ts[-1]) for sid, (ts, _) in cycle.items()},
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

    def _set_aside_line(self) -> str | None:
        """The run row's error: the series detection skips, and why."""
        if not self.quarantine:
            return None
        shown = [f"series {sid}: {reason}" for sid, (_, reason) in self.quarantine.items()]
        return f"{len(shown)} series set aside: {summarise(shown, 3)}"

    def _slices(
        self, ids: list[int], read: Callable[[Any, list[int]], dict[int, store.Points]]
    ) -> Iterator[dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Read the rows of ``ids`` and yield them in batches of about SLICE_POINTS points.

        A steady cycle (a few rows per series) is one batch, so the fleet scores it in
        one call; a cold start or a restart (thousands of rows per series) is scored in
        slices, so memory stays bounded by a slice, not by the backlog.
        """
        batch: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        size = 0
        for start in range(0, len(ids), READ_SERIES):
            with self.engine.connect() as conn:
                points = read(conn, ids[start : start + READ_SERIES])
            for sid, p in points.items():
                if p.ts.size:
                    batch[sid] = (p.ts, p.values[:, None])
                    size += p.ts.size
            if size >= SLICE_POINTS:
                yield batch
                batch, size = {}, 0
        if batch:
            yield batch

    def _warm_up(self, series: list[store.ScoredSeries]) -> None:
        """Add new series to the fleet; rebuild the windows and alarm state of those
        scored before (the store says which have a firing incident)."""
        for s in series:
            self.fleet.add(s.id, [s.metric])
        seen = [s.id for s in series if s.scored_until is not None]
        if not seen:
            return
        firing = store.firing_series(self.engine)
        scored: dict[int, np.ndarray] = {}
        if self.config.warmup_rows:
            rows = self.config.warmup_rows

            def recent(conn: Any, ids: list[int]) -> dict[int, store.Points]:
                return store.read_recent(conn, ids, rows=rows)

            # rows scored before: only the windows and the alarm rules' state are kept
            for batch in self._slices(seen, recent):
                scored |= {sid: s.score for sid, s in self.fleet.update(batch).items()}
        for sid in seen:
            combined = scored.get(sid, np.empty(0))
            self.alarms.warm(sid, combined, firing=sid in firing)


def _records(
    series_id: int, rows: tuple[np.ndarray, np.ndarray], scores: Scores
) -> list[AnomalyRecord]:
    ts, values = rows
    found = []
    for i in np.flatnonzero(scores.anomaly).tolist():
        value, expected = float(values[i, 0]), float(scores.expected[i, 0])
        found.append(
            AnomalyRecord(
                series_id=series_id,
                ts=int(ts[i]),
                value=value,
                expected=expected if np.isfinite(expected) else None,
                score=float(scores.score[i]),
                detector_scores={name: float(v[i]) for name, v in scores.detectors.items()},
                direction="up" if not np.isfinite(expected) or value >= expected else "down",
                severity="critical" if scores.score[i] >= CRITICAL_SCORE else "warning",
            )
        )
    return found
