"""The daemon under signals, starved pools and failing writes (issue 11, points 4, 7, 10).

Real daemons on loopback: bursts of SIGTERM / SIGINT / SIGHUP, sources whose server never
answers, detection writes refused by a trigger, a file size limit, a PostgreSQL relay
that stops forwarding, and 200 health checks at once. ``/healthz`` must tell the truth
(503 naming the stale part, 200 when it is back) and answer at once whatever the
database does.
"""

from __future__ import annotations

import http.client
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.integration.test_daemon import start_daemon, wait_for_runs
from tests.integration.test_outages import _query, _wait
from tests.loopback import free_port, serve

BASE = """
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


def _count(url: str, sql: str) -> int:
    """The one number ``sql`` answers."""
    ((found,),) = _query(url, sql)
    assert isinstance(found, int)
    return found


def _daemon_table(port: int, extra: str = "") -> str:
    return f'\n[daemon]\nmetrics_listen = "127.0.0.1:{port}"\n{extra}'


FAST_HEALTH = 'health_intervals = 1\nhealth_grace = "2s"\n'


def _get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    """GET ``path`` from the daemon's metrics server: (status, body); (0, why) if none."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def _health_becomes(
    port: int, status: int, daemon: subprocess.Popen[str], limit: float
) -> tuple[int, str]:
    """Poll /healthz until it answers ``status`` (or ``limit`` s pass); the last answer."""
    deadline = time.monotonic() + limit
    answer = _get(port, "/healthz")
    while answer[0] != status and time.monotonic() < deadline and daemon.poll() is None:
        time.sleep(0.3)
        answer = _get(port, "/healthz")
    return answer


def _finish(daemon: subprocess.Popen[str], *signals: signal.Signals, gap: float = 0) -> str:
    """Send ``signals`` ``gap`` s apart; return stderr once the daemon has exited."""
    for i, signum in enumerate(signals):
        if i:
            time.sleep(gap)
        daemon.send_signal(signum)
    return daemon.communicate(timeout=60)[1]


@contextmanager
def _running(daemon: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate(timeout=30)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_two_stop_signals_50_ms_apart_stop_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    with _running(start_daemon(tmp_path, url)) as daemon:
        assert wait_for_runs(url, 2, daemon) >= 2
        stderr = _finish(daemon, stop, stop, gap=0.05)
    assert daemon.returncode == 0, stderr
    assert f"{stop.name} received: finishing the running jobs, then stopping" in stderr
    # the second lands while the jobs finish (logged, ignored) or after the stop (ignored
    # quietly): either way no traceback, no kill; the logged case is in the hung-pool test
    assert "anomon stopped" in stderr and "Traceback" not in stderr


def test_five_sighups_100_ms_apart_reload_once_and_the_daemon_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hup.db'}"
    with _running(start_daemon(tmp_path, url)) as daemon:
        assert wait_for_runs(url, 2, daemon) >= 2
        config = tmp_path / "anomon.toml"
        config.write_text(
            config.read_text(encoding="utf-8").replace(
                "[daemon]",
                '[[sources]]\nname = "second"\nkind = "system"\ninterval = "1s"\n'
                "load = false\n\n[daemon]",
            ),
            encoding="utf-8",
        )
        for _ in range(5):
            daemon.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        second = "SELECT count(*) FROM collection_runs WHERE source = 'second'"
        assert _wait(lambda: _count(url, second) >= 2, daemon, 30)
        before = wait_for_runs(url, 1, daemon)
        assert wait_for_runs(url, before + 2, daemon) >= before + 2  # still collecting
        stderr = _finish(daemon, signal.SIGTERM)
    assert daemon.returncode == 0, stderr
    # the first SIGHUP reloads; those during it are coalesced, and the file is unchanged
    assert stderr.count("config reloaded: 2 source(s)") == 1, stderr
    assert "the config is unchanged" in stderr
    assert "anomon stopped" in stderr and "Traceback" not in stderr


REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_detection BEFORE INSERT ON detection_runs "
        "BEGIN SELECT RAISE(ABORT, 'detection writes refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_detection() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'detection writes refused'; END $$",
        "CREATE TRIGGER refuse_detection BEFORE INSERT ON detection_runs "
        "FOR EACH ROW EXECUTE FUNCTION refuse_detection()",
    ],
}
ALLOW = {
    "sqlite": ["DROP TRIGGER refuse_detection"],
    "postgresql": ["DROP TRIGGER refuse_detection ON detection_runs"],
}


def _execute(url: str, statements: list[str]) -> None:
    from anomon import store

    engine = store.open_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_healthz_says_503_naming_detection_while_its_writes_fail(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    dialect = make_url(database_url).get_backend_name()
    text = BASE + _daemon_table(port, FAST_HEALTH)
    with _running(start_daemon(tmp_path, database_url, text)) as daemon:
        detected = "SELECT count(*) FROM detection_runs"
        assert _wait(lambda: _count(database_url, detected) >= 2, daemon, 30)
        assert _health_becomes(port, 200, daemon, 10) == (200, "ok\n")
        _execute(database_url, REFUSE[dialect])  # every detection cycle now fails to store
        status, body = _health_becomes(port, 503, daemon, 20)
        assert status == 503, body
        assert body.startswith("detection: no successful cycle since "), body
        assert "expected within 3s" in body and "collection" not in body, body
        _execute(database_url, ALLOW[dialect])
        assert _health_becomes(port, 200, daemon, 20) == (200, "ok\n")
        stderr = _finish(daemon, signal.SIGTERM)
    assert daemon.returncode == 0, stderr
    assert "detection writes refused" in stderr and "Traceback" not in stderr


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="prlimit(2) is Linux only")
def test_healthz_says_503_naming_collection_and_detection_while_every_write_fails(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'full.db'}"
    text = BASE + _daemon_table(port, FAST_HEALTH)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with _running(start_daemon(tmp_path, url, text)) as daemon:
        assert wait_for_runs(url, 3, daemon) >= 3
        assert _health_becomes(port, 200, daemon, 10) == (200, "ok\n")
        # no file of the daemon may grow past 4 KiB: every SQLite write fails (EFBIG)
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (4096, hard))
        try:
            status, body = _health_becomes(port, 503, daemon, 20)
            # both parts go stale within their 3 s; wait for the second to follow
            if "detection" not in body or "collection" not in body:
                time.sleep(2)
                status, body = _get(port, "/healthz")
        finally:
            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert status == 503, body
        lines = body.splitlines()
        assert any(line.startswith("collection: no source stored samples since") for line in lines)
        assert any(line.startswith("detection: no successful cycle since") for line in lines)
        assert _health_becomes(port, 200, daemon, 20) == (200, "ok\n")
        stderr = _finish(daemon, signal.SIGTERM)
    assert daemon.returncode == 0, stderr


def test_200_concurrent_health_checks_are_all_answered_quickly(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'burst.db'}"
    with _running(start_daemon(tmp_path, url, BASE + _daemon_table(port))) as daemon:
        assert wait_for_runs(url, 2, daemon) >= 2
        assert _health_becomes(port, 200, daemon, 10)[0] == 200
        start = threading.Barrier(200, timeout=30)

        def check(_: int) -> tuple[int, float]:
            start.wait()
            began = time.monotonic()
            status, _body = _get(port, "/healthz", timeout=10)
            return status, time.monotonic() - began

        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(check, range(200)))
        stderr = _finish(daemon, signal.SIGTERM)
    assert daemon.returncode == 0, stderr
    assert [status for status, _ in answers] == [200] * 200
    assert max(seconds for _, seconds in answers) < 5  # backlog 5 made some wait 30 s


def test_hanging_sources_starve_neither_detection_nor_the_good_source(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'starve.db'}"
    release = threading.Event()

    def never_answer(_path: str) -> tuple[int, bytes]:
        release.wait(40)  # bounded: the test releases it when done
        return 200, b'{"x": 1}'

    try:
        with serve(never_answer) as endpoint:
            slow = "".join(
                f'[[sources]]\nname = "slow{i}"\nkind = "http_json"\ninterval = "1s"\n'
                f'timeout = "30s"\nurl = "{endpoint}/stats"\nfields = {{x = "x"}}\n'
                for i in range(8)
            )
            text = BASE + slow + _daemon_table(port)
            with _running(start_daemon(tmp_path, url, text)) as daemon:
                assert wait_for_runs(url, 2, daemon) >= 2
                detected = "SELECT count(*) FROM detection_runs"
                before = _count(url, detected)
                runs = wait_for_runs(url, 1, daemon)
                time.sleep(4)
                # on schedule (1 s) while all eight slow collections hang
                assert _count(url, detected) >= before + 2
                assert wait_for_runs(url, runs + 2, daemon, limit=5) >= runs + 2
                hung = "SELECT count(*) FROM collection_runs WHERE source LIKE 'slow%'"
                assert _query(url, hung) == [(0,)]  # none returned yet: they really hang
                assert _get(port, "/healthz") == (200, "ok\n")
                metrics = _get(port, "/metrics")[1]
                skipped = _counter(metrics, 'anomon_collections_skipped_total{source="slow3"}')
                assert skipped >= 2
                # stopping with jobs hung: a second SIGTERM at once is ignored; a SIGINT
                # 2 s or more after the first exits at once, not after shutdown_timeout
                began = time.monotonic()
                daemon.send_signal(signal.SIGTERM)
                time.sleep(0.05)
                daemon.send_signal(signal.SIGTERM)
                time.sleep(2.5)
                assert daemon.poll() is None  # still waiting for the hung collections
                stderr = _finish(daemon, signal.SIGINT)
                took = time.monotonic() - began
    finally:
        release.set()
    assert daemon.returncode == 1, stderr
    assert "SIGTERM received again" in stderr and "ignored" in stderr
    assert "SIGINT received again: exiting now, without waiting for the running jobs" in stderr
    assert took < 10 and "Traceback" not in stderr


def _counter(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


class StallingRelay:
    """A TCP relay on 127.0.0.1 in front of a server; inside :meth:`stalled` it forwards
    nothing either way and leaves every connection open: a frozen database host."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                if self._closed.is_set():
                    return
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                while not self._flowing.wait(0.2):  # held while stalled, bounded by close
                    if self._closed.is_set():
                        return
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """Forward nothing until the block ends."""
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.close()


def _timed(call: Callable[[], tuple[int, str]]) -> tuple[int, str, float]:
    began = time.monotonic()
    status, body = call()
    return status, body, time.monotonic() - began


@pytest.mark.postgres
def test_healthz_and_metrics_answer_at_once_while_postgresql_stalls(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    real = make_url(postgres_schema_url)
    relay = StallingRelay(real.host or "127.0.0.1", real.port or 5432)
    url = real.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    port = free_port()
    try:
        with _running(start_daemon(tmp_path, url, BASE + _daemon_table(port))) as daemon:
            runs = "SELECT count(*) FROM collection_runs"
            assert _wait(lambda: _count(postgres_schema_url, runs) >= 3, daemon, 30)
            assert _health_becomes(port, 200, daemon, 10)[0] == 200
            assert _get(port, "/metrics")[0] == 200  # a first reading of the store gauges
            with relay.stalled():
                answers = []
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    answers.append(_timed(lambda: _get(port, "/healthz")))
                    if answers[-1][0] == 503:
                        break
                    time.sleep(0.5)
                scrape = _timed(lambda: _get(port, "/metrics"))
            assert max(seconds for _, _, seconds in answers) < 2, answers
            status, body, _ = answers[-1]
            assert status == 503 and body.startswith("database: no answer to a trivial query")
            assert scrape[0] == 200 and scrape[2] < 2  # the last reading, not a hang
            assert "anomon_open_incidents 0.0" in scrape[1]
            during = _count(postgres_schema_url, runs)
            assert _wait(lambda: _count(postgres_schema_url, runs) >= during + 2, daemon, 30)
            assert _health_becomes(port, 200, daemon, 15)[0] == 200
            stderr = _finish(daemon, signal.SIGTERM)
    finally:
        relay.close()
    assert daemon.returncode == 0, stderr
    assert "Traceback" not in stderr
