"""Send notices as one HTTP POST of JSON each: anomon's own format, Alertmanager's, Slack's.

Formats (``format`` in the receiver's config):

``anomon``
    ``{"version": "1", "key", "receiver", "event", "status", "group_key",
    "group_labels", "sent_at", "test", "notification_keys", "incidents": [...]}``;
    times are RFC 3339 UTC, unknown or non-finite numbers are ``null``.
``alertmanager``
    Alertmanager's webhook payload, version 4, so its existing receivers work: one alert
    per incident, ``alertname`` = the metric, ``fingerprint`` computed from the labels as
    Alertmanager does (FNV-1a 64), ``endsAt`` = ``0001-01-01T00:00:00Z`` while firing;
    the annotation ``anomon_notification_keys`` lists the keys of the notifications
    about that alert's incident (space-separated).
``slack``
    A Slack incoming-webhook message: ``text`` (the fallback line), ``blocks``, and
    ``metadata`` (Slack's message metadata, not shown: ``event_type`` =
    ``anomon_notice``, ``event_payload`` = the notice ``key`` and the space-separated
    ``notification_keys``).

Every request carries ``Content-Type: application/json``, ``User-Agent: anomon/<version>``,
``Idempotency-Key: <notice key>`` (the same for a notice sent again after a crash, so a
receiver can drop the duplicate) and the configured ``headers``.

Signature: when the receiver has a ``secret``, two more headers are sent::

    X-Anomon-Timestamp: <unix seconds when sent>
    X-Anomon-Signature: sha256=<hex HMAC-SHA256(key=secret, msg=timestamp + "." + body)>

where ``body`` is the exact bytes of the request body. A receiver verifies by recomputing
``hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()``,
comparing with :func:`hmac.compare_digest`, and refusing timestamps too far from its
clock (say five minutes) so a captured request cannot be replayed later.

``timeout`` is a wall-clock deadline for the whole request: connecting, sending and
reading the whole answer (a receiver trickling it is cut off, see :mod:`~anomon.alerts.post`).

``send`` raises :class:`~anomon.errors.DeliveryError` with one line that names the URL
without credentials or query and never carries the secret or a header value. Transient
(``permanent=False``): timeouts ("timed out after N s"), connection and TLS errors (a
connection reset after the request was sent is named so: the receiver may have it),
HTTP 5xx, 408 and 429.
Permanent: other 4xx, and 3xx (redirects are not followed: a moved webhook is a config
change to make, not a hop to take with our headers).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from anomon import __version__
from anomon.alerts import render
from anomon.alerts.model import IncidentView, Notice
from anomon.alerts.post import Poster, PostFailed
from anomon.config import WebhookReceiverConfig
from anomon.errors import DeliveryError
from anomon.model import DeployRecord, IncidentStatus
from anomon.timeutil import utcnow

JSON = dict[str, Any]

ALERTMANAGER_ZERO_TIME = "0001-01-01T00:00:00Z"
AM_KEYS_ANNOTATION = "anomon_notification_keys"
SLACK_EVENT_TYPE = "anomon_notice"
SLACK_MAX_INCIDENTS = 20  # Slack allows 50 blocks a message; keep it readable well below
SLACK_HEADER_MAX = 150  # Slack's limit for a header block's text
SLACK_SECTION_MAX = 3000  # Slack's limit for a section block's text
SIGNATURE_HEADER = "X-Anomon-Signature"
TIMESTAMP_HEADER = "X-Anomon-Timestamp"
PROTECTED = {"idempotency-key", SIGNATURE_HEADER.lower(), TIMESTAMP_HEADER.lower()}


class WebhookNotifier:
    """POST each notice as JSON to one URL (see the module docstring for the contract)."""

    def __init__(
        self,
        config: WebhookReceiverConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        context: ssl.SSLContext | None = None,
        external_url: str = "",
    ) -> None:
        self.name = config.name
        self.external_url = external_url
        self._config = config
        self._seconds = config.timeout.total_seconds()
        self._poster = Poster(config.url, timeout=self._seconds, context=context)
        self._clock = clock
        self._where = safe_url(config.url)

    def send(self, notice: Notice) -> None:
        """POST ``notice`` in the configured format; raise DeliveryError if not accepted."""
        body = encode(build_payload(self._config.format, notice, external_url=self.external_url))
        self._post(body, self._headers(notice.key, body))

    def close(self) -> None:
        """Release the HTTP connections."""
        self._poster.close()

    def _headers(self, key: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": f"anomon/{__version__}"}
        wanted = {name.lower(): (name, value) for name, value in self._config.headers.items()}
        for name in list(headers):  # the configured ones replace ours, whatever their case
            if name.lower() in wanted:
                del headers[name]
        headers |= dict(wanted.values())
        for name in list(headers):  # ours are not the config's to replace
            if name.lower() in PROTECTED:
                del headers[name]
        headers["Idempotency-Key"] = key
        if self._config.secret:
            timestamp = int(self._clock().timestamp())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(self._config.secret, timestamp, body)
        return headers

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        post_checked(self._poster, body, headers, where=self._where, seconds=self._seconds)


def post_checked(
    poster: Poster, body: bytes, headers: Mapping[str, str], *, where: str, seconds: float
) -> None:
    """POST ``body``; raise DeliveryError (naming only ``where``) unless answered 2xx."""
    try:
        status = poster.post(body, headers)
    except PostFailed as failed:
        raise transport_error(where, failed, seconds) from None
    except ValueError:  # http.client refuses a header with a line break: never echo it
        raise DeliveryError(
            f"{where}: a configured header is not a valid HTTP header", permanent=True
        ) from None
    if not 200 <= status < 300:
        raise status_error(where, status)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Anomon-Signature`` value: ``sha256=<hex HMAC of "<ts>." + body>``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def encode(payload: JSON) -> bytes:
    """Serialise a payload as compact UTF-8 JSON (NaN refused: payloads carry null)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def safe_url(url: str) -> str:
    """The URL's scheme, host and port only, for messages: webhook paths carry secrets
    (a Slack or Teams incoming webhook's path *is* its token), as queries and
    credentials do. A path, if any, shows as ``/…``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "/…" if parts.path not in ("", "/") else "", "", ""))


# --- errors -------------------------------------------------------------------------


def status_error(where: str, status: int) -> DeliveryError:
    """Classify an HTTP status that is not 2xx: 5xx, 408, 429 transient, the rest permanent."""
    transient = status >= 500 or status in (408, 429)
    reason = f"{where}: HTTP {status} {_phrase(status)}"
    if 300 <= status < 400:
        reason += " (redirects are not followed; point the receiver at the new URL)"
    return DeliveryError(reason, permanent=not transient)


def _phrase(status: int) -> str:
    # the standard phrase, not the server's: what a server writes there is not ours to echo
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(non-standard status)"


def transport_error(where: str, failed: PostFailed, seconds: float) -> DeliveryError:
    """Name a failure before any answer; all transient (the next try may get through).

    A failure after the request was sent says so: the receiver may have it, and the
    retry carries the same Idempotency-Key for it to drop the copy.
    """
    exc = failed.cause
    if failed.timed_out:
        return DeliveryError(f"{where}: timed out after {seconds:g} s", timed_out=True)
    tls = _tls_cause(exc)
    if tls is not None:
        return DeliveryError(f"{where}: TLS handshake failed ({type(tls).__name__})")
    if failed.stage == "connect":
        if isinstance(exc, ConnectionRefusedError):
            return DeliveryError(f"{where}: connection refused")
        if isinstance(exc, socket.gaierror):
            return DeliveryError(f"{where}: host name not resolved")
        return DeliveryError(f"{where}: could not connect ({type(exc).__name__})")
    if failed.stage == "request":
        return DeliveryError(f"{where}: connection lost while sending the request")
    if isinstance(exc, http.client.RemoteDisconnected):
        what = "connection closed without an answer after the request was sent"
    elif isinstance(exc, OSError):
        what = "connection reset after the request was sent"
    else:  # a malformed status line or headers
        what = f"invalid HTTP answer ({type(exc).__name__}) after the request was sent"
    return DeliveryError(f"{where}: {what} (the receiver may have it)")


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    # the ssl error may sit down the cause chain of what the socket layer raised
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# --- payloads -----------------------------------------------------------------------


def build_payload(kind: str, notice: Notice, *, external_url: str = "") -> JSON:
    """Return the JSON document for ``notice`` in format ``kind`` (anomon, alertmanager,
    slack); ``external_url`` is where people reach anomon (Alertmanager's externalURL)."""
    if kind == "alertmanager":
        return alertmanager_payload(notice, external_url=external_url)
    builders: dict[str, Callable[[Notice], JSON]] = {
        "anomon": anomon_payload,
        "slack": slack_payload,
    }
    return builders[kind](notice)


def anomon_payload(notice: Notice) -> JSON:
    """anomon's own format, version 1."""
    return {
        "version": "1",
        "key": notice.key,
        "receiver": notice.receiver,
        "event": notice.event,
        "status": notice.status,
        "group_key": notice.group_key,
        "group_labels": dict(notice.group_labels),
        "sent_at": render.rfc3339(notice.sent_at),
        "test": notice.test,
        "notification_keys": list(notice.notification_keys),
        "incidents": [_anomon_incident(incident) for incident in notice.incidents],
    }


def _anomon_incident(incident: IncidentView) -> JSON:
    resolved = incident.resolved_at
    return {
        "id": incident.id,
        "metric": incident.metric,
        "entity": incident.entity,
        "labels": dict(incident.labels),
        "status": incident.status,
        "severity": incident.severity,
        "peak_score": render.finite(incident.peak_score),
        "opened_at": render.rfc3339(incident.opened_at),
        "last_seen_at": render.rfc3339(incident.last_seen_at),
        "resolved_at": render.rfc3339(resolved) if resolved else None,
        "acknowledged": incident.acknowledged,
        "value": render.finite(incident.value),
        "expected": render.finite(incident.expected),
        "direction": incident.direction,
        "detector_scores": {
            name: render.finite(score) for name, score in incident.detector_scores.items()
        },
        "notification_keys": list(incident.notification_keys),
        "annotations": dict(incident.annotations),
        "url": incident.url or None,
        "contributors": [
            {
                "metric": c.metric,
                "labels": dict(c.labels),
                "value": render.finite(c.value),
                "expected": render.finite(c.expected),
                "peak_score": render.finite(c.peak_score),
            }
            for c in incident.contributors
        ],
        "deploy": None if incident.deploy is None else _deploy(incident.deploy),
    }


def _deploy(deploy: DeployRecord) -> JSON:
    return {
        "at": render.rfc3339(deploy.at),
        "model": deploy.model,
        "version": deploy.version,
        "entity": deploy.entity,
        "note": deploy.note,
    }


def alertmanager_payload(notice: Notice, *, external_url: str = "") -> JSON:
    """Alertmanager's webhook payload, version 4, one alert per incident, as Alertmanager
    sends it: every alert of the group that is still firing (the notice carries them all)
    plus the newly resolved ones, the group's status (firing while any fires), its
    ``groupKey`` in Alertmanager's syntax (``{}/{severity="critical"}:{entity="churn"}``,
    from the route's matchers, not its position) and each alert's fingerprint from its
    labels without ``severity``, so an escalation keeps the alert's identity.
    ``externalURL`` is ``[daemon] external_url``; ``generatorURL`` the incident's page in
    the console under it (both empty without an external URL).
    """
    alerts = [_alertmanager_alert(incident) for incident in notice.incidents]
    return {
        "version": "4",
        "groupKey": notice.group_key,
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": notice.receiver,
        "groupLabels": dict(notice.group_labels),
        "commonLabels": common([alert["labels"] for alert in alerts]),
        "commonAnnotations": common([alert["annotations"] for alert in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def _alertmanager_alert(incident: IncidentView) -> JSON:
    labels = {
        **incident.labels,
        "alertname": incident.metric,
        "entity": incident.entity,
        "severity": incident.severity,
    }
    annotations = render.with_annotations(
        incident,
        {"summary": render.summary(incident), "description": render.description(incident)},
    )
    if incident.notification_keys:  # annotations are free text: a receiver may dedupe on it
        annotations[AM_KEYS_ANNOTATION] = " ".join(incident.notification_keys)
    return {
        "status": incident.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": render.rfc3339(incident.opened_at),
        "endsAt": _ends_at(incident),
        "generatorURL": incident.url,
        # its identity: a severity that rises is the same alert, updated
        "fingerprint": fingerprint({k: v for k, v in labels.items() if k != "severity"}),
    }


def _ends_at(incident: IncidentView) -> str:
    if incident.status == IncidentStatus.FIRING:
        return ALERTMANAGER_ZERO_TIME  # what Alertmanager sends while an alert fires
    return render.rfc3339(incident.resolved_at or incident.last_seen_at)


def common(mappings: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Return the pairs every one of ``mappings`` has (Alertmanager's commonLabels)."""
    if not mappings:
        return {}
    first, *rest = mappings
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in rest)}


def fingerprint(labels: Mapping[str, str]) -> str:
    """Return Alertmanager's fingerprint of a label set: 16 hex digits of FNV-1a 64.

    As prometheus/common's ``LabelSet.Fingerprint``: labels sorted by name, each name and
    value followed by the byte 0xFF.
    """
    data = bytearray()
    for name in sorted(labels):
        data += name.encode() + b"\xff" + labels[name].encode() + b"\xff"
    return f"{_fnv1a64(data):016x}"


def _fnv1a64(data: Iterable[int]) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def slack_payload(notice: Notice) -> JSON:
    """A Slack message: the subject as fallback text and header, one section per incident."""
    headline = render.subject(notice)
    shown = notice.incidents[:SLACK_MAX_INCIDENTS]
    blocks: list[JSON] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(headline)}},
        *(_slack_section(incident) for incident in shown),
    ]
    footer = f"anomon · receiver {notice.receiver} · notice {notice.key}"
    hidden = len(notice.incidents) - len(shown)
    if hidden:
        footer = f"and {hidden} more incidents · {footer}"
    blocks.append({"type": "context", "elements": [_mrkdwn(footer)]})
    # Slack's message metadata: not shown, kept with the message for apps that read it
    metadata = {
        "event_type": SLACK_EVENT_TYPE,
        "event_payload": {
            "key": notice.key,
            "notification_keys": " ".join(notice.notification_keys),
        },
    }
    # the fallback text (notifications, clients without blocks) is mrkdwn too
    return {"text": _escape(headline), "blocks": blocks, "metadata": metadata}


def _slack_section(incident: IncidentView) -> JSON:
    text = (
        f"*{_escape(incident.status.upper())}* #{incident.id} "
        f"{_escape(render.summary(incident))}\n{_escape(render.description(incident))}"
    )
    for line in render.annotation_lines(incident):  # runbook and dashboard links
        text += f"\n{_escape(line)}"
    link = ""
    if incident.url:  # Slack's link syntax: <url|text>; the URL is anomon's own
        link = f"\n<{_escape(incident.url)}|incident {incident.id} in anomon>"
    # Slack refuses (400, for good) a section past its limit: the text gives way, the link not
    return {
        "type": "section",
        "text": _mrkdwn(_clip_escaped(text, SLACK_SECTION_MAX - len(link)) + link),
    }


def _mrkdwn(text: str) -> JSON:
    return {"type": "mrkdwn", "text": text}


def _escape(text: str) -> str:
    # the three characters Slack's mrkdwn reserves for links and mentions
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_escaped(text: str, limit: int) -> str:
    """``text`` (escaped) cut to ``limit`` characters with an ellipsis, never inside an
    escape (``&amp;``)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _clip(text: str) -> str:
    limit = SLACK_HEADER_MAX
    return text if len(text) <= limit else text[: limit - 1] + "…"
