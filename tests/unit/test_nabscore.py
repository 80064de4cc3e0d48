"""NAB scoring against hand-computed cases and a brute-force sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.detect import nabscore

STANDARD = nabscore.PROFILES["standard"]


def sigmoid_reward(position: float) -> float:
    return -1.0 if position >= 3 else 2 / (1 + math.exp(5 * position)) - 1


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert nabscore.probation_length(100) == 15
    assert nabscore.probation_length(4032) == 604
    assert nabscore.probation_length(20_000) == 750


def test_an_early_detection_scores_the_full_true_positive_weight() -> None:
    scores = np.zeros(100)
    scores[50] = 1.0  # the first row of window 50..59
    result = nabscore.sweep([nabscore.prepare(scores, [(50, 59)])], STANDARD)
    assert result.threshold == 1.0
    assert result.raw == pytest.approx(1.0)
    assert result.normalized == pytest.approx(100.0)


def test_a_late_detection_scores_along_the_sigmoid() -> None:
    scores = np.zeros(100)
    scores[55] = 1.0  # 5 of 10 rows into the window: position -(59 - 55 + 1) / 10 = -0.5
    result = nabscore.sweep([nabscore.prepare(scores, [(50, 59)])], STANDARD)
    expected = sigmoid_reward(-0.5) / sigmoid_reward(-1.0)
    assert result.raw == pytest.approx(expected)
    assert result.normalized == pytest.approx(100 * (expected + 1) / 2)


def test_false_positives_cost_by_distance_from_the_previous_window() -> None:
    scores = np.zeros(200)
    scores[[50, 62, 150]] = 1.0  # a hit, a false alarm just after the window, one far after
    f = nabscore.prepare(scores, [(50, 59)])
    raw = nabscore.score_at([f], STANDARD, 1.0)
    near = sigmoid_reward((62 - 59) / 9) * 0.11
    far = -1.0 * 0.11
    assert raw == pytest.approx(1.0 + near + far)


def test_probationary_rows_and_windows_are_not_scored() -> None:
    scores = np.zeros(100)
    scores[[2, 5]] = 1.0  # inside the probation of 15 rows
    f = nabscore.prepare(scores, [(3, 8), (50, 59)])
    assert f.windows == 1
    assert f.scores.size == 85
    assert nabscore.score_at([f], STANDARD, 1.0) == pytest.approx(-1.0)


def test_a_detector_that_never_fires_scores_zero() -> None:
    f = nabscore.prepare(np.zeros(100), [(50, 59)])
    assert nabscore.sweep([f], STANDARD).normalized == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=60, max_size=120), st.integers(20, 40))
def test_the_sweep_finds_the_best_threshold_by_brute_force(values: list[int], start: int) -> None:
    scores = np.array(values, dtype=float)
    files = [
        nabscore.prepare(scores, [(start, start + 9)]),
        nabscore.prepare(scores[::-1].copy(), []),
    ]
    best = nabscore.sweep(files, STANDARD)
    brute = max([nabscore.score_at(files, STANDARD, t) for t in np.unique(scores)] + [best.null])
    assert best.raw == pytest.approx(brute)
