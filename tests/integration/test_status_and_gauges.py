"""``anomon status`` and the daemon's store gauges over real stored data, on SQLite and
PostgreSQL (issue 11, point 5: both failed on PostgreSQL with a GROUP BY error)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from anomon import store
from anomon.model import IncidentWrite, OutboxEntry, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.telemetry import Telemetry
from anomon.store.schema import Series
from tests.conftest import run_cli

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def stored(engine: store.Engine, tmp_path: Path) -> Path:
    """Four series of one source (one ok, one stale, one learning for another hour, one
    never scored), a source that only failed, a firing incident with one notification
    sent and one dead; the config."""
    registry = store.SeriesRegistry()
    info = SeriesInfo("model-server", "churn", SeriesKind.LATENCY, "ms")
    ts = int(NOW.timestamp()) - 120
    samples = [Sample(SeriesKey.of("latency_p99", {"model": m}), info, ts, 1.0) for m in "abcd"]
    for source, at, got, error in (
        ("model-server", NOW - timedelta(minutes=2), samples, None),
        ("model-server", NOW - timedelta(minutes=1), [], "HTTP 503 from the exporter"),
        ("host", NOW - timedelta(minutes=1), [], "no such file: /proc/stat"),
    ):
        store.save_collection(
            engine, registry, source=source, started_at=at, finished_at=at, samples=got, error=error
        )
    with engine.connect() as conn:
        ids = conn.execute(select(Series.id).order_by(Series.id)).scalars().all()
    entries = tuple(OutboxEntry(name, "g", "firing", f"k-{name}", NOW) for name in ("hook", "mail"))
    incident = IncidentWrite(
        ids[0], "churn", "latency_p99", '{"model":"a"}', "firing", "critical", 97.0, NOW, NOW,
        outbox=entries,
    )  # fmt: skip
    store.save_detection(
        engine, anomalies=[], scored_until={ids[0]: ts, ids[1]: ts, ids[3]: ts},
        quality={ids[1]: "stale", ids[3]: "learning"}, learning_until={ids[3]: ts + 3720},
        started_at=NOW, finished_at=NOW, points=3, config_hash="h", detector_version="v",
        incidents=[incident],
    )  # fmt: skip
    claimed = store.claim_due(engine, now=NOW, limit=10, lease=timedelta(minutes=1))
    hook, mail = sorted(claimed, key=lambda c: c.receiver)
    store.record_outcomes(
        engine, claims={c.id: c.attempts for c in claimed}, sent=[hook.id], retry={},
        dead={mail.id: "HTTP 410 from mail"}, silenced=[], silenced_incidents=[], now=NOW,
    )  # fmt: skip
    config = tmp_path / "anomon.toml"
    url = engine.url.render_as_string(hide_password=False)
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return config


def test_status_reads_every_part_on_both_databases(engine: store.Engine, stored: Path) -> None:
    found = store.read_status(engine)
    assert [(s.source, s.last_error is None, s.last_ok_at is None) for s in found.sources] == [
        ("host", False, True),
        ("model-server", False, False),
    ]
    assert found.series_by_quality == {"learning": 1, "ok": 1, "stale": 1, "unscored": 1}
    assert [(s.metric, s.labels, s.until) for s in found.learning] == [
        ("latency_p99", '{"model":"d"}', NOW + timedelta(hours=1))
    ]
    assert (found.open_incidents, found.outbox) == (1, {"dead": 1, "sent": 1})
    assert [(d.receiver, d.error) for d in found.dead] == [("mail", "HTTP 410 from mail")]


def test_the_status_command_prints_it_as_text_and_json(stored: Path) -> None:
    text = run_cli("status", "-c", str(stored))
    assert text.returncode == 0, text.stderr
    assert "  host: last run " in text.stdout and "error: no such file" in text.stdout
    assert text.stdout.startswith("daemon: not running (never started on this database)\n")
    assert f"(last success {NOW - timedelta(minutes=2):%Y-%m-%d %H:%M:%S}Z)" in text.stdout
    assert "series: 1 learning, 1 ok, 1 stale, 1 unscored\n" in text.stdout
    until = f"{NOW + timedelta(hours=1):%Y-%m-%d %H:%M:%S}Z"  # one time format everywhere
    assert f'  learning until about {until}: latency_p99{{"model":"d"}} on churn\n' in (text.stdout)
    assert "open incidents: 1\n" in text.stdout and "notifications: 1 dead, 1 sent" in text.stdout
    assert "dead #" in text.stdout and "to mail (firing, incident 1, 1 attempt(s))" in text.stdout
    shown = json.loads(run_cli("status", "--format", "json", "-c", str(stored)).stdout)
    assert shown["series_by_quality"] == {"learning": 1, "ok": 1, "stale": 1, "unscored": 1}
    assert shown["learning"][0]["metric"] == "latency_p99"
    assert shown["sources"][1]["last_error"] == "HTTP 503 from the exporter"
    assert shown["daemon"] == []


def test_status_says_whether_a_daemon_runs_and_since_when(
    engine: store.Engine, stored: Path
) -> None:
    # issue 14, point 10: a pending notification with no daemon is explained
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE notifications SET status = 'pending' WHERE status = 'dead'")

    def shown() -> list[str]:
        result = run_cli("status", "-c", str(stored))
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    started = NOW - timedelta(hours=2)
    worker = store.register_worker(engine, host="box", pid=4242, version="9.9", now=started)
    store.beat(engine, worker, now=datetime.now(UTC))
    lines = shown()
    assert (
        lines[0]
        == "daemon: running since " + f"{started:%Y-%m-%d %H:%M:%S}Z (pid 4242 on box, anomon 9.9)"
    )
    assert not any("none is running" in line for line in lines)
    store.beat(engine, worker, now=NOW - timedelta(minutes=5))  # killed: no beat since
    lines = shown()
    gone = f"{NOW - timedelta(minutes=5):%Y-%m-%d %H:%M:%S}Z"
    assert (
        lines[0]
        == f"daemon: not running (last seen {gone}, it did not stop cleanly; pid 4242 on box)"
    )
    assert "  (pending ones are sent by the daemon, and none is running: `anomon run`)" in lines
    store.beat(engine, worker, now=NOW, stopped=True)
    assert (
        shown()[0] == f"daemon: not running (stopped at {NOW:%Y-%m-%d %H:%M:%S}Z; pid 4242 on box)"
    )


def test_the_store_gauges_are_scraped_from_real_data(engine: store.Engine, stored: Path) -> None:
    scraped = generate_latest(Telemetry(engine).registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.values()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name in ("anomon_series", "anomon_open_incidents", "anomon_notifications")
    }
    assert samples == {
        ("anomon_series", ("learning",)): 1.0,
        ("anomon_series", ("ok",)): 1.0,
        ("anomon_series", ("stale",)): 1.0,
        ("anomon_series", ("unscored",)): 1.0,
        ("anomon_open_incidents", ()): 1.0,
        ("anomon_notifications", ("pending",)): 0.0,
        ("anomon_notifications", ("sending",)): 0.0,
        ("anomon_notifications", ("sent",)): 1.0,
        ("anomon_notifications", ("dead",)): 1.0,
        ("anomon_notifications", ("silenced",)): 0.0,
    }


def test_the_anomaly_score_gauge_has_real_labels_and_only_informative_series(
    engine: store.Engine,
) -> None:
    # issue 14, point 11: labels were one JSON string and 850 series were 0
    telemetry = Telemetry(engine, max_series=3)
    telemetry.record_scores(
        [
            (1, "latency_p99", "churn", '{"model":"churn","quantile":"0.99"}', 97.5),
            (2, "cpu", "web-1", '{"cpu":"0","metric":"clash","a-b":"x","9z":"y"}', 40.0),
            (3, "cpu", "web-2", '{"host":"' + "h" * 500 + '"}', 12.0),
            (4, "cpu", "web-3", "{}", 5.0),  # past max_series: the three highest stay
            (5, "requests", "web-1", '{"code":"500"}', 0.0),  # nothing unusual: left out
        ]
    )
    scraped = generate_latest(telemetry.registry).decode()
    (family,) = [
        f for f in text_string_to_metric_families(scraped) if f.name == "anomon_anomaly_score"
    ]
    found = {sample.labels["series_id"]: (sample.labels, sample.value) for sample in family.samples}
    assert sorted(found) == ["1", "2", "3"]
    assert found["1"] == (
        {"series_id": "1", "metric": "latency_p99", "entity": "churn", "model": "churn",
         "quantile": "0.99"},
        97.5,
    )  # fmt: skip
    assert found["2"][0] == {
        "series_id": "2", "metric": "cpu", "entity": "web-1", "cpu": "0",
        "exported_metric": "clash", "a_b": "x", "_9z": "y",
    }  # fmt: skip
    host = found["3"][0]["host"]
    assert len(host) == 200 and host.endswith("…")
