"""Which rows of a file replay scores: those the daemon would (later than every row before)."""

from __future__ import annotations

import numpy as np
import pytest

from anomon.config import DetectionConfig
from anomon.detect.replay import Table, last_time, replay, time_order


def table(*times: int) -> Table:
    ts = np.array(times, dtype=np.int64)
    return Table(
        [f"t{t}" for t in times], ts, ["value"], np.arange(ts.size, dtype=np.float64)[:, None]
    )


@pytest.mark.parametrize(
    ("times", "after", "scored", "back", "duplicate"),
    [
        ((), None, [], 0, 0),
        ((5,), None, [1], 0, 0),
        ((1, 2, 9, 40), None, [1, 1, 1, 1], 0, 0),  # uneven steps and gaps are fine
        ((1, 1, 2), None, [1, 0, 1], 0, 1),  # a duplicate: the first one is scored
        ((1, 5, 3, 4, 5, 6), None, [1, 1, 0, 0, 0, 1], 2, 1),  # a step back, then catching up
        ((5, 1, 2), None, [1, 0, 0], 2, 0),  # back before the first row: never later than it
        ((3, 4, 5), (4, "t4"), [0, 0, 1], 1, 1),  # history (a training file) ends at 4
    ],
)
def test_it_scores_only_rows_later_than_every_row_before(
    times: tuple[int, ...],
    after: tuple[int, str] | None,
    scored: list[int],
    back: int,
    duplicate: int,
) -> None:
    order = time_order(table(*times), after)
    assert order.scored.tolist() == [bool(s) for s in scored]
    assert (order.back, order.duplicate, order.unscored) == (back, duplicate, back + duplicate)


def test_it_describes_the_first_row_of_each_kind_in_one_line() -> None:
    data = table(10, 20, 30, 15, 25, 30, 40, 40)
    line = time_order(data).describe("m.csv", data.labels)
    assert line == (
        "m.csv: 4 of 8 rows not scored, as the daemon would not score them: "
        "2 whose time steps back (first at row 5: 't15' after 't30'), "
        "2 duplicate time(s) (first at row 7: 't30')"
    )
    assert time_order(table(1, 2)).describe("m.csv", ["a", "b"]) is None
    after = time_order(table(3, 9), (5, "train end")).describe("m.csv", ["t3", "t9"])
    assert after is not None and "(first at row 2: 't3' after 'train end')" in after


def test_it_takes_the_end_of_history_from_its_latest_row() -> None:
    assert last_time(None) is None
    assert last_time(table()) is None
    assert last_time(table(1, 7, 3, 7)) == (7, "t7")


def test_unscored_rows_get_no_score_and_the_rest_score_as_without_them() -> None:
    rng = np.random.default_rng(5)
    ts = 1_000_000 + 60 * np.arange(600, dtype=np.int64)
    values = rng.normal(10, 1, (600, 1))
    values[500] += 12
    clean = Table([str(t) for t in ts], ts, ["value"], values)
    bad = [100, 101, 300]  # a step back of two rows and a duplicate, each with its own value
    dirty_ts = np.insert(ts, bad, [ts[40], ts[41], ts[299]])
    dirty_values = np.insert(values, bad, [[99.0], [-99.0], [50.0]], axis=0)
    dirty = Table([str(t) for t in dirty_ts], dirty_ts, ["value"], dirty_values)
    config = DetectionConfig()
    expected, got = replay(clean, config), replay(dirty, config)
    unscored = np.zeros(dirty_ts.size, dtype=bool)
    unscored[[100, 102, 302]] = True  # np.insert places each before the original index
    assert time_order(dirty).scored.tolist() == (~unscored).tolist()
    assert np.isnan(got.score[unscored]).all() and not got.anomaly[unscored].any()
    np.testing.assert_array_equal(got.score[~unscored], expected.score)
    np.testing.assert_array_equal(got.anomaly[~unscored], expected.anomaly)
    for name, scores in expected.detectors.items():
        np.testing.assert_array_equal(got.detectors[name][~unscored], scores)
    assert expected.anomaly[500]


def test_a_training_file_that_ends_after_the_input_starts_leaves_those_rows_unscored() -> None:
    train = table(*range(0, 3000, 10))
    data = table(2980, 2990, 3000, 3010)
    scores = replay(data, DetectionConfig(), train=train)
    assert np.isnan(scores.score[:2]).all()
    assert np.isfinite(scores.score[2:]).all()
