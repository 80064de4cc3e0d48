"""The prometheus_query source against a real Prometheus server on 127.0.0.1.

The server (Debian's `prometheus`, installed by scripts/test) scrapes a local exporter
every second; the tests ask it PromQL through anomon's source.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from anomon import service, store
from anomon.config import (
    PrometheusQuerySourceConfig,
    PrometheusScrapeSourceConfig,
    parse_config,
)
from anomon.errors import SourceError
from anomon.sources import PartialCollection, PrometheusQuerySource, PrometheusScrapeSource
from tests.loopback import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("ANOMON_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is required here but not installed")
        pytest.skip("no prometheus binary (scripts/test installs Debian's)")
    registry = CollectorRegistry()
    accuracy = Gauge("model_accuracy", "accuracy", ["model"], registry=registry)
    accuracy.labels("churn").set(0.93)
    accuracy.labels("fraud").set(0.88)

    with serve(lambda _path: (200, generate_latest(registry))) as exporter:
        yield from _run_prometheus(binary, exporter, tmp_path_factory)


def _run_prometheus(
    binary: str, exporter: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Start Prometheus scraping ``exporter`` every second; yield its URL once it has data."""
    folder: Path = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: model\n"
        f"    static_configs:\n      - targets: ['{exporter.removeprefix('http://')}']\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(
                    f"{url}/api/v1/query", params={"query": "count(model_accuracy)"}, timeout=2
                )
                if reply.status_code == 200 and reply.json()["data"]["result"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("prometheus did not scrape the exporter within 60 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


OPEN: list[PrometheusQuerySource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    """Close every source a test made (their HTTP connections)."""
    yield
    while OPEN:
        OPEN.pop().close()


def source(url: str, queries: dict[str, str]) -> PrometheusQuerySource:
    config = PrometheusQuerySourceConfig.model_validate(
        {
            "name": "prom",
            "kind": "prometheus_query",
            "url": url,
            "queries": queries,
            "labels": {"team": "ml"},
        }
    )
    made = PrometheusQuerySource(config)
    OPEN.append(made)
    return made


def test_every_element_of_the_vector_becomes_a_labelled_series(prometheus: str) -> None:
    now = datetime.now(UTC)
    samples = source(prometheus, {"accuracy": "model_accuracy"}).collect(now)
    got = {s.key.labels: s.value for s in samples}
    assert {s.key.metric for s in samples} == {"accuracy"}
    assert sorted(got.values()) == [0.88, 0.93]
    assert all('"job":"model"' in labels and '"team":"ml"' in labels for labels in got)
    assert all(abs(s.ts - now.timestamp()) <= 2 for s in samples)


def test_a_scalar_is_one_series(prometheus: str) -> None:
    samples = source(prometheus, {"mean_accuracy": "avg(model_accuracy)"}).collect(
        datetime.now(UTC)
    )
    assert [(s.key.metric, round(s.value, 3)) for s in samples] == [("mean_accuracy", 0.905)]


def test_a_bad_query_is_named_and_the_others_are_kept(prometheus: str) -> None:
    queries = {"accuracy": "model_accuracy", "broken": "sum(model_accuracy"}
    with pytest.raises(PartialCollection, match=r"broken: .*HTTP 400") as caught:
        source(prometheus, queries).collect(datetime.now(UTC))
    assert len(caught.value.samples) == 2


# every element NaN (0 / 0), or one of two: churn's 0.93 is kept, fraud's 0 / 0 is NaN
ALL_NAN = "(model_accuracy - model_accuracy) / (model_accuracy - model_accuracy)"
ONE_NAN = f"model_accuracy > 0.9 or {ALL_NAN}"


def test_a_nan_element_is_no_value_for_that_series_only(prometheus: str) -> None:
    """Like histogram_quantile for a handler without traffic: the NaN element is skipped,
    the others are stored, and the collection is a success (no PartialCollection)."""
    queries = {"accuracy": ONE_NAN, "nothing": ALL_NAN, "mean": "avg(model_accuracy)"}
    samples = source(prometheus, queries).collect(datetime.now(UTC))
    got = {(s.key.metric, s.key.labels): round(s.value, 3) for s in samples}
    assert sorted(got.values()) == [0.905, 0.93]
    (accuracy,) = [labels for metric, labels in got if metric == "accuracy"]
    assert '"model":"churn"' in accuracy


def test_prometheus_own_metrics_scrape_cleanly(prometheus: str) -> None:
    """The issue's case: Prometheus' own /metrics has summaries whose quantiles are NaN
    while they are empty; a scrape of it is a success and stores no NaN."""
    page = httpx.get(f"{prometheus}/metrics", timeout=5).text
    assert any(line.endswith(" NaN") for line in page.splitlines())  # the case at hand
    config = PrometheusScrapeSourceConfig.model_validate(
        {"name": "self", "kind": "prometheus_scrape", "url": f"{prometheus}/metrics"}
    )
    scrape = PrometheusScrapeSource(config)
    try:
        samples = scrape.collect(datetime.now(UTC))  # no PartialCollection
    finally:
        scrape.close()
    assert len(samples) > 50 and all(math.isfinite(s.value) for s in samples)


def test_an_unreachable_server_is_one_line() -> None:
    with pytest.raises(SourceError, match="connection refused"):
        source(f"http://127.0.0.1:{free_port()}", {"a": "up"}).collect(datetime.now(UTC))


def test_backfill_pulls_history_in_chunks_and_stores_it_once(
    prometheus: str, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'anomon.db'}"},
            "sources": [
                {
                    "name": "prom",
                    "kind": "prometheus_query",
                    "url": prometheus,
                    "interval": "1s",
                    # fraud's element of "mixed" is NaN at every step: no value, no failure
                    "queries": {"accuracy": "model_accuracy", "mixed": ONE_NAN},
                }
            ],
        }
    )
    engine = store.open_engine(config.database.url)
    store.upgrade(engine)
    deadline = time.monotonic() + 45  # wait (bounded) for 20 s of scraped history
    while time.monotonic() < deadline:
        reply = httpx.get(
            f"{prometheus}/api/v1/query",
            params={"query": "min(count_over_time(model_accuracy[1m]))"},
            timeout=5,
        ).json()["data"]["result"]
        if reply and float(reply[0]["value"][1]) >= 20:
            break
        time.sleep(0.5)
    seen: list[tuple[int, int, int]] = []
    # a range that ended a few seconds ago: its newest samples are surely queryable, and
    # the same clock for both runs asks for the same instants
    now = datetime.now(UTC) - timedelta(seconds=5)
    PrometheusQuerySource.max_points_per_query = 4  # force several query_range chunks
    try:
        first = service.backfill(
            config,
            engine,
            "prom",
            since=timedelta(seconds=12),
            progress=lambda *step: seen.append(step),
            clock=lambda: now,
        )
        again = service.backfill(
            config, engine, "prom", since=timedelta(seconds=12), clock=lambda: now
        )
    finally:
        PrometheusQuerySource.max_points_per_query = 10_000
    assert first.chunks in (3, 4)  # 12 s in 4-step chunks, from a whole second
    assert [step[:2] for step in seen] == [(n, first.chunks) for n in range(1, first.chunks + 1)]
    assert first.failures == []
    assert first.series_created == 3  # accuracy of churn and fraud, mixed of churn only
    # Prometheus answers each step with the latest scrape (lookback): one point per step
    # and series once it has history
    assert 3 * 11 <= first.points <= 3 * 13  # 12 s from a whole second: 12 or 13 steps
    assert again.points == 0  # idempotent: nothing new the second time
    with engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT count(*) FROM collection_runs").scalar()
    assert runs == 2 * first.chunks  # one row per chunk, both times
    engine.dispose()
