"""Crash safety: the daemon killed with SIGKILL at arbitrary moments, then restarted.

Real processes, a real SQLite file, a real webhook receiver on 127.0.0.1; each kill
lands wherever the daemon happens to be (collecting, detecting, delivering). What must
hold after the last restart: every collection's points are in ``samples`` exactly
(no loss, no duplicate: the primary key and one transaction per collection), there is
one incident for the one episode, and every notification is ``sent`` and reached the
receiver at least once — a copy only with the same idempotency key.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np

from anomon import store
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from tests import ledger
from tests.conftest import save_samples
from tests.integration.test_daemon import start_daemon
from tests.loopback import receive

# detection and delivery every second, to a webhook receiver at {hook}
ALERTING = """
[detection]
interval = "1s"
seasonality = []

[alerts]
receiver = "hook"
group_wait = "0s"
group_interval = "1s"

[alerts.delivery]
interval = "1s"
claim_timeout = "5s"

[[alerts.receivers]]
name = "hook"
kind = "webhook"
url = "{hook}/hook"
timeout = "1s"
"""
CONFIG = (
    """
[database]
url = "{url}"
"""
    + ALERTING
    + """
[detection.forest]
min_train = 200

[[sources]]
name = "host"
kind = "system"
interval = "1s"
"""
)


def _history(url: str) -> None:
    """Store a latency series with a shift in its last rows: detection opens an incident."""
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = int(time.time())
    rng = np.random.default_rng(8)
    values = 120 + rng.normal(0, 2, 600)
    values[590:] += 90
    info = SeriesInfo("model-server", "churn-model", SeriesKind.LATENCY, "ms")
    key = SeriesKey.of("latency_p99", {"model": "churn"})
    save_samples(engine, [Sample(key, info, now - 600 + i, float(v)) for i, v in enumerate(values)])
    engine.dispose()


def _drained(url: str, *, deadline: float) -> None:
    """Wait (4 s at least, until ``deadline`` at most) until no notification is pending
    or being sent."""
    time.sleep(4)
    engine = store.open_engine(url)
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = set(ledger.outbox(conn)) & {"pending", "sending"}
            if not waiting:
                return
            time.sleep(1)
    finally:
        engine.dispose()


def test_kill_9_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    _history(url)
    rng = np.random.default_rng(1)
    with receive() as hook:
        text = CONFIG.replace("{hook}", hook.url)
        for life in range(4):  # three lives end in SIGKILL, the last one in SIGTERM
            daemon = start_daemon(tmp_path, url, text)
            time.sleep(3.0 + float(rng.uniform(0, 2.5)))
            if life < 3:
                daemon.send_signal(signal.SIGKILL)
                daemon.communicate(timeout=30)  # also closes its pipes
            else:
                # let the outbox drain: what a killed life had claimed is due again when
                # this life starts (SQLite: the one deliverer), then sent like the rest
                _drained(url, deadline=time.monotonic() + 90)
                daemon.send_signal(signal.SIGTERM)
                _, stderr = daemon.communicate(timeout=30)
                assert daemon.returncode == 0, stderr
        keys = Counter(r.headers["idempotency-key"] for r in hook.requests)
    engine = store.open_engine(url)
    with engine.connect() as conn:
        recorded, stored = ledger.points_by_source(conn)["host"]
        runs = conn.exec_driver_sql(
            "SELECT count(*) FROM collection_runs WHERE source = 'host'"
        ).scalar_one()
        incidents = conn.exec_driver_sql(
            "SELECT count(*), sum(status = 'firing') FROM incidents"
        ).one()
        outbox = ledger.outbox(conn)
    engine.dispose()
    assert runs >= 4 and stored == recorded  # every collection, exactly once
    assert incidents[0] == 1  # one episode, one incident, across four lives
    assert set(outbox) == {"sent"}, outbox
    assert sum(outbox.values()) >= 1
    bodies = [json.loads(r.body) for r in hook.requests]
    assert all(b["incidents"][0]["metric"] == "latency_p99" for b in bodies)
    assert len(keys) >= 1 and all(count >= 1 for count in keys.values())
