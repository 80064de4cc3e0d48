"""The detectors' parameters: what the config sets, and the internals it does not.

Hyperparameters go in once, as a :class:`DetectorParams` built from the config; the
detectors keep only fitted state (trailing windows, references, counters). The internals
have measured defaults (README, "Calibration" and "Warm-up"); tests and benchmarks that
need small stand-ins build their own params instead of patching module constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomon.config import DetectionConfig

DEFAULT_PRIOR_WEIGHT = 400.0


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Everything a detector is built from."""

    config: DetectionConfig
    # A calibration reference keeps its most recent reference_dense rows in full and about
    # reference_sparse of the older ones (every n-th row): the rarity of a score needs a
    # long memory, and a dense one only for the recent past (2,000 dense rows lost NAB
    # leave-one-category-out 69.2 -> 65.7; 4,500 sparse ones gave nothing over 3,000).
    # Its maximum is every row's all the same (rolling.CHUNK_STRIDES): all 40,000 rows
    # dense gave SMD AUC-PR 0.431 against 0.425 with chunk maxima, at six times the memory.
    reference_dense: int = 4000
    reference_sparse: int = 3000
    # A reference is refreshed every reference_step rows: its dense part is long enough
    # that this staleness is immaterial (512 was measured: NAB LOCO 52.9). The forest's
    # raw scores come from one model refitted rarely and move slowly: every 1,024 rows.
    reference_step: int = 256
    forest_reference_step: int = 1024
    # Trailing baselines are refreshed every window / refreshes_per_window rows, and at
    # least every max_refresh_step rows, so short windows are not judged on stale values.
    refreshes_per_window: int = 16
    max_refresh_step: int = 128
    # A sustained anomalous episode is kept out of a detector's reference from its
    # holdout_start-th row to its (baseline_window / holdout_share)-th (rolling.Holdout).
    holdout_share: int = 4
    holdout_start: int = 20
    # While a metric's history is short its reference quantiles are shrunk towards a
    # normal distribution's, as if prior_weight ordinary rows had been seen; it is
    # "learning" until it has that many valid rows (and one whole seasonal cycle).
    prior_weight: float = DEFAULT_PRIOR_WEIGHT

    @classmethod
    def of(cls, given: DetectionConfig | DetectorParams) -> DetectorParams:
        """``given`` if it is params already, else the defaults around that config."""
        return given if isinstance(given, DetectorParams) else cls(given)

    @property
    def learned_rows(self) -> int:
        """Valid rows after which a metric is no longer learning (with its cycle seen)."""
        return int(self.prior_weight)
