"""Seasonal baselines: what a metric usually is at this time of day (or week).

Time is cut into cycles (days, weeks) and each cycle into bins (5 minutes of a day,
1 hour of a week). A bin's value is the mean of the rows that fell in it, computed once
the bin is complete, from all of its rows at once, so it is the same however the rows
were batched. The expected value of a row is the median of its bin's values in the
previous ``periods`` cycles. Memory is ``(periods + 1) x bins`` floats per metric,
whatever the sampling rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Season:
    """A cycle length and the width of its bins, in seconds."""

    cycle: int
    bin: int

    @property
    def bins(self) -> int:
        return self.cycle // self.bin


SEASONS = {"daily": Season(86_400, 300), "weekly": Season(7 * 86_400, 3_600)}


def nan_median(rows: FloatArray) -> FloatArray:
    """The median of the valid values of each row (NaN for a row with none).

    Same values as ``np.nanmedian(rows, axis=1)``, without its masked-array overhead,
    which dominates for the few values a seasonal baseline has.
    """
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    count = np.count_nonzero(~np.isnan(ordered), axis=1)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
    median = np.where(count % 2 == 1, low, (low + high) / 2)
    return np.where(count > 0, median, np.nan)


class SeasonalProfile:
    """The bin values of the last cycles of one metric, for one season."""

    def __init__(self, season: Season, *, periods: int) -> None:
        self.season = season
        self.periods = periods
        self._values: dict[int, FloatArray] = {}  # cycle -> bin values (NaN: no rows)
        self._open_key = -1  # cycle * bins + bin of the bin still receiving rows
        self._open_rows = np.empty(0)
        self._open_expected = np.full(1, np.nan)  # every row of the open bin expects this

    def expected(self, ts: IntArray, values: FloatArray) -> FloatArray:
        """Return each row's seasonal expectation (NaN without history), then take the rows."""
        season = self.season
        cycles, bins = ts // season.cycle, (ts % season.cycle) // season.bin
        keys = cycles * season.bins + bins
        if keys.size == 1 and int(keys[0]) == self._open_key:
            # the daemon's common case: one more row in the open bin, same past cycles
            self._open_rows = np.concatenate([self._open_rows, values])
            return self._open_expected.copy()
        if keys.size == 1 and int(keys[0]) > self._open_key:
            # the daemon's other case: the row opens the next bin (every bin width, for
            # every series at once): the same arithmetic without the batch machinery
            return self._open_next(int(keys[0]), int(cycles[0]), int(bins[0]), values)
        self._close_bins(keys, values)
        lags = np.full((ts.size, self.periods), np.nan)
        if self._values:
            known = np.array(sorted(self._values), dtype=np.int64)
            table = np.vstack([self._values[cycle] for cycle in known.tolist()])
            for k in range(1, self.periods + 1):
                index = np.minimum(np.searchsorted(known, cycles - k), known.size - 1)
                found = known[index] == cycles - k
                lags[found, k - 1] = table[index[found], bins[found]]
        self._forget(int(cycles[-1]) if cycles.size else None)
        expected = nan_median(lags)
        if expected.size:
            self._open_expected = expected[-1:].copy()
        return expected

    def _open_next(self, key: int, cycle: int, bin_: int, values: FloatArray) -> FloatArray:
        """:meth:`expected` of one row that opens a new bin, closing the open one."""
        if self._open_rows.size:
            # the mean as _close_bins computes it (one reduceat segment), so that a
            # row-by-row stream stores the same bits as a batch
            rows = self._open_rows
            valid = ~np.isnan(rows)
            total = np.add.reduceat(np.where(valid, rows, 0.0), [0])[0]
            count = int(np.count_nonzero(valid))
            closed_cycle, closed_bin = divmod(self._open_key, self.season.bins)
            stored = self._values.setdefault(closed_cycle, np.full(self.season.bins, np.nan))
            stored[closed_bin] = total / count if count else np.nan
        self._open_key, self._open_rows = key, np.array(values, dtype=np.float64)
        lags = []
        for k in range(1, self.periods + 1):
            past = self._values.get(cycle - k)
            if past is not None and not np.isnan(past[bin_]):
                lags.append(float(past[bin_]))
        self._forget(cycle)
        lags.sort()
        n = len(lags)  # the median as nan_median computes it
        if n == 0:
            median = np.nan
        elif n % 2:
            median = lags[n // 2]
        else:
            median = (lags[n // 2 - 1] + lags[n // 2]) / 2
        self._open_expected = np.full(1, median)
        return self._open_expected.copy()

    def _close_bins(self, keys: IntArray, values: FloatArray) -> None:
        """Store the mean of every bin that these rows complete; keep the last one open."""
        if keys.size == 0:
            return
        all_keys = np.concatenate([np.full(self._open_rows.size, self._open_key), keys])
        all_values = np.concatenate([self._open_rows, values])
        starts = np.flatnonzero(np.diff(all_keys, prepend=all_keys[0] - 1))
        valid = ~np.isnan(all_values)
        sums = np.add.reduceat(np.where(valid, all_values, 0.0), starts)
        counts = np.add.reduceat(valid.astype(np.int64), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        self._open_key = int(all_keys[starts[-1]])
        self._open_rows = all_values[starts[-1] :].copy()  # not a view of the whole batch
        closed_cycles, closed_bins = np.divmod(all_keys[starts[:-1]], self.season.bins)
        if closed_cycles.size == 0:
            return
        cycles, first = np.unique(closed_cycles, return_index=True)  # runs are in time order
        last = np.append(first[1:], closed_cycles.size)
        for cycle, a, b in zip(cycles.tolist(), first.tolist(), last.tolist(), strict=True):
            stored = self._values.setdefault(cycle, np.full(self.season.bins, np.nan))
            stored[closed_bins[a:b]] = means[a:b]

    def _forget(self, current: int | None) -> None:
        if current is None:
            return
        for cycle in [c for c in self._values if c < current - self.periods]:
            del self._values[cycle]
