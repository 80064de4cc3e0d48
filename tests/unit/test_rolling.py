"""Trailing statistics: exact, and the same whatever the batch sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomon.detect.rolling import (
    ANOMALOUS,
    CHUNK_STRIDES,
    ORDINARY,
    UNUSUAL,
    Holdout,
    TrailingQuantiles,
    from_bfloat16,
    order_statistics,
    to_bfloat16,
    trailing_max,
    weighted_order_statistics,
)

QUANTILES = (0.0, 0.25, 0.5, 0.99, 1.0)


def brute_force(x: np.ndarray, window: int, step: int, min_periods: int) -> np.ndarray:
    out = np.full((x.size, len(QUANTILES)), np.nan)
    for row in range(x.size):
        warm = max(step, min_periods)
        block = row if row < warm else row - (row - warm) % step
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_order_statistics_are_those_of_the_rows_repeated(dtype: type) -> None:
    """A sampled row of weight w counts as w copies of itself, NaNs count for nothing."""
    rng = np.random.default_rng(0)
    for _ in range(400):
        sampled = rng.normal(0, 1, rng.integers(0, 40)).astype(dtype)
        full = rng.normal(0, 1, rng.integers(0, 40)).astype(dtype)
        for part in (sampled, full):  # ties and NaNs, in both parts
            part[rng.random(part.size) < 0.2] = np.nan
            part[rng.random(part.size) < 0.1] = dtype(0.5)
        weight = int(rng.integers(1, 9))
        min_periods = int(rng.integers(0, 60))
        expected = order_statistics(
            np.concatenate([np.repeat(sampled, weight), full]), QUANTILES, min_periods
        )
        got = weighted_order_statistics(sampled, weight, full, QUANTILES, min_periods)
        assert got.dtype == np.float64
        assert np.array_equal(got, expected, equal_nan=True), (sampled, weight, full)


def sparse_brute_force(
    x: np.ndarray, window: int, step: int, stride: int, dense: int, min_periods: int
) -> np.ndarray:
    """A trailing window whose last ``dense`` rows are all kept and whose older rows are
    kept every ``stride``-th (counted from the first row), each standing for ``stride``;
    its maximum is that of every row since the chunk (``CHUNK_STRIDES * stride`` rows,
    from the first row) where the window begins, kept or not."""
    out = np.empty((x.size, len(QUANTILES) + 1))
    chunk = CHUNK_STRIDES * stride
    for row in range(x.size):
        warm = max(step, min_periods)
        block = row if row < warm else row - (row - warm) % step
        boundary = max(block - min(dense, window), 0)
        start = max(block - window, 0)
        older = np.arange(start, boundary)
        sampled = x[older[older % stride == 0]]
        rows = np.concatenate([np.repeat(sampled, stride), x[boundary:block]])
        out[row] = order_statistics(rows, QUANTILES, min_periods)
        if stride > 1 and dense > 0 and boundary > start and not np.isnan(out[row, -2]):
            out[row, -2] = np.nanmax(x[start // chunk * chunk : block])
    return out


def test_a_sampled_windows_maximum_is_every_rows_held_ones_aside() -> None:
    """A window that keeps every 10th of its older rows still knows the largest value of
    all of them (chunk by chunk, held rows left out): a spike on a row it does not keep
    is its maximum until the window has passed the spike's chunk, in any batching."""
    x = np.zeros(3000, dtype=np.float32)
    x[1003] = 7.0  # not a kept row (1003 % 10), older than the 100 dense rows from 1103
    x[1505] = 9.0  # held: never anyone's maximum
    offset = [0]

    def judge(rows: slice, _stats: np.ndarray) -> np.ndarray:
        found = np.full(rows.stop - rows.start, ORDINARY, dtype=np.int8)
        found[np.arange(rows.start, rows.stop) + offset[0] == 1505] = ANOMALOUS
        return found

    def run(sizes: int) -> np.ndarray:
        stream = TrailingQuantiles(
            window=1000,
            step=10,
            quantiles=QUANTILES,
            min_periods=1,
            stride=10,
            dense=100,
            dtype=np.float32,
            compact=True,
            holdout=Holdout(rows=50, start=1),
        )
        out = []
        for begin in range(0, x.size, sizes):
            offset[0] = begin
            out.append(stream.push(x[begin : begin + sizes], judge=judge))
        return np.vstack(out)[:, QUANTILES.index(1.0)]

    whole = run(x.size)
    chunk = CHUNK_STRIDES * 10  # rows 960-1119 are one chunk
    assert (whole[1010:2010] == 7.0).all()  # blocks of 10 whose window holds row 1003
    past = 1003 // chunk * chunk + chunk + 1000  # the first window that begins past it
    assert (whole[2010:past] == 7.0).all() and (whole[past:] == 0.0).all()
    assert np.array_equal(run(1), whole, equal_nan=True)
    assert np.array_equal(run(37), whole, equal_nan=True)


def test_a_double_precision_windows_maximum_is_exact() -> None:
    """The chunk maxima keep the window's own precision: a float64 value on an unkept
    row comes back as itself, not rounded to single precision (up, past every row)."""
    x = np.zeros(70)
    x[62] = 0.1  # not kept (stride 4), in the chunk of rows 0-63
    stream = TrailingQuantiles(
        window=16, step=1, quantiles=(0.5, 1.0), min_periods=1, stride=4, dense=1
    )
    assert stream.push(x)[66, 1] == 0.1


@settings(max_examples=60, deadline=None)
@given(
    values,
    st.integers(1, 80),
    st.integers(1, 9),
    st.integers(1, 90),  # dense=0 is the plain strided window, tested above
    st.integers(1, 12),
    st.sampled_from([np.float32, np.float64]),
    st.randoms(),
)
def test_dense_strided_windows_are_the_same_in_any_batching(
    data: list[float],
    window: int,
    step: int,
    dense: int,
    min_periods: int,
    dtype: type,
    rnd: object,
) -> None:
    x = np.array(data).astype(dtype)
    expected = sparse_brute_force(x, window, step, 4, dense, min_periods)

    def stream() -> TrailingQuantiles:
        return TrailingQuantiles(
            window=window,
            step=step,
            quantiles=QUANTILES,
            min_periods=min_periods,
            stride=4,
            dense=dense,
            dtype=dtype,
        )

    whole = stream().push(x)
    single = stream()
    one_by_one = np.vstack([single.push(x[i : i + 1]) for i in range(x.size)])
    chunked, parts, start = stream(), [], 0
    while start < x.size:
        size = rnd.randint(1, 40)  # type: ignore[attr-defined]
        parts.append(chunked.push(x[start : start + size]))
        start += size
    assert np.array_equal(whole, expected, equal_nan=True)
    assert np.array_equal(one_by_one, whole, equal_nan=True)
    assert np.array_equal(np.vstack(parts), whole, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(0, 30), st.integers(1, 10))
def test_a_dense_strided_window_counts_its_rows(
    seed: int, window_blocks: int, dense_blocks: int, step_blocks: int
) -> None:
    """The count column is in rows: a kept older row stands for ``stride`` rows, so with
    the window, dense part and step on the stride's grid and no NaN it is exactly the
    number of rows in the window; with NaNs it is the number of valid rows the kept rows
    stand for."""
    stride = 4
    window, dense, step = stride * window_blocks, stride * dense_blocks, stride * step_blocks
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, 300)
    stream = TrailingQuantiles(
        window=window, step=step, quantiles=QUANTILES, min_periods=1, stride=stride, dense=dense
    )
    got = np.vstack([stream.push(x[i : i + 7]) for i in range(0, x.size, 7)])
    rows = np.arange(x.size)
    blocks = np.where(rows < step, rows, rows - rows % step)  # one-row blocks at first
    in_window = np.minimum(blocks, window)
    # from the first full block on the blocks are on the stride's grid (before it, a
    # block of one row may end between two kept rows: the weights count in strides)
    assert np.array_equal(got[step:, -1], in_window[step:])
    assert np.array_equal(got[:, -1], sparse_brute_force(x, window, step, stride, dense, 1)[:, -1])

    x[rng.random(x.size) < 0.3] = np.nan
    stream = TrailingQuantiles(
        window=window, step=step, quantiles=QUANTILES, min_periods=1, stride=stride, dense=dense
    )
    got = np.vstack([stream.push(x[i : i + 7]) for i in range(0, x.size, 7)])
    expected = sparse_brute_force(x, window, step, stride, dense, 1)
    assert np.array_equal(got[:, -1], expected[:, -1])
    if dense >= window:  # all rows kept: the count is the number of valid rows exactly
        valid = [np.count_nonzero(~np.isnan(x[max(b - window, 0) : b])) for b in blocks]
        assert np.array_equal(got[:, -1], valid)


def test_bfloat16_rounds_to_nearest_within_half_a_percent() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.normal(0, 1, 2000) * 10.0 ** rng.integers(-30, 30, 2000),
            [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-42, 3.0e38],
        ]
    ).astype(np.float32)
    stored = to_bfloat16(x)
    assert stored.dtype == np.uint16
    back = from_bfloat16(stored)
    finite = np.isfinite(x) & (np.abs(x) > 1e-37) & (np.abs(x) < 3e38)
    assert np.all(np.abs(back[finite] - x[finite]) <= np.abs(x[finite]) * 2.0**-8)
    assert np.isnan(back[np.isnan(x)]).all()
    assert back[np.isposinf(x)][0] == np.inf and back[np.isneginf(x)][0] == -np.inf
    # one value at a time (the daemon's path) gives the same bits as a whole array
    one_by_one = np.concatenate([to_bfloat16(x[i : i + 1]) for i in range(x.size)])
    assert np.array_equal(one_by_one, stored)
    assert from_bfloat16(to_bfloat16(np.array([1.0 + 2.0**-9], dtype=np.float32)))[0] == 1.0
    assert from_bfloat16(to_bfloat16(np.array([1.0 + 3 * 2.0**-9], dtype=np.float32)))[0] == (
        1.0 + 2.0**-7
    )


@settings(max_examples=30, deadline=None)
@given(values, st.integers(4, 60), st.integers(1, 9), st.integers(1, 40), st.integers(1, 30))
def test_compact_windows_are_windows_of_the_rounded_values(
    data: list[float], window: int, step: int, dense: int, chunk: int
) -> None:
    """bfloat16 storage: the statistics of the values as rounded, in any batching."""
    x = np.array(data).astype(np.float32)
    rounded = from_bfloat16(to_bfloat16(x)).astype(np.float64)
    expected = sparse_brute_force(rounded, window, step, 4, dense, 1)

    def stream() -> TrailingQuantiles:
        return TrailingQuantiles(
            window=window,
            step=step,
            quantiles=QUANTILES,
            min_periods=1,
            stride=4,
            dense=dense,
            dtype=np.float32,
            compact=True,
        )

    whole = stream().push(x)
    single = stream()
    one_by_one = np.vstack([single.push(x[i : i + 1]) for i in range(x.size)])
    chunked = stream()
    parts = np.vstack([chunked.push(x[i : i + chunk]) for i in range(0, x.size, chunk)])
    assert np.array_equal(whole, expected, equal_nan=True)
    assert np.array_equal(one_by_one, whole, equal_nan=True)
    assert np.array_equal(parts, whole, equal_nan=True)


def test_compact_storage_needs_single_precision() -> None:
    with pytest.raises(ValueError, match="float32"):
        TrailingQuantiles(window=10, step=1, quantiles=QUANTILES, min_periods=1, compact=True)


def held_pattern(judged: list[int], start: int, rows: int) -> list[bool]:
    """The Holdout's rule, row by row: a counter +1 (anomalous), 0 (unusual) or -1
    (ordinary), floored at 0; a row that is not ordinary held while start <= counter <=
    rows."""
    counter, out = 0, []
    for verdict in judged:
        counter = max(counter + verdict, 0)
        out.append(verdict != ORDINARY and start <= counter <= rows)
    return out


def verdict_of(value: float) -> int:
    """Anomalous above 50, unusual above 20, else ordinary."""
    return ANOMALOUS if value > 50 else UNUSUAL if value > 20 else ORDINARY


def held_rows_of(x: np.ndarray, holdout: Holdout) -> tuple[list[bool], list[float], np.ndarray]:
    """Push ``x`` row by row, judged by :func:`verdict_of`: which rows were held, each
    row's maximum, and the last statistics."""
    stream = TrailingQuantiles(
        window=1000, step=1, quantiles=QUANTILES, min_periods=1, holdout=holdout
    )
    held, maxima = [], []
    stats = np.empty(0)
    for value in x:
        verdict = np.array([verdict_of(value)], dtype=np.int8)
        stats = stream.push(np.array([value]), judge=lambda _rows, _stats, v=verdict: v)
        held.append(stream.last_held.tolist() == [0])
        maxima.append(stats[0, -2])
    assert stream.held_rows == sum(held)
    return held, maxima, stats


def test_a_holdout_keeps_the_body_of_an_episode_out_and_accepts_a_long_one() -> None:
    x = np.concatenate([np.zeros(20), np.full(30, 100.0), np.zeros(5), [100.0, 0.0, 100.0]])
    held, maxima, stats = held_rows_of(x, Holdout(rows=20, start=3))
    assert held == held_pattern([verdict_of(v) for v in x], 3, 20)
    # the first two rows of the episode are learnt, the next 18 held, the rest accepted
    assert held[20:22] == [False, False] and all(held[22:40]) and not any(held[40:50])
    assert sum(held) == 18
    # the stored rows: 2 + 10 of the 30 values of 100 count (the rest are "no value")
    assert stats[0, -1] == len(x) - 1 - 18
    assert maxima[20] == 0.0 and maxima[21] == 100.0  # the episode's first row is learnt


def test_an_episode_that_is_only_sometimes_anomalous_is_held_whole() -> None:
    """Alarms every other row and merely unusual rows between them: the unusual rows do
    not end the episode (a +1 / -1 counter would never reach ``start``) and are held with
    its alarms until the episode is accepted; ordinary rows after it are learnt."""
    episode = np.tile([100.0, 30.0], 20)
    x = np.concatenate([np.zeros(20), episode, np.zeros(10)])
    held, _, _ = held_rows_of(x, Holdout(rows=15, start=3))
    assert held == held_pattern([verdict_of(v) for v in x], 3, 15)
    # the counter is 3 from the episode's fifth row to its 30th, then past 15
    assert not any(held[:24]) and all(held[24:50]) and not any(held[50:])
    as_ordinary = [ANOMALOUS if v > 50 else ORDINARY for v in x]  # the rule before
    assert not any(held_pattern(as_ordinary, 3, 15))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(5, 60),
    st.integers(1, 9),
    st.integers(1, 3),
    st.integers(0, 30),
    st.sampled_from([(1, 0, False), (4, 12, False), (4, 12, True)]),
    st.randoms(),
)
def test_a_holdout_is_the_same_in_any_batching(
    seed: int,
    window: int,
    step: int,
    start: int,
    extra: int,
    layout: tuple[int, int, bool],
    rnd: object,
) -> None:
    """Judged on each row's own statistics (here: above the window's median by a
    margin), held rows are the same whether rows come one by one, in chunks, or all at
    once — plain, two-tier and bfloat16 windows alike."""
    stride, dense, compact = layout
    rows = start + extra
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, 400)
    for begin in rng.integers(0, 380, 4):  # sustained episodes
        x[begin : begin + rng.integers(3, 40)] += 8.0
    x[rng.random(x.size) < 0.05] = np.nan

    def stream() -> TrailingQuantiles:
        return TrailingQuantiles(
            window=window,
            step=step,
            quantiles=QUANTILES,
            min_periods=1,
            stride=stride,
            dense=dense,
            dtype=np.float32,
            compact=compact,
            holdout=Holdout(rows=rows, start=start),
        )

    def run(sizes: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
        window_ = stream()
        stats, held, at, turn = [], [], 0, 0
        while at < x.size:
            part = x[at : at + sizes[turn % len(sizes)]]

            def judge(rows: slice, found: np.ndarray, part: np.ndarray = part) -> np.ndarray:
                above = np.nan_to_num(part[rows] - found[:, 2], nan=-1.0)  # QUANTILES[2]
                verdict = np.where(above > 4.0, ANOMALOUS, np.where(above > 2.0, UNUSUAL, ORDINARY))
                return verdict.astype(np.int8)

            stats.append(window_.push(part, judge=judge))
            held.append(at + window_.last_held)
            at, turn = at + part.size, turn + 1
        return np.vstack(stats), np.concatenate(held), window_.held_rows

    whole = run([x.size])
    assert whole[2] > 0  # the episodes were long enough to be held
    for sizes in ([1], [rnd.randint(1, 50) for _ in range(8)]):  # type: ignore[attr-defined]
        got = run(sizes)
        assert np.array_equal(got[0], whole[0], equal_nan=True)
        assert np.array_equal(got[1], whole[1])


@pytest.mark.parametrize(
    ("single", "min_periods"),
    [(False, 5), (True, 5), (False, 1500)],
    ids=["baseline", "calibration reference", "a long min_history: in pieces"],
)
def test_a_streams_first_rows_give_the_same_statistics_all_at_once(
    single: bool, min_periods: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first rows of a stream (each a block of its own) are computed as growing
    prefixes in one sort (in pieces of bounded memory): the very numbers of one sort per
    row, NaNs and held rows included, in any batching."""
    rng = np.random.default_rng(11)
    rows = 700 if min_periods < 700 else 1600
    x = rng.standard_t(2, rows)
    x[rng.random(x.size) < 0.05] = np.nan

    def stream() -> TrailingQuantiles:
        options: dict[str, Any] = (
            {"stride": 4, "dense": 300, "dtype": np.float32, "compact": True} if single else {}
        )
        return TrailingQuantiles(
            window=2000, step=256, quantiles=(0.5, 0.9, 0.99, 1.0), min_periods=min_periods,
            holdout=Holdout(rows=50, start=3), **options,
        )  # fmt: skip

    def judged(values: np.ndarray) -> np.ndarray:
        size = np.abs(values)
        return np.where(size > 3, ANOMALOUS, np.where(size > 1.5, UNUSUAL, ORDINARY)).astype(
            np.int8
        )

    def run(chunks: list[int]) -> np.ndarray:
        window, start, out = stream(), 0, []
        for size in chunks:
            part = x[start : start + size]
            out.append(window.push(part, judge=lambda rows, stats, p=part: judged(p[rows])))
            start += size
        return np.vstack(out)

    fast = run([rows])
    assert np.array_equal(fast, run([1] * rows), equal_nan=True)
    assert np.array_equal(fast, run([37, 200, 1, rows - 238]), equal_nan=True)
    monkeypatch.setattr(TrailingQuantiles, "_prefix_until", property(lambda self: 0))
    assert np.array_equal(fast, run([rows]), equal_nan=True)  # one sort per row
