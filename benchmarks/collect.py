"""Collection benchmark: a 10,000-series scrape, and quality from 1M logged predictions.

1. A local exporter on 127.0.0.1 serves 10,000 gauge series; the benchmark times the
   whole path of a collection -- fetch, parse, store (series already known, as in a
   steady daemon) -- and the first scrape too (which creates the 10,000 series).
2. The ``predictions`` source over a log of 1,000,000 labelled binary predictions with
   scores (a week of them, 4 models, hourly windows): one collection from nothing --
   read, compute every window's accuracy, precision, recall, F1, log loss, ROC AUC,
   estimates and drift, store -- from a SQLite table and from a JSONL file (a cold
   start: the table is read whole at every collection, the file only once).
3. The steady state of a tailed log: 1,000,000 predictions over the lookback (a week),
   20 model x version groups, hourly windows, 10 % of the labels arriving late (10 min
   to 6 h) in a labels file joined by id; a collection every minute (the minute's new
   predictions and late labels appended first), each stored; ``--minutes`` of them
   timed. The same traffic with a lookback ten times shorter (100,000 rows in it) shows
   that the cost follows what changed, not the lookback.
4. The same steady state in a SQLite table (late labels set by UPDATE, with a
   ``changed_at`` column): read by what changed (a query with ``:changed_since``) and,
   for comparison, read whole at every collection.

Prints readable figures, then one JSON line with ``scrape_10k_seconds``,
``predictions_rows_per_s`` (the steady state: rows of the log within the lookback per
second of a collection, median), ``predictions_steady_ms`` (that collection's median
time), ``predictions_cold_rows_per_s`` (the slower of the two cold starts),
``predictions_table_steady_ms`` and ``predictions_table_whole_ms`` (the table's steady
collection read by what changed, and read whole).

    python benchmarks/collect.py [--series 10000] [--predictions 1000000] [--minutes 20]
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
    parser.add_argument("--minutes", type=int, default=20)
    args = parser.parse_args()
    steady = scrape(args.series)
    rates = {kind: predictions(args.predictions, kind) for kind in ("sql", "jsonl")}
    per_minute = max(1, args.predictions // WEEK_MINUTES)  # the same traffic in both
    short = tailed_steady_state(args.predictions // 10, per_minute, args.minutes)
    took = tailed_steady_state(args.predictions, per_minute, args.minutes)
    print(
        f"steady collection: {took * 1000:.1f} ms with {args.predictions:,} rows in the "
        f"lookback, {short * 1000:.1f} ms with {args.predictions // 10:,}"
    )
    changed = table_steady_state(args.predictions, per_minute, args.minutes, changed=True)
    whole = table_steady_state(args.predictions, per_minute, min(args.minutes, 3), changed=False)
    print(
        f"steady collection from a SQLite table of {args.predictions:,} rows in the lookback: "
        f"{changed * 1000:.1f} ms read by what changed (:changed_since), "
        f"{whole * 1000:.1f} ms read whole"
    )
    print(
        json.dumps(
            {
                "scrape_10k_seconds": round(steady, 3),
                "predictions_rows_per_s": round(args.predictions / took),
                "predictions_steady_ms": round(took * 1000, 1),
                "predictions_cold_rows_per_s": round(min(rates.values())),
                "predictions_table_steady_ms": round(changed * 1000, 1),
                "predictions_table_whole_ms": round(whole * 1000, 1),
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
        engine = _bench_store(Path(tmp))
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
WEEK_MINUTES = WEEK // 60


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
        engine = _bench_store(Path(tmp))
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


GROUPS = 20  # model x version
LATE = 0.1  # the share of labels that arrive late, in the labels file


def tailed_steady_state(rows: int, per_minute: int, minutes: int) -> float:
    """A tailed JSONL log of ``per_minute`` predictions a minute with ``rows`` of them in
    its lookback, and a labels file; after a first collection, ``minutes`` collections a
    minute apart, each after that minute's new predictions and late labels; return their
    median time (s), collection and store."""
    lookback = rows // per_minute  # minutes
    total = rows + per_minute * minutes
    ts, truth, score, late, labelled_at, group = _traffic(total, per_minute, seed=1)
    names = [f'"model": "m{g // 2}", "version": "v{g % 2}"' for g in range(GROUPS)]
    lines = [
        f'{{"id": {i}, "ts": {ts[i]}, {names[group[i]]}, "prediction": {int(score[i] > 0.5)}, '
        f'"score": {score[i]}' + ("}" if late[i] else f', "label": {truth[i]}}}') + "\n"
        for i in range(total)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        log, labels = Path(tmp) / "p.jsonl", Path(tmp) / "labels.csv"
        labels.write_text("id,label\n")
        config = _steady_config(lookback, path=str(log), labels_path=str(labels))
        engine = _bench_store(Path(tmp))
        source, registry = PredictionsSource(config), store.SeriesRegistry()
        done = 0  # rows written to the log so far
        took = []
        for minute in range(minutes + 1):
            until = ts[rows - 1] + 1 + 60 * minute  # now: the rows before it are logged
            upto = int(np.searchsorted(ts, until))
            with log.open("a") as out:
                out.writelines(lines[done:upto])
            due = late & (labelled_at < until) & (labelled_at >= until - (60 if minute else until))
            with labels.open("a") as out:
                out.writelines(f"{i},{truth[i]}\n" for i in np.flatnonzero(due))
            done = upto
            seconds, samples = _collect_and_store(source, engine, registry, int(until))
            if minute:
                took.append(seconds)
            else:
                print(
                    f"tailed log of {rows:,} rows: first collection "
                    f"{seconds:.2f} s ({len(samples):,} samples)"
                )
        source.close()
        engine.dispose()
    return float(np.median(took))


def _traffic(total: int, per_minute: int, *, seed: int) -> tuple[np.ndarray, ...]:
    """``total`` predictions, ``per_minute`` a minute: times, truth, scores, which are
    labelled late, when each label is known, and each row's model x version group."""
    rng = np.random.default_rng(seed)
    start = 1_795_000_000 // 3600 * 3600
    ts = start + np.arange(total) * 60 // per_minute  # per_minute rows in each minute
    truth = rng.integers(0, 2, total)
    score = np.clip(0.5 * truth + 0.6 * rng.random(total), 0.001, 0.999).round(4)
    late = rng.random(total) < LATE
    labelled_at = ts + np.where(late, rng.integers(600, 6 * 3600, total), 0)
    return ts, truth, score, late, labelled_at, rng.integers(0, GROUPS, total)


def _steady_config(lookback_minutes: int, **reading: str) -> PredictionsSourceConfig:
    """The steady states' source: ``reading`` (a file or a table), rows joined by ``id``,
    scores, ``lookback_minutes`` of lookback, labels settled after 6 h."""
    return PredictionsSourceConfig.model_validate(
        {
            "name": "quality",
            "kind": "predictions",
            **reading,
            "id": "id",
            "score": "score",
            "lookback": f"{lookback_minutes}m",
            "label_delay": "6h",
            "min_labels": 50,
        }
    )


def _bench_store(folder: Path) -> store.Engine:
    """A fresh SQLite store in ``folder`` for the samples a benchmark collects."""
    engine = store.open_engine(f"sqlite:///{folder / 'bench.db'}")
    store.ensure_schema(engine, migrate=False)
    return engine


def _collect_and_store(
    source: PredictionsSource, engine: store.Engine, registry: store.SeriesRegistry, at: int
) -> tuple[float, list[object]]:
    """One collection at ``at`` (epoch seconds) and its store: seconds taken, samples."""
    now = datetime.fromtimestamp(at, UTC)
    began = time.perf_counter()
    samples = source.collect(now)
    store.save_collection(
        engine, registry, source="quality", started_at=now, finished_at=now,
        samples=samples, replace=True,
    )  # fmt: skip
    source.saved()
    return time.perf_counter() - began, list(samples)


def table_steady_state(rows: int, per_minute: int, minutes: int, *, changed: bool) -> float:
    """The same traffic as :func:`tailed_steady_state` in a SQLite table: each minute's
    predictions inserted, late labels set by UPDATE (with ``changed_at``); a collection
    a minute, read by what changed (a query with ``:changed_since``) or whole; return
    the median time (s) of ``minutes`` collections, collection and store."""
    import sqlite3

    total = rows + per_minute * minutes
    ts, truth, score, late, labelled_at, group = _traffic(total, per_minute, seed=2)
    model = np.array([f"m{g // 2}" for g in range(GROUPS)])[group]
    version = np.array([f"v{g % 2}" for g in range(GROUPS)])[group]
    columns = "id, ts, model, version, prediction, score, label"
    where = "ts >= :since" + (" AND changed_at >= :changed_since" if changed else "")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TABLE p (id INTEGER PRIMARY KEY, ts INTEGER, model TEXT, version TEXT, "
            "prediction INTEGER, score REAL, label INTEGER, changed_at INTEGER)"
        )
        db.execute("CREATE INDEX p_ts ON p (ts)")
        db.execute("CREATE INDEX p_changed ON p (changed_at)")

        def insert(lo: int, hi: int) -> None:
            db.executemany(
                "INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (i, int(ts[i]), model[i], version[i], int(score[i] > 0.5), float(score[i]),
                     None if late[i] else int(truth[i]), int(ts[i]))
                    for i in range(lo, hi)
                ),
            )  # fmt: skip

        config = _steady_config(
            rows // per_minute,
            url=f"sqlite:///{path}",
            query=f"SELECT {columns} FROM p WHERE {where}",
        )
        engine = _bench_store(Path(tmp))
        source = PredictionsSource(config, open_database=store.open_database)
        registry, done, took = store.SeriesRegistry(), 0, []
        for minute in range(minutes + 1):
            until = ts[rows - 1] + 1 + 60 * minute
            upto = int(np.searchsorted(ts, until))
            insert(done, upto)
            due = late & (labelled_at < until) & (labelled_at >= until - (60 if minute else until))
            db.executemany(
                "UPDATE p SET label = ?, changed_at = ? WHERE id = ?",
                ((int(truth[i]), int(labelled_at[i]), int(i)) for i in np.flatnonzero(due)),
            )
            db.commit()
            done = upto
            seconds, _ = _collect_and_store(source, engine, registry, int(until))
            if minute:
                took.append(seconds)
        source.close()
        engine.dispose()
        db.close()
    return float(np.median(took))


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
