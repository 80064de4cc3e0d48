"""Sources: one module per kind, each pulling samples with its collaborators passed in."""

from __future__ import annotations

from anomon.config import SourceConfig, SystemSourceConfig
from anomon.sources.base import PartialCollection, Source
from anomon.sources.system import SystemSource

__all__ = ["PartialCollection", "Source", "SystemSource", "build_source"]


def build_source(config: SourceConfig) -> Source:
    """Return the source object for one ``[[sources]]`` entry."""
    if isinstance(config, SystemSourceConfig):
        return SystemSource(config)
    raise TypeError(f"unknown source kind: {config!r}")  # pragma: no cover - config validates
