"""Joint deviations grade an alarm, never raise one (anomon.detect.joint)."""

from __future__ import annotations

import numpy as np
import pytest

from anomon.config import DetectionConfig
from anomon.detect import Solo
from anomon.detect.calibration import DECADES_SCALE
from anomon.detect.fleet import Fleet
from anomon.detect.joint import graded, joint_scores

THRESHOLD = 80.0
START = 1_700_000_000 - 1_700_000_000 % 86_400


def score_of(decades: float) -> float:
    return float(100 * np.tanh(decades / DECADES_SCALE))


def row(*scores: float, metrics: int = 14) -> np.ndarray:
    """One row of per-metric scores: the given ones, the rest calm (0)."""
    found = np.zeros((1, metrics))
    found[0, : len(scores)] = scores
    return found


@pytest.mark.parametrize(
    ("case", "own", "expected"),
    [
        # two of a host's 14 metrics at 1 in 10,000 together: 2 * 4 - log10(13 / 2) decades
        ("two at the threshold", row(80, 80), score_of(8 - np.log10(6.5))),
        ("one at the threshold", row(80), 80.0),
        ("one far out, one calm", row(99), 99.0),
        # a second metric less rare than the square root of the first adds nothing
        ("one far out, one mild", row(95, 50), 95.0),
        # below the threshold nothing changes, however many metrics are mildly out
        ("two correlated at 1 in 100", row(50, 50), 50.0),
        ("two just under", row(79.9, 79.9), 79.9),
        ("every metric at 1 in 1,000", row(*[68.0] * 14), 68.0),
        # two metrics: the pair's multiplicity is log10(1/2)
        ("a pair at the threshold", row(80, 80, metrics=2), score_of(8 + np.log10(2))),
        # a metric without a value this row is not counted among the n
        ("a missing third", np.array([[80.0, 80.0, np.nan]]), score_of(8 + np.log10(2))),
        ("one metric", row(90, metrics=1), 90.0),
    ],
)
def test_grading_cases(case: str, own: np.ndarray, expected: float) -> None:
    score = np.nanmax(own, axis=1)
    assert graded(score, joint_scores(own), THRESHOLD)[0] == pytest.approx(expected, abs=1e-9), case


def test_two_at_the_threshold_open_at_once_one_does_not() -> None:
    alarm = DetectionConfig().alarm.open_at_once
    assert graded(np.array([80.0]), joint_scores(row(80, 80)), THRESHOLD)[0] >= alarm
    assert graded(np.array([80.0]), joint_scores(row(80)), THRESHOLD)[0] < alarm


def test_joint_scores_need_two_metrics_with_values() -> None:
    own = np.array([[90.0, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    assert joint_scores(own).tolist() == [0.0, 0.0]
    assert joint_scores(np.empty((0, 3))).shape == (0,)


def _host(rows: int, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Six independent noisy metrics of a host, a minute apart."""
    rng = np.random.default_rng(seed)
    ts = START + 60 * np.arange(rows)
    return ts, 100 + rng.normal(0, 1, (rows, 6))


def test_a_host_going_wrong_on_two_metrics_scores_above_one_and_names_both() -> None:
    ts, x = _host(3000)
    x[2600, 0] += 12  # one metric far out
    x[2800, [0, 3]] += 12  # two together, as far
    x[2900, [1, 4]] += 2.6  # two together, each about 1 in 100: nothing
    scores = Solo([f"m{i}" for i in range(6)], DetectionConfig()).update(ts, x)
    one, two, mild = scores.score[2600], scores.score[2800], scores.score[2900]
    assert scores.anomaly[2600] and scores.anomaly[2800]
    assert two > one >= THRESHOLD
    assert two > scores.metric_scores[2800].max()  # the pair, not one metric, set it
    assert not scores.anomaly[2900] and mild < THRESHOLD
    drivers = scores.contributors(THRESHOLD)
    assert np.flatnonzero(drivers[2800]).tolist() == [0, 3]
    assert np.flatnonzero(drivers[2600]).tolist() == [0]


def test_the_fleet_grades_as_an_entity_alone_does() -> None:
    # few new rows go through the fleet's whole-array path; it must grade the same
    ts, x = _host(1200)
    x[1100, [2, 5]] += 12
    alone = Solo([f"m{i}" for i in range(6)], DetectionConfig()).update(ts, x)
    fleet = Fleet[str](DetectionConfig())
    fleet.add("host", [f"m{i}" for i in range(6)])
    fleet.add("calm", [f"m{i}" for i in range(6)])
    _, calm = _host(1200, seed=5)
    fleet.update({"host": (ts[:1099], x[:1099]), "calm": (ts[:1099], calm[:1099])})
    got = [
        fleet.update(
            {"host": (ts[i : i + 1], x[i : i + 1]), "calm": (ts[i : i + 1], calm[i : i + 1])}
        )
        for i in range(1099, 1102)
    ]
    assert [g["host"].score[0] for g in got] == pytest.approx(alone.score[1099:1102].tolist())
    assert got[1]["host"].score[0] > got[1]["host"].metric_scores[0].max()
