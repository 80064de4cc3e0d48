"""Scale-out benchmark: detection cycles and ingest with one and with two workers.

On a PostgreSQL schema of its own ($ANOMON_TEST_DATABASE_URL, else 127.0.0.1:5432/test):
50,000 series in 5,000 entities (hosts of 10 metrics) with a history each; then, per
cycle, one new point per series is stored and every worker runs one detection cycle
at the same time on its share (entities split by rendezvous hashing, as
``anomon run`` workers split them). A worker is a process of its own with its own
``DetectJob``, warmed up (its first cycle: the rows before the watermark) before the
timed cycles. A cycle of N workers takes as long as its slowest worker.

Then the ingest rate with two processes writing their halves of each round's points
at once, and one retention pass deleting the older half of ``--retention-samples``
samples (row deletes in batches: samples are not partitioned by time yet, so there is
no partition to drop: ``retention_drop_s`` is null).

Prints readable figures, then one JSON line with ``cycle_1_worker_s``,
``cycle_2_workers_s``, ``scale_ratio`` (target ≤ 0.6), ``ingest_2_writers_rows_per_s``,
``retention_drop_s`` and ``retention_delete_s``.

    python benchmarks/scale.py [--entities 5000] [--metrics 10] [--history 120]
        [--cycles 5] [--retention-samples 10000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection

import numpy as np
import psycopg

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.service.membership import entity_key_text, owner

STEP = 60
START = 1_795_000_000 // 86_400 * 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=5000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--history", type=int, default=120)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--retention-samples", type=int, default=10_000_000)
    args = parser.parse_args()
    base = os.environ.get("ANOMON_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    with _Schema(base) as url:
        engine = store.open_engine(url)
        store.upgrade(engine)
        began = time.perf_counter()
        stored = _write(engine, args.entities, args.metrics, range(args.history))
        print(
            f"history: {args.entities:,} entities x {args.metrics} metrics x {args.history} "
            f"points = {stored:,} samples in {time.perf_counter() - began:.1f} s"
        )
        engine.dispose()
        step = [args.history]  # the next point's index
        one = _cycles(url, 1, args, step)
        two = _cycles(url, 2, args, step)
        print(f"detection cycle, 1 worker: {one:.2f} s; 2 workers: {two:.2f} s ({two / one:.2f} x)")
        ingest = _ingest(url, args, step)
        print(f"ingest, 2 writers at once: {ingest:,.0f} rows/s")
        delete = _retention(url, args.retention_samples)
        print(
            f"retention of {args.retention_samples // 2:,} of {args.retention_samples:,} "
            f"samples by row deletes: {delete:.1f} s"
        )
    print(
        json.dumps(
            {
                "cycle_1_worker_s": round(one, 3),
                "cycle_2_workers_s": round(two, 3),
                "scale_ratio": round(two / one, 3),
                "ingest_2_writers_rows_per_s": round(ingest),
                "retention_drop_s": None,
                "retention_delete_s": round(delete, 2),
            }
        )
    )


class _Schema:
    """A fresh PostgreSQL schema for the run, dropped after."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.name = f"anomon_scale_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        with psycopg.connect(_libpq(self.base), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(_libpq(self.base), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _samples(entities: range, metrics: int, points: range) -> list[Sample]:
    """Noisy levels per (entity, metric), one sample per point index."""
    found = []
    for e in entities:
        info = SeriesInfo("bench", f"host{e}", SeriesKind.RESOURCE)
        for m in range(metrics):
            key = SeriesKey.of(f"m{m}", {"host": f"host{e}"})
            rng = np.random.default_rng(e * 1000 + m)
            values = 50 + 10 * m + rng.normal(0, 1, max(points) + 1)
            found += [Sample(key, info, START + STEP * i, float(values[i])) for i in points]
    return found


def _write(engine: store.Engine, entities: int, metrics: int, points: range) -> int:
    """Store the points of every series, in collections of 500 entities."""
    registry, stored = store.SeriesRegistry(), 0
    now = datetime.now(UTC)
    for first in range(0, entities, 500):
        samples = _samples(range(first, min(first + 500, entities)), metrics, points)
        result = store.save_collection(
            engine, registry, source="bench", started_at=now, finished_at=now, samples=samples
        )
        stored += result.points
    return stored


def _worker(url: str, me: int, workers: int, pipe: Connection) -> None:
    """One worker: a DetectJob on its share; a cycle each time it is told, its time sent
    back; the first one (the warm-up) untimed."""
    engine = store.open_engine(url)
    members = list(range(workers))
    owns: Callable[[tuple[str, str, str, str]], bool] = lambda key: (  # noqa: E731
        owner(entity_key_text(key), members) == me
    )
    job = DetectJob(engine, DetectionConfig(), alerts=AlertsConfig(), owns=owns)
    while pipe.recv():
        began = time.perf_counter()
        job()
        pipe.send(time.perf_counter() - began)
    engine.dispose()


def _cycles(url: str, workers: int, args: argparse.Namespace, step: list[int]) -> float:
    """Start ``workers`` workers, warm them up, then time ``args.cycles`` cycles with one
    new point per series before each; return the median of the slowest worker's time."""
    context = mp.get_context("spawn")
    pipes, processes = [], []
    for me in range(workers):
        mine, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(url, me, workers, theirs))
        process.start()
        pipes.append(mine)
        processes.append(process)
    engine = store.open_engine(url)
    took = []
    try:
        for cycle in range(args.cycles + 1):
            if cycle:  # the warm-up cycle scores what is there
                _write(engine, args.entities, args.metrics, range(step[0], step[0] + 1))
                step[0] += 1
            for pipe in pipes:
                pipe.send(True)
            slowest = max(pipe.recv() for pipe in pipes)
            if cycle:
                took.append(slowest)
            else:
                print(f"{workers} worker(s): warm-up cycle {slowest:.1f} s")
    finally:
        for pipe in pipes:
            pipe.send(False)
        for process in processes:
            process.join(timeout=60)
        engine.dispose()
    return float(np.median(took))


def _ingest(url: str, args: argparse.Namespace, step: list[int], rounds: int = 3) -> float:
    """Rows per second of two writer processes storing their halves of each round's
    points at once (one new point per series a round); the processes started and the
    samples made before the clock starts."""
    context = mp.get_context("spawn")
    half = args.entities // 2
    pipes, processes = [], []
    for first, last in ((0, half), (half, args.entities)):
        mine, theirs = context.Pipe()
        process = context.Process(target=_writer, args=(url, first, last, args.metrics, theirs))
        process.start()
        pipes.append(mine)
        processes.append(process)
    total, wall = 0, 0.0
    try:
        for pipe in pipes:  # ready: imported and connected
            pipe.recv()
        for _ in range(rounds):
            for pipe in pipes:  # the round's samples made (not timed)
                pipe.send(step[0])
            for pipe in pipes:
                pipe.recv()
            began = time.perf_counter()
            for pipe in pipes:
                pipe.send(True)  # go
            total += sum(pipe.recv() for pipe in pipes)
            wall += time.perf_counter() - began
            step[0] += 1
    finally:
        for pipe in pipes:
            pipe.send(None)
        for process in processes:
            process.join(timeout=60)
    return total / wall


def _writer(url: str, first: int, last: int, metrics: int, pipe: Connection) -> None:
    """Store the entities ``[first, last)``'s point of each index it is sent."""
    engine = store.open_engine(url)
    registry = store.SeriesRegistry()
    pipe.send(0)
    while (index := pipe.recv()) is not None:
        samples = _samples(range(first, last), metrics, range(index, index + 1))
        pipe.send(len(samples))
        pipe.recv()  # go: both writers store at once
        now = datetime.now(UTC)
        result = store.save_collection(
            engine, registry, source="bench", started_at=now, finished_at=now, samples=samples
        )
        pipe.send(result.points)
    engine.dispose()


def _retention(url: str, samples: int) -> float:
    """Store ``samples`` more (1,000 series), then time deleting the older half of them
    as the retention job does (batches of 10,000 rows)."""
    engine = store.open_engine(url)
    series, points = 1000, samples // 1000
    registry, now = store.SeriesRegistry(), datetime.now(UTC)
    base = START - STEP * points  # before the detection benchmark's points
    for first in range(0, series, 50):
        found = []
        for s in range(first, first + 50):
            key = SeriesKey.of("retained", {"n": str(s)})
            info = SeriesInfo("retention", f"r{s}", SeriesKind.CUSTOM)
            found += [Sample(key, info, base + STEP * i, float(i % 97)) for i in range(points)]
        store.save_collection(
            engine, registry, source="retention", started_at=now, finished_at=now, samples=found
        )
    cutoffs = store.Cutoffs(
        samples=base + STEP * (points // 2),
        anomalies=0,
        runs=datetime(2000, 1, 1, tzinfo=UTC),
        incidents=datetime(2000, 1, 1, tzinfo=UTC),
    )
    began = time.perf_counter()
    while store.delete_old(engine, cutoffs, batch=10_000, max_batches=1000)["samples"]:
        pass
    took = time.perf_counter() - began
    engine.dispose()
    return took


if __name__ == "__main__":
    main()
