"""Several `anomon run` workers on one PostgreSQL: each source collected by one of them
(`anomon workers` and /metrics say which), a killed worker's share taken over once its
lease runs out and a restarted one given its share back, again and again, nothing
stored or sent twice; and the membership rules (rendezvous hashing) on their own."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from anomon import store
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.daemon import _Heartbeat
from anomon.service.membership import LEADER, Membership, owner, source_key
from tests import ledger
from tests.conftest import run_cli, save_samples
from tests.integration.test_daemon import start_daemon, stop
from tests.integration.test_faults import ALERTING
from tests.loopback import free_port, receive, serve

SOURCES = 6
HEARTBEAT = 1  # seconds: a lease of 4
CONFIG = """
[database]
url = "{url}"

[daemon]
metrics = false
heartbeat = "1s"
shutdown_timeout = "5s"

[web]
enabled = false

[detection]
enabled = false
"""
SOURCE = """
[[sources]]
name = "s{i}"
kind = "prometheus_scrape"
url = "{exporter}/m/{i}"
interval = "1s"
timeout = "1s"
"""


def test_rendezvous_moves_only_the_share_of_the_worker_that_comes_or_goes() -> None:
    keys = [source_key(f"s{i}") for i in range(3000)]
    three = {key: owner(key, [1, 2, 3]) for key in keys}
    shares = Counter(three.values())
    assert all(900 < shares[w] < 1100 for w in (1, 2, 3))  # about a third each
    two = {key: owner(key, [1, 3]) for key in keys}
    moved = [key for key in keys if two[key] != three[key]]
    assert moved and all(three[key] == 2 for key in moved)  # only worker 2's share moved
    four = {key: owner(key, [1, 2, 3, 4]) for key in keys}
    assert all(four[key] in (three[key], 4) for key in keys)  # a newcomer takes, no other
    alone = Membership(None, [1, 2, 3])  # on SQLite: alone, owns everything
    assert all(alone.owns(key) for key in keys[:50]) and alone.leads()
    members = [Membership(w, [1, 2, 3]) for w in (1, 2, 3)]
    assert sum(m.leads() for m in members) == 1
    assert [m.leads() for m in members] == [owner(LEADER, [1, 2, 3]) == w for w in (1, 2, 3)]
    assert sum(m.share(keys) for m in members) == pytest.approx(1.0)
    assert members[0].update([1, 2, 3]) is False and members[0].update([1, 3]) is True


def test_workers_share_the_sources_and_say_so(tmp_path: Path, postgres_schema_url: str) -> None:
    url = postgres_schema_url
    engine = store.open_engine(url)
    store.upgrade(engine)  # once, before the workers start (as `anomon db upgrade` would)

    def respond(path: str) -> tuple[int, bytes]:
        which = int(path.rsplit("/", 1)[1])
        return 200, f'# TYPE up gauge\nup{{which="{which}"}} 1\n'.encode()

    workers: list[subprocess.Popen[str]] = []
    try:
        with serve(respond) as exporter:
            text = CONFIG + "".join(
                SOURCE.replace("{i}", str(i)).replace("{exporter}", exporter)
                for i in range(SOURCES)
            )

            port = free_port()

            def start(n: int) -> subprocess.Popen[str]:
                folder = tmp_path / f"worker{n}"
                folder.mkdir(exist_ok=True)
                mine = text  # worker 0 serves /metrics
                if n == 0:
                    mine = text.replace("metrics = false", f'metrics_listen = "127.0.0.1:{port}"')
                return start_daemon(folder, url, mine)

            workers = [start(n) for n in range(3)]
            _wait(lambda: len(_live(engine)) == 3, 60, "three workers alive")
            time.sleep(3 * HEARTBEAT)  # each has read the others at a heartbeat
            runs = _runs_between(engine, seconds=4)
            assert set(runs) == {f"s{i}" for i in range(SOURCES)}
            # one worker each: about 4 runs in 4 s, not 12
            assert all(2 <= n <= 6 for n in runs.values()), runs
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "anomon_workers 3.0" in metrics
            share = [
                line for line in metrics.splitlines() if line.startswith("anomon_worker_share")
            ]
            now = datetime.now(UTC)
            first = next(
                w.id for w in store.list_workers(engine, now=now) if w.pid == workers[0].pid
            )
            mine = sum(owner(source_key(f"s{i}"), _live(engine)) == first for i in range(SOURCES))
            assert share and float(share[0].split()[-1]) == pytest.approx(mine / SOURCES)
            listed = run_cli("workers", "--config", str(tmp_path / "worker0" / "anomon.toml"))
            assert listed.stdout.count(" alive ") == 3, listed.stdout
            assert (
                sum(
                    int(line.split()[-1].split("/")[0])
                    for line in listed.stdout.splitlines()
                    if " alive " in line
                )
                == SOURCES
            )  # every source with exactly one of them

            for worker in workers:
                if worker.poll() is None:
                    assert "Traceback" not in stop(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=30)
        engine.dispose()


def _outbox(engine: store.Engine) -> set[str]:
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT DISTINCT status FROM notifications").scalars()
        return set(found)


def _live(engine: store.Engine) -> list[int]:
    return store.live_workers(engine, now=datetime.now(UTC), alive_for=4 * timedelta(seconds=1))


def _runs_between(engine: store.Engine, *, seconds: float) -> Counter[str]:
    """The collection runs of each source that start within the next ``seconds``."""
    since = datetime.now(UTC)
    time.sleep(seconds)
    until = datetime.now(UTC)
    found: Counter[str] = Counter()
    for i in range(SOURCES):
        for run in store.last_collections(engine, f"s{i}", limit=100):
            at = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
            if since <= at < until:
                found[f"s{i}"] += 1
    return found


def _wait(ready: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {limit} s: {what}")


SHIFTED = 6  # entities whose latency shifts at the end of their history: one incident each


def _shifted_history(engine: store.Engine) -> None:
    """Six models' latency, each an entity of its own, shifted in its last rows."""
    now = int(time.time())
    rng = np.random.default_rng(9)
    samples = []
    for m in range(SHIFTED):
        values = 120 + rng.normal(0, 2, 600)
        values[590:] += 90
        info = SeriesInfo("model-server", f"model{m}", SeriesKind.LATENCY, "ms")
        key = SeriesKey.of("latency_p99", {"model": f"model{m}"})
        samples += [Sample(key, info, now - 600 + i, float(v)) for i, v in enumerate(values)]
    save_samples(engine, samples)


def test_kill_9_among_three_workers_again_and_again_loses_and_duplicates_nothing(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """Three workers on PostgreSQL collect, detect and notify; five times one of them,
    at a random moment, is killed with SIGKILL and restarted. Each time its share is
    collected again within its lease and a cycle; at the end every collection's points
    are stored exactly once, each of the six shifted entities has one incident, no
    anomaly is stored twice, and every notification was sent (a copy, if any, with the
    same idempotency key)."""
    url = postgres_schema_url
    engine = store.open_engine(url)
    store.upgrade(engine)
    _shifted_history(engine)
    rng = np.random.default_rng(3)
    workers: list[subprocess.Popen[str]] = []
    try:
        with serve(lambda path: (200, b"# TYPE up gauge\nup 1\n")) as exporter, receive() as hook:
            text = CONFIG.replace("[detection]\nenabled = false\n", "") + ALERTING.replace(
                "{hook}", hook.url
            )
            text += "".join(
                SOURCE.replace("{i}", str(i)).replace("{exporter}", exporter)
                for i in range(SOURCES)
            )

            def start(n: int) -> subprocess.Popen[str]:
                folder = tmp_path / f"worker{n}"
                folder.mkdir(exist_ok=True)
                return start_daemon(folder, url, text)

            workers = [start(n) for n in range(3)]
            _wait(lambda: len(_live(engine)) == 3, 60, "three workers alive")
            for _ in range(5):
                victim = int(rng.integers(0, 3))
                time.sleep(float(rng.uniform(0.5, 3.0)))  # wherever it happens to be
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].communicate(timeout=10)
                killed = time.monotonic()
                _wait(lambda: len(_live(engine)) == 2, 15, "the lease runs out")
                _wait(lambda: len(_runs_between(engine, seconds=1.5)) == SOURCES, 15, "takeover")
                assert time.monotonic() - killed < 4 * HEARTBEAT + 12  # lease, a cycle, slack
                workers[victim] = start(victim)
                _wait(lambda: len(_live(engine)) == 3, 60, "the worker back")
            # the outbox drains: a claim of a worker killed while sending is taken over
            # once its lease runs out
            _wait(lambda: _outbox(engine) == {"sent"}, 90, "every notification sent")
            for worker in workers:
                assert "Traceback" not in stop(worker)
            keys = Counter(r.headers["idempotency-key"] for r in hook.requests)
            bodies = [json.loads(r.body) for r in hook.requests]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=30)
    with engine.connect() as conn:
        points = ledger.points_by_source(conn)
        incidents = conn.exec_driver_sql(
            "SELECT entity, count(*) FROM incidents GROUP BY entity"
        ).all()
        doubled = conn.exec_driver_sql(
            "SELECT count(*) FROM (SELECT series_id, ts FROM anomalies "
            "GROUP BY series_id, ts HAVING count(*) > 1) d"
        ).scalar_one()
        outbox = ledger.outbox(conn)
        sent_keys = {
            key
            for (key,) in conn.exec_driver_sql("SELECT idempotency_key FROM notifications").all()
        }
    engine.dispose()
    del points["model-server"]  # the history, stored by the test
    assert set(points) == {f"s{i}" for i in range(SOURCES)}
    for source, (recorded, stored) in points.items():  # every collection's points, once
        assert recorded == stored > 0, (source, recorded, stored)
    assert dict(incidents) == {f"model{m}": 1 for m in range(SHIFTED)}  # one each, ever
    assert doubled == 0
    assert set(outbox) == {"sent"}, outbox
    told = {k for b in bodies for i in b["incidents"] for k in i["notification_keys"]}
    assert told == sent_keys  # each notification reached the receiver ...
    assert all(b["incidents"][0]["metric"] == "latency_p99" for b in bodies)
    # never a false "resolved": a worker leaves the others' incidents alone
    assert {b["event"] for b in bodies} == {"firing"}, Counter(b["event"] for b in bodies)
    assert len(hook.requests) - len(keys) <= 5  # ... a copy only after a kill mid-send


def test_a_worker_marked_stopped_by_mistake_is_alive_again_at_its_next_beat(
    engine: store.Engine,
) -> None:
    now = datetime.now(UTC)
    one = store.register_worker(engine, host="h", pid=11, version="t", now=now)
    two = store.register_worker(engine, host="h", pid=12, version="t", now=now)
    assert _live(engine) == [one, two]
    store.mark_stopped(engine, [two], now=now)  # taken for gone by a newcomer
    assert _live(engine) == [one]
    store.beat(engine, two, now=datetime.now(UTC))
    assert _live(engine) == [one, two]
    store.beat(engine, one, now=datetime.now(UTC), stopped=True)  # a clean stop
    assert _live(engine) == [two]
    listed = {w.id: w for w in store.list_workers(engine, now=datetime.now(UTC))}
    assert listed[one].stopped_at is not None and not listed[one].alive


def test_anomon_workers_lists_the_daemons_and_the_share_of_each(
    tmp_path: Path, database_url: str, engine: store.Engine
) -> None:
    """On SQLite and PostgreSQL: the live workers with the sources each collects (all
    of them between them) and the leader; a stopped one listed as such, without a share."""
    now = datetime.now(UTC)
    ids = [store.register_worker(engine, host="h", pid=p, version="t", now=now) for p in (1, 2)]
    gone = store.register_worker(engine, host="h", pid=3, version="t", now=now)
    store.beat(engine, gone, now=now, stopped=True)
    config = tmp_path / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        + "".join(
            SOURCE.replace("{i}", str(i)).replace("{exporter}", "http://127.0.0.1:9")
            for i in range(SOURCES)
        ),
        encoding="utf-8",
    )
    listed = run_cli("workers", "--format", "json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert {rows[i]["state"] for i in ids} == {"alive"} and rows[gone]["state"] == "stopped"
    shares = [rows[i]["sources"] for i in ids]
    assert sum(int(share.split("/")[0]) for share in shares) == SOURCES
    assert all(share.endswith(f"/{SOURCES}") for share in shares) and rows[gone]["sources"] == ""
    assert [rows[i]["leader"] for i in ids] == [owner(LEADER, ids) == i for i in ids]
    assert rows[gone]["leader"] is False


def test_a_daemon_alone_takes_every_other_worker_row_for_gone(engine: store.Engine) -> None:
    """On SQLite the writer lock makes a starting daemon the only one: the row of one
    that crashed (another host's name, a pid that now runs something else) is marked
    stopped at once, so `anomon workers` does not split the sources with a dead row for
    a lease. On PostgreSQL another host's live row is another worker: left alone."""
    now = datetime.now(UTC)
    crashed = store.register_worker(engine, host="elsewhere", pid=1, version="t", now=now)
    me = store.register_worker(engine, host="here", pid=2, version="t", now=now)
    alone = engine.dialect.name == "sqlite"
    membership = Membership(None if alone else me)
    _Heartbeat(engine, me, membership, timedelta(seconds=15)).join()
    assert _live(engine) == ([me] if alone else [crashed, me])
