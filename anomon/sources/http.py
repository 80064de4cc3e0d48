"""What the sources that pull over HTTP share: one bounded GET with secret-free errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from anomon.config import HttpSourceBase
from anomon.errors import SourceError
from anomon.model import Sample, SeriesInfo, SeriesKind
from anomon.sources.base import PartialCollection, summarise

ConfigT = TypeVar("ConfigT", bound=HttpSourceBase)


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


class HttpSource(Generic[ConfigT]):
    """What the sources that pull over HTTP share: a client, a safe URL for messages,
    the series' info, one bounded GET, and how problems end a collection."""

    def __init__(self, config: ConfigT, *, client: httpx.Client | None = None) -> None:
        self.name = config.name
        self._config = config
        self._client = client or httpx.Client(follow_redirects=False)
        self._where = safe_url(config.url)
        self._info = SeriesInfo(
            config.name, config.entity or config.name, SeriesKind(config.series_kind)
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _get(self, url: str | None = None) -> bytes:
        """GET ``url`` (default: the configured one) with the configured limits."""
        config = self._config
        return fetch(
            self._client,
            url or config.url,
            headers=config.headers,
            bearer_token=config.bearer_token,
            timeout=config.timeout,
            max_bytes=config.max_bytes,
        )

    def _outcome(self, samples: list[Sample], problems: list[str]) -> list[Sample]:
        """Return ``samples``; with problems, raise (PartialCollection if some were read)."""
        if not problems:
            return samples
        shown = summarise(problems)
        if not samples:
            raise SourceError(f"{self._where}: {shown}")
        raise PartialCollection(f"{self._where}: {shown}", samples)
