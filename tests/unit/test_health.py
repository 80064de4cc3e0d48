"""/healthz's judgement from memory: which part is stale, and since when (a fake clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from anomon import store
from anomon.service.telemetry import Expect, Telemetry

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def telemetry(tmp_path: Path, clock: Clock) -> Telemetry:
    # the engine is never used: health reads memory only (nothing connects here)
    engine = store.open_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    found = Telemetry(engine, clock=clock)
    found.expect(
        Expect(
            sources={"fast": timedelta(seconds=10), "slow": timedelta(seconds=100)},
            detection=timedelta(seconds=20),
            delivery=None,
        )
    )
    return found


def test_it_is_healthy_at_start_and_names_each_part_gone_stale(tmp_path: Path) -> None:
    clock = Clock()
    health = telemetry(tmp_path, clock)
    assert health.health() is None
    clock.advance(21)
    assert health.health() == (
        "detection: no successful cycle since its start at 2026-01-02T03:04:05Z "
        "(21s ago; expected within 20s)"
    )
    clock.advance(80)
    lines = (health.health() or "").splitlines()
    assert lines == [
        "collection: no source stored samples since its start at 2026-01-02T03:04:05Z "
        "(1m41s ago; expected within 1m40s)",
        "detection: no successful cycle since its start at 2026-01-02T03:04:05Z "
        "(1m41s ago; expected within 20s)",
    ]


def test_one_working_source_keeps_collection_healthy_and_failures_do_not_count(
    tmp_path: Path,
) -> None:
    clock = Clock()
    health = telemetry(tmp_path, clock)
    health.record_detection(0.1)
    clock.advance(95)
    health.record_collection("fast", 0, failed=True)  # stored a failed run: no success
    health.record_collection("slow", 3, failed=True)  # partial: its points were stored
    health.record_detection(0.1)
    clock.advance(10)
    assert health.health() is None
    clock.advance(95)
    health.record_detection(0.1)
    assert health.health() == (
        "collection: no source stored samples since 2026-01-02T03:05:40Z "
        "(1m45s ago; expected within 1m40s)"
    )
    health.record_collection("fast", 5, failed=False)
    assert health.health() is None


def test_a_part_added_by_a_reload_starts_fresh_and_a_removed_one_is_not_judged(
    tmp_path: Path,
) -> None:
    clock = Clock()
    health = telemetry(tmp_path, clock)
    clock.advance(15)
    health.record_collection("fast", 1, failed=False)
    health.record_detection(0.1)
    health.expect(Expect(sources={"fast": timedelta(seconds=10)}, delivery=timedelta(seconds=5)))
    clock.advance(5)
    assert health.health() is None  # detection is off now; delivery is new
    clock.advance(6)
    assert (health.health() or "").splitlines() == [
        "collection: no source stored samples since 2026-01-02T03:04:20Z "
        "(11s ago; expected within 10s)",
        "delivery: no successful cycle since its start at 2026-01-02T03:04:20Z "
        "(11s ago; expected within 5s)",
    ]
    health.record_delivery()
    health.record_collection("fast", 1, failed=False)
    assert health.health() is None


def test_skipped_runs_are_counted_and_said_once_a_streak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon that falls behind sheds runs: each skip is counted, the first of a streak
    is a warning, and a run that goes ahead ends the streak."""
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, JobEvent

    from anomon.service.daemon import _Skips

    found = telemetry(tmp_path, Clock())
    skips = _Skips(found)
    with caplog.at_level("DEBUG", logger="anomon.daemon"):
        for code, job in [
            (EVENT_JOB_MAX_INSTANCES, "detect"),
            (EVENT_JOB_MAX_INSTANCES, "detect"),
            (EVENT_JOB_EXECUTED, "detect"),
            (EVENT_JOB_MAX_INSTANCES, "detect"),
            (EVENT_JOB_MAX_INSTANCES, "collect:web"),
        ]:
            skips(JobEvent(code, job, "default"))
    assert found.detection_skipped._value.get() == 3
    assert found.skipped.labels("web")._value.get() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "detection is falling behind: the previous cycle is still running; "
        "this run is skipped (1 in a row)",
        "detection is falling behind: the previous cycle is still running; "
        "this run is skipped (1 in a row)",
        "source web: the previous collection is still running; this run is skipped (1 in a row)",
    ]


def test_the_allocator_is_tuned_where_it_is_glibc() -> None:
    import platform

    from anomon.service.daemon import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
