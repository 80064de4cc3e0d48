"""``anomon replay``: the daemon's detection path over a CSV file.

Input: a header, a ``timestamp`` column (ISO 8601 with ``T`` or a space, with or without
a zone -- none means UTC -- or epoch seconds), then one or more numeric columns. One
column is one series; several are one entity's metrics. Empty cells are missing values.
Output: ``timestamp,score,anomaly`` and one ``<detector>_score`` column per detector,
one row per input row, in input order, with the timestamps exactly as given.

Real files are scored as the daemon would score them if their rows arrived in file
order: the daemon keys samples by time (a repeated time is skipped) and scores only
samples later than the series' watermark (an older one is stored, never scored). So a
row is scored only if its time is later than every row before it; the others (a clock
that steps back, a duplicate time) keep their place in the output with empty score
cells and ``anomaly`` 0, and every scored row is scored from the scored rows before it,
exactly as the same file without those rows. :func:`time_order` says which rows, and
:meth:`TimeOrder.describe` gives the one-line warning the commands print.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import pandas as pd

from anomon.config import DetectionConfig
from anomon.detect.entity import DETECTORS, Scores
from anomon.detect.fleet import Solo
from anomon.errors import DataError

TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Table:
    """A parsed input file: raw timestamp text, epoch seconds and the metric columns."""

    labels: list[str]
    ts: npt.NDArray[np.int64]
    metrics: list[str]
    values: npt.NDArray[np.float64]

    def take(self, rows: npt.NDArray[np.bool_]) -> Table:
        """Return the table of the rows where ``rows`` is true, in their order."""
        labels = [label for label, keep in zip(self.labels, rows.tolist(), strict=True) if keep]
        return Table(labels, self.ts[rows], self.metrics, self.values[rows])


@dataclass(frozen=True, slots=True)
class TimeOrder:
    """Which rows of a table the daemon would score, and why the others are not.

    ``scored``: true where a row's time is later than every time before it (and than
    the ``after`` time it was computed with). ``back`` rows are older than that latest
    time, ``duplicate`` rows equal it. ``first_back``: the first row that steps back and
    the label of the latest time before it; ``first_duplicate``: the first duplicate
    row (None where there is none).
    """

    scored: npt.NDArray[np.bool_]
    back: int
    duplicate: int
    first_back: tuple[int, str] | None
    first_duplicate: int | None

    @property
    def unscored(self) -> int:
        """How many rows are not scored."""
        return self.back + self.duplicate

    def describe(self, name: object, labels: list[str]) -> str | None:
        """One line for ``name``: how many rows are not scored and the first of each kind;
        None when every row is scored.

        ``labels`` are the table's timestamps as given; rows are counted as in the file
        (the header is row 1).
        """
        if not self.unscored:
            return None
        parts = []
        if self.first_back is not None:
            row, latest = self.first_back
            parts.append(
                f"{self.back:,} whose time steps back (first at row {row + 2:,}: "
                f"{labels[row]!r} after {latest!r})"
            )
        if self.first_duplicate is not None:
            row = self.first_duplicate
            parts.append(
                f"{self.duplicate:,} duplicate time(s) (first at row {row + 2:,}: {labels[row]!r})"
            )
        return (
            f"{name}: {self.unscored:,} of {self.scored.size:,} rows not scored, as the daemon "
            f"would not score them: {', '.join(parts)}"
        )


def time_order(table: Table, after: tuple[int, str] | None = None) -> TimeOrder:
    """Mark the rows of ``table`` the daemon would score if they arrived in file order.

    ``after``: the time (epoch seconds) and label of history scored before the table
    (a training file's last scored row), or None.
    """
    ts = table.ts
    start = np.iinfo(np.int64).min if after is None else after[0]
    before = np.maximum.accumulate(np.concatenate([[start], ts]))[:-1]  # latest earlier time
    scored = ts > before
    back, duplicate = ts < before, ts == before
    # which row holds each row's latest earlier time (-1: the ``after`` time)
    holder = np.maximum.accumulate(np.where(scored, np.arange(ts.size), -1))
    holder = np.concatenate([[-1], holder])[:-1]

    def latest(row: int) -> str:
        return table.labels[int(holder[row])] if holder[row] >= 0 else after[1] if after else ""

    first_back = int(np.argmax(back)) if back.any() else None
    return TimeOrder(
        scored=scored,
        back=int(back.sum()),
        duplicate=int(duplicate.sum()),
        first_back=None if first_back is None else (first_back, latest(first_back)),
        first_duplicate=int(np.argmax(duplicate)) if duplicate.any() else None,
    )


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
    """Return epoch seconds, in file order (which rows are scored is :func:`time_order`'s
    business); raise DataError for an unreadable timestamp."""
    return _epoch_seconds(path, column.str.strip())


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
    """Score every row of ``table`` as the daemon would, after warming up on ``train``.

    One result row per input row, in input order; rows :func:`time_order` does not
    score (nor warm up on, in ``train``) get NaN scores and no anomaly.
    """
    detector = Solo(table.metrics, config)  # a replayed file is a fleet of one
    if train is not None:
        if train.metrics != table.metrics:
            raise DataError(
                f"the training file's columns {train.metrics} differ from {table.metrics}"
            )
        history = train.take(time_order(train).scored)
        if history.ts.size:
            detector.update(history.ts, history.values)
    scored = time_order(table, last_time(train)).scored
    return _spread(detector.update(table.ts[scored], table.values[scored]), scored)


def last_time(table: Table | None) -> tuple[int, str] | None:
    """The time and label ``table``'s scored rows end at (a training file's end), or None."""
    if table is None or not table.ts.size:
        return None
    row = int(np.argmax(table.ts))  # the latest time is always a scored row, its first one
    return int(table.ts[row]), table.labels[row]


def _spread(scores: Scores, scored: npt.NDArray[np.bool_]) -> Scores:
    """Put the scored rows' results back among all rows: NaN (False for flags) elsewhere."""
    if scored.all():
        return scores
    rows = int(scored.sum())

    def full(part: Any) -> Any:
        if isinstance(part, dict):
            return {key: full(value) for key, value in part.items()}
        if isinstance(part, np.ndarray) and part.shape[:1] == (rows,):
            empty = np.nan if part.dtype.kind in "fc" else 0
            out = np.full((scored.size, *part.shape[1:]), empty, dtype=part.dtype)
            out[scored] = part
            return out
        return part

    fields = {f.name: full(getattr(scores, f.name)) for f in dataclasses.fields(scores)}
    return dataclasses.replace(scores, **fields)


def write_scores(table: Table, scores: Scores, out: TextIO) -> None:
    """Write the replay output CSV for ``table``: rows not scored have empty score cells."""
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
