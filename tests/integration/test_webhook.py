"""The webhook notifier against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from anomon import __version__
from anomon.alerts import render
from anomon.alerts.alertmanager import postable_alerts
from anomon.alerts.email import html_body
from anomon.alerts.webhook import WebhookNotifier, fingerprint
from anomon.config import WebhookReceiverConfig
from tests.alert_fixtures import NOW, OPENED, delivery_error, incident, notice
from tests.loopback import Receiver, free_port, receive

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "data" / "alertmanager_webhook_v4.schema.json").read_text()
)
SECRET = "hmac-secret-3f9a"
TOKEN = "query-token-77c1"
HEADER_VALUE = "Bearer header-secret-d2e8"
PASSWORD = "url-password-b41e"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receive() as running:
        yield running


OPEN: list[WebhookNotifier] = []


@pytest.fixture(autouse=True)
def _close_notifiers() -> Iterator[None]:
    """Close every notifier a test made (their HTTP connections)."""
    yield
    while OPEN:
        OPEN.pop().close()


def notifier(url: str, external_url: str = "", **options: Any) -> WebhookNotifier:
    options.setdefault("timeout", timedelta(seconds=5))
    config = WebhookReceiverConfig(name="ops-hook", kind="webhook", url=url, **options)
    made = WebhookNotifier(config, clock=lambda: NOW, external_url=external_url)
    OPEN.append(made)
    return made


def sent(receiver: Receiver) -> dict[str, Any]:
    assert len(receiver.requests) == 1
    body: dict[str, Any] = json.loads(receiver.requests[0].body)
    return body


# --- formats --------------------------------------------------------------------------


def test_it_posts_anomons_own_json(receiver: Receiver) -> None:
    notifier(f"{receiver.url}/hook").send(notice(receiver="ops-hook"))
    body = sent(receiver)
    assert receiver.requests[0].method == "POST"
    assert receiver.requests[0].path == "/hook"
    assert {k: body[k] for k in ("version", "key", "receiver", "event", "status")} == {
        "version": "1",
        "key": "n-5f2c",
        "receiver": "ops-hook",
        "event": "firing",
        "status": "firing",
    }
    assert body["group_labels"] == {"entity": "churn-model"}
    assert body["sent_at"] == "2026-11-22T11:50:07Z"
    assert body["test"] is False
    [shown] = body["incidents"]
    assert shown["id"] == 17
    assert shown["opened_at"] == "2026-11-22T11:45:00Z"
    assert shown["resolved_at"] is None
    assert shown["value"] == 0.71
    assert shown["detector_scores"] == {"zscore": 87.4, "forest": 61.0}
    assert set(shown) == {
        "id", "metric", "entity", "labels", "status", "severity", "peak_score", "opened_at",
        "last_seen_at", "resolved_at", "acknowledged", "value", "expected", "direction",
        "detector_scores", "notification_keys", "annotations", "url", "contributors", "deploy",
    }  # fmt: skip
    assert shown["deploy"] is None  # none was made shortly before it
    assert shown["url"] is None  # no [daemon] external_url: no page to link to


def test_it_sends_null_for_unknown_and_non_finite_numbers(receiver: Receiver) -> None:
    odd = incident(value=math.nan, expected=None, detector_scores={"zscore": math.inf})
    notifier(receiver.url).send(notice(odd))
    [shown] = sent(receiver)["incidents"]
    assert shown["value"] is None
    assert shown["expected"] is None
    assert shown["detector_scores"] == {"zscore": None}


def test_it_posts_an_alertmanager_v4_payload_its_schema_accepts(receiver: Receiver) -> None:
    resolved = incident(
        id=18,
        metric="latency_p99",
        labels={"metric": "latency_p99", "entity": "churn-model", "severity": "warning"},
        severity="warning",
        status="resolved",
        resolved_at=OPENED + timedelta(minutes=30),
    )
    notifier(receiver.url, format="alertmanager").send(notice(incident(), resolved))
    body = sent(receiver)
    jsonschema.validate(body, SCHEMA)
    assert body["version"] == "4"
    assert body["groupKey"] == '{}:{entity="churn-model"}'
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"entity": "churn-model"}
    assert body["commonLabels"] == {"entity": "churn-model"}
    firing, done = body["alerts"]
    assert firing["labels"]["alertname"] == "accuracy"
    assert firing["labels"]["severity"] == "critical"
    assert firing["startsAt"] == "2026-11-22T11:45:00Z"
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert "0.71" in firing["annotations"]["description"]
    assert "expected 0.93" in firing["annotations"]["description"]
    assert "score 87" in firing["annotations"]["description"]
    # the identity is the labels without severity: an escalation is the same alert
    identity = {k: v for k, v in firing["labels"].items() if k != "severity"}
    assert firing["fingerprint"] == fingerprint(identity)
    assert body["externalURL"] == ""  # no [daemon] external_url
    assert done["status"] == "resolved"
    assert done["endsAt"] == "2026-11-22T12:15:00Z"


def test_it_keeps_the_fingerprint_of_a_series_stable_across_incidents(receiver: Receiver) -> None:
    hook = notifier(receiver.url, format="alertmanager")
    hook.send(notice(incident(id=1)))
    hook.send(notice(incident(id=2, peak_score=40.0, opened_at=OPENED + timedelta(days=1))))
    first, second = (json.loads(r.body)["alerts"][0] for r in receiver.requests)
    assert first["fingerprint"] == second["fingerprint"]


def test_an_escalation_keeps_the_alert_and_the_external_url_is_sent(receiver: Receiver) -> None:
    # issue 14, point 2b: the fingerprint went da6b0763cd77efa1 -> ad2e3e199fff9d0a
    hook = notifier(receiver.url, format="alertmanager", external_url="https://anomon.example")
    warning = {"metric": "accuracy", "entity": "churn-model", "severity": "warning"}
    hook.send(notice(incident(severity="warning", labels=warning)))
    hook.send(notice(incident(severity="critical", labels={**warning, "severity": "critical"})))
    first, second = (json.loads(r.body) for r in receiver.requests)
    assert first["alerts"][0]["labels"]["severity"] == "warning"
    assert second["alerts"][0]["labels"]["severity"] == "critical"
    assert first["alerts"][0]["fingerprint"] == second["alerts"][0]["fingerprint"]
    assert second["externalURL"] == "https://anomon.example"


def test_every_format_links_to_the_incidents_page_in_the_console(receiver: Receiver) -> None:
    page = "https://anomon.example/incidents/17"
    linked = incident(url=page)
    for format in ("anomon", "alertmanager", "slack"):
        notifier(receiver.url, format=format).send(notice(linked))
    anomon, alertmanager, slack = (json.loads(r.body) for r in receiver.requests)
    assert anomon["incidents"][0]["url"] == page
    assert alertmanager["alerts"][0]["generatorURL"] == page
    assert f"<{page}|incident 17 in anomon>" in slack["blocks"][1]["text"]["text"]
    assert f"details: {page}" in render.text_body(notice(linked))
    assert f'<a href="{page}">incident 17 in anomon</a>' in html_body(notice(linked), {})
    assert "details:" not in render.text_body(notice(incident()))  # none without a URL
    (posted,) = postable_alerts([linked], now=NOW, ttl=timedelta(minutes=4))
    assert posted["generatorURL"] == page  # what kind = "alertmanager" posts
    (plain,) = postable_alerts([incident()], now=NOW, ttl=timedelta(minutes=4))
    assert "generatorURL" not in plain


def test_it_computes_fingerprints_as_prometheus_does() -> None:
    # the test vectors of prometheus/common's model.labelSetToFingerprint
    assert fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert fingerprint(labels) == f"{5799056148416392346:016x}"


def test_it_has_a_schema_that_accepts_what_alertmanager_sends() -> None:
    # the shape of the example in Alertmanager's docs, with a Go-style timestamp
    example = {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="ProbeFailure"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "sms",
        "groupLabels": {"alertname": "ProbeFailure"},
        "commonLabels": {"alertname": "ProbeFailure", "job": "http_checks"},
        "commonAnnotations": {"summary": "probe failed"},
        "externalURL": "http://alertmanager.example.org:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ProbeFailure", "job": "http_checks"},
                "annotations": {"summary": "probe failed"},
                "startsAt": "2023-02-06T13:08:45.828+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example.org:9090/graph",
                "fingerprint": "1a30ba71cca2921f",
            }
        ],
    }
    jsonschema.validate(example, SCHEMA)
    del example["groupKey"]
    with pytest.raises(jsonschema.ValidationError, match="groupKey"):
        jsonschema.validate(example, SCHEMA)


def test_it_posts_a_slack_message_with_a_fallback_text(receiver: Receiver) -> None:
    odd = incident(id=18, entity="a<b>&c", metric="latency")
    notifier(receiver.url, format="slack").send(notice(incident(), odd))
    body = sent(receiver)
    assert body["text"] == "[FIRING:2] 2 metrics on 2 entities (critical)"
    header, first, second, footer = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": body["text"]}}
    assert first["type"] == "section"
    assert first["text"]["type"] == "mrkdwn"
    assert "accuracy on churn-model is 0.71" in first["text"]["text"]
    assert "a&lt;b&gt;&amp;c" in second["text"]["text"]
    assert footer["type"] == "context"


def test_slack_gets_escaped_fallback_text_and_sections_within_its_limit(
    receiver: Receiver,
) -> None:
    """An entity from the data (a sql source's metric, a group_by value) cannot mention
    the whole channel through the fallback text; a summary of 5,000 characters does not
    make a section Slack refuses for good (3,000 at most), and the link survives."""
    loud = incident(entity="<!channel> x<y>", metric="latency")
    long = incident(
        id=18,
        annotations={"summary": "a & b " * 900},
        url="https://anomon.example/incidents/18",
    )
    notifier(receiver.url, format="slack").send(notice(loud))
    body = sent(receiver)
    assert "<!channel>" not in body["text"] and "&lt;!channel&gt; x&lt;y&gt;" in body["text"]
    notifier(receiver.url, format="slack").send(notice(long))
    section = json.loads(receiver.requests[-1].body)["blocks"][1]["text"]["text"]
    assert len(section) <= 3000
    assert section.endswith("\n<https://anomon.example/incidents/18|incident 18 in anomon>")
    assert "… " not in section and section.split("\n<")[0].endswith("…")
    assert "&amp…" not in section and "&am…" not in section and "&a…" not in section


def test_it_lists_at_most_twenty_incidents_in_slack(receiver: Receiver) -> None:
    many = [incident(id=i) for i in range(25)]
    notifier(receiver.url, format="slack").send(notice(*many))
    blocks = sent(receiver)["blocks"]
    assert len(blocks) == 1 + 20 + 1
    assert blocks[-1]["elements"][0]["text"].startswith("and 5 more incidents")


# --- headers and signature ------------------------------------------------------------


def test_it_sends_json_idempotency_agent_and_configured_headers(receiver: Receiver) -> None:
    notifier(receiver.url, headers={"X-Team": "ml", "Authorization": HEADER_VALUE}).send(notice())
    headers = receiver.requests[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == "n-5f2c"
    assert headers["user-agent"] == f"anomon/{__version__}"
    assert headers["x-team"] == "ml"
    assert headers["authorization"] == HEADER_VALUE


def test_it_sends_the_same_idempotency_key_when_a_notice_is_sent_again(
    receiver: Receiver,
) -> None:
    hook = notifier(receiver.url)
    hook.send(notice(key="n-again"))
    hook.send(notice(key="n-again"))
    keys = [r.headers["idempotency-key"] for r in receiver.requests]
    assert keys == ["n-again", "n-again"]


def test_it_signs_the_exact_body_with_the_secret(receiver: Receiver) -> None:
    notifier(receiver.url, secret=SECRET).send(notice())
    got = receiver.requests[0]
    timestamp = got.headers["x-anomon-timestamp"]
    assert timestamp == str(int(NOW.timestamp()))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + got.body, hashlib.sha256)
    assert hmac.compare_digest(got.headers["x-anomon-signature"], f"sha256={expected.hexdigest()}")


def test_it_gives_a_different_signature_for_another_secret(receiver: Receiver) -> None:
    notifier(receiver.url, secret=SECRET).send(notice())
    notifier(receiver.url, secret="another").send(notice())
    first, second = (r.headers["x-anomon-signature"] for r in receiver.requests)
    assert first != second


def test_it_sends_no_signature_without_a_secret(receiver: Receiver) -> None:
    notifier(receiver.url).send(notice())
    headers = receiver.requests[0].headers
    assert "x-anomon-signature" not in headers
    assert "x-anomon-timestamp" not in headers


# --- failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (500, False),
        (502, False),
        (503, False),
        (408, False),
        (429, False),
        (400, True),
        (401, True),
        (404, True),
        (410, True),
        (422, True),
    ],
)
def test_it_tells_transient_from_permanent_http_failures(
    receiver: Receiver, status: int, permanent: bool
) -> None:
    receiver.status = status
    error = delivery_error(notifier(f"{receiver.url}/hook"))
    assert error.permanent is permanent
    assert str(error).startswith(f"{receiver.url}/…: HTTP {status} ")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_it_refuses_to_follow_redirects(receiver: Receiver, status: int) -> None:
    receiver.status = status
    receiver.reply_headers = {"Location": f"{receiver.url}/elsewhere"}
    error = delivery_error(notifier(receiver.url))
    assert error.permanent is True
    assert "redirects are not followed" in str(error)
    assert len(receiver.requests) == 1


def test_it_calls_a_timeout_transient(receiver: Receiver) -> None:
    receiver.delay = 1.5
    error = delivery_error(notifier(receiver.url, timeout=timedelta(milliseconds=300)))
    assert error.permanent is False
    assert str(error) == f"{receiver.url}: timed out after 0.3 s"


def test_it_calls_a_refused_connection_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    error = delivery_error(notifier(f"{url}/hook"))
    assert error.permanent is False
    assert str(error) == f"{url}/…: connection refused"


def test_it_calls_a_failed_tls_handshake_transient(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "https://")  # a plain HTTP server answers TLS
    error = delivery_error(notifier(url))
    assert error.permanent is False
    assert str(error).startswith(f"{url}: TLS handshake failed (")


def _leaky(url: str) -> str:
    host = url.removeprefix("http://")
    return f"http://hook:{PASSWORD}@{host}/hook?token={TOKEN}"


@pytest.mark.parametrize("failure", ["status", "timeout", "refused"])
def test_it_keeps_secrets_out_of_error_messages(receiver: Receiver, failure: str) -> None:
    url = _leaky(receiver.url if failure != "refused" else f"http://127.0.0.1:{free_port()}")
    receiver.status = 401
    receiver.delay = 1.0 if failure == "timeout" else 0.0
    hook = notifier(
        url,
        secret=SECRET,
        headers={"Authorization": HEADER_VALUE},
        timeout=timedelta(milliseconds=300),
    )
    error = delivery_error(hook)
    text = f"{error} {error!r} {error.__cause__!r}"
    for secret in (SECRET, TOKEN, HEADER_VALUE, "header-secret", PASSWORD, "/hook"):
        assert secret not in text  # the path too: a Slack webhook's path is its token
    assert "127.0.0.1" in text
    assert "\n" not in str(error)


def test_it_keeps_a_slack_style_token_in_the_path_out_of_errors(receiver: Receiver) -> None:
    receiver.status = 404
    error = delivery_error(notifier(f"{receiver.url}/services/T000/B000/s3cr3tT0ken"))
    assert "s3cr3tT0ken" not in str(error) and str(error).startswith(f"{receiver.url}/…: ")


def test_the_config_refuses_a_header_value_with_a_line_break() -> None:
    from anomon.config import parse_config
    from anomon.errors import ConfigError

    with pytest.raises(ConfigError, match=r"header 'X-Token' contains a line break"):
        parse_config(
            {
                "alerts": {
                    "receivers": [
                        {
                            "name": "h",
                            "kind": "webhook",
                            "url": "http://x/y",
                            "headers": {"X-Token": "abc\r\nInjected: 1"},
                        }
                    ]
                }
            }
        )
