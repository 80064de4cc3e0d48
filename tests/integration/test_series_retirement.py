"""Series gone for good are retired (issue 13, point 5): detection lets their entities go,
the absent-data watch stops watching them, and one that comes back is scored again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from anomon import store
from anomon.config import DetectionConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.store.schema import Series, SeriesState

START = 1_700_000_000 - 1_700_000_000 % 86_400
NOW = datetime(2026, 12, 7, tzinfo=UTC)
CONFIG = DetectionConfig.model_validate(
    {"seasonality": [], "forest": {"min_train": 100}, "absent": {"series_retire_after": "2h"}}
)
HOST_1, HOST_2 = ("node", "host-1", "", ""), ("node", "host-2", "", "")


def _save(
    engine: store.Engine, rows: range, hosts: tuple[str, ...], jump_from: int | None = None
) -> None:
    rng = np.random.default_rng(rows.start)
    samples = [
        Sample(
            SeriesKey.of("cpu", {"host": host}),
            SeriesInfo("node", host, SeriesKind.RESOURCE, ""),
            START + 60 * i,
            float(40 + rng.normal(0, 2) + (30 if jump_from is not None and i >= jump_from else 0)),
        )
        for i in rows
        for host in hosts
    ]
    store.save_collection(
        engine, store.SeriesRegistry(), source="node", started_at=NOW, finished_at=NOW,
        samples=samples,
    )  # fmt: skip


def _ids(engine: store.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(Series.entity, Series.id)).all()
    return {str(entity): int(sid) for entity, sid in rows}


def test_an_entity_gone_past_series_retire_after_is_let_go_and_taken_back_when_it_returns(
    engine: store.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    job = DetectJob(engine, CONFIG, clock=lambda: NOW)
    _save(engine, range(200), ("host-1",))
    _save(engine, range(100), ("host-2",), jump_from=85)  # goes wrong, then stops at 99
    job()
    assert set(job.members) == {HOST_1, HOST_2}
    ids = _ids(engine)
    (firing,) = store.search_incidents(engine, series_id=ids["host-2"])
    assert firing.status == "firing"
    # 100 minutes behind its source's latest sample is not two hours
    assert {s.id for s in store.series_to_score(engine, retire_after=7200)} == set(ids.values())
    # two hours past host-2's last sample, by its source's own clock (not the wall clock)
    _save(engine, range(200, 600), ("host-1",))
    job()
    assert {s.id for s in store.series_to_score(engine, retire_after=7200)} == {ids["host-1"]}
    assert {s.id for s in store.series_to_score(engine)} == set(ids.values())  # 0: never
    with caplog.at_level(logging.INFO, logger="anomon.detect"):
        job()
    assert set(job.members) == set(job.fleet.entities) == {HOST_1}
    assert "1 entity retired (no sample for 2h before their source's latest): node / host-2" in (
        caplog.text
    )
    # its incident would fire for ever: resolved, and said so
    (gone,) = store.search_incidents(engine, series_id=ids["host-2"])
    assert gone.status == "resolved" and gone.id == firing.id
    assert f"incident {firing.id} resolved: its series are retired (no sample for 2h)" in (
        caplog.text
    )
    assert [i.status for i in store.search_incidents(engine, series_id=ids["host-1"])] == []
    # its samples come back: it is scored again, from where it stopped
    _save(engine, range(600, 610), ("host-1", "host-2"))
    job()
    assert set(job.members) == {HOST_1, HOST_2}
    with engine.connect() as conn:
        marks = dict(conn.execute(select(SeriesState.series_id, SeriesState.scored_until)).all())
    assert marks == {ids["host-1"]: START + 60 * 609, ids["host-2"]: START + 60 * 609}


def test_the_absent_watch_does_not_list_a_retired_series_as_quiet(engine: store.Engine) -> None:
    _save(engine, range(300), ("host-1",))
    _save(engine, range(100), ("host-2",))
    _save(engine, range(200), ("host-3",))
    DetectJob(engine, CONFIG, clock=lambda: NOW)()
    ids = _ids(engine)
    quiet_before = START + 60 * 250  # no sample in the last 50 minutes of host-1's clock
    retired_before = START + 60 * 150  # none in the last 2.5 hours
    found = store.quiet_series(engine, {"node": quiet_before})
    assert [s.id for s in found] == sorted([ids["host-2"], ids["host-3"]])
    found = store.quiet_series(engine, {"node": quiet_before}, {"node": retired_before})
    assert [s.id for s in found] == [ids["host-3"]]
