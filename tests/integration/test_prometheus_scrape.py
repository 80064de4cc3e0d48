"""The prometheus_scrape source against a real exporter: prometheus_client on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from anomon.config import PrometheusScrapeSourceConfig
from anomon.errors import SourceError
from anomon.sources import PartialCollection, PrometheusScrapeSource
from anomon.sources.prometheus_scrape import bucket_quantile

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Exporter(BaseHTTPRequestHandler):
    """Serves a live registry at /metrics, and fixed texts at other paths."""

    registry: ClassVar[CollectorRegistry]
    texts: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = generate_latest(self.registry) if self.path == "/metrics" else self.texts[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    Exporter.registry = registry
    Exporter.texts = {
        "/garbage": b"this is { not exposition\n",
        "/nan": b"# TYPE temp gauge\ntemp 21.5\nbroken NaN\n",
        "/inf": b"# TYPE temp gauge\ntemp 21.5\nbroken +Inf\n",
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", registry
    httpd.shutdown()
    httpd.server_close()


OPEN: list[PrometheusScrapeSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    """Close every source a test made (their HTTP connections)."""
    yield
    while OPEN:
        OPEN.pop().close()


def source(url: str, **options: object) -> PrometheusScrapeSource:
    config = PrometheusScrapeSourceConfig.model_validate(
        {
            "name": "model",
            "kind": "prometheus_scrape",
            "url": url,
            "labels": {"job": "serving"},
            "target_labels": False,  # the parsing tests read the exposed labels alone
            **options,
        }
    )
    made = PrometheusScrapeSource(config)
    OPEN.append(made)
    return made


def values(samples: list) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    return {(s.key.metric, s.key.labels): s.value for s in samples}


def test_gauges_as_they_are_and_counters_as_rates(exporter: tuple[str, CollectorRegistry]) -> None:
    url, registry = exporter
    queue = Gauge("queue_depth", "waiting requests", ["model"], registry=registry)
    served = Counter("requests", "served requests", ["code"], registry=registry)
    queue.labels("churn").set(7)
    served.labels("200").inc(100)
    scrape = source(f"{url}/metrics")
    first = values(scrape.collect(NOW))
    assert first[("queue_depth", '{"job":"serving","model":"churn"}')] == 7
    assert not [m for m, _ in first if m.startswith("requests")]  # no rate before two scrapes
    served.labels("200").inc(50)
    second = values(scrape.collect(NOW + timedelta(seconds=10)))
    assert second[("requests_per_second", '{"code":"200","job":"serving"}')] == 5.0


def test_two_exporters_of_one_metric_stay_two_series(
    exporter: tuple[str, CollectorRegistry],
) -> None:
    # issue 14, point 5: node_exporter's and Prometheus' own process_resident_memory_bytes
    # (no labels) landed in one series and one value was dropped without a word
    url, _ = exporter
    Exporter.texts["/node"] = b"process_resident_memory_bytes 100\n"
    Exporter.texts["/prom"] = b'process_resident_memory_bytes{job="inner"} 200\n'
    port = url.rsplit(":", 1)[1]
    node = source(f"{url}/node", name="node", labels={}, target_labels=True)
    prom = source(f"{url}/prom", name="prometheus", labels={}, target_labels=True)
    got = values(node.collect(NOW)) | values(prom.collect(NOW))
    assert got == {
        ("process_resident_memory_bytes", f'{{"instance":"127.0.0.1:{port}","job":"node"}}'): 100,
        (
            "process_resident_memory_bytes",
            f'{{"exported_job":"inner","instance":"127.0.0.1:{port}","job":"prometheus"}}',
        ): 200,
    }


def test_untyped_metrics_can_be_declared_counters(exporter: tuple[str, CollectorRegistry]) -> None:
    url, _ = exporter
    scrape = source(f"{url}/netstat", counters=["node_netstat_*"])
    Exporter.texts["/netstat"] = b"node_netstat_Tcp_InSegs 1000\nnode_sockets_used 7\n"
    scrape.collect(NOW)
    Exporter.texts["/netstat"] = b"node_netstat_Tcp_InSegs 1600\nnode_sockets_used 9\n"
    got = values(scrape.collect(NOW + timedelta(seconds=60)))
    assert got == {
        ("node_netstat_Tcp_InSegs_per_second", '{"job":"serving"}'): 10.0,
        ("node_sockets_used", '{"job":"serving"}'): 9.0,  # untyped and not declared: as is
    }


def test_a_counter_that_went_down_was_reset(exporter: tuple[str, CollectorRegistry]) -> None:
    url, _ = exporter
    scrape = source(f"{url}/reset")
    Exporter.texts["/reset"] = b"# TYPE jobs_total counter\njobs_total 500\n"
    scrape.collect(NOW)
    Exporter.texts["/reset"] = b"# TYPE jobs_total counter\njobs_total 30\n"
    after = values(scrape.collect(NOW + timedelta(seconds=15)))
    assert after[("jobs_per_second", '{"job":"serving"}')] == 2.0  # 30 new since the restart


@pytest.mark.parametrize("bad", ["NaN", "+Inf"])
def test_a_counter_scraped_as_no_number_once_is_no_reset(
    exporter: tuple[str, CollectorRegistry], bad: str
) -> None:
    """A total of NaN or +Inf is no value: no rate for it, and the next good total is no
    reset (its whole total as the increase: a false spike of 10^6 before)."""
    url, _ = exporter
    scrape = source(f"{url}/blip")
    totals = ["1000", "1005", bad, "1015", "1020"]
    got = []
    for step, total in enumerate(totals):
        Exporter.texts["/blip"] = f"# TYPE jobs_total counter\njobs_total {total}\n".encode()
        try:
            samples = scrape.collect(NOW + timedelta(seconds=10 * step))
        except PartialCollection as partial:  # +Inf is named; NaN is silent
            samples = partial.samples
        got.append(values(samples).get(("jobs_per_second", '{"job":"serving"}')))
    assert got == [None, 0.5, None, None, 0.5]


def test_histograms_become_quantiles_and_an_average_of_the_interval(
    exporter: tuple[str, CollectorRegistry],
) -> None:
    url, registry = exporter
    latency = Histogram(
        "latency_seconds", "latency", buckets=(0.1, 0.2, 0.4, 0.8), registry=registry
    )
    for _ in range(100):
        latency.observe(0.05)  # before the first scrape: not part of the interval
    scrape = source(f"{url}/metrics", quantiles=[0.5, 0.99])
    scrape.collect(NOW)
    for value in [0.15] * 50 + [0.3] * 49 + [0.7]:
        latency.observe(value)
    got = values(scrape.collect(NOW + timedelta(seconds=60)))
    labels = '{"job":"serving"}'
    assert 0.1 < got[("latency_seconds_p50", labels)] <= 0.2
    assert 0.2 < got[("latency_seconds_p99", labels)] <= 0.4
    expected = (50 * 0.15 + 49 * 0.3 + 0.7) / 100
    assert got[("latency_seconds_average", labels)] == pytest.approx(expected)


def test_it_keeps_only_the_metrics_and_labels_asked_for(
    exporter: tuple[str, CollectorRegistry],
) -> None:
    url, registry = exporter
    gpu = Gauge("gpu_utilization", "gpu", ["gpu"], registry=registry)
    Gauge("unrelated", "x", registry=registry).set(1)
    gpu.labels("0").set(80)
    gpu.labels("1").set(10)
    kept = values(
        source(f"{url}/metrics", metrics=["gpu_*"], match_labels={"gpu": "1"}).collect(NOW)
    )
    assert kept == {("gpu_utilization", '{"gpu":"1","job":"serving"}'): 10}


def test_bad_text_and_bad_values_are_named(exporter: tuple[str, CollectorRegistry]) -> None:
    url, _ = exporter
    with pytest.raises(SourceError, match="invalid exposition text"):
        source(f"{url}/garbage").collect(NOW)
    with pytest.raises(PartialCollection, match=r"broken.*not a finite number: inf") as caught:
        source(f"{url}/inf").collect(NOW)
    assert values(caught.value.samples) == {("temp", '{"job":"serving"}'): 21.5}


def test_a_nan_value_is_no_value_not_a_failure(exporter: tuple[str, CollectorRegistry]) -> None:
    """An empty summary's quantiles are NaN on every scrape of Prometheus' own /metrics:
    that series has no value now; the scrape is a success (no PartialCollection, so the
    source is not in error and the failure counter does not rise)."""
    url, _ = exporter
    assert values(source(f"{url}/nan").collect(NOW)) == {("temp", '{"job":"serving"}'): 21.5}


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 0), (2.0, 10), (float("inf"), 10)], 1.5),
        (0.9, [(1.0, 5), (2.0, 5), (float("inf"), 10)], 2.0),  # the rank lies in +Inf
        (0.25, [(1.0, 4), (float("inf"), 4)], 0.25),
        (0.5, [(1.0, 0), (float("inf"), 0)], None),
    ],
)
def test_bucket_quantiles_interpolate_like_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert bucket_quantile(q, buckets) == expected
