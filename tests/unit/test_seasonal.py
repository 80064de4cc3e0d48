"""Seasonal profiles: the same expectations whether rows come one by one or in batches."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.detect.seasonal import SEASONS, SeasonalProfile

DAY = 86_400


def stream(ts: np.ndarray, x: np.ndarray, sizes: list[int], periods: int) -> np.ndarray:
    profile = SeasonalProfile(SEASONS["daily"], periods=periods)
    parts, start, turn = [], 0, 0
    while start < ts.size:
        size = sizes[turn % len(sizes)]
        parts.append(profile.expected(ts[start : start + size], x[start : start + size]))
        start, turn = start + size, turn + 1
    return np.concatenate(parts)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([30, 60, 90, 300, 420]),
    st.lists(st.integers(1, 40), min_size=1, max_size=8),
    st.integers(1, 4),
)
def test_expectations_do_not_depend_on_batching(
    seed: int, step: int, sizes: list[int], periods: int
) -> None:
    """Row by row (the daemon: a row that opens a bin closes the last one on its own
    path) and in any batches, the bin means and their medians are the same bits."""
    rng = np.random.default_rng(seed)
    rows = int(3.5 * DAY / step)
    ts = 1_700_000_000 + step * np.arange(rows) + rng.integers(0, step, rows) // 2
    ts = np.maximum.accumulate(ts)
    x = 100 + 10 * np.sin(2 * np.pi * ts / DAY) + rng.normal(0, 1.0, rows) / 3.0
    x[rng.random(rows) < 0.1] = np.nan
    whole = stream(ts, x, [rows], periods)
    assert np.isfinite(whole[-10:]).any()  # past the first day there is a profile
    assert np.array_equal(stream(ts, x, [1], periods), whole, equal_nan=True)
    assert np.array_equal(stream(ts, x, sizes, periods), whole, equal_nan=True)


def test_a_row_expects_the_median_of_its_bin_over_past_days() -> None:
    profile = SeasonalProfile(SEASONS["daily"], periods=3)
    start = 1_700_000_000 - 1_700_000_000 % DAY
    days = [10.0, 30.0, 20.0]
    for day, level in enumerate(days):  # one row in the 00:00 bin and one to close it
        ts = np.array([start + day * DAY, start + day * DAY + 300])
        profile.expected(ts, np.array([level, 0.0]))
    got = profile.expected(np.array([start + 3 * DAY]), np.array([99.0]))
    assert got[0] == 20.0  # median of 10, 30, 20
    two = SeasonalProfile(SEASONS["daily"], periods=2)
    for day, level in enumerate(days):
        for offset, value in ((0, level), (300, 0.0)):
            two.expected(np.array([start + day * DAY + offset]), np.array([value]))
    got = two.expected(np.array([start + 3 * DAY]), np.array([99.0]))
    assert got[0] == 25.0  # the last two days only: (30 + 20) / 2
