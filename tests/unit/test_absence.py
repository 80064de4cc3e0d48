"""The absent-data watch's plan (issue 13, point 5): which sources are down, and when
they are back. Pure: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from anomon.alerts.routing import Silence
from anomon.config import AbsentConfig, AlertsConfig
from anomon.model import IncidentWrite
from anomon.service.absence import plan_source_down
from anomon.store import OpenAbsence, SourceHealth

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ALERTS = AlertsConfig.model_validate(
    {"receiver": "hook", "receivers": [{"name": "hook", "kind": "email", "to": ["a@b"]}]}
)


def failing_since(name: str, good: datetime | None, first: datetime) -> SourceHealth:
    return SourceHealth(name, first, NOW - timedelta(seconds=1), good, "HTTP 503 from the exporter")


def plan(
    health: dict[str, SourceHealth],
    intervals: dict[str, timedelta],
    open_now: dict[str, OpenAbsence] | None = None,
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
    absence = OpenAbsence(
        7, 3, "prom", '{"entity":"prom"}', "critical", back - timedelta(hours=1), False
    )
    gone = OpenAbsence(8, 1, "old", '{"entity":"old"}', "critical", back, False)
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
