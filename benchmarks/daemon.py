"""Daemon benchmark: the real `anomon run` with 10,000 series, cycle after cycle.

A local exporter process on 127.0.0.1 serves 10,000 gauges (new values every scrape).
The database is preloaded with ``--history`` rows of each series (so detection scores
every series, as in a daemon that has run a while), then `anomon run` scrapes the page
and runs detection every ``--interval`` for ``--cycles`` cycles. Printed per cycle: the
collection's and the detection cycle's durations (from ``collection_runs`` and
``detection_runs``); for the whole run: the daemon's CPU share (CPU seconds / wall
seconds, of one core) and its peak RSS. Target: every cycle well inside its interval,
RSS < 1 GB. Last line: one JSON object with ``max_cycle_seconds``, ``cpu_share``,
``peak_rss_mb``.

    python benchmarks/daemon.py [--series 10000] [--interval 60] [--cycles 10] [--history 300]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

from anomon import store
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind

EXPORTER = """
import sys, random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERIES = int(sys.argv[1])

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        lines = ["# TYPE model_feature_value gauge"]
        lines += [
            f'model_feature_value{{model="m{i % 20}",feature="f{i}"}} {50 + random.gauss(0, 2):.3f}'
            for i in range(SERIES)
        ]
        body = ("\\n".join(lines) + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def preload(url: str, series: int, rows: int, interval: int) -> None:
    """Store ``rows`` past points of every series the exporter serves."""
    engine = store.open_engine(url)
    store.upgrade(engine)
    rng = np.random.default_rng(0)
    now = int(time.time()) - interval
    info = SeriesInfo("bench", "bench", SeriesKind.CUSTOM)
    registry = store.SeriesRegistry()
    for start in range(0, series, 1000):
        samples = [
            Sample(
                SeriesKey.of("model_feature_value", {"model": f"m{i % 20}", "feature": f"f{i}"}),
                info,
                now - interval * (rows - r),
                float(50 + rng.normal(0, 2)),
            )
            for i in range(start, min(series, start + 1000))
            for r in range(rows)
        ]
        at = datetime.now(UTC)
        store.save_collection(
            engine, registry, source="preload", started_at=at, finished_at=at, samples=samples
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60, help="seconds")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--history", type=int, default=300, help="preloaded rows per series")
    args = parser.parse_args()
    with exporter(args.series) as port, tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), port, args)


@contextmanager
def exporter(series: int) -> Iterator[int]:
    """Run the exporter of ``series`` gauges on 127.0.0.1; yield its port."""
    process = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(series)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(folder: Path, port: int, args: argparse.Namespace) -> None:
    url = f"sqlite:///{folder / 'bench.db'}"
    started = time.perf_counter()
    preload(url, args.series, args.history, args.interval)
    print(
        f"preloaded {args.series:,} series x {args.history} rows "
        f"in {time.perf_counter() - started:.1f} s"
    )
    config = folder / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n'
        f"[daemon]\nmetrics = false\n"
        f'[detection]\ninterval = "{args.interval}s"\nwarmup_rows = {args.history}\n'
        f'[[sources]]\nname = "bench"\nkind = "prometheus_scrape"\n'
        f'url = "http://127.0.0.1:{port}/metrics"\ninterval = "{args.interval}s"\n'
        f"max_series = {args.series + 100}\n",
        encoding="utf-8",
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "anomon", "run", "--config", str(config)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANOMON_DATABASE_URL": ""},
    )
    process = psutil.Process(daemon.pid)
    began, peak = time.monotonic(), 0
    deadline = began + args.interval * (args.cycles + 1.5)
    try:
        while time.monotonic() < deadline and daemon.poll() is None:
            peak = max(peak, process.memory_info().rss)
            if _cycles_done(url) >= args.cycles:
                break
            time.sleep(0.5)
        cpu = sum(process.cpu_times()[:2])
        wall = time.monotonic() - began
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    report(url, args, cpu / wall, peak)


def _cycles_done(url: str) -> int:
    engine = store.open_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM detection_runs WHERE points_scored > 0"
                ).scalar_one()
            )
    except Exception:  # the daemon may be creating the schema
        return 0
    finally:
        engine.dispose()


def report(url: str, args: argparse.Namespace, cpu_share: float, peak: int) -> None:
    engine = store.open_engine(url)
    with engine.connect() as conn:
        collections = conn.exec_driver_sql(
            "SELECT started_at, finished_at, points FROM collection_runs "
            "WHERE source = 'bench' AND points > 0 ORDER BY id"
        ).all()
        detections = conn.exec_driver_sql(
            "SELECT started_at, finished_at, points_scored FROM detection_runs "
            "WHERE points_scored > 0 ORDER BY id"
        ).all()
    engine.dispose()

    def seconds(row: tuple[object, ...]) -> float:
        start, end = (datetime.fromisoformat(str(v)) for v in row[:2])
        return (end - start).total_seconds()

    worst = 0.0
    for i, (collect, detect) in enumerate(zip(collections, detections, strict=False), 1):
        took = seconds(collect) + seconds(detect)
        worst = max(worst, seconds(collect), seconds(detect))
        print(
            f"cycle {i:2d}: collect {seconds(collect):5.2f} s ({collect[2]:,} points), "
            f"detect {seconds(detect):5.2f} s ({detect[2]:,} points); "
            f"{took / args.interval:.0%} of the {args.interval} s interval"
        )
    print(f"daemon CPU share {cpu_share:.2f} of one core; peak RSS {peak / 2**20:,.0f} MB")
    print(
        json.dumps(
            {
                "max_cycle_seconds": round(worst, 2),
                "cpu_share": round(cpu_share, 3),
                "peak_rss_mb": round(peak / 2**20),
            }
        )
    )


if __name__ == "__main__":
    main()
