"""What every source kind provides, and how a partial failure is reported."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from anomon.errors import SourceError
from anomon.model import Sample


class Source(Protocol):
    """A pull source: ``collect(now)`` returns the samples observed at ``now``.

    Raises :class:`~anomon.errors.SourceError` (one readable line, no secrets) when
    nothing could be collected, or :class:`PartialCollection` when only part could.
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
