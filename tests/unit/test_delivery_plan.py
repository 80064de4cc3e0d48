"""plan_delivery: a delivery run's decisions, tested without a database or a network."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from anomon import store
from anomon.alerts.routing import Silence
from anomon.model import Event, IncidentRecord, IncidentStatus, Severity
from anomon.service.delivery_plan import message_key, messages, plan_delivery

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ROUTE = '{}/{severity="critical"}'


def claimed(
    i: int,
    incident: int,
    *,
    receiver: str = "hook",
    group: str = "g1",
    route: str = ROUTE,
    message: str | None = None,
) -> store.Claimed:
    return store.Claimed(
        id=i,
        incident_id=incident,
        receiver=receiver,
        group_key=f"{route}:{{{group}}}",
        event=Event.FIRING,
        key=f"k{i}",
        attempts=1,
        created_at=NOW,
        message_key=message,
        route=route,
        group_labels={"entity": group},
    )


def data(i: int, **labels: str) -> IncidentRecord:
    return IncidentRecord(
        id=i,
        series_id=i,
        metric="latency_p99_ms",
        entity=labels.get("entity", "churn"),
        labels={"metric": "latency_p99_ms", "entity": "churn", **labels},
        status=IncidentStatus.FIRING,
        severity=Severity.CRITICAL,
        peak_score=97.0,
        opened_at=NOW,
        last_seen_at=NOW,
        resolved_at=None,
        silenced=False,
        value=9.0,
        expected=1.0,
        direction="up",
        detector_scores={},
        value_at=NOW,
        contributors=(),
    )


def test_rows_of_one_receiver_and_group_go_as_one_message_others_apart() -> None:
    rows = [
        claimed(1, 1),
        claimed(2, 2),
        claimed(3, 3, group="g2"),
        claimed(4, 1, receiver="mail"),
        # tried before in its own message: sent again as that message, not merged
        claimed(5, 4, message="m-old"),
    ]
    found = messages(rows)
    assert sorted((m.receiver, [r.id for r in m.rows]) for m in found) == [
        ("hook", [1, 2]),
        ("hook", [3]),
        ("hook", [5]),
        ("mail", [4]),
    ]
    first = next(m for m in found if m.rows[0].id == 1)
    assert first.key == message_key(["k2", "k1"])
    assert (first.route, dict(first.group_labels)) == (ROUTE, {"entity": "g1"})


def test_the_plan_sends_live_rows_and_records_the_rest_with_the_reason() -> None:
    rows = [
        claimed(1, 1),
        claimed(2, 2),  # its incident is silenced
        claimed(3, 3),  # its incident is gone (deleted by retention)
        claimed(4, 1, receiver="gone"),  # a receiver no longer in the config
        claimed(5, 1, group="g2", route='{}/{team="db"}'),  # its route is muted now
    ]
    incidents = {1: data(1), 2: data(2, entity="quiet")}
    silence = Silence({"entity": "quiet"}, {}, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    plan = plan_delivery(
        rows,
        incidents,
        receivers={"hook"},
        silences=[silence],
        muted={'{}/{team="db"}'},
        now=NOW,
    )
    assert [(s.message.receiver, [r.id for r in s.live]) for s in plan.sends] == [("hook", [1])]
    assert sorted(plan.silenced) == [2, 3, 5]
    assert plan.silenced_incidents == {2}
    assert plan.dead == {4: "receiver 'gone' is not in the config"}
    # every message keeps its key, the silenced rows' too: a retry sends the same set
    assert sorted(len(m.rows) for m in plan.messages) == [1, 1, 3]


def test_a_silence_that_ended_or_has_not_begun_silences_nothing() -> None:
    rows = [claimed(1, 1)]
    incidents = {1: data(1)}
    for starts, ends in ((NOW - timedelta(hours=2), NOW), (NOW + timedelta(minutes=1), None)):
        plan = plan_delivery(
            rows,
            incidents,
            receivers={"hook"},
            silences=[Silence({"entity": "churn"}, {}, starts, ends)],
            muted=set(),
            now=NOW,
        )
        assert [r.id for s in plan.sends for r in s.live] == [1]
        assert plan.silenced == []


def test_a_program_gets_each_notification_alone_and_never_one_that_may_have_run() -> None:
    rows = [claimed(1, 1, receiver="retrain"), claimed(2, 2, receiver="retrain")]
    crashed = replace(claimed(3, 3, receiver="retrain"), attempts=2, last_error=store.RUN_STARTED)
    failed = replace(claimed(4, 4, receiver="retrain"), attempts=2, last_error="exit status 3")
    plan = plan_delivery(
        [*rows, crashed, failed],
        {i: data(i) for i in (1, 2, 3, 4)},
        receivers={"retrain"},
        silences=[],
        muted=set(),
        now=NOW,
        one_by_one={"retrain"},
    )
    # one run per notification; a failed run is tried again, a cut-short one is not
    assert [[r.id for r in s.live] for s in plan.sends] == [[1], [2], [4]]
    assert list(plan.dead) == [3] and plan.dead[3].startswith("not run again: started;")
    assert message_key(["k3"]) in plan.dead[3]  # the key the program can check
