"""Outages under a running daemon: real processes, real servers, loopback only, bounded.

Each test states what must hold while something the daemon depends on is gone and after
it is back: the webhook receiver down, a source that hangs past its timeout, the
PostgreSQL server restarted (every connection cut, new ones refused) and a full disk
(the daemon's file size limit lowered under it, so SQLite gets ``disk is full`` from the
kernel). In every case the daemon keeps running, records what it can, loses or
duplicates nothing it stored, and goes on by itself once the fault is gone.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from anomon import store
from anomon.errors import StoreError
from tests.integration.test_daemon import reap, start_daemon, stop
from tests.integration.test_faults import CONFIG, _history
from tests.loopback import free_port, receive, serve

SYSTEM_ONLY = """
[database]
url = "{url}"

[detection]
interval = "1s"
seasonality = []

[[sources]]
name = "host"
kind = "system"
interval = "1s"
"""

SCRAPE = """
[database]
url = "{url}"

[[sources]]
name = "exporter"
kind = "prometheus_scrape"
url = "{exporter}/metrics"
interval = "1s"
timeout = "1s"
"""


def _wait(condition: Callable[[], bool], daemon: subprocess.Popen[str], limit: float) -> bool:
    """Poll ``condition`` every 0.2 s for up to ``limit`` s while the daemon lives."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and daemon.poll() is None:
        with suppress(StoreError, SQLAlchemyError):  # not there yet, or locked
            if condition():
                return True
        time.sleep(0.2)
    return False


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = store.open_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql).all()]
    finally:
        engine.dispose()


def _consistent(url: str, source: str) -> tuple[int, int, int]:
    """(samples stored, points the collection runs recorded, runs) of ``source``."""
    ((stored,),) = _query(
        url,
        "SELECT count(*) FROM samples p JOIN series s ON s.id = p.series_id "
        f"WHERE s.source = '{source}'",
    )
    ((points, runs),) = _query(
        url,
        f"SELECT coalesce(sum(points), 0), count(*) FROM collection_runs WHERE source = '{source}'",
    )
    return int(stored), int(points), int(runs)


def test_a_receiver_down_for_a_while_gets_every_notification_once_when_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'hook.db'}"
    _history(url)
    port = free_port()  # nothing listens here yet: connection refused (until receive(port))
    text = CONFIG.replace("{hook}", f"http://127.0.0.1:{port}").replace(
        '[alerts.delivery]\ninterval = "1s"',
        '[alerts.delivery]\ninterval = "1s"\nbackoff_initial = "1s"\nbackoff_max = "2s"',
    )
    daemon = start_daemon(tmp_path, url, text)
    try:
        failed = "SELECT count(*) FROM notifications WHERE attempts >= 2 AND status = 'pending'"
        assert _wait(lambda: _query(url, failed)[0][0] >= 1, daemon, 40)
        refused = _query(
            url, "SELECT idempotency_key, last_error FROM notifications WHERE attempts >= 1"
        )
        assert all("refused" in str(error).lower() for _, error in refused), refused
        with receive(port) as hook:
            unsent = "SELECT count(*) FROM notifications WHERE status != 'sent'"
            assert _wait(lambda: _query(url, unsent)[0][0] == 0, daemon, 30)
            time.sleep(1.5)  # a second chance to send anything twice
            keys = Counter(
                key for r in hook.requests for key in json.loads(r.body)["notification_keys"]
            )
            messages = Counter(r.headers["idempotency-key"] for r in hook.requests)
        stderr = stop(daemon)
    finally:
        reap(daemon)
    assert daemon.returncode == 0, stderr
    rows = _query(url, "SELECT idempotency_key FROM notifications")
    assert rows and set(keys) == {key for (key,) in rows}  # every one, the refused ones too
    assert {key for key, _ in refused} <= set(keys)
    assert set(keys.values()) == {1} and set(messages.values()) == {1}  # no crash: no copy


def test_a_source_that_hangs_past_its_timeout_is_a_failed_run_and_recovers(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'hang.db'}"
    hanging = threading.Event()

    def respond(path: str) -> tuple[int, bytes]:
        if hanging.is_set():
            time.sleep(3)  # past the source's 1 s timeout
        return 200, b'# TYPE queue_depth gauge\nqueue_depth{queue="scoring"} 7\n'

    with serve(respond) as exporter:
        text = SCRAPE.replace("{exporter}", exporter)
        daemon = start_daemon(tmp_path, url, text)
        try:
            ok = "SELECT count(*) FROM collection_runs WHERE error IS NULL"
            assert _wait(lambda: _query(url, ok)[0][0] >= 2, daemon, 30)
            hanging.set()
            timed_out = "SELECT count(*) FROM collection_runs WHERE error LIKE '%timed out%'"
            assert _wait(lambda: _query(url, timed_out)[0][0] >= 2, daemon, 30)
            hanging.clear()
            (before,) = _query(url, ok)[0]
            assert _wait(lambda: _query(url, ok)[0][0] >= before + 2, daemon, 30)
            stderr = stop(daemon)
        finally:
            reap(daemon)
    assert daemon.returncode == 0, stderr
    assert "timed out after 1 s" in stderr and "Traceback" not in stderr
    stored, points, runs = _consistent(url, "exporter")
    assert stored == points and runs >= 6


class Proxy:
    """A TCP relay on 127.0.0.1 in front of a server; :meth:`outage` cuts every
    connection and refuses new ones, as a restarting database does."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._down = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):  # one side ended: end both (the other pump sees it)
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        with self._lock:
            self._open.difference_update((source, sink))

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Cut every connection now; refuse new ones until the block ends."""
        self._down.set()
        with self._lock:
            for conn in self._open:  # their pumps see it and close them
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        try:
            yield
        finally:
            self._down.clear()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()


@pytest.mark.postgres
def test_postgresql_restarted_under_the_daemon_costs_runs_not_data(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    real = make_url(postgres_schema_url)
    proxy = Proxy(real.host or "127.0.0.1", real.port or 5432)
    url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    text = SYSTEM_ONLY + '\n[daemon]\nmetrics_listen = "127.0.0.1:{port}"\n'
    metrics_port = free_port()
    daemon = start_daemon(tmp_path, url, text.replace("{port}", str(metrics_port)))
    runs = "SELECT count(*) FROM collection_runs"
    try:
        assert _wait(lambda: _query(postgres_schema_url, runs)[0][0] >= 3, daemon, 30)
        with proxy.outage():
            time.sleep(1.5)
            assert _health(metrics_port) == 503
            (during,) = _query(postgres_schema_url, runs)[0]
            time.sleep(3)
            assert daemon.poll() is None
            assert _query(postgres_schema_url, runs)[0][0] == during  # nothing written
        assert _wait(
            lambda: _query(postgres_schema_url, runs)[0][0] >= during + 3,
            daemon,
            30,
        )
        assert _wait(lambda: _health(metrics_port) == 200, daemon, 10)
        stderr = stop(daemon)
    finally:
        reap(daemon)
        proxy.close()
    assert daemon.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    stored, points, _ = _consistent(postgres_schema_url, "host")
    assert stored == points  # no collection half-written, none twice


def _health(port: int) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="prlimit(2) is Linux only")
def test_a_full_disk_fails_writes_cleanly_and_the_daemon_goes_on_when_there_is_room(
    tmp_path: Path,
) -> None:
    path = tmp_path / "full.db"
    url = f"sqlite:///{path}"
    daemon = start_daemon(tmp_path, url, SYSTEM_ONLY)
    runs = "SELECT count(*) FROM collection_runs"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        assert _wait(lambda: _query(url, runs)[0][0] >= 3, daemon, 30)
        # no file of the daemon may grow past 4 KiB: every SQLite write fails (Python
        # ignores SIGXFSZ, so the kernel answers EFBIG, as a full disk answers ENOSPC)
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (4096, hard))
        try:
            time.sleep(4)
            assert daemon.poll() is None
        finally:
            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (hard, hard))
        (after_full,) = _query(url, runs)[0]
        assert _wait(lambda: _query(url, runs)[0][0] >= after_full + 3, daemon, 30)
        stderr = stop(daemon)
    finally:
        reap(daemon)
    assert daemon.returncode == 0, stderr
    # SQLite names the kernel's EFBIG "disk I/O error" (ENOSPC: "database or disk is full")
    assert "failed: disk I/O error (is the disk full, or a file size limit reached?)" in stderr
    assert "Traceback" not in stderr
    assert _query(url, "PRAGMA integrity_check") == [("ok",)]
    stored, points, _ = _consistent(url, "host")
    assert stored == points
