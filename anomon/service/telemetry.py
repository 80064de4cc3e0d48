"""anomon's own metrics and health: a private Prometheus registry served on 127.0.0.1.

``/metrics`` (Prometheus text) has what the jobs count as they go — samples ingested and
collection failures per source, detection cycle durations, delivery latency — and what
the store says at scrape time (series by data-quality state, open incidents,
notifications by status; refreshed in a background thread at most once per ``CACHE``,
so a scrape never waits on the database), plus ``anomon_anomaly_score``: the latest
score of at most ``metrics_max_series`` series, the highest first.

``/healthz`` reads memory only, never the database: the jobs record when their cycles
succeed, and a probe thread records whether the database answers. It answers 200 ``ok``
while some source has stored samples, and detection and delivery (where enabled) have
finished a cycle, within their expected ages (see :class:`Expect`) and the database
answers; else 503 with one line per stale part, saying since when. Nothing is
registered globally; nothing starts until :meth:`Telemetry.serve`.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from anomon import store
from anomon.errors import AnomonError
from anomon.model import prometheus_label_name
from anomon.timeutil import Clock, format_duration, utcnow

log = logging.getLogger("anomon.telemetry")

CACHE = 5.0  # seconds a store reading is reused for scrapes
FIRST_READ = 2.0  # seconds a scrape waits for the very first store reading, at most
PROBE_EVERY = 0.5  # seconds between two database probes
PROBE_STALL = 5.0  # seconds a probe may go unanswered before /healthz says so
LISTEN_BACKLOG = 128  # connections the kernel queues for the metrics server


@dataclass(frozen=True)
class Expect:
    """How old each part's last success may be before /healthz calls it stale.

    ``sources`` maps each running source to its age; collection is stale only when every
    source is (one dead source is that source's problem, shown in its runs and failure
    count, not the daemon's). ``detection`` / ``delivery`` are None where not running.
    """

    sources: Mapping[str, timedelta] = field(default_factory=dict)
    detection: timedelta | None = None
    delivery: timedelta | None = None


class Telemetry:
    """The daemon's metrics. Jobs call the ``record_*`` methods; the server reads."""

    def __init__(
        self, engine: store.Engine, *, max_series: int = 1000, clock: Clock = utcnow
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._engine = engine
        self.max_series = max_series
        self._scores: dict[int, tuple[str, str, str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._expect = Expect()
        self._ok: dict[str, datetime] = {}  # part ("source:NAME", "detection"): last success
        self._watched: dict[str, datetime] = {}  # part: when it was first expected
        self._probe = _Probe(engine, clock=clock)
        self.skipped = Counter(
            "anomon_collections_skipped",
            "Collections not started because the previous one of the source still ran",
            ["source"],
            registry=self.registry,
        )
        self.detection_skipped = Counter(
            "anomon_detection_cycles_skipped",
            "Detection cycles not started because the previous one still ran (falling behind)",
            registry=self.registry,
        )
        self.ingested = Counter(
            "anomon_samples_ingested", "Samples stored", ["source"], registry=self.registry
        )
        self.failures = Counter(
            "anomon_collection_failures",
            "Collections that failed or partly failed",
            ["source"],
            registry=self.registry,
        )
        self.detection_seconds = Histogram(
            "anomon_detection_cycle_seconds",
            "Duration of detection cycles",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.detection_quarantined = Counter(
            "anomon_detection_series_set_aside",
            "Series set aside because they made a detection cycle fail",
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "anomon_delivery_latency_seconds",
            "From a notification being queued to being sent",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600),
            registry=self.registry,
        )
        self.workers = Gauge(
            "anomon_workers",
            "Live anomon workers on this database (leases not run out)",
            registry=self.registry,
        )
        self.worker_share = Gauge(
            "anomon_worker_share",
            "The share of the sources this worker collects (1: alone)",
            registry=self.registry,
        )
        self.workers.set(1)
        self.worker_share.set(1)
        self.registry.register(_StoreCollector(engine))
        self.registry.register(_ScoreCollector(self))
        self._server: WSGIServer | None = None
        self._address: str | None = None

    def record_collection(self, source: str, points: int, failed: bool) -> None:
        """Count one stored collection of ``source``; one that stored points, or failed
        nothing, is a success for /healthz."""
        self.ingested.labels(source).inc(points)
        if failed:
            self.failures.labels(source).inc()
        if points or not failed:
            self._succeeded(f"source:{source}")

    def record_detection(self, seconds: float) -> None:
        """Note a detection cycle that finished and was stored, and its duration."""
        self.detection_seconds.observe(seconds)
        self._succeeded("detection")

    def record_delivery(self) -> None:
        """Note a delivery cycle that finished and recorded its outcomes (whatever they
        were: a receiver that is down is that receiver's problem)."""
        self._succeeded("delivery")

    def record_membership(self, workers: int, share: float) -> None:
        """Note how many workers are alive and the share of sources this one runs."""
        self.workers.set(workers)
        self.worker_share.set(share)

    def record_elsewhere(self, source: str) -> None:
        """A collection of ``source`` left to the worker that owns it: not stale here."""
        self._succeeded(f"source:{source}")

    def record_skip(self, source: str) -> None:
        """Count a collection of ``source`` not started: its previous one still ran."""
        self.skipped.labels(source).inc()

    def _succeeded(self, part: str) -> None:
        now = self._clock()
        with self._lock:
            self._ok[part] = now

    def expect(self, expect: Expect) -> None:
        """Judge health by ``expect`` from now on (at start and after a reload). A part
        not seen before is given its age from now, so a fresh start is not stale."""
        now = self._clock()
        parts = [f"source:{name}" for name in expect.sources]
        parts += [name for name in ("detection", "delivery") if getattr(expect, name)]
        with self._lock:
            self._expect = expect
            for part in parts:
                self._watched.setdefault(part, now)

    def health(self) -> str | None:
        """None when all is well, else one line per problem (memory only: never blocks)."""
        now = self._clock()
        with self._lock:
            expect, ok, watched = self._expect, dict(self._ok), dict(self._watched)
        problems = [self._probe.problem(now)]
        problems.append(_stale_collection(expect.sources, ok, watched, now))
        for part in ("detection", "delivery"):
            age = getattr(expect, part)
            if age is not None:
                problems.append(_stale(part, ok.get(part), watched.get(part, now), age, now))
        found = [problem for problem in problems if problem is not None]
        return "\n".join(found) if found else None

    def record_scores(self, latest: Iterable[tuple[int, str, str, str, float]]) -> None:
        """Keep the latest score per series: (id, metric, entity, labels JSON, score)."""
        with self._lock:
            for series_id, metric, entity, labels, score in latest:
                self._scores[series_id] = (metric, entity, labels, score)

    def top_scores(self) -> list[tuple[int, tuple[str, str, str, float]]]:
        """The ``max_series`` series with the highest latest scores, of those above 0
        (a score of 0, "nothing unusual", is most series most of the time: not worth a
        time series each)."""
        with self._lock:
            items = [item for item in self._scores.items() if item[1][3] > 0.0]
        return heapq.nlargest(self.max_series, items, key=lambda item: item[1][3])

    def serve(self, address: str) -> None:
        """Serve /metrics and /healthz on ``address`` (HOST:PORT) in a daemon thread, and
        start the database probe; already serving there: nothing changes (a reload).

        Raises AnomonError if the address cannot be bound.
        """
        if self._server is not None and self._address == address:
            return
        self.close()
        host, _, port = address.rpartition(":")
        app = _app(self.registry, self.health)
        try:
            self._server = make_server(
                host, int(port), app, server_class=_Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise AnomonError(f"cannot serve metrics on {address}: {exc.strerror}") from None
        self._address = address
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._probe.start()
        log.info("metrics on http://%s/metrics, health on /healthz", address)

    def close(self) -> None:
        """Stop serving and probing."""
        self._probe.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = self._address = None


def _stale(
    part: str, last: datetime | None, watched: datetime, age: timedelta, now: datetime
) -> str | None:
    """The line saying ``part`` is stale, or None if its last success is recent enough."""
    since = last or watched
    if now - since <= age:
        return None
    what = "no successful cycle" if part != "collection" else "no source stored samples"
    when = f"since {_iso(since)}" if last else f"since its start at {_iso(since)}"
    return (
        f"{part}: {what} {when} ({format_duration(now - since)} ago; "
        f"expected within {format_duration(age)})"
    )


def _stale_collection(
    sources: Mapping[str, timedelta],
    ok: Mapping[str, datetime],
    watched: Mapping[str, datetime],
    now: datetime,
) -> str | None:
    """Collection is stale when no source has stored within its own age."""
    if not sources:
        return None
    lines = []
    for name, age in sources.items():
        part = f"source:{name}"
        line = _stale("collection", ok.get(part), watched.get(part, now), age, now)
        if line is None:
            return None
        lines.append((ok.get(part) or watched.get(part, now), line))
    return max(lines)[1]  # the most recent of the stale ones says since when


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Probe:
    """A thread that asks the database a trivial query every PROBE_EVERY seconds and
    remembers the answer, so /healthz can say the database is down, or has stopped
    answering, without ever waiting on it."""

    def __init__(
        self, engine: store.Engine, *, every: float = PROBE_EVERY, clock: Clock = utcnow
    ) -> None:
        self._engine = engine
        self._every = every
        self._clock = clock
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._asking_since: float | None = None  # monotonic start of the probe in flight
        self._failing: tuple[datetime, str] | None = None  # since when, and why

    def start(self) -> None:
        """Start probing (once)."""
        if self._thread is None or not self._thread.is_alive():
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="anomon-probe", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop probing; a probe in flight is left to end on its own (it is a daemon)."""
        self._stopped.set()

    def problem(self, now: datetime) -> str | None:
        """The database's problem as last seen, or None."""
        asking, failing = self._asking_since, self._failing
        if asking is not None and time.monotonic() - asking > PROBE_STALL:
            waited = timedelta(seconds=round(time.monotonic() - asking))
            return f"database: no answer to a trivial query for {format_duration(waited)}"
        if failing is not None:
            return f"database: {failing[1]} (failing since {_iso(failing[0])})"
        return None

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._asking_since = time.monotonic()
            error = self._ask()
            self._asking_since = None
            if error is None:
                self._failing = None
            else:  # a failure goes on since its first probe, whatever the later ones say
                self._failing = (self._failing[0] if self._failing else self._clock(), error)
            self._stopped.wait(self._every)

    def _ask(self) -> str | None:
        try:
            store.ping(self._engine)
        except AnomonError as exc:
            return str(exc)
        except Exception as exc:  # the probe must go on whatever the driver raises
            return f"unexpected {type(exc).__name__} while checking the database"
        return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # 5 by default: a burst of checks timed out


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # one line per scrape is noise
        pass


def _app(registry: CollectorRegistry, healthy: Callable[[], str | None]) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(registry)]
        if path == "/healthz":
            problem = healthy()
            status = "200 OK" if problem is None else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [(problem or "ok").encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics or /healthz\n"]

    return app


class _StoreCollector(Collector):
    """Gauges read from the store, at most every CACHE seconds, in a background thread.

    A scrape never waits on the database (a stalled one would hang it): it gets the last
    reading and, when that is older than CACHE, starts one refresh (never two at once).
    Only while there is no reading (the first scrape, or after a failed read) does a
    scrape wait for the refresh, FIRST_READ seconds at most.
    """

    def __init__(self, engine: store.Engine) -> None:
        self._engine = engine
        self._read_at = -CACHE
        self._status: store.Status | None = None
        self._lock = threading.Lock()
        self._reading = False
        self._done = threading.Event()  # set when the latest refresh has ended

    def describe(self) -> Iterator[Metric]:
        """The families without values: registering the collector reads nothing."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._status_now())

    def _families(self, status: store.Status | None) -> Iterator[Metric]:
        series = GaugeMetricFamily("anomon_series", "Series by data quality", labels=["state"])
        incidents = GaugeMetricFamily("anomon_open_incidents", "Firing incidents")
        outbox = GaugeMetricFamily("anomon_notifications", "Notifications", labels=["status"])
        if status is not None:
            for state, count in sorted(status.series_by_quality.items()):
                series.add_metric([state], count)
            incidents.add_metric([], status.open_incidents)
            for name in ("pending", "sending", "sent", "dead", "silenced"):
                outbox.add_metric([name], status.outbox.get(name, 0))
        yield from (series, incidents, outbox)

    def _status_now(self) -> store.Status | None:
        with self._lock:
            due = not self._reading and time.monotonic() - self._read_at >= CACHE
            if due:
                self._reading, self._done = True, threading.Event()
            done, status = self._done, self._status
        if due:
            threading.Thread(target=self._refresh, name="anomon-gauges", daemon=True).start()
        if status is None:  # nothing to show yet: worth a short wait
            done.wait(FIRST_READ)
            with self._lock:
                status = self._status
        return status

    def _refresh(self) -> None:
        status: store.Status | None = None
        try:
            status = store.read_status(self._engine, dead_limit=0)
        except AnomonError as exc:
            log.warning("metrics: %s", exc)
        except Exception:  # the thread must end, and say why
            log.exception("metrics: reading the store failed unexpectedly")
        with self._lock:
            self._status, self._read_at, self._reading = status, time.monotonic(), False
            done = self._done
        done.set()


# anomon_anomaly_score's own labels; a series label with one of these names is exported
# as exported_<name> (Prometheus' own rule for a clash with a target label)
SCORE_LABELS = ("series_id", "metric", "entity")
MAX_SCORE_LABELS = 16  # a series' labels beyond these many are left out (the id names it)
MAX_LABEL_VALUE = 200  # characters: a longer value is cut, with "…"


def score_labels(series_id: int, metric: str, entity: str, labels: str) -> dict[str, str]:
    """The Prometheus labels of one series' ``anomon_anomaly_score`` sample: its id,
    metric and entity, then its own labels (``labels`` is their canonical JSON) as real
    labels — names made valid (other characters as ``_``), names that clash prefixed
    ``exported_``, at most :data:`MAX_SCORE_LABELS` of them, values cut at
    :data:`MAX_LABEL_VALUE` characters."""
    found = {"series_id": str(series_id), "metric": metric, "entity": entity}
    try:
        own = json.loads(labels) if labels else {}
    except ValueError:
        own = {}
    for key, value in sorted(own.items())[:MAX_SCORE_LABELS] if isinstance(own, dict) else ():
        name = prometheus_label_name(str(key))
        if name in found or name.startswith("__"):
            name = f"exported_{name.lstrip('_')}"
        text = str(value)
        found.setdefault(
            name, text if len(text) <= MAX_LABEL_VALUE else text[: MAX_LABEL_VALUE - 1] + "…"
        )
    return found


class _ScoreCollector(Collector):
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        family = Metric(
            "anomon_anomaly_score",
            "Latest anomaly score (0-100) of the most anomalous series (those above 0)",
            "gauge",
        )
        for series_id, (metric, entity, labels, score) in self._telemetry.top_scores():
            family.add_sample(
                "anomon_anomaly_score", score_labels(series_id, metric, entity, labels), score
            )
        yield family
