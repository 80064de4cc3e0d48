"""The ``alertmanager`` receiver against a real Alertmanager on 127.0.0.1 (issue 14,
point 2a): an incident found by the detection job is pushed to its API as Prometheus
pushes alerts, Alertmanager routes it to a webhook of its own, the alert is re-sent
while it fires (its endsAt moves on), and it resolves with the incident.

The server is Debian's ``prometheus-alertmanager`` (installed by scripts/test); its
times are real, so the stored series ends now.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from anomon import store
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from tests.conftest import save_samples
from tests.loopback import Receiver, free_port, receive

DETECTION = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})
ROWS = 1030  # one a minute, the last one now
SHIFT = range(1000, 1012)  # a latency shift of twelve minutes, 30 to 19 minutes ago


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Receiver]]:
    """A real Alertmanager that sends every group at once to a loopback webhook."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        if os.environ.get("ANOMON_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus-alertmanager is required here but not installed")
        pytest.skip("no alertmanager binary (scripts/test installs Debian's)")
    folder: Path = tmp_path_factory.mktemp("alertmanager")
    with receive() as hook:
        (folder / "alertmanager.yml").write_text(
            "route:\n  receiver: hook\n  group_by: [alertname, entity]\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            "receivers:\n  - name: hook\n    webhook_configs:\n"
            f"      - url: {hook.url}/am\n        send_resolved: true\n"
        )
        port = free_port()
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'alertmanager.yml'}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _until(lambda: _ready(url), 30, "Alertmanager did not become ready")
            yield url, hook
        finally:
            server.terminate()
            server.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _until(condition: Callable[[], Any], seconds: float, message: str) -> Any:
    """Poll ``condition`` every 0.1 s for at most ``seconds``; return its first truthy value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    pytest.fail(message)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _collect(engine: store.Engine, start: int, first: int, last: int) -> None:
    values = 200 + np.random.default_rng(3).normal(0, 2, ROWS)
    values[list(SHIFT)] += 80
    info = SeriesInfo("model-server", "churn", SeriesKind.LATENCY, "ms")
    key = SeriesKey.of("latency_p99", {"model": "churn"})
    samples = [Sample(key, info, start + 60 * i, float(values[i])) for i in range(first, last)]
    save_samples(engine, samples, at=datetime.fromtimestamp(start + 60 * last, UTC))


def _alerts(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    return sorted(found, key=lambda alert: alert["labels"].get("severity", ""))


def _webhook_statuses(hook: Receiver) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each message Alertmanager sent: its status and (severity, status) of its alerts."""
    return [
        (body["status"], sorted((a["labels"]["severity"], a["status"]) for a in body["alerts"]))
        for body in (json.loads(request.body) for request in hook.requests)
    ]


def test_an_incident_is_pushed_kept_alive_and_resolved_in_a_real_alertmanager(
    engine: store.Engine, alertmanager: tuple[str, Receiver]
) -> None:
    url, hook = alertmanager
    hook.requests.clear()
    now = int(time.time()) // 60 * 60
    start = now - 60 * (ROWS - 1)
    alerts = AlertsConfig.model_validate(
        {
            "receiver": "am",
            "receivers": [
                {"name": "am", "kind": "alertmanager", "url": url, "resend_every": "10m"}
            ],
            "group_wait": "0s",
            "group_interval": "1m",
        }
    )
    clock = Clock(datetime.fromtimestamp(start + 60 * 1005, UTC))
    ahead = SamplesConfig(max_ahead=timedelta(hours=2))
    detect = DetectJob(engine, DETECTION, clock=clock, alerts=alerts, samples=ahead)
    notifiers = build_notifiers(alerts)
    deliver = DeliverJob(engine, alerts, notifiers, clock=clock)
    try:
        _push_refresh_and_resolve(engine, url, hook, start, clock, detect, deliver)
    finally:
        for notifier in notifiers.values():
            notifier.close()  # its keep-alive connection to Alertmanager


def _push_refresh_and_resolve(
    engine: store.Engine,
    url: str,
    hook: Receiver,
    start: int,
    clock: Clock,
    detect: DetectJob,
    deliver: DeliverJob,
) -> None:

    _collect(engine, start, 0, 1005)  # into the shift: an incident opens
    detect()
    deliver.run_once()
    (pushed,) = _until(lambda: _alerts(url), 10, "Alertmanager has no alert")[-1:]
    assert pushed["status"]["state"] == "active"
    labels = pushed["labels"]
    assert {k: labels[k] for k in ("alertname", "entity", "model", "source")} == {
        "alertname": "latency_p99", "entity": "churn", "model": "churn", "source": "model-server"
    }  # fmt: skip
    assert labels["severity"] in ("warning", "critical")
    assert float(pushed["annotations"]["value"]) > 260.0
    assert pushed["annotations"]["summary"].startswith("latency_p99 on churn is ")
    first_end = datetime.fromisoformat(pushed["endsAt"].replace("Z", "+00:00"))
    # endsAt: four resend intervals after the push, so it stays active between pushes
    assert abs(first_end - (clock.now + timedelta(minutes=40))) < timedelta(seconds=2)
    _until(
        lambda: ("firing", [(labels["severity"], "firing")]) in _webhook_statuses(hook),
        15,
        f"Alertmanager's webhook was not told it fires: {_webhook_statuses(hook)}",
    )

    clock.now += timedelta(minutes=10)  # a resend interval later: pushed again
    deliver.run_once()
    renewed = _until(
        lambda: [
            a for a in _alerts(url) if a["labels"] == labels and a["endsAt"] != pushed["endsAt"]
        ],
        10,
        "the firing alert was not re-sent",
    )[0]
    assert datetime.fromisoformat(renewed["endsAt"].replace("Z", "+00:00")) > first_end

    _collect(engine, start, 1005, ROWS)  # back to normal: it resolves
    clock.now = datetime.fromtimestamp(start + 60 * (ROWS - 1), UTC)
    detect()
    deliver.run_once()
    _until(
        lambda: not [a for a in _alerts(url) if a["labels"] == labels],  # listed until it ends
        10,
        f"the alert did not resolve: {_alerts(url)}",
    )
    _until(
        lambda: any(status == "resolved" for status, _ in _webhook_statuses(hook)),
        15,
        f"Alertmanager's webhook was not told it resolved: {_webhook_statuses(hook)}",
    )
