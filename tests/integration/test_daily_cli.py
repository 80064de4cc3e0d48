"""The everyday commands on a database the detection job filled, on SQLite and PostgreSQL:
``anomalies`` (filters and formats), ``incidents show|resolve``, and the SQL views."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text

from anomon import store
from anomon.config import AlertsConfig, DetectionConfig
from anomon.model import DeployRecord, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Notification, Series
from anomon.timeutil import from_epoch
from tests.conftest import ROOT, run_cli, save_samples

DETECTION = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})
ROWS = 1300


@pytest.fixture
def filled(engine: store.Engine, tmp_path: Path) -> Path:
    """Two models' latency, each shifted up over its last minutes, scored; the config."""
    now = datetime.now(UTC)
    start = int(now.timestamp()) // 60 * 60 - 60 * ROWS
    info = SeriesInfo("model-server", "fleet", SeriesKind.LATENCY, "ms")
    for model, shift in (("a", 1286), ("b", 1292)):
        values = 200 + np.random.default_rng(len(model) + shift).normal(0, 2, ROWS)
        values[shift:] += 80
        key = SeriesKey.of("latency_p99", {"model": model})
        save_samples(
            engine, [Sample(key, info, start + 60 * i, float(values[i])) for i in range(ROWS)]
        )
    alerts = AlertsConfig.model_validate(
        {"receiver": "hook", "receivers": [{"name": "hook", "kind": "webhook",
                                             "url": "http://127.0.0.1:9/hook"}]}
    )  # fmt: skip
    DetectJob(engine, DETECTION, clock=lambda: now, alerts=alerts)()
    url = engine.url.render_as_string(hide_password=False)
    config = tmp_path / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[alerts]\nreceiver = "hook"\n'
        '[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "http://127.0.0.1:9/hook"\n',
        encoding="utf-8",
    )
    return config


def _count(engine: store.Engine, model: str | None = None) -> int:
    query = select(func.count()).select_from(Anomaly).join(Series)
    if model:
        query = query.where(Series.labels == json.dumps({"model": model}, separators=(",", ":")))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_anomalies_are_listed_filtered_and_formatted(engine: store.Engine, filled: Path) -> None:
    total, of_a = _count(engine), _count(engine, "a")
    assert 0 < of_a < total <= 100

    table = run_cli("anomalies", "-c", str(filled))
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["at", "metric", "labels", "entity"]
    assert len(lines) == total

    picked = run_cli("anomalies", "--label", "model=a", "--format", "json", "-c", str(filled))
    rows = json.loads(picked.stdout)
    assert len(rows) == of_a and {r["labels"]["model"] for r in rows} == {"a"}
    assert [r["at"] for r in rows] == sorted((r["at"] for r in rows), reverse=True)

    as_csv = run_cli("anomalies", "--limit", "3", "--format", "csv", "-c", str(filled))
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(parsed) == 3 and json.loads(parsed[0]["labels"])["model"] in ("a", "b")
    assert float(parsed[0]["score"]) >= DETECTION.threshold

    none = run_cli("anomalies", "--metric", "nope", "--since", "2h", "-c", str(filled))
    assert none.stdout == "no anomalies in the last 2h\n"
    header_only = run_cli("anomalies", "--metric", "nope", "--format", "csv", "-c", str(filled))
    assert header_only.stdout.splitlines() == [",".join(parsed[0])]  # the same columns
    zero = run_cli("anomalies", "--limit", "0", "-c", str(filled))
    assert zero.returncode == 2 and "must be at least 1, got: 0" in zero.stderr
    bad = run_cli("anomalies", "--label", "model", "-c", str(filled))
    assert bad.returncode == 2 and "expected K=V, got: 'model'" in bad.stderr


def test_an_incident_is_shown_and_resolved_by_hand(engine: store.Engine, filled: Path) -> None:
    shown = run_cli("incidents", "show", "1", "--format", "json", "-c", str(filled))
    assert shown.returncode == 0, shown.stderr
    incident = json.loads(shown.stdout)
    with engine.connect() as conn:
        linked = conn.execute(select(func.count()).where(Anomaly.incident_id == 1)).scalar_one()
    assert incident["status"] == "firing" and incident["anomaly_count"] == linked > 0
    assert [n["event"] for n in incident["notifications"]] == ["firing"]
    behind = incident["contributors"]  # the series of its linked anomalies, strongest first
    assert behind and behind[0]["peak_score"] == max(c["peak_score"] for c in behind)

    as_text = run_cli("incidents", "show", "1", "-c", str(filled)).stdout
    assert as_text.startswith("incident #1\n") and "status:       firing" in as_text
    assert "top " in as_text and "notifications:" in as_text
    assert "contributing series (" in as_text

    resolved = run_cli("incidents", "resolve", "1", "-c", str(filled))
    assert resolved.returncode == 0, resolved.stderr
    after = json.loads(run_cli("incidents", "show", "1", "--format", "json", "-c",
                               str(filled)).stdout)  # fmt: skip
    assert after["status"] == "resolved" and after["resolved_at"] is not None
    assert [(n["event"], n["status"]) for n in after["notifications"]] == [
        ("firing", "pending"),
        ("resolved", "pending"),
    ]
    again = run_cli("incidents", "resolve", "1", "-c", str(filled))
    assert again.returncode == 2 and "incident 1 is resolved, not firing" in again.stderr
    missing = run_cli("incidents", "show", "99", "-c", str(filled))
    assert missing.returncode == 2 and "no incident with id 99" in missing.stderr


def test_the_views_name_open_incidents_and_recent_anomalies(
    engine: store.Engine, filled: Path
) -> None:
    with engine.connect() as conn:
        opened = conn.execute(
            text("SELECT id, metric, labels, anomalies FROM incidents_open ORDER BY id")
        ).all()
        recent = conn.execute(text("SELECT count(*) FROM anomalies_recent")).scalar_one()
        linked = conn.execute(
            select(Anomaly.incident_id, func.count())
            .where(Anomaly.incident_id.is_not(None))
            .group_by(Anomaly.incident_id)
            .order_by(Anomaly.incident_id)
        ).all()
        pending = conn.execute(select(func.count()).select_from(Notification)).scalar_one()
    assert [(row.id, row.anomalies) for row in opened] == [tuple(r) for r in linked]
    assert {json.loads(row.labels)["model"] for row in opened} == {"a", "b"}
    assert {row.metric for row in opened} == {"latency_p99"}
    assert recent == _count(engine) and pending == len(opened)
    assert run_cli("incidents", "resolve", str(opened[0].id), "-c", str(filled)).returncode == 0
    with engine.connect() as conn:
        left = conn.execute(text("SELECT id FROM incidents_open")).scalars().all()
    assert left == [opened[1].id]


def test_the_grafana_dashboard_of_each_database_reads_what_detection_wrote(
    engine: store.Engine, filled: Path
) -> None:
    dialect = engine.dialect.name
    board = json.loads((ROOT / "config" / "grafana" / f"anomon-{dialect}.json").read_text())
    now = int(datetime.now(UTC).timestamp())
    results = {}
    with engine.connect() as conn:
        for panel in board["panels"]:
            (target,) = panel["targets"]
            query = _expand_macros(target.get("rawQueryText") or target["rawSql"], now)
            results[panel["title"]] = conn.execute(text(query)).mappings().all()
    firing, anomalies, per_hour, sources = results.values()
    assert {json.loads(row["labels"])["model"] for row in firing} == {"a", "b"}
    assert len(anomalies) == _count(engine)
    assert sum(row["anomalies"] for row in per_hour) == _count(engine)
    assert [row["source"] for row in sources] == ["model-server"]
    # deploys are the dashboard's annotations: those in the time range, as text
    store.record_deploys(
        engine,
        [
            DeployRecord(from_epoch(now - 3600), "a", "v2", note="CHG-7"),
            DeployRecord(from_epoch(now - 1800), "", "release-9", entity="srv-1"),
            DeployRecord(from_epoch(now - 3 * 86_400), "a", "v1"),
        ],
        now=datetime.now(UTC),
    )
    (annotation,) = board["annotations"]["list"]
    target = annotation["target"]
    with engine.connect() as conn:
        query = _expand_macros(target.get("rawQueryText") or target["rawSql"], now)
        shown = conn.execute(text(query)).mappings().all()
    assert [(row["time"], row["text"], row["tags"]) for row in shown] == [
        ((now - 3600) * 1000, "deploy a v2 CHG-7", "cli"),
        ((now - 1800) * 1000, "deploy release-9 on srv-1", "cli"),
    ]


def _expand_macros(query: str, now: int) -> str:
    """Grafana's PostgreSQL macros as Grafana expands them for the last 24 hours."""
    query = query.replace("$__unixEpochFilter(ts)", f"ts >= {now - 86_400} AND ts <= {now}")
    query = query.replace(
        "$__timeFilter(at)",
        f"at BETWEEN to_timestamp({now - 86_400}) AND to_timestamp({now})",
    )
    query = query.replace("$__from", str((now - 86_400) * 1000)).replace("$__to", str(now * 1000))
    return query.replace("$__unixEpochGroupAlias(ts, '1h')", 'floor(ts/3600)*3600 AS "time"')
