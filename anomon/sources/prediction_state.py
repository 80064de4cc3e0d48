"""A tailed prediction log kept coded between collections: each collection costs in
proportion to what changed, not to the lookback.

A file log is read a little at a time (:mod:`.tail`): each collection parses only its
new lines. :class:`LogWindows` keeps the rows of the lookback coded
(:class:`~.prediction_rows.Rows`, one :class:`~.prediction_rows.Codebook` for the
log's life), applies the labels of a labels feed to the rows they belong to (by id),
and recomputes only the windows that changed since the last collection: those with
new rows or new labels, and those that closed or passed ``label_delay`` in between.

What a collection returns stays *unsaved* until :meth:`LogWindows.saved` says it is
stored; until then every later collection returns it again (with what changed since),
so a collection lost to a database outage loses nothing.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from anomon.config import PredictionsSourceConfig
from anomon.model import Sample
from anomon.sources.prediction_rows import (
    ROW_ARRAYS,
    Codebook,
    Rows,
    binary_classes,
    id_texts,
    numeric_values,
    shown_names,
    text_of,
)
from anomon.sources.prediction_windows import References, window_samples

# labels kept for predictions not read yet (the newest), beside those of the rows kept
MAX_UNMATCHED_LABELS = 100_000


_FILL = {"truth": -1, "scores": np.nan, "values": np.nan, "targets": np.nan, "ids": ""}


class _RowBuffer:
    """Coded rows in arrays that grow by doubling, so adding rows and dropping the
    oldest cost in proportion to those rows (the live part is ``[start, end)``)."""

    def __init__(self) -> None:
        self.arrays: dict[str, npt.NDArray[Any]] = {}
        self.start = self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def view(self, codebook: Codebook) -> Rows:
        """The live rows (views of the arrays: writing to them writes here)."""
        live = {name: array[self.start : self.end] for name, array in self.arrays.items()}
        empty = np.empty(0, dtype=np.int64)
        return Rows(
            ts=live.get("ts", empty),
            group=live.get("group", empty),
            group_values=list(codebook.groups),
            truth=live.get("truth", empty),
            predicted=live.get("predicted", empty),
            classes=list(codebook.classes),
            scores=live.get("scores"),
            values=live.get("values"),
            targets=live.get("targets"),
            ids=live.get("ids"),
        )

    def append(self, rows: Rows) -> None:
        count = len(rows)
        self._make_room(count)
        for name in ROW_ARRAYS:
            new = getattr(rows, name)
            if new is None and name in self.arrays:
                new = np.full((count, *self.arrays[name].shape[1:]), _FILL[name])
            if new is None:
                continue
            if name not in self.arrays:  # a column seen for the first time
                size = self.arrays["ts"].shape[0] if self.arrays else self.end + count
                self.arrays[name] = np.full((size, *new.shape[1:]), _FILL.get(name, 0), new.dtype)
            self.arrays[name][self.end : self.end + count] = new
        self.end += count

    def drop_first(self, count: int) -> None:
        self.start += count

    def clear(self) -> None:
        self.arrays, self.start, self.end = {}, 0, 0

    def _make_room(self, count: int) -> None:
        capacity = self.arrays["ts"].shape[0] if self.arrays else 0
        if self.end + count <= capacity:
            return
        live = len(self)
        size = max(2 * (live + count), 1024)
        for name, array in self.arrays.items():
            grown = np.full((size, *array.shape[1:]), _FILL.get(name, 0), array.dtype)
            grown[:live] = array[self.start : self.end]
            self.arrays[name] = grown
        self.start, self.end = 0, live


class LogWindows:
    """The coded rows of one tailed log and the samples of its changed windows."""

    def __init__(self, config: PredictionsSourceConfig) -> None:
        self._config = config
        self._size = int(config.window.total_seconds())
        self._delay = int(config.label_delay.total_seconds())
        self.codebook = Codebook()
        self._rows = _RowBuffer()
        self._first = 0  # the running number of the first row kept
        self._in_window: dict[int, list[npt.NDArray[np.int64]]] = {}  # start -> row numbers
        self._row_of: dict[str, int] = {}  # id -> running number of its (latest) row
        self._labels: dict[str, Any] = {}  # the feed's label of each id with a row kept
        self._waiting: dict[str, Any] = {}  # labels whose prediction is not read yet
        self._references = References()
        # the rows of a fixed reference period older than lookback, kept for it
        self._reference = _RowBuffer()
        self._dirty: set[int] = set()  # window starts with new rows or labels
        self._last_now: int | None = None
        self._unsaved: dict[int, list[Sample]] = {}  # window start -> samples

    def forget(self) -> None:
        """The log was rewritten: its rows are read again from the start (the labels of
        the feed are kept for them)."""
        self._first += len(self._rows)
        self._rows.clear()
        self._in_window.clear()
        self._row_of.clear()
        self._waiting.update(self._labels)
        self._labels.clear()
        self._bound_waiting()
        self._references.clear()
        self._reference = _RowBuffer()  # read again with the rest
        self._unsaved.clear()

    def add_rows(self, rows: Rows) -> list[str]:
        """Keep new coded rows (with the feed's labels of their ids); return problems."""
        if not len(rows):
            return []
        number = self._first + len(self._rows)
        self._rows.append(rows)
        starts = rows.ts // self._size * self._size
        order = np.argsort(starts, kind="stable")
        found, cuts = np.unique(starts[order], return_index=True)
        for start, numbers in zip(found.tolist(), np.split(order + number, cuts[1:]), strict=True):
            self._in_window.setdefault(start, []).append(numbers)
        self._dirty.update(found.tolist())
        if rows.ids is None:
            return []
        names, labels = [], []
        for offset, name in enumerate(rows.ids.tolist()):
            if not name:
                continue
            self._row_of[name] = number + offset
            label = self._waiting.pop(name, None)
            if label is None:
                label = self._labels.get(name)
            else:
                self._labels[name] = label
            if label is not None:
                names.append(name)
                labels.append(label)
        return self._apply(names, labels)

    def kept(self, ids: npt.NDArray[np.object_]) -> npt.NDArray[np.bool_]:
        """Which of ``ids`` (as text) have a row kept: a table read by what changed
        sends such a row again when its label is set."""
        return np.fromiter((bool(name) and name in self._row_of for name in ids), bool, len(ids))

    def add_labels(self, feed: pd.DataFrame) -> list[str]:
        """Apply the new rows of a labels feed (id, label; the latest per id wins) to
        the rows of their ids, or keep them for predictions still to come."""
        config = self._config
        assert config.id is not None
        if not len(feed) or config.id not in feed.columns or config.label not in feed.columns:
            return []
        latest: dict[str, Any] = {}
        labels = feed[config.label].tolist()
        for name, label in zip(id_texts(feed[config.id]).tolist(), labels, strict=True):
            if name and not _missing(label):
                latest.pop(name, None)  # the latest last, for the bound on waiting ones
                latest[name] = label
        names = []
        for name, label in latest.items():
            if name in self._row_of:
                self._labels[name] = label
                names.append(name)
            else:
                self._waiting.pop(name, None)
                self._waiting[name] = label
        self._bound_waiting()
        return self._apply(names, [latest[name] for name in names])

    def samples(self, since: int, now: int) -> list[Sample]:
        """Return the unsaved samples: those of every window in ``[since, now)`` that
        changed since the last call, and those returned before and not saved since."""
        self._drop_before(since)
        size, last = self._size, self._last_now
        changed = set(self._dirty)
        if last is not None and now > last:  # windows that closed, that settled
            changed.update(
                start
                for start in self._in_window
                for lag in (size, size + self._delay)
                if last < start + lag <= now
            )
        computed = sorted(
            start
            for start in changed
            if start >= since and start + size <= now and start in self._in_window
        )
        if computed:
            everything = self._rows.view(self.codebook)
            numbers = [np.concatenate(self._in_window[start]) for start in computed]
            for start, numbers_of in zip(computed, numbers, strict=True):
                self._in_window[start] = [numbers_of]  # one array from now on
            rows = everything.take(np.concatenate(numbers) - self._first)
            found = window_samples(
                rows,
                self._config,
                since=since,
                until=now,
                now=now,
                references=self._references,
                reference_rows=partial(self._with_reference, everything),
            )
            by_window: dict[int, list[Sample]] = {start: [] for start in computed}
            for sample in found:
                by_window[sample.ts].append(sample)
            self._unsaved |= by_window
        self._dirty = {start for start in self._dirty if start + size > now}  # still open
        self._last_now = now
        return [sample for start in sorted(self._unsaved) for sample in self._unsaved[start]]

    def saved(self) -> None:
        """What the last collection returned is stored: return it no more."""
        self._unsaved.clear()

    def _with_reference(self, everything: Rows) -> Rows:
        """The rows references are built from: those kept, after the rows of a fixed
        reference period that lookback dropped (a copy, only while there are any)."""
        if not len(self._reference):
            return everything
        both = _RowBuffer()
        both.append(self._reference.view(self.codebook))
        both.append(everything)
        return both.view(self.codebook)

    def _apply(self, names: list[str], labels: list[Any]) -> list[str]:
        """Set the label of the rows of ``names`` (ids with a row kept)."""
        if not names:
            return []
        config, rows = self._config, self._rows.view(self.codebook)
        at = np.array([self._row_of[name] for name in names], dtype=np.int64) - self._first
        problems: list[str] = []
        if config.task == "regression":  # the target is a number
            targets = numeric_values(pd.Series(labels, dtype=object))
            good = np.isfinite(targets)
            if not good.all():
                bad = int((~good).sum())
                problems.append(f"{bad} label(s) with a {config.label} that is not a number")
            assert rows.targets is not None
            at, targets = at[good], targets[good]
            same = (rows.targets[at] == targets) & (rows.truth[at] == 0)
            rows.targets[at] = targets
            rows.truth[at] = 0
            at = at[~same]
        else:
            texts = [text_of(label) for label in labels]
            allowed = list(config.class_scores) or None
            if config.average == "binary":
                found = Counter(texts)
                allowed = binary_classes(self.codebook.classes, found, config.pos_label)
            known = [allowed is None or text in allowed for text in texts]
            if not all(known):
                outside = len(known) - sum(known)
                problems.append(
                    f"{outside} label(s) with a class outside [{shown_names(allowed or [])}]"
                )
            texts = [text for text, ok in zip(texts, known, strict=True) if ok]
            at = at[np.array(known, dtype=bool)]
            classes = self.codebook.with_classes(sorted(set(texts) - set(self.codebook.classes)))
            code = {name: i for i, name in enumerate(classes)}
            truth = np.array([code[text] for text in texts], dtype=np.int64)
            same = rows.truth[at] == truth
            rows.truth[at] = truth
            at = at[~same]
        # only the windows a label changed in (a label sent again changes nothing)
        self._dirty.update(np.unique(rows.ts[at] // self._size * self._size).tolist())
        return problems

    def _drop_before(self, since: int) -> None:
        """Forget the rows before ``since`` at the start of the log (a row out of order
        further on waits its turn; no window counts it), and their windows."""
        for start in [start for start in self._in_window if start < since]:
            del self._in_window[start]
        self._unsaved = {start: got for start, got in self._unsaved.items() if start >= since}
        rows = self._rows.view(self.codebook)
        cut, step = 0, 4096
        while cut < len(rows):  # in steps, so the cost follows the rows dropped
            newer = rows.ts[cut : cut + step] >= since
            if newer.any():
                cut += int(np.argmax(newer))
                break
            cut += newer.size
        if not cut:
            return
        period = self._config.reference_period
        if period is not None:  # a fixed reference's rows outlive lookback
            gone = rows.ts[:cut]
            keep = np.flatnonzero((gone >= period[0]) & (gone < period[1]))
            if keep.size:
                self._reference.append(rows.take(keep))
        if rows.ids is not None:
            for number, name in enumerate(rows.ids[:cut].tolist(), self._first):
                if name and self._row_of.get(name) == number:
                    del self._row_of[name]
                    self._labels.pop(name, None)
        self._rows.drop_first(cut)
        self._first += cut

    def _bound_waiting(self) -> None:
        extra = len(self._waiting) - MAX_UNMATCHED_LABELS
        if extra > 0:  # the oldest go first
            for name in list(self._waiting)[:extra]:
                del self._waiting[name]


def _missing(label: Any) -> bool:
    if label is None:
        return True
    if isinstance(label, float) and np.isnan(label):
        return True
    return isinstance(label, str) and not label.strip()
