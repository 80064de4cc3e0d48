"""``anomon replay``: the daemon's detection path over a CSV file.

Input: a header, a ``timestamp`` column (ISO 8601 with ``T`` or a space, with or without
a zone -- none means UTC -- or epoch seconds), then one or more numeric columns. One
column is one series; several are one entity's metrics. Empty cells are missing values.
Output: ``timestamp,score,anomaly`` and one ``<detector>_score`` column per detector,
one row per input row, in input order, with the timestamps exactly as given.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import pandas as pd

from anomon.config import DetectionConfig
from anomon.detect.entity import DETECTORS, EntityDetector, Scores
from anomon.errors import DataError

TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Table:
    """A parsed input file: raw timestamp text, epoch seconds and the metric columns."""

    labels: list[str]
    ts: npt.NDArray[np.int64]
    metrics: list[str]
    values: npt.NDArray[np.float64]


def read_table(path: Path | str) -> Table:
    """Parse a replay input file; raise DataError naming the file, row and column."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{path}: not a readable CSV file: {str(exc).strip().splitlines()[0]}"
        ) from None
    if not len(frame.columns) or frame.columns[0] != TIMESTAMP:
        raise DataError(
            f"{path}: the first column must be '{TIMESTAMP}', got: {list(frame.columns)[:1]}"
        )
    metrics = [str(name) for name in frame.columns[1:]]
    if not metrics:
        raise DataError(f"{path}: expected at least one metric column after '{TIMESTAMP}'")
    ts = _parse_timestamps(path, frame[TIMESTAMP])
    values = np.column_stack([_parse_numbers(path, name, frame[name]) for name in metrics])
    return Table(frame[TIMESTAMP].tolist(), ts, metrics, values)


def _parse_timestamps(path: Path | str, column: pd.Series) -> npt.NDArray[np.int64]:
    """Return epoch seconds; raise DataError for an unreadable or backwards timestamp."""
    stamps = _epoch_seconds(path, column.str.strip())
    backwards = np.flatnonzero(np.diff(stamps) < 0)
    if backwards.size:
        row = int(backwards[0]) + 1
        raise DataError(
            f"{path}: row {row + 2}: timestamp {column.iloc[row]!r} is older than the row before it"
        )
    return stamps


def _epoch_seconds(path: Path | str, text: pd.Series) -> npt.NDArray[np.int64]:
    numeric = pd.to_numeric(text, errors="coerce")
    if len(text) and numeric.notna().all():
        seconds: npt.NDArray[np.int64] = np.floor(numeric.to_numpy(np.float64)).astype(np.int64)
        return seconds
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}: row {row + 2}, column {TIMESTAMP}: expected an ISO 8601 time or epoch "
            f"seconds, got: {text.iloc[row]!r}"
        )
    nanoseconds = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return nanoseconds // 1_000_000_000


def _parse_numbers(path: Path | str, name: str, column: pd.Series) -> npt.NDArray[np.float64]:
    text = column.str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    bad = np.flatnonzero((numbers.isna() & (text != "")).to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}: row {row + 2}, column {name}: expected a number, got: {column.iloc[row]!r}"
        )
    values = numbers.to_numpy(dtype=np.float64, copy=True)
    values[~np.isfinite(values)] = np.nan  # infinities are as unusable as gaps
    return values


def replay(table: Table, config: DetectionConfig, *, train: Table | None = None) -> Scores:
    """Score every row of ``table`` as the daemon would, after warming up on ``train``."""
    detector = EntityDetector(table.metrics, config)
    if train is not None:
        if train.metrics != table.metrics:
            raise DataError(
                f"the training file's columns {train.metrics} differ from {table.metrics}"
            )
        if train.ts.size and table.ts.size and train.ts[-1] > table.ts[0]:
            raise DataError("the training file must end before the input file starts")
        detector.update(train.ts, train.values)
    return detector.update(table.ts, table.values)


def write_scores(table: Table, scores: Scores, out: TextIO) -> None:
    """Write the replay output CSV for ``table``."""
    frame = pd.DataFrame(
        {
            TIMESTAMP: table.labels,
            "score": np.round(scores.score, 4),
            "anomaly": scores.anomaly.astype(np.int64),
        }
    )
    for name in DETECTORS:
        frame[f"{name}_score"] = np.round(scores.detectors[name], 4)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    out.write(buffer.getvalue())
