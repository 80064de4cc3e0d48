"""Send each notice as one email over SMTP: plain text, and HTML with a chart per incident.

The message is ``multipart/alternative``: ``text/plain``, then a ``multipart/related``
holding ``text/html`` and one inline ``image/png`` per incident that has points (at most
:data:`MAX_CHARTS`, and none when the receiver's ``chart`` is off), each referenced from
the HTML as ``cid:``. The subject reads ``[FIRING:2] accuracy on churn-model (critical)``.
``Message-ID`` is derived from the notice key, so a notice sent again after a crash has
the same one; ``X-Anomon-Key`` carries the key itself.

``security``: ``ssl`` connects with SMTP over TLS (usually port 465), ``starttls``
upgrades a plain connection (usually 587), ``none`` stays plain. With a ``username`` the
notifier logs in with the configured ``password`` (from ``${ENV}`` in the config). One
connection per notice: notices are rare and a held SMTP connection goes stale.

``timeout`` is a wall-clock deadline for the whole SMTP conversation (connect, greeting,
STARTTLS, login, the message, its answer): a server that stalls or trickles is cut off
when it passes and the send fails "timed out after N s" (the conversation runs in a
thread of its own, so nothing it blocks on can hold the caller past the deadline).

``send`` raises :class:`~anomon.errors.DeliveryError` with one line that never carries the
password. Permanent: a rejected login, a refused sender or recipient, any other 5xx
answer, a server without STARTTLS or AUTH when they are configured, some recipients
refused while others accepted (retrying would send the others a duplicate). Transient:
connection refused, timeouts, TLS failures, a dropped connection, 4xx answers.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import cast

from anomon import __version__
from anomon.alerts import render
from anomon.alerts.chart import render_chart
from anomon.alerts.deadline import Deadline, shutdown
from anomon.alerts.model import IncidentView, Notice
from anomon.config import EmailReceiverConfig
from anomon.errors import DeliveryError
from anomon.model import IncidentStatus
from anomon.timeutil import utcnow

MAX_CHARTS = 10
GRACE = 1.0  # seconds a conversation shut down at its deadline has to notice
log = logging.getLogger("anomon.deliver")
SmtpFactory = Callable[..., smtplib.SMTP]


class EmailNotifier:
    """Mail each notice to the configured recipients (see the module docstring)."""

    def __init__(
        self,
        config: EmailReceiverConfig,
        *,
        smtp: SmtpFactory | None = None,
        clock: Callable[[], datetime] = utcnow,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock = clock
        self._tls = tls_context or ssl.create_default_context()
        self._smtp = smtp or _default_factory(config.security, self._tls)
        self._where = f"smtp://{config.smtp_host}:{config.smtp_port}"

    def send(self, notice: Notice) -> None:
        """Build and mail the message for ``notice``; raise DeliveryError if not accepted."""
        config = self._config
        message = build_message(
            notice, sender=config.sender, to=config.to, now=self._clock(), charts=config.chart
        )
        try:
            refused = self._deliver(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(exc) from None
        if refused:
            shown = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in sorted(refused.items()))
            raise DeliveryError(
                f"{self._where}: delivered to some recipients, refused: {shown}", permanent=True
            )

    def close(self) -> None:
        """Nothing to release: each notice has its own connection."""

    def _deliver(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """Run the conversation in its own thread; give up on it at the deadline."""
        deadline = Deadline(_seconds(self._config))
        refused: list[dict[str, tuple[int, bytes]]] = []
        failed: list[BaseException] = []

        def converse() -> None:
            try:
                refused.append(self._converse(message, deadline))
            except BaseException as exc:  # handed to the caller's thread
                failed.append(exc)

        worker = threading.Thread(target=converse, name=f"anomon-smtp-{self.name}", daemon=True)
        worker.start()
        worker.join(deadline.remaining() + GRACE)
        # past the deadline the socket was cut: a torn answer ("250 acc" then EOF) reads
        # as accepted, so a conversation the deadline ended is a timeout, never "sent"
        if worker.is_alive() or deadline.expired:
            raise TimeoutError(f"SMTP conversation past {deadline.seconds:g} s")
        if refused:
            return refused[0]
        raise failed[0]

    def _converse(self, message: EmailMessage, deadline: Deadline) -> dict[str, tuple[int, bytes]]:
        config = self._config
        opened: list[smtplib.SMTP] = []
        # the guard shuts the socket down at the deadline (and keeps doing so until the
        # block ends, so a connection that opens late is cut as well)
        with deadline.guard(lambda: shutdown(opened[0].sock if opened else None)):
            left = max(deadline.remaining(), 0.001)  # 0 would make the socket non-blocking
            client = self._smtp(config.smtp_host, config.smtp_port, timeout=left)
            opened.append(client)
            try:
                if deadline.expired:
                    raise TimeoutError("SMTP greeting past the deadline")
                if config.security == "starttls":
                    client.starttls(context=self._tls)
                if config.username:
                    client.login(config.username, config.password or "")
                return client.send_message(message)
            finally:
                _quit(client)

    def _error(self, exc: smtplib.SMTPException | OSError) -> DeliveryError:
        reason, permanent = classify(exc, username=self._config.username)
        timed_out = reason == "timed out"
        if timed_out:
            reason = f"timed out after {_seconds(self._config):g} s"
        text = f"{self._where}: {reason}"
        if self._config.password:  # belt and braces: no server text may echo it back
            text = text.replace(self._config.password, "***")
        return DeliveryError(text, permanent=permanent, timed_out=timed_out)


def _default_factory(security: str, tls: ssl.SSLContext) -> SmtpFactory:
    if security == "ssl":
        return functools.partial(smtplib.SMTP_SSL, context=tls)
    return smtplib.SMTP


def _seconds(config: EmailReceiverConfig) -> float:
    return config.timeout.total_seconds()


def _quit(client: smtplib.SMTP) -> None:
    # after a sent message a failing QUIT must not turn success into a retry (a duplicate)
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def classify(exc: smtplib.SMTPException | OSError, *, username: str | None) -> tuple[str, bool]:
    """Return ``(reason, permanent)`` for an SMTP or socket failure.

    The order matters: every SMTPException is an OSError, and the login, sender and
    recipient errors are response errors with more specific meanings.
    """
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # the server's text is left out: some echo the rejected credentials back
        return f"login as {username!r} rejected ({exc.smtp_code})", True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        shown = ", ".join(f"{r} ({code})" for r, (code, _) in sorted(exc.recipients.items()))
        return f"all recipients refused: {shown}", True
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"sender {exc.sender} refused: {_answer(exc)}", True
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"server does not support it: {_one_line(str(exc))}", True
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib reports a reply that timed out as a disconnection; the cause tells them apart
        if isinstance(exc.__context__, TimeoutError):
            return "timed out", False
        return "server closed the connection", False
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"server answered {_answer(exc)}", 500 <= exc.smtp_code < 600
    return _socket_reason(exc), False


def _socket_reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"connection failed ({type(exc).__name__})"


def _answer(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error
    shown = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{exc.smtp_code} {_one_line(shown)[:160]}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- the message --------------------------------------------------------------------


def build_message(
    notice: Notice,
    *,
    sender: str,
    to: Sequence[str],
    now: datetime,
    charts: bool = True,
) -> EmailMessage:
    """Return the email for ``notice`` (structure in the module docstring)."""
    domain = sender.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["Subject"] = render.subject(notice)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(notice.key, domain)
    message["X-Anomon-Key"] = notice.key
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message["X-Mailer"] = f"anomon/{__version__}"
    message.set_content(render.text_body(notice))
    message.make_alternative()
    html_part = _html_part(notice, _charts(notice, domain) if charts else [])
    message.attach(cast(EmailMessage, html_part))  # typeshed wants EmailMessage; any part works
    return message


def _html_part(notice: Notice, images: Sequence[tuple[IncidentView, str, bytes]]) -> MIMEPart:
    # text/html alone, or multipart/related: the HTML first, then the images it refers to
    part = MIMEPart()
    part.set_content(html_body(notice, {i.id: cid for i, cid, _ in images}), subtype="html")
    for incident, cid, png in images:
        part.add_related(
            png, maintype="image", subtype="png", cid=f"<{cid}>", filename=f"{incident.id}.png"
        )
    return part


def message_id(key: str, domain: str) -> str:
    """Return a Message-ID that is the same for the same notice key."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<anomon.{digest}@{domain}>"


def _charts(notice: Notice, domain: str) -> list[tuple[IncidentView, str, bytes]]:
    drawable = [i for i in notice.incidents if i.points is not None and i.points.ts]
    digest = hashlib.sha256(notice.key.encode()).hexdigest()[:12]
    drawn = []
    for incident in drawable[:MAX_CHARTS]:
        try:
            png = render_chart(incident)
        except ValueError as exc:  # a chart is a courtesy: the alert goes out without it
            log.warning("no chart for incident %s: %s", incident.id, exc)
            continue
        drawn.append((incident, f"chart-{incident.id}.{digest}@{domain}", png))
    return drawn


def html_body(notice: Notice, chart_ids: dict[int, str]) -> str:
    """The HTML message: the subject, then per incident a summary, facts and its chart."""
    parts = [
        '<!DOCTYPE html><html><body style="font-family: sans-serif; font-size: 14px">',
        f'<h2 style="font-size: 16px">{_h(render.subject(notice))}</h2>',
    ]
    parts += [_html_incident(incident, chart_ids.get(incident.id)) for incident in notice.incidents]
    parts.append(
        f'<p style="color: #777; font-size: 12px">anomon, receiver {_h(notice.receiver)}, '
        f"notice {_h(notice.key)}</p></body></html>"
    )
    return "\n".join(parts)


def _html_incident(incident: IncidentView, cid: str | None) -> str:
    colour = "#d62728" if incident.status == IncidentStatus.FIRING else "#2ca02c"
    labels = render.format_labels(incident.labels)
    block = [
        f'<h3 style="font-size: 14px; color: {colour}">{_h(incident.status.upper())} '
        f"#{incident.id}: {_h(render.summary(incident))}</h3>",
        f"<p>{_h(render.description(incident))}</p>",
        f'<p style="color: #555; font-size: 12px">{_h(labels)}</p>',
    ]
    if incident.annotations:
        items = "".join(
            f"<li>{_h(name)}: {_annotation_html(text)}</li>"
            for name, text in incident.annotations.items()
        )
        block.append(f"<ul>{items}</ul>")
    if incident.url:
        block.append(f'<p><a href="{_h(incident.url)}">incident {incident.id} in anomon</a></p>')
    if cid is not None:
        alt = f"chart of {incident.metric} on {incident.entity}"
        block.append(f'<img src="cid:{_h(cid)}" alt="{_h(alt)}" width="640" height="240">')
    return "\n".join(block)


def _annotation_html(text: str) -> str:
    """An annotation, as a link when it is an http(s) URL (a runbook, a dashboard)."""
    if re.fullmatch(r"https?://[^\s\"'<>]+", text):
        return f'<a href="{_h(text)}">{_h(text)}</a>'
    return _h(text)


def _h(text: str) -> str:
    return html.escape(text, quote=True)
