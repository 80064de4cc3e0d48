"""The daemon's jobs. A job never lets an exception reach the scheduler: it logs one
line with context, records what it can, and returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from anomon.errors import AnomonError, SourceError
from anomon.model import Sample
from anomon.service.telemetry import Telemetry
from anomon.sources import PartialCollection, Source
from anomon.store import Engine, SeriesRegistry, save_collection
from anomon.timeutil import Clock, utcnow

log = logging.getLogger("anomon.collect")


@dataclass
class CollectJob:
    """Collect one source and store what it returned, with its ``collection_runs`` row."""

    source: Source
    engine: Engine
    registry: SeriesRegistry
    clock: Clock = field(default=utcnow)
    max_series: int | None = None
    telemetry: Telemetry | None = None

    def __call__(self) -> None:
        started = self.clock()
        samples, error = self._collect(started)
        finished = self.clock()
        try:
            result = save_collection(
                self.engine,
                self.registry,
                source=self.source.name,
                started_at=started,
                finished_at=finished,
                samples=samples,
                error=error,
                max_series=self.max_series,
                replace=getattr(self.source, "replaces_samples", False),
            )
        except AnomonError as exc:
            log.error(
                "source %s: could not store %d samples: %s", self.source.name, len(samples), exc
            )
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("source %s: unexpected error while storing", self.source.name)
            return
        if self.telemetry is not None:
            self.telemetry.record_collection(self.source.name, result.points, bool(result.error))
        if result.error:
            log.warning(
                "source %s: %s (%d points stored)", self.source.name, result.error, result.points
            )
        else:
            log.debug("source %s: %d points stored", self.source.name, result.points)

    def _collect(self, now: datetime) -> tuple[list[Sample], str | None]:
        """Return the samples collected and the error line (None when all went well)."""
        try:
            return self.source.collect(now), None
        except PartialCollection as exc:
            return exc.samples, str(exc)
        except SourceError as exc:
            return [], str(exc)
        except Exception as exc:
            log.debug("source %s: collection raised", self.source.name, exc_info=True)
            return [], f"unexpected {type(exc).__name__}: {exc}"
