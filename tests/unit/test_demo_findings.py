"""The demo's account of what it found: each fault in its model's incident, and the credit
model's drift told from earlier noise."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

from anomon.demo import _drift_findings, _fault_findings
from anomon.demo.predictions import LABEL_LAG, MODEL, PredictionLog
from anomon.demo.servers import Delivery
from anomon.demo.simulator import Incident, Scenario
from anomon.model import IncidentRecord, IncidentStatus, Severity
from anomon.store import AnomalyRow


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


def anomaly(row: int, ts: float, metric: str, incident: int | None) -> AnomalyRow:
    return AnomalyRow(
        row, int(ts), metric, {"model": "churn"}, "churn-model", 1.0, 0.5, 99.0, "critical",
        "up", incident,
    )  # fmt: skip


def test_a_fault_found_inside_its_models_open_incident_is_detected_there() -> None:
    # the accuracy drop's incident fired first; the leak's anomalies joined it (one
    # incident per model) and no incident of process_memory_mb was ever opened
    now = float(int(time.time()))
    leak = Incident("memory leak", "churn", "process_memory_mb", now - 150, math.inf, "ramp", 12)
    drop = Incident("accuracy drop", "churn", "model_accuracy", now - 120, math.inf, "shift", -0.07)
    opened = datetime.fromtimestamp(now - 118, UTC)
    incident = IncidentRecord(
        id=2, status=IncidentStatus.FIRING, severity=Severity.CRITICAL, peak_score=100.0,
        opened_at=opened, last_seen_at=opened, metric="model_accuracy", entity="churn-model",
    )  # fmt: skip
    anomalies = [
        anomaly(1, now - 118, "model_accuracy", 2),
        anomaly(2, now - 160, "process_memory_mb", None),  # before the leak: not it
        anomaly(3, now - 100, "process_memory_mb", 2),
        anomaly(4, now - 95, "process_memory_mb", 2),
    ]
    lines = _fault_findings(
        Scenario((leak, drop)), [incident], anomalies, [firing(now - 117, 2, "x")], now
    )
    assert lines[0].startswith("  memory leak: detected 50 s after it began, its incident told")
    assert "(incident #2, opened for model_accuracy, critical" in lines[0]
    assert lines[1].startswith("  accuracy drop: detected 2 s after it began, webhook 1 s later")
    assert "(incident #2, critical" in lines[1]
    assert lines[2] == "  other incidents during the live part: 0"
