"""Feedback that changes detection, on real databases: a deviation like one people
marked ``false_alarm`` is not raised again, a larger one is, and the verdict can be
taken back; the CLI gives the verdict and ``anomon status`` shows what was learnt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

from anomon import store
from anomon.config import DetectionConfig, SamplesConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Incident
from tests.conftest import run_cli, save_samples

START = 1_795_000_000 // 86_400 * 86_400
ROWS = 1800
SHIFTS = {1000: 80.0, 1400: 80.0, 1700: 400.0}  # twelve minutes each
DETECTION = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})


def latency() -> np.ndarray:
    values = 200 + np.random.default_rng(5).normal(0, 2, ROWS)
    for start, shift in SHIFTS.items():
        values[start : start + 12] += shift
    return values


def detect_until(engine: store.Engine, job: DetectJob, row: int, done: list[int]) -> None:
    """Store the rows up to ``row`` and score them."""
    values = latency()
    info = SeriesInfo("model-server", "churn", SeriesKind.LATENCY, "ms")
    key = SeriesKey.of("latency_p99", {"model": "churn"})
    first = done[0]
    samples = [Sample(key, info, START + 60 * i, float(values[i])) for i in range(first, row)]
    save_samples(engine, samples, at=datetime.fromtimestamp(START + 60 * row, UTC))
    done[0] = row
    job()


def opened(engine: store.Engine) -> list[tuple[int, datetime]]:
    with engine.connect() as conn:
        return list(conn.execute(select(Incident.id, Incident.opened_at).order_by(Incident.id)))


def anomalies_in(engine: store.Engine, start: int) -> int:
    since, until = START + 60 * start, START + 60 * (start + 12)
    with engine.connect() as conn:
        rows = conn.execute(select(Anomaly.id).where(Anomaly.ts >= since, Anomaly.ts < until))
        return len(rows.all())


def cli_config(engine: store.Engine, folder: Path) -> Path:
    url = engine.url.render_as_string(hide_password=False)
    path = folder / "anomon.toml"
    # the detection settings of DETECTION, so that a replay scores as the job did
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[detection]\nseasonality = []\n\n'
        "[detection.forest]\nmin_train = 200\n",
        encoding="utf-8",
    )
    return path


def replayed(config: Path, *extra: str) -> dict[int, tuple[float, int]]:
    """``anomon replay --series latency_p99`` of the whole stored history: row -> (score,
    anomaly)."""
    done = run_cli("replay", "--series", "latency_p99", "--since", "20000d", "-c", str(config),
                   *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "timestamp,value,expected,score,anomaly,entity_score"
    found = {}
    for line in lines[1:]:
        stamp, _, _, score, anomaly, _ = line.split(",")
        at = int(datetime.fromisoformat(stamp).timestamp())
        found[(at - START) // 60] = (float(score), int(anomaly))
    return found


def flagged(found: dict[int, tuple[float, int]], start: int) -> int:
    """How many rows of the shift at ``start`` the replay calls anomalous."""
    return sum(found[row][1] for row in range(start, start + 12))


def test_a_false_alarm_verdict_lowers_the_next_score_of_the_same_deviation(
    engine: store.Engine, tmp_path: Path
) -> None:
    clock = {"now": datetime.fromtimestamp(START + 60 * ROWS, UTC)}
    job = DetectJob(engine, DETECTION, clock=lambda: clock["now"],
                    samples=SamplesConfig(max_ahead=timedelta(days=3)))  # fmt: skip
    done = [0]
    detect_until(engine, job, 1100, done)
    (first,) = opened(engine)
    assert anomalies_in(engine, 1000) > 0
    config = cli_config(engine, tmp_path)
    marked = run_cli("incidents", "feedback", str(first[0]), "false_alarm", "-c", str(config))
    assert marked.returncode == 0, marked.stderr

    detect_until(engine, job, 1500, done)  # the same +80 ms again
    assert len(opened(engine)) == 1 and anomalies_in(engine, 1400) == 0
    status = run_cli("status", "-c", str(config))
    assert "learnt from feedback (deviations within these score 0):" in status.stdout
    assert "latency_p99 on churn (series 1): up to +" in status.stdout
    (learnt,) = json.loads(run_cli("status", "--format", "json", "-c", str(config)).stdout)[
        "feedback"
    ]
    assert 80 < learnt["up"] < 1.2 * 95 and learnt["down"] == 0 and learnt["incidents"] == 1

    detect_until(engine, job, ROWS, done)  # +400 ms: more than was marked, raised
    assert len(opened(engine)) == 2 and anomalies_in(engine, 1700) > 0

    # the next replay of that history shows what was learnt, and only with it
    taught = replayed(config)
    assert len(taught) == ROWS
    assert flagged(taught, 1000) == 0 and flagged(taught, 1400) == 0
    assert flagged(taught, 1700) == anomalies_in(engine, 1700) > 0
    plain = replayed(config, "--ignore-feedback")
    assert flagged(plain, 1000) == anomalies_in(engine, 1000) > 0  # as the daemon scored it
    assert flagged(plain, 1400) > 0

    # taken back: the tolerance goes with the verdict (each cycle reads it afresh)
    run_cli("incidents", "feedback", str(first[0]), "confirmed", "-c", str(config))
    assert store.feedback_tolerances(engine) == {}
    assert "learnt from feedback" not in run_cli("status", "-c", str(config)).stdout
    assert flagged(replayed(config), 1400) == flagged(plain, 1400)
