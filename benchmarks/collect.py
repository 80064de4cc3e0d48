"""Collection benchmark: a 10,000-series scrape, and quality from 1M logged predictions.

1. A local exporter on 127.0.0.1 serves 10,000 gauge series; the benchmark times the
   whole path of a collection -- fetch, parse, store (series already known, as in a
   steady daemon) -- and the first scrape too (which creates the 10,000 series).
2. The ``predictions`` source over a log of 1,000,000 labelled binary predictions with
   scores (a week of them, 4 models, hourly windows): one collection -- read, compute
   every window's accuracy, precision, recall, F1, log loss and ROC AUC, store -- from
   a SQLite table and from a JSONL file.

Prints readable figures, then one JSON line with ``scrape_10k_seconds`` and
``predictions_rows_per_s`` (the slower of the two inputs). For the file it also times
the next collection, which parses no new line but recomputes every window of the week
(the steady cost of a tailed log).

    python benchmarks/collect.py [--series 10000] [--predictions 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from anomon import store
from anomon.config import PredictionsSourceConfig, PrometheusScrapeSourceConfig
from anomon.sources import PredictionsSource, PrometheusScrapeSource


def exposition(series: int, step: int) -> bytes:
    lines = ["# HELP model_feature_value a feature statistic", "# TYPE model_feature_value gauge"]
    lines += [
        f'model_feature_value{{model="m{i % 20}",feature="f{i}"}} {(i * 7 + step) % 1000 / 10}'
        for i in range(series)
    ]
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    args = parser.parse_args()
    steady = scrape(args.series)
    rates = {kind: predictions(args.predictions, kind) for kind in ("sql", "jsonl")}
    print(
        json.dumps(
            {
                "scrape_10k_seconds": round(steady, 3),
                "predictions_rows_per_s": round(min(rates.values())),
            }
        )
    )


def scrape(series: int) -> float:
    """Time a first and a steady scrape of ``series`` gauges; return the steady one (s)."""
    pages = [exposition(series, step) for step in range(2)]

    class Exporter(BaseHTTPRequestHandler):
        served = 0

        def do_GET(self) -> None:
            body = pages[min(Exporter.served, 1)]
            Exporter.served += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = PrometheusScrapeSourceConfig.model_validate(
        {
            "name": "bench",
            "kind": "prometheus_scrape",
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/metrics",
        }
    )
    source, registry = PrometheusScrapeSource(config), store.SeriesRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        engine = store.open_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.ensure_schema(engine, migrate=False)
        took = []
        for cycle in range(2):
            now = datetime.now(UTC) + timedelta(seconds=15 * cycle)
            start = time.perf_counter()
            samples = source.collect(now)
            store.save_collection(
                engine, registry, source="bench", started_at=now, finished_at=now, samples=samples
            )
            took.append(time.perf_counter() - start)
        engine.dispose()
    httpd.shutdown()
    first, steady = took
    print(f"first scrape of {series:,} series (creates them): {first:.2f} s")
    print(
        f"steady scrape of {series:,} series: {steady:.2f} s "
        f"({series / steady:,.0f} rows/s; target < 1 s)"
    )
    return steady


WEEK = 7 * 24 * 3600


def prediction_log(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A week of labelled binary predictions with scores, from 4 models, oldest first."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, rows)
    score = np.clip(0.5 * truth + 0.6 * rng.random(rows), 0.001, 0.999).round(4)
    start = 1_795_000_000 // 3600 * 3600
    return {
        "ts": np.sort(start + rng.integers(0, WEEK, rows)),
        "model": rng.choice(np.array(["churn", "fraud", "ranker", "spam"]), rows),
        "version": np.full(rows, "v1"),
        "prediction": (score > 0.5).astype(np.int64),
        "label": truth,
        "score": score,
    }


def predictions(rows: int, kind: str) -> float:
    """Time one collection of the predictions source over ``rows`` logged predictions
    (from a SQLite table or a JSONL file) into SQLite; return rows per second."""
    log = prediction_log(rows)
    now = datetime.fromtimestamp(int(log["ts"][-1]) + 3600, UTC)
    with tempfile.TemporaryDirectory() as tmp:
        config: dict[str, object] = {
            "name": "quality",
            "kind": "predictions",
            "score": "score",
            "lookback": "8d",
        }
        if kind == "sql":
            config |= {"url": _sqlite_log(Path(tmp), log), "query": "SELECT * FROM p"}
        else:
            config["path"] = _jsonl_log(Path(tmp), log)
        source = PredictionsSource(
            PredictionsSourceConfig.model_validate(config),
            open_database=store.open_database,
            clock=lambda: now,
        )
        engine = store.open_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.ensure_schema(engine, migrate=False)
        start = time.perf_counter()
        samples = source.collect(now)
        computed = time.perf_counter() - start
        store.save_collection(
            engine,
            store.SeriesRegistry(),
            source="quality",
            started_at=now,
            finished_at=now,
            samples=samples,
            replace=True,
        )
        took = time.perf_counter() - start
        again = time.perf_counter()
        source.collect(now)
        again = time.perf_counter() - again
        source.close()
        engine.dispose()
    print(
        f"predictions from a {kind} log of {rows:,} rows: {took:.2f} s "
        f"(read + metrics {computed:.2f} s) -> {len(samples):,} samples, "
        f"{rows / took:,.0f} rows/s; the next collection {again:.2f} s"
    )
    return rows / took


def _sqlite_log(folder: Path, log: dict[str, np.ndarray]) -> str:
    import sqlite3

    path = folder / "log.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE p (ts INTEGER, model TEXT, version TEXT, prediction INTEGER, "
            "label INTEGER, score REAL)"
        )
        columns = [log[name].tolist() for name in log]
        conn.executemany("INSERT INTO p VALUES (?, ?, ?, ?, ?, ?)", zip(*columns, strict=True))
    return f"sqlite:///{path}"


def _jsonl_log(folder: Path, log: dict[str, np.ndarray]) -> str:
    import pandas as pd

    path = folder / "log.jsonl"
    pd.DataFrame(log).to_json(path, orient="records", lines=True)
    return str(path)


if __name__ == "__main__":
    main()
