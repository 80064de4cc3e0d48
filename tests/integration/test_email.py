"""The email notifier against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from anomon.alerts.email import MAX_CHARTS, EmailNotifier
from anomon.config import EmailReceiverConfig
from tests.alert_fixtures import NOW, PNG_MAGIC, delivery_error, incident, notice, points
from tests.loopback import free_port

USER = "anomon"
PASSWORD = "smtp-password-9c4e"


# --- the server -----------------------------------------------------------------------


@dataclass
class Mailbox:
    """An SMTP handler that keeps what it accepts and refuses what it is told to."""

    envelopes: list[Envelope] = field(default_factory=list)
    refuse_rcpt: set[str] = field(default_factory=set)
    refuse_sender: bool = False
    data_answer: str = "250 Message accepted for delivery"
    logins: list[bytes] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)

    # aiosmtpd finds its hooks by these names
    async def handle_MAIL(  # noqa: N802
        self, server: object, session: Session, envelope: Envelope, address: str, options: object
    ) -> str:
        if self.refuse_sender:
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: object, session: Session, envelope: Envelope, address: str, options: object
    ) -> str:
        if address in self.refuse_rcpt:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_answer.startswith("250"):
            self.envelopes.append(envelope)
            self.tls_seen.append(server.transport.get_extra_info("ssl_object") is not None)
        return self.data_answer

    def authenticate(
        self, server: object, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append(data.login)
        ok = data.login == USER.encode() and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    def message(self, index: int = -1) -> EmailMessage:
        raw = self.envelopes[index].original_content
        assert raw is not None
        parsed = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Server:
    mailbox: Mailbox
    port: int


@contextmanager
def smtp_server(**options: Any) -> Iterator[Server]:
    """Run aiosmtpd on a free port of 127.0.0.1 with a Mailbox handler and login."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,
        auth_required=False,
        **options,
    )
    controller.start()
    try:
        yield Server(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    with smtp_server() as running:
        yield running


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    made = Certificate(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(made.key), "-out", str(made.cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return made


def notifier(port: int, **options: Any) -> EmailNotifier:
    tls = options.pop("tls_context", None)
    options.setdefault("to", ["ml@example.org"])
    options.setdefault("timeout", timedelta(seconds=5))
    config = EmailReceiverConfig(
        name="ml-team",
        kind="email",
        sender="anomon@example.org",
        smtp_host="127.0.0.1",
        smtp_port=port,
        **options,
    )
    return EmailNotifier(config, clock=lambda: NOW, tls_context=tls)


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    text: str = part.get_content()
    return text


# --- the message ----------------------------------------------------------------------


def test_it_mails_text_and_html_with_one_inline_chart_per_incident(server: Server) -> None:
    second = incident(id=18, metric="latency_p99", severity="warning", points=points())
    notifier(server.port).send(notice(incident(points=points()), second))
    [envelope] = server.mailbox.envelopes
    assert envelope.mail_from == "anomon@example.org"
    assert envelope.rcpt_tos == ["ml@example.org"]
    assert server.mailbox.tls_seen == [False]
    message = server.mailbox.message()
    assert message["Subject"] == "[FIRING:2] 2 metrics on churn-model (critical)"
    assert message["X-Anomon-Key"] == "n-5f2c"
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert "FIRING #17: accuracy on churn-model is 0.71, expected 0.93" in plain.get_content()
    assert related.get_content_type() == "multipart/related"
    html, *images = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert [image.get_content_type() for image in images] == ["image/png", "image/png"]
    for image in images:
        assert image.get_content().startswith(PNG_MAGIC)
        cid = image["Content-ID"].strip("<>")
        assert f'src="cid:{cid}"' in html.get_content()


def test_it_leaves_charts_out_when_the_receiver_says_so(server: Server) -> None:
    notifier(server.port, chart=False).send(notice(incident(points=points())))
    message = server.mailbox.message()
    types = [part.get_content_type() for part in message.walk()]
    assert types == ["multipart/alternative", "text/plain", "text/html"]
    assert "cid:" not in body(message, "html")


def test_it_sends_no_chart_for_an_incident_without_points(server: Server) -> None:
    notifier(server.port).send(notice(incident(points=None), incident(id=18, points=points())))
    images = [p for p in server.mailbox.message().walk() if p.get_content_maintype() == "image"]
    assert len(images) == 1
    assert images[0].get_filename() == "18.png"


def test_it_attaches_at_most_ten_charts(server: Server) -> None:
    many = [incident(id=i, points=points()) for i in range(MAX_CHARTS + 2)]
    notifier(server.port).send(notice(*many))
    message = server.mailbox.message()
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == MAX_CHARTS
    assert "FIRING #11" in body(message, "plain")


def test_it_derives_a_stable_message_id_from_the_notice_key(server: Server) -> None:
    mailer = notifier(server.port)
    mailer.send(notice(key="n-1"))
    mailer.send(notice(key="n-1"))
    mailer.send(notice(key="n-2"))
    first, again, other = (server.mailbox.message(i)["Message-ID"] for i in range(3))
    assert first == again != other
    assert first.endswith("@example.org>")


def test_it_sends_to_every_recipient_with_the_date_from_the_clock(server: Server) -> None:
    notifier(server.port, to=["a@example.org", "b@example.org"]).send(notice())
    assert server.mailbox.envelopes[0].rcpt_tos == ["a@example.org", "b@example.org"]
    message = server.mailbox.message()
    assert message["To"] == "a@example.org, b@example.org"
    assert message["Date"].datetime == NOW


# --- login and TLS --------------------------------------------------------------------


def test_it_logs_in_with_the_configured_user_and_password(server: Server) -> None:
    notifier(server.port, username=USER, password=PASSWORD).send(notice())
    assert server.mailbox.logins == [USER.encode()]
    assert len(server.mailbox.envelopes) == 1


def test_it_calls_a_rejected_login_permanent_without_the_password(server: Server) -> None:
    wrong = PASSWORD + "-wrong"
    error = delivery_error(notifier(server.port, username=USER, password=wrong))
    assert error.permanent is True
    assert str(error) == f"smtp://127.0.0.1:{server.port}: login as 'anomon' rejected (535)"
    assert PASSWORD not in f"{error} {error!r}"
    assert server.mailbox.envelopes == []


def test_it_upgrades_the_connection_with_starttls(certificate: Certificate) -> None:
    with smtp_server(tls_context=certificate.server_context(), require_starttls=True) as running:
        mailer = notifier(
            running.port,
            security="starttls",
            username=USER,
            password=PASSWORD,
            tls_context=certificate.client_context(),
        )
        mailer.send(notice())
        assert running.mailbox.tls_seen == [True]


def test_it_connects_over_tls_from_the_start(certificate: Certificate) -> None:
    with smtp_server(ssl_context=certificate.server_context()) as running:
        mailer = notifier(running.port, security="ssl", tls_context=certificate.client_context())
        mailer.send(notice())
        assert running.mailbox.tls_seen == [True]


def test_it_calls_an_untrusted_certificate_transient(certificate: Certificate) -> None:
    with smtp_server(tls_context=certificate.server_context()) as running:
        error = delivery_error(notifier(running.port, security="starttls"))
        assert error.permanent is False
        assert "TLS failed (SSLCertVerificationError)" in str(error)


def test_it_calls_a_server_without_starttls_permanent(server: Server) -> None:
    error = delivery_error(notifier(server.port, security="starttls"))
    assert error.permanent is True
    assert "STARTTLS" in str(error)


# --- refusals and failures ------------------------------------------------------------


def test_it_calls_a_refused_recipient_permanent(server: Server) -> None:
    server.mailbox.refuse_rcpt = {"ml@example.org"}
    error = delivery_error(notifier(server.port))
    assert error.permanent is True
    assert str(error).endswith("all recipients refused: ml@example.org (550)")


def test_it_calls_a_partly_refused_delivery_permanent(server: Server) -> None:
    server.mailbox.refuse_rcpt = {"gone@example.org"}
    error = delivery_error(notifier(server.port, to=["ml@example.org", "gone@example.org"]))
    assert error.permanent is True
    assert "refused: gone@example.org (550)" in str(error)
    assert server.mailbox.envelopes[0].rcpt_tos == ["ml@example.org"]


def test_it_calls_a_refused_sender_permanent(server: Server) -> None:
    server.mailbox.refuse_sender = True
    error = delivery_error(notifier(server.port))
    assert error.permanent is True
    assert "sender anomon@example.org refused: 553" in str(error)


@pytest.mark.parametrize(
    ("answer", "permanent"),
    [("451 4.3.0 try again later", False), ("554 5.6.0 message rejected", True)],
)
def test_it_tells_4xx_from_5xx_answers_to_the_message(
    server: Server, answer: str, permanent: bool
) -> None:
    server.mailbox.data_answer = answer
    error = delivery_error(notifier(server.port))
    assert error.permanent is permanent
    assert str(error).endswith(f"server answered {answer}")


def test_it_calls_a_server_that_is_down_transient() -> None:
    port = free_port()
    error = delivery_error(notifier(port))
    assert error.permanent is False
    assert str(error) == f"smtp://127.0.0.1:{port}: connection refused"


def test_it_calls_a_silent_server_transient() -> None:
    with socket.socket() as silent:  # listens, never accepts: no greeting ever comes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        error = delivery_error(notifier(port, timeout=timedelta(milliseconds=300)))
    assert error.permanent is False
    assert str(error) == f"smtp://127.0.0.1:{port}: timed out after 0.3 s"


def test_it_calls_a_dropped_connection_transient() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def greet_and_hang_up() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"220 mail.example.org ESMTP\r\n")
                conn.recv(1024)  # the EHLO, left unanswered

        thread = threading.Thread(target=greet_and_hang_up)
        thread.start()
        error = delivery_error(notifier(listener.getsockname()[1]))
        thread.join(timeout=5)
    assert error.permanent is False
    assert str(error).endswith("server closed the connection")
