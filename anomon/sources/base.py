"""What every source kind provides, and how a partial failure is reported."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from anomon.config import SOURCE_MODELS, SourceBase
from anomon.errors import SourceError, summarise
from anomon.model import Sample

__all__ = [
    "Backfillable",
    "Database",
    "OpenDatabase",
    "PartialCollection",
    "Source",
    "SourceContext",
    "build_source",
    "metric_name_of",
    "split_range",
    "summarise",
]


class Source(ABC):
    """A pull source: ``collect(now)`` returns the samples observed at ``now``.

    The one plug-in point for source kinds: a subclass names its config model
    (``class SqlSource(Source, config=SqlSourceConfig)``, the model registered in the
    config's union with ``@source_kind``) and :func:`build_source` builds it for every
    ``[[sources]]`` entry of that kind — through :meth:`build`, which a kind that needs
    collaborators (a database) overrides.

    ``collect`` raises :class:`~anomon.errors.SourceError` (one readable line, no
    secrets) when nothing could be collected, or :class:`PartialCollection` when only
    part could. A kind that sets ``replaces_samples = True`` (it recomputes past points)
    has its samples overwrite stored ones instead of being skipped as duplicates.
    """

    name: str
    replaces_samples: ClassVar[bool] = False

    def __init_subclass__(cls, *, config: type[SourceBase] | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if config is None:  # an intermediate base (HttpSource), or a kind's own subclass
            return
        if config in _KINDS:
            raise TypeError(f"{config.__name__} is built by {_KINDS[config].__name__} already")
        _KINDS[config] = cls

    def __init__(self, config: Any) -> None:
        self.name = config.name

    @classmethod
    def build(cls, config: Any, context: SourceContext) -> Source:
        """Return the source for ``config``; raise SourceError when it cannot run here."""
        return cls(config)

    @abstractmethod
    def collect(self, now: datetime) -> list[Sample]:
        """Return the samples observed at ``now`` (an aware UTC datetime)."""

    def saved(self) -> None:  # noqa: B027 - most kinds return each sample once anyway
        """The samples of the last collection are stored. A kind that recomputes past
        points returns them again until told so."""

    def close(self) -> None:  # noqa: B027 - most kinds hold nothing to release
        """Release what the source holds (connections, files); it is not used again."""


@dataclass(frozen=True)
class SourceContext:
    """The collaborators the service passes to :meth:`Source.build`."""

    open_database: OpenDatabase


_KINDS: dict[type[SourceBase], type[Source]] = {}


def build_source(config: SourceBase, *, open_database: OpenDatabase) -> Source:
    """Return the source object for one ``[[sources]]`` entry.

    ``open_database`` connects the ``sql`` and ``predictions`` kinds to their database.
    Raises SourceError (SourceUnavailable) when the kind cannot run on this host
    (``gpu`` without NVML).
    """
    try:
        kind = _KINDS[type(config)]
    except KeyError:
        raise TypeError(f"no source kind builds {type(config).__name__}") from None
    return kind.build(config, SourceContext(open_database))


def unbuilt_kinds() -> list[str]:
    """The ``kind`` names the config accepts that no source class builds (none, or a
    kind was registered in the config without its source)."""
    return sorted(kind for kind, model in SOURCE_MODELS.items() if model not in _KINDS)


class PartialCollection(SourceError):
    """Some of a collection failed; ``samples`` holds the valid part, which is stored."""

    def __init__(self, reason: str, samples: Sequence[Sample]) -> None:
        super().__init__(reason)
        self.samples = list(samples)


_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


def metric_name_of(text: str) -> str:
    """A metric name for a name from elsewhere (a TensorBoard tag, an MLflow key):
    ``_`` for each character a metric name cannot hold, ``_`` before a leading digit."""
    name = _NOT_IN_NAME.sub("_", text)
    return f"_{name}" if not name or name[0].isdigit() else name


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


class Backfillable(Source):
    """A source that can also pull the history of a past time range (``anomon backfill``)."""

    @abstractmethod
    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Split ``[since, until)`` into the ranges one :meth:`collect_range` call pulls."""

    @abstractmethod
    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Return the samples of ``[start, end)``; raise SourceError like ``collect``."""
