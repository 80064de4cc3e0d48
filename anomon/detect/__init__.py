"""The detector core: pure numpy / pandas / scikit-learn, no database, network or clock.

:class:`~anomon.detect.entity.EntityDetector` scores time series causally and
incrementally, calibrated to 0-100 and combined into one score; a
:class:`~anomon.detect.fleet.Fleet` runs many of them with one pooled IsolationForest
(the daemon), or one alone (:class:`~anomon.detect.fleet.Solo`: ``replay``).
"""

from anomon.detect.entity import DETECTOR_VERSION, DETECTORS, EntityDetector, Scores
from anomon.detect.fleet import Fleet, Solo

__all__ = ["DETECTORS", "DETECTOR_VERSION", "EntityDetector", "Fleet", "Scores", "Solo"]
