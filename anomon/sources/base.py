"""What every source kind provides, and how a partial failure is reported."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from anomon.errors import SourceError, summarise
from anomon.model import Sample

__all__ = [
    "Backfillable",
    "Database",
    "OpenDatabase",
    "PartialCollection",
    "Source",
    "split_range",
    "summarise",
]


class Source(Protocol):
    """A pull source: ``collect(now)`` returns the samples observed at ``now``.

    Raises :class:`~anomon.errors.SourceError` (one readable line, no secrets) when
    nothing could be collected, or :class:`PartialCollection` when only part could.
    A source whose class sets ``replaces_samples = True`` (it recomputes past points)
    has its samples overwrite stored ones instead of being skipped as duplicates.
    """

    name: str

    def collect(self, now: datetime) -> list[Sample]:
        """Return the samples observed at ``now`` (an aware UTC datetime)."""
        ...


class PartialCollection(SourceError):
    """Some of a collection failed; ``samples`` holds the valid part, which is stored."""

    def __init__(self, reason: str, samples: Sequence[Sample]) -> None:
        super().__init__(reason)
        self.samples = list(samples)


def split_range(
    since: datetime, until: datetime, step: timedelta
) -> list[tuple[datetime, datetime]]:
    """Return consecutive ``[start, end)`` ranges of at most ``step`` covering the span
    (what a backfill pulls one query at a time)."""
    chunks = []
    start = since
    while start < until:
        end = min(start + step, until)
        chunks.append((start, end))
        start = end
    return chunks


class Database(Protocol):
    """A user's database that a source reads from (made by the store, passed in)."""

    label: str  # the URL with the password hidden, for messages

    def query(self, sql: str, params: Mapping[str, Any]) -> tuple[list[str], list[Sequence[Any]]]:
        """Return the column names and rows of ``sql``; raise StoreError on failure."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


OpenDatabase = Callable[[str, timedelta], Database]
"""Open a :class:`Database` from a SQLAlchemy URL with a per-query time limit."""


class Backfillable(Protocol):
    """A source that can also pull the history of a past time range (``anomon backfill``)."""

    name: str

    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Split ``[since, until)`` into the ranges one :meth:`collect_range` call pulls."""
        ...

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Return the samples of ``[start, end)``; raise SourceError like ``collect``."""
        ...
