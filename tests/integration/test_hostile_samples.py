"""Hostile samples at the edge (issue 11, points 1, 2, 6 and 11): a bad series or time is
refused by name and the rest of its collection kept, the same on SQLite and PostgreSQL; a
series belongs to one source; and one bad series never stops detection for the fleet."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from anomon import store
from anomon.config import DetectionConfig, SamplesConfig
from anomon.model import AnomalyRecord, Sample, SeriesInfo, SeriesKey
from anomon.service import detection
from anomon.service.detection import DetectJob
from anomon.timeutil import to_epoch
from tests.integration.test_daemon import reap, start_daemon
from tests.loopback import serve

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_S = to_epoch(NOW)


def sample(
    metric: str, ts: int = NOW_S, value: float = 1.0, source: str = "src", **labels: str
) -> Sample:
    return Sample(SeriesKey.of(metric, labels), SeriesInfo(source, "e"), ts, value)


def save(engine: store.Engine, samples: list[Sample], **kwargs: object) -> store.CollectionResult:
    return store.save_collection(
        engine,
        kwargs.pop("registry", None) or store.SeriesRegistry(),  # type: ignore[arg-type]
        source=str(kwargs.pop("source", "src")),
        started_at=NOW,
        finished_at=NOW,
        samples=samples,
        **kwargs,  # type: ignore[arg-type]
    )


def stored(engine: store.Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.metric, s.source, count(p.ts) FROM series s "
                "LEFT JOIN samples p ON p.series_id = s.id GROUP BY s.metric, s.source "
                "ORDER BY s.metric"
            )
        )
        return [(m, src, int(n)) for m, src, n in rows]


def test_bad_names_and_labels_are_refused_by_name_and_the_rest_is_stored(
    engine: store.Engine,
) -> None:
    """NUL bytes broke PostgreSQL's whole transaction, a 100 kB label its index: now both
    databases refuse only the bad series, and say which and why."""
    hostile = [
        sample("good"),
        sample("nul\x00name"),
        sample("x\n2026-01-01 CRITICAL anomon.daemon: FAKE LOG LINE"),
        sample("big_label", path="x" * 100_000),
        sample("surrogate", where="\ud800"),
        sample("m" * 300),
        sample("esc", title="\x1b]8;;http://evil\x07click"),
        sample("also_good", code="500"),
    ]
    result = save(engine, hostile)
    assert result.points == 2
    assert [m for m, _, n in stored(engine)] == ["also_good", "good"]
    error = result.error or ""
    assert error.startswith("6 series refused: ")
    assert "nul\\x00name: metric name holds a control character" in error
    assert "x\\n2026-01-01 CRITICAL" in error and "\n" not in error  # no forged line
    assert "(and 3 more)" in error
    runs = store.last_collections(engine, "src")
    assert [(r.points, r.error) for r in runs] == [(2, error)]


def test_each_key_rule_names_its_problem() -> None:
    from anomon.model import series_key_problem

    cases = {
        SeriesKey.of("", {}): "empty metric name",
        SeriesKey.of("m" * 201, {}): "metric name longer than 200 characters (201)",
        SeriesKey.of("m", {"a": "x" * 1001}): "label 'a' longer than 1000 characters (1001)",
        SeriesKey.of("m", {"a\tb": "1"}): "label name holds a control character",
        SeriesKey.of("m", {"a": "\u202eevil"}): "label 'a' holds a control character",
        SeriesKey.of("m", {f"l{i}": "1" for i in range(33)}): "more than 32 labels (33)",
        SeriesKey.of("é" * 200, {f"l{i}": "é" * 900 for i in range(2)}): (
            "metric and labels longer than 2400 bytes (4017)"
        ),
    }
    assert {key: series_key_problem(key) for key in cases} == cases
    assert series_key_problem(SeriesKey.of("ok_metric", {"model": "churn", "empty": ""})) is None


def test_times_outside_the_window_are_refused_and_named(engine: store.Engine) -> None:
    """Milliseconds, 1e19, -1e12, year 9999 and year 1 were all stored; one of them later
    stopped detection for every series."""
    window = SamplesConfig().window(NOW)
    times = {
        "millis": NOW_S * 1000,
        "huge": 10**19,
        "negative": -(10**12),
        "year_9999": 253_402_300_799,
        "year_1": -62_135_596_800,
        "ahead_11m": NOW_S + 660,
    }
    good = [sample("fine", NOW_S - 30), sample("fine", NOW_S + 300), sample("old", NOW_S - 86400)]
    result = save(engine, good + [sample(m, ts) for m, ts in times.items()], window=window)
    assert result.points == 3
    error = result.error or ""
    assert error.startswith("6 series refused: millis: time ")
    assert "past the accepted window (milliseconds instead of seconds?)" in error
    assert "huge: time 10000000000000000000 is" in error
    assert {m for m, _, _ in stored(engine)} == {"fine", "old"}


def test_a_backfill_window_reaches_as_far_back_as_asked() -> None:
    config = SamplesConfig(max_age=timedelta(days=400))
    assert config.window(NOW).problem(NOW_S - 500 * 86400) is not None
    wide = config.window(NOW, reach_back=timedelta(days=600))
    assert wide.problem(NOW_S - 500 * 86400) is None


def test_a_series_belongs_to_one_source_unless_its_owner_is_gone(engine: store.Engine) -> None:
    """Two sources with the same field names interleaved their points in one series."""
    registry = store.SeriesRegistry()
    first = save(engine, [sample("latency", source="a")], source="a", registry=registry)
    assert (first.points, first.error) == (1, None)
    clash = save(
        engine,
        [sample("latency", NOW_S + 1, source="b"), sample("b_only", source="b")],
        source="b",
        registry=registry,
    )
    assert clash.points == 1
    assert clash.error == (
        "1 series belong to another source: latency is source 'a''s; "
        "give the sources labels that tell their series apart"
    )
    # a fresh registry (a restart) knows the owner from the database
    again = save(engine, [sample("latency", NOW_S + 2, source="b")], source="b")
    assert again.points == 0 and "source 'a''s" in (again.error or "")
    # "a" was renamed to "c": the configured sources no longer hold "a", so "c" adopts it
    adopted = save(
        engine,
        [sample("latency", NOW_S + 3, source="c")],
        source="c",
        adoptable=lambda owner: owner not in {"b", "c"},
    )
    assert (adopted.points, adopted.error) == (1, None)
    assert ("latency", "c", 2) in stored(engine)


def _series_with_history(engine: store.Engine, names: list[str], rows: int = 60) -> None:
    start = NOW_S - rows * 60
    samples = [
        sample(name, start + 60 * i, 10.0 + (i % 7) + (200.0 if i == rows - 1 else 0.0))
        for name in names
        for i in range(rows)
    ]
    save(engine, samples)


def test_a_series_that_breaks_detection_is_set_aside_and_the_rest_is_scored(
    engine: store.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault that stopped the fleet (OverflowError from one series' incident) is
    injected into one series' own step: the others are scored and stored, the bad one is
    named in the run row and skipped by the next cycles."""
    names = [f"m{i}" for i in range(7)]
    _series_with_history(engine, names)
    with engine.connect() as conn:
        ids = dict(conn.execute(text("SELECT metric, id FROM series")).all())
    bad = ids["m4"]
    real_records = detection._records
    calls: list[int] = []

    def records(series_id: int, *rest: Any) -> list[AnomalyRecord]:
        calls.append(series_id)
        if series_id == bad:
            raise OverflowError("date value out of range")
        return real_records(series_id, *rest)

    monkeypatch.setattr(detection, "_records", records)
    config = DetectionConfig(min_history=5)
    job = DetectJob(engine, config, clock=lambda: NOW + timedelta(minutes=1))
    job()
    assert list(job.quarantine) == [bad]
    with engine.connect() as conn:
        marks = dict(conn.execute(text("SELECT series_id, scored_until FROM series_state")).all())
        errors = [e for (e,) in conn.execute(text("SELECT error FROM detection_runs"))]
    assert set(marks) == set(ids.values()) - {bad}
    assert all(mark == NOW_S - 60 for mark in marks.values())
    assert errors[-1] == f"1 series set aside: series {bad}: OverflowError: date value out of range"
    calls.clear()
    save(engine, [sample(name, NOW_S, 11.0) for name in names])  # one more row each
    job()
    assert bad not in calls and len(calls) == len(names) - 1


def test_a_store_error_is_not_blamed_on_a_series(engine: store.Engine) -> None:
    _series_with_history(engine, ["a", "b"])
    job = DetectJob(engine, DetectionConfig(min_history=5), clock=lambda: NOW)
    engine.dispose()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE detection_runs"))
    job()
    assert job.quarantine == {}


def test_a_future_sample_already_stored_does_not_move_the_watermark(engine: store.Engine) -> None:
    """A database written before the window existed holds a sample in year 9999: detection
    leaves it unread instead of letting the watermark jump past every later sample."""
    _series_with_history(engine, ["m"])
    save(engine, [sample("m", 253_402_300_799, 5.0)])
    job = DetectJob(engine, DetectionConfig(min_history=5), clock=lambda: NOW)
    job()
    with engine.connect() as conn:
        (mark,) = conn.execute(text("SELECT scored_until FROM series_state")).one()
    assert mark == NOW_S - 60


def test_the_daemon_reads_millisecond_times_refuses_far_ones_and_keeps_detecting(
    tmp_path: Path, database_url: str
) -> None:
    """The attack as it was: an http_json source stamping milliseconds (now read as
    milliseconds, issue 14) and one stamping seconds 400 years ahead (refused), beside a
    good one, in a real daemon whose database already holds a sample from year 275,000
    (as an older anomon stored it). Detection keeps running for every series, nothing
    crashes."""
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    legacy = [sample("legacy", NOW_S - 60 * i, 1.0, source="legacy") for i in range(30)]
    save(engine, [*legacy, sample("legacy", 10**13, 9.0, source="legacy")], source="legacy")

    def stats(path: str) -> tuple[int, bytes]:
        moment = time.time()
        if path.startswith("/ms"):
            return 200, json.dumps({"a": {"v": moment % 7}, "t": int(moment * 1000)}).encode()
        if path.startswith("/far"):
            ahead = int(moment) + 400 * 365 * 86_400  # seconds, year ~2426
            return 200, json.dumps({"a": {"v": moment % 7}, "t": ahead}).encode()
        return 200, json.dumps({"v": 5 + moment % 3}).encode()

    with serve(stats) as endpoint:
        config = (
            '[database]\nurl = "{url}"\n[detection]\ninterval = "1s"\nmin_history = 5\n'
            '[[sources]]\nname = "ms"\nkind = "http_json"\ninterval = "1s"\n'
            f'url = "{endpoint}/ms"\ntimestamp = "t"\nfields = {{a = "a.v"}}\n'
            '[[sources]]\nname = "far"\nkind = "http_json"\ninterval = "1s"\n'
            f'url = "{endpoint}/far"\ntimestamp = "t"\nfields = {{b = "a.v"}}\n'
            '[[sources]]\nname = "good"\nkind = "http_json"\ninterval = "1s"\n'
            f'url = "{endpoint}/good"\nfields = {{v = "v"}}\n'
        )
        daemon = start_daemon(tmp_path, database_url, config)
        try:
            deadline = time.monotonic() + 40
            scored = None
            while time.monotonic() < deadline and daemon.poll() is None:
                with engine.connect() as conn:
                    scored = conn.execute(
                        text(
                            "SELECT w.scored_until FROM series_state w JOIN series s "
                            "ON s.id = w.series_id WHERE s.metric = 'v'"
                        )
                    ).scalar()
                    runs = conn.execute(text("SELECT count(*) FROM detection_runs")).scalar_one()
                if scored is not None and runs >= 3:
                    break
                time.sleep(0.3)
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
        finally:
            reap(daemon)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    assert scored is not None and scored > time.time() - 60
    ms_runs = store.last_collections(engine, "ms", 100)
    assert ms_runs and all(r.points <= 1 and r.error is None for r in ms_runs)
    # two collections a second apart may read the same second (a late run and an early
    # one): the second sample is a duplicate, skipped; most runs store theirs
    assert sum(r.points for r in ms_runs) >= len(ms_runs) / 2
    far_runs = store.last_collections(engine, "far", 100)
    assert far_runs and all(r.points == 0 for r in far_runs)
    assert all("past the accepted window" in (r.error or "") for r in far_runs)
    with engine.connect() as conn:
        (ms_newest,) = conn.execute(
            text("SELECT max(ts) FROM samples JOIN series s ON s.id = series_id WHERE metric = 'a'")
        ).one()
        assert time.time() - 120 < ms_newest <= time.time() + 1
        errors = [e for (e,) in conn.execute(text("SELECT error FROM detection_runs"))]
        legacy_mark = conn.execute(
            text(
                "SELECT w.scored_until FROM series_state w JOIN series s "
                "ON s.id = w.series_id WHERE s.metric = 'legacy'"
            )
        ).scalar()
    engine.dispose()
    assert len(errors) >= 3 and errors == [None] * len(errors)
    assert legacy_mark is not None and legacy_mark < time.time() + 600
