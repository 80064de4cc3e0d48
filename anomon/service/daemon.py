"""``anomon run``: the scheduler, its jobs, and a clean stop on SIGTERM / SIGINT.

The only module that imports APScheduler. Jobs are built from the config at start
(never pickled into a job store): one collection job per enabled source, the
detection job, the delivery job when receivers are configured, and the retention job.
Collections run in their own thread pool (one thread per source, up to
``[daemon] collection_workers``), so slow sources never delay detection, delivery or
retention, which have a pool of their own. It also serves anomon's own /metrics and
/healthz (``[daemon] metrics_listen``) and, on SQLite, holds the one-writer lock.

Signal handlers only note the signal and wake the main thread (a byte down a pipe);
the main thread does the work, so no signal, however many and however close together,
can interrupt a stop or a reload half-way. See :class:`_Control`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import FrameType
from typing import Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from anomon import __version__
from anomon.alerts.model import Notifier
from anomon.alerts.notifiers import build_notifiers
from anomon.config import Config, SourceConfig, config_warnings
from anomon.errors import AnomonError, ConfigError
from anomon.service.absence import AbsenceJob, watched_sources
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.service.jobs import CollectJob
from anomon.service.membership import (
    LEASE_BEATS,
    Membership,
    entity_key_text,
    source_key,
)
from anomon.service.retention import RetainJob
from anomon.service.telemetry import Expect, Telemetry
from anomon.sources import Source, SourceUnavailable, build_source
from anomon.store import (
    Engine,
    SeriesRegistry,
    beat,
    check_writable,
    ensure_schema,
    list_workers,
    live_workers,
    make_partitions,
    mark_stopped,
    open_database,
    open_engine,
    redact,
    register_worker,
    release_claims,
    writer_lock,
)
from anomon.timeutil import to_epoch, utcnow

log = logging.getLogger("anomon.daemon")

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)
MAX_BACKOFF = timedelta(minutes=10)  # the longest gap between tries of a failing source
# A second SIGTERM / SIGINT this soon after the first is ignored (GNU timeout, a double
# Ctrl-C); one later than this exits at once, without waiting for the running jobs.
FORCE_AFTER = 2.0
# detection, delivery, retention, heartbeat, the absent-data watch: a thread each, never shared
CORE_JOBS = 5
ABSENCE_CHECK = timedelta(seconds=15)  # how often the absent-data watch looks
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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

    def refuse(self) -> None:
        """Refuse new jobs from now on."""
        with self._idle:
            self._stopping = True

    def wait_idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the running jobs to end; return whether none runs."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, seconds)

    @property
    def running(self) -> int:
        """How many jobs run now."""
        return self._running


class _Control:
    """SIGTERM / SIGINT / SIGHUP as requests the main thread acts on.

    A handler only appends the signal number to a list and writes a byte to a pipe (it
    can neither block nor raise); :meth:`poll`, on the main thread, wakes on the pipe and
    acts: the first stop signal starts the stop; a second within FORCE_AFTER seconds is
    logged and ignored, a later one exits at once (status 1); SIGHUPs are coalesced into
    one pending reload, taken with :meth:`take_reload`, and ignored once stopping.
    """

    def __init__(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        self._received: list[int] = []  # appended by handlers, consumed by poll
        self._installed: list[int] = []
        self.stop_at: float | None = None  # monotonic time of the first stop signal
        self._reload = False

    def install(self) -> None:
        """Handle the signals from now on (the main thread only, as Python requires)."""
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, self._note)
            self._installed.append(signum)

    def retire(self) -> None:
        """Ignore the signals from now on and close the pipe: the daemon has stopped, and
        a late second signal (``timeout`` sends two) must not turn a clean exit into a
        kill or a KeyboardInterrupt."""
        for signum in self._installed:
            signal.signal(signum, signal.SIG_IGN)
        self._installed.clear()
        for fd in (self._wake_read, self._wake_write):
            with suppress(OSError):
                os.close(fd)

    @property
    def stopping(self) -> bool:
        """Whether a stop signal came."""
        return self.stop_at is not None

    def take_reload(self) -> bool:
        """Whether a SIGHUP came since the last call (any number of them count once)."""
        pending, self._reload = self._reload, False
        return pending and not self.stopping

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signum)
        with suppress(OSError):  # the pipe is full: the loop is awake anyway
            os.write(self._wake_write, b"\0")

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (None: until one comes) and act on the signals
        received."""
        with suppress(InterruptedError, OSError):
            select.select([self._wake_read], [], [], timeout)
            os.read(self._wake_read, 4096)
        received = self._received[:]
        del self._received[: len(received)]  # a handler may append meanwhile: keep those
        for signum in received:
            self._act(signum)

    def _act(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if self.stopping:
                log.info("SIGHUP received while stopping: ignored")
            elif self._reload:
                log.info("SIGHUP received again: coalesced with the reload already due")
            self._reload = True
            return
        if self.stop_at is None:
            log.info("%s received: finishing the running jobs, then stopping", name)
            self.stop_at = time.monotonic()
            return
        waited = time.monotonic() - self.stop_at
        if waited < FORCE_AFTER:
            log.warning(
                "%s received again %.1f s into the stop: ignored (the stop goes on; one more "
                "%g s or more after the first exits at once)",
                name,
                waited,
                FORCE_AFTER,
            )
            return
        log.error("%s received again: exiting now, without waiting for the running jobs", name)
        logging.shutdown()
        os._exit(1)


def run(
    config: Config,
    *,
    migrate: bool = False,
    reload: Callable[[], Config] | None = None,
    reloaded: Callable[[Config], None] | None = None,
    console: Callable[[Config, Engine], Closable | None] | None = None,
) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code.

    ``console`` starts the web console of a config over the daemon's engine (the command
    line passes :func:`anomon.web.start_console`); it is closed at a stop and started
    again with each reloaded config.

    Creates the schema on an empty database; refuses a database behind the migrations
    unless ``migrate`` (or ``database.migrate_on_start``) is set. Raises StoreError or
    SchemaError before scheduling anything if the database is not usable. On SIGHUP,
    ``reload`` reads the config again: an invalid one is refused (its problems logged)
    and the running jobs go on untouched; a valid one replaces the jobs (the detection
    windows are rebuilt from the store) and is passed to ``reloaded`` (the command line
    re-applies the log settings there). ``database.url`` changes need a restart. Once
    it returns, SIGTERM, SIGINT and SIGHUP are ignored (the process is ending).
    """
    tune_allocator()
    engine = open_engine(
        config.database.url,
        busy_timeout=config.database.busy_timeout,
        statement_timeout=config.database.statement_timeout,
    )
    lock = writer_lock(engine)  # a second daemon on the same SQLite file stops here
    control = _Control()
    heartbeat: _Heartbeat | None = None
    # one Telemetry for the whole run: counters and health history survive reloads
    telemetry = Telemetry(engine, max_series=config.daemon.metrics_max_series)
    logging.getLogger("apscheduler.scheduler").addFilter(_SKIP_NOISE)
    try:
        control.install()
        outcome = ensure_schema(engine, migrate=migrate or config.database.migrate_on_start)
        check_writable(engine)
        log.info("database %s: %s", redact(config.database.url), outcome)
        _make_partitions(engine)
        if lock is not None:  # the only daemon: claims in the outbox are a dead run's
            released = release_claims(engine, now=utcnow())
            if released:
                log.info(
                    "%d notification(s) an earlier run was sending when it ended: due now",
                    released,
                )
        _warn_about(config)
        worker = register_worker(
            engine, host=socket.gethostname(), pid=os.getpid(), version=__version__, now=utcnow()
        )
        # on SQLite the writer lock makes this daemon the only one: it owns everything
        membership = Membership(None if lock is not None else worker)
        heartbeat = _Heartbeat(engine, worker, membership, config.daemon.heartbeat, telemetry)
        heartbeat.join()
        while not control.stopping:
            served = console(config, engine) if console is not None else None
            try:
                fresh = _serve(config, engine, telemetry, control, reload, heartbeat)
            finally:
                if served is not None:
                    served.close()
            if fresh is None or control.stopping:
                break
            if fresh.database != config.database:
                log.warning("config reloaded, but [database] changes need a restart: kept")
                fresh = fresh.model_copy(update={"database": config.database})
            config = fresh
            if reloaded is not None:
                reloaded(config)
            log.info("config reloaded: %d source(s)", len(config.sources))
            _warn_about(config)
    finally:
        control.retire()
        if heartbeat is not None:
            heartbeat.stop()  # status: "not running (stopped at …)"
        telemetry.close()
        if lock is not None:
            lock.release()
        engine.dispose()
    log.info("anomon stopped")
    return 0


class Closable(Protocol):
    """A server the daemon runs beside its jobs (the console)."""

    def close(self) -> None:
        """Stop it."""


def tune_allocator() -> bool:
    """On glibc, cap malloc at two arenas and keep the mmap threshold at 128 KiB; return
    whether it was applied.

    The jobs run in several threads, each of which would get its own malloc arena, and
    glibc raises its mmap threshold as large numpy arrays are freed, after which they
    come from the arenas: freed memory then stays behind as holes. With these two
    settings the 50,000-series soak ran with ~300 MB less RSS (1.1 GB, was 1.3 to 1.7 GB)
    and ~25 % shorter detection cycles. Called before any thread starts.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, 2) and libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False


class _Heartbeat:
    """Renew this daemon's row in the ``workers`` table (its lease) and read the live
    workers (:mod:`.membership`); mark it stopped at the end.

    A failed renewal is a warning, never an exception into the scheduler: a database that
    is down is the collection's and detection's problem to report, and ``status`` then
    says the daemon is not seen, which is the truth.
    """

    def __init__(
        self,
        engine: Engine,
        worker: int,
        membership: Membership,
        every: timedelta,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.membership = membership
        self.every = every
        self.telemetry = telemetry
        self.sources: list[str] = []  # the names of the sources, for this worker's share

    def join(self) -> None:
        """Mark this host's earlier workers that are gone as stopped (a restart after a
        crash need not wait for their leases), then read who is alive. Alone (SQLite's
        writer lock is this daemon's), every other one is gone, wherever it ran."""
        alone = self.membership.worker is None
        try:
            now = utcnow()
            others = [
                w
                for w in list_workers(self.engine, now=now, alive_for=self._lease())
                if w.alive and w.id != self.worker
            ]
            mine = [w for w in others if alone or w.host == socket.gethostname()]
            gone = [w.id for w in mine if alone or w.pid == os.getpid() or not _running(w.pid)]
            mark_stopped(self.engine, gone, now=now)
        except AnomonError as exc:
            log.warning("heartbeat: %s", exc)
        self._read_members()

    def __call__(self) -> None:
        try:
            beat(self.engine, self.worker, now=utcnow())
        except AnomonError as exc:
            log.warning("heartbeat: %s", exc)
            return
        self._read_members()

    def _lease(self) -> timedelta:
        return self.every * LEASE_BEATS

    def _read_members(self) -> None:
        if self.membership.worker is None:
            return
        try:
            alive = live_workers(self.engine, now=utcnow(), alive_for=self._lease())
        except AnomonError as exc:
            log.warning("heartbeat: %s", exc)
            return
        if self.membership.update(alive) and self.sources:
            self.describe()
        if self.telemetry is not None:
            keys = [source_key(name) for name in self.sources]
            self.telemetry.record_membership(
                len(self.membership.workers), self.membership.share(keys)
            )

    def describe(self) -> None:
        """Log who is alive and this worker's share (when it is not alone)."""
        workers = self.membership.workers
        if self.membership.worker is None or len(workers) <= 1:
            return
        keys = [source_key(name) for name in self.sources]
        log.info(
            "workers: %d alive (%s); this one, %d, collects %d of %d source(s)%s",
            len(workers),
            ", ".join(map(str, workers)),
            self.worker,
            sum(self.membership.owns(key) for key in keys),
            len(keys),
            " and leads" if self.membership.leads() else "",
        )

    def stop(self) -> None:
        try:
            beat(self.engine, self.worker, now=utcnow(), stopped=True)
        except AnomonError as exc:
            log.warning("heartbeat at stop: %s", exc)


def _make_partitions(engine: Engine) -> None:
    """Make the sample partitions of the coming days (PostgreSQL), as the leader's
    retention job does; a failure is a warning (the default partition takes the rows)."""
    try:
        made = make_partitions(engine, now=to_epoch(utcnow()))
    except AnomonError as exc:
        log.warning("sample partitions: %s", exc)
        return
    if made:
        log.info("sample partitions: %d day(s) made ahead", made)


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it runs
        return True
    return True


def _warn_about(config: Config) -> None:
    """Log what in the config is valid but surely not meant (as ``config check`` says)."""
    for warning in config_warnings(config):
        log.warning("config: %s", warning)


def _serve(
    config: Config,
    engine: Engine,
    telemetry: Telemetry,
    control: _Control,
    reload: Callable[[], Config] | None,
    heartbeat: _Heartbeat | None = None,
) -> Config | None:
    """Run the jobs of ``config`` until a stop (return None) or a valid reload (return
    the new config), then wait for the running jobs (at most ``shutdown_timeout``)."""
    inflight = _InFlight()
    sources = build_sources(config)
    notifiers = (
        build_notifiers(config.alerts, external_url=config.daemon.external_url)
        if config.alerts.enabled
        else {}
    )
    telemetry.max_series = config.daemon.metrics_max_series
    telemetry.expect(expected_ages(config, sources, bool(notifiers)))
    scheduler = build_scheduler(config, engine, inflight, sources, notifiers, telemetry, heartbeat)
    try:
        if config.daemon.metrics:
            telemetry.serve(config.daemon.metrics_listen)
        else:
            telemetry.close()
        log.info(
            "anomon running: %d job(s); stop with Ctrl-C or SIGTERM, reload with SIGHUP",
            len(scheduler.get_jobs()),
        )
        scheduler.start()
        fresh = _next_config(config, control, reload)
        scheduler.shutdown(wait=False)
        if not _drain(inflight, control, config.daemon.shutdown_timeout):
            log.error(
                "%d job(s) still running after %s; exiting without them",
                inflight.running,
                config.daemon.shutdown_timeout,
            )
            logging.shutdown()
            os._exit(1)  # the worker threads would otherwise keep the process alive
    finally:
        if scheduler.running:  # only when something above raised
            scheduler.shutdown(wait=False)
        for _, source in sources:
            source.close()  # HTTP and SQL sources hold connections, file sources files
        for notifier in notifiers.values():
            notifier.close()
    return fresh


def _next_config(
    config: Config, control: _Control, reload: Callable[[], Config] | None
) -> Config | None:
    """Wait for a stop (return None) or a SIGHUP bringing a valid config that differs
    from ``config`` (return it); a refused or unchanged one leaves the jobs running."""
    while True:
        control.poll(None)
        if control.stopping:
            return None
        if control.take_reload():
            fresh = _reread(reload)
            if fresh == config:
                log.info("SIGHUP received: the config is unchanged; the jobs go on")
            elif fresh is not None:
                log.info("SIGHUP received: the new config is valid; replacing the jobs")
                return fresh


def _reread(reload: Callable[[], Config] | None) -> Config | None:
    """Read the config again; None (the reason logged) when there is none or it is invalid."""
    if reload is None:
        log.warning("SIGHUP received, but there is no config file to reload")
        return None
    try:
        return reload()
    except ConfigError as exc:
        log.error(
            "SIGHUP: config reload refused, the running config is kept: %s",
            "; ".join(exc.problems),
        )
    except Exception:  # reading a file can fail in ways of its own; the daemon goes on
        log.exception("SIGHUP: config reload failed, the running config is kept")
    return None


def _drain(inflight: _InFlight, control: _Control, timeout: timedelta) -> bool:
    """Refuse new jobs and wait up to ``timeout`` for the running ones, acting on signals
    meanwhile. Return False if some outlived it."""
    inflight.refuse()
    deadline = time.monotonic() + timeout.total_seconds()
    while not inflight.wait_idle(min(0.1, max(0.0, deadline - time.monotonic()))):
        control.poll(0)
        if time.monotonic() >= deadline:
            return False
    return True


def expected_ages(
    config: Config, sources: list[tuple[SourceConfig, Source]], delivering: bool
) -> Expect:
    """How old each part's last success may be: ``health_intervals`` of its interval
    plus ``health_grace``; detection and delivery only where they run."""
    daemon = config.daemon

    def age(interval: timedelta) -> timedelta:
        return interval * daemon.health_intervals + daemon.health_grace

    return Expect(
        sources={source.name: age(source.interval) for source, _ in sources},
        detection=age(config.detection.interval) if config.detection.enabled else None,
        delivery=age(config.alerts.delivery.interval) if delivering else None,
    )


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
    heartbeat: _Heartbeat | None = None,
) -> BackgroundScheduler:
    """Return a scheduler with one collection job per built source (first run now), the
    detection job (first run one interval from now) and, with ``notifiers``, the
    delivery job draining the outbox.

    Collections run in the ``collect`` pool (a thread per source, at most
    ``collection_workers``); the other jobs in ``default``, a thread each. A job whose
    previous run still runs is skipped, logged and, for a source, counted
    (``anomon_collections_skipped_total``).
    """
    workers = max(1, min(len(sources), config.daemon.collection_workers))
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={
            "default": ThreadPoolExecutor(max_workers=CORE_JOBS),
            "collect": ThreadPoolExecutor(max_workers=workers),
        },
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    scheduler.add_listener(
        _Skips(telemetry), EVENT_JOB_MAX_INSTANCES | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
    )
    registry = SeriesRegistry()
    now = datetime.now(UTC)
    detection = config.detection
    membership = heartbeat.membership if heartbeat is not None else Membership(None)
    if heartbeat is not None:
        heartbeat.sources = [source.name for source, _ in sources]
        heartbeat.describe()
    if detection.enabled:
        scheduler.add_job(
            inflight.wrap(
                DetectJob(
                    engine,
                    detection,
                    alerts=config.alerts,
                    telemetry=telemetry,
                    samples=config.samples,
                    # by alarm unit (entity, model, version: one incident's scope), so
                    # the entities of one unit from several sources stay together
                    owns=lambda key: membership.owns(entity_key_text(key[1:])),
                )
            ),
            IntervalTrigger(seconds=detection.interval.total_seconds(), timezone=UTC),
            id="detect",
            name="detect",
            next_run_time=now + detection.interval,
            misfire_grace_time=max(1, int(detection.interval.total_seconds())),
        )
    if notifiers:
        every = config.alerts.delivery.interval
        scheduler.add_job(
            inflight.wrap(
                DeliverJob(
                    engine,
                    config.alerts,
                    notifiers,
                    telemetry=telemetry,
                    detection=config.detection,
                    external_url=config.daemon.external_url,
                    leads=membership.leads,
                )
            ),
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            id="deliver",
            name="deliver",
            next_run_time=now,
            misfire_grace_time=max(1, int(every.total_seconds())),
        )
    absent = config.detection.absent
    if absent.enabled:
        waits = [absent.source_down_after, absent.series_absent_after]
        every = min(ABSENCE_CHECK, *(wait for wait in waits if wait))
        scheduler.add_job(
            inflight.wrap(
                _Leading(
                    AbsenceJob(
                        engine,
                        absent,
                        config.alerts,
                        {source.name: source.interval for source, _ in sources},
                        watched=watched_sources([source for source, _ in sources]),
                        detection=config.detection,
                    ),
                    membership,
                )
            ),
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            id="absent",
            name="absent-data watch",
            next_run_time=now + every,
            misfire_grace_time=max(1, int(every.total_seconds())),
        )
    if heartbeat is not None:
        every = heartbeat.every
        scheduler.add_job(
            heartbeat,
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
            id="heartbeat",
            name="heartbeat",
            next_run_time=now + every,
            misfire_grace_time=max(1, int(every.total_seconds())),
        )
    if config.retention.enabled:
        every = config.retention.interval
        scheduler.add_job(
            inflight.wrap(_Leading(RetainJob(engine, config.retention), membership)),
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
            deadline=source_config.timeout,
            samples=config.samples,
            configured=frozenset(s.name for s in config.sources),
            owns=partial(membership.owns, source_key(source_config.name)),
        )
        scheduler.add_job(
            inflight.wrap(job),
            IntervalTrigger(seconds=source_config.interval.total_seconds(), timezone=UTC),
            id=f"collect:{source_config.name}",
            name=f"collect {source_config.name}",
            executor="collect",
            next_run_time=now,
            misfire_grace_time=max(1, int(source_config.interval.total_seconds())),
        )
    return scheduler


@dataclass
class _Leading:
    """Run ``job`` only on the worker that leads (it must run once among several)."""

    job: Callable[[], None]
    membership: Membership

    def __call__(self) -> None:
        if self.membership.leads():
            self.job()


class _Skips:
    """Say when a job's run is skipped because its previous run still goes on: a warning
    for the first of a streak (the rest at debug level: a hung source would log every
    interval), and a count per source and of detection cycles (a daemon that falls
    behind sheds cycles, counted, instead of queueing them). A listener must never raise
    into the scheduler."""

    def __init__(self, telemetry: Telemetry | None) -> None:
        self._telemetry = telemetry
        self._streaks: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        try:
            self._on(event)
        except Exception:
            log.exception("job %s: handling a scheduler event failed", event.job_id)

    def _on(self, event: JobEvent) -> None:
        with self._lock:
            if event.code != EVENT_JOB_MAX_INSTANCES:
                self._streaks.pop(event.job_id, None)  # it ran: a later skip is news again
                return
            streak = self._streaks[event.job_id] = self._streaks.get(event.job_id, 0) + 1
        kind, _, source = event.job_id.partition(":")
        if kind == "collect" and self._telemetry is not None:
            self._telemetry.record_skip(source)
        if kind == "detect" and self._telemetry is not None:
            self._telemetry.detection_skipped.inc()
        what = {
            "collect": f"source {source}: the previous collection is still running",
            # shed, not queued: the next cycle scores every row this one would have
            "detect": "detection is falling behind: the previous cycle is still running",
        }.get(kind, f"job {event.job_id}: the previous run is still running")
        log.log(
            logging.WARNING if streak == 1 else logging.DEBUG,
            "%s; this run is skipped (%d in a row)",
            what,
            streak,
        )


class _SkipNoise(logging.Filter):
    """Drop APScheduler's own line for a skipped run: :class:`_Skips` says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIP_NOISE = _SkipNoise()
