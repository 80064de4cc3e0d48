"""Absent data is an event (issue 13, point 5), in the real daemon: a source that keeps
failing opens a ``source_down`` incident that a webhook hears of, and its first good
collection resolves it — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from anomon import store
from tests.integration.test_daemon import start_daemon
from tests.loopback import Receiver, receive, serve

STATS = json.dumps({"latency": {"p99": 0.2}}).encode()


def _bodies(hook: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in hook.requests]


def _wait_for(hook: Receiver, status: str, limit: float = 40) -> dict[str, Any]:
    """The first message in ``status`` about the source, within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for body in _bodies(hook):
            if body["status"] == status and body["incidents"][0]["metric"] == "source_down":
                return body
        time.sleep(0.2)
    raise AssertionError(f"no {status} message in {limit} s: {_bodies(hook)}")


def test_a_source_that_stays_down_opens_an_incident_and_its_return_resolves_it(
    tmp_path: Path, database_url: str
) -> None:
    up = {"now": False}  # the exporter answers 503 until the test brings it back

    def respond(_path: str) -> tuple[int, bytes]:
        return (200, STATS) if up["now"] else (503, b"maintenance")

    with serve(respond) as endpoint, receive() as hook:
        config = (
            '[database]\nurl = "{url}"\n'
            '[detection]\ninterval = "1s"\n'
            '[detection.absent]\nsource_down_after = "3s"\n'
            f'[alerts]\nreceiver = "hook"\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
            '[alerts.delivery]\ninterval = "1s"\n'
            f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{hook.url}/x"\n'
            '[[sources]]\nname = "model-server"\nkind = "http_json"\ninterval = "1s"\n'
            f'url = "{endpoint}/stats"\nfields = {{latency_p99 = "latency.p99"}}\n'
        )
        daemon = start_daemon(tmp_path, database_url, config)
        try:
            firing = _wait_for(hook, "firing")
            up["now"] = True
            resolved = _wait_for(hook, "resolved")
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert daemon.returncode == 0, stderr
    (down,) = firing["incidents"]
    assert (down["entity"], down["severity"], down["labels"]["kind"]) == (
        "model-server", "critical", "absent"
    )  # fmt: skip
    assert down["value"] is None and down["resolved_at"] is None
    (back,) = resolved["incidents"]
    assert back["id"] == down["id"] and back["resolved_at"] is not None
    # the log says it too, as it happens
    assert "incident opened: source_down on model-server, critical" in stderr
    assert f"incident {down['id']} resolved: source_down on model-server" in stderr
    engine = store.open_engine(database_url)
    try:
        (incident,) = [
            i for i in store.list_incidents(engine, everything=True) if i.id == down["id"]
        ]
    finally:
        engine.dispose()
    assert (incident.status, incident.metric) == ("resolved", "source_down")
