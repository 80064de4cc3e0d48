"""A prediction log coded for the metrics: times, classes, scores and groups as arrays.

:func:`normalise` turns a raw frame of log rows (any of CSV, JSONL or SQL) into
:class:`Rows` -- whole numpy arrays, one entry per row -- and names the rows it had to
skip. Values are hashed once (``pd.factorize``) and only the distinct ones are looked
at in Python. A :class:`Codebook` keeps class and group codes the same across the
batches of a log that is read a little at a time, so batches can be joined.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from anomon.config import PredictionsSourceConfig
from anomon.errors import SourceError

EPOCH = "_anomon_epoch"  # the parsed time of a row, epoch seconds (NaN: unreadable)
# the epoch seconds a datetime can hold (years 1 to 9999): a time outside is unreadable
EARLIEST, LATEST = -62_135_596_800, 253_402_300_799


def with_epoch(frame: pd.DataFrame, column: str, problems: list[str]) -> pd.DataFrame:
    """Add the rows' parsed time as column EPOCH; drop (and count) unreadable ones."""
    if column not in frame.columns:
        raise SourceError(f"no column {column!r} (the timestamp); found: {column_names(frame)}")
    times = epoch_seconds(frame[column])
    bad = np.isnan(times)
    if bad.any():
        problems.append(f"{int(bad.sum())} row(s) with an unreadable {column}")
    frame = frame.assign(**{EPOCH: times})
    return frame[~bad] if bad.any() else frame


def epoch_seconds(column: pd.Series[Any]) -> npt.NDArray[np.float64]:
    """Return whole epoch seconds of a column of epoch numbers, datetimes or ISO 8601
    text (no zone means UTC); NaN where a value is none of these or lies outside the
    years 1 to 9999 (``1e400``, a 400-digit number: no time anomon can store)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return _datetime_seconds(column)
    numbers = _numeric(column).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    text = np.isnan(numbers) & column.notna().to_numpy()
    if text.any():
        numbers[text] = _datetime_seconds(
            pd.to_datetime(column[text], utc=True, errors="coerce", format="ISO8601")
        )
    with np.errstate(invalid="ignore"):  # NaN compares False: it stays unreadable
        numbers[~((numbers >= EARLIEST) & (numbers <= LATEST))] = np.nan
    return np.asarray(np.floor(numbers), dtype=np.float64)


_DIGITS = re.compile(r"\s*[+-]?[0-9]+\s*")


def _numeric(column: pd.Series[Any]) -> pd.Series[Any]:
    """``pd.to_numeric`` with ``errors="coerce"``, where an integer too large for a float
    (400 digits, as a Python int or as text) becomes ±inf instead of an OverflowError."""
    try:
        return pd.to_numeric(column, errors="coerce")
    except OverflowError:  # the rare slow path: one value at a time
        values = [_huge_as_float(value) for value in column.to_numpy(dtype=object)]
        return pd.to_numeric(pd.Series(values, index=column.index, dtype=object), errors="coerce")


def numeric_values(column: pd.Series[Any]) -> npt.NDArray[np.float64]:
    """A column's values as floats (NaN where one is not a number)."""
    return _numeric(column).to_numpy(np.float64, na_value=np.nan)


def _huge_as_float(value: Any) -> Any:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return float(value)  # from text never overflows (nor hits the 4,300-digit limit)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _datetime_seconds(column: pd.Series[Any]) -> npt.NDArray[np.float64]:
    if getattr(column.dt, "tz", None) is None:
        column = column.dt.tz_localize("UTC")
    # any resolution (pandas may hold ns or us): NaT gives NaN
    seconds = (column.dt.tz_convert("UTC") - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(np.floor(seconds.to_numpy(dtype=np.float64, na_value=np.nan)))


@dataclass(frozen=True)
class Rows:
    """A prediction log coded for the metrics: one entry per row."""

    ts: npt.NDArray[np.int64]
    group: npt.NDArray[np.int64]  # index into group_values
    group_values: list[tuple[str, ...]]  # the group_by values of each group, as text
    truth: npt.NDArray[np.int64]  # class code, -1 where not labelled yet (regression: 0)
    predicted: npt.NDArray[np.int64]
    classes: list[str]
    scores: npt.NDArray[np.float64] | None
    # regression: the number predicted and the target (NaN until it is known)
    values: npt.NDArray[np.float64] | None = None
    targets: npt.NDArray[np.float64] | None = None
    ids: npt.NDArray[np.object_] | None = None  # each row's id as text ("": none), if read

    def __len__(self) -> int:
        return int(self.ts.size)

    def take(self, index: npt.NDArray[np.int64] | slice) -> Rows:
        """The rows at ``index`` (an array of positions or a slice)."""
        return replace(self, **{name: _pick(getattr(self, name), index) for name in ROW_ARRAYS})


ROW_ARRAYS = ("ts", "group", "truth", "predicted", "scores", "values", "targets", "ids")


def _pick(array: npt.NDArray[Any] | None, index: Any) -> Any:
    return None if array is None else array[index]


@dataclass
class Codebook:
    """Class and group codes that stay the same across the batches of one log: a name
    seen for the first time gets the next code (a batch's new names in sorted order)."""

    classes: list[str] = field(default_factory=list)
    groups: list[tuple[str, ...]] = field(default_factory=list)
    _class_code: dict[str, int] = field(default_factory=dict, repr=False)
    _group_code: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    def with_classes(self, names: list[str]) -> list[str]:
        """Every class so far, ``names`` added; returns a copy of the list."""
        for name in names:
            if name not in self._class_code:
                self._class_code[name] = len(self.classes)
                self.classes.append(name)
        return list(self.classes)

    def recode_groups(
        self, group: npt.NDArray[np.int64], values: list[tuple[str, ...]]
    ) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...]]]:
        """Map a batch's group codes over ``values`` to the book's codes."""
        for value in values:
            if value not in self._group_code:
                self._group_code[value] = len(self.groups)
                self.groups.append(value)
        lookup = np.array([self._group_code[value] for value in values] + [-1], dtype=np.int64)
        return lookup[group], list(self.groups)


def normalise(
    frame: pd.DataFrame, config: PredictionsSourceConfig, codebook: Codebook | None = None
) -> tuple[Rows, list[str]]:
    """Code a raw log frame: times, classes, scores and groups; return the rows kept and
    the problems (rows skipped, counted). Raises SourceError for missing columns. With a
    ``codebook``, codes are the book's (new classes and groups added to it); a frame
    with the id column (``config.id``) gives each row's id as text.

    Values are hashed once (``pd.factorize``) and only the distinct ones are looked at in
    Python, so the cost is a few passes over whole columns.
    """
    problems: list[str] = []
    if not len(frame):
        return _no_rows(codebook), problems
    score_columns = [config.score] if config.score else list(config.class_scores.values())
    needed = [config.prediction, config.label, *score_columns, *config.group_by]
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise SourceError(
            f"no column {', '.join(map(repr, missing))}; found: {column_names(frame)}"
        )
    if EPOCH not in frame.columns:
        frame = with_epoch(frame, config.timestamp, problems)
    if config.task == "regression":
        return _regression_rows(frame, config, problems, codebook), problems
    predicted_codes, predicted_names = factorize_text(frame[config.prediction])
    truth_codes, truth_names = factorize_text(frame[config.label])
    keep = predicted_codes >= 0
    _count(problems, ~keep, f"no {config.prediction}")
    scores = None
    if score_columns:
        scores, valid = _scores(frame, score_columns, multiclass=bool(config.class_scores))
        _count(problems, keep & ~valid, "a score that is not a number in [0, 1]")
        keep &= valid
    if config.average == "binary":
        counts = np.bincount(predicted_codes[predicted_codes >= 0], minlength=len(predicted_names))
        named = Counter(dict(zip(predicted_names, counts.tolist(), strict=True)))
        named.update(truth_names[code] for code in truth_codes[truth_codes >= 0].tolist())
        seen = codebook.classes if codebook is not None else []
        classes = binary_classes(seen, named, config.pos_label)
        outside = sum(rows for name, rows in named.items() if name not in classes)
        if outside * 2 > sum(named.values()):  # no stray value: a log of more classes
            raise SourceError(
                f"average = 'binary' but most of the log's classes are not {config.pos_label!r} "
                f"or one other ({shown_names(sorted(named))}); set average = 'macro' or "
                "'weighted'"
            )
    else:
        classes = _classes(predicted_names, truth_names, config)
    if codebook is not None:
        classes = codebook.with_classes(classes)
    predicted = _recode(predicted_codes, predicted_names, classes)
    truth = _recode(truth_codes, truth_names, classes)
    known = (predicted >= 0) & ((truth >= 0) | (truth_codes < 0))
    _count(problems, keep & ~known, f"a class outside [{shown_names(classes)}]")
    keep &= known
    group, group_values = _groups(frame, config.group_by, keep, codebook)
    return (
        Rows(
            ts=frame[EPOCH].to_numpy()[keep].astype(np.int64),
            group=group,
            group_values=group_values,
            truth=truth[keep],
            predicted=predicted[keep],
            classes=classes,
            scores=None if scores is None else scores[keep],
            ids=_ids(frame, config, keep),
        ),
        problems,
    )


def id_texts(column: pd.Series[Any]) -> npt.NDArray[np.object_]:
    """Each value of an id column as text (7, 7.0 and "7" are one id; "" for none)."""
    codes, names = factorize_text(column)
    return np.array([*names, ""], dtype=object)[codes]


def _ids(
    frame: pd.DataFrame, config: PredictionsSourceConfig, keep: npt.NDArray[np.bool_]
) -> npt.NDArray[np.object_] | None:
    if config.id is None or config.id not in frame.columns:
        return None
    return id_texts(frame[config.id])[keep]


def _regression_rows(
    frame: pd.DataFrame,
    config: PredictionsSourceConfig,
    problems: list[str],
    codebook: Codebook | None,
) -> Rows:
    """A regression log's rows: the prediction a finite number, the target a finite
    number or empty (not known yet); other rows are skipped and counted."""
    values = _numeric(frame[config.prediction]).to_numpy(np.float64, na_value=np.nan)
    raw_target = frame[config.label]
    targets = _numeric(raw_target).to_numpy(np.float64, na_value=np.nan)
    empty = raw_target.isna().to_numpy() | (raw_target.astype(str).str.strip() == "").to_numpy()
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(values) & np.isfinite(frame[EPOCH].to_numpy(np.float64))
    _count(problems, ~np.isfinite(values), f"a {config.prediction} that is not a number")
    bad_target = ~empty & ~np.isfinite(targets)
    _count(problems, keep & bad_target, f"a {config.label} that is not a number")
    keep &= ~bad_target
    group, group_values = _groups(frame, config.group_by, keep, codebook)
    known = np.isfinite(targets[keep])
    return Rows(
        ts=frame[EPOCH].to_numpy()[keep].astype(np.int64),
        group=group,
        group_values=group_values,
        truth=np.where(known, 0, -1).astype(np.int64),
        predicted=np.zeros(int(keep.sum()), dtype=np.int64),
        classes=[],
        scores=None,
        values=values[keep],
        targets=targets[keep],
        ids=_ids(frame, config, keep),
    )


def _scores(
    frame: pd.DataFrame, columns: list[str], *, multiclass: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The score columns as floats (1-D for one column) and which rows have valid ones."""
    table = np.column_stack(
        [_numeric(frame[c]).to_numpy(np.float64, na_value=np.nan) for c in columns]
    )
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(table).all(axis=1) & (table >= 0).all(axis=1) & (table <= 1).all(axis=1)
    if multiclass:
        valid &= table.sum(axis=1) > 0
        return table, valid
    return table[:, 0], valid


def factorize_text(column: pd.Series[Any]) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Code a column of class or group values: codes (-1 for none) and the distinct
    values as text, where 1, 1.0, "1" and True are all "1" and "" is none."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [text_of(value) for value in uniques]


def text_of(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _recode(
    codes: npt.NDArray[np.int64], names: list[str], classes: list[str]
) -> npt.NDArray[np.int64]:
    """Map codes over ``names`` to codes over ``classes`` (-1: none or not a class)."""
    index = {name: i for i, name in enumerate(classes)}
    lookup = np.array([index.get(name, -1) if name else -1 for name in names] + [-1])
    return np.asarray(lookup[codes], dtype=np.int64)  # code -1 picks the final -1


def _classes(predicted: list[str], truth: list[str], config: PredictionsSourceConfig) -> list[str]:
    if config.class_scores:
        return list(config.class_scores)
    return sorted({name for name in [*predicted, *truth] if name})


def binary_classes(known: list[str], found: Counter[str], pos_label: str) -> list[str]:
    """The two classes of a binary model's log, sorted: those ``known`` already once there
    are two, else ``pos_label`` and the most frequent other class among ``found`` (class
    name -> rows; a tie goes to the first name in sorted order). A row of any other class
    is skipped and named ("a class outside [...]"), not taken for a third class: one stray
    value (``2``, ``n/a``) must not stop a binary model's metrics."""
    if len(known) >= 2:
        return sorted(known[:2])
    others = [(-rows, name) for name, rows in found.items() if name and name != pos_label]
    negative = [*(name for name in known if name != pos_label), *(n for _, n in sorted(others))]
    return sorted({pos_label, *negative[:1]})


def _groups(
    frame: pd.DataFrame,
    columns: list[str],
    keep: npt.NDArray[np.bool_],
    codebook: Codebook | None = None,
) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...]]]:
    """One code per distinct combination of the group columns' values (as text): the
    ``codebook``'s, where one is given."""
    combined = np.zeros(int(keep.sum()), dtype=np.int64)
    parts: list[list[str]] = []
    for column in columns:
        codes, names = factorize_text(frame[column])
        text = [*names, ""]  # code -1 (none) is the empty label value
        distinct = sorted(set(text))
        position = {name: i for i, name in enumerate(distinct)}
        lookup = np.array([position[name] for name in text])
        combined = combined * len(distinct) + lookup[codes[keep]]
        parts.append(distinct)
    unique, group = np.unique(combined, return_inverse=True)
    values = []
    for key in unique.tolist():
        row = []
        for distinct in reversed(parts):
            key, at = divmod(key, len(distinct))
            row.append(distinct[at])
        values.append(tuple(reversed(row)))
    if codebook is not None:
        return codebook.recode_groups(np.asarray(group, dtype=np.int64), values)
    return np.asarray(group, dtype=np.int64), values


def _no_rows(codebook: Codebook | None = None) -> Rows:
    empty = np.empty(0, dtype=np.int64)
    if codebook is None:
        return Rows(empty, empty, [], empty, empty, [], None)
    return Rows(empty, empty, list(codebook.groups), empty, empty, list(codebook.classes), None)


def _count(problems: list[str], mask: npt.NDArray[np.bool_], what: str) -> None:
    if mask.any():
        problems.append(f"{int(mask.sum())} row(s) with {what}")


def column_names(frame: pd.DataFrame) -> str:
    return shown_names([str(c) for c in frame.columns if c != EPOCH], most=12)


def shown_names(names: list[str], most: int = 6) -> str:
    """Names read from a log, for a message: the first ``most``, each cut to 24
    characters, control characters escaped (a name could forge a log line)."""
    shown = [repr(name[:24])[1:-1] + ("…" if len(name) > 24 else "") for name in names[:most]]
    return ", ".join(shown) + (" ..." if len(names) > most else "")
