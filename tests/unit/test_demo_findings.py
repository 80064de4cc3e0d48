"""The demo's account of the credit model's drift tells the drift from earlier noise."""

from __future__ import annotations

import time
from pathlib import Path

from anomon.demo import _drift_findings
from anomon.demo.predictions import LABEL_LAG, MODEL, PredictionLog
from anomon.demo.servers import Delivery


def firing(at: float, incident: int, metric: str) -> Delivery:
    body = {
        "event": "firing",
        "incidents": [{"id": incident, "entity": f"{MODEL}-model", "metric": metric}],
    }
    return Delivery(at, body)


def test_a_label_alarm_before_drifted_labels_can_exist_is_not_the_drift(tmp_path: Path) -> None:
    drift = time.time() - 300
    credit = PredictionLog(tmp_path, drift_at=drift)
    lines: list[str] = []
    deliveries = [
        firing(drift + 9, 1, "accuracy"),  # labels of drifted predictions land 30 s later
        firing(drift + 16, 2, "estimated_accuracy"),
        firing(drift + LABEL_LAG + 12, 3, "accuracy"),
    ]
    _drift_findings(credit, deliveries, [], lines.append)
    assert lines[0].startswith(f"  {MODEL} model, before its drift could show in its labels:")
    assert "accuracy fired (incident #1, +0:09 from the drift): not the drift" in lines[0]
    assert "  model drift from its scores alone: told 16 s after it began (incident #2" in lines[1]
    told = f"  model drift from its labels: told {LABEL_LAG + 12} s after it began (incident #3"
    assert lines[2].startswith(told)
