"""The detector core on tables of synthetic cases, and its contracts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.config import DetectionConfig
from anomon.detect import Solo
from anomon.detect.entity import (
    HOLD_ROWS,
    HOLDS,
    MOVING,
    STEPPED,
    LevelRun,
    default_direction,
    holding_level,
)
from anomon.detect.params import DetectorParams
from anomon.detect.rules import AlarmState, Event, apply_rules, repeat_damped

STEP = 300  # five-minute rows
ROWS = 3000
AT = 2500  # where the cases put their anomaly
START = 1_700_000_000 - 1_700_000_000 % 86_400
TS = START + STEP * np.arange(ROWS)
DEFAULTS = DetectionConfig()


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, ROWS)


def daily(amplitude: float = 10.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * (TS % 86_400) / 86_400)


def with_spike(x: np.ndarray, size: float) -> np.ndarray:
    y = x.copy()
    y[AT] += size
    return y


def with_shift(x: np.ndarray, size: float) -> np.ndarray:
    y = x.copy()
    y[AT:] += size
    return y


def score(x: np.ndarray, metric: str = "value", config: DetectionConfig = DEFAULTS) -> np.ndarray:
    return Solo([metric], config).update(TS, x[:, None]).score


CASES: list[tuple[str, Callable[[], np.ndarray], str, bool]] = [
    ("a spike in noise", lambda: with_spike(50 + noise(), 12.0), "value", True),
    ("a dip in noise", lambda: with_spike(50 + noise(), -12.0), "value", True),
    ("a level shift", lambda: with_shift(50 + noise(), 8.0), "value", True),
    ("accuracy that drops", lambda: with_spike(0.9 + 0.002 * noise(), -0.05), "accuracy", True),
    ("accuracy that rises", lambda: with_spike(0.9 + 0.002 * noise(), 0.05), "accuracy", False),
    ("latency that rises", lambda: with_spike(120 + noise(), 30.0), "latency_p99", True),
    ("latency that falls", lambda: with_spike(120 + noise(), -30.0), "latency_p99", False),
    ("a broken daily pattern", lambda: with_spike(daily() + 0.1 * noise(), 5.0), "value", True),
]


@pytest.mark.parametrize(("name", "make", "metric", "flagged"), CASES, ids=[c[0] for c in CASES])
def test_it_flags_what_is_unusual_in_the_bad_direction(
    name: str, make: Callable[[], np.ndarray], metric: str, flagged: bool
) -> None:
    scores = score(make(), metric)
    assert bool(scores[AT] >= DEFAULTS.threshold) is flagged, (name, scores[AT])


QUIET: list[tuple[str, Callable[[], np.ndarray]]] = [
    ("white noise", lambda: 50 + noise(1)),
    ("a flat line", lambda: np.full(ROWS, 45.0)),
    ("a clean daily pattern", lambda: daily() + 0.1 * noise(2)),
    ("tiny wiggles on a quiet series", lambda: 1000 + 1e-9 * noise(3)),
]


DAY = 86_400 // STEP  # rows in one daily cycle


@pytest.mark.parametrize(("name", "make"), QUIET, ids=[c[0] for c in QUIET])
def test_ordinary_series_raise_few_alarms(name: str, make: Callable[[], np.ndarray]) -> None:
    """Once a cycle of the seasonality has been seen. During the first one a daily
    pattern cannot be told from a fault (its first trough is lower than anything seen):
    the series is learning, scored with wider bands, and may alarm."""
    anomalies = score(make())[DAY:] >= DEFAULTS.threshold
    assert anomalies.sum() <= 3, (name, DAY + np.flatnonzero(anomalies)[:10])


def test_rows_without_enough_history_score_zero() -> None:
    scores = score(50 + noise())
    assert np.all(scores[: DEFAULTS.min_history] == 0.0)
    assert np.all((scores >= 0) & (scores <= 100))


def test_missing_values_are_never_anomalies_and_gaps_are_bridged() -> None:
    x = 50 + noise()
    x[AT - 20 : AT] = np.nan
    result = Solo(["value"], DEFAULTS).update(TS, x[:, None])
    assert not result.anomaly[AT - 20 : AT].any()
    assert np.all(result.score[AT - 20 : AT] == 0.0)
    assert result.score[AT + 5] < DEFAULTS.threshold


def test_several_metrics_are_scored_as_one_entity() -> None:
    both = np.column_stack([50 + noise(4), with_spike(10 + noise(5), 15.0)])
    result = Solo(["cpu", "memory"], DEFAULTS).update(TS, both)
    assert result.anomaly[AT]
    assert result.expected.shape == (ROWS, 2)
    assert abs(result.expected[AT, 1] - 10) < 1.0


def test_timestamps_that_go_backwards_are_refused() -> None:
    detector = Solo(["value"], DEFAULTS)
    detector.update(TS[:10], np.ones((10, 1)))
    with pytest.raises(ValueError, match="must not go backwards"):
        detector.update(TS[5:6], np.ones((1, 1)))


def test_directions_default_by_metric_name() -> None:
    assert default_direction("model_accuracy", DEFAULTS) == "down"
    assert default_direction("request_latency_seconds", DEFAULTS) == "up"
    assert default_direction("cpu_percent", DEFAULTS) == "both"
    assert default_direction("accuracy", DetectionConfig(direction="up")) == "up"


SMALL = DetectionConfig.model_validate(
    {
        "baseline_window": 40,
        "calibration_window": 60,
        "min_history": 10,
        "damping": 15,
        "forest": {"min_train": 60, "refit_every": 70, "n_estimators": 5, "train_window": 200},
    }
)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_scores_do_not_depend_on_batching_and_never_look_ahead(seed: int, sizes: list[int]) -> None:
    assert_batching_invariant(seed, sizes)


def assert_batching_invariant(
    seed: int, sizes: list[int], params: DetectionConfig | DetectorParams = SMALL
) -> None:
    """Any batching gives the whole series' scores, and a prefix scores as it did."""
    rng = np.random.default_rng(seed)
    rows = 400
    ts = START + 60 * np.arange(rows)
    x = rng.standard_t(3, size=(rows, 2)).cumsum(axis=0)
    whole = Solo(["a", "b"], params).update(ts, x)
    batched, start, turn = Solo(["a", "b"], params), 0, 0
    parts = []
    while start < rows:
        size = sizes[turn % len(sizes)]
        parts.append(batched.update(ts[start : start + size], x[start : start + size]).score)
        start, turn = start + size, turn + 1
    assert np.array_equal(np.concatenate(parts), whole.score)
    prefix = rng.integers(1, rows)
    again = Solo(["a", "b"], params).update(ts[:prefix], x[:prefix])
    assert np.array_equal(again.score, whole.score[:prefix])


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_scores_against_a_sampled_reference_do_not_depend_on_batching(
    seed: int, sizes: list[int]
) -> None:
    """The same with the calibration references' older rows sampled (small stand-ins for
    the 4,000 dense rows and every n-th older one that long windows keep)."""
    params = DetectorParams(SMALL, reference_dense=20, reference_sparse=12, reference_step=8)
    probe = Solo(["a"], params).detector.only_metric.raw["zscore"]
    assert (probe.stride, probe.dense, probe.step) == (4, 20, 8)
    assert_batching_invariant(seed, sizes, params)


def test_a_long_level_shift_stays_anomalous_while_it_is_new() -> None:
    """The score is not damped and the reference is long: a shift of 10 sigma held for
    3,000 rows keeps the score above the threshold for most of its first 500 rows, on a
    series with a full calibration reference of ordinary rows before it."""
    before, after = DEFAULTS.calibration_window, 3000
    ts = START + STEP * np.arange(before + after)
    x = 50 + np.random.default_rng(7).normal(0.0, 1.0, before + after)
    x[before:] += 10.0
    result = Solo(["value"], DEFAULTS).update(ts, x[:, None])
    assert not result.anomaly[before - 2000 : before].any()
    share = result.anomaly[before : before + 500].mean()
    assert share >= 0.8, share


def test_a_step_series_alarms_at_its_step_then_holds_its_new_level() -> None:
    """A gauge that moves in steps (replicas, a configured size) and goes from 3 to 5:
    the step alarms (its baseline had no spread: a rare move), and once 5 has been held
    for HOLD_ROWS rows it is the series' level, not an excursion -- before, the score
    stayed at 100 until a quarter of the 2,000-row baseline had filled with the new level
    (SMD machine-2-7's m29: 700 ordinary rows at 97.7)."""
    x = np.full(ROWS, 3.0)
    x[AT:] = 5.0
    result = Solo(["replicas"], DEFAULTS).update(TS, x[:, None])
    assert not result.anomaly[:AT].any()
    assert result.anomaly[AT : AT + HOLD_ROWS].all()
    assert not result.anomaly[AT + HOLD_ROWS :].any()
    assert result.expected[AT + HOLD_ROWS, 0] == 3.0  # the baseline has not moved yet


def test_a_noisy_series_keeps_its_deviations_however_long_they_last() -> None:
    """A noisy series never repeats a value exactly: a shift of 10 sigma is still
    anomalous 100 rows in; a noisy series that freezes far from its baseline (an
    exporter stuck on one value) holds a level, but its baseline had spread: it stays
    anomalous (it was silent after HOLD_ROWS rows, like a gauge's step)."""
    shifted = with_shift(50 + noise(3), 10.0)
    assert Solo(["value"], DEFAULTS).update(TS, shifted[:, None]).anomaly[AT + 100]
    stuck = 50 + noise(3)
    stuck[AT:] = 62.5
    frozen = Solo(["value"], DEFAULTS).update(TS, stuck[:, None]).anomaly
    assert frozen[AT:].all()


def test_a_throughput_that_stops_alarms_while_it_is_stopped() -> None:
    """Requests at 50 a second that fall to exactly 0 for 300 rows (a service down): every
    row of the outage is anomalous, the rows after it are not. Exempted as a held level,
    it alarmed for HOLD_ROWS rows and then said nothing while the service was down."""
    ts = START + 60 * np.arange(8000)
    x = 50 + 2 * np.random.default_rng(0).normal(0.0, 1.0, 8000)
    x[6000:6300] = 0.0
    result = Solo(["requests_per_second"], DEFAULTS).update(ts, x[:, None])
    assert not result.anomaly[1000:6000].any()
    assert result.anomaly[6000:6300].all()
    assert not result.anomaly[6300:].any()


def levels_row_by_row(x: np.ndarray) -> list[int]:
    """The rule in plain words: a row holds a level when the HOLD_ROWS rows before it had
    its value (NaN never equals), and has stepped there when the run before lasted more
    than HOLD_ROWS rows."""
    runs: list[int] = []  # the length of each run of equal values so far
    out = []
    for i, value in enumerate(x):
        if i and value == x[i - 1]:
            runs[-1] += 1
        else:
            runs.append(1)
        held = runs[-1] - 1 >= HOLD_ROWS
        before = runs[-2] if len(runs) > 1 else 1  # nothing before the first row: one row
        out.append((STEPPED if before > HOLD_ROWS else HOLDS) if held else MOVING)
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_holding_a_level_is_the_same_in_any_batching(seed: int, sizes: list[int]) -> None:
    """Runs carry across batches; NaN breaks a run; a level reached from another held
    level is a step, one reached from moving values is not."""
    rng = np.random.default_rng(seed)
    x = rng.choice([1.0, 2.0, np.nan], size=300, p=[0.9, 0.08, 0.02])
    x[99], x[100:160] = 1.0, 2.0  # a run long enough to hold, from row 100
    x[160:190] = rng.normal(size=30)  # moving values, then a level reached from them
    x[190:230] = 3.0
    whole, _ = holding_level(x, LevelRun())
    assert whole.tolist() == levels_row_by_row(x)
    parts, state, start, turn = [], LevelRun(), 0, 0
    while start < x.size:
        size = sizes[turn % len(sizes)]
        held, state = holding_level(x[start : start + size], state)
        parts.append(held)
        start, turn = start + size, turn + 1
    assert np.array_equal(np.concatenate(parts), whole)
    assert (whole[100 + HOLD_ROWS : 160] != MOVING).all() and not whole[100 : 100 + HOLD_ROWS].any()
    assert (whole[190 + HOLD_ROWS : 230] == HOLDS).all()
    assert not whole[np.isnan(x)].any()


def test_a_gauge_that_steps_twice_in_its_window_alarms_at_each_step() -> None:
    """Replicas 3, then 5, then 7 within one baseline window: each step alarms for
    HOLD_ROWS rows and is then the gauge's level (the second step's baseline has the
    gauge's own two levels in it, so it has spread: a level is a step because the gauge
    held the one before, not because its baseline was flat)."""
    x = np.full(9000, 3.0)
    x[5000:], x[5600:] = 5.0, 7.0
    anomaly = (
        Solo(["replicas"], DEFAULTS).update(START + 60 * np.arange(x.size), x[:, None]).anomaly
    )
    assert np.flatnonzero(anomaly).tolist() == [*range(5000, 5020), *range(5600, 5620)]


def test_static_limits_flow_into_the_same_scores() -> None:
    config = DetectionConfig.model_validate({"limits": [{"metric": "acc*", "min": 0.8}]})
    x = 0.9 + 0.001 * noise()
    x[AT] = 0.79  # barely below the bound, not unusual for the learned detectors at all
    x[AT - 1] = 0.899
    result = Solo(["accuracy", "latency"], config).update(TS, np.column_stack([x, 100 + noise()]))
    assert result.detectors["limit"][AT] == 100.0
    assert result.anomaly[AT]
    assert result.detectors["limit"][:AT].max() == 0.0
    assert config.limit_for("latency") is None


def test_a_limit_needs_a_bound_in_order() -> None:
    with pytest.raises(ValueError, match="needs min, max or both"):
        DetectionConfig.model_validate({"limits": [{"metric": "x"}]})
    with pytest.raises(ValueError, match=r"min 2\.0 is above max 1\.0"):
        DetectionConfig.model_validate({"limits": [{"metric": "x", "min": 2, "max": 1}]})


def test_data_quality_states() -> None:
    detector = Solo(["short", "flat", "busy"], DEFAULTS)
    rows = 300
    values = np.column_stack(
        [np.r_[np.full(rows - 10, np.nan), np.ones(10)], np.full(rows, 3.0), 50 + noise()[:rows]]
    )
    detector.update(TS[:rows], values)
    now = int(TS[rows - 1])
    assert detector.detector.quality(now, stale_after=900) == ["too_short", "flat", "learning"]
    assert detector.detector.quality(now + 901, stale_after=900)[1:] == ["stale", "stale"]
    # 300 rows of five minutes: a day has been seen; 100 more rows make 400 (params.learned_rows)
    short, _flat, busy = detector.detector.learning_until()
    assert busy == now + (detector.detector.params.learned_rows - rows) * STEP
    assert short is not None and short > busy  # 10 valid rows: far from learnt
    detector.update(TS[rows : rows + 100], np.column_stack([np.ones(100)] * 3))
    assert detector.detector.learning_until()[2] is None
    assert detector.detector.quality(int(TS[rows + 99]), stale_after=900)[2] == "ok"


def test_an_hourly_series_is_not_stale_between_its_rows() -> None:
    """Issue 14, point 10: predictions' hourly windows were called stale ten minutes
    after each row. Stale is past stale_after and past three of the series' own steps."""
    hourly = START + 3600 * np.arange(100)
    detector = Solo(["accuracy"], DEFAULTS)
    detector.update(hourly, (0.9 + 0.01 * noise()[:100])[:, None])
    last = int(hourly[-1])
    assert detector.detector.mean_step() == 3600.0
    assert detector.detector.quality(last + 3000, stale_after=600) != ["stale"]
    assert detector.detector.quality(last + 3 * 3600 + 1, stale_after=600) == ["stale"]
    minutely = Solo(["cpu"], DEFAULTS)
    minutely.update(START + 60 * np.arange(100), (50 + noise()[:100])[:, None])
    assert minutely.detector.quality(int(START + 60 * 99) + 601, stale_after=600) == ["stale"]


def test_a_series_learns_for_a_whole_seasonal_cycle() -> None:
    """400 rows of one minute are not yet a day: learning until a day after the first
    row; without seasonality, until the 400th row."""
    ts = START + 60 * np.arange(500)
    x = (50 + noise()[:500])[:, None]
    daily = Solo(["value"], DEFAULTS)
    daily.update(ts, x)
    assert daily.detector.learning_until() == [int(ts[0]) + 86_400]
    assert daily.detector.quality(int(ts[-1]), stale_after=900) == ["learning"]
    plain = Solo(["value"], DetectionConfig(seasonality=[]))
    plain.update(ts[:300], x[:300])
    assert plain.detector.learning_until() == [int(ts[299]) + 100 * 60]
    plain.update(ts[300:], x[300:])
    assert plain.detector.learning_until() == [None]
    assert plain.detector.quality(int(ts[-1]), stale_after=900) == ["ok"]


def test_the_undamped_score_stays_high_through_an_episode() -> None:
    """The score itself is never damped; repeat damping is for counting alerts only."""
    x = with_shift(50 + noise(), 15.0)
    result = Solo(["value"], DEFAULTS).update(TS, x[:, None])
    assert result.anomaly[AT]
    assert np.all(result.score[AT : AT + 20] >= DEFAULTS.threshold)
    assert np.array_equal(result.anomaly, result.score >= DEFAULTS.threshold)
    alerts = repeat_damped(result.score, span=DEFAULTS.damping, factor=DEFAULTS.damping_factor)
    damped = alerts[AT + 1 : AT + 21] < result.score[AT + 1 : AT + 21]
    assert damped.sum() >= 10  # most of the episode is damped: one alert, not twenty


def test_a_lone_spike_opens_at_once_only_past_every_one_seen_before() -> None:
    """A metric whose normal life has a 12 sigma spike every 300 rows: the next one
    scores far past open_at_once (spikes that rare are past its reference's 1 in 100),
    yet it is no incident by itself -- a size it has shown before needs a second
    abnormal row -- where before it opened one every time. A spike of 30 sigma, larger
    than any seen, opens at once."""
    x = 50 + np.random.default_rng(5).normal(0.0, 1.0, 8000)
    x[500:7000:300] += 12.0
    x[7000] += 12.0
    x[7500] += 30.0
    ts = START + 60 * np.arange(x.size)
    result = Solo(["value"], DEFAULTS).update(ts, x[:, None])
    assert result.score[7000] > DEFAULTS.alarm.open_at_once
    assert not result.at_once[7000, 0] and result.at_once[7500, 0]
    later = slice(6000, None)

    def opened(at_once: np.ndarray) -> list[int]:
        events = apply_rules(
            result.score[later], DEFAULTS.threshold, DEFAULTS.alarm, AlarmState(), at_once=at_once
        )
        return [6000 + row for row, event in events if event is Event.OPEN]

    assert opened(result.at_once[later, 0]) == [7500]
    # the rule before: any severe row of a series whose baseline has spread
    assert opened(np.ones(x.size - 6000, dtype=bool)) == [6200, 6500, 6800, 7000, 7500]


def test_a_blip_is_judged_against_the_spikes_the_reference_has_seen_not_kept() -> None:
    """A metric at 0 nearly always, with small blips (2 % of rows, up to 0.003) and ten
    large spikes (0.5-0.8) over 30,000 rows, on rows a sampled reference does not keep
    (it keeps every 12th of those older than its 4,000 dense rows). Its maximum is
    every row's: a blip three times the usual is far inside the range it has shown and
    scores 60, where against the kept rows' maximum it scored 95 (critical); a value
    past every spike is as rare as before. (SMD machine-2-7: the blips of two metrics
    like this one were its top false alarms.)"""
    rng = np.random.default_rng(5)
    x = np.zeros(30_000)
    blips = rng.random(x.size) < 0.02
    x[blips] = rng.uniform(0.0005, 0.003, blips.sum())
    spikes = np.arange(2000, 25_000, 2500) // 12 * 12 + 5  # never a kept row
    x[spikes] = rng.uniform(0.5, 0.8, spikes.size)
    ts = START + 60 * np.arange(x.size)
    config = DetectionConfig.model_validate({"forest": {"enabled": False}, "seasonality": []})

    def last(value: float) -> float:
        x[-1] = value
        return float(Solo(["disk_errors"], config).update(ts, x[:, None]).score[-1])

    assert last(0.01) < 65.0
    assert last(0.0045) < 55.0
    assert last(1.5) > 99.0


def test_a_young_series_and_a_flat_counter_keep_their_at_once() -> None:
    """A series 100 rows old: a deviation past all of its short reference may open an
    incident at once; a counter that is 0 nearly always (no spread) may not, as before."""
    young = 50 + noise(1)[:120]
    young[100] += 40.0
    scores = Solo(["value"], DetectionConfig(min_history=10)).update(TS[:120], young[:, None])
    assert scores.anomaly[100] and scores.at_once[100, 0]
    counter = np.zeros(ROWS)
    counter[AT] = 3.0
    flat = Solo(["errors_total"], DEFAULTS).update(TS, counter[:, None])
    assert flat.anomaly[AT] and not flat.at_once[AT, 0]
