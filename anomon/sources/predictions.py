"""``kind = "predictions"``: model quality per window from a labelled prediction log.

The log is a SQL table (``url`` + ``query``, read through a :class:`~.base.Database`
passed in; the query may use ``:since`` and ``:until``, epoch seconds) or a CSV / JSONL
file that grows (tailed by :mod:`.tail`: only new lines are parsed; a rotated file is
read to its end before the new one; a file truncated, rewritten in place or replaced by
a changed copy is read again from its start, its old rows forgotten). Each row is one
prediction: a time, the predicted class, the true class (empty until it is known),
optionally scores, and the ``group_by`` columns (model, version) that become labels.

Every collection looks at the last ``lookback`` of the log and, for each window of each
group that is over and *ready* — at least ``min_labels`` labelled rows, or older than
``label_delay`` — returns accuracy, precision, recall, f1, log_loss and roc_auc (the
last two with scores; undefined metrics are left out) plus ``predictions`` and
``labelled_rows``, stamped with the window's start. A window is returned again at every
collection while it is within ``lookback``, so labels that arrive late replace its
samples (``replaces_samples``) and a collection lost to a database outage loses
nothing. Rows with an unreadable time, class or score are skipped and counted in the
collection's error.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from anomon.config import PredictionsSourceConfig
from anomon.errors import SourceError, StoreError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import (
    Backfillable,
    OpenDatabase,
    PartialCollection,
    SourceContext,
    split_range,
    summarise,
)
from anomon.sources.quality import (
    REGRESSION_METRICS,
    Labelled,
    classification_metrics,
    drift_metrics,
    estimated_metrics,
    regression_metrics,
)
from anomon.sources.tail import FileTail
from anomon.timeutil import Clock, from_epoch, to_epoch, utcnow

SQL_BACKFILL_CHUNK = timedelta(days=1)
EPOCH = "_anomon_epoch"  # the parsed time of a row, epoch seconds (NaN: unreadable)
FINGERPRINT = 256  # bytes at the start of a tailed file that must not change
METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "log_loss",
    "roc_auc",
    "predicted_positives",
    "actual_positives",
    *REGRESSION_METRICS,
)
MAX_INT_CHARS = 64  # a longer JSON integer is read as a float (a float has 17 digits)
# the epoch seconds a datetime can hold (years 1 to 9999): a time outside is unreadable
EARLIEST, LATEST = -62_135_596_800, 253_402_300_799


class PredictionsSource(Backfillable, config=PredictionsSourceConfig):
    """Compute model quality per window. ``open_database`` (for ``url``) and the clock
    are passed in."""

    replaces_samples = True  # a window is recomputed as its labels arrive

    def __init__(
        self,
        config: PredictionsSourceConfig,
        *,
        open_database: OpenDatabase | None = None,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(config)
        self._config = config
        self._clock = clock
        self._window = int(config.window.total_seconds())
        self._log: _SqlLog | _FileLog
        self._labels: _SqlLog | _FileLog | None = None  # a labels feed of its own, by id
        if config.url is not None:
            if open_database is None:
                raise ValueError("a predictions source with a url needs open_database")
            assert config.query is not None  # the config validates the pair
            db = open_database(config.url, config.timeout)
            self._log = _SqlLog(db, config.query)
            if config.labels_query is not None:
                self._labels = _SqlLog(db, config.labels_query, shared=True)
        else:
            assert config.path is not None
            self._log = _FileLog(config.path, _file_format(config), _columns_read(config))
            if config.labels_path is not None:
                assert config.id is not None
                kind = _file_format(config, config.labels_path)
                columns = [config.id, config.label]
                self._labels = _FileLog(config.labels_path, kind, columns, timed=False)

    @classmethod
    def build(cls, config: PredictionsSourceConfig, context: SourceContext) -> PredictionsSource:
        """Read a table through the store's ``open_database``, or a file."""
        return cls(config, open_database=context.open_database)

    def collect(self, now: datetime) -> list[Sample]:
        """Return the samples of every ready window within ``lookback`` of ``now``."""
        start = self._align(to_epoch(now - self._config.lookback))
        read = self._log.read(start, to_epoch(now))
        if self._labels is not None:
            read = self._joined(read, self._labels.read, start, to_epoch(now))
        return self._samples(read, start, to_epoch(now), now)

    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Whole windows: a day of them per query for SQL, the whole range for a file."""
        start, end = from_epoch(self._align(to_epoch(since))), until
        if isinstance(self._log, _FileLog):
            return [(start, end)]
        step = timedelta(
            seconds=self._window * max(1, SQL_BACKFILL_CHUNK.total_seconds() // self._window)
        )
        return split_range(start, end, step)

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Return the samples of the ready windows inside ``[start, end)``."""
        since, until = to_epoch(start), to_epoch(end)
        read = self._log.read_all(since, until)
        if self._labels is not None:
            read = self._joined(read, self._labels.read_all, since, until)
        return self._samples(read, since, until, self._clock())

    def close(self) -> None:
        """Release the database connections or the open files."""
        self._log.close()
        if self._labels is not None:
            self._labels.close()

    def _joined(self, read: _Read, labels_of: Any, since: int, until: int) -> _Read:
        """The predictions read, with each row's label from the labels feed (its latest
        for the row's id); a feed that cannot be read is a problem of this collection,
        and the predictions go on without its labels."""
        config = self._config
        assert config.id is not None and self._labels is not None
        try:
            feed = labels_of(since, until)
        except SourceError as exc:
            feed = _Read(pd.DataFrame(), [f"labels: {exc}"])
        frame, kept = join_labels(read.frame, feed.frame, config.id, config.label)
        if isinstance(self._labels, _FileLog):
            self._labels.keep(kept)
        problems = read.problems + [f"labels: {p}" for p in feed.problems]
        return _Read(frame, problems)

    def _align(self, ts: int) -> int:
        return ts // self._window * self._window

    def _samples(self, raw: _Read, since: int, until: int, now: datetime) -> list[Sample]:
        rows, problems = normalise(raw.frame, self._config)
        problems = raw.problems + problems
        samples = window_samples(rows, self._config, since=since, until=until, now=to_epoch(now))
        if problems and not samples:
            raise SourceError(f"{self._log.label}: {summarise(problems)}")
        if problems:
            raise PartialCollection(f"{self._log.label}: {summarise(problems)}", samples)
        return samples


@dataclass
class _Read:
    """Rows read from the log and the problems met while reading them."""

    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)


class _SqlLog:
    """A prediction log (or a labels feed) in a SQL table: every read is one query.
    A ``shared`` one reads through another's connection and leaves it open."""

    def __init__(self, db: Any, query: str, *, shared: bool = False) -> None:
        self._db = db
        self._query = query
        self._shared = shared
        self.label = db.label

    def read(self, since: int, until: int) -> _Read:
        return self.read_all(since, until)

    def read_all(self, since: int, until: int) -> _Read:
        try:
            columns, rows = self._db.query(self._query, {"since": since, "until": until})
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        return _Read(pd.DataFrame.from_records(rows, columns=columns))

    def close(self) -> None:
        if not self._shared:
            self._db.close()


class _FileLog:
    """A CSV or JSONL prediction log that grows; only new complete lines are parsed.

    ``columns``: the one every row has a value for (None where missing: the label, or
    the id of a labels feed) first, then the time and the rest. Without ``timed`` (a
    labels feed: id and label, no time) rows are kept by :meth:`keep`, not by age.
    """

    def __init__(self, path: str, kind: str, columns: list[str], *, timed: bool = True) -> None:
        self.label = path
        self._path = path
        self._kind = kind
        self._columns = columns
        self._timed = timed
        self._ts_column = columns[1]
        self._tail = FileTail(path)
        self._pending = b""
        self._header: bytes | None = None
        self._rows = pd.DataFrame()

    def read(self, since: int, until: int) -> _Read:
        """Return the rows kept from earlier reads that are newer than ``since``, plus the
        new ones; rows older than ``since`` are dropped for good."""
        chunks, exists = self._new_text()
        problems: list[str] = []
        frames = [self._rows]
        for header, text in chunks:
            frame, bad = _parse(text, self._kind, header, self._columns)
            problems += bad
            if len(frame):
                timed = _with_epoch(frame, self._ts_column, problems) if self._timed else frame
                frames.append(timed)
        rows = (
            pd.concat([f for f in frames if len(f)], ignore_index=True)
            if any(len(f) for f in frames)
            else pd.DataFrame()
        )
        if len(rows) and self._timed:
            rows = rows[rows[EPOCH].to_numpy() >= since].reset_index(drop=True)
        self._rows = rows
        if not exists:  # what the file held to its end is kept for when it is back
            raise SourceError(f"{self._path}: no such file")
        return _Read(rows, problems)

    def read_all(self, since: int, until: int) -> _Read:
        """Read the whole file afresh (a backfill), without touching the tail's state."""
        try:
            with open(self._path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"{self._path}: cannot read ({exc.strerror})") from None
        header, body = _split_header(data, self._kind)
        frame, problems = _parse(body, self._kind, header, self._columns)
        if len(frame):
            frame = _with_epoch(frame, self._ts_column, problems)
            times = frame[EPOCH].to_numpy()
            frame = frame[(times >= since) & (times < until)].reset_index(drop=True)
        return _Read(frame, problems)

    def keep(self, rows: pd.DataFrame) -> None:
        """Keep only ``rows`` of what was read (a labels feed drops what it no longer
        needs)."""
        self._rows = rows

    def close(self) -> None:
        self._tail.close()

    def _new_text(self) -> tuple[list[tuple[bytes | None, bytes]], bool]:
        """Return the new complete lines with their file's CSV header, oldest first, and
        whether the file exists; forget the rows of a file truncated or rewritten in place."""
        try:
            found = self._tail.read()
        except OSError as exc:
            raise SourceError(f"{self._path}: cannot read ({exc.strerror})") from None
        chunks: list[tuple[bytes | None, bytes]] = []
        for piece in found.pieces:
            if piece.restart:  # a file read from its start has its own header
                self._pending, self._header = b"", None
            if piece.rewritten:  # its old rows are gone
                self._rows = pd.DataFrame()
                chunks.clear()
            lines = self._lines(piece.data, final=piece.ends_file)
            if lines:
                chunks.append((self._header, lines))
        return chunks, found.exists

    def _lines(self, data: bytes, *, final: bool) -> bytes:
        """Return the complete lines after what is pending, keeping a partial last one
        (a file's last line ends with it)."""
        data = self._pending + data
        if self._header is None and self._kind == "csv":
            if b"\n" not in data:
                self._pending = b"" if final else data
                return b""
            line, data = data.split(b"\n", 1)
            self._header = line + b"\n"
        cut = len(data) if final else data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return data[:cut]


def _columns_read(config: PredictionsSourceConfig) -> list[str]:
    """The columns a file log keeps: the label first (the id, with a labels feed: the
    label is then optional), then the time and the others."""
    scores = [config.score] if config.score else list(config.class_scores.values())
    others = [config.timestamp, config.prediction, *scores, *config.group_by]
    if config.id is not None and config.labels_path is not None:
        return [config.id, *others, config.label]
    return [config.label, *others]


def _file_format(config: PredictionsSourceConfig, path: str | None = None) -> str:
    if config.format != "auto":
        return config.format
    return "csv" if str(path or config.path).lower().endswith(".csv") else "jsonl"


MAX_UNMATCHED_LABELS = 100_000  # labels kept for predictions not read yet, newest first


def join_labels(
    frame: pd.DataFrame, labels: pd.DataFrame, id_column: str, label_column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give each prediction row the latest label the feed has for its id (ids compared
    as text: 7, 7.0 and "7" are one id); a row the feed has no label for keeps its own
    (or none). Returns the rows and the labels worth keeping: those of the rows' ids,
    and the newest of the others (their predictions may come later)."""
    if not len(frame):
        return frame, labels
    if id_column not in frame.columns:
        raise SourceError(f"no column {id_column!r} (the id); found: {_columns(frame)}")
    if label_column not in frame.columns:  # the feed is where labels come from
        frame = frame.assign(**{label_column: None})
    if not len(labels) or id_column not in labels.columns:
        return frame, labels
    if label_column not in labels.columns:
        labels = labels.assign(**{label_column: None})
    latest = labels.drop_duplicates(subset=id_column, keep="last")
    feed_codes, feed_ids = _factorize(latest[id_column])
    texts = np.array([*feed_ids, ""], dtype=object)[feed_codes]  # per row ("": no id)
    # in row order, so of two rows whose ids read alike (7 and "7") the later one wins
    mapping = {
        text: label
        for text, label in zip(texts.tolist(), latest[label_column].tolist(), strict=True)
        if text
    }
    codes, ids = _factorize(frame[id_column])
    found = [mapping.get(name) if name else None for name in ids] + [None]
    joined = pd.Series(np.array(found, dtype=object)[codes], index=frame.index)
    own = frame[label_column] if label_column in frame.columns else None
    if own is not None:
        joined = joined.where(joined.notna(), own)
    wanted = set(ids)
    matched = np.array([name in wanted for name in feed_ids] + [False])[feed_codes]
    waiting = ~matched & (feed_codes >= 0)  # a label without an id waits for nothing
    kept = pd.concat([latest[matched], latest[waiting].tail(MAX_UNMATCHED_LABELS)])
    return frame.assign(**{label_column: joined}), kept


def _split_header(data: bytes, kind: str) -> tuple[bytes | None, bytes]:
    if kind != "csv":
        return None, data
    line, _, body = data.partition(b"\n")
    return line + b"\n", body


def _parse(
    text: bytes, kind: str, header: bytes | None, columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Parse complete CSV lines (under ``header``) or JSON lines into a frame."""
    if not text.strip():
        return pd.DataFrame(), []
    if kind == "jsonl":
        return _parse_jsonl(text, columns)
    try:
        return pd.read_csv(io.BytesIO((header or b"") + text)), []
    except (ValueError, pd.errors.ParserError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        return pd.DataFrame(), [f"unreadable csv ({repr(reason)[1:-1]})"]


def _parse_jsonl(text: bytes, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Parse JSON lines, keeping ``columns`` (the first is the label: a key that is left
    out means no label yet). Lines that are not JSON objects are skipped and counted.

    The whole chunk is parsed as one JSON array (one C call); only when that fails are
    the lines parsed one by one to find the bad ones.
    """
    lines = [line for line in text.split(b"\n") if line.strip()]
    try:
        records = _loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, too deep
        records = [_json_or_none(line) for line in lines]
    objects = [record for record in records if isinstance(record, dict)]
    problems = []
    if len(objects) < len(lines):
        problems.append(f"{len(lines) - len(objects)} line(s) that are not JSON objects")
    flat = [record for record in objects if not _nested(record, columns)]
    if len(flat) < len(objects):  # a list or object is no time, class, score or label
        problems.append(f"{len(objects) - len(flat)} line(s) with a list or object as a value")
    objects = flat
    label, *others = columns
    data = {label: [record.get(label) for record in objects]}
    for column in others:  # a key no line has stays missing, so it is reported as such
        if any(column in record for record in objects):
            data[column] = [record.get(column) for record in objects]
    return pd.DataFrame(data), problems


def _nested(record: dict[str, Any], columns: list[str]) -> bool:
    return any(isinstance(record.get(column), list | dict) for column in columns)


def _json_or_none(line: bytes) -> Any:
    try:
        return _loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, too deep
        return None


def _loads(text: bytes) -> Any:
    """``json.loads``, reading an integer of more than ``MAX_INT_CHARS`` characters as a
    float (infinite when too large): json.loads raises ValueError past 4,300 digits, and
    pandas raises OverflowError on a 400-digit int. Raises ValueError for invalid JSON and
    RecursionError for JSON nested too deeply."""
    return json.loads(text, parse_int=_json_int)


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= MAX_INT_CHARS else float(text)


def _with_epoch(frame: pd.DataFrame, column: str, problems: list[str]) -> pd.DataFrame:
    """Add the rows' parsed time as column EPOCH; drop (and count) unreadable ones."""
    if column not in frame.columns:
        raise SourceError(f"no column {column!r} (the timestamp); found: {_columns(frame)}")
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


def normalise(frame: pd.DataFrame, config: PredictionsSourceConfig) -> tuple[Rows, list[str]]:
    """Code a raw log frame: times, classes, scores and groups; return the rows kept and
    the problems (rows skipped, counted). Raises SourceError for missing columns.

    Values are hashed once (``pd.factorize``) and only the distinct ones are looked at in
    Python, so the cost is a few passes over whole columns.
    """
    problems: list[str] = []
    if not len(frame):
        return _no_rows(), problems
    score_columns = [config.score] if config.score else list(config.class_scores.values())
    needed = [config.prediction, config.label, *score_columns, *config.group_by]
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise SourceError(f"no column {', '.join(map(repr, missing))}; found: {_columns(frame)}")
    if EPOCH not in frame.columns:
        frame = _with_epoch(frame, config.timestamp, problems)
    if config.task == "regression":
        return _regression_rows(frame, config, problems), problems
    predicted_codes, predicted_names = _factorize(frame[config.prediction])
    truth_codes, truth_names = _factorize(frame[config.label])
    keep = predicted_codes >= 0
    _count(problems, ~keep, f"no {config.prediction}")
    scores = None
    if score_columns:
        scores, valid = _scores(frame, score_columns, multiclass=bool(config.class_scores))
        _count(problems, keep & ~valid, "a score that is not a number in [0, 1]")
        keep &= valid
    classes = _classes(predicted_names, truth_names, config)
    predicted = _recode(predicted_codes, predicted_names, classes)
    truth = _recode(truth_codes, truth_names, classes)
    known = (predicted >= 0) & ((truth >= 0) | (truth_codes < 0))
    _count(problems, keep & ~known, f"a class outside [{_names(classes)}]")
    keep &= known
    if config.average == "binary" and len(classes) > 2:
        raise SourceError(
            f"average = 'binary' but the log has {len(classes)} classes "
            f"({_names(classes)}); set average = 'macro' or 'weighted'"
        )
    group, group_values = _groups(frame, config.group_by, keep)
    return (
        Rows(
            ts=frame[EPOCH].to_numpy()[keep].astype(np.int64),
            group=group,
            group_values=group_values,
            truth=truth[keep],
            predicted=predicted[keep],
            classes=classes,
            scores=None if scores is None else scores[keep],
        ),
        problems,
    )


def _regression_rows(
    frame: pd.DataFrame, config: PredictionsSourceConfig, problems: list[str]
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
    group, group_values = _groups(frame, config.group_by, keep)
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


def _factorize(column: pd.Series[Any]) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Code a column of class or group values: codes (-1 for none) and the distinct
    values as text, where 1, 1.0, "1" and True are all "1" and "" is none."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [_as_text(value) for value in uniques]


def _as_text(value: Any) -> str:
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
    found = {name for name in [*predicted, *truth] if name}
    if config.average == "binary":
        found.add(config.pos_label)
    return sorted(found)


def _groups(
    frame: pd.DataFrame, columns: list[str], keep: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...]]]:
    """One code per distinct combination of the group columns' values (as text)."""
    combined = np.zeros(int(keep.sum()), dtype=np.int64)
    parts: list[list[str]] = []
    for column in columns:
        codes, names = _factorize(frame[column])
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
    return np.asarray(group, dtype=np.int64), values


def window_samples(
    rows: Rows, config: PredictionsSourceConfig, *, since: int, until: int, now: int
) -> list[Sample]:
    """Return the samples of every ready window of every group in ``[since, until)``."""
    size = int(config.window.total_seconds())
    starts = rows.ts // size * size
    inside = (starts >= since) & (starts + size <= min(until, now))
    if not inside.any():
        return []
    first = int(starts[inside].min())
    slots = (int(starts[inside].max()) - first) // size + 1
    key = rows.group[inside] * slots + (starts[inside] - first) // size
    unique, window = np.unique(key, return_inverse=True)
    group_of, slot_of = np.divmod(unique, slots)
    window_start = first + slot_of * size
    count = np.bincount(window, minlength=unique.size)
    labelled = rows.truth[inside] >= 0
    n_labelled = np.bincount(window[labelled], minlength=unique.size)
    age = now - (window_start + size)
    ready = (n_labelled >= config.min_labels) | (age >= config.label_delay.total_seconds())
    metrics = _metrics(rows, inside, labelled, window, unique.size, config)
    estimates = _estimates(rows, inside, window, unique.size, config, now)
    windows = [(rows.group_values[g], int(t)) for g, t in zip(group_of, window_start, strict=True)]
    return _to_samples(windows, ready, count, n_labelled, metrics, estimates, config)


MAX_REFERENCE_ROWS = 20_000  # labelled rows a calibrator is fitted on (the latest), at most


def _estimates(
    rows: Rows,
    inside: npt.NDArray[np.bool_],
    window: npt.NDArray[np.int64],
    windows: int,
    config: PredictionsSourceConfig,
    now: int,
) -> dict[str, npt.NDArray[np.float64]]:
    """What each window says before its labels (binary classifiers with a ``score``),
    against each group's reference — its rows in windows older than ``label_delay``
    (the latest MAX_REFERENCE_ROWS): the drift of its scores and predicted classes
    (:func:`~anomon.sources.quality.drift_metrics`), and CBPE estimates, the scores
    calibrated on the reference's labelled rows by isotonic regression (not for a group
    with fewer than ``min_labels`` of them or one class only)."""
    scores = rows.scores
    if scores is None or scores.ndim != 1 or config.average != "binary" or not rows.classes:
        return {}
    size = int(config.window.total_seconds())
    positive = rows.classes.index(config.pos_label) if config.pos_label in rows.classes else 0
    settled = rows.ts // size * size + size + config.label_delay.total_seconds() <= now
    predicted_positive = rows.predicted == positive
    probability = np.full(rows.ts.size, np.nan)
    where = np.flatnonzero(inside)
    found: dict[str, npt.NDArray[np.float64]] = {}
    for group in np.unique(rows.group[inside]).tolist():
        mine = rows.group == group
        base = np.flatnonzero(settled & mine)[-MAX_REFERENCE_ROWS:]
        ours = rows.group[where] == group  # this group's rows among the windows'
        if base.size >= config.min_labels:
            drift = drift_metrics(
                window[ours],
                scores[where[ours]],
                predicted_positive[where[ours]],
                scores[base],
                predicted_positive[base],
                windows,
            )
            for name, values in drift.items():
                found[name] = np.fmax(found.get(name, np.full(windows, np.nan)), values)
        pick = np.flatnonzero(settled & mine & (rows.truth >= 0))[-MAX_REFERENCE_ROWS:]
        truth = rows.truth[pick] == positive
        if pick.size < config.min_labels or truth.all() or not truth.any():
            continue
        calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        calibrator.fit(scores[pick], truth.astype(np.float64))
        wanted = where[ours]  # the rows of the windows to estimate
        probability[wanted] = calibrator.predict(scores[wanted])
    known = np.isfinite(probability[where])
    if known.any():
        estimates = estimated_metrics(
            window[known], predicted_positive[where[known]], probability[where[known]], windows
        )
        # a window of a group without a calibrator has no estimate (not 0)
        calibrated = np.bincount(window[known], minlength=windows) > 0
        found |= {name: np.where(calibrated, v, np.nan) for name, v in estimates.items()}
    return found


def _metrics(
    rows: Rows,
    inside: npt.NDArray[np.bool_],
    labelled: npt.NDArray[np.bool_],
    window: npt.NDArray[np.int64],
    windows: int,
    config: PredictionsSourceConfig,
) -> dict[str, npt.NDArray[np.float64]]:
    pick = np.flatnonzero(inside)[labelled]
    if rows.values is not None and rows.targets is not None:  # a regression model
        return regression_metrics(window[labelled], rows.values[pick], rows.targets[pick], windows)
    coded = Labelled(
        window=window[labelled],
        truth=rows.truth[pick],
        predicted=rows.predicted[pick],
        windows=windows,
        classes=len(rows.classes),
        scores=None if rows.scores is None else rows.scores[pick],
    )
    positive = rows.classes.index(config.pos_label) if config.pos_label in rows.classes else 0
    return classification_metrics(coded, average=config.average, positive=positive)


def _to_samples(
    windows: list[tuple[tuple[str, ...], int]],
    ready: npt.NDArray[np.bool_],
    count: npt.NDArray[np.int64],
    n_labelled: npt.NDArray[np.int64],
    metrics: dict[str, npt.NDArray[np.float64]],
    estimates: dict[str, npt.NDArray[np.float64]],
    config: PredictionsSourceConfig,
) -> list[Sample]:
    """One sample per metric of each ready window, and the estimates of every window
    that is over (undefined metrics left out); with both, the gap between the realised
    and the estimated accuracy (``estimation_gap``)."""
    samples: list[Sample] = []
    for i in range(len(windows)):
        values, ts = windows[i]
        labels = {**dict(zip(config.group_by, values, strict=True)), **config.labels}
        entity = config.entity or (values[0] if values else "") or config.name
        info = SeriesInfo(config.name, entity, SeriesKind.QUALITY)
        found = {name: float(values[i]) for name, values in estimates.items()}
        if ready[i]:
            found |= {"predictions": float(count[i]), "labelled_rows": float(n_labelled[i])}
            found |= {name: float(metrics[name][i]) for name in METRICS if name in metrics}
            if "estimated_accuracy" in estimates and "accuracy" in metrics:
                gap = metrics["accuracy"][i] - estimates["estimated_accuracy"][i]
                found["estimation_gap"] = float(gap)
        samples += [
            Sample(SeriesKey.of(name, labels), info, ts, value)
            for name, value in found.items()
            if np.isfinite(value)
        ]
    return samples


def _no_rows() -> Rows:
    empty = np.empty(0, dtype=np.int64)
    return Rows(empty, empty, [], empty, empty, [], None)


def _count(problems: list[str], mask: npt.NDArray[np.bool_], what: str) -> None:
    if mask.any():
        problems.append(f"{int(mask.sum())} row(s) with {what}")


def _columns(frame: pd.DataFrame) -> str:
    return _names([str(c) for c in frame.columns if c != EPOCH], most=12)


def _names(names: list[str], most: int = 6) -> str:
    """Names read from a log, for a message: the first ``most``, each cut to 24
    characters, control characters escaped (a name could forge a log line)."""
    shown = [repr(name[:24])[1:-1] + ("…" if len(name) > 24 else "") for name in names[:most]]
    return ", ".join(shown) + (" ..." if len(names) > most else "")
