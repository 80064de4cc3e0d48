"""One bounded HTTP GET for the sources that pull over HTTP, with secret-free errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx

from anomon.errors import SourceError


def fetch(
    client: httpx.Client,
    url: str,
    *,
    headers: Mapping[str, str],
    bearer_token: str | None,
    timeout: timedelta,
    max_bytes: int,
) -> bytes:
    """GET ``url`` and return its body; raise SourceError with one line and no secrets.

    Fails on a timeout, a connection error, an HTTP status of 400 or more, or a body
    larger than ``max_bytes`` (read no further than that).
    """
    where = safe_url(url)
    sent = dict(headers)
    if bearer_token:
        sent["Authorization"] = f"Bearer {bearer_token}"
    seconds = timeout.total_seconds()
    try:
        with client.stream("GET", url, headers=sent, timeout=seconds) as reply:
            if reply.status_code >= 400:
                raise SourceError(f"{where}: HTTP {reply.status_code} {reply.reason_phrase}")
            body = bytearray()
            for chunk in reply.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise SourceError(f"{where}: response larger than {max_bytes} bytes")
    except httpx.TimeoutException:
        raise SourceError(f"{where}: timed out after {seconds:g} s") from None
    except httpx.ConnectError:
        raise SourceError(f"{where}: connection refused or host unreachable") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{where}: {type(exc).__name__}") from None
    return bytes(body)


def safe_url(url: str) -> str:
    """The URL without credentials or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
