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
    found = graded(score, joint_scores(own), score >= THRESHOLD)[0]
    assert found == pytest.approx(expected, abs=1e-9), case


BANDS = (DetectionConfig().alarm.open_at_once, 95.0)  # what an entity's detector passes


@pytest.mark.parametrize(
    ("case", "own", "expected"),
    [
        # graded freely 96.2: it would open an incident at once, which one metric's own
        # evidence did not say; it stays in the band below open_at_once
        ("two at the threshold", row(80, 80), float(np.nextafter(95.0, 0.0))),
        ("two in the lower band", row(86, 84), float(np.nextafter(95.0, 0.0))),
        ("one at the threshold", row(80), 80.0),
        # past open_at_once a row's pair raises it freely
        ("two at 1 in 10 million", row(score_of(7), score_of(7)), score_of(14 - np.log10(6.5))),
        ("one past open_at_once", row(96), 96.0),
    ],
)
def test_the_grade_keeps_a_row_in_its_band(case: str, own: np.ndarray, expected: float) -> None:
    score = np.nanmax(own, axis=1)
    found = graded(score, joint_scores(own), score >= THRESHOLD, BANDS)[0]
    assert found == pytest.approx(expected, abs=1e-9), case
    assert (found >= BANDS[0]) == (score[0] >= BANDS[0])  # at once iff its own score said so


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


@pytest.mark.parametrize(
    ("shift", "thresholds"),
    # own scores about 88 and 89 at +5.5: graded at 80 and where m3's 85 is reached
    [(12.0, None), (5.5, [95.0] * 6), (5.5, [95.0, 95.0, 95.0, 85.0, 95.0, 95.0])],
)
def test_the_fleet_grades_as_an_entity_alone_does(
    shift: float, thresholds: list[float] | None
) -> None:
    # few new rows go through the fleet's whole-array path; it must grade the same
    ts, x = _host(1200)
    x[1100, [0, 3]] += shift
    metrics = [f"m{i}" for i in range(6)]
    alone = Solo(metrics, DetectionConfig(), thresholds=thresholds).update(ts, x)
    fleet = Fleet[str](DetectionConfig())
    fleet.add("host", metrics, thresholds=thresholds)
    fleet.add("calm", metrics)
    _, calm = _host(1200, seed=5)
    fleet.update({"host": (ts[:1099], x[:1099]), "calm": (ts[:1099], calm[:1099])})
    got = [
        fleet.update(
            {"host": (ts[i : i + 1], x[i : i + 1]), "calm": (ts[i : i + 1], calm[i : i + 1])}
        )
        for i in range(1099, 1102)
    ]
    assert [g["host"].score[0] for g in got] == pytest.approx(alone.score[1099:1102].tolist())
    lifted = got[1]["host"].score[0] > np.nanmax(got[1]["host"].metric_scores[0])
    assert lifted == (thresholds is None or min(thresholds) < 90)


@pytest.mark.parametrize(
    ("shift", "thresholds", "graded_row"),
    [
        # own scores about 90 and 87: the row is an alarm at the default 80, graded
        (4.5, None, True),
        # overrides raise every threshold to 95: neither metric reaches its own, so the
        # pair must not make an alarm of the row (it would score 99 and pass 95)
        (4.5, [95.0] * 6, False),
        # one metric's override (85) is reached: the row is an alarm, graded
        (4.5, [95.0, 95.0, 95.0, 85.0, 95.0, 95.0], True),
        # overrides lower every threshold to 75: own scores about 83 and 77 are an alarm
        (3.5, [75.0] * 6, True),
        # at 90 neither 83 nor 77 is
        (3.5, [90.0] * 6, False),
    ],
)
def test_each_metric_is_graded_against_its_own_threshold(
    shift: float, thresholds: list[float] | None, graded_row: bool
) -> None:
    ts, x = _host(3000)
    x[2800, [0, 3]] += shift
    metrics = [f"m{i}" for i in range(6)]
    scores = Solo(metrics, DetectionConfig(), thresholds=thresholds).update(ts, x)
    own = scores.metric_scores[2800]
    assert scores.detectors["joint"][2800] > own.max() + 5  # the pair stands for more
    drivers = scores.contributors(THRESHOLD)[2800]
    if graded_row:  # raised, within the band below open_at_once, by both together
        assert np.nanmax(own) + 2 < scores.score[2800] < 95.0
        assert np.flatnonzero(drivers).tolist() == [0, 3]
    else:
        assert scores.score[2800] == pytest.approx(np.nanmax(own))
