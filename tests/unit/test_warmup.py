"""Warm-up and sustained episodes: scored from ``min_history``, honestly wider bands while
the history is short, and a fault kept out of the reference it is judged against."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.config import DetectionConfig
from anomon.detect import Solo, entity
from anomon.detect.params import DetectorParams
from anomon.detect.zscore import small_sample_inflation

START = 1_700_000_000 - 1_700_000_000 % 86_400
DEFAULTS = DetectionConfig()


def run(
    x: np.ndarray, config: DetectionConfig = DEFAULTS, *, step: int = 60, name: str = "value"
) -> entity.Scores:
    ts = START + step * np.arange(x.size)
    return Solo([name], config).update(ts, x[:, None])


def noise(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, rows)


@pytest.mark.parametrize("min_history", [5, 50, 200, 400])
def test_scoring_starts_at_min_history(min_history: int) -> None:
    """Whatever min_history is, below or above the baselines' refresh step: nothing
    before it, and a spike right after it is flagged."""
    x = 50 + noise(700)
    x[min_history + 3] += 20.0
    result = run(x, DetectionConfig(min_history=min_history))
    assert np.all(result.score[:min_history] == 0.0)
    assert (result.score[min_history : min_history + 3] > 0.0).any()
    assert result.anomaly[min_history + 3]


def test_a_spread_from_few_rows_is_taken_wider() -> None:
    """The t-versus-normal widening of a spread estimated from n rows: large for a
    handful of rows, vanishing for a full window, never narrowing."""
    rows = np.array([5, 10, 50, 400, 2000, 4096, 100_000, np.nan])
    factor = small_sample_inflation(rows)
    assert factor[0] > 3.0 and 1.05 < factor[2] < 1.2 and factor[4] < 1.01
    assert np.all(np.diff(factor[:-1]) <= 0.0) and np.all(factor >= 1.0)
    assert factor[5] == factor[6] == factor[7] == 1.0


def test_the_same_deviation_scores_lower_while_the_history_is_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 4 sigma deviation at row 30 with and without the widening: the young series is
    less sure (the score with the widening is lower)."""
    x = 50 + noise(200)
    x[30] += 4.0
    config = DetectionConfig(min_history=10)
    widened = run(x, config).score[30]
    monkeypatch.setattr(entity, "small_sample_inflation", lambda rows: np.ones(np.size(rows)))
    assert run(x, config).score[30] > widened + 5.0


def test_a_fault_in_the_first_hour_is_flagged_at_once() -> None:
    """The issue's case: 15 s rows, latency x3 from row 165 (41 minutes in). It used
    to be scored from row 256 only and had become the baseline by then."""
    x = 200 + 10 * noise(1500, seed=1)
    x[165:] *= 3
    result = run(x, step=15, name="latency_p99_ms")
    assert not result.anomaly[50:165].any()
    assert result.anomaly[165:200].all()


def test_a_sustained_fault_stays_rare_until_it_is_the_new_normal() -> None:
    """A 10 sigma shift after 3,000 ordinary rows: the reference does not learn it while
    it is young (the Holdout), so all of its first 500 rows stay anomalous; after that it
    is accepted and the alarms stop while it lasts. Back to the old level after 2,000
    rows of the shift is a 10 sigma move against a baseline and a reference full of the
    shift: it alarms while the baseline turns back (120 rows), not for long."""
    x = 50 + noise(6000, seed=2)
    x[3000:5000] += 10.0
    result = run(x)
    assert not result.anomaly[100:3000].any()
    assert result.anomaly[3000:3500].all()
    assert not result.anomaly[4500:5000].any()
    assert result.anomaly[5000:].mean() < 0.15
    assert not result.anomaly[5250:].any()


def test_a_noisy_fault_is_held_whole_not_learnt_row_by_row() -> None:
    """A fault whose rows straddle the threshold (a 4.5 sigma shift with 1.5 times the
    noise: about half its rows alarm, the others are merely unusual). Its unusual rows
    neither end the episode nor join the reference, so it keeps alarming until it is
    accepted; when they counted as ordinary, the episode was learnt row by row and its
    alarms stopped within 250 rows (0 of rows 250-500 anomalous, median score 47)."""
    rng = np.random.default_rng(7)
    x = 50 + rng.normal(0.0, 1.0, 10_000)
    x[8000:8800] = 54.5 + rng.normal(0.0, 1.5, 800)
    result = run(x)
    assert result.anomaly[2000:8000].mean() < 0.001
    assert result.anomaly[8250:8500].mean() > 0.25
    assert np.median(result.score[8250:8500]) > 70.0


def test_short_bursts_are_learnt_not_held() -> None:
    """A metric whose normal life has bursts of a few rows: the first rows of an episode
    are learnt (``holdout_start``), so its bursts become ordinary instead of alarming forever."""
    x = 50 + noise(8000, seed=3)
    for begin in range(500, 8000, 97):
        x[begin : begin + 4] += 12.0
    result = run(x)
    assert result.anomaly[:2000].sum() > result.anomaly[6000:].sum()
    assert result.anomaly[6000:].mean() < 0.01


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_held_episodes_do_not_depend_on_batching(seed: int, sizes: list[int]) -> None:
    """Rows held out of the references are the same whatever the batching (an episode
    from the second anomalous row on, in a small configuration)."""
    config = DetectionConfig.model_validate(
        {
            "baseline_window": 80,
            "calibration_window": 300,
            "min_history": 10,
            "forest": {"enabled": False},
        }
    )
    rng = np.random.default_rng(seed)
    rows = 500
    ts = START + 60 * np.arange(rows)
    x = rng.normal(0, 1, (rows, 2))
    for begin in rng.integers(50, 480, 5):
        x[begin : begin + rng.integers(5, 40), rng.integers(0, 2)] += 15.0
    params = DetectorParams(config, holdout_start=2)
    whole_detector = Solo(["a", "b"], params)
    whole = whole_detector.update(ts, x)
    held = sum(s.raw["zscore"].held_rows for s in whole_detector.detector._metrics)
    assert held > 0
    batched, start, turn, parts = Solo(["a", "b"], params), 0, 0, []
    while start < rows:
        size = sizes[turn % len(sizes)]
        parts.append(batched.update(ts[start : start + size], x[start : start + size]).score)
        start, turn = start + size, turn + 1
    assert np.array_equal(np.concatenate(parts), whole.score)
