"""The daemon's jobs. A job never lets an exception reach the scheduler: it logs one
line with context, records what it can, and returns."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anomon.config import SamplesConfig
from anomon.errors import AnomonError, SourceError
from anomon.model import Sample
from anomon.service.telemetry import Telemetry
from anomon.sources import PartialCollection, Source
from anomon.store import Engine, SeriesRegistry, save_collection
from anomon.timeutil import Clock, format_duration, utcnow

# a collection's samples, its error line (None: all went well), whether it failed
Outcome = tuple[list[Sample], str | None, bool]

log = logging.getLogger("anomon.collect")

# How long past its own deadline a source may take before the job gives up on it: the
# HTTP kinds stop themselves at the deadline, so this only catches what cannot.
DEADLINE_GRACE = timedelta(seconds=1)


@dataclass
class Backoff:
    """Skip runs of something that keeps failing: after the n-th failure in a row, the
    next 2^(n-1) - 1 runs are skipped (0, 1, 3, 7, ...), at most ``max_skip``; the first
    success ends it. So a dead endpoint is tried less and less often, never in a loop,
    and is back within ``max_skip`` runs of coming back."""

    max_skip: int
    failures: int = 0
    skip: int = 0

    def should_skip(self) -> bool:
        """Whether this run is skipped (and count it)."""
        if self.skip > 0:
            self.skip -= 1
            return True
        return False

    def record(self, failed: bool) -> None:
        """Note the outcome of a run that was not skipped."""
        self.failures = self.failures + 1 if failed else 0
        self.skip = min(self.max_skip, 2 ** max(0, self.failures - 1) - 1) if failed else 0


@dataclass
class CollectJob:
    """Collect one source and store what it returned, with its ``collection_runs`` row.

    A source whose collections fail completely (nothing collected) is backed off: see
    :class:`Backoff`; ``max_skip`` caps the gap (the daemon makes it about ten minutes).

    ``deadline`` (the source's ``timeout``) bounds a whole collection, whatever the
    kind: past it (and :data:`DEADLINE_GRACE`) the collection is recorded as timed out
    and abandoned; its thread is left to finish on its own, and until it has, later
    runs are recorded as skipped instead of calling the source again. ``samples``
    bounds sample times; ``configured`` names the sources in the config, so a series
    whose owner is no longer among them is adopted (a renamed source).
    """

    source: Source
    engine: Engine
    registry: SeriesRegistry
    clock: Clock = field(default=utcnow)
    max_series: int | None = None
    telemetry: Telemetry | None = None
    max_skip: int = 0
    deadline: timedelta | None = None
    samples: SamplesConfig | None = None
    configured: frozenset[str] | None = None
    # whether this worker collects the source now (several workers: see membership)
    owns: Callable[[], bool] | None = None
    backoff: Backoff = field(init=False)
    _straggler: threading.Thread | None = field(init=False, default=None)
    _straggler_since: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.backoff = Backoff(self.max_skip)

    def __call__(self) -> None:
        if self.owns is not None and not self.owns():  # another worker's
            if self.telemetry is not None:
                self.telemetry.record_elsewhere(self.source.name)
            return
        if self.backoff.should_skip():
            return
        started = self.clock()
        samples, error, failed = self._bounded(started)
        self.backoff.record(failed=failed)
        if self.backoff.skip:
            log.info(
                "source %s: %d failures in a row; skipping the next %d collection(s)",
                self.source.name,
                self.backoff.failures,
                self.backoff.skip,
            )
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
                replace=self.source.replaces_samples,
                window=self.samples.window(finished) if self.samples is not None else None,
                adoptable=self._adoptable if self.configured is not None else None,
            )
        except AnomonError as exc:
            log.error(
                "source %s: could not store %d samples: %s", self.source.name, len(samples), exc
            )
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("source %s: unexpected error while storing", self.source.name)
            return
        if not failed:  # it returned (not abandoned at its deadline), and it is stored
            self.source.saved()
        if self.telemetry is not None:
            self.telemetry.record_collection(self.source.name, result.points, bool(result.error))
        if result.error:
            log.warning(
                "source %s: %s (%d points stored)", self.source.name, result.error, result.points
            )
        else:
            log.debug("source %s: %d points stored", self.source.name, result.points)

    def _adoptable(self, owner: str) -> bool:
        return self.configured is not None and owner not in self.configured

    def _bounded(self, now: datetime) -> Outcome:
        """Run :meth:`_collect` within the deadline (see the class docstring)."""
        if self._straggler is not None:
            if self._straggler.is_alive():
                stuck = (self.clock() - (self._straggler_since or now)).total_seconds()
                ago = format_duration(timedelta(seconds=round(stuck)))
                return [], f"skipped: the collection started {ago} ago has not returned yet", True
            self._straggler = self._straggler_since = None
        if self.deadline is None:
            return self._collect(now)
        outcome: list[Outcome] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._collect(now)),
            name=f"collect {self.source.name}",
            daemon=True,  # an abandoned collection must not keep the process alive
        )
        worker.start()
        worker.join((self.deadline + DEADLINE_GRACE).total_seconds())
        if worker.is_alive() or not outcome:
            self._straggler, self._straggler_since = worker, now
            took = format_duration(self.deadline)
            return [], f"timed out after {took} (collection abandoned)", True
        return outcome[0]

    def _collect(self, now: datetime) -> Outcome:
        """Return the samples collected, the error line (None when all went well) and
        whether the collection failed (a partial one did not, even without samples: a
        source that returns only what changed may have nothing new)."""
        try:
            return self.source.collect(now), None, False
        except PartialCollection as exc:
            return exc.samples, str(exc), False
        except SourceError as exc:
            return [], str(exc), True
        except Exception as exc:
            log.debug("source %s: collection raised", self.source.name, exc_info=True)
            return [], f"unexpected {type(exc).__name__}: {exc}", True
