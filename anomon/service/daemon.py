"""``anomon run``: the scheduler, its jobs, and a clean stop on SIGTERM / SIGINT.

The only module that imports APScheduler. Jobs are built from the config at start
(never pickled into a job store): one collection job per enabled source, the
detection job, the delivery job when receivers are configured, and the retention job.
It also serves anomon's own /metrics and /healthz (``[daemon] metrics_listen``) and,
on SQLite, holds the one-writer lock.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from anomon.alerts.model import Notifier
from anomon.alerts.notifiers import build_notifiers
from anomon.config import Config, SourceConfig
from anomon.errors import AnomonError, ConfigError
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.service.jobs import CollectJob
from anomon.service.retention import RetainJob
from anomon.service.telemetry import Telemetry
from anomon.sources import Source, SourceUnavailable, build_source
from anomon.store import (
    Engine,
    SeriesRegistry,
    check_writable,
    ensure_schema,
    open_database,
    open_engine,
    ping,
    redact,
    writer_lock,
)

log = logging.getLogger("anomon.daemon")

MAX_BACKOFF = timedelta(minutes=10)  # the longest gap between tries of a failing source


class _InFlight:
    """Count running jobs, so a stop can wait for them; refuse new ones once stopping."""

    def __init__(self) -> None:
        self._running = 0
        self._stopping = False
        self._idle = threading.Condition()

    def wrap(self, job: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            with self._track() as allowed:
                if allowed:
                    job()

        return guarded

    @contextmanager
    def _track(self) -> Iterator[bool]:
        with self._idle:
            if self._stopping:
                yield False
                return
            self._running += 1
        try:
            yield True
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def stop_and_wait(self, timeout: timedelta) -> bool:
        """Refuse new jobs; wait for running ones. Return False if they outlived ``timeout``."""
        with self._idle:
            self._stopping = True
            return self._idle.wait_for(lambda: self._running == 0, timeout.total_seconds())


def run(
    config: Config,
    *,
    migrate: bool = False,
    reload: Callable[[], Config] | None = None,
    reloaded: Callable[[Config], None] | None = None,
) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code.

    Creates the schema on an empty database; refuses a database behind the migrations
    unless ``migrate`` (or ``database.migrate_on_start``) is set. Raises StoreError or
    SchemaError before scheduling anything if the database is not usable. On SIGHUP,
    ``reload`` reads the config again: an invalid one is refused (its problems logged)
    and the running jobs go on untouched; a valid one replaces the jobs (the detection
    windows are rebuilt from the store) and is passed to ``reloaded`` (the command line
    re-applies the log settings there). ``database.url`` changes need a restart.
    """
    engine = open_engine(config.database.url, busy_timeout=config.database.busy_timeout)
    lock = writer_lock(engine)  # a second daemon on the same SQLite file stops here
    try:
        outcome = ensure_schema(engine, migrate=migrate or config.database.migrate_on_start)
        check_writable(engine)
        log.info("database %s: %s", redact(config.database.url), outcome)
        while True:
            fresh = _serve(config, engine, reload)
            if fresh is None:
                break
            if fresh.database != config.database:
                log.warning("config reloaded, but [database] changes need a restart: kept")
                fresh = fresh.model_copy(update={"database": config.database})
            config = fresh
            if reloaded is not None:
                reloaded(config)
            log.info("config reloaded: %d source(s)", len(config.sources))
    finally:
        if lock is not None:
            lock.release()
        engine.dispose()
    log.info("anomon stopped")
    return 0


def _serve(config: Config, engine: Engine, reload: Callable[[], Config] | None) -> Config | None:
    """Run the jobs of ``config`` until a stop (return None) or a valid reload (return
    the new config)."""
    inflight = _InFlight()
    sources = build_sources(config)
    notifiers = build_notifiers(config.alerts) if config.alerts.enabled else {}
    telemetry = Telemetry(engine, max_series=config.daemon.metrics_max_series)
    scheduler = build_scheduler(config, engine, inflight, sources, notifiers, telemetry)
    try:
        if config.daemon.metrics:
            telemetry.serve(config.daemon.metrics_listen, lambda: _health(scheduler, engine))
        reloaded = _signals(scheduler, reload)
        log.info(
            "anomon running: %d job(s); stop with Ctrl-C or SIGTERM, reload with SIGHUP",
            len(scheduler.get_jobs()),
        )
        scheduler.start()  # blocks until a signal shuts the scheduler down
        if not inflight.stop_and_wait(config.daemon.shutdown_timeout):
            log.error(
                "jobs still running after %s; exiting without them",
                config.daemon.shutdown_timeout,
            )
            logging.shutdown()
            os._exit(1)  # the worker threads would otherwise keep the process alive
    finally:
        for _, source in sources:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # HTTP sources hold connections
        for notifier in notifiers.values():
            notifier.close()
        telemetry.close()
    return reloaded[0] if reloaded else None


def build_sources(config: Config) -> list[tuple[SourceConfig, Source]]:
    """Build every enabled source; skip, with one warning line, those that cannot run here
    (a ``gpu`` source without NVML)."""
    built = []
    for source_config in config.sources:
        if not source_config.enabled:
            continue
        try:
            built.append((source_config, build_source(source_config, open_database=open_database)))
        except SourceUnavailable as exc:
            log.warning("source %s: %s; skipped", source_config.name, exc)
    return built


def build_scheduler(
    config: Config,
    engine: Engine,
    inflight: _InFlight,
    sources: list[tuple[SourceConfig, Source]],
    notifiers: Mapping[str, Notifier] | None = None,
    telemetry: Telemetry | None = None,
) -> BlockingScheduler:
    """Return a scheduler with one collection job per built source (first run now), the
    detection job (first run one interval from now) and, with ``notifiers``, the
    delivery job draining the outbox."""
    scheduler = BlockingScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=max(3, min(8, len(sources) + 2)))},
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    registry = SeriesRegistry()
    now = datetime.now(UTC)
    detection = config.detection
    if detection.enabled:
        scheduler.add_job(
            inflight.wrap(DetectJob(engine, detection, alerts=config.alerts, telemetry=telemetry)),
            IntervalTrigger(seconds=detection.interval.total_seconds(), timezone=UTC),
            id="detect",
            name="detect",
            next_run_time=now + detection.interval,
            misfire_grace_time=max(1, int(detection.interval.total_seconds())),
        )
    if notifiers:
        every = config.alerts.delivery.interval
        scheduler.add_job(
            inflight.wrap(DeliverJob(engine, config.alerts, notifiers, telemetry=telemetry)),
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            id="deliver",
            name="deliver",
            next_run_time=now,
            misfire_grace_time=max(1, int(every.total_seconds())),
        )
    if config.retention.enabled:
        every = config.retention.interval
        scheduler.add_job(
            inflight.wrap(RetainJob(engine, config.retention)),
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            id="retain",
            name="retain",
            next_run_time=now + min(every, timedelta(minutes=1)),
            misfire_grace_time=max(1, int(every.total_seconds())),
        )
    for source_config, source in sources:
        interval = source_config.interval.total_seconds()
        job = CollectJob(
            source,
            engine,
            registry,
            max_series=source_config.max_series,
            telemetry=telemetry,
            max_skip=int(MAX_BACKOFF.total_seconds() // interval),
        )
        scheduler.add_job(
            inflight.wrap(job),
            IntervalTrigger(seconds=source_config.interval.total_seconds(), timezone=UTC),
            id=f"collect:{source_config.name}",
            name=f"collect {source_config.name}",
            next_run_time=now,
            misfire_grace_time=max(1, int(source_config.interval.total_seconds())),
        )
    return scheduler


def _health(scheduler: BlockingScheduler, engine: Engine) -> str | None:
    """None when the scheduler runs and the database answers, else the reason."""
    if not scheduler.running:
        return "scheduler not running"
    try:
        ping(engine)
    except AnomonError as exc:
        return str(exc)
    return None


def _signals(scheduler: BlockingScheduler, reload: Callable[[], Config] | None) -> list[Config]:
    """Stop on SIGTERM / SIGINT; on SIGHUP, stop for a reload if the new config is valid.

    Returns a list that holds the new config once a reload is accepted.
    """
    accepted: list[Config] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "%s received: finishing the running jobs, then stopping", signal.Signals(signum).name
        )
        accepted.clear()
        scheduler.shutdown(wait=False)

    def hang_up(_signum: int, _frame: FrameType | None) -> None:
        if reload is None:
            log.warning("SIGHUP received, but there is no config file to reload")
            return
        try:
            fresh = reload()
        except ConfigError as exc:
            log.error(
                "SIGHUP: config reload refused, the running config is kept: %s",
                "; ".join(exc.problems),
            )
            return
        log.info("SIGHUP received: the new config is valid; replacing the jobs")
        accepted[:] = [fresh]
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hang_up)
    return accepted
