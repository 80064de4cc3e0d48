"""A sparse counter in the daemon, on real databases: an error rate that is 0 nearly
always; one error now and then is an anomaly on record, not an incident — no flapping —
while errors in two of three rows open one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select

from anomon import store
from anomon.config import DetectionConfig, SamplesConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Incident
from tests.conftest import save_samples

START = 1_795_000_000 // 86_400 * 86_400
ROWS = 1500
LONE = [235, 310, 384, 520, 600, 728, 1100, 1300]  # one HTTP 500 at a time
BURST = [1450, 1451, 1452]  # ten a row, three rows running


def test_lone_errors_open_nothing_and_a_burst_opens_one_incident(engine: store.Engine) -> None:
    values = np.zeros(ROWS)
    values[LONE] = 0.5  # one request in two seconds
    values[BURST] = 5.0
    info = SeriesInfo("app", "app", SeriesKind.CUSTOM, "")
    key = SeriesKey.of("requests_per_second", {"code": "500"})
    now = datetime.fromtimestamp(START + 60 * ROWS, UTC)
    job = DetectJob(engine, DetectionConfig(), clock=lambda: now,
                    samples=SamplesConfig(max_ahead=timedelta(days=2)))  # fmt: skip
    for first in range(0, ROWS, 100):  # a cycle every 100 minutes of data
        rows = range(first, min(first + 100, ROWS))
        save_samples(engine, [Sample(key, info, START + 60 * i, float(values[i])) for i in rows])
        job()
    with engine.connect() as conn:
        incidents = conn.execute(select(Incident.opened_at, Incident.status)).all()
        marked = set(conn.execute(select(Anomaly.ts)).scalars())
    assert START + 60 * LONE[0] in marked  # the first lone error is unusual, and recorded
    (incident,) = incidents  # but only the burst is an incident
    assert incident.opened_at.replace(tzinfo=UTC) == datetime.fromtimestamp(
        START + 60 * BURST[1], UTC
    )  # at its second row: two of three
