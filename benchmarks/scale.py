"""Scale-out benchmark: detection cycles and ingest with one and with two workers.

On a PostgreSQL schema of its own ($ANOMON_TEST_DATABASE_URL, else 127.0.0.1:5432/test,
else a server started for the run, as ``benchmarks/ingest.py`` finds one):
50,000 series in 5,000 entities (hosts of 10 metrics) with a history each (of
``--history`` / 2 to ``--history`` points: see :func:`first_point`); then, per
cycle, one new point per series is stored and every worker runs one detection cycle
at the same time on its share (entities split by rendezvous hashing, as
``anomon run`` workers split them). A worker is a process of its own with its own
``DetectJob`` and one BLAS thread (``--threads``), warmed up (its first cycle: the
rows before the watermark) before the timed cycles. A cycle of N workers takes as long
as its slowest worker.

Then the ingest rate with two processes writing their halves of each round's points
at once, and retention of the older half of ``--retention-samples`` samples spread
over 20 days: by row deletes in batches (an unpartitioned table, revision 0011) and by
dropping day partitions (the same data partitioned by migration 0012, timed too).

Prints readable figures, then one JSON line with ``cycle_1_worker_s``,
``cycle_2_workers_s``, ``scale_ratio`` (target ≤ 0.6), ``ingest_2_writers_rows_per_s``,
``retention_drop_s``, ``retention_delete_s`` and ``migration_0012_s``.

    python benchmarks/scale.py [--entities 5000] [--metrics 10] [--history 120]
        [--cycles 5] [--retention-samples 10000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from ingest import postgres_url, scratch_schema  # benchmarks/ingest.py, beside this one

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.service.membership import Membership, entity_key_text

STEP = 60
START = 1_795_000_000 // 86_400 * 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=5000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--history", type=int, default=120)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--retention-samples", type=int, default=10_000_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads per worker (0: numpy's default)"
    )
    args = parser.parse_args()
    for base in postgres_url():  # the generator stops a server it started, after
        if base is None:
            raise SystemExit("no PostgreSQL: set ANOMON_TEST_DATABASE_URL")
        figures = _run(base, args)
    print(json.dumps(figures))


def _run(base: str, args: argparse.Namespace) -> dict[str, float | None]:
    with scratch_schema(base) as url:
        engine = store.open_engine(url)
        store.upgrade(engine)
        began = time.perf_counter()
        stored = _write(engine, args.entities, args.metrics, range(args.history), args.history)
        print(
            f"history: {args.entities:,} entities x {args.metrics} metrics x "
            f"{args.history // 2 + 1}-{args.history} points = {stored:,} samples in "
            f"{time.perf_counter() - began:.1f} s"
        )
        engine.dispose()
        step = [args.history]  # the next point's index
        one = _cycles(url, 1, args, step)
        two = _cycles(url, 2, args, step)
        print(f"detection cycle, 1 worker: {one:.2f} s; 2 workers: {two:.2f} s ({two / one:.2f} x)")
        ingest = _ingest(url, args, step)
        print(f"ingest, 2 writers at once: {ingest:,.0f} rows/s")
    delete, drop, migration = _retention(base, args.retention_samples)
    print(
        f"retention of half of {args.retention_samples:,} samples (20 days): rows deleted "
        f"in batches {delete:.1f} s, days dropped {drop:.1f} s (partitioning them by "
        f"migration 0012 took {migration:.1f} s)"
    )
    return {
        "cycle_1_worker_s": round(one, 3),
        "cycle_2_workers_s": round(two, 3),
        "scale_ratio": round(two / one, 3),
        "ingest_2_writers_rows_per_s": round(ingest),
        "retention_drop_s": round(drop, 2),
        "retention_delete_s": round(delete, 2),
        "migration_0012_s": round(migration, 1),
    }


def first_point(entity: int, history: int) -> int:
    """The index of an entity's first point: histories of every length from half of
    ``history`` to all of it, so that the series reach each refresh of their trailing
    windows in different cycles, as the series of a real fleet do (series that all
    start together refresh together: every cycle a boundary falls on would cost much
    more than the others, and the two phases of the run would not compare)."""
    return entity % max(1, history // 2)


def _samples(
    entities: range, metrics: int, points: range, history: int | None = None
) -> list[Sample]:
    """Noisy levels per (entity, metric), one sample per point index (with ``history``:
    from each entity's :func:`first_point` on)."""
    found = []
    for e in entities:
        info = SeriesInfo("bench", f"host{e}", SeriesKind.RESOURCE)
        first = points.start if history is None else max(points.start, first_point(e, history))
        for m in range(metrics):
            key = SeriesKey.of(f"m{m}", {"host": f"host{e}"})
            rng = np.random.default_rng(e * 1000 + m)
            values = 50 + 10 * m + rng.normal(0, 1, max(points) + 1)
            found += [
                Sample(key, info, START + STEP * i, float(values[i]))
                for i in range(first, points.stop)
            ]
    return found


def _write(
    engine: store.Engine, entities: int, metrics: int, points: range, history: int | None = None
) -> int:
    """Store the points of every series, in collections of 500 entities."""
    registry, stored = store.SeriesRegistry(), 0
    now = datetime.now(UTC)
    for first in range(0, entities, 500):
        samples = _samples(range(first, min(first + 500, entities)), metrics, points, history)
        result = store.save_collection(
            engine, registry, source="bench", started_at=now, finished_at=now, samples=samples
        )
        stored += result.points
    return stored


def _worker(url: str, me: int, workers: int, pipe: Connection) -> None:
    """One worker: a DetectJob on its share; a cycle each time it is told, its time sent
    back; the first one (the warm-up) untimed."""
    engine = store.open_engine(url)
    membership = Membership(me, range(workers))

    def owns(key: tuple[str, str, str, str]) -> bool:
        return membership.owns(entity_key_text(key[1:]))  # by alarm unit, as anomon run

    job = DetectJob(engine, DetectionConfig(), alerts=AlertsConfig(), owns=owns)
    while pipe.recv():
        began, cpu = time.perf_counter(), time.process_time()
        job()
        pipe.send((time.perf_counter() - began, time.process_time() - cpu))
    engine.dispose()


ONE_CORE = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _cycles(url: str, workers: int, args: argparse.Namespace, step: list[int]) -> float:
    """Start ``workers`` workers, warm them up, then time ``args.cycles`` cycles with one
    new point per series before each; return the median of the slowest worker's time.

    Each worker process gets one BLAS / OpenMP thread (``--threads``), as workers that
    share a host should: with numpy's default of a thread per core, one worker already
    uses both cores at times and two oversubscribe them."""
    for name in ONE_CORE:  # the spawned processes read it as they import numpy
        if args.threads:
            os.environ[name] = str(args.threads)
        else:
            os.environ.pop(name, None)
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
            database = _postgres_cpu()
            for pipe in pipes:
                pipe.send(True)
            times = [pipe.recv() for pipe in pipes]
            database = _postgres_cpu() - database
            slowest = max(wall for wall, _ in times)
            if cycle:
                took.append(slowest)
                # CPU seconds of each worker's own process, and of the local PostgreSQL's
                # processes meanwhile: the rest of a worker's wall time is waiting (for
                # a core, or for the answers to its queries)
                print(
                    f"{workers} worker(s), cycle {cycle}: "
                    + ", ".join(f"{wall:.2f} s ({cpu:.2f} s CPU)" for wall, cpu in times)
                    + (f"; PostgreSQL {database:.2f} s CPU" if database >= 0 else "")
                )
            else:
                print(f"{workers} worker(s): warm-up cycle {slowest:.1f} s")
    finally:
        for pipe in pipes:
            pipe.send(False)
        for process in processes:
            process.join(timeout=60)
        engine.dispose()
    return float(np.median(took))


def _postgres_cpu() -> float:
    """CPU seconds used so far by this machine's ``postgres`` processes (the server's
    backends come and go: a difference over a short span is what they used in it); -1
    where /proc cannot tell (another OS, a remote server's work is not seen at all)."""
    total = 0
    try:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # gone meanwhile
                continue
            name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") :]
            if name == "postgres":
                fields = rest.split()
                total += int(fields[12]) + int(fields[13])  # utime, stime (fields 14, 15)
    except OSError:
        return -1.0
    return total / os.sysconf("SC_CLK_TCK")


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


def _retention(base: str, samples: int) -> tuple[float, float, float]:
    """``samples`` samples over 20 days (1,000 series), retention keeping the newest 10
    days, twice: rows deleted in batches (the table unpartitioned, revision 0011) and
    days dropped (partitioned, migration 0012, whose time is measured too). Returns
    (delete s, drop s, migration s)."""
    series, days = 1000, 20
    per = samples // series
    now = int(time.time())
    first = now - days * 86_400
    ts = first + (np.arange(per, dtype=np.int64) * (days * 86_400) // per)
    ids = np.repeat(np.arange(1, series + 1, dtype=np.int64), per)
    times = np.tile(ts, series)
    values = (times % 97).astype(np.float64)
    cutoffs = store.Cutoffs(
        samples=now - (days // 2) * 86_400,
        anomalies=0,
        runs=datetime(2000, 1, 1, tzinfo=UTC),
        incidents=datetime(2000, 1, 1, tzinfo=UTC),
    )
    took = []
    for partitioned in (False, True):
        with scratch_schema(base) as url:
            engine = store.open_engine(url)
            store.upgrade(engine, "0011")
            for start in range(0, ids.size, 1_000_000):
                with engine.begin() as conn:
                    store.insert_samples(
                        conn, ids[start : start + 1_000_000], times[start : start + 1_000_000],
                        values[start : start + 1_000_000],
                    )  # fmt: skip
            migration = 0.0
            if partitioned:
                began = time.perf_counter()
                store.upgrade(engine)
                migration = time.perf_counter() - began
            began = time.perf_counter()
            if partitioned:
                store.drop_partitions_before(engine, cutoffs.samples)
            while store.delete_old(engine, cutoffs, batch=10_000, max_batches=1000)["samples"]:
                pass
            took.append(time.perf_counter() - began)
            with engine.connect() as conn:
                left = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
            engine.dispose()
            assert left == int((times >= cutoffs.samples).sum()), left  # the same rows left
    return took[0], took[1], migration


if __name__ == "__main__":
    main()
