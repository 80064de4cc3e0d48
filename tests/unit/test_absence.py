"""The absent-data watch's plan (issue 13, point 5): which sources are down, and when
they are back. Pure: no database, no clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from anomon.alerts.routing import Silence
from anomon.config import AbsentConfig, AlertsConfig
from anomon.model import IncidentRecord, IncidentStatus, IncidentWrite, Severity
from anomon.service.absence import plan_source_down
from anomon.store import SourceHealth

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ALERTS = AlertsConfig.model_validate(
    {"receiver": "hook", "receivers": [{"name": "hook", "kind": "email", "to": ["a@b"]}]}
)


def failing_since(name: str, good: datetime | None, first: datetime) -> SourceHealth:
    return SourceHealth(name, first, NOW - timedelta(seconds=1), good, "HTTP 503 from the exporter")


def plan(
    health: dict[str, SourceHealth],
    intervals: dict[str, timedelta],
    open_now: dict[str, IncidentRecord] | None = None,
    **changes: object,
) -> list[IncidentWrite]:
    config = AbsentConfig.model_validate(changes)
    return plan_source_down(
        health, open_now or {}, intervals=intervals, config=config, alerts=ALERTS,
        silences=[], now=NOW,
    )  # fmt: skip


def test_a_source_failing_for_five_minutes_is_down_since_its_last_good_run() -> None:
    good = NOW - timedelta(minutes=6)
    (write,) = plan({"prom": failing_since("prom", good, good)}, {"prom": timedelta(seconds=15)})
    assert (write.metric, write.entity, write.status, write.severity, write.change) == (
        "source_down", "prom", "firing", "critical", "opened"
    )  # fmt: skip
    assert write.opened_at == good and write.series_id is None
    assert [entry.event for entry in write.outbox] == ["firing"]
    # four minutes of failures are not five
    late = NOW - timedelta(minutes=4)
    assert plan({"prom": failing_since("prom", late, late)}, {"prom": timedelta(seconds=15)}) == []


def test_an_hourly_source_is_not_down_before_three_missed_runs() -> None:
    good = NOW - timedelta(hours=2)
    hourly = {"quality": timedelta(hours=1)}
    assert plan({"quality": failing_since("quality", good, good)}, hourly) == []
    older = NOW - timedelta(hours=3)
    assert len(plan({"quality": failing_since("quality", older, older)}, hourly)) == 1


def test_a_source_that_never_succeeded_is_down_since_its_first_run() -> None:
    first = NOW - timedelta(minutes=10)
    (write,) = plan({"new": failing_since("new", None, first)}, {"new": timedelta(seconds=15)})
    assert write.opened_at == first


def test_the_first_good_run_resolves_it_and_a_removed_source_is_resolved_too() -> None:
    back = NOW - timedelta(seconds=20)
    healthy = SourceHealth("prom", NOW - timedelta(days=1), back, back, None)
    absence = _open(7, "prom", back - timedelta(hours=1), version=3)
    gone = _open(8, "old", back)
    writes = plan(
        {"prom": healthy}, {"prom": timedelta(seconds=15)}, {"prom": absence, "old": gone}
    )
    assert [(w.incident_id, w.version, w.status, w.resolved_at) for w in writes] == [
        (7, 3, "resolved", back),
        (8, 1, "resolved", NOW),
    ]
    assert [entry.event for entry in writes[0].outbox] == ["resolved"]
    # still failing and already open: nothing to write
    still = failing_since("prom", back - timedelta(hours=1), back - timedelta(days=1))
    assert plan({"prom": still}, {"prom": timedelta(seconds=15)}, {"prom": absence}) == []


def test_it_can_be_switched_off_and_a_silence_keeps_it_quiet() -> None:
    good = NOW - timedelta(hours=1)
    health = {"prom": failing_since("prom", good, good)}
    assert plan(health, {"prom": timedelta(seconds=15)}, enabled=False) == []
    (write,) = plan_source_down(
        health, {}, intervals={"prom": timedelta(seconds=15)}, config=AbsentConfig(),
        alerts=ALERTS, silences=[Silence({"metric": "source_down"}, {})], now=NOW,
    )  # fmt: skip
    assert write.silenced and write.outbox == ()


# ---- series that stop arriving while their source collects


def _quiet(sid: int, metric: str, source: str = "app", minutes: int = 20) -> object:
    from anomon.store import QuietSeries

    last = int((NOW - timedelta(minutes=minutes)).timestamp())
    return QuietSeries(sid, metric, '{"queue":"b"}', source, source, last)


def plan_series(quiet: list, open_now: dict | None = None, last_seen: dict | None = None,
                overrides: list | None = None,
                retired: dict | None = None) -> list[IncidentWrite]:  # fmt: skip
    from anomon.config import DetectionConfig, LogsSourceConfig, PrometheusScrapeSourceConfig
    from anomon.service.absence import plan_series_absent, watched_sources

    sources = [
        PrometheusScrapeSourceConfig.model_validate(
            {"name": "app", "kind": "prometheus_scrape", "url": "http://127.0.0.1:1/m"}
        ),
        LogsSourceConfig.model_validate(
            {
                "name": "log",
                "kind": "logs",
                "path": "/x.log",
                "patterns": {
                    "errors": "ERROR",
                    "took": {"regex": "t=(?P<value>\\d+)", "aggregate": "max"},
                },
            }
        ),
    ]
    detection = DetectionConfig.model_validate({"overrides": overrides or []})
    return plan_series_absent(
        quiet, open_now or {}, last_seen or {}, retired=retired,
        watched=watched_sources(sources), detection=detection, alerts=ALERTS, silences=[], now=NOW,
    )  # fmt: skip


def test_a_quiet_series_opens_a_series_absent_incident_with_its_labels() -> None:
    (write,) = plan_series([_quiet(7, "app_queue_depth")])
    labels = json.loads(write.labels)
    assert (write.metric, write.entity, write.severity, write.change) == (
        "series_absent", "app", "warning", "opened")  # fmt: skip
    assert labels["series_metric"] == "app_queue_depth" and labels["series_id"] == "7"
    assert labels["queue"] == "b" and labels["kind"] == "absent"
    assert write.opened_at == NOW - timedelta(minutes=20)  # its last sample


def test_a_log_aggregate_and_an_override_may_come_and_go() -> None:
    assert plan_series([_quiet(3, "took", source="log")]) == []  # silent when nothing matched
    assert len(plan_series([_quiet(4, "errors", source="log")])) == 1  # a count is never silent
    let_off = [{"metric": "app_*", "labels": {"queue": "b"}, "absent": False}]
    assert plan_series([_quiet(7, "app_queue_depth")], overrides=let_off) == []


def test_a_sample_after_the_opening_resolves_it_and_an_open_one_is_not_opened_again() -> None:
    opened = NOW - timedelta(minutes=20)
    labels = {"series_metric": "app_queue_depth", "series_id": "7", "source": "app", "queue": "b"}
    absence = _open(11, "app", opened, labels=labels, severity=Severity.WARNING)
    assert (
        plan_series([_quiet(7, "app_queue_depth")], {7: absence}, {7: int(opened.timestamp())})
        == []
    )
    back = int((NOW - timedelta(seconds=5)).timestamp())
    (write,) = plan_series([], {7: absence}, {7: back})
    assert (write.incident_id, write.status, write.change) == (11, "resolved", "resolved")
    assert write.resolved_at == datetime.fromtimestamp(back, UTC)


def test_a_series_gone_past_its_retire_cutoff_is_resolved_as_retired() -> None:
    opened = NOW - timedelta(days=2)
    labels = {"series_metric": "app_queue_depth", "series_id": "7", "source": "app", "queue": "b"}
    absence = _open(11, "app", opened, labels=labels, severity=Severity.WARNING)
    last = int(opened.timestamp())
    cutoff = int((NOW - timedelta(days=1)).timestamp())
    (write,) = plan_series([], {7: absence}, {7: last}, retired={"app": cutoff})
    assert (write.incident_id, write.status, write.change) == (11, "resolved", "retired")
    assert write.resolved_at == NOW  # told now: the data did not come back
    assert [entry.event for entry in write.outbox] == ["resolved"]
    # a day is not over yet for this source: it goes on firing
    assert plan_series([], {7: absence}, {7: last}, retired={"app": last - 60}) == []
    # another source's cutoff says nothing about this one
    assert plan_series([], {7: absence}, {7: last}, retired={"log": cutoff}) == []


def test_retiring_must_wait_longer_than_absence() -> None:
    import pytest

    from anomon.config import DetectionConfig

    with pytest.raises(ValueError, match="series_retire_after must be longer"):
        AbsentConfig.model_validate({"series_retire_after": "5m"})
    never = DetectionConfig.model_validate({"absent": {"series_retire_after": "0s"}})
    assert not never.absent.series_retire_after
    assert AbsentConfig().series_retire_after == timedelta(days=1)


def _open(
    i: int,
    entity: str,
    opened: datetime,
    *,
    version: int = 1,
    labels: dict[str, str] | None = None,
    severity: Severity = Severity.CRITICAL,
) -> IncidentRecord:
    """A firing absent-data incident as the store gives it."""
    return IncidentRecord(
        id=i,
        status=IncidentStatus.FIRING,
        severity=severity,
        peak_score=100.0,
        opened_at=opened,
        last_seen_at=opened,
        version=version,
        entity=entity,
        labels=labels or {"entity": entity},
    )
