"""Sources: one module per kind, each pulling samples with its collaborators passed in."""

from __future__ import annotations

from anomon.config import (
    HttpJsonSourceConfig,
    PrometheusQuerySourceConfig,
    PrometheusScrapeSourceConfig,
    SourceConfig,
    SystemSourceConfig,
)
from anomon.sources.base import PartialCollection, Source
from anomon.sources.http_json import HttpJsonSource
from anomon.sources.prometheus_query import PrometheusQuerySource
from anomon.sources.prometheus_scrape import PrometheusScrapeSource
from anomon.sources.system import SystemSource

__all__ = [
    "HttpJsonSource",
    "PartialCollection",
    "PrometheusQuerySource",
    "PrometheusScrapeSource",
    "Source",
    "SystemSource",
    "build_source",
]


def build_source(config: SourceConfig) -> Source:
    """Return the source object for one ``[[sources]]`` entry."""
    if isinstance(config, SystemSourceConfig):
        return SystemSource(config)
    if isinstance(config, HttpJsonSourceConfig):
        return HttpJsonSource(config)
    if isinstance(config, PrometheusScrapeSourceConfig):
        return PrometheusScrapeSource(config)
    if isinstance(config, PrometheusQuerySourceConfig):
        return PrometheusQuerySource(config)
    raise TypeError(f"unknown source kind: {config!r}")  # pragma: no cover - config validates
