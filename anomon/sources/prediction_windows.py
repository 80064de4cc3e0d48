"""The samples of a prediction log's windows: quality, estimates and drift per window.

:func:`window_samples` takes coded :class:`~.prediction_rows.Rows` and returns, for
every (group, window) that is over, the estimates and drift known before labels, and,
once the window is *ready* (``min_labels`` labelled rows, or older than
``label_delay``), its realised quality (:mod:`.quality`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from anomon.config import PredictionsSourceConfig
from anomon.imports import scikit_learn
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.prediction_rows import Rows
from anomon.sources.quality import (
    LABEL_ARRIVAL_METRICS,
    REGRESSION_METRICS,
    Labelled,
    classification_metrics,
    drift_metrics,
    estimated_metrics,
    estimated_multiclass_metrics,
    regression_metrics,
    top_two,
)

if TYPE_CHECKING:  # imported where a calibrator is fitted (anomon.imports says why)
    from sklearn.isotonic import IsotonicRegression

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


def window_samples(
    rows: Rows,
    config: PredictionsSourceConfig,
    *,
    since: int,
    until: int,
    now: int,
    references: References | None = None,
    reference_rows: Rows | Callable[[], Rows] | None = None,
) -> list[Sample]:
    """Return the samples of every window of every group in ``[since, until)`` that is
    over at ``now``. Each group's reference (for estimates and drift) is taken from
    ``reference_rows`` (default: ``rows``; coded with the same codebook; or a function
    that returns them, called only when a reference is built) and kept in
    ``references`` between calls (see :class:`References`)."""
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
    settled = age >= config.label_delay.total_seconds()
    ready = (n_labelled >= config.min_labels) | settled
    metrics = _metrics(rows, inside, labelled, window, unique.size, config)
    estimates = _estimates(
        rows,
        inside,
        window,
        unique.size,
        config,
        now,
        references,
        rows if reference_rows is None else reference_rows,
    )
    histograms = _histograms(rows, inside, window, unique.size)
    windows = [(rows.group_values[g], int(t)) for g, t in zip(group_of, window_start, strict=True)]
    samples = _to_samples(windows, ready, count, n_labelled, metrics, estimates, config)
    samples += _arrival_samples(windows, settled, count, n_labelled, config)
    return samples + _histogram_samples(windows, histograms, config)


SCORE_BINS = 10  # equal-width bins of [0, 1]: the same in every window, so any two compare
HISTOGRAMS = ("score_bin_rows", "predicted_class_rows")


def _histograms(
    rows: Rows, inside: npt.NDArray[np.bool_], window: npt.NDArray[np.int64], windows: int
) -> dict[tuple[str, str, str], npt.NDArray[np.int64]]:
    """Each window's rows per score bin (binary: the positive class's score; multiclass:
    the top class's share) and per predicted class, keyed by (metric, label, value)."""
    found: dict[tuple[str, str, str], npt.NDArray[np.int64]] = {}
    if not rows.classes:  # a regression model
        return found
    if rows.scores is not None:
        scores = rows.scores[inside]
        if scores.ndim == 2:  # the top class's probability, the row's scores normalised
            scores = scores.max(axis=1) / np.maximum(scores.sum(axis=1), 1e-12)
        bins = np.clip((scores * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
        table = np.bincount(window * SCORE_BINS + bins, minlength=windows * SCORE_BINS)
        for b, counts in enumerate(table.reshape(windows, SCORE_BINS).T):
            edges = f"{b / SCORE_BINS:.1f}-{(b + 1) / SCORE_BINS:.1f}"
            found[(HISTOGRAMS[0], "bin", edges)] = counts
    k = len(rows.classes)
    table = np.bincount(window * k + rows.predicted[inside], minlength=windows * k)
    for name, counts in zip(rows.classes, table.reshape(windows, k).T, strict=True):
        found[(HISTOGRAMS[1], "class", name)] = counts
    return found


def _arrival_samples(
    windows: list[tuple[tuple[str, ...], int]],
    settled: npt.NDArray[np.bool_],
    count: npt.NDArray[np.int64],
    n_labelled: npt.NDArray[np.int64],
    config: PredictionsSourceConfig,
) -> list[Sample]:
    """How the labels of each settled window (older than ``label_delay``) arrived:
    ``label_coverage``, the share of its predictions labelled, on ``settled_predictions``
    rows. Reported once a window is settled, never while it fills: a feed of labels that
    stops is a drop of the coverage, not of a count still growing."""
    samples: list[Sample] = []
    coverage_name, size_name = LABEL_ARRIVAL_METRICS
    for i in np.flatnonzero(settled & (count > 0)).tolist():
        values, ts = windows[i]
        labels = {**dict(zip(config.group_by, values, strict=True)), **config.labels}
        entity = config.entity or (values[0] if values else "") or config.name
        info = SeriesInfo(config.name, entity, SeriesKind.QUALITY)
        samples += [
            Sample(SeriesKey.of(coverage_name, labels), info, ts, float(n_labelled[i] / count[i])),
            Sample(SeriesKey.of(size_name, labels), info, ts, float(count[i])),
        ]
    return samples


def _histogram_samples(
    windows: list[tuple[tuple[str, ...], int]],
    histograms: dict[tuple[str, str, str], npt.NDArray[np.int64]],
    config: PredictionsSourceConfig,
) -> list[Sample]:
    """The histograms' samples (kind ``histogram``: stored, never scored), every bin of
    every window that is over, empty ones included."""
    samples: list[Sample] = []
    for i, (values, ts) in enumerate(windows):
        labels = {**dict(zip(config.group_by, values, strict=True)), **config.labels}
        entity = config.entity or (values[0] if values else "") or config.name
        info = SeriesInfo(config.name, entity, SeriesKind.HISTOGRAM)
        samples += [
            Sample(SeriesKey.of(metric, {**labels, label: value}), info, ts, float(counts[i]))
            for (metric, label, value), counts in histograms.items()
        ]
    return samples


MAX_REFERENCE_ROWS = 20_000  # labelled rows a calibrator is fitted on (the latest), at most


@dataclass(frozen=True)
class _Reference:
    """A group's reference: the scores and predicted classes of its latest settled rows
    (None: too few; binary: the positive class's score and whether it was predicted,
    multiclass: the top class's and the class codes), and the calibrator fitted on their
    labelled part (None: too few, or one class only)."""

    scores: npt.NDArray[np.float64] | None
    predicted: npt.NDArray[np.bool_] | npt.NDArray[np.int64] | None
    calibrator: IsotonicRegression | _ClassCalibration | None


class References:
    """Each group's reference, kept while the settled part of the log stays the same: a
    log read a little at a time refits once a window settles, not at every collection
    (labels that come for rows already settled count from the next refit)."""

    def __init__(self) -> None:
        self._settled_until: int | None = None
        self._by_group: dict[tuple[str, ...], _Reference] = {}

    def lookup(self, group: tuple[str, ...], settled_until: int) -> _Reference | None:
        if settled_until != self._settled_until:
            self._settled_until, self._by_group = settled_until, {}
        return self._by_group.get(group)

    def keep(self, group: tuple[str, ...], reference: _Reference) -> None:
        self._by_group[group] = reference

    def clear(self) -> None:
        self._settled_until, self._by_group = None, {}


class _Settled:
    """The settled part of ``rows`` — the rows in windows that ended ``label_delay``
    ago or earlier, and with a fixed reference period (``reference_since`` /
    ``reference_until``) only those logged within it — each group's reference built
    from it, and ``references`` that keep them between calls (until the settled part
    changes: never again once a fixed period is all settled). The rows' mask is found
    once, when a reference is built."""

    def __init__(
        self,
        rows: Rows | Callable[[], Rows],
        config: PredictionsSourceConfig,
        now: int,
        references: References | None,
    ) -> None:
        self._rows = rows
        self._size = int(config.window.total_seconds())
        self.until = int((now - config.label_delay.total_seconds()) // self._size * self._size)
        self._period = config.reference_period
        self._references = references
        self._mask: npt.NDArray[np.bool_] | None = None

    @property
    def all(self) -> Rows:
        """Every row a reference may be built from (made when first needed)."""
        if callable(self._rows):
            self._rows = self._rows()
        return self._rows

    @property
    def version(self) -> int:
        """What the settled part depends on: the settled boundary, up to a fixed period's
        end."""
        return self.until if self._period is None else min(self.until, self._period[1])

    def rows(self) -> npt.NDArray[np.bool_]:
        if self._mask is None:
            ts = self.all.ts
            mask = ts // self._size * self._size + self._size <= self.until
            if self._period is not None:
                mask &= (ts >= self._period[0]) & (ts < self._period[1])
            self._mask = mask
        return self._mask

    def reference(self, group: tuple[str, ...], build: Callable[[], _Reference]) -> _Reference:
        """The group's reference: the one kept, else ``build()`` (then kept)."""
        kept = self._references
        found = kept.lookup(group, self.version) if kept is not None else None
        if found is None:
            found = build()
            if kept is not None:
                kept.keep(group, found)
        return found


def _estimates(
    rows: Rows,
    inside: npt.NDArray[np.bool_],
    window: npt.NDArray[np.int64],
    windows: int,
    config: PredictionsSourceConfig,
    now: int,
    references: References | None,
    reference_rows: Rows | Callable[[], Rows],
) -> dict[str, npt.NDArray[np.float64]]:
    """What each window says before its labels (binary classifiers with a ``score``),
    against each group's reference — its rows in windows older than ``label_delay``
    (the latest MAX_REFERENCE_ROWS): the drift of its scores and predicted classes
    (:func:`~anomon.sources.quality.drift_metrics`), and CBPE estimates, the scores
    calibrated on the reference's labelled rows by isotonic regression (not for a group
    with fewer than ``min_labels`` of them or one class only)."""
    scores = rows.scores
    if scores is None or not rows.classes:
        return {}
    settled = _Settled(reference_rows, config, now, references)
    if scores.ndim == 2:
        return _multiclass_estimates(rows, inside, window, windows, config, settled)
    if config.average != "binary":
        return {}
    positive = rows.classes.index(config.pos_label) if config.pos_label in rows.classes else 0
    predicted_positive = rows.predicted == positive
    probability = np.full(rows.ts.size, np.nan)
    where = np.flatnonzero(inside)
    found: dict[str, npt.NDArray[np.float64]] = {}
    for group in np.unique(rows.group[inside]).tolist():
        reference = settled.reference(
            rows.group_values[group],
            partial(_reference, settled, group, positive, config),
        )
        ours = rows.group[where] == group  # this group's rows among the windows'
        if reference.scores is not None and reference.predicted is not None:
            drift = drift_metrics(
                window[ours],
                scores[where[ours]],
                predicted_positive[where[ours]],
                reference.scores,
                reference.predicted,
                windows,
            )
            _merge_drift(found, drift, windows)
        if reference.calibrator is not None and not isinstance(
            reference.calibrator, _ClassCalibration
        ):
            wanted = where[ours]  # the rows of the windows to estimate
            probability[wanted] = reference.calibrator.predict(scores[wanted])
    known = np.isfinite(probability[where])
    if known.any():
        estimates = estimated_metrics(
            window[known], predicted_positive[where[known]], probability[where[known]], windows
        )
        # a window of a group without a calibrator has no estimate (not 0)
        calibrated = np.bincount(window[known], minlength=windows) > 0
        found |= {name: np.where(calibrated, v, np.nan) for name, v in estimates.items()}
    return found


def _isotonic() -> IsotonicRegression:
    """A new calibrator: a score's probability of its class, monotone, within [0, 1]."""
    calibrator: IsotonicRegression = scikit_learn("isotonic").IsotonicRegression(
        y_min=0.0, y_max=1.0, out_of_bounds="clip"
    )
    return calibrator


class _ClassCalibration:
    """One isotonic calibrator per class, one-vs-rest (None: a class the reference
    lacks or always has: its raw score kept); rows renormalised to sum to 1."""

    def __init__(self, calibrators: list[IsotonicRegression | None]) -> None:
        self.calibrators = calibrators

    def predict(self, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        columns = [
            scores[:, k] if c is None else c.predict(scores[:, k])
            for k, c in enumerate(self.calibrators)
        ]
        table = np.column_stack(columns)
        total = table.sum(axis=1, keepdims=True)
        even = np.full_like(table, 1.0 / table.shape[1])
        return np.where(total > 0, table / np.maximum(total, 1e-12), even)


def _merge_drift(
    found: dict[str, npt.NDArray[np.float64]],
    drift: dict[str, npt.NDArray[np.float64]],
    windows: int,
) -> None:
    """Add one group's drift numbers to ``found`` (each window is one group's: the
    others' are NaN there)."""
    for metric, values in drift.items():
        found[metric] = np.fmax(found.get(metric, np.full(windows, np.nan)), values)


def _multiclass_estimates(
    rows: Rows,
    inside: npt.NDArray[np.bool_],
    window: npt.NDArray[np.int64],
    windows: int,
    config: PredictionsSourceConfig,
    settled: _Settled,
) -> dict[str, npt.NDArray[np.float64]]:
    """CBPE of a multiclass model (``class_scores``): each class's score calibrated on
    the group's settled labelled rows (as for binary models), the window's expected
    confusion matrix from them (:func:`~.quality.estimated_multiclass_metrics`); and
    the drift of its top class's probability and of its predicted-class mix from the
    same settled rows (:func:`~.quality.drift_metrics`)."""
    assert rows.scores is not None
    where = np.flatnonzero(inside)
    probabilities = np.full((rows.ts.size, len(rows.classes)), np.nan)
    top, margin = top_two(rows.scores[where])
    found: dict[str, npt.NDArray[np.float64]] = {}
    for group in np.unique(rows.group[inside]).tolist():
        reference = settled.reference(
            rows.group_values[group],
            partial(_class_reference, settled, group, config),
        )
        ours = rows.group[where] == group
        if reference.scores is not None and reference.predicted is not None:
            drift = drift_metrics(
                window[ours],
                top[ours],
                rows.predicted[where[ours]],
                reference.scores,
                reference.predicted,
                windows,
                classes=len(rows.classes),
                margin=margin[ours],
            )
            _merge_drift(found, drift, windows)
        if isinstance(reference.calibrator, _ClassCalibration):
            wanted = where[ours]
            probabilities[wanted] = reference.calibrator.predict(rows.scores[wanted])
    known = np.isfinite(probabilities[where, 0])
    if not known.any():
        return found
    average = "weighted" if config.average == "weighted" else "macro"
    estimates = estimated_multiclass_metrics(
        window[known],
        rows.predicted[where[known]],
        probabilities[where[known]],
        windows,
        average=average,
    )
    calibrated = np.bincount(window[known], minlength=windows) > 0
    return found | {name: np.where(calibrated, v, np.nan) for name, v in estimates.items()}


def _class_reference(settled: _Settled, group: int, config: PredictionsSourceConfig) -> _Reference:
    """A multiclass group's reference: the top class's probability and the class
    predicted of its latest settled rows, and its class calibration."""
    rows = settled.all
    assert rows.scores is not None
    of_group = settled.rows() & (rows.group == group)
    base = np.flatnonzero(of_group)[-MAX_REFERENCE_ROWS:]
    enough = base.size >= config.min_labels
    scores = top_two(rows.scores[base])[0] if enough else None
    predicted = rows.predicted[base] if enough else None
    pick = np.flatnonzero(of_group & (rows.truth >= 0))[-MAX_REFERENCE_ROWS:]
    if pick.size < config.min_labels:
        return _Reference(scores, predicted, None)
    truth = rows.truth[pick]
    calibrators: list[IsotonicRegression | None] = []
    for k in range(len(rows.classes)):
        mine = truth == k
        if not mine.any() or mine.all():
            calibrators.append(None)
            continue
        calibrator = _isotonic()
        calibrator.fit(rows.scores[pick, k], mine.astype(np.float64))
        calibrators.append(calibrator)
    return _Reference(scores, predicted, _ClassCalibration(calibrators))


def _reference(
    settled: _Settled, group: int, positive: int, config: PredictionsSourceConfig
) -> _Reference:
    """The reference of one group: see :func:`_estimates`."""
    rows = settled.all
    assert rows.scores is not None
    mine = settled.rows() & (rows.group == group)
    base = np.flatnonzero(mine)[-MAX_REFERENCE_ROWS:]
    enough = base.size >= config.min_labels
    pick = np.flatnonzero(mine & (rows.truth >= 0))[-MAX_REFERENCE_ROWS:]
    truth = rows.truth[pick] == positive
    calibrator = None
    if pick.size >= config.min_labels and truth.any() and not truth.all():
        calibrator = _isotonic()
        calibrator.fit(rows.scores[pick], truth.astype(np.float64))
    return _Reference(
        scores=rows.scores[base] if enough else None,
        predicted=rows.predicted[base] == positive if enough else None,
        calibrator=calibrator,
    )


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
