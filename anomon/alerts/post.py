"""POST bytes to one URL over kept-alive connections, with the standard library.

The webhook notifier's transport. ``http.client`` costs about a fifth of httpx's time
per request (0.16 ms against 0.8 ms for a loopback POST here), which is what bounds
delivery throughput with a fast receiver. Connections are reused (a small pool, so
concurrent sends each get one); a kept-alive connection the receiver closed meanwhile
is retried once on a fresh one. The answer's body is drained up to ``MAX_DRAIN`` bytes
to reuse the connection, never returned (a receiver's words are not ours to echo).

``timeout`` is a wall-clock deadline for the whole POST (connect, TLS, sending, reading
the whole answer, and the one retry on a fresh connection), not a per-read timeout: a
receiver trickling its answer a byte a second is cut off when it passes (see
:mod:`anomon.alerts.deadline`). Resolving the host name is the system resolver's, and
bounded by its own timeout.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from anomon.alerts.deadline import Deadline, shutdown

MAX_DRAIN = 64 * 1024
# what a kept-alive connection the receiver closed while idle raises on reuse
STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ssl.SSLEOFError,
)


class PostFailed(Exception):
    """A POST that got no answer.

    ``stage`` says how far it went: ``connect`` (nothing was sent), ``request`` (while
    sending it) or ``answer`` (sent: the receiver may have it); ``timed_out`` that the
    deadline ended it; ``cause`` is what ``http.client`` or the socket raised.
    """

    def __init__(self, stage: str, cause: BaseException, *, timed_out: bool) -> None:
        super().__init__(f"{stage}: {type(cause).__name__}")
        self.stage = stage
        self.cause = cause
        self.timed_out = timed_out

    @property
    def stale(self) -> bool:
        """Whether a kept-alive connection was found closed (worth one more try)."""
        return not self.timed_out and self.stage != "connect" and isinstance(self.cause, STALE)


class Poster:
    """POST to ``url`` (http or https) within ``timeout`` seconds of wall-clock time.

    Credentials in the URL are sent as HTTP Basic auth. :meth:`post` returns the status
    and raises :class:`PostFailed` when no answer came.
    """

    def __init__(self, url: str, *, timeout: float, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._context = context or (ssl.create_default_context() if self._https else None)
        self._auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Send one POST; return the answer's status code or raise PostFailed."""
        sent = dict(headers)
        if self._auth:
            sent["Authorization"] = self._auth
        deadline = Deadline(self._timeout)
        connection, reused = self._take()
        try:
            return self._exchange(connection, body, sent, deadline)
        except PostFailed as failed:
            if not (reused and failed.stale):
                raise
        # the receiver closed the kept-alive connection while idle: once more, same deadline
        return self._exchange(self._connect(), body, sent, deadline)

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        body: bytes,
        headers: dict[str, str],
        deadline: Deadline,
    ) -> int:
        stage = "connect"
        try:
            with deadline.guard(lambda: shutdown(connection.sock)):
                self._ready(connection, deadline)
                stage = "request"
                connection.request("POST", self._target, body=body, headers=headers)
                stage = "answer"
                reply = connection.getresponse()
                drained = reply.read(MAX_DRAIN + 1)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            timed_out = deadline.expired or isinstance(exc, TimeoutError)
            raise PostFailed(stage, exc, timed_out=timed_out) from exc
        except BaseException:
            connection.close()
            raise
        if deadline.expired:
            # the socket was cut: what was read may be a torn answer ("HTTP/1.1 200 O"
            # then EOF parses as a 200); past the deadline is a timeout, never "sent"
            connection.close()
            raise PostFailed(stage, TimeoutError("past the deadline"), timed_out=True)
        if reply.will_close or len(drained) > MAX_DRAIN:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return reply.status

    @staticmethod
    def _ready(connection: http.client.HTTPConnection, deadline: Deadline) -> None:
        # each socket operation gets at most what is left; the guard ends the whole
        left = max(deadline.remaining(), 0.001)
        if connection.sock is None:
            connection.timeout = left
            connection.connect()
        else:
            connection.sock.settimeout(left)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
