"""Per-metric overrides on real databases and a real HTTP receiver: settings that change
what is an anomaly and when an incident opens, and annotations in every format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anomon import store
from anomon.alerts import email
from anomon.alerts.model import IncidentView, Notice
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig, DetectionConfig, SamplesConfig
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from tests.integration.test_alerting import START, Clock, collect, incidents
from tests.loopback import receive

AHEAD = SamplesConfig(max_ahead=timedelta(hours=2))
ANNOTATIONS = {
    "summary": "p99 latency of the churn model is off",
    "runbook_url": "https://runbooks.example/latency",
    "dashboard_url": "https://grafana.example/d/churn",
}


def detection(*overrides: dict[str, Any]) -> DetectionConfig:
    return DetectionConfig.model_validate(
        {"forest": {"min_train": 200}, "seasonality": [], "overrides": list(overrides)}
    )


def run_detection(engine: store.Engine, config: DetectionConfig) -> DetectJob:
    clock = Clock(datetime.fromtimestamp(START + 60 * 1020, UTC))
    job = DetectJob(engine, config, clock=clock, samples=AHEAD)
    collect(engine, 0, 1020)  # the shift of twelve minutes is in there
    job()
    return job


def test_without_an_override_the_shift_opens_an_incident(engine: store.Engine) -> None:
    run_detection(engine, detection())
    assert [i.metric for i in incidents(engine)] == ["latency_p99"]


@pytest.mark.parametrize(
    "override",
    [
        {"metric": "latency_*", "threshold": 100},  # no score reaches it
        {"metric": "latency_*", "direction": "down"},  # only a drop is bad
        {"metric": "latency_p99", "min_effect_abs": 200},  # +80 ms is too small to matter
        {"metric": "latency_p99", "min_effect_rel": 1.0},  # so is +40 %
    ],
    ids=["threshold", "direction", "min_effect_abs", "min_effect_rel"],
)
def test_an_override_for_the_series_changes_what_alarms(
    engine: store.Engine, override: dict[str, Any]
) -> None:
    run_detection(engine, detection(override))
    assert incidents(engine) == []


def test_an_override_gives_its_series_their_own_alarm_rules(engine: store.Engine) -> None:
    override = {"metric": "latency_p99", "labels": {"model": "churn"}, "open_after": 5,
                "resolve_after": 9}  # fmt: skip
    job = run_detection(engine, detection(override))
    (sid,) = job.settings
    threshold, alarm = job.alarms.rules_of(sid)
    assert (threshold, alarm.open_after, alarm.open_within, alarm.resolve_after) == (80, 5, 5, 9)
    (incident,) = incidents(engine)  # a shift scored 95 or more opens at once all the same
    assert incident.peak_score >= 95


def test_an_override_for_other_labels_changes_nothing(engine: store.Engine) -> None:
    run_detection(engine, detection({"metric": "latency_p99", "labels": {"model": "fraud"},
                                     "threshold": 100}))  # fmt: skip
    assert len(incidents(engine)) == 1


def test_annotations_reach_every_webhook_format_and_the_email(engine: store.Engine) -> None:
    config = detection({"metric": "latency_*", "annotations": ANNOTATIONS})
    with receive() as hook:
        formats = ("anomon", "alertmanager", "slack")
        alerts = AlertsConfig.model_validate(
            {
                "receivers": [
                    {"name": f, "kind": "webhook", "url": f"{hook.url}/{f}", "format": f}
                    for f in formats
                ],
                "routes": [{"receiver": f, "continue": True} for f in formats],
                "group_wait": "0s",
            }
        )
        clock = Clock(datetime.fromtimestamp(START + 60 * 1020, UTC))
        collect(engine, 0, 1020)
        DetectJob(engine, config, clock=clock, alerts=alerts, samples=AHEAD)()
        notifiers = build_notifiers(alerts)
        DeliverJob(engine, alerts, notifiers, clock=clock, detection=config)()
        sent = {request.path.lstrip("/"): json.loads(request.body) for request in hook.requests}
    assert set(sent) == set(formats)
    assert sent["anomon"]["incidents"][0]["annotations"] == ANNOTATIONS
    (alert,) = sent["alertmanager"]["alerts"]
    assert alert["annotations"]["summary"] == ANNOTATIONS["summary"]  # theirs wins
    assert alert["annotations"]["runbook_url"] == ANNOTATIONS["runbook_url"]
    assert "value " in alert["annotations"]["description"]  # ours stays beside them
    slack = json.dumps(sent["slack"]["blocks"])
    assert "runbook_url: https://runbooks.example/latency" in slack
    assert "dashboard_url: https://grafana.example/d/churn" in slack
    # the email of the same incident: text lines and links
    data = next(iter(store.incidents_for_notice(engine, [incidents(engine)[0].id]).values()))
    settings = config.settings_for(data.metric, data.labels)
    view = IncidentView.of(data, annotations=settings.annotations)
    notice = Notice("mail", "firing", "k", "{}", {}, [view], clock())
    assert "  runbook_url: https://runbooks.example/latency" in email.render.text_body(notice)
    assert (
        '<a href="https://runbooks.example/latency">https://runbooks.example/latency</a>'
        in email.html_body(notice, {})
    )
