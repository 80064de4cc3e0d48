"""Calibration: raw scores to 0-100 rarity scores against a reference of earlier ones."""

from __future__ import annotations

import numpy as np
import pytest

from anomon.detect.calibration import (
    CALIBRATION_QUANTILES,
    RANGE_FLOOR,
    RARITY_QUANTILES,
    calibrate,
    calibrated_decades,
)
from anomon.detect.entity import calibrate_z


def one(raw: float, reference: list[float], **options: object) -> float:
    return float(calibrate(np.array([raw]), np.array([reference]), **options)[0])  # type: ignore[arg-type]


def decades(raw: float, reference: list[float], **options: object) -> float:
    found = calibrated_decades(np.array([raw]), np.array([reference]), **options)  # type: ignore[arg-type]
    return float(found[0])


def test_without_a_maximum_column_the_three_quantile_formula_holds() -> None:
    reference = [1.0, 2.0, 3.0, 1000.0]  # q50, q90, q99, count
    options = {"span_floor": 0.1, "levels": (0.5, 0.9, 0.99)}
    assert one(1.0, reference, **options) == 0.0
    assert one(0.5, reference, **options) == 0.0  # below the median is nothing unusual
    assert one(2.0, reference, **options) == pytest.approx(26.79, abs=0.01)
    assert one(3.0, reference, **options) == pytest.approx(50.0, abs=1e-9)
    assert one(4.0, reference, **options) == pytest.approx(67.72, abs=0.01)  # 1 in 1,000
    assert one(5.0, reference, **options) == pytest.approx(80.0, abs=1e-9)  # 1 in 10,000
    # the forest's default levels are the same three
    assert one(3.0, reference, span_floor=0.1) == one(3.0, reference, **options)
    assert CALIBRATION_QUANTILES == (0.5, 0.9, 0.99)


def test_the_span_floor_sets_the_slope_of_a_flat_reference() -> None:
    reference = [1.0, 1.0, 1.0, 1000.0]
    options = {"span_floor": 0.5, "levels": (0.5, 0.9, 0.99)}
    assert one(1.5, reference, **options) == pytest.approx(26.79, abs=0.01)  # one floor: q90
    assert one(2.0, reference, **options) == pytest.approx(50.0, abs=1e-9)  # two: q99


FLAT = 5.0  # the largest spike a mostly flat reference has seen


def spiky_reference() -> list[float]:
    """A deviation that is 0 nearly always, with rare spikes up to FLAT: its q50, q90
    and q99 are all 0, its maximum FLAT."""
    rng = np.random.default_rng(3)
    deviations = np.zeros(40_000)
    deviations[rng.choice(deviations.size, 50, replace=False)] = rng.uniform(1.0, FLAT, 50)
    deviations[7] = FLAT
    levels = np.array([0.5, 0.9, 0.99, 1.0])
    ordered = np.sort(deviations)
    quantiles = ordered[(levels * (deviations.size - 1)).astype(int)]
    assert quantiles.tolist() == [0.0, 0.0, 0.0, FLAT]
    return [*quantiles.tolist(), float(deviations.size)]


def test_the_range_floor_keeps_a_spike_of_the_usual_size_finite() -> None:
    """The tail's decade step is at least RANGE_FLOOR of the range: a spike as large as
    the largest seen is at most 1 / RANGE_FLOOR decades past q99, and ten times larger
    is ten times further."""
    reference = spiky_reference()
    options = {"span_floor": 1e-6, "levels": RARITY_QUANTILES}
    usual = decades(FLAT, reference, **options)
    larger = decades(10 * FLAT, reference, **options)
    assert np.isfinite(usual)
    assert usual <= 2.0 + 1.0 / RANGE_FLOOR + 1e-6
    assert larger > 5 * usual
    # without the maximum column nothing bounds it: the floor is all there is
    unbounded = decades(
        FLAT, reference[:3] + reference[4:], span_floor=1e-6, levels=(0.5, 0.9, 0.99)
    )
    assert unbounded > 1e5


def test_a_spike_of_the_usual_size_scores_below_a_ten_times_larger_one() -> None:
    """A flat metric's ordinary spike is rare but not "infinite": at most 1 / RANGE_FLOOR
    decades past the tail, and a spike ten times any seen before still ranks higher."""
    reference = spiky_reference()
    options = {"span_floor": 1e-6, "levels": RARITY_QUANTILES}
    usual = decades(FLAT, reference, **options)
    larger = decades(10 * FLAT, reference, **options)
    assert usual <= 2.0 + 1.0 / RANGE_FLOOR + 1e-6, usual
    assert larger > usual + 1.0
    assert one(10 * FLAT, reference, **options) >= one(FLAT, reference, **options)


def test_a_per_row_span_floor_is_each_rows_own_floor() -> None:
    rng = np.random.default_rng(1)
    rows = 50
    q = np.sort(rng.gamma(2.0, 1.0, (rows, 3)), axis=1)
    reference = np.column_stack([q, q[:, 2] + rng.gamma(2.0, 2.0, rows), np.full(rows, 500.0)])
    raw = rng.gamma(2.0, 2.0, rows)
    floor = rng.uniform(0.0, 3.0, rows)
    together = calibrate(raw, reference, span_floor=floor, levels=RARITY_QUANTILES)
    apart = [
        calibrate(
            raw[i : i + 1],
            reference[i : i + 1],
            span_floor=float(floor[i]),
            levels=RARITY_QUANTILES,
        )[0]
        for i in range(rows)
    ]
    assert np.array_equal(together, np.array(apart))


@pytest.mark.parametrize("levels", [CALIBRATION_QUANTILES, RARITY_QUANTILES])
def test_scores_rise_with_the_raw_score_and_stay_in_range(levels: tuple[float, ...]) -> None:
    rng = np.random.default_rng(2)
    columns = len(levels)
    for _ in range(200):
        quantiles = np.sort(rng.normal(0, 1, columns) * rng.choice([0.0, 1.0, 10.0]))
        reference = np.array([[*quantiles, float(rng.integers(0, 1000))]])
        raw = np.sort(rng.normal(quantiles[0], 5.0, 200))
        scores = calibrate(
            raw,
            np.repeat(reference, raw.size, axis=0),
            span_floor=float(rng.uniform(0.01, 1.0)),
            levels=levels,
            prior=np.sort(rng.normal(0, 1, len([lv for lv in levels if lv < 1.0]))),
            prior_weight=float(rng.choice([0.0, 400.0])),
        )
        assert np.all((scores >= 0.0) & (scores <= 100.0))
        assert np.all(np.diff(scores) >= -1e-9)


def test_missing_raw_scores_or_references_score_zero() -> None:
    reference = np.array([[0.0, 1.0, 2.0, 3.0, 100.0], [np.nan] * 4 + [0.0]])
    scores = calibrate(np.array([np.nan, 50.0]), reference, span_floor=0.1, levels=RARITY_QUANTILES)
    assert scores.tolist() == [0.0, 0.0]


def test_a_short_history_is_shrunk_towards_the_prior() -> None:
    prior = (0.0, 1.0, 2.0)
    empty = [np.nan, np.nan, np.nan, np.nan, 0.0]  # no history yet: the prior alone
    assert one(
        2.0,
        [0.0, 0.0, 0.0, 0.0, 0.0],
        span_floor=0.1,
        levels=RARITY_QUANTILES,
        prior=prior,
        prior_weight=400.0,
    ) == pytest.approx(50.0)
    assert one(
        2.0, empty, span_floor=0.1, levels=RARITY_QUANTILES, prior=prior, prior_weight=400.0
    ) == pytest.approx(50.0)  # no reference at all: the prior alone (its q99 scores 50)
    assert (
        one(2.0, empty, span_floor=0.1, levels=RARITY_QUANTILES) == 0.0
    )  # no reference and no prior: nothing to tell
    wild = [0.0, 10.0, 20.0, 30.0, 400.0]  # as much history as the prior's weight
    halfway = one(
        11.0, wild, span_floor=0.1, levels=RARITY_QUANTILES, prior=prior, prior_weight=400.0
    )
    assert halfway == pytest.approx(50.0)  # q99 (20 + 2) / 2


def test_z_calibration_is_in_the_metrics_own_unit() -> None:
    """Deviations, references and spreads in any unit give the same scores."""
    rng = np.random.default_rng(4)
    rows = 100
    q = np.sort(np.abs(rng.normal(0, 1, (rows, 3))), axis=1)
    reference = np.column_stack(
        [q, q[:, 2] + np.abs(rng.normal(0, 3, rows)), rng.integers(0, 5000, rows).astype(float)]
    )
    offset, scale = rng.normal(0, 3, rows), rng.uniform(0.5, 2.0, rows)
    one_sided = rng.random(rows) < 0.5
    base = calibrate_z(offset, reference, scale, one_sided=one_sided)
    for unit in (1e-6, 1e3, 1e9):
        scaled = reference.copy()
        scaled[:, :-1] *= unit
        again = calibrate_z(offset * unit, scaled, scale * unit, one_sided=one_sided)
        assert np.allclose(again, base, rtol=1e-9, atol=1e-9)
    # no reference yet, or one of zero weight: the normal prior of the spread alone, where
    # a two-sided |z| of 2.576 is q99
    fresh = np.array([[np.nan] * 4 + [0.0]])
    zero = np.array([[0.0] * 4 + [0.0]])
    assert calibrate_z(np.array([2.576]), fresh, np.array([1.0]), one_sided=False)[0] == (
        pytest.approx(50.0, abs=0.01)
    )
    assert calibrate_z(np.array([2.576]), zero, np.array([1.0]), one_sided=False)[0] == (
        pytest.approx(50.0, abs=0.01)
    )
