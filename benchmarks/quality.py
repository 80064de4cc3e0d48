"""Detection quality harness of issue 12: SMD univariate and NAB leave-one-category-out.

SMD (``../shared/datasets/smd/<machine>/``): every metric of a machine is replayed as its
own one-metric series through :func:`anomon.detect.replay.replay`, warmed up on the
metric's train part; a test row's score is the largest ``score`` over the machine's
metrics. Then (issue 13) the machine is replayed once as one entity of all its metrics,
as ``anomon replay test.csv.gz --train train.csv.gz`` does, and its ``score`` measured
beside its parts from the same run: the largest per-metric score (the metrics' own
detectors) and the pooled forest's score. Beside them, two baselines scored on the
same test rows:

- robust z: per metric ``|x - median| / (1.4826 * MAD)`` with median and MAD of the
  train part, a MAD of 0 (a metric constant on most of the train part) replaced by
  ``--mad-floor`` (default 0.01, 1% of the providers' min-max scale), largest over the
  metrics. The floor decides how loud a metric flat in train but moving in test is: with
  1e-6 the baseline falls to about 0.21 / 0.14, from 0.003 on it stays at 0.43-0.45 / 0.39-0.41;
- IsolationForest (scikit-learn, ``random_state=0``, default parameters) fitted on the
  raw train metrics, score ``-score_samples`` of the test rows.

Per machine: the best point-wise F1 over all thresholds (exact: every distinct score is
a threshold, from ``sklearn.metrics.precision_recall_curve``; a row is flagged when its
score is >= the threshold) and AUC-PR (``sklearn.metrics.average_precision_score``).

NAB (``../shared/datasets/nab/``): every file is replayed once with ``anomon evaluate``'s
own functions; for each category with anomaly windows, the threshold that maximises the
NAB standard score of all the other categories (artificialNoAnomaly included: it only
costs false positives) is applied to the left-out category, scored with NAB's rules.

The last line printed is one JSON object (``null`` for a part not run)::

    python benchmarks/quality.py [--config FILE] [--smd-only | --nab-only]
        [--machines machine-1-6 ...] [--jobs 2] [--detection damping=0 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import ValidationError
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_curve

from anomon.config import DetectionConfig
from anomon.detect import nabscore
from anomon.detect.evaluate import (
    FileResult,
    evaluate_file,
    load_windows,
    scored_rows,
    window_bounds,
)
from anomon.detect.replay import Table, read_table, replay

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SMD_DIR = DATASETS / "smd"
NAB_DIR = DATASETS / "nab"
NAB_WINDOWS = NAB_DIR / "labels" / "combined_windows.json"
MAD_FLOOR = 0.01  # the SMD values are min-max scaled to [0, 1]: 1% of the scale
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
STANDARD = nabscore.PROFILES["standard"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MachineResult:
    """One SMD machine: (best F1, AUC-PR) of anomon and of both baselines."""

    machine: str
    rows: int
    anomalies: int
    metrics: int
    anomon: tuple[float, float]
    robust_z: tuple[float, float]
    iforest: tuple[float, float]
    replay_points: int
    replay_seconds: float
    entity: EntityResult


@dataclass(frozen=True, slots=True)
class EntityResult:
    """One SMD machine replayed as one entity of all its metrics (issue 13's path):
    (best F1, AUC-PR) of anomon's score and of its parts, from the same replay."""

    both: tuple[float, float]  # the score: per-metric detectors, forest, joint grade
    metrics_alone: tuple[float, float]  # the largest per-metric score (z, seasonal)
    forest_alone: tuple[float, float]  # the pooled forest's score
    seconds: float


@dataclass(frozen=True, slots=True)
class NabFile:
    """One replayed NAB file, with the time its replay took."""

    result: FileResult
    points: int
    seconds: float


# ---------------------------------------------------------------- configuration


def detection_config(path: Path | None, overrides: Sequence[str]) -> DetectionConfig:
    """The ``[detection]`` table of ``path`` (or the defaults) with ``KEY=VALUE`` overrides.

    Keys may be dotted (``forest.enabled=false``); values are read as TOML values
    (``0``, ``0.5``, ``false``, ``["daily"]``) and otherwise taken as text (``5m``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as handle:
            data = tomllib.load(handle).get("detection", {})
    merged = DetectionConfig.model_validate(data).model_dump()
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise SystemExit(f"--detection: expected KEY=VALUE, got: {override!r}")
        *parents, leaf = key.strip().split(".")
        node = merged
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--detection: {key!r} is not a detection key")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--detection: {key!r} is not a detection key")
        node[leaf] = _toml_value(text.strip())
    try:
        return DetectionConfig.model_validate(merged)
    except ValidationError as exc:
        raise SystemExit(f"--detection / --config: {exc}") from None


def _toml_value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# ---------------------------------------------------------------- SMD


def read_frame(path: Path) -> tuple[list[str], npt.NDArray[np.int64], list[str], FloatArray]:
    """Timestamp text, epoch seconds, metric names and values of an SMD csv.gz file."""
    frame = pd.read_csv(path, engine="c")
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    ts = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1_000_000_000
    metrics = [str(c) for c in frame.columns[1:]]
    return frame["timestamp"].tolist(), ts, metrics, frame[metrics].to_numpy(np.float64)


def best_f1_and_ap(labels: npt.NDArray[np.int64], score: FloatArray) -> tuple[float, float]:
    """Best point-wise F1 over every threshold, and average precision (AUC-PR)."""
    precision, recall, _ = precision_recall_curve(labels, score)
    # the last point (precision 1, recall 0) is no threshold
    p, r = precision[:-1], recall[:-1]
    denominator = np.where(p + r > 0, p + r, 1.0)
    f1 = float(np.max(np.where(p + r > 0, 2 * p * r / denominator, 0.0)))
    return f1, float(average_precision_score(labels, score))


def robust_z(train: FloatArray, test: FloatArray, mad_floor: float = MAD_FLOOR) -> FloatArray:
    """Largest robust z over the metrics per test row, median and MAD from ``train``.

    A MAD of 0 is replaced by ``mad_floor``.
    """
    median = np.median(train, axis=0)
    mad = np.median(np.abs(train - median), axis=0)
    scale = MAD_SCALE * np.where(mad > 0, mad, mad_floor)
    return np.asarray(np.max(np.abs(test - median) / scale, axis=1), dtype=np.float64)


def iforest(train: FloatArray, test: FloatArray) -> FloatArray:
    """IsolationForest on the raw train metrics; ``-score_samples`` of the test rows."""
    forest = IsolationForest(random_state=0).fit(train)
    return np.asarray(-forest.score_samples(test), dtype=np.float64)


def score_machine(
    machine: str, config: DetectionConfig, mad_floor: float = MAD_FLOOR
) -> MachineResult:
    """Replay each metric of one SMD machine alone; measure anomon and both baselines."""
    folder = SMD_DIR / machine
    train_labels, train_ts, metrics, train_x = read_frame(folder / "train.csv.gz")
    test_labels, test_ts, test_metrics, test_x = read_frame(folder / "test.csv.gz")
    if test_metrics != metrics:
        raise SystemExit(f"{folder}: train and test columns differ")
    labels = pd.read_csv(folder / "test_label.csv.gz")["label"].to_numpy(np.int64)
    if labels.size != test_ts.size:
        raise SystemExit(f"{folder}: {labels.size} labels for {test_ts.size} test rows")
    combined = np.full(test_ts.size, -np.inf)
    seconds = 0.0
    for column, name in enumerate(metrics):
        train = Table(train_labels, train_ts, [name], train_x[:, column : column + 1].copy())
        test = Table(test_labels, test_ts, [name], test_x[:, column : column + 1].copy())
        start = time.perf_counter()
        scores = replay(test, config, train=train)
        seconds += time.perf_counter() - start
        # a row anomon could not score (NaN) counts as the lowest score
        combined = np.fmax(combined, scores.score)
    combined[~np.isfinite(combined)] = 0.0
    whole_train = Table(train_labels, train_ts, metrics, train_x)
    start = time.perf_counter()
    whole = replay(Table(test_labels, test_ts, metrics, test_x), config, train=whole_train)
    entity_seconds = time.perf_counter() - start

    def measured(score: FloatArray) -> tuple[float, float]:
        return best_f1_and_ap(labels, np.where(np.isfinite(score), score, 0.0))

    entity = EntityResult(
        both=measured(whole.score),
        metrics_alone=measured(np.fmax.reduce(whole.metric_scores, axis=1)),
        forest_alone=measured(whole.detectors["forest"]),
        seconds=entity_seconds,
    )
    return MachineResult(
        machine=machine,
        rows=int(test_ts.size),
        anomalies=int(labels.sum()),
        metrics=len(metrics),
        anomon=best_f1_and_ap(labels, combined),
        robust_z=best_f1_and_ap(labels, robust_z(train_x, test_x, mad_floor)),
        iforest=best_f1_and_ap(labels, iforest(train_x, test_x)),
        replay_points=len(metrics) * int(train_ts.size + test_ts.size),
        replay_seconds=seconds,
        entity=entity,
    )


def print_smd(results: Sequence[MachineResult]) -> dict[str, float]:
    """Print the SMD table; return the means."""
    print("SMD, univariate (each metric its own series, max over metrics per row)")
    print(
        f"{'machine':<12} {'rows':>6} {'anom':>5} | {'anomon F1':>9} {'AUC-PR':>6} | "
        f"{'robZ F1':>7} {'AUC-PR':>6} | {'iF F1':>6} {'AUC-PR':>6} | {'replay s':>8}"
    )
    for r in results:
        print(
            f"{r.machine:<12} {r.rows:>6} {r.anomalies:>5} | {r.anomon[0]:>9.3f} "
            f"{r.anomon[1]:>6.3f} | {r.robust_z[0]:>7.3f} {r.robust_z[1]:>6.3f} | "
            f"{r.iforest[0]:>6.3f} {r.iforest[1]:>6.3f} | {r.replay_seconds:>8.1f}"
        )
    means = {
        "smd_f1_mean": float(np.mean([r.anomon[0] for r in results])),
        "smd_auc_pr_mean": float(np.mean([r.anomon[1] for r in results])),
        "smd_robust_z_f1_mean": float(np.mean([r.robust_z[0] for r in results])),
        "smd_robust_z_auc_pr_mean": float(np.mean([r.robust_z[1] for r in results])),
        "smd_iforest_f1_mean": float(np.mean([r.iforest[0] for r in results])),
        "smd_iforest_auc_pr_mean": float(np.mean([r.iforest[1] for r in results])),
    }
    print(
        f"{'mean':<25} | {means['smd_f1_mean']:>9.3f} {means['smd_auc_pr_mean']:>6.3f} | "
        f"{means['smd_robust_z_f1_mean']:>7.3f} {means['smd_robust_z_auc_pr_mean']:>6.3f} | "
        f"{means['smd_iforest_f1_mean']:>6.3f} {means['smd_iforest_auc_pr_mean']:>6.3f} |"
    )
    return means


def print_smd_entities(results: Sequence[MachineResult]) -> dict[str, float]:
    """Print the SMD table of each machine replayed as one entity; return the means."""
    rows = [(r, r.entity) for r in results]
    print("SMD, one entity per machine (all its metrics one replay; its parts from the same run)")
    print(
        f"{'machine':<12} | {'anomon F1':>9} {'AUC-PR':>6} | {'metrics F1':>10} {'AUC-PR':>6} | "
        f"{'forest F1':>9} {'AUC-PR':>6} | {'replay s':>8}"
    )
    for r, e in rows:
        print(
            f"{r.machine:<12} | {e.both[0]:>9.3f} {e.both[1]:>6.3f} | "
            f"{e.metrics_alone[0]:>10.3f} {e.metrics_alone[1]:>6.3f} | "
            f"{e.forest_alone[0]:>9.3f} {e.forest_alone[1]:>6.3f} | {e.seconds:>8.1f}"
        )
    means = {
        "smd_entity_f1_mean": float(np.mean([e.both[0] for _, e in rows])),
        "smd_entity_auc_pr_mean": float(np.mean([e.both[1] for _, e in rows])),
    }
    alone = [
        np.mean([getattr(e, part)[k] for _, e in rows])
        for part in ("metrics_alone", "forest_alone")
        for k in (0, 1)
    ]
    both = (means["smd_entity_f1_mean"], means["smd_entity_auc_pr_mean"])
    print(
        f"{'mean':<12} | {both[0]:>9.3f} {both[1]:>6.3f} | "
        f"{alone[0]:>10.3f} {alone[1]:>6.3f} | {alone[2]:>9.3f} {alone[3]:>6.3f} |"
    )
    return means


# ---------------------------------------------------------------- NAB


def score_nab_file(name: str, windows: list[tuple[str, str]], config: DetectionConfig) -> NabFile:
    """Replay one NAB file once, as ``anomon evaluate`` does."""
    table, _ = scored_rows(NAB_DIR / "data" / name, read_table(NAB_DIR / "data" / name))
    start = time.perf_counter()
    result = evaluate_file(name, table, window_bounds(table, windows), config)
    return NabFile(result, int(table.values.size), time.perf_counter() - start)


def normalized(files: Sequence[nabscore.ScoredFile], threshold: float) -> float:
    """NAB standard score of ``files`` at ``threshold``: 0 null detector, 100 perfect."""
    total = sum(f.windows for f in files)
    raw = nabscore.score_at(files, STANDARD, threshold)
    null, perfect = -STANDARD.fn_weight * total, STANDARD.tp_weight * total
    return 100.0 * (raw - null) / (perfect - null)


def leave_one_category_out(results: Sequence[FileResult]) -> dict[str, tuple[float, float]]:
    """For each category with windows: (threshold chosen on the others, its NAB score)."""
    categories: dict[str, list[nabscore.ScoredFile]] = {}
    for result in results:
        categories.setdefault(result.name.split("/", 1)[0], []).append(result.scored)
    out = {}
    for category, files in sorted(categories.items()):
        if not sum(f.windows for f in files):
            continue
        others = [f for name, group in categories.items() if name != category for f in group]
        threshold = nabscore.sweep(others, STANDARD).threshold
        out[category] = (threshold, normalized(files, threshold))
    return out


def print_nab(results: Sequence[FileResult]) -> dict[str, float]:
    """Print the leave-one-category-out table; return its mean and worst."""
    loco = leave_one_category_out(results)
    overall = nabscore.sweep([r.scored for r in results], STANDARD)
    print("NAB leave-one-category-out (standard profile, threshold from the other categories)")
    print(f"{'category':<22} {'files':>5} {'windows':>7} {'threshold':>9} {'score':>6}")
    for category, (threshold, score) in loco.items():
        files = [r for r in results if r.name.startswith(category + "/")]
        windows = sum(r.scored.windows for r in files)
        print(f"{category:<22} {len(files):>5} {windows:>7} {threshold:>9.3f} {score:>6.1f}")
    scores = [score for _, score in loco.values()]
    mean, worst = float(np.mean(scores)), float(np.min(scores))
    print(f"{'mean':<46} {mean:>6.1f}")
    print(f"{'worst':<46} {worst:>6.1f}")
    print(
        f"(all {len(results)} files, threshold chosen on them: {overall.normalized:.1f} "
        f"at {overall.threshold:.3f})"
    )
    return {"nab_loco_mean": mean, "nab_loco_min": worst}


# ---------------------------------------------------------------- driver


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--detection KEY=VALUE``: what :func:`detection_config` reads."""
    parser.add_argument("--config", type=Path, help="take [detection] from this config file")
    parser.add_argument(
        "--detection",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [detection] key, dotted for nested ones (forest.enabled=false)",
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_detection_options(parser)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--smd-only", action="store_true")
    only.add_argument("--nab-only", action="store_true")
    parser.add_argument("--machines", nargs="+", help="SMD machines (default: all in the folder)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--mad-floor",
        type=float,
        default=MAD_FLOOR,
        help=f"robust z baseline: what a MAD of 0 becomes (default {MAD_FLOOR})",
    )
    return parser.parse_args(argv)


class Inline(Executor):
    """Runs each task at once in this process (``--jobs 1``)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = detection_config(args.config, args.detection)
    started = time.perf_counter()
    machines = args.machines or sorted(p.name for p in SMD_DIR.iterdir() if p.is_dir())
    windows = load_windows(NAB_WINDOWS)
    summary: dict[str, float | None] = dict.fromkeys(
        [
            "smd_f1_mean",
            "smd_auc_pr_mean",
            "smd_robust_z_f1_mean",
            "smd_robust_z_auc_pr_mean",
            "smd_iforest_f1_mean",
            "smd_iforest_auc_pr_mean",
            "smd_entity_f1_mean",
            "smd_entity_auc_pr_mean",
            "nab_loco_mean",
            "nab_loco_min",
        ]
    )
    overrides = ", ".join(args.detection) or "none"
    print(
        f"config: {args.config or 'shipped defaults'}; overrides: {overrides}; "
        f"robust z MAD floor: {args.mad_floor}"
    )
    unknown = sorted(set(machines) - {p.name for p in SMD_DIR.iterdir()})
    if unknown and not args.nab_only:
        raise SystemExit(f"--machines: no such machine in {SMD_DIR}: {unknown}")
    pool: Executor = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else Inline()
    with pool:
        # the big SMD machines first, so the small NAB files fill the gaps
        smd = (
            []
            if args.nab_only
            else [pool.submit(score_machine, m, config, args.mad_floor) for m in machines]
        )
        nab = (
            []
            if args.smd_only
            else [pool.submit(score_nab_file, n, w, config) for n, w in sorted(windows.items())]
        )
        machine_results = [f.result() for f in smd]
        nab_files = [f.result() for f in nab]
    points = sum(r.replay_points for r in machine_results) + sum(f.points for f in nab_files)
    seconds = sum(r.replay_seconds for r in machine_results) + sum(f.seconds for f in nab_files)
    if machine_results:
        summary.update(print_smd(machine_results))
        print()
        summary.update(print_smd_entities(machine_results))
        print()
    if nab_files:
        summary.update(print_nab([f.result for f in nab_files]))
        print()
    wall = time.perf_counter() - started
    rate = points / seconds if seconds else float("nan")
    print(
        f"wall time {wall:.1f} s with {args.jobs} job(s); anomon replay: {points:,} points "
        f"in {seconds:.1f} s of worker time, {rate:,.0f} points/s per process"
    )
    print(json.dumps({k: None if v is None else round(v, 4) for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
