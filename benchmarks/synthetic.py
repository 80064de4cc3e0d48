"""Known faults written into normal server data: detection quality that no labels decide.

The SMD dev machines' train parts (``../shared/datasets/smd/<machine>/train.csv.gz``) are
normal operation. Each is cut in two: the first half is the history (``--train``), and
into the second half ``--faults`` faults of one kind at a time are written at evenly
spaced places (the same for every machine and kind), each on one or two of the
machine's metrics that move, drawn with its length and size from a generator seeded by
the machine and the kind (``IQR``: the metric's interquartile range over the history,
at least 0.01 of the 0-1 scale; ``k`` drawn from 3 to 8 per fault):

- ``spike``: 1-3 rows, ``+ k IQR``;
- ``shift``: 30-400 rows, ``± 0.6 k IQR``;
- ``burst``: 30-400 rows, the deviation from the median four times as large, plus noise
  of one IQR;
- ``drift``: 100-400 rows, a ramp from 0 to ``+ k IQR``;
- ``zero``: 30-400 rows at 0, on metrics whose median is more than 3 IQR above 0 (a
  throughput that stops, a dead exporter reporting 0).

Every machine and kind is scored the way ``benchmarks/quality.py`` scores SMD: each metric
replayed alone with the history as its train part, the largest score over the metrics
per row, beside a robust z fitted on the history and an IsolationForest on the raw
history (best point-wise F1 and AUC-PR); and the machine replayed as one entity. At the
configured threshold it also counts, for the univariate score, the faults with at least
one row at the threshold (found) and the alarm runs that begin outside every fault
(false alarms, per 10,000 rows without a fault: the end of a fault that alarms counts).

The faults are this script's, not anyone's labels: a mechanism that helps here helps on
a kind of fault, not on one data set's labelling. The last line printed is one JSON
object::

    python benchmarks/synthetic.py [--kinds spike shift ...] [--machines ...] [--jobs 2]
        [--faults 10] [--detection KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from quality import (
    SMD_DIR,
    Inline,
    add_detection_options,
    best_f1_and_ap,
    detection_config,
    iforest,
    read_frame,
    robust_z,
)

from anomon.config import DetectionConfig
from anomon.detect.replay import Table, replay

FloatArray = npt.NDArray[np.float64]
KINDS = ("spike", "shift", "burst", "drift", "zero")
FAULTS = 10  # per machine and kind: about one every 1,100 rows of the faulty half
IQR_FLOOR = 0.01  # the SMD values are min-max scaled to [0, 1]: 1% of the scale
LONGEST = 400  # rows of the longest fault: faults never overlap


@dataclass(frozen=True, slots=True)
class Fault:
    """One written fault: its rows ``[start, start + rows)`` and the metric columns."""

    start: int
    rows: int
    columns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KindResult:
    """One machine and one kind of fault: (best F1, AUC-PR) of each score, and anomon's
    univariate alarms at the threshold."""

    machine: str
    kind: str
    anomon: tuple[float, float]
    entity: tuple[float, float]
    robust_z: tuple[float, float]
    iforest: tuple[float, float]
    found: int
    faults: int
    false_alarm_runs: int
    normal_rows: int


def write_faults(
    x: FloatArray, history: FloatArray, kind: str, count: int, rng: np.random.Generator
) -> tuple[FloatArray, list[Fault]]:
    """A copy of ``x`` with ``count`` faults of ``kind`` written into it, and the faults."""
    out = x.copy()
    median = np.median(history, axis=0)
    iqr = np.percentile(history, 75, axis=0) - np.percentile(history, 25, axis=0)
    iqr = np.maximum(iqr, IQR_FLOOR)
    moving = np.ptp(history, axis=0) > 0
    if kind == "zero":
        moving &= median > 3 * iqr
    candidates = np.flatnonzero(moving)
    if candidates.size == 0:
        raise SystemExit(f"no metric can take a {kind!r} fault")
    starts = np.linspace(x.shape[0] // 20, x.shape[0] - LONGEST, count).astype(np.int64)
    if count > 1 and int(np.min(np.diff(starts))) <= LONGEST:
        raise SystemExit(f"--faults {count}: too many for {x.shape[0]} rows, they would overlap")
    faults = []
    for start in starts.tolist():
        size = min(candidates.size, int(rng.integers(1, 3)))
        columns = tuple(sorted(rng.choice(candidates, size=size, replace=False).tolist()))
        k = rng.uniform(3.0, 8.0)
        if kind == "spike":
            rows = int(rng.integers(1, 4))
        elif kind == "drift":
            rows = int(rng.integers(100, LONGEST + 1))
        else:
            rows = int(rng.integers(30, LONGEST + 1))
        span = slice(start, start + rows)
        for c in columns:
            if kind == "spike":
                out[span, c] += k * iqr[c]
            elif kind == "shift":
                out[span, c] += rng.choice([-1.0, 1.0]) * 0.6 * k * iqr[c]
            elif kind == "burst":
                noise = rng.normal(0.0, iqr[c], rows)
                out[span, c] = median[c] + 4.0 * (out[span, c] - median[c]) + noise
            elif kind == "drift":
                out[span, c] += np.linspace(0.0, k * iqr[c], rows)
            else:
                out[span, c] = 0.0
        faults.append(Fault(start, rows, columns))
    return out, faults


def alarm_runs(alarm: npt.NDArray[np.bool_], faulty: npt.NDArray[np.bool_]) -> int:
    """Runs of consecutive alarms that begin on a row outside every fault."""
    begins = alarm & ~np.concatenate([[False], alarm[:-1]])
    return int(np.count_nonzero(begins & ~faulty))


def score_kind(machine: str, kind: str, count: int, config: DetectionConfig) -> KindResult:
    """Write ``count`` faults of ``kind`` into ``machine``'s normal half and score it."""
    text, ts, metrics, x = read_frame(SMD_DIR / machine / "train.csv.gz")
    cut = x.shape[0] // 2
    history, normal = x[:cut], x[cut:]
    rng = np.random.default_rng(zlib.crc32(f"{machine}/{kind}".encode()))
    test_x, faults = write_faults(normal, history, kind, count, rng)
    labels = np.zeros(test_x.shape[0], dtype=np.int64)
    for fault in faults:
        labels[fault.start : fault.start + fault.rows] = 1
    train = Table(text[:cut], ts[:cut], metrics, history)
    test = Table(text[cut:], ts[cut:], metrics, test_x)
    largest = np.full(test_x.shape[0], -np.inf)
    for column, name in enumerate(metrics):
        one = slice(column, column + 1)
        alone = replay(
            Table(test.labels, test.ts, [name], test_x[:, one].copy()),
            config,
            train=Table(train.labels, train.ts, [name], history[:, one].copy()),
        )
        largest = np.fmax(largest, alone.score)
    largest[~np.isfinite(largest)] = 0.0
    whole = replay(test, config, train=train).score
    alarm = largest >= config.threshold
    faulty = labels.astype(bool)
    found = sum(bool(alarm[f.start : f.start + f.rows].any()) for f in faults)
    return KindResult(
        machine=machine,
        kind=kind,
        anomon=best_f1_and_ap(labels, largest),
        entity=best_f1_and_ap(labels, np.where(np.isfinite(whole), whole, 0.0)),
        robust_z=best_f1_and_ap(labels, robust_z(history, test_x)),
        iforest=best_f1_and_ap(labels, iforest(history, test_x)),
        found=found,
        faults=len(faults),
        false_alarm_runs=alarm_runs(alarm, faulty),
        normal_rows=int(np.count_nonzero(~faulty)),
    )


def print_table(results: Sequence[KindResult], kinds: Sequence[str]) -> dict[str, float]:
    """Print one line per kind (means over the machines); return the overall means."""
    print("Known faults in normal SMD data (means over the machines; best F1 AUC-PR)")
    print(
        "kind   | anomon         | entity         | robust z       | IsolationForest"
        " | found     | false alarm runs / 10k rows"
    )

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    for kind in kinds:
        part = [r for r in results if r.kind == kind]
        cells = [
            f"{mean([getattr(r, name)[0] for r in part]):.3f} "
            f"{mean([getattr(r, name)[1] for r in part]):.3f}   "
            for name in ("anomon", "entity", "robust_z", "iforest")
        ]
        found, faults = sum(r.found for r in part), sum(r.faults for r in part)
        runs = 1e4 * sum(r.false_alarm_runs for r in part) / sum(r.normal_rows for r in part)
        print(f"{kind:<6} | " + "| ".join(cells) + f"  | {found:>3} / {faults:<3} | {runs:.1f}")
    faults = sum(r.faults for r in results)
    rows = sum(r.normal_rows for r in results)
    return {
        "synthetic_f1_mean": mean([r.anomon[0] for r in results]),
        "synthetic_auc_pr_mean": mean([r.anomon[1] for r in results]),
        "synthetic_entity_f1_mean": mean([r.entity[0] for r in results]),
        "synthetic_entity_auc_pr_mean": mean([r.entity[1] for r in results]),
        "synthetic_robust_z_f1_mean": mean([r.robust_z[0] for r in results]),
        "synthetic_robust_z_auc_pr_mean": mean([r.robust_z[1] for r in results]),
        "synthetic_iforest_f1_mean": mean([r.iforest[0] for r in results]),
        "synthetic_iforest_auc_pr_mean": mean([r.iforest[1] for r in results]),
        "synthetic_found_share": sum(r.found for r in results) / faults if faults else 0.0,
        "synthetic_false_alarm_runs_per_10k": (
            1e4 * sum(r.false_alarm_runs for r in results) / rows if rows else 0.0
        ),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--machines", nargs="+", help="SMD machines (default: all in the folder)")
    parser.add_argument("--faults", type=int, default=FAULTS, help="per machine and kind")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    add_detection_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = detection_config(args.config, args.detection)
    machines = args.machines or sorted(p.name for p in SMD_DIR.iterdir() if p.is_dir())
    started = time.perf_counter()
    print(f"config: {args.config or 'shipped defaults'}; overrides: {args.detection or 'none'}")
    pool: Executor = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else Inline()
    with pool:
        futures = [
            pool.submit(score_kind, machine, kind, args.faults, config)
            for kind in args.kinds
            for machine in machines
        ]
        results = [f.result() for f in futures]
    summary = print_table(results, args.kinds)
    print(f"wall time {time.perf_counter() - started:.1f} s with {args.jobs} job(s)")
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
