"""Versions and deploys (issue 15, point 6): a new version of a model starts from a few
rows of the one before it, its deploy is recorded and named in the notifications of the
incident it causes; a deploy told with ``anomon deploy`` starts a model without version
labels on a new baseline; both show in ``anomon deploys``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from anomon import store
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Incident, Series, SeriesState
from anomon.timeutil import from_epoch
from tests.conftest import run_cli
from tests.loopback import receive

START = 1_700_000_000 - 1_700_000_000 % 86_400
CONFIG = DetectionConfig.model_validate({"seasonality": [], "forest": {"min_train": 200}})
INFO = SeriesInfo("srv", "srv", SeriesKind.LATENCY, "ms")


def _latency(rows: range, labels: dict[str, str], level: float, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [
        Sample(SeriesKey.of("latency_p99", labels), INFO, START + 60 * i, level + rng.normal(0, 3))
        for i in rows
    ]


def _save(engine: store.Engine, samples: list[Sample]) -> None:
    at = datetime.now(UTC)
    store.save_collection(
        engine, store.SeriesRegistry(), source="srv", started_at=at, finished_at=at,
        samples=samples,
    )  # fmt: skip


def _clock(row: int) -> datetime:
    return from_epoch(START + 60 * row)


def test_a_new_version_much_slower_than_the_last_is_told_at_once_naming_its_deploy(
    engine: store.Engine,
) -> None:
    v1, v2 = {"model": "churn", "version": "v1"}, {"model": "churn", "version": "v2"}
    _save(engine, _latency(range(600), v1, 100.0, 1))
    with receive() as hook:
        alerts = AlertsConfig.model_validate(
            {"receiver": "hook", "group_wait": "0s",
             "receivers": [{"name": "hook", "kind": "webhook", "url": f"{hook.url}/hook"}]}
        )  # fmt: skip
        now = {"row": 600}
        clock = lambda: _clock(now["row"])  # noqa: E731
        job = DetectJob(engine, CONFIG, clock=clock, alerts=alerts,
                        samples=SamplesConfig(max_ahead=timedelta(hours=3)))  # fmt: skip
        job()
        _save(engine, _latency(range(600, 612), v2, 300.0, 2))  # v2 is three times slower
        now["row"] = 612
        job()
        DeliverJob(engine, alerts, build_notifiers(alerts), clock=clock)()
        bodies = [json.loads(request.body) for request in hook.requests]
    (deploy,) = store.list_deploys(engine)
    assert (deploy.model, deploy.version, deploy.entity, deploy.origin) == (
        "churn", "v2", "srv", "label")  # fmt: skip
    assert deploy.at == _clock(600) and deploy.note == "the version label changed from v1"
    with engine.connect() as conn:
        v2_id = conn.execute(select(Series.id).where(Series.labels.contains('"v2"'))).scalar_one()
        flagged = conn.execute(select(Anomaly.ts).where(Anomaly.series_id == v2_id)).scalars()
        opened = conn.execute(select(Incident.series_id, Incident.status)).all()
    # judged against v1's last rows from its first one, not learnt as its own normal
    assert min(flagged) <= START + 60 * 603
    assert opened == [(v2_id, "firing")]
    (body,) = bodies
    (shown,) = body["incidents"]
    assert shown["deploy"] == {
        "at": _clock(600).strftime("%Y-%m-%dT%H:%M:%SZ"), "model": "churn", "version": "v2",
        "entity": "srv", "note": "the version label changed from v1",
    }  # fmt: skip
    assert shown["annotations"]["deploy"].startswith(
        f"churn v2 on srv at {_clock(600):%Y-%m-%d %H:%M:%S}Z, "
    )
    assert shown["annotations"]["deploy"].endswith("(the version label changed from v1)")


def test_a_deploy_told_by_cli_starts_a_model_without_versions_on_a_new_baseline(
    engine: store.Engine, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fraud = {"model": "fraud"}
    _save(engine, _latency(range(600), fraud, 100.0, 3))
    now = {"row": 600}
    job = DetectJob(engine, CONFIG, clock=lambda: _clock(now["row"]))
    job()
    assert _quality(engine) == "ok"
    config = tmp_path / "anomon.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    at = _clock(600).strftime("%Y-%m-%dT%H:%M:%SZ")
    told = run_cli("deploy", "--model", "fraud", "--version", "v7", "--at", at, "--note",
                   "CHG-7", "-c", str(config))  # fmt: skip
    assert told.returncode == 0, told.stderr
    assert told.stdout.strip() == f"deploy of fraud v7 at {_clock(600):%Y-%m-%d %H:%M:%S}Z recorded"
    _save(engine, _latency(range(600, 700), fraud, 100.0, 4))
    now["row"] = 700
    with caplog.at_level(logging.INFO, logger="anomon.detect"):
        job()
    assert "1 entity starts a new baseline at a deploy: srv / srv / fraud" in caplog.text
    # SEED_ROWS rows before the deploy and 100 since: learning again, not judged on the old
    assert _quality(engine) == "learning"  # SEED_ROWS + 100 rows: fewer than it needs
    # a restart rebuilds it the same way
    _save(engine, _latency(range(700, 705), fraud, 100.0, 5))
    now["row"] = 705
    DetectJob(engine, CONFIG, clock=lambda: _clock(now["row"]))()
    assert _quality(engine) == "learning"
    listed = run_cli("deploys", "--since", "3650d", "--format", "json", "-c", str(config))
    assert [(d["model"], d["version"], d["origin"], d["note"]) for d in json.loads(listed.stdout)] \
        == [("fraud", "v7", "cli", "CHG-7")]  # fmt: skip
    again = run_cli("deploy", "--model", "fraud", "--version", "v7", "--at", at, "-c", str(config))
    assert "already recorded" in again.stdout


def _quality(engine: store.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(SeriesState.quality)).scalar_one())


def test_a_rollback_to_an_earlier_version_is_a_deploy_and_a_canary_is_not(
    engine: store.Engine,
) -> None:
    """v1 runs, v2 replaces it for a while, then v1 is back: v1's return is recorded as a
    deploy (it was already known, so it is not seeded again). A version that runs beside
    another (a canary) is deployed once, at its first row, however the two interleave."""
    v1, v2 = {"model": "churn", "version": "v1"}, {"model": "churn", "version": "v2"}
    canary = {"model": "churn", "version": "v3"}
    now = {"row": 600}
    job = DetectJob(engine, CONFIG, clock=lambda: _clock(now["row"]), alerts=AlertsConfig(),
                    samples=SamplesConfig(max_ahead=timedelta(hours=3)))  # fmt: skip
    _save(engine, _latency(range(600), v1, 100.0, 1))
    job()
    for first, last, labels in ((600, 660, v2), (660, 720, v1)):  # v2, then v1 again
        for row in range(first, last, 10):
            _save(engine, _latency(range(row, row + 10), labels, 100.0, row))
            _save(engine, _latency(range(row, row + 10), canary, 100.0, row + 1))
            now["row"] = row + 10
            job()
    deploys = {(d.version, d.at, d.note) for d in store.list_deploys(engine)}
    assert deploys == {
        ("v2", _clock(600), "the version label changed from v1"),
        ("v3", _clock(600), "the version label changed from v1"),
        ("v1", _clock(660), "the version label changed from v2, back to v1"),
    }


def test_a_version_found_by_two_entities_of_its_model_is_one_deploy(
    engine: store.Engine,
) -> None:
    """A model's estimates before labels come when a window closes, its accuracy hours
    later: two entities of one model, each new at v2's first row of its own. The deploy
    of v2 is recorded once, at the first of them."""
    info = SeriesInfo("quality", "churn", SeriesKind.QUALITY)
    hour = 3600
    now = {"hour": 0}
    clock = lambda: from_epoch(START + hour * now["hour"])  # noqa: E731
    job = DetectJob(engine, CONFIG, clock=clock, alerts=AlertsConfig())
    rng = np.random.default_rng(4)

    def windows(metric: str, version: str, hours: range) -> list[Sample]:
        labels = {"model": "churn", "version": version}
        return [
            Sample(SeriesKey.of(metric, labels), info, START + hour * h, 0.9 + rng.normal(0, 0.01))
            for h in hours
        ]

    _save(engine, windows("estimated_accuracy", "v1", range(48)))
    _save(engine, windows("log_loss", "v1", range(44)))  # labelled a few hours later
    now["hour"] = 48
    job()
    _save(engine, windows("estimated_accuracy", "v2", range(48, 56)))  # v2 from hour 48
    _save(engine, windows("log_loss", "v1", range(44, 48)))
    now["hour"] = 56
    job()
    # v2's labelled windows, the first without enough labels to be reported
    _save(engine, windows("log_loss", "v2", range(49, 56)))
    now["hour"] = 60
    job()
    assert [(d.version, d.at) for d in store.list_deploys(engine)] == [
        ("v2", from_epoch(START + hour * 48))
    ]
