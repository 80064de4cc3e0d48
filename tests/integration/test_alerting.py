"""Incidents and notifications end to end on real databases and a real HTTP receiver:
the detection job opens and resolves incidents and fills the outbox in its own
transaction; the delivery job groups, waits, retries, repeats and never sends twice."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from anomon import store
from anomon.alerts.notifiers import build_notifiers
from anomon.alerts.routing import route
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.errors import UsageError
from anomon.model import IncidentWrite, OutboxEntry, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.store.schema import Anomaly, Incident, Notification
from tests.conftest import save_samples
from tests.loopback import Receiver, free_port, receive

START = 1_795_000_000 // 86_400 * 86_400
SHIFT = range(1000, 1012)  # a latency shift of twelve minutes
DETECTION = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **span: float) -> None:
        self.now += timedelta(**span)


def alerts(url: str, **extra: Any) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "receiver": "hook",
            "receivers": [{"name": "hook", "kind": "webhook", "url": f"{url}/hook"}],
            "group_wait": "30s",
            "group_interval": "1m",
            "delivery": {"backoff_initial": "10s"},
            **extra,
        }
    )


def latency() -> np.ndarray:
    """The latency series every test collects: ~200 ms, 80 ms more during SHIFT."""
    values = 200 + np.random.default_rng(3).normal(0, 2, 1300)
    values[list(SHIFT)] += 80
    return values


def collect(engine: store.Engine, first: int, last: int, *, entity: str = "churn") -> None:
    values = latency()
    info = SeriesInfo("model-server", entity, SeriesKind.LATENCY, "ms")
    key = SeriesKey.of("latency_p99", {"model": entity})
    samples = [Sample(key, info, START + 60 * i, float(values[i])) for i in range(first, last)]
    save_samples(engine, samples, at=datetime.fromtimestamp(START + 60 * last, UTC))


def incidents(engine: store.Engine) -> list[Incident]:
    with Session(engine) as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


def notifications(engine: store.Engine) -> list[Notification]:
    with Session(engine) as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in receiver.requests]


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receive() as receiver:
        yield receiver


def test_an_incident_opens_notifies_resolves_and_notifies_again(
    engine: store.Engine, hook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="anomon")
    config = alerts(hook.url)
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    # the rows up to 1100 are stored before this clock gets there: accept them
    ahead = SamplesConfig(max_ahead=timedelta(hours=2))
    detect = DetectJob(engine, DETECTION, clock=clock, alerts=config, samples=ahead)
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    collect(engine, 0, 1005)
    detect()
    (incident,) = incidents(engine)
    assert (incident.status, incident.metric, incident.entity) == ("firing", "latency_p99", "churn")
    assert json.loads(incident.labels)["model"] == "churn"
    with engine.connect() as conn:  # the anomalies of the shift belong to it
        linked = conn.execute(select(Anomaly.incident_id).where(Anomaly.ts >= START + 60 * 1000))
        assert set(linked.scalars()) == {incident.id}
    (queued,) = notifications(engine)
    assert (queued.event, queued.status, queued.receiver) == ("firing", "pending", "hook")
    # issue 14, point 7: the log says what people need, once it is stored
    assert _logged(caplog, "anomon.detect") == [
        f"incident opened: latency_p99{{model=churn}} on churn, {incident.severity}, peak score "
        f"{incident.peak_score:.0f}"
    ]

    deliver.run_once()
    assert hook.requests == []  # group_wait: 30 s
    clock.advance(seconds=30)
    deliver.run_once()
    (firing,) = bodies(hook)
    assert firing["event"] == "firing" and firing["incidents"][0]["id"] == incident.id
    assert hook.requests[0].headers["idempotency-key"] == firing["key"]
    # the value as it is when the message is written (the latest row, row 1004, inside
    # the shift), and what the detectors expected of it (the ordinary level, ~200)
    told = firing["incidents"][0]
    assert told["value"] == pytest.approx(float(latency()[1004]))
    assert 190.0 < told["expected"] < 210.0 and told["value"] > 260.0

    collect(engine, 1005, 1100)  # back to normal: five normal rows resolve it
    detect()
    (resolved,) = incidents(engine)
    assert resolved.status == "resolved" and resolved.version == incident.version + 1
    assert _logged(caplog, "anomon.detect")[-1].startswith(
        f"incident {incident.id} resolved: latency_p99{{model=churn}} on churn, "
    )
    deliver.run_once()
    assert len(hook.requests) == 1  # group_interval: a minute after the last send
    clock.advance(minutes=1)
    deliver.run_once()
    assert [b["event"] for b in bodies(hook)] == ["firing", "resolved"]
    assert bodies(hook)[1]["status"] == "resolved"
    # the resolve tells the value back to normal (row 1099), not the shift's peak
    back = bodies(hook)[1]["incidents"][0]
    assert back["value"] == pytest.approx(float(latency()[1099]))
    assert abs(back["value"] - back["expected"]) < 10.0
    assert {n.status for n in notifications(engine)} == {"sent"}
    assert _logged(caplog, "anomon.deliver") == [
        f"receiver hook: delivered the firing notice of incident {incident.id}",
        f"receiver hook: delivered the resolved notice of incident {incident.id}",
    ]


def _logged(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.INFO
    ]


def test_running_a_cycle_again_after_a_crash_queues_nothing_twice(engine: store.Engine) -> None:
    config = alerts("http://127.0.0.1:9")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1100, UTC))
    collect(engine, 0, 1100)
    DetectJob(engine, DETECTION, clock=clock, alerts=config)()
    first = [(n.event, n.idempotency_key) for n in notifications(engine)]
    assert [event for event, _ in first] == ["firing", "resolved"]
    with engine.begin() as conn:  # as if the cycle's transaction never happened
        conn.exec_driver_sql("DELETE FROM notifications")
        conn.exec_driver_sql("UPDATE anomalies SET incident_id = NULL")
        conn.exec_driver_sql("DELETE FROM incidents")
        conn.exec_driver_sql("DELETE FROM anomalies")
        conn.exec_driver_sql("DELETE FROM series_state")
    DetectJob(engine, DETECTION, clock=clock, alerts=config)()
    DetectJob(engine, DETECTION, clock=clock, alerts=config)()  # and nothing new after
    assert [(n.event, n.idempotency_key) for n in notifications(engine)] == first
    assert len(incidents(engine)) == 1


def _firing_incidents(engine: store.Engine, count: int, at: datetime, **group: str) -> None:
    """Store ``count`` firing incidents with one queued firing notification each
    (``key``, ``route`` and ``group_labels``: their group's, as a route gives them)."""
    writes = [
        IncidentWrite(
            series_id=None,
            entity=f"model-{i}",
            metric="accuracy",
            labels=json.dumps({"metric": "accuracy", "entity": f"model-{i}"}),
            status="firing",
            severity="warning",
            peak_score=90.0,
            opened_at=at,
            last_seen_at=at,
            outbox=(
                OutboxEntry(
                    "hook",
                    group.get("key", f'default:{{"entity":"model-{i}"}}'),
                    "firing",
                    f"k{i}",
                    at,
                    route=group.get("route", ""),
                    group_labels=group.get("group_labels", "{}"),
                ),
            ),
        )
        for i in range(count)
    ]
    with engine.begin() as conn:
        store.write_incidents(conn, writes, now=at)


def test_a_receiver_that_is_down_gets_every_notification_once_when_back(
    engine: store.Engine, hook: Receiver
) -> None:
    config = alerts(hook.url)
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(engine, 5, clock.now)
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock, jitter=lambda: 1.0)
    hook.status = 503
    for minutes in range(4):  # backoff 10 s, 20 s, 40 s, 80 s
        done = deliver.run_once()
        assert len(done.retry) == 5 and not done.sent, minutes
        clock.advance(minutes=3)
    rows = notifications(engine)
    assert {(n.status, n.attempts) for n in rows} == {("pending", 4)}
    assert all("HTTP 503" in (n.last_error or "") for n in rows)
    hook.status = 200
    assert len(deliver.run_once().sent) == 5
    assert deliver.run_once().sent == []
    delivered = [b["incidents"][0]["entity"] for b in bodies(hook)[-5:]]
    assert delivered == [f"model-{i}" for i in range(5)]  # in incident order
    ok = {r.headers["idempotency-key"] for r in hook.requests[-5:]}
    assert len(ok) == 5


def test_a_permanent_failure_is_dead_at_once_and_a_transient_one_after_max_attempts(
    engine: store.Engine, hook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(engine, 1, clock.now)
    config = alerts(hook.url)
    hook.status = 400
    done = DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    (error,) = done.dead.values()
    assert error.startswith("permanent: ")
    assert "HTTP 400" in notifications(engine)[0].last_error  # type: ignore[operator]
    (dead,) = [r for r in caplog.records if r.name == "anomon.deliver"]
    assert dead.levelno == logging.ERROR
    assert dead.getMessage().startswith("receiver hook: notification of incident ")
    assert " is dead (permanent): " in dead.getMessage() and "HTTP 400" in dead.getMessage()
    assert store.outbox_counts(engine) == {"dead": 1}

    down = alerts(f"http://127.0.0.1:{free_port()}", delivery={"max_attempts": 2})
    with engine.begin() as conn:  # free the key k0 for the next incident
        conn.exec_driver_sql("UPDATE notifications SET idempotency_key = 'x' WHERE status = 'dead'")
    _firing_incidents(engine, 1, clock.now, key="other")
    job = DeliverJob(engine, down, build_notifiers(down), clock=clock)
    caplog.clear()
    assert len(job.run_once().retry) == 1
    (retry,) = [r for r in caplog.records if r.name == "anomon.deliver"]
    assert retry.levelno == logging.WARNING and ": sending incident " in retry.getMessage()
    assert " failed, retry at 2026-12-01 00:00:" in retry.getMessage()
    clock.advance(hours=1)
    (error,) = job.run_once().dead.values()
    assert error.startswith("gave up after 2 attempts") and "connection" in error


def test_incidents_of_one_group_go_out_in_one_message(engine: store.Engine, hook: Receiver) -> None:
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(
        engine,
        3,
        clock.now,
        key='{}:{metric="accuracy"}',
        route="{}",
        group_labels='{"metric":"accuracy"}',
    )
    config = alerts(
        hook.url,
        receivers=[
            {"name": "hook", "kind": "webhook", "url": f"{hook.url}/am", "format": "alertmanager"}
        ],
    )
    DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    (message,) = bodies(hook)
    assert message["version"] == "4" and len(message["alerts"]) == 3
    assert message["groupLabels"] == {"metric": "accuracy"}


def test_a_silence_records_the_incident_and_sends_nothing(
    engine: store.Engine, hook: Receiver
) -> None:
    config = alerts(hook.url, silences=[{"match": {"entity": "churn"}, "comment": "deploy"}])
    clock = Clock(datetime.fromtimestamp(START + 60 * 1100, UTC))
    collect(engine, 0, 1100)
    DetectJob(engine, DETECTION, clock=clock, alerts=config)()
    (incident,) = incidents(engine)
    assert incident.silenced and notifications(engine) == []
    # a silence added while a notification waits: it is dropped at delivery, recorded
    _firing_incidents(engine, 1, clock.now)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE incidents SET entity = 'churn', labels = "
            '\'{"entity":"churn"}\' WHERE silenced = false'
        )
    done = DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    assert len(done.silenced) == 1 and hook.requests == []
    assert store.outbox_counts(engine) == {"silenced": 1}


def test_a_firing_incident_is_repeated_every_repeat_interval_until_acknowledged(
    engine: store.Engine, hook: Receiver
) -> None:
    config = alerts(hook.url, repeat_interval="1h")
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(engine, 1, clock.now)
    job = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    job.run_once()
    clock.advance(minutes=59)
    job.run_once()
    assert len(hook.requests) == 1
    clock.advance(minutes=2)
    job.run_once()
    job.run_once()
    assert [b["event"] for b in bodies(hook)] == ["firing", "repeat"]
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE incidents SET acknowledged_at = '2026-12-01 01:00:00'")
    clock.advance(hours=2)
    job.run_once()
    assert len(hook.requests) == 2


@pytest.mark.postgres
def test_two_delivery_workers_on_postgresql_never_send_the_same_notification(
    postgres_schema_url: str, hook: Receiver
) -> None:
    engine = store.open_engine(postgres_schema_url)
    store.upgrade(engine)
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(engine, 300, clock.now)
    config = alerts(hook.url, delivery={"batch_size": 20})
    workers = [
        DeliverJob(
            store.open_engine(postgres_schema_url), config, build_notifiers(config), clock=clock
        )
        for _ in range(2)
    ]

    def drain(job: DeliverJob) -> None:
        for _ in range(40):
            job.run_once()

    threads = [threading.Thread(target=drain, args=(job,)) for job in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    keys = [request.headers["idempotency-key"] for request in hook.requests]
    assert len(keys) == 300 and len(set(keys)) == 300
    assert store.outbox_counts(engine) == {"sent": 300}
    for job in workers:
        job.engine.dispose()
    engine.dispose()


def test_an_incident_that_came_and_went_in_one_cycle_is_one_resolved_message(
    engine: store.Engine, hook: Receiver
) -> None:
    config = alerts(hook.url)
    clock = Clock(datetime.fromtimestamp(START + 60 * 1100, UTC))
    collect(engine, 0, 1100)
    DetectJob(engine, DETECTION, clock=clock, alerts=config)()
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    deliver.run_once()
    assert hook.requests == []  # both wait group_wait: resolved never goes first
    clock.advance(seconds=30)
    deliver.run_once()
    (message,) = bodies(hook)
    assert (message["event"], message["status"]) == ("resolved", "resolved")
    assert store.outbox_counts(engine) == {"sent": 2}


def test_a_failed_save_rebuilds_the_alarm_state_so_the_incident_still_opens(
    engine: store.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomon.errors import StoreError

    config = alerts("http://127.0.0.1:9")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    collect(engine, 0, 1005)
    job = DetectJob(engine, DETECTION, clock=clock, alerts=config)
    real = store.save_detection

    def refuse(*args: object, **kwargs: object) -> int:
        raise StoreError("database is locked")

    monkeypatch.setattr(store, "save_detection", refuse)
    job()  # the rules saw the shift open, but nothing was stored
    monkeypatch.setattr(store, "save_detection", real)
    job()
    (incident,) = incidents(engine)
    assert incident.status == "firing"
    assert [n.event for n in notifications(engine)] == ["firing"]


def test_an_outcome_is_not_recorded_over_a_later_claim(engine: store.Engine) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    _firing_incidents(engine, 1, now)
    (first,) = store.claim_due(engine, now=now, limit=10, lease=timedelta(0))
    (second,) = store.claim_due(engine, now=now, limit=10, lease=timedelta(minutes=5))
    assert (first.id, first.attempts, second.attempts) == (second.id, 1, 2)
    store.record_outcomes(  # the first worker, late: its lease is over
        engine,
        claims={first.id: 1},
        sent=[],
        retry={first.id: ("HTTP 503", now)},
        dead={},
        silenced=[],
        silenced_incidents=[],
        now=now,
    )
    store.record_outcomes(
        engine,
        claims={second.id: 2},
        sent=[second.id],
        retry={},
        dead={},
        silenced=[],
        silenced_incidents=[],
        now=now,
    )
    (row,) = notifications(engine)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_a_batch_that_outlives_half_its_lease_puts_the_rest_back(
    engine: store.Engine, hook: Receiver
) -> None:
    class Ticking(Clock):
        def __call__(self) -> datetime:
            self.now += timedelta(minutes=1)  # every look at the clock: a minute later
            return self.now

    config = alerts(hook.url, delivery={"claim_timeout": "4m"})
    clock = Ticking(datetime(2026, 12, 1, tzinfo=UTC))
    _firing_incidents(engine, 6, clock.now - timedelta(hours=1))
    done = DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    assert done.sent and done.released
    assert len(done.sent) + len(done.released) == 6
    released = [n for n in notifications(engine) if n.id in done.released]
    assert {(n.status, n.attempts) for n in released} == {("pending", 0)}


def test_an_incident_silenced_while_it_fired_is_told_after_the_silence(
    engine: store.Engine, hook: Receiver
) -> None:
    noon = datetime(2026, 12, 1, 12, tzinfo=UTC)
    config = alerts(hook.url, repeat_interval="1h")
    clock = Clock(noon)
    _firing_incidents(engine, 1, noon)
    with engine.begin() as conn:
        conn.exec_driver_sql('UPDATE incidents SET labels = \'{"entity":"churn"}\'')
    store.add_silence(
        engine,
        [{"name": "entity", "value": "churn", "op": "="}],
        starts_at=noon,
        ends_at=noon + timedelta(minutes=30),
        comment="deploy",
        created_by="test",
        now=noon,
    )
    job = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    assert len(job.run_once().silenced) == 1 and hook.requests == []
    clock.advance(minutes=61)  # the silence is over and a repeat interval has passed
    job.run_once()
    assert [b["event"] for b in bodies(hook)] == ["repeat"]


def test_an_incident_resolved_by_hand_is_told_resolved_and_opens_anew_if_still_anomalous(
    engine: store.Engine, hook: Receiver
) -> None:
    from anomon.service import resolve_incident

    config = alerts(hook.url, group_wait="0s", group_interval="1s")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    detect = DetectJob(engine, DETECTION, clock=clock, alerts=config)
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    collect(engine, 0, 1005)
    detect()
    (first,) = incidents(engine)
    deliver.run_once()
    clock.advance(seconds=1)
    resolve_incident(engine, config, first.id, now=clock())
    deliver.run_once()
    assert [(b["event"], b["incidents"][0]["id"]) for b in bodies(hook)] == [
        ("firing", first.id),
        ("resolved", first.id),
    ]
    with pytest.raises(UsageError, match=f"incident {first.id} is resolved, not firing"):
        resolve_incident(engine, config, first.id, now=clock())

    collect(engine, 1005, 1008)  # the shift goes on: the rules still say firing ...
    clock.advance(minutes=3)
    detect()
    assert [i.status for i in incidents(engine)] == ["resolved"]  # ... and learn otherwise
    collect(engine, 1008, 1011)
    clock.advance(minutes=3)
    detect()
    assert [i.status for i in incidents(engine)] == ["resolved", "firing"]
    clock.advance(seconds=1)
    deliver.run_once()
    assert [b["event"] for b in bodies(hook)] == ["firing", "resolved", "firing"]


def test_an_alertmanager_format_message_carries_its_whole_group_as_alertmanager_does(
    engine: store.Engine, hook: Receiver
) -> None:
    # issue 14, point 2b, as captured from a real Alertmanager: firing [acc]; firing
    # [acc, lat]; firing [acc resolved, lat firing]; resolved [lat] (anomon sent
    # "resolved [acc]" while latency still fired)
    config = alerts(hook.url, group_wait="0s")
    config = config.model_copy(
        update={"receivers": [config.receivers[0].model_copy(update={"format": "alertmanager"})]}
    )
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    stored: dict[str, tuple[int, int]] = {}  # metric -> (id, version)

    def change(metric: str, status: str) -> None:
        labels = {"metric": metric, "entity": "churn", "severity": "warning"}
        (delivery,) = route(labels, config)
        event = "firing" if status == "firing" else "resolved"
        entry = OutboxEntry("hook", delivery.group_key, event, f"{metric}-{event}", clock.now)
        known = stored.get(metric)
        write = IncidentWrite(
            series_id=None, entity="churn", metric=metric, labels=json.dumps(labels),
            status=status, severity="warning", peak_score=90.0, opened_at=clock.now,
            last_seen_at=clock.now, resolved_at=None if status == "firing" else clock.now,
            incident_id=known[0] if known else None, version=known[1] if known else None,
            outbox=(entry,),
        )  # fmt: skip
        with engine.begin() as conn:
            (incident_id,) = store.write_incidents(conn, [write], now=clock.now)
        assert incident_id is not None
        stored[metric] = (incident_id, (known[1] + 1) if known else 1)
        deliver.run_once()
        clock.advance(minutes=2)  # past group_interval: the next change goes out at once

    change("accuracy", "firing")
    change("latency", "firing")
    change("accuracy", "resolved")
    change("latency", "resolved")
    told = [
        (body["status"], sorted((a["labels"]["metric"], a["status"]) for a in body["alerts"]))
        for body in bodies(hook)
    ]
    assert told == [
        ("firing", [("accuracy", "firing")]),
        ("firing", [("accuracy", "firing"), ("latency", "firing")]),
        ("firing", [("accuracy", "resolved"), ("latency", "firing")]),
        ("resolved", [("latency", "resolved")]),
    ]
    keys = {body["groupKey"] for body in bodies(hook)}
    assert keys == {'{}:{entity="churn"}'}  # Alertmanager's syntax, one group


def test_a_route_in_its_mute_time_interval_sends_nothing_and_says_so(
    engine: store.Engine, hook: Receiver
) -> None:
    clock = Clock(datetime(2026, 12, 7, 1, 30, tzinfo=UTC))  # 02:30 on a Monday in Berlin
    window = {"name": "nightly", "times": [{"start": "02:00", "end": "04:00"}]}
    config = alerts(
        hook.url,
        time_intervals=[{**window, "time_zone": "Europe/Berlin"}],
        routes=[
            {
                "receiver": "hook",
                "match": {"metric": "accuracy"},
                "mute_time_intervals": ["nightly"],
            }
        ],
    )
    (delivery,) = route({"metric": "accuracy", "entity": "model-0"}, config)
    _firing_incidents(engine, 1, clock.now, key=delivery.group_key, route=delivery.route)
    done = DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    assert hook.requests == [] and len(done.silenced) == 1
    assert store.outbox_counts(engine) == {"silenced": 1}
