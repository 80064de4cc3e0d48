"""The detector core: pure numpy / pandas / scikit-learn, no database, network or clock.

Estimators follow scikit-learn's outlier-detector contract (``score_samples`` higher
for normal rows, ``decision_function`` negative for anomalies, ``predict`` -1 / 1);
:class:`~anomon.detect.entity.EntityDetector` wraps them for time series: causal,
incremental, calibrated to 0-100 and combined into one score.
"""

from anomon.detect.entity import DETECTOR_VERSION, DETECTORS, EntityDetector, Scores
from anomon.detect.zscore import RobustZScoreDetector

__all__ = ["DETECTORS", "DETECTOR_VERSION", "EntityDetector", "RobustZScoreDetector", "Scores"]
