"""``anomon evaluate``: detection quality on labelled data in the NAB layout.

``DATA_DIR/<category>/<name>.csv`` files (``timestamp,value``) and a windows JSON keyed
by ``<category>/<name>.csv`` with ``[start, end]`` pairs. Every file is replayed with
one configuration; the report gives NAB scores (three profiles, threshold swept over
the whole corpus on the ``score`` column) and event metrics of the ``anomaly`` column
(the configured decision rule): window recall, alarm precision, F1, mean delay from a
window's start to its first alarm, and false alarms per day -- per category and overall.

A file is measured on the rows the daemon would score (see :mod:`anomon.detect.replay`):
rows whose time is not later than every row before it are dropped first, and the
file's result says so in ``cleaned``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from anomon.config import DetectionConfig
from anomon.detect import nabscore
from anomon.detect.replay import Table, read_table, replay, time_order
from anomon.detect.rules import repeat_damped
from anomon.errors import DataError

Bounds = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class FileResult:
    """One replayed file: its NAB rows and its alarm events."""

    name: str
    scored: nabscore.ScoredFile
    windows: int
    detected: int
    alarms: int
    true_alarms: int
    delays_s: list[float]
    scored_days: float
    cleaned: str | None = None  # which rows were dropped and why; None: the file was clean


@dataclass
class Group:
    """Totals of a set of files (a category, or everything)."""

    name: str
    files: list[FileResult] = field(default_factory=list)
    nab: dict[str, float] = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.files)

    @property
    def detected(self) -> int:
        return sum(f.detected for f in self.files)

    @property
    def recall(self) -> float:
        return self.detected / self.windows if self.windows else float("nan")

    @property
    def precision(self) -> float:
        alarms = sum(f.alarms for f in self.files)
        return sum(f.true_alarms for f in self.files) / alarms if alarms else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else float("nan")

    @property
    def mean_delay_s(self) -> float:
        delays = [d for f in self.files for d in f.delays_s]
        return float(np.mean(delays)) if delays else float("nan")

    @property
    def false_alarms_per_day(self) -> float:
        days = sum(f.scored_days for f in self.files)
        false = sum(f.alarms - f.true_alarms for f in self.files)
        return false / days if days else float("nan")


def load_windows(path: Path | str) -> dict[str, list[tuple[str, str]]]:
    """Read a NAB windows JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a windows JSON file: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(w, list) and len(w) == 2 for w in v)
        for v in data.values()
    ):
        raise DataError(f'{path}: expected {{"<category>/<file>.csv": [[start, end], ...]}}')
    if not data:
        raise DataError(f"{path}: lists no file")
    problems: list[str] = []
    found = {str(k): [(str(a), str(b)) for a, b in v] for k, v in data.items()}
    for name, windows in found.items():
        spans = []
        for number, (start, end) in enumerate(windows, 1):
            try:
                first, last = _epoch(start), _epoch(end)
            except (ValueError, TypeError, OverflowError):
                problems.append(
                    f"{name}: window {number}: expected two times, got {start!r}, {end!r}"
                )
                continue
            if first > last:
                problems.append(f"{name}: window {number} ends before it starts")
            spans.append((first, last, number))
        spans.sort()
        for (_, last, number), (first, _, later) in itertools.pairwise(spans):
            if first <= last:  # NAB scores each window on its own rows
                problems.append(f"{name}: windows {number} and {later} overlap")
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return found


def window_bounds(table: Table, windows: Sequence[tuple[str, str]]) -> Bounds:
    """Turn window times into inclusive row ranges of ``table`` (no zone means UTC)."""
    bounds = []
    for start, end in windows:
        first, last = _epoch(start), _epoch(end)
        left = int(np.searchsorted(table.ts, first, side="left"))
        right = int(np.searchsorted(table.ts, last, side="right")) - 1
        if left <= right:
            bounds.append((left, right))
    return bounds


def _shown_time(table: Table, row: int) -> str:
    return table.labels[row] if table.labels else "(none)"


def _epoch(text: str) -> int:
    moment = pd.Timestamp(text)
    if moment.tzinfo is None:
        moment = moment.tz_localize("UTC")
    return int(moment.timestamp())


def evaluate_file(name: str, table: Table, bounds: Bounds, config: DetectionConfig) -> FileResult:
    """Replay one file and measure it (``table``'s times must increase: see :func:`scored_rows`)."""
    scores = replay(table, config)
    alerts = repeat_damped(scores.score, span=config.damping, factor=config.damping_factor)
    probation = nabscore.probation_length(table.ts.size)
    alarm = alerts >= config.threshold
    alarm[:probation] = False
    in_window = np.zeros(table.ts.size, dtype=bool)
    delays = []
    detected = 0
    for left, right in bounds:
        in_window[left : right + 1] = True
        hits = np.flatnonzero(alarm[left : right + 1])
        if hits.size and right >= probation:
            detected += 1
            delays.append(float(table.ts[left + hits[0]] - table.ts[left]))
    starts, ends = _runs(alarm)
    true_alarms = sum(bool(in_window[a:b].any()) for a, b in zip(starts, ends, strict=True))
    scored_seconds = (
        float(table.ts[-1] - table.ts[min(probation, table.ts.size - 1)]) if table.ts.size else 0.0
    )
    return FileResult(
        name=name,
        scored=nabscore.prepare(alerts, bounds),
        windows=sum(1 for _, right in bounds if right >= probation),
        detected=detected,
        alarms=len(starts),
        true_alarms=true_alarms,
        delays_s=delays,
        scored_days=scored_seconds / 86_400,
    )


def _runs(flags: npt.NDArray[np.bool_]) -> tuple[list[int], list[int]]:
    """Start and end (exclusive) of every run of consecutive true values."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()


def evaluate(
    data_dir: Path | str, windows: Mapping[str, Sequence[tuple[str, str]]], config: DetectionConfig
) -> list[Group]:
    """Replay every labelled file; return one Group per category, then the overall one."""
    root = Path(data_dir)
    results = []
    for name in sorted(windows):
        table, note = scored_rows(root / name, read_table(root / name))
        bounds = window_bounds(table, windows[name])
        if len(bounds) < len(windows[name]):  # a window no row of the file falls in
            raise DataError(
                f"{root / name}: {len(windows[name]) - len(bounds)} of its "
                f"{len(windows[name])} windows hold none of its rows (its times: "
                f"{_shown_time(table, 0)} to {_shown_time(table, -1)})"
            )
        result = evaluate_file(name, table, bounds, config)
        results.append(dataclasses.replace(result, cleaned=note))
    overall = Group("overall", results)
    categories: dict[str, Group] = {}
    for result in results:
        category = result.name.split("/", 1)[0] if "/" in result.name else "."
        categories.setdefault(category, Group(category)).files.append(result)
    for profile_name, profile in nabscore.PROFILES.items():
        best = nabscore.sweep([r.scored for r in results], profile)
        overall.nab[profile_name] = best.normalized
        for group in categories.values():
            group.nab[profile_name] = _normalized_at(group, profile, best.threshold)
    return [*categories.values(), overall]


def scored_rows(path: Path, table: Table) -> tuple[Table, str | None]:
    """Keep the rows of ``table`` the daemon would score; say which were dropped, if any."""
    order = time_order(table)
    note = order.describe(path, table.labels)
    return (table.take(order.scored), note) if note else (table, None)


def _normalized_at(group: Group, profile: nabscore.Profile, threshold: float) -> float:
    files = [f.scored for f in group.files]
    total = sum(f.windows for f in files)
    if total == 0:
        return float("nan")
    raw = nabscore.score_at(files, profile, threshold)
    null, perfect = -profile.fn_weight * total, profile.tp_weight * total
    return 100.0 * (raw - null) / (perfect - null)


def report_rows(groups: Sequence[Group]) -> list[dict[str, object]]:
    """The report as plain rows (for text, JSON and CSV output)."""
    return [
        {
            "group": g.name,
            "files": len(g.files),
            "windows": g.windows,
            "detected": g.detected,
            "nab_standard": round(g.nab.get("standard", float("nan")), 2),
            "nab_low_fp": round(g.nab.get("reward_low_FP_rate", float("nan")), 2),
            "nab_low_fn": round(g.nab.get("reward_low_FN_rate", float("nan")), 2),
            "precision": round(g.precision, 3),
            "recall": round(g.recall, 3),
            "f1": round(g.f1, 3),
            "mean_delay_h": round(g.mean_delay_s / 3600, 2),
            "false_alarms_per_day": round(g.false_alarms_per_day, 3),
        }
        for g in groups
    ]
