"""Slow, hung and resetting receivers on 127.0.0.1 (issue 11, points 4 and 16).

A receiver's ``timeout`` is a wall-clock deadline for the whole delivery, for every
webhook format and for email; a slow or hung receiver delays no other receiver; a reset
after the request was sent is named so; a retry sends the same notifications under the
same Idempotency-Key even when newer ones of the group are due meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from anomon import store
from anomon.alerts.email import EmailNotifier
from anomon.alerts.notifiers import build_notifiers
from anomon.alerts.webhook import WebhookNotifier
from anomon.config import AlertsConfig, EmailReceiverConfig, WebhookReceiverConfig
from anomon.model import IncidentWrite, OutboxEntry
from anomon.service.delivery import DeliverJob, message_key
from anomon.store.schema import Notification
from tests.alert_fixtures import NOW, delivery_error
from tests.loopback import Receiver, free_port, receive

START = datetime(2026, 12, 1, tzinfo=UTC)
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "data" / "alertmanager_webhook_v4.schema.json").read_text()
)


# --- hostile receivers ------------------------------------------------------------------


@dataclass
class Hostile:
    """A raw TCP receiver: reads each request whole, then does ``behaviour`` with it."""

    url: str
    requests: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


Behaviour = Callable[[socket.socket, Hostile], None]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def hostile(behaviour: Behaviour) -> Iterator[Hostile]:
    """Serve on 127.0.0.1 with ``behaviour`` per request, each connection in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = Hostile(url=f"http://127.0.0.1:{listener.getsockname()[1]}")

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while not server.stop.is_set():
                    request = _read_request(conn)
                    if not request:
                        return
                    server.requests.append(request)
                    behaviour(conn, server)
            except OSError:
                pass  # the client gave up: what these receivers are for

    def accept() -> None:
        while not server.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        listener.close()


def trickle(conn: socket.socket, server: Hostile) -> None:
    """Answer 200, one byte every 0.2 s (a 5 s socket timeout never trips)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
    for byte in answer:
        if server.stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def hang(conn: socket.socket, server: Hostile) -> None:
    """Read the request, never answer (until the test ends)."""
    server.stop.wait(60)


def reset(conn: socket.socket, server: Hostile) -> None:
    """Read the request, then reset the connection (RST, not FIN)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


# --- the webhook notifier ---------------------------------------------------------------


def webhook(url: str, fmt: str = "anomon", seconds: float = 1.0) -> WebhookNotifier:
    config = WebhookReceiverConfig(
        name="hook", kind="webhook", url=url, format=fmt, timeout=timedelta(seconds=seconds)
    )
    return WebhookNotifier(config, clock=lambda: NOW)


@pytest.mark.parametrize("fmt", ["anomon", "alertmanager", "slack"])
@pytest.mark.parametrize("behaviour", [trickle, hang], ids=["trickle", "hang"])
def test_a_slow_receiver_is_cut_off_at_its_timeout(fmt: str, behaviour: Behaviour) -> None:
    with hostile(behaviour) as server:
        notifier = webhook(f"{server.url}/hook", fmt)
        started = time.monotonic()
        error = delivery_error(notifier)
        took = time.monotonic() - started
        notifier.close()
    assert 0.9 <= took < 1.8  # the deadline, not the 8 s the trickle needs
    assert str(error) == f"{server.url}/…: timed out after 1 s"
    assert error.permanent is False and error.timed_out is True
    assert len(server.requests) == 1


def test_a_reset_after_the_request_is_named_so_not_refused() -> None:
    with hostile(reset) as server:
        error = delivery_error(webhook(f"{server.url}/hook"))
    assert len(server.requests) == 1  # it did reach the receiver
    assert str(error) == (
        f"{server.url}/…: connection reset after the request was sent (the receiver may have it)"
    )
    assert error.permanent is False and error.timed_out is False


def test_a_refused_connection_is_still_called_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    error = delivery_error(webhook(f"{url}/hook"))
    assert str(error) == f"{url}/…: connection refused"


# --- the email notifier -----------------------------------------------------------------


@dataclass
class StallingMailbox:
    """Accepts the envelope, then stalls on DATA until released."""

    released: threading.Event = field(default_factory=threading.Event)
    stalled: int = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd finds its hooks by this name
        self, server: object, session: Session, envelope: Envelope
    ) -> str:
        self.stalled += 1
        for _ in range(600):  # at most 30 s, bounded
            if self.released.is_set():
                break
            await asyncio.sleep(0.05)
        return "250 accepted late"


def mailer(port: int, seconds: float = 1.0) -> EmailNotifier:
    config = EmailReceiverConfig(
        name="mail",
        kind="email",
        to=["ml@example.org"],
        sender="anomon@example.org",
        smtp_host="127.0.0.1",
        smtp_port=port,
        timeout=timedelta(seconds=seconds),
        chart=False,
    )
    return EmailNotifier(config, clock=lambda: NOW)


def test_an_smtp_server_that_stalls_is_cut_off_at_the_timeout() -> None:
    mailbox = StallingMailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        started = time.monotonic()
        error = delivery_error(mailer(port))
        took = time.monotonic() - started
    finally:
        mailbox.released.set()
        controller.stop()
    assert mailbox.stalled == 1  # it got as far as the message
    assert 0.9 <= took < 2.5
    assert str(error) == f"smtp://127.0.0.1:{port}: timed out after 1 s"
    assert error.permanent is False and error.timed_out is True


def test_an_smtp_greeting_trickled_a_byte_at_a_time_is_cut_off_at_the_timeout() -> None:
    def greet_slowly(conn: socket.socket, stop: threading.Event) -> None:
        for byte in b"220 mail.example.org ESMTP trickling along\r\n":
            if stop.wait(0.2):
                return
            conn.sendall(bytes([byte]))

    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, suppress(OSError):
                greet_slowly(conn, stop)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started = time.monotonic()
        error = delivery_error(mailer(port))
        took = time.monotonic() - started
        stop.set()
        thread.join(timeout=5)
    assert 0.9 <= took < 2.5  # 9 s at that pace, per-read timeouts never trip
    assert str(error) == f"smtp://127.0.0.1:{port}: timed out after 1 s"


# --- the delivery job -------------------------------------------------------------------


def firing(engine: store.Engine, receiver: str, count: int, *, group: str, first: int = 0) -> None:
    """Store ``count`` firing incidents, each with a queued notification to ``receiver``
    in group ``group`` (keys ``<receiver>-<i>``)."""
    writes = [
        IncidentWrite(
            series_id=None,
            entity=f"model-{i}",
            metric="accuracy",
            labels=json.dumps({"metric": "accuracy", "entity": f"model-{i}"}),
            status="firing",
            severity="warning",
            peak_score=90.0,
            opened_at=START,
            last_seen_at=START,
            outbox=(OutboxEntry(receiver, group, "firing", f"{receiver}-{i}", START),),
        )
        for i in range(first, first + count)
    ]
    with engine.begin() as conn:
        store.write_incidents(conn, writes, now=START)


def rows(engine: store.Engine, receiver: str) -> list[Notification]:
    with OrmSession(engine) as session:
        query = select(Notification).where(Notification.receiver == receiver)
        return list(session.scalars(query.order_by(Notification.id)))


def two_receivers(good: str, slow: str, **delivery: Any) -> AlertsConfig:
    return AlertsConfig.model_validate(
        {
            "receivers": [
                {"name": "good", "kind": "webhook", "url": f"{good}/good"},
                {"name": "slow", "kind": "webhook", "url": f"{slow}/slow", "timeout": "3s"},
            ],
            "delivery": {"backoff_initial": "10s", "claim_timeout": "10s", **delivery},
        }
    )


def test_a_hung_receiver_delays_no_other_receiver(engine: store.Engine) -> None:
    with hostile(hang) as slow, receive() as good:
        config = two_receivers(good.url, slow.url)
        for i in range(3):  # three groups: three messages
            firing(engine, "slow", 1, group=f"g-slow-{i}", first=i)
        firing(engine, "good", 1, group="g-good", first=10)
        job = DeliverJob(engine, config, build_notifiers(config), clock=lambda: START)
        result: list[Any] = []
        started = time.monotonic()
        run = threading.Thread(target=lambda: result.append(job.run_once()))
        run.start()
        sent_after = _wait(lambda: bool(good.requests), 5)
        recorded_after = _wait(lambda: rows(engine, "good")[0].status == "sent", 5)
        in_flight = rows(engine, "slow")
        run.join(timeout=10)
        took = time.monotonic() - started
    # the good one waited for nothing (the hung one's deadline is 3 s; loose for busy CI)
    assert sent_after < 1.5 and recorded_after < 2.0
    assert 2.9 <= took < 5.5  # the run: one deadline of the hung receiver, not three
    # the claim's lease outlasts every deadline: 2 x (10 s, the longest timeout, + 30 s),
    # more than claim_timeout (10 s)
    assert {r.next_attempt_at.replace(tzinfo=UTC) for r in in_flight} == {
        START + timedelta(seconds=80)
    }
    (done,) = result
    assert len(done.sent) == 1 and len(done.retry) == 1 and len(done.deferred) == 2
    after = rows(engine, "slow")
    tried = [r for r in after if r.attempts == 1]
    (failed,) = tried
    assert failed.status == "pending" and failed.last_error == f"{slow.url}/…: timed out after 3 s"
    untried = [r for r in after if r.attempts == 0]  # deferred to the same retry, not counted
    assert len(untried) == 2 and {r.status for r in untried} == {"pending"}
    assert {r.next_attempt_at for r in untried} == {failed.next_attempt_at}
    assert len(slow.requests) == 1


def test_a_retry_is_due_a_backoff_after_the_failure_not_after_the_claim(
    engine: store.Engine,
) -> None:
    """A send that timed out after 3 s with a backoff of 2 s: the retry is due 2 s after
    the timeout (it was due 1 s before the failure was even recorded: at once)."""
    with hostile(hang) as slow:
        config = AlertsConfig.model_validate(
            {
                "receivers": [
                    {"name": "slow", "kind": "webhook", "url": f"{slow.url}/slow", "timeout": "3s"}
                ],
                "delivery": {"backoff_initial": "2s"},
            }
        )
        firing(engine, "slow", 1, group="g-slow")
        began = time.monotonic()
        job = DeliverJob(
            engine,
            config,
            build_notifiers(config),
            clock=lambda: START + timedelta(seconds=time.monotonic() - began),
            jitter=lambda: 1.0,
        )
        job.run_once()
    (row,) = rows(engine, "slow")
    assert row.status == "pending" and row.attempts == 1
    due = row.next_attempt_at.replace(tzinfo=UTC) - START
    assert timedelta(seconds=3 + 2) <= due < timedelta(seconds=3 + 2 + 3)


def test_a_trickling_receiver_is_a_retry_not_sent(engine: store.Engine) -> None:
    with hostile(trickle) as slow, receive() as good:
        config = two_receivers(good.url, slow.url)
        firing(engine, "slow", 1, group="g-slow")
        job = DeliverJob(engine, config, build_notifiers(config), clock=lambda: START)
        started = time.monotonic()
        done = job.run_once()
        took = time.monotonic() - started
    assert took < 4.5 and not done.sent  # the deadline, not the 8 s the trickle needs
    (row,) = rows(engine, "slow")
    assert (row.status, row.last_error) == ("pending", f"{slow.url}/…: timed out after 3 s")


def _wait(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until ``condition`` held (polled every 20 ms, at most ``limit`` s)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {limit} s")


@pytest.mark.parametrize("fmt", ["anomon", "alertmanager", "slack"])
def test_a_retry_after_regrouping_keeps_its_idempotency_key(engine: store.Engine, fmt: str) -> None:
    now = [START]
    with receive() as hook:
        config = AlertsConfig.model_validate(
            {
                "receivers": [{"name": "hook", "kind": "webhook", "url": hook.url, "format": fmt}],
                "delivery": {"backoff_initial": "10s"},
            }
        )
        job = DeliverJob(
            engine, config, build_notifiers(config), clock=lambda: now[0], jitter=lambda: 0.0
        )
        firing(engine, "hook", 2, group="g")
        hook.status = 503
        assert len(job.run_once().retry) == 2
        firing(engine, "hook", 1, group="g", first=2)  # a newer one of the group, due now
        hook.status = 200
        now[0] += timedelta(minutes=1)
        assert len(job.run_once().sent) == 3
    first, *later = hook.requests
    key = message_key(["hook-0", "hook-1"])
    assert first.headers["idempotency-key"] == key
    # fresh messages go first, then the retry: the same notifications, the same key
    assert [r.headers["idempotency-key"] for r in later] == [message_key(["hook-2"]), key]
    assert [_keys(fmt, json.loads(r.body)) for r in later] == [["hook-2"], ["hook-0", "hook-1"]]


def _keys(fmt: str, body: dict[str, Any]) -> list[str]:
    """The per-notification keys a body carries, in each format's place for them."""
    if fmt == "anomon":
        per_incident = [k for i in body["incidents"] for k in i["notification_keys"]]
        assert per_incident == body["notification_keys"]
        return list(body["notification_keys"])
    if fmt == "alertmanager":  # an annotation: the v4 schema allows no other place
        jsonschema.validate(body, SCHEMA)
        return [a["annotations"]["anomon_notification_keys"] for a in body["alerts"]]
    payload = body["metadata"]["event_payload"]
    assert body["metadata"]["event_type"] == "anomon_notice"
    return list(payload["notification_keys"].split())


def test_a_retry_of_a_reset_request_carries_the_same_key(engine: store.Engine) -> None:
    with hostile(reset) as server:
        config = AlertsConfig.model_validate(
            {"receivers": [{"name": "hook", "kind": "webhook", "url": f"{server.url}/h"}]}
        )
        firing(engine, "hook", 1, group="g")
        done = DeliverJob(engine, config, build_notifiers(config), clock=lambda: START).run_once()
    ((error, _),) = done.retry.values()
    assert "connection reset after the request was sent" in error
    (row,) = rows(engine, "hook")
    assert row.message_key == message_key(["hook-0"])  # the retry sends this key again
    assert f"idempotency-key: {row.message_key}".encode() in server.requests[0].lower()


def test_a_receiver_down_fast_is_not_deferred(engine: store.Engine) -> None:
    hook: Receiver
    with receive() as hook:
        hook.status = 503
        config = AlertsConfig.model_validate(
            {"receivers": [{"name": "hook", "kind": "webhook", "url": hook.url}]}
        )
        for i in range(3):  # three groups: three messages
            firing(engine, "hook", 1, group=f"g{i}", first=i)
        done = DeliverJob(engine, config, build_notifiers(config), clock=lambda: START).run_once()
    assert len(done.retry) == 3 and not done.deferred  # an answer costs no deadline
    assert len(hook.requests) == 3
