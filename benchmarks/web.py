"""Console benchmark (issue 16): its pages over a full SQLite database, through HTTP.

The database: 10,000 series (10 of them with 7 days of one-minute points, the rest with
90 points each: about 1,000,000 samples), 5,000 incidents and 100,000 anomalies linked
to them, written through the store as the daemon writes them. The console runs as the
daemon runs it (waitress, 4 threads) on 127.0.0.1, and each page is requested in turn
over HTTP: the incident list (filters rotating), an incident page (random incidents),
and a series chart over 7 days (the long series). Targets: the list and an incident page
< 300 ms, a 7-day chart < 500 ms (p95). Last line, one JSON object:
``incident_list_p95_ms``, ``incident_page_p95_ms``, ``series_chart_p95_ms`` (with p50s).

    python benchmarks/web.py [--requests 60] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from anomon import store
from anomon.config import Config
from anomon.model import AnomalyRecord, IncidentWrite, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.web import Console

SERIES = 10_000
LONG_SERIES = 10  # drawn over 7 days
LONG_POINTS = 7 * 24 * 60
SHORT_POINTS = 90
INCIDENTS = 5_000
ANOMALIES = 100_000
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def fill(engine: store.Engine) -> list[int]:
    """Write the series, samples, incidents and anomalies; return the long series' ids."""
    end = int(NOW.timestamp()) // 60 * 60
    rng = np.random.default_rng(0)
    registry = store.SeriesRegistry()
    keys = []
    for i in range(SERIES):
        host = f"host-{i // 10:04d}"
        keys.append((SeriesKey.of(f"metric_{i % 10}", {"host": host}), host))
    batch: list[Sample] = []
    for i, (key, host) in enumerate(keys):
        points = LONG_POINTS if i < LONG_SERIES else SHORT_POINTS
        info = SeriesInfo("node", host, SeriesKind.RESOURCE, "")
        values = 50 + rng.normal(0, 5, points)
        batch += [
            Sample(key, info, end - 60 * (points - j), float(v)) for j, v in enumerate(values)
        ]
        if len(batch) >= 200_000:
            _save(engine, registry, batch)
            batch = []
    _save(engine, registry, batch)
    ids = {s.metric + s.labels: s.id for s in store.series_to_score(engine)}
    series = [ids[key.metric + key.labels] for key, _ in keys]
    writes = [
        IncidentWrite(
            series_id=series[i * 2],
            entity=keys[i * 2][1],
            metric=keys[i * 2][0].metric,
            labels=json.dumps(
                {
                    "metric": keys[i * 2][0].metric,
                    "entity": keys[i * 2][1],
                    "host": keys[i * 2][1],
                    "severity": "warning",
                }
            ),
            status="resolved" if i % 5 else "firing",
            severity="warning",
            peak_score=90.0,
            opened_at=NOW - timedelta(minutes=INCIDENTS - i),
            last_seen_at=NOW - timedelta(minutes=INCIDENTS - i - 1),
            resolved_at=None if i % 5 == 0 else NOW - timedelta(minutes=INCIDENTS - i - 1),
        )
        for i in range(INCIDENTS)
    ]
    per = ANOMALIES // INCIDENTS
    anomalies = [
        AnomalyRecord(
            series_id=series[(i // per) * 2],
            ts=end - 60 * (i % per) - 60 * SHORT_POINTS * (i // per % 3),
            value=90.0,
            expected=50.0,
            score=85.0,
            detector_scores={"zscore": 85.0},
            direction="up",
            severity="warning",
            incident=i // per,
        )
        for i in range(ANOMALIES)
    ]
    store.save_detection(
        engine, anomalies=anomalies, scored_until={}, quality={}, started_at=NOW,
        finished_at=NOW, points=0, config_hash="bench", detector_version="bench",
        incidents=writes,
    )  # fmt: skip
    return series[:LONG_SERIES]


def _save(engine: store.Engine, registry: store.SeriesRegistry, samples: list[Sample]) -> None:
    store.save_collection(
        engine, registry, source="node", started_at=NOW, finished_at=NOW, samples=samples
    )


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    """Milliseconds per request, each answered 200."""
    found = []
    for path in paths:
        start = time.perf_counter()
        reply = client.get(path)
        found.append((time.perf_counter() - start) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"{path}: HTTP {reply.status_code}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="anomon-web-bench-"))
    url = f"sqlite:///{folder / 'web.db'}"
    engine = store.open_engine(url)
    store.upgrade(engine)
    started = time.perf_counter()
    long_series = fill(engine)
    print(f"filled {url} in {time.perf_counter() - started:.1f} s")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Config.model_validate({"web": {"listen": f"127.0.0.1:{port}"}})
    console = Console(config, engine, clock=lambda: NOW)
    pick = random.Random(0)
    lists = [
        "/incidents",
        "/incidents?status=firing",
        "/incidents?status=resolved&since=7d",
        f"/incidents?entity=host-{pick.randrange(1000):04d}",
        "/incidents?metric=metric_2",
    ]
    incidents = [f"/incidents/{pick.randrange(1, INCIDENTS + 1)}" for _ in range(args.requests)]
    charts = [
        f"/series/{long_series[i % LONG_SERIES]}/chart.svg?range=7d" for i in range(args.requests)
    ]
    results = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            timed(client, ["/", lists[0], incidents[0], charts[0]])  # warm: imports, caches
            for name, paths in (
                ("incident_list", [lists[i % len(lists)] for i in range(args.requests)]),
                ("incident_page", incidents),
                ("series_chart", charts),
            ):
                ms = timed(client, paths)
                p50, p95 = np.percentile(ms, [50, 95])
                print(f"{name}: p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(ms)} requests")
                results[f"{name}_p50_ms"] = round(float(p50), 1)
                results[f"{name}_p95_ms"] = round(float(p95), 1)
    finally:
        console.close()
        engine.dispose()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
