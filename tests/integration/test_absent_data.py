"""Absent data is an event (issue 13, point 5), in the real daemon: a source that keeps
failing opens a ``source_down`` incident that a webhook hears of, and its first good
collection resolves it — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from anomon import store
from tests.integration.test_daemon import reap, start_daemon
from tests.loopback import Receiver, receive, serve

STATS = json.dumps({"latency": {"p99": 0.2}}).encode()


def _bodies(hook: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in hook.requests]


def _wait_for(
    hook: Receiver, status: str, metric: str = "source_down", limit: float = 40
) -> dict[str, Any]:
    """The first message in ``status`` about an incident of ``metric``, within ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for body in _bodies(hook):
            about = [i for i in body["incidents"] if i["metric"] == metric]
            if about and body["status"] == status:
                return body
        time.sleep(0.2)
    raise AssertionError(f"no {status} {metric} message in {limit} s: {_bodies(hook)}")


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
            reap(daemon)
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


def test_a_series_that_stops_arriving_opens_an_incident_and_its_return_resolves_it(
    tmp_path: Path, database_url: str
) -> None:
    both = {"now": True}  # queue "b" drops out of the page until the test brings it back

    def respond(_path: str) -> tuple[int, bytes]:
        page = '# TYPE app_queue_depth gauge\napp_queue_depth{queue="a"} 3\n'
        if both["now"]:
            page += 'app_queue_depth{queue="b"} 4\n'
        return 200, page.encode()

    with serve(respond) as endpoint, receive() as hook:
        config = (
            '[database]\nurl = "{url}"\n'
            '[detection]\ninterval = "1s"\n'
            '[detection.absent]\nseries_absent_after = "3s"\n'
            f'[alerts]\nreceiver = "hook"\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
            '[alerts.delivery]\ninterval = "1s"\n'
            f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{hook.url}/x"\n'
            '[[sources]]\nname = "app"\nkind = "prometheus_scrape"\ninterval = "1s"\n'
            f'url = "{endpoint}/metrics"\n'
        )
        daemon = start_daemon(tmp_path, database_url, config)
        try:
            _wait_until_scored(database_url, 2)  # both series arrive and are scored
            both["now"] = False
            firing = _wait_for(hook, "firing", "series_absent")
            both["now"] = True
            resolved = _wait_for(hook, "resolved", "series_absent")
            daemon.send_signal(signal.SIGTERM)
            daemon.communicate(timeout=30)
        finally:
            reap(daemon)
    (shown,) = [i for i in firing["incidents"] if i["metric"] == "series_absent"]
    assert shown["labels"]["series_metric"] == "app_queue_depth"
    assert shown["labels"]["queue"] == "b" and shown["labels"]["kind"] == "absent"
    assert shown["severity"] == "warning"
    (back,) = [i for i in resolved["incidents"] if i["metric"] == "series_absent"]
    assert back["id"] == shown["id"] and back["status"] == "resolved"
    engine = store.open_engine(database_url)
    try:
        with engine.connect() as conn:
            others = conn.exec_driver_sql(
                "SELECT count(*) FROM incidents WHERE metric = 'series_absent'"
            ).scalar_one()
    finally:
        engine.dispose()
    assert others == 1  # queue "a" never stopped: nothing about it


def _wait_until_scored(database_url: str, series: int, limit: float = 40.0) -> None:
    """Wait until ``series`` series have been scored (a slow start on a busy machine must
    not let a series drop out before the daemon has ever seen it)."""
    engine = store.open_engine(database_url)
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    found = conn.exec_driver_sql("SELECT count(*) FROM series_state")
                    scored = found.scalar_one()
            except DBAPIError:  # the daemon has not made the schema yet
                scored = 0
            if scored >= series:
                return
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise AssertionError(f"{series} series were not scored within {limit} s")
