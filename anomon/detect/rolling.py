"""Trailing statistics of a stream, exact and independent of how rows are batched.

:class:`TrailingQuantiles` gives each row quantiles of the ``window`` rows before the
start of its *block* of ``step`` rows (blocks are counted from the first row ever
pushed). Refreshing once per block instead of once per row makes a long replay cost
``window / step`` element operations per row instead of a sort per row, and a daemon
cycle of one new row usually reuses the block's cached values; a baseline that is at
most ``step - 1`` rows stale is immaterial next to a window of hundreds. The first
``max(step, min_periods)`` rows are blocks of one row each (later blocks start every
``step`` rows from there): while the history is short every row counts, a young series
is judged on all of it, and statistics exist from the ``min_periods``-th row on.

Quantiles are ``lower`` order statistics (the k-th smallest valid value, ``k = int(q *
(m - 1))``): selections, not sums, so they are bit-for-bit the same whichever way the
rows arrive. NaN rows count towards the window, not towards the statistics.
:func:`trailing_max` is the exact per-row maximum of the previous rows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

_FEW = 16  # up to this many new rows, a loop of np.max beats pandas' setup cost


Verdicts = npt.NDArray[np.int8]
"""What a judge says of each row: :data:`ANOMALOUS`, :data:`UNUSUAL` or :data:`ORDINARY`."""
ANOMALOUS, UNUSUAL, ORDINARY = 1, 0, -1  # the steps they make a Holdout's counter take

Judge = Callable[[slice, FloatArray], Verdicts]
"""``judge(rows, stats)``: the verdict on each of the pushed rows ``rows``, given the
statistics those rows get (``(len(rows), len(quantiles) + 1)``)."""


@dataclass(frozen=True, slots=True)
class Holdout:
    """Keep an episode out of the window it is judged against, for a while.

    A counter rises by one for each row its judge calls anomalous, falls by one for each
    row it calls ordinary and stays for a row it calls unusual (between the two: rarer
    than most, not an alarm), never below zero (a CUSUM of "anomalous"). A row that is
    not ordinary is stored as "no value" while that counter is between ``start`` and
    ``rows``: the first ``start - 1`` anomalous rows of an episode are learnt (an
    isolated spike is ordinary data), the rest of a sustained one is not (a fault does
    not become the reference it is judged against, so it does not fade as the reference
    fills with it), and an episode once its alarms outnumber its ordinary rows by more
    than ``rows`` is accepted as the new normal (after ``rows`` rows of a clear fault;
    a noisy one takes longer). A noisy episode that sometimes looks merely unusual keeps
    its counter, and is held whole: its weaker rows would lift the reference's tail as
    much as its alarms.
    """

    rows: int
    start: int = 2


class TrailingQuantiles:
    """Quantiles of the trailing window of one stream, refreshed every ``step`` rows.

    With ``stride`` > 1 only every ``stride``-th row (counted from the first) is kept
    once it is older than the ``dense`` most recent rows, so a long window costs about
    ``dense + window / stride`` values of memory: the recent past in full, the older past
    sampled. Statistics are then weighted order statistics (a kept older row stands for
    ``stride`` rows) and counts are in rows -- except the maximum (a quantile of 1.0) of
    such a two-tier window: it is every row's, from the largest value of each chunk of
    :data:`CHUNK_STRIDES` kept rows' worth of older rows (held rows left out), since the
    rare large values are what sampling loses. The window then begins at the start of
    the chunk its oldest row is in (up to a chunk less one of older rows count towards
    its maximum), and costs ``window / (CHUNK_STRIDES * stride)`` values and a chunk of
    recent rows more. With ``dtype`` float32 values are rounded to
    single precision as they arrive (half the memory; fine for scores and deviations,
    not for raw metric values whose level dwarfs their spread); with ``compact`` as well
    they are rounded further to bfloat16 (:func:`to_bfloat16`, a quarter of the memory of
    float64), for calibration references, whose tail quantiles need no more.
    """

    def __init__(
        self,
        *,
        window: int,
        step: int,
        quantiles: Sequence[float],
        min_periods: int,
        stride: int = 1,
        dense: int = 0,
        dtype: type[np.floating[Any]] = np.float64,
        compact: bool = False,
        holdout: Holdout | None = None,
    ) -> None:
        if window < 1 or step < 1 or stride < 1 or dense < 0:
            raise ValueError(
                "window, step and stride must be positive and dense not negative, got: "
                f"{window}, {step}, {stride}, {dense}"
            )
        self.window = window
        self.step = step
        self.stride = stride
        self.dense = 0 if stride == 1 else min(dense, window)
        self.quantiles = tuple(quantiles)
        self.min_periods = max(min_periods, 1)
        if compact and dtype != np.float32:
            raise ValueError("compact storage rounds float32 values: dtype must be float32")
        if holdout is not None and holdout.rows < 0:
            raise ValueError(f"a holdout's rows must not be negative, got {holdout.rows}")
        self.dtype = dtype
        self.compact = compact
        self.holdout = holdout
        self._run = 0  # the Holdout's counter after the last row
        # which of the last pushed rows were held (their indices: usually none, and never a
        # mask as long as a warm-up batch kept for every series)
        self.last_held = np.empty(0, dtype=np.int64)
        self.held_rows = 0  # rows held out so far, ever
        stored = np.uint16 if compact else dtype
        self._tail = np.empty(0, dtype=stored)  # the last kept rows, enough to rebuild any window
        # the last dense + step rows, all of them (and a chunk more: see _add_chunk_maximum)
        self._recent = np.empty(0, dtype=stored)
        self._count = 0  # rows pushed so far
        self._cache: tuple[int, FloatArray] | None = None  # (block start, its statistics)
        # A sampled window's maximum from its kept rows alone misses the rare large values
        # a long reference exists for (one row in `stride` is kept): where it has a maximum
        # and samples (its dense part is shorter than it), the maximum of every chunk of
        # CHUNK_STRIDES * stride rows (held rows left out) is kept as well.
        whole = 1.0 in self.quantiles and 0 < self.dense < self.window
        self._max_at = self.quantiles.index(1.0) if whole else -1
        self._chunk_rows = CHUNK_STRIDES * self.stride if whole else 0  # rows per chunk
        self._chunk_max = np.empty(0, dtype=dtype)  # of chunks _first_chunk, ...
        self._first_chunk = 0

    def push(self, new: FloatArray, *, judge: Judge | None = None) -> FloatArray:
        """Return statistics for ``new``, then remember it.

        The result is ``(len(new), len(quantiles) + 1)``: the quantiles, then how many
        valid rows they stand for. With a :class:`Holdout` and a ``judge``, each block's
        rows are judged on their statistics before the next block reads them, and
        :attr:`last_held` gives the indices of the rows kept out.
        """
        values = np.asarray(new, dtype=self.dtype)
        if self.compact:
            values = to_bfloat16(values)
        if values.size == 0:
            return np.empty((0, len(self.quantiles) + 1))
        if values.size == 1 and self._cache is not None and self._cache[0] == self._block_of(0):
            return self._push_one_cached(values, judge)
        if values.size == 1 and self._count < self._prefix_until and self._whole_prefix:
            # a young stream's next row (a block of its own): the order statistics of
            # every row so far, without the batch machinery (a new fleet's cycles)
            stream = self._decoded(self._recent if self.dense else self._tail)
            self._cache = (self._count, order_statistics(stream, self.quantiles, self.min_periods))
            return self._push_one_cached(values, judge)
        positions = self._count + np.arange(values.size)
        kept_before = -(-self._count // self.stride)  # kept rows so far: ceil(count / stride)
        is_kept = positions % self.stride == 0
        context = np.concatenate([self._tail, values[is_kept]])
        recent = np.concatenate([self._recent, values]) if self.dense else self._recent
        first = kept_before - self._tail.size  # kept-row index of context[0]
        first_recent = self._count - self._recent.size  # row index of recent[0]
        starts = self._block_starts(positions)
        out = np.empty((values.size, len(self.quantiles) + 1))
        blocks, begins = np.unique(starts, return_index=True)  # starts are sorted
        ends = np.append(begins[1:], values.size)
        kept, every = self._decoded(context), self._decoded(recent)  # once, not per block
        if self._chunk_rows:  # a block reads only chunks older than its dense rows
            self._fold_maxima(every[every.size - values.size :])
        held = np.zeros(values.size, dtype=bool)
        # where each new row sits in context (if kept) and in recent (if dense)
        in_context = self._tail.size + np.cumsum(is_kept) - 1
        in_recent = self._recent.size + np.arange(values.size)
        parts = blocks.size
        # optimistic: judge `chunk` blocks at once as if nothing were held; when a row is
        # held, keep the verdicts up to its block (their statistics did not include it)
        # and go on from the next block with one block at a time, doubling again after
        # every round without a hold: whole-array work unless an episode is on
        done, chunk = 0, _CHUNK_BLOCKS
        while done < parts:
            upto = min(done + chunk, parts) if self.holdout and judge else parts
            rest = done
            if self._whole_prefix and (first_recent if self.dense else first) == 0:
                # blocks of one row each: the statistics of growing prefixes, in pieces
                # of at most _PREFIX_CELLS matrix cells (a large min_history is long)
                warm = min(int(np.searchsorted(blocks, self._prefix_until, side="left")), upto)
                while rest < warm:
                    piece = max(1, _PREFIX_CELLS // (int(blocks[warm - 1]) + 1))
                    end = min(warm, rest + piece)
                    out[begins[rest] : ends[end - 1]] = self._prefix_stats(
                        every if self.dense else kept, int(blocks[rest]), int(blocks[end - 1]) + 1
                    )
                    rest = end
            for k in range(rest, upto):
                out[begins[k] : ends[k]] = self._block_stats(
                    int(blocks[k]), kept, first, every, first_recent
                )
            if not (self.holdout and judge):
                break
            rows = slice(int(begins[done]), int(ends[upto - 1]))
            verdict, run = judge(rows, out[rows]), self._run
            chosen = self._held(verdict)
            if not chosen.any():
                done, chunk = upto, min(2 * chunk, _CHUNK_BLOCKS)
                continue
            last = int(np.searchsorted(ends, rows.start + np.flatnonzero(chosen)[0], "right"))
            self._run = run  # replay the counter over the accepted blocks only
            accepted = slice(rows.start, int(ends[last]))
            held[accepted] = self._held(verdict[: accepted.stop - accepted.start])
            gone = np.flatnonzero(held[accepted]) + accepted.start
            for stored, decoded, at in (
                (context, kept, in_context[gone[is_kept[gone]]]),
                (recent, every, in_recent[gone] if self.dense else gone[:0]),
            ):
                stored[at] = self._nan
                decoded[at] = np.nan
            if self._chunk_rows and gone.size:
                self._refold_maxima(self._count + gone, every, first_recent)
            self._cache = None  # later blocks' statistics were computed without the hold
            done, chunk = last + 1, 1
        self.last_held = np.flatnonzero(held)
        self.held_rows += int(self.last_held.size)
        self._count += values.size
        if self._chunk_rows:
            self._drop_maxima()
        # copies, not views: a view would keep this whole batch alive (a warm-up of
        # thousands of rows, for every series) until the next push replaces it
        self._tail = context[-self._keep :].copy()
        if self.dense:
            self._recent = recent[-(self.dense + self.step + self._chunk_rows) :].copy()
        return out

    def peek(self) -> FloatArray:
        """The statistics the next pushed row will get (computed and cached if needed):
        lets many streams be judged together before each is pushed one row."""
        block = self._block_of(0)
        if self._cache is None or self._cache[0] != block:
            kept_before = -(-self._count // self.stride)
            self._block_stats(
                block,
                self._decoded(self._tail),
                kept_before - self._tail.size,
                self._decoded(self._recent),
                self._count - self._recent.size,
            )
        assert self._cache is not None
        return self._cache[1]

    @property
    def _nan(self) -> float | int:
        """The stored form of "no value"."""
        return BFLOAT16_NAN if self.compact else np.nan

    @property
    def _keep(self) -> int:
        """Kept rows needed to rebuild any window: ceil((window + step) / stride) + 1."""
        return -(-(self.window + self.step) // self.stride) + 1

    @property
    def _whole_prefix(self) -> bool:
        """Whether a young row's window is every row before it, all kept as they came
        (dense, or not sampled at all)."""
        return self.dense > 0 or self.stride == 1

    @property
    def _prefix_until(self) -> int:
        """Blocks before this row are each one row (see _block_starts) whose window is
        the whole prefix of the stream before it (all of it dense, none of it sampled)."""
        whole = self.window if self.dense == 0 else min(self.window, self.dense)
        return min(max(self.step, self.min_periods), whole + 1)

    def _prefix_stats(self, stream: npt.NDArray[Any], start: int, stop: int) -> FloatArray:
        """The statistics of the blocks ``start`` to ``stop`` of the stream's first rows
        (each a block of one row, their window still the whole prefix before them): one
        sort of a triangular matrix instead of one sort per row -- what a restart spends
        most of its warm-up on. The same numbers as :meth:`_block_stats` row by row."""
        prefix = np.asarray(stream[:stop], dtype=np.float64)
        rows = np.arange(start, stop)
        matrix = np.where(np.arange(stop)[None, :] < rows[:, None], prefix[None, :], np.nan)
        matrix.sort(axis=1)  # NaN last
        valid = np.concatenate([[0], np.cumsum(~np.isnan(prefix))])[rows]
        out = np.full((rows.size, len(self.quantiles) + 1), np.nan)
        out[:, -1] = valid
        least = max(self.min_periods, 1)
        enough = valid >= least
        for column, q in enumerate(self.quantiles):
            index = (q * np.maximum(valid - 1, 0)).astype(np.int64)
            out[:, column] = np.where(enough, matrix[np.arange(rows.size), index], np.nan)
        self._cache = (stop - 1, out[-1].copy())
        return out

    def _block_starts(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The first row of each row's block: every row its own block while the history
        is short (the first ``max(step, min_periods)`` rows), then blocks of ``step``."""
        warm = max(self.step, self.min_periods)
        late = positions - (positions - warm) % self.step
        starts: npt.NDArray[np.int64] = np.where(positions < warm, positions, late)
        return starts

    def _block_of(self, offset: int) -> int:
        position = self._count + offset
        warm = max(self.step, self.min_periods)
        return position if position < warm else position - (position - warm) % self.step

    def _held(self, verdicts: Verdicts) -> npt.NDArray[np.bool_]:
        """Which of consecutive judged rows the :class:`Holdout` keeps out; advances its
        counter."""
        assert self.holdout is not None
        rule = self.holdout
        if verdicts.dtype != np.int8:  # a bool would make every ordinary row unusual
            raise TypeError(f"a judge gives int8 verdicts, got {verdicts.dtype}")
        if verdicts.size == 1:  # the daemon's case, in plain Python
            verdict = int(verdicts[0])
            self._run = max(self._run + verdict, 0)
            return np.array([verdict != ORDINARY and rule.start <= self._run <= rule.rows])
        # the counter's walk (each verdict its step, floored at 0) as a Lindley
        # recursion: after row n it is S_n - min(-c0, min_k<=n S_k), with S the running
        # sum of the steps and c0 the counter before these rows
        walk = np.cumsum(verdicts, dtype=np.int64)
        counter = walk - np.minimum(np.minimum.accumulate(walk), -self._run)
        self._run = int(counter[-1])
        held: npt.NDArray[np.bool_] = (
            (verdicts != ORDINARY) & (counter >= rule.start) & (counter <= rule.rows)
        )
        return held

    def _push_one_cached(self, values: npt.NDArray[Any], judge: Judge | None) -> FloatArray:
        """The daemon's common case: one new row inside a block already computed."""
        assert self._cache is not None
        stats = self._cache[1][None, :].copy()
        self.last_held = _NONE_HELD
        if self.holdout is not None and judge is not None:
            self.last_held = np.flatnonzero(self._held(judge(slice(0, 1), stats)))
            if self.last_held.size:
                values = np.full(1, self._nan, dtype=values.dtype)
                self.held_rows += 1
        if self._chunk_rows:
            self._fold_maxima(self._decoded(values))
        if self._count % self.stride == 0:
            self._tail = np.concatenate([self._tail[-(self._keep - 1) :], values])
        if self.dense:
            kept = self.dense + self.step + self._chunk_rows - 1
            self._recent = np.concatenate([self._recent[-kept:], values])
        self._count += 1
        if self._chunk_rows and self._count % self._chunk_rows == 0:
            self._drop_maxima()
        return stats

    def _block_stats(
        self, block: int, context: FloatArray, first: int, recent: FloatArray, first_recent: int
    ) -> FloatArray:
        if self._cache is not None and self._cache[0] == block:
            return self._cache[1]
        boundary = max(block - self.dense, 0)  # rows from here on are all kept
        lo = -(-max(block - self.window, 0) // self.stride)  # kept rows in [block - window, ..)
        hi = -(-boundary // self.stride)
        sampled = context[max(lo, first) - first : max(hi, first) - first]
        if self.dense:
            full = recent[max(boundary, first_recent) - first_recent : block - first_recent]
            stats = weighted_order_statistics(
                sampled, self.stride, full, self.quantiles, self.min_periods
            )
        else:
            stats = order_statistics(sampled, self.quantiles, -(-self.min_periods // self.stride))
            stats[-1] *= self.stride
        if self._chunk_rows:
            self._add_chunk_maximum(stats, block, recent, first_recent)
        self._cache = (block, stats)
        return stats

    def _add_chunk_maximum(
        self, stats: FloatArray, block: int, recent: npt.NDArray[Any], first_recent: int
    ) -> None:
        """Raise ``stats``' maximum (in place) to that of every row of block ``block``'s
        window, not only its kept ones: the maxima of the chunks before the one its dense
        rows begin in, and the rows of that chunk from ``recent`` (which reaches back a
        chunk further than the dense rows). A chunk that begins before the window counts
        whole: the window's oldest edge is known to within a chunk of rows."""
        older = block - self.dense  # the rows before this are sampled
        start = max(block - self.window, 0)
        if older <= start or np.isnan(stats[self._max_at]):
            return  # no rows sampled yet, or too few for statistics
        size = self._chunk_rows
        cut = older // size * size  # the window's chunks before this hold no later row
        lo = max(start // size * size, cut)  # the newest chunk's rows in the window
        chunks = self._chunk_max[
            max(start // size - self._first_chunk, 0) : max(cut // size - self._first_chunk, 0)
        ]
        rows = recent[max(lo, first_recent) - first_recent : older - first_recent]
        found = max(
            float(np.nanmax(chunks, initial=-np.inf)) if chunks.size else -np.inf,
            float(np.nanmax(rows, initial=-np.inf)) if rows.size else -np.inf,
        )
        stats[self._max_at] = max(stats[self._max_at], found)

    def _fold_maxima(self, rows: npt.NDArray[Any]) -> None:
        """Fold the rows being pushed (the first at ``self._count``) into the chunk
        maxima."""
        size = self._chunk_rows
        if self._chunk_max.size == 0:
            self._first_chunk = self._count // size
        last = (self._count + rows.size - 1) // size
        missing = last + 1 - (self._first_chunk + self._chunk_max.size)
        if missing > 0:
            grown = np.full(missing, np.nan, dtype=self._chunk_max.dtype)
            self._chunk_max = np.concatenate([self._chunk_max, grown])
        if rows.size == 1:  # the daemon's case, in plain Python
            value, at = float(rows[0]), self._count // size - self._first_chunk
            if value == value and not value <= self._chunk_max[at]:  # NaN is no value
                self._chunk_max[at] = value
            return
        index = (self._count + np.arange(rows.size)) // size - self._first_chunk
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        with np.errstate(invalid="ignore"):
            maxima = np.fmax.reduceat(np.asarray(rows, dtype=self._chunk_max.dtype), starts)
        chunks = index[starts]
        self._chunk_max[chunks] = np.fmax(self._chunk_max[chunks], maxima)

    def _refold_maxima(
        self, positions: npt.NDArray[np.int64], every: npt.NDArray[Any], first_recent: int
    ) -> None:
        """The chunks of rows held after they were folded in, again without them: every
        row of a chunk that the batch reaches is in ``every`` (row ``first_recent`` on)."""
        size, end = self._chunk_rows, first_recent + every.size
        for chunk in np.unique(positions // size).tolist():
            lo, hi = max(chunk * size, first_recent), min((chunk + 1) * size, end)
            part = every[lo - first_recent : hi - first_recent]
            valid = part[~np.isnan(part)]
            self._chunk_max[chunk - self._first_chunk] = valid.max() if valid.size else np.nan

    def _drop_maxima(self) -> None:
        """Drop the chunks no later window reaches (a later block begins at most a step
        before the next row)."""
        reach = max(self._count - self.step - self.window, 0)
        drop = reach // self._chunk_rows - self._first_chunk
        if drop > 0:
            self._chunk_max = self._chunk_max[drop:].copy()
            self._first_chunk += drop

    def _decoded(self, stored: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Stored rows as floats (float32 or float64, as the window keeps them)."""
        return from_bfloat16(stored) if self.compact else stored


BFLOAT16_NAN = 0x7FC0  # a quiet NaN, as stored by to_bfloat16
CHUNK_STRIDES = 16  # a sampled window's maximum is kept per this many of its kept rows
_NONE_HELD = np.empty(0, dtype=np.int64)
_CHUNK_BLOCKS = 128  # blocks judged at once while no row is held (see push)
_PREFIX_CELLS = 1 << 20  # the largest triangular matrix _prefix_stats sorts at once (8 MB)


def to_bfloat16(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """The upper half of each float32, rounded to nearest even: bfloat16, kept as uint16.

    8 bits of precision (about 0.4%) over float32's whole range: enough for the tail
    quantiles of a calibration reference, at half the memory of float32. NaN stays NaN.
    """
    if values.size == 1:  # the daemon's case, where numpy's per-call cost dominates
        return np.array([_bfloat16_bits(float(values[0]))], dtype=np.uint16)
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(BFLOAT16_NAN), rounded)


def _bfloat16_bits(value: float) -> int:
    """:func:`to_bfloat16` of one value, in plain Python."""
    if value != value:  # NaN
        return BFLOAT16_NAN
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def from_bfloat16(stored: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """The float32 values of :func:`to_bfloat16`."""
    return (stored.astype(np.uint32) << 16).view(np.float32)


def order_statistics(rows: FloatArray, quantiles: Sequence[float], min_periods: int) -> FloatArray:
    """Return the ``lower`` quantiles of the valid values of ``rows`` and their count.

    The quantiles are NaN when there are fewer than ``min_periods`` valid values.
    """
    ordered = np.sort(rows).astype(np.float64, copy=False)  # sort beats multi-kth partition
    valid = int(np.searchsorted(ordered, np.nan))  # NaN sorts last: this counts the rest
    out = np.full(len(quantiles) + 1, np.nan)
    out[-1] = valid
    if valid >= max(min_periods, 1):
        out[:-1] = ordered[[int(q * (valid - 1)) for q in quantiles]]
    return out


def weighted_order_statistics(
    sampled: FloatArray,
    weight: int,
    full: FloatArray,
    quantiles: Sequence[float],
    min_periods: int,
) -> FloatArray:
    """:func:`order_statistics` of ``full`` together with ``sampled`` rows that each stand
    for ``weight`` rows; the count is in rows."""
    if sampled.size == 0:
        return order_statistics(full, quantiles, min_periods)
    if sampled.dtype == np.float32 and full.dtype == np.float32:
        return _tagged_order_statistics(sampled, weight, full, quantiles, min_periods)
    # each part sorted alone, then merged: a stable argsort of two sorted runs is a merge
    # (a third of the cost of an argsort of the raw values); NaN sorts last
    values = np.concatenate([np.sort(sampled), np.sort(full)])
    order = np.argsort(values, kind="stable")
    valid = int(np.count_nonzero(~np.isnan(values)))
    cumulative = np.cumsum(np.where(order[:valid] < sampled.size, weight, 1))
    total = int(cumulative[-1]) if valid else 0
    out = np.full(len(quantiles) + 1, np.nan)
    out[-1] = total
    if total >= max(min_periods, 1):
        ranks = np.array([int(q * (total - 1)) for q in quantiles], dtype=np.int64)
        out[:-1] = values[order[np.searchsorted(cumulative, ranks, side="right")]]
    return out


_TAG = np.uint64(1)


def _tagged_order_statistics(
    sampled: npt.NDArray[Any],
    weight: int,
    full: npt.NDArray[Any],
    quantiles: Sequence[float],
    min_periods: int,
) -> FloatArray:
    """:func:`weighted_order_statistics` of single-precision parts, by one plain sort.

    A float32 value widened to float64 has 29 zero bits at the bottom of its mantissa;
    the lowest one marks a sampled row. Tagged or not, distinct float32 values keep their
    order (a tag moves a value by far less than the float32 spacing), so one sort of the
    raw values gives the merged order and the tags give the weights: half the cost of
    an argsort merge. The tag is cleared from the values returned, which are exact.
    """
    values = np.empty(sampled.size + full.size)
    values[: sampled.size], values[sampled.size :] = sampled, full
    bits = values.view(np.uint64)
    bits[: sampled.size] |= _TAG
    values.sort()  # NaN (tagged or not) sorts last
    valid = int(np.searchsorted(values, np.nan))
    extra = np.cumsum((bits[:valid] & _TAG).astype(np.int32))  # sampled rows so far
    total = valid + (weight - 1) * int(extra[-1]) if valid else 0
    out = np.full(len(quantiles) + 1, np.nan)
    out[-1] = total
    if total >= max(min_periods, 1):
        cumulative = np.arange(1, valid + 1) + (weight - 1) * extra  # rows so far
        ranks = np.array([int(q * (total - 1)) for q in quantiles], dtype=np.int64)
        chosen = bits[np.searchsorted(cumulative, ranks, side="right")] & ~_TAG
        out[:-1] = chosen.view(np.float64)
    return out


def trailing_max(history: FloatArray, new: FloatArray, *, window: int) -> FloatArray:
    """Return, for each row of ``new``, the maximum of the ``window`` rows before it.

    ``history`` holds the rows before ``new``. NaN rows are skipped; a row with no
    valid row before it gets NaN.
    """
    context = np.concatenate([history[-window:], new])
    offset = context.size - new.size
    if new.size <= _FEW:
        out = np.full(new.size, np.nan)
        for row, end in enumerate(range(offset, context.size)):
            rows = context[max(0, end - window) : end]
            if rows.size and not np.all(np.isnan(rows)):
                out[row] = np.nanmax(rows)
        return out
    shifted = pd.Series(np.concatenate([[np.nan], context[:-1]]))
    return shifted.rolling(window, min_periods=1).max().to_numpy()[offset:]
