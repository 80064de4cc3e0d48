"""anomon's own metrics and health: a private Prometheus registry served on 127.0.0.1.

``/metrics`` (Prometheus text) has what the jobs count as they go — samples ingested and
collection failures per source, detection cycle durations, delivery latency — and what
the store says at scrape time (series by data-quality state, open incidents,
notifications by status; read at most once per ``CACHE`` so scrapes never load the
database), plus ``anomon_anomaly_score``: the latest score of at most
``metrics_max_series`` series, the highest first. ``/healthz`` answers 200 while the
scheduler runs and the database answers a query, else 503 with the reason. Nothing is
registered globally; nothing starts until :meth:`Telemetry.serve`.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from anomon import store
from anomon.errors import AnomonError

log = logging.getLogger("anomon.telemetry")

CACHE = 5.0  # seconds a store reading is reused for scrapes


class Telemetry:
    """The daemon's metrics. Jobs call the ``record_*`` methods; the server reads."""

    def __init__(self, engine: store.Engine, *, max_series: int = 1000) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._engine = engine
        self._max_series = max_series
        self._scores: dict[int, tuple[str, str, str, float]] = {}
        self._lock = threading.Lock()
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
        self.delivery_latency = Histogram(
            "anomon_delivery_latency_seconds",
            "From a notification being queued to being sent",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600),
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(engine))
        self.registry.register(_ScoreCollector(self))
        self._server: WSGIServer | None = None

    def record_collection(self, source: str, points: int, failed: bool) -> None:
        """Count one collection of ``source``."""
        self.ingested.labels(source).inc(points)
        if failed:
            self.failures.labels(source).inc()

    def record_scores(self, latest: Iterable[tuple[int, str, str, str, float]]) -> None:
        """Keep the latest score per series: (id, metric, entity, labels JSON, score)."""
        with self._lock:
            for series_id, metric, entity, labels, score in latest:
                self._scores[series_id] = (metric, entity, labels, score)

    def top_scores(self) -> list[tuple[int, tuple[str, str, str, float]]]:
        """The ``max_series`` series with the highest latest scores."""
        with self._lock:
            items = list(self._scores.items())
        return heapq.nlargest(self._max_series, items, key=lambda item: item[1][3])

    def serve(self, address: str, healthy: Callable[[], str | None]) -> None:
        """Serve /metrics and /healthz on ``address`` (HOST:PORT) in a daemon thread.

        ``healthy`` returns None when all is well, else the reason. Raises StoreError-like
        AnomonError if the address cannot be bound.
        """
        host, _, port = address.rpartition(":")
        app = _app(self.registry, healthy)
        try:
            self._server = make_server(
                host, int(port), app, server_class=_Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise AnomonError(f"cannot serve metrics on {address}: {exc.strerror}") from None
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        log.info("metrics on http://%s/metrics, health on /healthz", address)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


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
    """Gauges read from the store at scrape time (cached for CACHE seconds)."""

    def __init__(self, engine: store.Engine) -> None:
        self._engine = engine
        self._read_at = 0.0
        self._status: store.Status | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        status = self._status_now()
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
            if time.monotonic() - self._read_at >= CACHE:
                try:
                    self._status = store.read_status(self._engine, dead_limit=0)
                except AnomonError as exc:
                    log.warning("metrics: %s", exc)
                    self._status = None
                self._read_at = time.monotonic()
            return self._status


class _ScoreCollector(Collector):
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "anomon_anomaly_score",
            "Latest anomaly score (0-100) of the most anomalous series",
            labels=["series_id", "metric", "entity", "labels"],
        )
        for series_id, (metric, entity, labels, score) in self._telemetry.top_scores():
            family.add_metric([str(series_id), metric, entity, labels], score)
        yield family
