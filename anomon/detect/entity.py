"""Causal, incremental scoring of one entity: one or more aligned metrics.

:class:`EntityDetector` is the time-series runner around the detectors of one entity;
a :class:`~anomon.detect.fleet.Fleet` runs them, many at once in the daemon and one
alone (a :class:`~anomon.detect.fleet.Solo`) in ``anomon replay``, with one pooled
forest either way. Rows come in time order, in batches of any size; each row is scored
from the rows before it only, and the result does not depend on how the rows were
batched (every statistic is an exact trailing order statistic, and the forest is
refitted at fixed row counts).

Per metric: a robust z-score against the trailing median (``zscore``) and against the
median of the same time of day / week over the last few periods (``seasonal``). Per
entity: an IsolationForest over summaries of how rare each metric's deviation is (``forest``),
never claiming more rarity than its training rows can tell (:func:`.forest.rarity_cap`).
A model's quality and volumes measured on samples (accuracy on its window's labelled
rows, counts of rows) are judged by their sampling error instead (:mod:`.sampling`).
Each detector is calibrated to 0-100 against a long trailing reference of its own raw
scores (the rarity of this deviation for this series); the ensemble combines them. The
score is not damped: de-duplicating an episode is the alarm rules' work
(:mod:`anomon.detect.rules`), not the score's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from anomon.config import DetectionConfig, Limit
from anomon.detect.calibration import (
    CALIBRATION_QUANTILES,
    RARITY_QUANTILES,
    calibrate,
    decades_score,
    score_decades,
)
from anomon.detect.forest import FEATURES, summary_features
from anomon.detect.joint import graded, joint_leads, joint_scores, top_two
from anomon.detect.params import DEFAULT_PRIOR_WEIGHT, DetectorParams
from anomon.detect.rolling import (
    ANOMALOUS,
    ORDINARY,
    UNUSUAL,
    Holdout,
    Judge,
    TrailingQuantiles,
    Verdicts,
)
from anomon.detect.rules import CRITICAL_SCORE
from anomon.detect.sampling import (
    MIN_WINDOWS,
    NONE,
    SPREAD_ROWS,
    SamplingModel,
    sample_rows,
    sampled_scores,
    sampling_models,
)
from anomon.detect.seasonal import SEASONS, SeasonalProfile
from anomon.detect.zscore import (
    DIRECTION_WEIGHTS,
    Direction,
    robust_offset,
    robust_scale,
    small_sample_inflation,
    weighted_directional,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Quality = Literal["ok", "too_short", "learning", "stale", "flat"]

# the detectors whose scores the ensemble combines
ENSEMBLE = ("zscore", "seasonal", "forest", "limit")
# every score a row reports: the ensemble's, and what its two most unusual metrics stand
# for together (:mod:`.joint`: it grades an alarm, it does not raise one)
DETECTORS = (*ENSEMBLE, "joint")
LIMIT_SCORE = 100.0  # a broken static limit is as sure as a score can be
# 2: rarity against long references, warm-up, held episodes; 3: levels held;
# 4: the forest on rarities, capped at its training rows; alarms graded by joint deviations;
# 5: an episode's unusual rows held with its alarms, and they do not end it; a held level
# is no point deviation only where the series stepped there from another level it held;
# 6: a binary model's F1 and ROC AUC judged by their sampling error (effective rows);
# 7: a sampled reference's maximum is every row's (chunk maxima), not its kept rows'
DETECTOR_VERSION = "7"
STALE_STEPS = 3  # rows a series may miss before it is stale (and past stale_after)
BASELINE_QUANTILES = (0.25, 0.5, 0.75)
Z_SPAN_FLOOR = 0.5  # calibration floor for z-score detectors, in sigmas
FOREST_SPAN_FLOOR = 0.01  # calibration floor for the forest's score (range ~0.3-0.8)
# A row rarer than its reference's 1 in 10 (one decade: 26.8) is unusual: during an
# episode it is held out of the reference with the alarms and does not count against the
# episode (rolling.Holdout). A noisy fault whose rows straddle the threshold was learnt
# row by row and faded within 250 rows (tests/unit/test_warmup.py).
UNUSUAL_SCORE = float(decades_score(1.0))


def _normal_tail(levels: Sequence[float], *, one_sided: bool) -> tuple[float, ...]:
    """The quantiles at ``levels`` (below 1) of a directional z-score on normal data."""
    normal = NormalDist()
    tail = [level for level in levels if level < 1.0]  # 1.0, the maximum, has no prior
    if one_sided:  # max(z, 0): zero up to the median
        return tuple(max(normal.inv_cdf(level), 0.0) for level in tail)
    return tuple(normal.inv_cdf((1.0 + level) / 2.0) for level in tail)  # |z|


# What a directional z-score's tail quantiles are on ordinary (normal) data: the
# calibration prior while a metric's own history is short.
TWO_SIDED_NORMAL = _normal_tail(RARITY_QUANTILES, one_sided=False)
ONE_SIDED_NORMAL = _normal_tail(RARITY_QUANTILES, one_sided=True)


@dataclass(frozen=True, slots=True)
class Pending:
    """Rows scored by the per-metric detectors, waiting for the forest's raw score."""

    times: IntArray
    detectors: dict[str, FloatArray]
    features: FloatArray
    expected: FloatArray
    metric_scores: FloatArray
    at_once: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Scores:
    """The result for a batch of rows.

    ``score`` 0-100 (what the alarm rules read) and ``anomaly`` (``score >= threshold``)
    per row; ``detectors`` maps each detector to its calibrated 0-100 score per row (the
    largest over the metrics); ``expected`` is the value each metric was expected to
    have and ``metric_scores`` each metric's own score (the largest of its per-metric
    detectors: z-score, seasonal, limit; NaN without a value), both ``(rows, metrics)``;
    ``at_once`` marks where one severe row of a metric may open an incident by itself
    (:func:`_may_open_at_once`: its baseline has spread and the row is a new extreme),
    ``(rows, metrics)`` too.
    """

    score: FloatArray
    anomaly: npt.NDArray[np.bool_]
    detectors: dict[str, FloatArray]
    expected: FloatArray
    metric_scores: FloatArray
    at_once: npt.NDArray[np.bool_]

    def contributors(self, threshold: float) -> npt.NDArray[np.bool_]:
        """Which metrics drive each anomalous row, ``(rows, metrics)``: those whose own
        score reaches ``threshold``, else the one with the largest own score (a row made
        anomalous by the forest, where a threshold is below its cap, or whose series have
        thresholds of their own); and the two most unusual where two together raised the
        row's score (:mod:`.joint`). Normal rows have none."""
        if not self.anomaly.any():  # the usual case of a cycle: nothing to name
            return np.zeros(self.metric_scores.shape, dtype=bool)
        own: npt.NDArray[np.bool_] = np.asarray(self.metric_scores >= threshold)
        pair = joint_leads(self.score, self.detectors["joint"], self.metric_scores)
        own = own | (top_two(self.metric_scores) & pair[:, None])
        rows, metrics = self.metric_scores.shape
        lead = np.zeros((rows, metrics), dtype=bool)
        if rows and metrics:
            known = ~np.isnan(self.metric_scores).all(axis=1)
            filled = np.where(np.isnan(self.metric_scores), -np.inf, self.metric_scores)
            top = np.argmax(filled, axis=1)
            lead[np.arange(rows), top] = known
        found: npt.NDArray[np.bool_] = np.where(np.any(own, axis=1, keepdims=True), own, lead)
        return found & self.anomaly[:, None]


def _window(
    params: DetectorParams,
    window: int,
    quantiles: Sequence[float],
    min_periods: int,
    *,
    single: bool = False,
    compact: bool = False,
    holdout: Holdout | None = None,
    reference_step: int = 0,
) -> TrailingQuantiles:
    step = max(1, min(window // params.refreshes_per_window, params.max_refresh_step))
    if single:
        step = max(step, reference_step or params.reference_step)
    dense = params.reference_dense
    return TrailingQuantiles(
        window=window,
        step=step,
        quantiles=quantiles,
        min_periods=min_periods,
        stride=max(1, -(-(window - dense) // params.reference_sparse)) if single else 1,
        dense=dense if single else 0,
        dtype=np.float32 if single else np.float64,
        compact=compact,
        holdout=holdout,
    )


class _MetricState:
    """What one metric keeps between batches: its trailing windows and seasonal profiles."""

    def __init__(
        self,
        direction: Direction,
        limit: Limit | None,
        params: DetectorParams,
        sampling: SamplingModel | None = None,
    ) -> None:
        config = params.config
        self.direction = direction
        self.limit = limit
        self.sampling = sampling  # judged in units of its sampling error (sampling.py)
        self.valid_rows = 0  # rows with a value, ever
        self.run = LevelRun()  # the latest run of equal values (see holding_level)
        self.spread = float("nan")  # the latest baseline interquartile range
        baseline = config.baseline_window
        # a sampled metric needs a baseline median only: a few windows are enough
        history = config.min_history if sampling is None else MIN_WINDOWS
        self.min_history = history
        # a reference needs no minimum: while it is short its calibration leans on the
        # normal prior (calibrate_z), so a series is scored from its min_history-th row
        calibration = (config.calibration_window, RARITY_QUANTILES, 1)
        # metric values stay in double precision: a level of 1e12 with a spread of 1e3 needs it
        self.values = _window(params, baseline, BASELINE_QUANTILES, history)
        self.residuals = _window(params, baseline, BASELINE_QUANTILES, history, single=True)
        # calibration references: the most memory a series has, rounded to bfloat16
        holdout = Holdout(rows=baseline // params.holdout_share, start=params.holdout_start)
        self.raw = {
            name: _window(params, *calibration, single=True, compact=True, holdout=holdout)
            for name in ("zscore", "seasonal")
        }
        self.threshold = config.threshold
        self.prior_weight = params.prior_weight
        self.profiles = [
            SeasonalProfile(SEASONS[name], periods=config.seasonal_periods)
            for name in config.seasonality
        ]

    def baselines(
        self, times: IntArray, x: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, Levels]:
        """Push new rows into the baselines: ``(quartiles and count of the values, seasonal
        expectation, quartiles and count of the seasonal residuals, whether the row holds
        a level)`` for each row (:func:`holding_level`)."""
        holding, self.run = holding_level(x, self.run)
        q = self.values.push(x)
        self.valid_rows += int(np.count_nonzero(~np.isnan(x)))
        if q.shape[0]:
            self.spread = float(q[-1, 2] - q[-1, 0])
        seasonal_expected = self.seasonal_expected(times, x)
        qr = self.residuals.push(x - seasonal_expected)
        return q, seasonal_expected, qr, holding

    def calibrated(
        self, name: str, offset: FloatArray, scale: FloatArray
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Calibrate deviations against detector ``name``'s reference, then add them to it;
        return the scores and where each deviation went past all of its reference
        (:func:`new_extremes`).

        Each block of rows is judged as it is reached, so that the rows of a sustained
        anomalous episode are kept out of the reference its later rows are judged
        against (:class:`~anomon.detect.rolling.Holdout`).
        """
        scores = np.empty(offset.size)
        beyond = np.empty(offset.size, dtype=bool)
        one_sided = self.direction != "both"

        def judge(rows: slice, reference: FloatArray) -> Verdicts:
            beyond[rows] = new_extremes(offset[rows], reference)
            scores[rows] = calibrate_z(
                offset[rows],
                reference,
                scale[rows],
                one_sided=one_sided,
                prior_weight=self.prior_weight,
            )
            return verdicts(scores[rows], self.threshold)

        self.raw[name].push(offset, judge=judge)
        return scores, beyond

    def seasonal_expected(self, times: IntArray, x: FloatArray) -> FloatArray:
        """The median of this metric at the same time of day / week over past cycles."""
        if not self.profiles:
            return np.full(x.size, np.nan)
        expectations = [profile.expected(times, x) for profile in self.profiles]
        if len(expectations) == 1:
            return expectations[0]
        stacked = np.column_stack(expectations)  # daily and weekly: the one seen more often
        return np.where(np.isnan(stacked[:, 0]), stacked[:, 1], stacked[:, 0])


class EntityDetector:
    """Score the rows of one entity (one or more aligned metrics) as they arrive."""

    def __init__(
        self,
        metrics: Sequence[str],
        config: DetectionConfig | DetectorParams,
        *,
        directions: Sequence[Direction] | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        """Make a detector for ``metrics`` from the config (or params built from it);
        ``directions`` and ``thresholds`` per metric where overrides set them (default:
        :func:`default_direction`, the config's threshold). A metric's threshold only
        decides which rows the joint grade may raise (:func:`.joint.graded`): the rows
        where some metric reaches its own.

        It has no forest of its own: a :class:`~anomon.detect.fleet.Fleet` (a
        :class:`~anomon.detect.fleet.Solo` for one entity alone) scores the features of
        its entities with one pooled forest and hands the scores to :meth:`finish`.
        """
        if not metrics:
            raise ValueError("an entity needs at least one metric")
        self.params = DetectorParams.of(config)
        self.config = self.params.config
        chosen = directions or [default_direction(name, self.config) for name in metrics]
        self.metrics = list(metrics)
        self.thresholds = np.asarray(
            thresholds if thresholds is not None else [self.config.threshold] * len(metrics),
            dtype=np.float64,
        )
        if self.thresholds.shape != (len(metrics),):
            raise ValueError(f"expected {len(metrics)} threshold(s), got {self.thresholds.size}")
        # the scores the joint grade does not carry a row across (joint.graded)
        self.bands = (self.config.alarm.open_at_once, CRITICAL_SCORE)
        self._metrics = [
            _MetricState(direction, self.config.limit_for(name), self.params, sampling)
            for name, direction, sampling in zip(
                metrics, chosen, sampling_models(metrics), strict=True
            )
        ]
        self._rows_seen = 0
        self._first_ts: int | None = None
        self._last_ts: int | None = None

    def quality(self, now: int, *, stale_after: int) -> list[Quality]:
        """Return each metric's data-quality state at ``now`` (epoch seconds).

        ``too_short``: not scored yet (fewer valid rows than ``min_history``);
        ``learning``: scored, with the wider bands of a short history, until
        :meth:`learning_until`; ``stale``: no row for more than ``stale_after`` seconds
        and more than :data:`STALE_STEPS` of the series' mean step;
        ``flat``: the baseline window does not vary at all; else ``ok``.
        """
        states: list[Quality] = []
        # a series that comes hourly (a model's quality windows) is not stale after ten
        # minutes: stale is past stale_after and past STALE_STEPS of its own usual step
        allowed = max(stale_after, STALE_STEPS * self.mean_step())
        learning = self.learning_until()  # once, not once per metric
        for column, state in enumerate(self._metrics):
            if state.valid_rows < state.min_history or np.isnan(state.spread):
                states.append("too_short")
            elif self._last_ts is None or now - self._last_ts > allowed:
                states.append("stale")
            elif state.spread == 0.0:
                states.append("flat")
            elif learning[column] is not None:
                states.append("learning")
            else:
                states.append("ok")
        return states

    def learning_until(self) -> list[int | None]:
        """When each metric will have learnt its history, about (epoch seconds), or None
        if it has (or nothing is known yet).

        Learnt: ``params.learned_rows`` valid rows (its own calibration reference then
        outweighs the normal prior, and its spread is known to within a few percent) and,
        with seasonality, one whole cycle of the shortest season seen (before that a
        pattern cannot be told from a fault); a metric judged by its sampling error,
        :data:`~anomon.detect.sampling.SPREAD_ROWS` windows (its variation between
        windows is then known). The time left is estimated from the mean step between
        the rows seen so far.
        """
        if self._first_ts is None or self._last_ts is None or self._rows_seen < 2:
            return [None] * len(self._metrics)
        step = self.mean_step()
        cycles = [SEASONS[name].cycle for name in self.config.seasonality]
        by_cycle = self._first_ts + min(cycles) if cycles else self._first_ts
        found: list[int | None] = []
        for state in self._metrics:
            needed = self.params.learned_rows if state.sampling is None else SPREAD_ROWS
            missing = max(needed - state.valid_rows, 0)
            until = int(self._last_ts + missing * step)
            if state.sampling is None:
                until = max(by_cycle, until)
            found.append(until if until > self._last_ts else None)
        return found

    @property
    def last_ts(self) -> int | None:
        """The time of the last row scored (epoch seconds), None before the first."""
        return self._last_ts

    def mean_step(self) -> float:
        """The mean time between this entity's rows so far, seconds (0 before two rows)."""
        if self._first_ts is None or self._last_ts is None or self._rows_seen < 2:
            return 0.0
        return (self._last_ts - self._first_ts) / (self._rows_seen - 1)

    def validated(self, ts: npt.ArrayLike, values: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
        """Return the rows as arrays; raise ValueError if they cannot follow the last ones."""
        return self._checked(ts, values)

    def prepare(self, ts: IntArray, values: FloatArray) -> Pending:
        """Step one: score validated new rows with the per-metric detectors."""
        return self._prepare(ts, values)

    def finish(self, pending: Pending, forest_score: FloatArray) -> Scores:
        """Step two: add the pooled forest's calibrated scores, finish the rows."""
        return self._finish(pending, forest_score)

    def _checked(self, ts: npt.ArrayLike, values: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
        times = np.asarray(ts, dtype=np.int64)
        # no rows: (0, metrics) -- reshape cannot infer the width of nothing
        width = -1 if times.size else len(self.metrics)
        data = np.asarray(values, dtype=np.float64).reshape(times.size, width)
        self._validate(times, data)
        return times, data

    def _validate(self, times: IntArray, data: FloatArray) -> None:
        if data.shape[1] != len(self.metrics):
            raise ValueError(f"expected {len(self.metrics)} metric column(s), got {data.shape[1]}")
        if times.size == 0:
            return
        previous = self._last_ts if self._last_ts is not None else times[0]
        backwards = np.flatnonzero(np.diff(times, prepend=previous) < 0)
        if backwards.size:
            raise ValueError(
                f"timestamps must not go backwards: row {int(backwards[0])} of the batch is "
                "older than the row before it"
            )

    def _prepare(self, times: IntArray, data: FloatArray) -> Pending:
        expected, quartiles, at_once = [], [], []
        per_detector: dict[str, list[FloatArray]] = {"zscore": [], "seasonal": [], "limit": []}
        for column, state in enumerate(self._metrics):
            q, seasonal_expected, qr, holding = state.baselines(times, data[:, column])
            quartiles.append(q)
            up, down = DIRECTION_WEIGHTS[state.direction]
            found = deviation_scores(
                data[:, column], q, seasonal_expected, qr, up, down, self.config, holding
            )
            expected.append(found.expected)
            extreme = np.zeros(times.size, dtype=bool)
            for name, offset, scale in (
                ("zscore", found.point_offset, found.point_scale),
                ("seasonal", found.seasonal_offset, found.seasonal_scale),
            ):
                score, beyond = state.calibrated(name, offset, scale)
                per_detector[name].append(score)
                extreme |= beyond
            per_detector["limit"].append(_limit_scores(state.limit, data[:, column]))
            at_once.append(
                _may_open_at_once(found.flat, extreme, state.sampling is not None)
                | (per_detector["limit"][-1] > 0)
            )
        for column, state in enumerate(self._metrics):
            if state.sampling is not None:  # its sampling error judges it, not rarity
                size, other = state.sampling.size, state.sampling.other
                kind = np.full(times.size, state.sampling.kind, dtype=np.int64)
                nothing = np.full(times.size, np.nan)
                baseline = quartiles[column][:, 1]
                n = sample_rows(
                    kind,
                    baseline,
                    data[:, size] if size >= 0 else nothing,
                    data[:, other] if other >= 0 else nothing,
                )
                typical = sample_rows(
                    kind,
                    baseline,
                    quartiles[size][:, 1] if size >= 0 else nothing,
                    quartiles[other][:, 1] if other >= 0 else nothing,
                )
                up, down = DIRECTION_WEIGHTS[state.direction]
                x = data[:, column]
                per_detector["zscore"][column] = sampled_scores(
                    kind, x, quartiles[column], n, typical, up, down
                )
                per_detector["seasonal"][column] = np.zeros(times.size)
        detectors = {name: _largest(cols) for name, cols in per_detector.items()}
        features = summary_features(
            score_decades(np.column_stack(per_detector["zscore"])),
            score_decades(np.column_stack(per_detector["seasonal"])),
        )
        own = _own_scores(
            data,
            np.column_stack(per_detector["zscore"]),
            np.column_stack(per_detector["seasonal"]),
            np.column_stack(per_detector["limit"]),
        )
        return Pending(
            times,
            detectors,
            features,
            np.column_stack(expected),
            own,
            np.column_stack(at_once),
        )

    def _finish(self, pending: Pending, forest_score: FloatArray) -> Scores:
        detectors = dict(pending.detectors)
        detectors["forest"] = (
            forest_score if self.uses("forest") else np.full_like(forest_score, np.nan)
        )
        threshold = self.config.threshold
        joint = joint_scores(pending.metric_scores)
        detectors["joint"] = joint if self.uses("joint") else np.full_like(joint, np.nan)
        ensemble = self._combine(detectors)
        reached = np.any(pending.metric_scores >= self.thresholds, axis=1)
        alarming = reached & (ensemble >= self.thresholds.min())
        combined = graded(ensemble, joint, alarming, self.bands)
        anomaly = combined >= threshold
        self.advance(int(pending.times[0]), int(pending.times[-1]), pending.times.size)
        return Scores(
            combined,
            anomaly,
            detectors,
            pending.expected,
            pending.metric_scores,
            pending.at_once,
        )

    def _combine(self, detectors: dict[str, FloatArray]) -> FloatArray:
        active = [detectors[name] for name in ENSEMBLE if self.uses(name)]
        stacked = np.column_stack(active)
        combined: FloatArray = (
            stacked.max(axis=1) if self.config.ensemble == "max" else stacked.mean(axis=1)
        )
        return combined

    def uses(self, name: str) -> bool:
        """Whether detector ``name`` takes part in this entity's ensemble."""
        if name == "seasonal":
            return bool(self.config.seasonality)
        if name == "forest":
            # its features are summaries over metrics: over one metric they are that
            # metric's own z-score again, which the zscore detector already judges (and
            # the forest's coarser tail gave lone single-row alarms on ordinary rows)
            return self.config.forest.enabled and len(self._metrics) > 1
        if name == "limit":
            return any(state.limit is not None for state in self._metrics)
        if name == "joint":  # a grade of two metrics together, not an ensemble member
            return len(self._metrics) > 1
        return True

    def advance(self, first: int, last: int, rows: int) -> None:
        """Count ``rows`` new rows, from ``first`` to ``last`` (epoch seconds), as scored."""
        self._rows_seen += rows
        if self._first_ts is None:
            self._first_ts = first
        self._last_ts = last

    @property
    def only_metric(self) -> _MetricState:
        """The state of a one-metric entity's metric (the fleet's whole-array path)."""
        if len(self._metrics) != 1:
            raise ValueError(f"this entity has {len(self._metrics)} metrics, not one")
        return self._metrics[0]


@dataclass(frozen=True, slots=True)
class Deviations:
    """How far rows are from their baselines, per row (one series' times or one time of
    many series).

    ``point`` and ``seasonal`` are directional robust z-scores (the larger decides which
    baseline a row's expected value is);
    ``point_offset`` and ``seasonal_offset`` the same deviations in the metric's own unit
    (what the calibrated detectors score) and ``point_scale`` / ``seasonal_scale`` the
    robust spreads between the two; ``expected`` the value each row was expected to have.
    """

    point: FloatArray
    seasonal: FloatArray
    point_offset: FloatArray
    seasonal_offset: FloatArray
    point_scale: FloatArray
    seasonal_scale: FloatArray
    expected: FloatArray
    flat: npt.NDArray[np.bool_]  # the baseline has no spread (its quartiles are equal)


def deviation_scores(
    x: FloatArray,
    q: FloatArray,
    seasonal_expected: FloatArray,
    qr: FloatArray,
    up: FloatArray | float,
    down: FloatArray | float,
    config: DetectionConfig,
    holding: Levels | None = None,
) -> Deviations:
    """The deviations of rows from their point and seasonal baselines.

    ``q`` and ``qr`` are the baseline quartiles of the values and of their seasonal
    residuals; a row that ``holding`` marks (it holds a level: :func:`holding_level`) is
    no seasonal deviation, and no point deviation where it stepped there from another
    level it held (:data:`STEPPED`).
    Elementwise: rows can be one series' times or one time of many series.
    """
    least, relative = config.min_deviation_abs, config.min_deviation_rel
    level, seasonal_level = np.abs(q[:, 1]), np.abs(seasonal_expected)
    offset = robust_offset(x, q[:, 1], level, min_deviation_abs=least, min_deviation_rel=relative)
    seasonal_offset = robust_offset(
        x - seasonal_expected,
        qr[:, 1],
        seasonal_level,
        min_deviation_abs=least,
        min_deviation_rel=relative,
    )
    # spreads from a short history are honestly wider (a young series is not sure yet)
    scale = robust_scale(q[:, 0], q[:, 2], level) * small_sample_inflation(q[:, 3])
    seasonal_scale = robust_scale(qr[:, 0], qr[:, 2], seasonal_level) * small_sample_inflation(
        qr[:, 3]
    )
    if holding is not None and holding.any():
        # a held level follows no daily shape, so it is no seasonal deviation; it is no
        # deviation from the point baseline only where the series stepped there from
        # another level it held (a gauge that moves in steps). A noisy series that holds
        # a value (a throughput at 0, an exporter stuck on one value) is as far out as it is.
        offset = np.where(holding == STEPPED, 0.0, offset)
        seasonal_offset = np.where(holding != MOVING, 0.0, seasonal_offset)
    point_offset = weighted_directional(offset, up, down)
    seasonal_directional = weighted_directional(seasonal_offset, up, down)
    point_score, seasonal_score = point_offset / scale, seasonal_directional / seasonal_scale
    seasonal_wins = np.fmax(seasonal_score, 0.0) > np.fmax(point_score, 0.0)  # NaN is 0
    expected = np.where(seasonal_wins & np.isfinite(seasonal_expected), seasonal_expected, q[:, 1])
    return Deviations(
        point_score,
        seasonal_score,
        point_offset,
        seasonal_directional,
        scale,
        seasonal_scale,
        expected,
        q[:, 2] - q[:, 0] == 0,
    )


# A value that the HOLD_ROWS rows before it had exactly is a level the series holds.
HOLD_ROWS = 20
Levels = npt.NDArray[np.int8]
"""Per row: :data:`MOVING`, :data:`HOLDS` or :data:`STEPPED` (:func:`holding_level`)."""
MOVING, HOLDS, STEPPED = 0, 1, 2
_LEVEL = {level: np.full(1, level, dtype=np.int8) for level in (MOVING, HOLDS, STEPPED)}


@dataclass(frozen=True, slots=True)
class LevelRun:
    """Where a series' latest run of equal values stands: its ``value``, how many rows
    before the latest had it (``held_for``), and how many rows the run before it lasted
    (``before``). NaN, 0 and 0 before any row."""

    value: float = float("nan")
    held_for: int = 0
    before: int = 0


def holding_level(x: FloatArray, run: LevelRun) -> tuple[Levels, LevelRun]:
    """Which rows hold a level, and the state after ``x`` (``run``: the state before).

    A row holds a level (:data:`HOLDS`) when the :data:`HOLD_ROWS` rows before it had
    exactly its value, and it has *stepped* to it (:data:`STEPPED`) when the run before
    that level held one too (it lasted more than ``HOLD_ROWS`` rows). A step-like series
    (a count of processes, a configured size, a gauge that moves in steps) that goes to a
    new value and stays there has changed once, at the step: the step is judged as any
    deviation, and once the series has held the new value for ``HOLD_ROWS`` rows it is at
    a level, not in an excursion, however far that level is from its baseline (whose
    spread was 0, or the gauge's earlier levels: every later row would be rare until the
    window filled with the new level). A noisy series never repeats a value exactly, so
    its deviations are untouched, however long they last; one that starts to (a
    throughput at 0, an exporter stuck on one value) holds a level, but came to it from
    no level: it stays as far from its baseline as it is (:func:`deviation_scores`).
    NaN breaks a run (and is a run of its own).
    """
    n = x.size
    if n == 1:  # the daemon's case, in plain Python
        value = float(x[0])
        if value == run.value:
            run = LevelRun(value, run.held_for + 1, run.before)
        else:
            run = LevelRun(value, 0, run.held_for + 1)
        if run.held_for < HOLD_ROWS:
            return _LEVEL[MOVING], run
        return _LEVEL[STEPPED if run.before > HOLD_ROWS else HOLDS], run
    if n == 0:
        return np.zeros(0, dtype=np.int8), run
    previous = np.empty(n)
    previous[0] = run.value
    previous[1:] = x[:-1]
    same = x == previous  # NaN is never the same
    index = np.arange(n)
    start = np.maximum.accumulate(np.where(same, -1, index))  # where each row's run began
    runs: IntArray = np.where(start < 0, run.held_for + index + 1, index - start)
    # the length of the run before each row's: the state's for a run that began before
    # these rows; else the run that ended where this one began (runs + 1 rows long)
    ended = np.where(start > 0, runs[np.maximum(start - 1, 0)] + 1, run.held_for + 1)
    before = np.where(start < 0, run.before, ended)
    levels: Levels = np.where(
        runs >= HOLD_ROWS, np.where(before > HOLD_ROWS, STEPPED, HOLDS), MOVING
    ).astype(np.int8)
    return levels, LevelRun(float(x[-1]), int(runs[-1]), int(before[-1]))


def calibrate_z(
    offset: FloatArray,
    reference: FloatArray,
    scale: FloatArray,
    *,
    one_sided: npt.NDArray[np.bool_] | bool,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
) -> FloatArray:
    """Calibrate a deviation (in the metric's unit) against the reference of earlier ones.

    While the history is short the reference is shrunk towards a normal distribution of
    the robust spread ``scale`` (as if ``prior_weight`` rows of it had been seen); no
    spacing of the reference counts as less than ``Z_SPAN_FLOOR`` spreads per decade.
    """
    prior = np.where(
        np.asarray(one_sided)[..., None], np.array(ONE_SIDED_NORMAL), np.array(TWO_SIDED_NORMAL)
    )
    return calibrate(
        offset,
        reference,
        span_floor=Z_SPAN_FLOOR * scale,
        levels=RARITY_QUANTILES,
        prior=prior * scale[:, None],
        prior_weight=prior_weight,
    )


def _own_scores(
    x: FloatArray, zscore: FloatArray, seasonal: FloatArray, limit: FloatArray
) -> FloatArray:
    """Each metric's own score: the largest of its detectors; NaN where it has no value."""
    found: FloatArray = np.where(np.isnan(x), np.nan, np.fmax(np.fmax(zscore, seasonal), limit))
    return found


def _largest(columns: list[FloatArray]) -> FloatArray:
    """The row-wise maximum of one or more metric columns; a metric without a value this
    row (NaN: a missing column) is left out, so NaN only where every metric is."""
    if len(columns) == 1:
        return columns[0]
    found: FloatArray = np.fmax.reduce(np.column_stack(columns), axis=1)
    return found


def forest_calibration(params: DetectorParams) -> TrailingQuantiles:
    """The trailing window a forest's raw scores are calibrated against."""
    config = params.config
    # the forest's raw scores come from one model refitted rarely: their distribution
    # moves slowly, so its reference is refreshed four times less often
    return _window(
        params,
        config.calibration_window,
        CALIBRATION_QUANTILES,
        2 * config.min_history,
        single=True,
        reference_step=params.forest_reference_step,
    )


def calibrate_forest(
    raw: FloatArray, history: TrailingQuantiles, *, max_decades: float
) -> FloatArray:
    """Calibrate a forest's raw scores against ``history``, then add them to it; no
    score claims more than ``max_decades`` (:func:`~anomon.detect.forest.rarity_cap`)."""
    score = calibrate(raw, history.push(raw), span_floor=FOREST_SPAN_FLOOR)
    capped: FloatArray = np.minimum(score, decades_score(max_decades))
    return capped


def _limit_scores(limit: Limit | None, x: FloatArray) -> FloatArray:
    """Score 100 where ``x`` breaks its static limit, else 0 (NaN breaks nothing)."""
    if limit is None:
        return np.zeros(x.size)
    low = -np.inf if limit.min is None else limit.min
    high = np.inf if limit.max is None else limit.max
    return np.where((x < low) | (x > high), LIMIT_SCORE, 0.0)


def default_direction(metric: str, config: DetectionConfig) -> Direction:
    """The direction that is bad for ``metric``: quality that drops, cost that rises."""
    if config.direction != "auto":
        return config.direction
    name = metric.lower()
    if any(word in name for word in ("accuracy", "precision", "recall", "f1", "auc", "throughput")):
        return "down"
    if any(word in name for word in ("latency", "loss", "error", "duration")):
        return "up"
    if name in ("mae", "rmse", "mape", "low_margin_share") or name.startswith("drift_"):
        return "up"  # a regression model's errors, a model less sure, drift
    if name in ("r2", "label_coverage"):
        return "down"  # a regression model's fit, a feed of labels that falls behind
    return "both"


def concat_scores(parts: list[Scores], metrics: int) -> Scores:
    """The scores of consecutive parts of a batch, as one."""
    if not parts:
        empty = np.empty(0)
        return Scores(
            empty,
            np.empty(0, dtype=bool),
            dict.fromkeys(DETECTORS, empty),
            np.empty((0, metrics)),
            np.empty((0, metrics)),
            np.empty((0, metrics), dtype=bool),
        )
    return Scores(
        score=np.concatenate([p.score for p in parts]),
        anomaly=np.concatenate([p.anomaly for p in parts]),
        detectors={n: np.concatenate([p.detectors[n] for p in parts]) for n in DETECTORS},
        expected=np.concatenate([p.expected for p in parts]),
        metric_scores=np.concatenate([p.metric_scores for p in parts]),
        at_once=np.concatenate([p.at_once for p in parts]),
    )


@dataclass(frozen=True, slots=True)
class PendingMany:
    """One new row of each of many entities, scored by the per-metric detectors.

    ``times``, ``detectors`` and ``features`` have a row per entity; ``expected``,
    ``metric_scores`` and ``at_once`` one value per metric, entity ``i``'s at
    ``offsets[i]:offsets[i + 1]``.
    """

    times: IntArray
    detectors: dict[str, FloatArray]
    features: FloatArray
    expected: FloatArray
    metric_scores: FloatArray
    at_once: npt.NDArray[np.bool_]
    offsets: IntArray


def prepare_many(detectors: Sequence[EntityDetector], ts: IntArray, x: FloatArray) -> PendingMany:
    """Fleet fast path, step one: one new row for each of many entities.

    ``x`` holds the rows' values flat, entity after entity, each in its metrics' order.
    The same streams and the same elementwise formulas as :meth:`EntityDetector.prepare`,
    with the arithmetic done once over every metric of every entity instead of once per
    entity; the per-entity summaries (largest, features) are taken per group.
    """
    n = len(detectors)
    params = detectors[0].params if detectors else DetectorParams(DetectionConfig())
    sizes = np.array([len(detector.metrics) for detector in detectors], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    states = [state for detector in detectors for state in detector._metrics]
    total = len(states)
    times = np.repeat(ts, sizes)
    q = np.empty((total, len(BASELINE_QUANTILES) + 1))
    qr = np.empty((total, len(BASELINE_QUANTILES) + 1))
    seasonal_expected, up, down = np.empty(total), np.empty(total), np.empty(total)
    holding = np.zeros(total, dtype=np.int8)
    low, high = np.full(total, -np.inf), np.full(total, np.inf)
    for i, state in enumerate(states):
        found_q, found_expected, found_qr, found_holding = state.baselines(
            times[i : i + 1], x[i : i + 1]
        )
        q[i], seasonal_expected[i], qr[i] = found_q[0], found_expected[0], found_qr[0]
        holding[i] = found_holding[0]
        up[i], down[i] = DIRECTION_WEIGHTS[state.direction]
        if state.limit is not None:
            low[i] = -np.inf if state.limit.min is None else state.limit.min
            high[i] = np.inf if state.limit.max is None else state.limit.max
    found = deviation_scores(x, q, seasonal_expected, qr, up, down, params.config, holding)
    one_sided = up + down < 2
    scores = {"limit": np.where((x < low) | (x > high), LIMIT_SCORE, 0.0)}
    extreme = np.zeros(total, dtype=bool)
    for name, offset, scale in (
        ("zscore", found.point_offset, found.point_scale),
        ("seasonal", found.seasonal_offset, found.seasonal_scale),
    ):
        # the statistics each row will get, then one calibration over all metrics,
        # then each row pushed with its verdict (what calibrated() does for one entity)
        streams = [state.raw[name] for state in states]
        reference = np.array([stream.peek() for stream in streams]).reshape(total, -1)
        extreme |= new_extremes(offset, reference)
        scores[name] = calibrate_z(
            offset, reference, scale, one_sided=one_sided, prior_weight=params.prior_weight
        )
        verdict = verdicts(scores[name], params.config.threshold)
        for i, stream in enumerate(streams):
            stream.push(offset[i : i + 1], judge=_known(verdict[i : i + 1]))
    _sampled_override(states, offsets, sizes, x, q, up, down, scores)
    starts = offsets[:-1]
    largest = {
        name: np.fmax.reduceat(values, starts) if n else np.empty(0)
        for name, values in scores.items()
    }
    own = _own_scores(x, scores["zscore"], scores["seasonal"], scores["limit"])
    features = _grouped_features(
        score_decades(scores["zscore"]), score_decades(scores["seasonal"]), sizes, offsets
    )
    sampled = np.array([state.sampling is not None for state in states], dtype=bool)
    at_once = _may_open_at_once(found.flat, extreme, sampled) | (scores["limit"] > 0)
    return PendingMany(ts, largest, features, found.expected, own, at_once, offsets)


def _sampled_override(
    states: Sequence[_MetricState],
    offsets: IntArray,
    sizes: IntArray,
    x: FloatArray,
    q: FloatArray,
    up: FloatArray,
    down: FloatArray,
    scores: dict[str, FloatArray],
) -> None:
    """Put the sampling-error scores of the sampled metrics in place of their calibrated
    ones (what :meth:`EntityDetector._prepare` does for one entity)."""
    kind = np.array([NONE if s.sampling is None else s.sampling.kind for s in states])
    if not kind.any():
        return
    owner_start = np.repeat(offsets[:-1], sizes)

    def column(index: IntArray) -> tuple[FloatArray, FloatArray]:
        """The value and baseline median of each one's column ``index`` (NaN for -1)."""
        where = np.where(index >= 0, owner_start + index, 0)  # its flat index
        return np.where(index >= 0, x[where], np.nan), np.where(index >= 0, q[where, 1], np.nan)

    size, size_typical = column(
        np.array([-1 if s.sampling is None else s.sampling.size for s in states])
    )
    other, other_typical = column(
        np.array([-1 if s.sampling is None else s.sampling.other for s in states])
    )
    n = sample_rows(kind, q[:, 1], size, other)
    typical = sample_rows(kind, q[:, 1], size_typical, other_typical)
    sampled = kind != NONE
    found = sampled_scores(kind, x, q, n, typical, up, down)
    scores["zscore"] = np.where(sampled, found, scores["zscore"])
    scores["seasonal"] = np.where(sampled, 0.0, scores["seasonal"])


def _grouped_features(
    point: FloatArray, seasonal: FloatArray, sizes: IntArray, offsets: IntArray
) -> FloatArray:
    """:func:`summary_features` of each entity's metrics, from flat per-metric scores.

    Entities with the same number of metrics go through it as one matrix, so the
    numbers are those of the entity path exactly (the same reductions in the same order).
    """
    features = np.empty((sizes.size, FEATURES))
    for size in np.unique(sizes).tolist():
        members = np.flatnonzero(sizes == size)
        columns = offsets[members][:, None] + np.arange(size)[None, :]
        features[members] = summary_features(point[columns], seasonal[columns])
    return features


def verdicts(scores: FloatArray, threshold: float) -> Verdicts:
    """What a calibrated score says of a row, for the reference's holdout: anomalous at
    the threshold, unusual from :data:`UNUSUAL_SCORE` (rarer than the reference's 1 in
    10), else ordinary (:class:`~anomon.detect.rolling.Holdout`)."""
    found: Verdicts = np.where(
        scores >= threshold, ANOMALOUS, np.where(scores >= UNUSUAL_SCORE, UNUSUAL, ORDINARY)
    ).astype(np.int8)
    return found


# the column of a z-score detector's reference that holds its maximum
REFERENCE_MAX = RARITY_QUANTILES.index(1.0)


def new_extremes(offset: FloatArray, reference: FloatArray) -> npt.NDArray[np.bool_]:
    """Where a deviation goes past every one its detector's reference holds (or there is
    no reference yet); no deviation (NaN) is none."""
    largest = reference[:, REFERENCE_MAX]
    found: npt.NDArray[np.bool_] = ~np.isnan(offset) & ~(offset <= largest)
    return found


def _may_open_at_once(
    flat: npt.NDArray[np.bool_],
    extreme: npt.NDArray[np.bool_],
    sampled: npt.NDArray[np.bool_] | bool,
) -> npt.NDArray[np.bool_]:
    """Where one severe row of a metric may open an incident by itself (the alarm rules'
    ``open_at_once``): its baseline has spread (one change of a counter that is 0 nearly
    always is no incident) and the row goes past every deviation of its references — a
    size it has shown before, within their ``calibration_window`` rows, needs a second
    abnormal row. A metric judged by its sampling error has no such reference: its spread
    alone decides."""
    found: npt.NDArray[np.bool_] = ~flat & (extreme | sampled)
    return found


def _known(verdict: Verdicts) -> Judge:
    """A judge whose verdict was reached beforehand, on the statistics from ``peek``."""

    def judge(_rows: slice, _stats: FloatArray) -> Verdicts:
        return verdict

    return judge


def finish_many(
    detectors: Sequence[EntityDetector], pending: PendingMany, forest_score: FloatArray
) -> list[Scores]:
    """Fleet fast path, step two: combine and decide, as :meth:`EntityDetector.finish`."""
    n = len(detectors)
    if n == 0:
        return []
    config = detectors[0].config
    scores = dict(pending.detectors)
    active = np.array(
        [[detector.uses(name) for name in ENSEMBLE] for detector in detectors], dtype=bool
    )
    # a detector an entity does not use has no score there (the forest of a one-metric one)
    scores["forest"] = np.where(active[:, ENSEMBLE.index("forest")], forest_score, np.nan)
    stacked = np.column_stack([scores[name] for name in ENSEMBLE])
    if config.ensemble == "max":
        combined = np.where(active, stacked, -np.inf).max(axis=1)
    else:
        combined = np.where(active, stacked, 0.0).sum(axis=1) / active.sum(axis=1)
    for detector, ts in zip(detectors, pending.times.tolist(), strict=True):
        detector.advance(ts, ts, 1)
    bounds = pending.offsets.tolist()
    scores["joint"] = _joint_many(pending)
    thresholds = np.concatenate([detector.thresholds for detector in detectors])
    starts = pending.offsets[:-1]
    reached = np.logical_or.reduceat(pending.metric_scores >= thresholds, starts)
    lowest = np.minimum.reduceat(thresholds, starts)
    bands = detectors[0].bands
    combined = graded(combined, scores["joint"], reached & (combined >= lowest), bands)
    anomaly = combined >= config.threshold
    return [
        Scores(
            combined[i : i + 1],
            anomaly[i : i + 1],
            {name: values[i : i + 1] for name, values in scores.items()},
            pending.expected[None, bounds[i] : bounds[i + 1]],
            pending.metric_scores[None, bounds[i] : bounds[i + 1]],
            pending.at_once[None, bounds[i] : bounds[i + 1]],
        )
        for i in range(n)
    ]


def _joint_many(pending: PendingMany) -> FloatArray:
    """:func:`~anomon.detect.joint.joint_scores` of one row of each of many entities
    (NaN for an entity of one metric): entities of one size as one matrix."""
    sizes = np.diff(pending.offsets)
    found = np.full(sizes.size, np.nan)
    for size in np.unique(sizes[sizes >= 2]).tolist():
        members = np.flatnonzero(sizes == size)
        columns = pending.offsets[members][:, None] + np.arange(size)[None, :]
        found[members] = joint_scores(pending.metric_scores[columns])
    return found
