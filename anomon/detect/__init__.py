"""The detector core: pure numpy / pandas / scikit-learn, no database, network or clock.

:class:`~anomon.detect.entity.EntityDetector` scores time series causally and
incrementally, calibrated to 0-100 and combined into one score; the daemon's
:class:`~anomon.detect.fleet.Fleet` runs many of them with one pooled IsolationForest.
"""

from anomon.detect.entity import DETECTOR_VERSION, DETECTORS, EntityDetector, Scores

__all__ = ["DETECTORS", "DETECTOR_VERSION", "EntityDetector", "Scores"]
