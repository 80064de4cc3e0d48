"""What the sources that pull over HTTP share: one bounded GET with secret-free errors.

Bounded means: the source's ``timeout`` is a wall-clock deadline for the whole
collection (connect, headers and every byte of the body, however slowly it trickles);
the body is capped at ``max_bytes`` after decompression, checked while it streams;
redirects are errors, never followed; numbers too large for a float are refused values,
never exceptions.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from anomon.config import HttpSourceBase
from anomon.errors import SourceError
from anomon.model import Sample, SeriesInfo, SeriesKind, escape_controls
from anomon.sources.base import PartialCollection, Source, summarise

ConfigT = TypeVar("ConfigT", bound=HttpSourceBase)


# Numbers longer than this in JSON or exposition text are never meaningful (a float has 17
# significant digits, its largest value 309): they are refused, never converted.
MAX_NUMBER_CHARS = 64
# Decompress at most this much per step, so one compressed chunk never becomes one huge one.
_INFLATE_STEP = 256 * 1024


class Deadline:
    """A wall-clock limit on a whole collection: connect, headers, body, every request."""

    def __init__(self, limit: timedelta) -> None:
        self.seconds = limit.total_seconds()
        self._end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        """Seconds left (0 or less once it has passed)."""
        return self._end - time.monotonic()

    def expired(self) -> bool:
        """Whether the limit has passed."""
        return self.remaining() <= 0

    def error(self, where: str) -> SourceError:
        """The error of a collection that ran past the limit."""
        return SourceError(f"{where}: timed out after {self.seconds:g} s")


def fetch(
    client: httpx.Client,
    url: str,
    *,
    headers: Mapping[str, str],
    bearer_token: str | None,
    timeout: timedelta,
    max_bytes: int,
    deadline: Deadline | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> bytes:
    """GET ``url`` (or send ``method`` with a JSON ``body``) and return its (decompressed)
    body; raise SourceError with one line and no secrets.

    ``deadline`` (default: ``timeout`` from now) bounds the whole request in wall-clock
    time, a peer that trickles its headers or body included. Fails past the deadline, on
    a connection error, on a redirect (never followed) or an HTTP status of 400 or more,
    or on a body larger than ``max_bytes`` once decompressed (read no further than that).
    """
    where = safe_url(url)
    deadline = deadline or Deadline(timeout)
    if deadline.expired():
        raise deadline.error(where)
    # httpx's timeouts bound each read, not the request: a peer sending one byte a second
    # never trips them. The cutter shuts the socket down when the deadline passes.
    cutter = _Cutter(deadline.remaining())
    seconds = min(deadline.remaining(), timeout.total_seconds())
    try:
        sent = _request_headers(headers, bearer_token)
        if body is not None and "content-type" not in {k.lower() for k in sent}:
            sent["Content-Type"] = "application/json"
        with client.stream(
            method,
            url,
            content=body,
            headers=sent,
            timeout=seconds,
            follow_redirects=False,  # whatever the client: a redirect is an error here
            extensions={"trace": cutter.trace},
        ) as reply:
            _check_status(reply, url, where)
            return _read_body(reply, where, max_bytes, deadline)
    except httpx.HTTPError as exc:
        raise _failure(exc, where, deadline) from None
    finally:
        cutter.disarm()


def _request_headers(headers: Mapping[str, str], bearer_token: str | None) -> dict[str, str]:
    """The configured headers, the token, and what ``fetch`` relies on."""
    sent = {k: v for k, v in headers.items() if k.lower() != "connection"}
    if bearer_token:
        sent["Authorization"] = f"Bearer {bearer_token}"
    # a fresh connection per request: the cutter can only cut a connection it saw opened
    sent["Connection"] = "close"
    if "accept-encoding" not in {k.lower() for k in sent}:
        sent["Accept-Encoding"] = "gzip, deflate"  # what _Inflater can decode
    return sent


def _failure(exc: httpx.HTTPError, where: str, deadline: Deadline) -> SourceError:
    """The one-line error of a failed request (after the deadline: always a timeout)."""
    if isinstance(exc, httpx.TimeoutException) or deadline.expired():
        return deadline.error(where)
    if isinstance(exc, httpx.ConnectError):
        return SourceError(f"{where}: connection refused or host unreachable")
    return SourceError(f"{where}: {type(exc).__name__}")


def _check_status(reply: httpx.Response, url: str, where: str) -> None:
    """Raise SourceError for a redirect or an HTTP error status."""
    status = reply.status_code
    if 300 <= status < 400:
        raise SourceError(
            f"{where}: HTTP {status} {_redirect(url, reply.headers.get('location'))} — "
            "anomon does not follow redirects; point url at the final address"
        )
    if status >= 400:
        raise SourceError(f"{where}: HTTP {status} {printable(reply.reason_phrase)}")


def _redirect(url: str, location: str | None) -> str:
    """Where a redirect points, without credentials or query string."""
    if not location:
        return "redirect without a Location header"
    try:
        return f"redirect to {safe_url(urljoin(url, location))}"
    except ValueError:
        return "redirect to an invalid Location"


def _read_body(reply: httpx.Response, where: str, max_bytes: int, deadline: Deadline) -> bytes:
    """Read and decompress the body, checking the deadline on every chunk and the size on
    every decompressed step."""
    coding = reply.headers.get("content-encoding", "").strip().lower()
    try:
        inflater = _Inflater(coding, max_bytes)
    except ValueError:
        raise SourceError(f"{where}: unsupported Content-Encoding {printable(coding)}") from None
    received = 0
    try:
        for raw in reply.iter_raw():
            received += len(raw)
            if deadline.expired():
                raise deadline.error(where)
            if received > max_bytes:  # empty deflate blocks inflate to nothing
                raise _TooLarge
            inflater.feed(raw)
        inflater.finish()
    except _TooLarge:
        raise SourceError(f"{where}: response larger than {max_bytes} bytes") from None
    except zlib.error:
        raise SourceError(f"{where}: body is not valid {coding} data") from None
    if deadline.expired():  # the cutter ended a body that has no length: it is cut short
        raise deadline.error(where)
    return bytes(inflater.body)


class _TooLarge(Exception):
    """The decompressed body passed its limit."""


class _Inflater:
    """Decompress a body (identity, gzip or deflate) step by step, never past ``limit``.

    httpx decodes each compressed chunk in one call, so a 64 kB chunk of a gzip bomb
    becomes tens of MB at once; here each call yields at most ``_INFLATE_STEP`` bytes.
    Raises ValueError for another coding, _TooLarge past ``limit``, zlib.error on bad data.
    """

    def __init__(self, coding: str, limit: int) -> None:
        self.body = bytearray()
        self._limit = limit
        self._coding = coding
        if coding in ("", "identity"):
            self._zlib = None
        elif coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise ValueError(coding)

    def feed(self, data: bytes) -> None:
        """Decompress ``data`` onto ``body``."""
        if self._zlib is None:
            self._append(data)
            return
        while data:
            room = self._limit - len(self.body) + 1  # one byte more tells "too large"
            out = self._inflate(data, min(room, _INFLATE_STEP))
            self._append(out)
            data = self._zlib.unconsumed_tail
            if not out:  # everything consumed (a tail is left only when output was capped)
                break

    def _inflate(self, data: bytes, most: int) -> bytes:
        assert self._zlib is not None
        try:
            return self._zlib.decompress(data, most)
        except zlib.error:
            # "deflate" is meant as zlib-wrapped, but some servers send it raw (as httpx)
            if self._coding != "deflate" or self.body:
                raise
            self._coding = "raw deflate"
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._zlib.decompress(data, most)

    def finish(self) -> None:
        """Add what the decompressor still holds (at most its window)."""
        if self._zlib is not None:
            self._append(self._zlib.flush())

    def _append(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > self._limit:
            raise _TooLarge


class _Cutter:
    """Shut the request's connection down at the deadline, whatever it is waiting for.

    Learns the connection from httpcore's ``trace`` extension and keeps a duplicate of
    its socket, so that a shutdown can never reach a descriptor reused by someone else.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cut = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace callback: remember each connection opened."""
        if not event.endswith(".connect_tcp.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self._cut:
                _shutdown(duplicate)

    def _fire(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._sockets:
                _shutdown(sock)

    def disarm(self) -> None:
        """Stop the timer and release the duplicates."""
        self._timer.cancel()
        with self._lock:
            self._cut = True  # a late connection is not waited for
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or by httpx
        sock.shutdown(socket.SHUT_RDWR)


def load_json(body: bytes) -> Any:
    """Parse a JSON body; a number no float can hold becomes an :class:`OutOfRange` (±inf).

    ``json.loads`` itself raises on an integer of more than 4,300 digits and the int it
    makes of 400 digits overflows ``float()``: here such numbers are values a finite check
    refuses, so one bad field never loses the others. Raises ValueError for invalid JSON.
    """
    try:
        return json.loads(body, parse_int=_json_number, parse_float=_json_number)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class OutOfRange(float):
    """A number too large (or too long) for a float: ±inf, with a short ``text`` of it."""

    text = ""


def _json_number(text: str) -> float:
    number = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if math.isfinite(number):
        return number
    marker = OutOfRange(-math.inf if text.startswith("-") else math.inf)
    marker.text = shorten(text)
    return marker


def number_text(value: object) -> str:
    """How a refused number is shown: what arrived, shortened."""
    return value.text if isinstance(value, OutOfRange) else shorten(str(value))


def shorten(text: str) -> str:
    """``text``, or its start and length when it is long (a 5,000-digit number)."""
    if len(text) <= 24:
        return printable(text)
    return f"{printable(text[:12])}… ({len(text)} characters)"


def printable(text: str, most: int = 200) -> str:
    """``text`` with control characters escaped and at most ``most`` characters."""
    return escape_controls(text[:most]) + ("…" if len(text) > most else "")


def safe_url(url: str) -> str:
    """The URL without credentials or query string, for messages."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<an invalid URL>"
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port else host
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


class HttpSource(Source, Generic[ConfigT]):
    """What the sources that pull over HTTP share: a client, a safe URL for messages,
    the series' info, one bounded GET, and how problems end a collection."""

    def __init__(self, config: ConfigT, *, client: httpx.Client | None = None) -> None:
        super().__init__(config)
        self._config = config
        self._client = client or httpx.Client(follow_redirects=False)
        self._where = safe_url(config.url)
        self._info = SeriesInfo(
            config.name, config.entity or config.name, SeriesKind(config.series_kind)
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _get(
        self,
        url: str | None = None,
        *,
        deadline: Deadline | None = None,
        method: str = "GET",
        body: bytes | None = None,
    ) -> bytes:
        """GET ``url`` (default: the configured one; or ``method`` with ``body``) with the
        configured limits; within ``deadline`` when given (several requests of one
        collection), else within the configured timeout."""
        config = self._config
        return fetch(
            self._client,
            url or config.url,
            headers=config.headers,
            bearer_token=config.bearer_token,
            timeout=config.timeout,
            max_bytes=config.max_bytes,
            deadline=deadline,
            method=method,
            body=body,
        )

    def _outcome(self, samples: list[Sample], problems: list[str]) -> list[Sample]:
        """Return ``samples``; with problems, raise (PartialCollection if some were read)."""
        if not problems:
            return samples
        # problems quote the peer's text (names, the parser's words): never raw
        shown = summarise([printable(problem, 300) for problem in problems])
        if not samples:
            raise SourceError(f"{self._where}: {shown}")
        raise PartialCollection(f"{self._where}: {shown}", samples)
