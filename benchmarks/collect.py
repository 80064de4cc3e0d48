"""Collection benchmark: one scrape of a 10,000-series exposition page into SQLite.

A local exporter on 127.0.0.1 serves 10,000 gauge series; the benchmark times the whole
path of a collection -- fetch, parse, store (series already known, as in a steady
daemon) -- and the first scrape too (which creates the 10,000 series). Prints readable
figures, then one JSON line with ``scrape_10k_seconds`` and ``predictions_rows_per_s``
(null: the predictions source does not exist yet).

    python benchmarks/collect.py [--series 10000]
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

from anomon import store
from anomon.config import PrometheusScrapeSourceConfig
from anomon.sources import PrometheusScrapeSource


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
    args = parser.parse_args()
    pages = [exposition(args.series, step) for step in range(2)]

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
    print(f"first scrape of {args.series:,} series (creates them): {first:.2f} s")
    print(
        f"steady scrape of {args.series:,} series: {steady:.2f} s "
        f"({args.series / steady:,.0f} rows/s; target < 1 s)"
    )
    print("predictions source: not implemented yet")
    print(json.dumps({"scrape_10k_seconds": round(steady, 3), "predictions_rows_per_s": None}))


if __name__ == "__main__":
    main()
