"""Soak benchmark: the real `anomon run` with many series for a long time; does it grow?

A local exporter on 127.0.0.1 serves ``--series`` gauges (new values every scrape); the
database is preloaded with ``--history`` rows of each; `anomon run` scrapes and detects
every ``--interval`` seconds for ``--minutes``. Every 5 s the daemon's RSS is sampled;
the slope is fitted (least squares) over the samples after the first ``--settle``
minutes, when the windows are full. Printed: RSS at start of the fit and at the end, the
slope, detection cycle times (median, max) and how many cycles ran against how many the
interval asked for — a daemon that falls behind must skip and count (the scheduler's
coalescing), not queue and grow. Last line: one JSON object with
``rss_slope_mb_per_min``, ``max_cycle_s``, ``cycles_run``, ``cycles_due``, ``peak_rss_mb``.

    python benchmarks/soak.py [--series 50000] [--interval 10] [--minutes 30] [--history 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon import exporter, preload  # the daemon benchmark's exporter and preload

from anomon import store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50_000)
    parser.add_argument("--interval", type=int, default=10, help="seconds")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--history", type=int, default=60, help="preloaded rows per series")
    parser.add_argument("--settle", type=float, default=3, help="minutes before the fit")
    args = parser.parse_args()
    with exporter(args.series) as port, tempfile.TemporaryDirectory() as tmp:
        soak(Path(tmp), port, args)


def soak(folder: Path, port: int, args: argparse.Namespace) -> None:
    url = f"sqlite:///{folder / 'soak.db'}"
    began = time.perf_counter()
    preload(url, args.series, args.history, args.interval)
    print(
        f"preloaded {args.series:,} series x {args.history} rows "
        f"in {time.perf_counter() - began:.0f} s"
    )
    config = folder / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n'
        f"[daemon]\nmetrics = false\n"
        f'[detection]\ninterval = "{args.interval}s"\nwarmup_rows = {args.history}\n'
        f'[retention]\ninterval = "5m"\nsamples = "1h"\n'
        f'[[sources]]\nname = "soak"\nkind = "prometheus_scrape"\n'
        f'url = "http://127.0.0.1:{port}/metrics"\ninterval = "{args.interval}s"\n'
        f'timeout = "{args.interval}s"\nmax_series = {args.series + 100}\n',
        encoding="utf-8",
    )
    log = (folder / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "anomon", "run", "--config", str(config)],
        stderr=log,
        env={**os.environ, "ANOMON_DATABASE_URL": ""},
    )
    process = psutil.Process(daemon.pid)
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    try:
        while time.monotonic() - start < args.minutes * 60 and daemon.poll() is None:
            samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
            time.sleep(5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        log.close()
    report(url, args, samples)
    tail = (folder / "daemon.log").read_text(errors="replace").splitlines()
    skipped = [line for line in tail if "skipped" in line or "maximum number" in line]
    print(f"daemon log: {len(tail)} lines, {len(skipped)} about skipped runs")
    for line in skipped[:3]:
        print("  " + line[:160])


def report(url: str, args: argparse.Namespace, samples: list[tuple[float, float]]) -> None:
    engine = store.open_engine(url)
    with engine.connect() as conn:
        runs = conn.exec_driver_sql(
            "SELECT started_at, finished_at FROM detection_runs WHERE points_scored > 0 ORDER BY id"
        ).all()
    engine.dispose()
    cycles = [
        (datetime.fromisoformat(str(b)) - datetime.fromisoformat(str(a))).total_seconds()
        for a, b in runs
    ]
    settled = [(t, rss) for t, rss in samples if t >= args.settle * 60]
    slope = 0.0
    if len(settled) >= 3:
        t, rss = np.array(settled).T
        slope = float(np.polyfit(t / 60, rss, 1)[0])
    due = int(args.minutes * 60 // args.interval)
    peak = max((rss for _, rss in samples), default=0.0)
    if settled:
        print(
            f"RSS {settled[0][1]:,.0f} MB at {settled[0][0] / 60:.1f} min -> "
            f"{settled[-1][1]:,.0f} MB at the end"
        )
    print(f"RSS slope {slope:+.2f} MB/min after {args.settle:g} min; peak {peak:,.0f} MB")
    if cycles:
        print(
            f"detection: {len(cycles)} cycles of {due} due; "
            f"median {statistics.median(cycles):.2f} s, "
            f"max {max(cycles):.2f} s (interval {args.interval} s)"
        )
    print(
        json.dumps(
            {
                "rss_slope_mb_per_min": round(slope, 2),
                "max_cycle_s": round(max(cycles, default=0.0), 2),
                "cycles_run": len(cycles),
                "cycles_due": due,
                "peak_rss_mb": round(peak),
            }
        )
    )


if __name__ == "__main__":
    main()
