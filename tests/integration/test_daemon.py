"""`anomon run` as a real process: collects on schedule, stops cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomon import store
from anomon.errors import StoreError
from tests.conftest import ROOT, save_samples
from tests.loopback import free_port, serve

CONFIG = """
[database]
url = "{url}"

[detection]
interval = "1s"

[[sources]]
name = "host"
kind = "system"
interval = "1s"
per_cpu = true
"""


def start_daemon(tmp_path: Path, url: str, text: str = CONFIG, *args: str) -> subprocess.Popen[str]:
    """Write ``text`` (with ``{url}``) as the config and start ``anomon run ARGS`` on it.

    Without a ``[daemon]`` table of its own, the daemon serves its metrics on a free
    port (not 9464: another anomon may hold it).
    """
    if "[daemon]" not in text:
        text += f'\n[daemon]\nmetrics_listen = "127.0.0.1:{free_port()}"\n'
    config = tmp_path / "anomon.toml"
    config.write_text(text.replace("{url}", url), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "anomon", "run", "--config", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ANOMON_DATABASE_URL": ""},
    )


def stop(daemon: subprocess.Popen[str]) -> str:
    """SIGTERM the daemon; return what it wrote on stderr once it has exited."""
    daemon.send_signal(signal.SIGTERM)
    return daemon.communicate(timeout=30)[1]


def reap(daemon: subprocess.Popen[str]) -> None:
    """Kill a daemon that a failing test left running; wait for it, its pipes closed."""
    if daemon.poll() is None:
        daemon.kill()
        daemon.communicate(timeout=30)


def wait_for_runs(url: str, runs: int, process: subprocess.Popen[str], limit: float = 30) -> int:
    """Poll the database until ``runs`` collections are recorded; return how many there are."""
    engine = store.open_engine(url)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                found = len(store.last_collections(engine, "host", limit=100))
            except StoreError:  # the schema is not there yet
                found = 0
            if found >= runs:
                return found
            time.sleep(0.2)
        return 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_it_collects_and_detects_every_interval_and_stops_cleanly(
    database_url: str, tmp_path: Path, stop: signal.Signals
) -> None:
    daemon = start_daemon(tmp_path, database_url)
    try:
        assert wait_for_runs(database_url, 3, daemon) >= 3, (
            daemon.stderr.read() if daemon.stderr else ""
        )
        daemon.send_signal(stop)
        _, stderr = daemon.communicate(timeout=30)
    finally:
        reap(daemon)
    assert daemon.returncode == 0, stderr
    assert "anomon stopped" in stderr and "Traceback" not in stderr
    engine = store.open_engine(database_url)
    runs = store.last_collections(engine, "host", limit=100)
    assert all(run.error is None for run in runs), [run.error for run in runs]
    # it registered in the workers table and marked itself stopped (what status reads)
    (worker,) = store.read_workers(engine, now=datetime.now(UTC))
    assert (worker.pid, worker.alive) == (daemon.pid, False)
    assert worker.stopped_at is not None and worker.started_at < worker.stopped_at
    with engine.connect() as conn:
        metrics = set(
            conn.exec_driver_sql(
                "SELECT DISTINCT metric FROM series JOIN samples ON samples.series_id = series.id"
            ).scalars()
        )
        points = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
        detections = conn.exec_driver_sql(
            "SELECT count(*), sum(points_scored) FROM detection_runs WHERE error IS NULL"
        ).one()
        watermarks = conn.exec_driver_sql("SELECT count(*) FROM series_state").scalar_one()
    engine.dispose()
    assert detections[0] >= 1 and detections[1] > 0  # the detection job ran and scored
    assert watermarks > 0
    assert points == sum(run.points for run in runs) > 0
    assert {"system_cpu_percent", "system_memory_percent", "system_load1"} <= metrics


def test_it_collects_a_json_endpoint_and_records_its_failures(tmp_path: Path) -> None:
    """An http_json source in the real daemon: good payloads stored, a dead one recorded."""

    stats = json.dumps({"latency": {"p99": 0.2}, "accuracy": 0.91}).encode()
    with serve(lambda _path: (200, stats)) as endpoint:
        _run_json_daemon(tmp_path, endpoint)


def _run_json_daemon(tmp_path: Path, endpoint: str) -> None:
    url = f"sqlite:///{tmp_path / 'json.db'}"
    config = (
        '[database]\nurl = "{url}"\n'
        '[[sources]]\nname = "host"\nkind = "http_json"\ninterval = "1s"\n'
        f'url = "{endpoint}/stats"\n'
        'fields = {latency_p99 = "latency.p99", accuracy = "accuracy"}\n'
        '[[sources]]\nname = "dead"\nkind = "http_json"\ninterval = "1s"\n'
        'url = "http://127.0.0.1:9/stats"\nfields = {x = "x"}\n'
    )
    daemon = start_daemon(tmp_path, url, config)
    try:
        assert wait_for_runs(url, 3, daemon) >= 3
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    finally:
        reap(daemon)
    assert daemon.returncode == 0
    engine = store.open_engine(url)
    good, dead = (
        store.last_collections(engine, "host", 100),
        store.last_collections(engine, "dead", 100),
    )
    engine.dispose()
    assert good and all(run.error is None for run in good), [run.error for run in good]
    # two points a run; none when a run under load read the second the one before it did
    # (the store keeps one point per series and second)
    runs = sorted(good, key=lambda run: run.started_at)
    seconds = [int(run.started_at.timestamp()) for run in runs]
    for i, run in enumerate(runs):
        repeat = i > 0 and seconds[i] == seconds[i - 1]
        assert run.points == 2 or (repeat and run.points == 0), [
            (r.points, r.started_at) for r in runs
        ]
    assert dead and all(
        run.points == 0 and "connection refused" in (run.error or "") for run in dead
    )


def test_it_runs_the_sql_predictions_logs_tensorboard_and_gpu_kinds_from_config(
    tmp_path: Path,
) -> None:
    """Every new kind in the real daemon; a gpu source without NVML is skipped, said once."""
    import sqlite3

    now = int(time.time())
    warehouse = tmp_path / "warehouse.db"
    with sqlite3.connect(warehouse) as conn:
        conn.execute("CREATE TABLE p (ts INTEGER, prediction INTEGER, label INTEGER)")
        hour = now // 3600 * 3600 - 7200  # two whole hours back: a finished window
        conn.executemany(
            "INSERT INTO p VALUES (?, ?, ?)", [(hour + i, i % 2, 1) for i in range(20)]
        )
    log = tmp_path / "server.log"
    log.write_text("", encoding="utf-8")
    from tensorboardX import SummaryWriter

    runs = tmp_path / "runs"
    with SummaryWriter(str(runs / "exp-1")) as board:
        for step in range(5):
            board.add_scalar("loss/train", 1.0 / (step + 1), step, walltime=now - 600 + 60 * step)
    url = f"sqlite:///{tmp_path / 'kinds.db'}"
    config = (
        '[database]\nurl = "{url}"\n'
        '[[sources]]\nname = "host"\nkind = "sql"\ninterval = "1s"\n'
        f'url = "sqlite:///{warehouse}"\n'
        "query = \"SELECT 'predictions_logged' AS metric, count(*) AS value FROM p\"\n"
        '[[sources]]\nname = "quality"\nkind = "predictions"\ninterval = "1s"\n'
        f'url = "sqlite:///{warehouse}"\nquery = "SELECT * FROM p WHERE ts >= :since"\n'
        "group_by = []\nmin_labels = 10\n"
        '[[sources]]\nname = "log"\nkind = "logs"\ninterval = "1s"\n'
        f'path = "{log}"\npatterns = {{ errors = "ERROR" }}\n'
        '[[sources]]\nname = "gpu"\nkind = "gpu"\ninterval = "1s"\n'
        '[[sources]]\nname = "training"\nkind = "tensorboard"\ninterval = "1s"\n'
        f'logdir = "{runs}"\n'
    )
    daemon = start_daemon(tmp_path, url, config)
    try:
        assert wait_for_runs(url, 2, daemon) >= 2
        with log.open("a", encoding="utf-8") as out:
            out.write("INFO ok\nERROR boom\nERROR again\n")
        time.sleep(2.5)
        stderr = stop(daemon)
    finally:
        reap(daemon)
    assert daemon.returncode == 0, stderr
    engine = store.open_engine(url)
    with engine.connect() as conn:
        values = dict(
            conn.exec_driver_sql(
                "SELECT metric, max(value) FROM samples JOIN series ON series.id = series_id "
                "GROUP BY metric"
            ).all()
        )
    engine.dispose()
    assert values["predictions_logged"] == 20
    assert values["accuracy"] == 0.5 and values["labelled_rows"] == 20
    assert values["errors"] == 2
    assert values["loss_train"] == 1.0  # step 0's; the other four steps are lower
    has_nvml = "NVML not available" not in stderr
    if not has_nvml:
        assert stderr.count("source gpu: NVML not available") == 1
        assert "skipped" in stderr
    else:
        assert "gpu_memory_used_bytes" in values


def test_an_incident_reaches_a_webhook_and_a_mailbox_and_resolves(tmp_path: Path) -> None:
    """The whole loop in the real daemon: stored history with a shift is scored, the
    incident opens and resolves, and both notices reach both receivers, once each."""
    import email
    from email.policy import default as default_policy

    import numpy as np

    from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
    from tests.integration.test_email import smtp_server
    from tests.loopback import receive

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = int(time.time()) // 60 * 60
    rng = np.random.default_rng(5)
    values = 120 + rng.normal(0, 2, 600)
    values[560:566] += 90  # a latency shift, then calm again
    info = SeriesInfo("model-server", "churn-model", SeriesKind.LATENCY, "ms")
    key = SeriesKey.of("latency_p99", {"model": "churn"})
    samples = [Sample(key, info, now - 60 * (600 - i), float(v)) for i, v in enumerate(values)]

    def save(rows: list[Sample]) -> None:
        save_samples(engine, rows)

    save(samples[:564])  # up to the middle of the shift: the incident opens
    with receive() as hook, smtp_server() as smtp:
        config = (
            '[database]\nurl = "{url}"\n'
            '[detection]\ninterval = "1s"\nseasonality = []\n'
            "[detection.forest]\nmin_train = 200\n"
            '[alerts]\nreceiver = "hook"\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
            '[alerts.delivery]\ninterval = "1s"\n'
            '[[alerts.routes]]\nreceiver = "hook"\nmatch = { model = "churn" }\ncontinue = true\n'
            '[[alerts.routes]]\nreceiver = "mail"\nmatch = { entity = "churn-model" }\n'
            f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{hook.url}/hook"\n'
            'format = "alertmanager"\n'
            '[[alerts.receivers]]\nname = "mail"\nkind = "email"\nto = ["ml@example.org"]\n'
            f"smtp_port = {smtp.port}\n"
        )
        daemon = start_daemon(tmp_path, url, config)
        try:

            def wait_for(count: int) -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and daemon.poll() is None:
                    if len(hook.requests) >= count and len(smtp.mailbox.envelopes) >= count:
                        return
                    time.sleep(0.3)

            wait_for(1)
            save(samples[564:])  # calm again: the incident resolves
            wait_for(2)
            engine.dispose()
            time.sleep(2)  # anything more would be a duplicate
            stderr = stop(daemon)
        finally:
            reap(daemon)
        assert daemon.returncode == 0, stderr
        statuses = [json.loads(r.body)["status"] for r in hook.requests]
        assert statuses == ["firing", "resolved"], stderr
        alert = json.loads(hook.requests[0].body)["alerts"][0]
        assert alert["labels"]["alertname"] == "latency_p99"
        assert alert["labels"]["model"] == "churn"
        mails = [
            email.message_from_bytes(e.original_content or b"", policy=default_policy)
            for e in smtp.mailbox.envelopes
        ]
        assert [m["Subject"].split("]")[0] for m in mails] == ["[FIRING:1", "[RESOLVED:1"]
        assert any(part.get_content_type() == "image/png" for part in mails[0].walk())


def test_it_serves_metrics_and_health_logs_json_and_refuses_a_second_writer(
    tmp_path: Path,
) -> None:
    import httpx

    port = free_port()
    url = f"sqlite:///{tmp_path / 'one.db'}"
    text = CONFIG + f'\n[daemon]\nmetrics_listen = "127.0.0.1:{port}"\n'
    daemon = start_daemon(tmp_path, url, text, "--log-format", "json")
    try:
        assert wait_for_runs(url, 2, daemon) >= 2
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        ingested = [
            line
            for line in metrics.splitlines()
            if line.startswith('anomon_samples_ingested_total{source="host"}')
        ]
        assert ingested and float(ingested[0].split()[-1]) > 0
        assert 'anomon_notifications{status="dead"} 0.0' in metrics
        assert "anomon_open_incidents 0.0" in metrics
        # alone on SQLite (the writer lock): one worker, every source its own
        assert "anomon_workers 1.0" in metrics and "anomon_worker_share 1.0" in metrics
        second = subprocess.run(
            [sys.executable, "-m", "anomon", "run", "--config", str(tmp_path / "anomon.toml")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ANOMON_DATABASE_URL": ""},
        )
        assert second.returncode == 1
        assert f"another anomon (pid {daemon.pid}) is already running" in second.stderr
        stderr = stop(daemon)
    finally:
        reap(daemon)
    assert daemon.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["message"] == "anomon stopped" for line in lines)


def test_sighup_refuses_a_broken_config_and_applies_a_valid_one_and_its_logging(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'reload.db'}"
    daemon = start_daemon(tmp_path, url)
    config = tmp_path / "anomon.toml"
    good = config.read_text(encoding="utf-8")
    try:
        assert wait_for_runs(url, 2, daemon) >= 2
        config.write_text(good + '[[sources]]\nname = "bad"\nkind = "system"\ninterval = "x"\n')
        daemon.send_signal(signal.SIGHUP)
        before = wait_for_runs(url, 1, daemon)
        assert wait_for_runs(url, before + 2, daemon) >= before + 2  # still collecting
        extra = good.replace(
            "[daemon]",
            '[[sources]]\nname = "second"\nkind = "system"\n'
            'interval = "1s"\nload = false\n\n[daemon]\nlog_format = "json"',
        )
        config.write_text(extra, encoding="utf-8")
        daemon.send_signal(signal.SIGHUP)
        engine = store.open_engine(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not store.last_collections(engine, "second"):
            time.sleep(0.3)
        assert store.last_collections(engine, "second"), "the reloaded source never ran"
        engine.dispose()
        stderr = stop(daemon)
    finally:
        reap(daemon)
    assert daemon.returncode == 0, stderr
    assert "config reload refused, the running config is kept: sources[1].interval" in stderr
    # the reload re-applied the log settings: text lines before it, JSON lines after
    assert not stderr.splitlines()[0].startswith("{")
    lines = stderr.splitlines()
    (reloaded,) = [i for i, line in enumerate(lines) if "config reloaded: 2 source(s)" in line]
    after = [json.loads(line)["message"] for line in lines[reloaded:]]
    assert after[0] == "config reloaded: 2 source(s)" and after[-1] == "anomon stopped"


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """Issue 14, point 9: a folder the lock cannot be written in gave a raw OSError
    traceback from store/lock.py. (Run as root a read-only folder is still writable, so
    the lock's path is taken by a directory here: the same OSError.)"""
    (tmp_path / "a.db.lock").mkdir()
    config = tmp_path / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "a.db"}"\n'
        '[[sources]]\nname = "host"\nkind = "system"\ninterval = "1s"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "anomon", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANOMON_DATABASE_URL": ""},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot create the writer lock {tmp_path / 'a.db.lock'}" in result.stderr
    assert "must exist and be writable" in result.stderr


def test_a_notification_a_killed_run_was_sending_goes_out_at_the_next_start(
    tmp_path: Path,
) -> None:
    """On SQLite the daemon is the only deliverer (the writer lock): a claim it finds in
    the outbox is a dead run's, sent at once instead of after the claim's lease."""
    from datetime import timedelta

    from tests.integration.test_alerting import _firing_incidents
    from tests.loopback import receive

    url = f"sqlite:///{tmp_path / 'claims.db'}"
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = datetime.now(UTC)
    _firing_incidents(engine, 1, now - timedelta(minutes=5))
    # what a run killed mid-send leaves: the row claimed for the next hour
    store.claim_due(engine, now=now, limit=10, lease=timedelta(hours=1))
    assert store.outbox_counts(engine) == {"sending": 1}
    with receive() as hook:
        config = (
            '[database]\nurl = "{url}"\n'
            '[alerts]\nreceiver = "hook"\ngroup_wait = "0s"\n'
            '[alerts.delivery]\ninterval = "1s"\n'
            f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{hook.url}/hook"\n'
        )
        daemon = start_daemon(tmp_path, url, config)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and daemon.poll() is None and not hook.requests:
                time.sleep(0.2)
            stderr = stop(daemon)
        finally:
            reap(daemon)
    assert daemon.returncode == 0, stderr
    assert [json.loads(r.body)["status"] for r in hook.requests] == ["firing"], stderr
    assert "1 notification(s) an earlier run was sending when it ended: due now" in stderr
    assert store.outbox_counts(engine) == {"sent": 1}
    engine.dispose()
