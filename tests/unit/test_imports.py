"""scikit-learn is imported where something is fitted, not when anomon starts."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
import anomon.cli, anomon.service.daemon  # what `anomon run` imports before its first job
print(sorted({m.split(".")[0] for m in sys.modules} & {"sklearn"}))
from anomon.config import ForestConfig
from anomon.detect.forest import fit_forest
import numpy as np
fit_forest(np.zeros((10, 5)), ForestConfig())
print(sorted({m.split(".")[0] for m in sys.modules} & {"sklearn"}))
"""


def test_the_daemon_starts_without_scikit_learn_and_a_forest_fit_loads_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "['sklearn']"]
