"""Trailing statistics: exact, and the same whatever the batch sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.detect.rolling import TrailingQuantiles, trailing_max

QUANTILES = (0.0, 0.25, 0.5, 0.99, 1.0)


def brute_force(x: np.ndarray, window: int, step: int, min_periods: int) -> np.ndarray:
    out = np.full((x.size, len(QUANTILES)), np.nan)
    for row in range(x.size):
        block = row - row % step
        valid = x[max(0, block - window) : block]
        valid = np.sort(valid[~np.isnan(valid)])
        if valid.size >= min_periods:
            out[row] = [valid[int(q * (valid.size - 1))] for q in QUANTILES]
    return out


values = st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(values, st.integers(1, 40), st.integers(1, 9), st.integers(1, 10), st.randoms())
def test_quantiles_match_brute_force_in_any_batching(
    data: list[float], window: int, step: int, min_periods: int, rnd: object
) -> None:
    x = np.array(data)
    expected = brute_force(x, window, step, min_periods)
    stream = TrailingQuantiles(
        window=window, step=step, quantiles=QUANTILES, min_periods=min_periods
    )
    parts, start = [], 0
    while start < x.size:
        size = rnd.randint(1, 50)  # type: ignore[attr-defined]
        parts.append(stream.push(x[start : start + size]))
        start += size
    got = np.vstack(parts)
    assert np.array_equal(got[:, :-1], expected, equal_nan=True)
    assert np.all(got[:, -1] <= window)


@settings(max_examples=40, deadline=None)
@given(values, st.integers(1, 30), st.integers(1, 40))
def test_trailing_max_is_exact_in_any_batching(data: list[float], window: int, chunk: int) -> None:
    x = np.array(data)
    history, parts = np.empty(0), []
    for start in range(0, x.size, chunk):
        new = x[start : start + chunk]
        parts.append(trailing_max(history, new, window=window))
        history = np.concatenate([history, new])
    expected = [
        np.nanmax(x[max(0, i - window) : i])
        if i and not np.isnan(x[max(0, i - window) : i]).all()
        else np.nan
        for i in range(x.size)
    ]
    assert np.array_equal(np.concatenate(parts), np.array(expected), equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(values, st.integers(4, 60), st.integers(1, 9), st.integers(2, 5), st.integers(1, 30))
def test_strided_windows_keep_every_nth_row_in_any_batching(
    data: list[float], window: int, step: int, stride: int, chunk: int
) -> None:
    x = np.array(data)
    kept = np.full(x.size, np.nan)
    kept[::stride] = x[::stride]  # what a stride keeps, as rows the statistics may skip
    expected = brute_force(kept, window, step, 1)
    stream = TrailingQuantiles(
        window=window, step=step, quantiles=QUANTILES, min_periods=1, stride=stride
    )
    got = np.vstack([stream.push(x[i : i + chunk]) for i in range(0, x.size, chunk)])
    assert np.array_equal(got[:, :-1], expected, equal_nan=True)
