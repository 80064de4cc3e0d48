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
``labelled_rows``, stamped with the window's start. Labels that arrive late replace a
window's samples (``replaces_samples``) while it is within ``lookback``: a table is read
whole at every collection and every window returned; a file's rows are kept coded
(:mod:`.prediction_state`) and only the windows that changed are returned, again until
:meth:`PredictionsSource.saved`, so a collection lost to a database outage loses
nothing. Rows with an unreadable time, class or score are skipped and counted in the
collection's error.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from anomon.config import PredictionsSourceConfig
from anomon.errors import SourceError, StoreError
from anomon.model import Sample
from anomon.sources.base import (
    Backfillable,
    OpenDatabase,
    PartialCollection,
    SourceContext,
    split_range,
    summarise,
)
from anomon.sources.prediction_rows import (
    EPOCH,
    Codebook,
    Rows,
    column_names,
    factorize_text,
    id_texts,
    normalise,
    with_epoch,
)
from anomon.sources.prediction_state import MAX_UNMATCHED_LABELS, LogWindows
from anomon.sources.prediction_windows import References, window_samples
from anomon.sources.tail import FileTail
from anomon.timeutil import Clock, from_epoch, to_epoch, utcnow

SQL_BACKFILL_CHUNK = timedelta(days=1)
# a table read by what changed is read again from this long before the last read: a
# row committed a little after its changed-at time is read twice, not missed
CHANGE_OVERLAP = timedelta(minutes=5)
FINGERPRINT = 256  # bytes at the start of a tailed file that must not change
MAX_INT_CHARS = 64  # a longer JSON integer is read as a float (a float has 17 digits)
# a file log is read at most this much a collection (the rest at the next), and a line
# without its newline is kept up to this long: memory stays bounded whatever is written
READ_BUDGET = 64 * 2**20
MAX_LINE_BYTES = 2**20


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
        self._windows: LogWindows | None = None  # a file log's rows, kept coded
        # a table's codes, and its fixed reference period once it is settled (read once)
        self._codebook = Codebook()
        self._period_rows: Rows | None = None
        self._references = References()
        # whether a collection with the reference period's windows was sent / stored
        self._period_sent = self._period_stored = False
        if config.url is not None:
            if open_database is None:
                raise ValueError("a predictions source with a url needs open_database")
            assert config.query is not None  # the config validates the pair
            db = open_database(config.url, config.timeout)
            self._log = _SqlLog(db, config.query)
            if config.labels_query is not None:
                self._labels = _SqlLog(db, config.labels_query, shared=True)
            if config.incremental:  # only what changed is read: the rest is kept here
                self._windows = LogWindows(config)
        else:
            assert config.path is not None
            self._log = _FileLog(config.path, _file_format(config), _columns_read(config))
            self._windows = LogWindows(config)
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
        """Return the samples of every ready window within ``lookback`` of ``now`` (of a
        file: of every window that changed since the last collection was stored); until
        a collection with them is stored, those of a fixed reference period older than
        ``lookback`` too, so that detection's baselines start from the reference."""
        period = self._period_samples(now)
        try:
            found = self._lookback_samples(now)
        except PartialCollection as exc:
            raise PartialCollection(str(exc), period + exc.samples) from None
        return period + found

    def _period_samples(self, now: datetime) -> list[Sample]:
        """The windows of the reference period before ``lookback`` (a backfill of it),
        while no collection with them was stored; a failure is left to the lookback's
        read to report (the period is read again next time)."""
        period = self._config.reference_period
        start = self._align(to_epoch(now - self._config.lookback))
        self._period_sent = False
        if self._period_stored or period is None or period[0] >= start:
            return []
        try:
            found = self.collect_range(from_epoch(period[0]), from_epoch(min(period[1], start)))
        except PartialCollection as exc:
            found = exc.samples
        except SourceError:
            return []
        self._period_sent = True
        return found

    def _lookback_samples(self, now: datetime) -> list[Sample]:
        start = self._align(to_epoch(now - self._config.lookback))
        if self._windows is not None:  # a file, or a table read by what changed
            return self._tailed(start, to_epoch(now))
        # a fixed reference period older than lookback is read too (its windows are not
        # reported again: only what the estimates and drift are measured against); once
        # it is all settled and before lookback, once, and kept
        until = to_epoch(now)
        period = self._config.reference_period
        reference, problems = self._kept_period(start, until)
        first = min(start, period[0]) if period is not None and reference is None else start
        read = self._log.read_all(first, until)
        if self._labels is not None:
            read = self._joined(read, self._labels.read_all, first, until)
        read.problems += problems
        return self._samples(read, start, until, now, reference)

    def saved(self) -> None:
        """The samples of the last collection are stored (a file log returns a window
        again only when it changes; the reference period's windows are not returned
        again)."""
        if self._windows is not None:
            self._windows.saved()
        self._period_stored |= self._period_sent

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

    def _tailed(self, since: int, now: int) -> list[Sample]:
        """A file log's collection, or a table's read by what changed: the new rows (and
        the labels feed's) coded and added to the rows kept, a changed row's label
        applied to its row; the samples of the windows that changed."""
        assert self._windows is not None
        windows, log = self._windows, self._log
        read = self._new_rows(log, since, now)
        if read.rewritten:
            windows.forget()
        frame, config = read.frame, self._config
        if (self._labels is not None or config.incremental) and len(frame):
            if config.id not in frame.columns:
                raise SourceError(f"no column {config.id!r} (the id); found: {column_names(frame)}")
            if config.label not in frame.columns:  # the feed is where labels come from
                frame = frame.assign(**{config.label: None})
        changed, problems = None, list(read.problems)
        if config.incremental and len(frame):  # a row kept already: its label changed
            ids = id_texts(frame[config.id])
            if not ids.all():  # read again, it would count again: never counted
                problems.append(f"{int((ids == '').sum())} row(s) without {config.id!r} skipped")
                frame, ids = frame[ids != ""], ids[ids != ""]
            kept = windows.kept(ids)
            frame, changed = frame[~kept], frame[kept]
        rows, found = normalise(frame, config, windows.codebook)
        problems += found + windows.add_rows(rows)
        if changed is not None and len(changed):
            problems += windows.add_labels(changed)
        if self._labels is not None:
            try:
                feed = self._new_rows(self._labels, since, now)
            except SourceError as exc:
                problems.append(f"labels: {exc}")
            else:
                problems += [f"labels: {p}" for p in feed.problems]
                problems += [f"labels: {p}" for p in windows.add_labels(feed.frame)]
                if not feed.exists:
                    problems.append(f"labels: {self._labels.label}: no such file")
        if not read.exists:  # its rows so far are kept for when it is back
            raise SourceError(f"{log.label}: no such file")
        samples = windows.samples(since, now)
        if problems and not samples and not len(rows):  # nothing of it could be read
            raise SourceError(f"{log.label}: {summarise(problems)}")
        if problems:  # some rows read: a partial collection, windows changed or not
            raise PartialCollection(f"{log.label}: {summarise(problems)}", samples)
        return samples

    def _new_rows(self, log: _SqlLog | _FileLog, since: int, now: int) -> _NewRows:
        """What a log (or labels feed) has new: a file's new lines; a table's rows
        changed since the last read (the first read: from the reference period's start
        if it is older than ``since``)."""
        if isinstance(log, _FileLog):
            return log.read_new()
        period = self._config.reference_period
        first = min(since, period[0]) if period is not None and log.first else since
        return log.read_changed(first, now, now)

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
        frame, _ = join_labels(read.frame, feed.frame, config.id, config.label)
        problems = read.problems + [f"labels: {p}" for p in feed.problems]
        return _Read(frame, problems)

    def _align(self, ts: int) -> int:
        return ts // self._window * self._window

    def _kept_period(self, start: int, now: int) -> tuple[Rows | None, list[str]]:
        """A table's fixed reference period, read once and kept, when it is all before
        ``start`` (the lookback) and settled (its last window ``label_delay`` old): its
        rows and labels change no more, so a collection need not read them again. None
        while it is not (it is read with the lookback, as one range). The problems of
        that read (rows skipped) come with it, once."""
        period = self._config.reference_period
        if period is None or period[1] > start:
            return None, []
        settled = self._align(now - int(self._config.label_delay.total_seconds()))
        if settled < -(-period[1] // self._window) * self._window:
            return None, []
        problems: list[str] = []
        if self._period_rows is None:
            assert isinstance(self._log, _SqlLog)
            read = self._log.read_all(*period)
            if self._labels is not None:  # its labels may come after it ended
                read = self._joined(read, self._labels.read_all, period[0], now)
            self._period_rows, skipped = normalise(read.frame, self._config, self._codebook)
            problems = [f"reference period: {p}" for p in read.problems + skipped]
        codebook = self._codebook  # codes shared with the rows read since
        rows = replace(
            self._period_rows, group_values=list(codebook.groups), classes=list(codebook.classes)
        )
        return rows, problems

    def _samples(
        self, raw: _Read, since: int, until: int, now: datetime, reference: Rows | None = None
    ) -> list[Sample]:
        rows, problems = normalise(raw.frame, self._config, self._codebook)
        problems = raw.problems + problems
        samples = window_samples(
            rows,
            self._config,
            since=since,
            until=until,
            now=to_epoch(now),
            references=None if reference is None else self._references,
            reference_rows=reference,
        )
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


@dataclass
class _NewRows(_Read):
    """The rows of the lines added to a file since it was last read."""

    rewritten: bool = False  # the rows read before are void
    exists: bool = True


class _SqlLog:
    """A prediction log (or a labels feed) in a SQL table: every read is one query.
    A ``shared`` one reads through another's connection and leaves it open."""

    def __init__(self, db: Any, query: str, *, shared: bool = False) -> None:
        self._db = db
        self._query = query
        self._shared = shared
        self.label = db.label
        self._changed: int | None = None  # read_changed's watermark

    def read_all(self, since: int, until: int, *, changed_since: int = 0) -> _Read:
        """The rows of ``[since, until)`` (as the query reads ``:since`` and ``:until``),
        changed at or after ``changed_since`` where it uses ``:changed_since``."""
        params = {"since": since, "until": until, "changed_since": changed_since}
        try:
            columns, rows = self._db.query(self._query, params)
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        return _Read(pd.DataFrame.from_records(rows, columns=columns))

    @property
    def first(self) -> bool:
        """Whether :meth:`read_changed` has not read yet."""
        return self._changed is None

    def read_changed(self, since: int, until: int, now: int) -> _NewRows:
        """The rows changed since the last read (all of them the first time), less
        :data:`CHANGE_OVERLAP`: a row committed a little after the time it says it
        changed is read again rather than missed."""
        read = self.read_all(since, until, changed_since=self._changed or 0)
        self._changed = now - int(CHANGE_OVERLAP.total_seconds())
        return _NewRows(read.frame, read.problems)

    def close(self) -> None:
        if not self._shared:
            self._db.close()


class _FileLog:
    """A CSV or JSONL prediction log that grows; only new complete lines are parsed.

    ``columns``: the one every row has a value for (None where missing: the label, or
    the id of a labels feed) first, then the time and the rest. Without ``timed`` (a
    labels feed: id and label, no time) rows get no parsed time.
    """

    def __init__(self, path: str, kind: str, columns: list[str], *, timed: bool = True) -> None:
        self.label = path
        self._path = path
        self._kind = kind
        self._columns = columns
        self._timed = timed
        self._ts_column = columns[1]
        self._tail = FileTail(path, max_bytes=READ_BUDGET)
        self._pending = b""
        self._header: bytes | None = None
        self._skipping = False  # inside a line past MAX_LINE_BYTES: dropped to its end
        self._overlong = 0  # such lines since the last read_new

    def read_new(self) -> _NewRows:
        """Return the rows of the lines added since the last read (all of them, with
        ``rewritten`` set, when the file was truncated or rewritten in place: the rows
        read before are void)."""
        chunks, exists, rewritten = self._new_text()
        problems: list[str] = []
        if self._overlong:
            problems.append(
                f"{self._overlong} line(s) longer than {MAX_LINE_BYTES // 2**20} MiB skipped"
            )
            self._overlong = 0
        frames = []
        for header, text in chunks:
            frame, bad = _parse(text, self._kind, header, self._columns)
            problems += bad
            if len(frame):
                timed = with_epoch(frame, self._ts_column, problems) if self._timed else frame
                frames.append(timed)
        rows = (
            pd.concat(frames, ignore_index=True)
            if len(frames) > 1
            else (frames[0] if frames else pd.DataFrame())
        )
        return _NewRows(rows, problems, rewritten=rewritten, exists=exists)

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
            frame = with_epoch(frame, self._ts_column, problems)
            times = frame[EPOCH].to_numpy()
            frame = frame[(times >= since) & (times < until)].reset_index(drop=True)
        return _Read(frame, problems)

    def close(self) -> None:
        self._tail.close()

    def _new_text(self) -> tuple[list[tuple[bytes | None, bytes]], bool, bool]:
        """Return the new complete lines with their file's CSV header, oldest first,
        whether the file exists and whether the lines read before are void (the file was
        truncated or rewritten in place)."""
        try:
            found = self._tail.read()
        except OSError as exc:
            raise SourceError(f"{self._path}: cannot read ({exc.strerror})") from None
        chunks: list[tuple[bytes | None, bytes]] = []
        rewritten = False
        for piece in found.pieces:
            if piece.restart:  # a file read from its start has its own header
                self._pending, self._header, self._skipping = b"", None, False
            if piece.rewritten:  # its old rows are gone
                rewritten = True
                chunks.clear()
            lines = self._lines(piece.data, final=piece.ends_file)
            if lines:
                chunks.append((self._header, lines))
        return chunks, found.exists, rewritten

    def _lines(self, data: bytes, *, final: bool) -> bytes:
        """Return the complete lines after what is pending, keeping a partial last one
        (a file's last line ends with it)."""
        if self._skipping:  # the rest of a line too long to keep
            end = data.find(b"\n")
            if end < 0:
                self._skipping = not final
                return b""
            data, self._skipping = data[end + 1 :], False
        data = self._pending + data
        if self._header is None and self._kind == "csv":
            if b"\n" not in data:
                self._pending = b"" if final else self._bounded(data)
                return b""
            line, data = data.split(b"\n", 1)
            self._header = line + b"\n"
        cut = len(data) if final else data.rfind(b"\n") + 1
        self._pending = self._bounded(data[cut:])
        return data[:cut]

    def _bounded(self, partial: bytes) -> bytes:
        """A partial last line to keep, unless it is past MAX_LINE_BYTES: a writer that
        never ends its line would grow it without end (it is dropped to its newline)."""
        if len(partial) <= MAX_LINE_BYTES:
            return partial
        self._skipping, self._overlong = True, self._overlong + 1
        return b""


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
        raise SourceError(f"no column {id_column!r} (the id); found: {column_names(frame)}")
    if label_column not in frame.columns:  # the feed is where labels come from
        frame = frame.assign(**{label_column: None})
    if not len(labels) or id_column not in labels.columns:
        return frame, labels
    if label_column not in labels.columns:
        labels = labels.assign(**{label_column: None})
    latest = labels.drop_duplicates(subset=id_column, keep="last")
    feed_codes, feed_ids = factorize_text(latest[id_column])
    texts = np.array([*feed_ids, ""], dtype=object)[feed_codes]  # per row ("": no id)
    # in row order, so of two rows whose ids read alike (7 and "7") the later one wins
    mapping = {
        text: label
        for text, label in zip(texts.tolist(), latest[label_column].tolist(), strict=True)
        if text
    }
    codes, ids = factorize_text(frame[id_column])
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
    # a line of the wrong number of fields, or a byte that is no UTF-8, spoils that line
    # alone (it threw the whole read away, and the tail had moved past its good lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                io.BytesIO((header or b"") + text), on_bad_lines="warn", encoding_errors="replace"
            )
        except (ValueError, pd.errors.ParserError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
            return pd.DataFrame(), [f"unreadable csv ({repr(reason)[1:-1]})"]
    skipped = sum(str(w.message).count("Skipping line") for w in caught)
    problems = [f"{skipped} line(s) with a wrong number of fields skipped"] if skipped else []
    return frame, problems


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
    # a list or a nested object needs a "[" or more "{" than objects: else none to look for
    nesting = b"[" in text or text.count(b"{") > len(objects)
    flat = [r for r in objects if not _nested(r, columns)] if nesting else objects
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
    """``json.loads``; where it fails (it raises ValueError for an integer past 4,300
    digits), again reading each integer of more than ``MAX_INT_CHARS`` characters as a
    float (infinite when too large). Integers that are merely large stay Python ints
    (the columns' number parsing reads those as ±inf). Raises ValueError for invalid JSON
    and RecursionError for JSON nested too deeply."""
    try:  # the common case, with no call per number
        return json.loads(text)
    except ValueError:  # perhaps an integer past the limit: read it as a float
        return json.loads(text, parse_int=_json_int)


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= MAX_INT_CHARS else float(text)
