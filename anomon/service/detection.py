"""The detection job: score what was collected since the last cycle, store anomalies.

Each series is scored as an entity of one metric in one :class:`~anomon.detect.fleet.Fleet`
(one pooled forest). The fleet's windows live in memory; after a restart they are
rebuilt from the last ``warmup_rows`` scored samples of each series, and scoring goes on
from each series' watermark, so nothing is lost or scored twice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from anomon import store
from anomon.alerts.routing import Silence, stored_silence
from anomon.config import AlertsConfig, DetectionConfig
from anomon.detect import DETECTOR_VERSION
from anomon.detect.entity import Scores
from anomon.detect.fleet import Fleet
from anomon.errors import AnomonError
from anomon.model import AnomalyRecord
from anomon.service.alerting import CRITICAL_SCORE, Alarms, plan_incidents
from anomon.service.telemetry import Telemetry
from anomon.timeutil import Clock, to_epoch, utcnow

log = logging.getLogger("anomon.detect")


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
    fleet: Fleet[int] = field(init=False)

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
            points, anomalies = self._cycle(started)
        except AnomonError as exc:
            log.error("detection cycle failed: %s", exc)
            self._forget()  # the windows took in rows the store did not keep
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("detection cycle failed unexpectedly")
            self._forget()
            return
        if self.telemetry is not None:
            self.telemetry.detection_seconds.observe((self.clock() - started).total_seconds())
        log.debug("detection: %d points scored, %d new anomalies", points, anomalies)

    def _cycle(self, started: datetime) -> tuple[int, int]:
        series = store.series_to_score(self.engine)
        self._warm_up([s for s in series if s.id not in self.fleet.entities])
        with self.engine.connect() as conn:
            unscored = store.read_unscored(conn, [s.id for s in series])
        batch = {sid: (p.ts, p.values[:, None]) for sid, p in unscored.items() if p.ts.size}
        results = self.fleet.update(batch)
        now = to_epoch(self.clock())
        stale_after = 10 * int(self.config.interval.total_seconds())
        quality = {
            sid: self.fleet.entities[sid].quality(now, stale_after=stale_after)[0]
            for sid in results
        }
        anomalies = [
            a for sid, scores in results.items() for a in _records(sid, batch[sid], scores)
        ]
        cycle = {sid: (batch[sid][0], scores.combined) for sid, scores in results.items()}
        if self.telemetry is not None:
            known = {s.id: s for s in series}
            self.telemetry.record_scores(
                (
                    sid,
                    known[sid].metric,
                    known[sid].entity,
                    known[sid].labels,
                    float(scores.score[-1]),
                )
                for sid, scores in results.items()
                if sid in known and scores.score.size and np.isfinite(scores.score[-1])
            )
        incidents, anomalies = plan_incidents(
            self.engine, self.alarms, cycle, anomalies, now=started, silences=self._silences()
        )
        lost: list[int] = []
        new = store.save_detection(
            self.engine,
            anomalies=anomalies,
            scored_until={sid: int(batch[sid][0][-1]) for sid in results},
            quality=quality,
            started_at=started,
            finished_at=self.clock(),
            points=sum(p[0].size for p in batch.values()),
            config_hash=self._hash,
            detector_version=DETECTOR_VERSION,
            incidents=incidents,
            lost=lost,
        )
        if lost:  # another writer changed these incidents first: start again from its truth
            log.info("detection: %d incident change(s) lost to another writer", len(lost))
            self._forget()
        return sum(p[0].size for p in batch.values()), new

    def _silences(self) -> list[Silence]:
        now = self.clock()
        return [stored_silence(*row) for row in store.stored_silences(self.engine, now=now)]

    def _warm_up(self, series: list[store.ScoredSeries]) -> None:
        """Add new series to the fleet; rebuild the windows and alarm state of those
        scored before (the store says which have a firing incident)."""
        for s in series:
            self.fleet.add(s.id, [s.metric])
        seen = [s.id for s in series if s.scored_until is not None]
        if not seen:
            return
        firing = store.firing_series(self.engine)
        history = {}
        if self.config.warmup_rows:
            with self.engine.connect() as conn:
                history = store.read_recent(conn, seen, rows=self.config.warmup_rows)
        batch = {sid: (p.ts, p.values[:, None]) for sid, p in history.items() if p.ts.size}
        # rows scored before: only the windows and the alarm rules' state are kept
        scored = self.fleet.update(batch) if batch else {}
        for sid in seen:
            combined = scored[sid].combined if sid in scored else np.empty(0)
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
