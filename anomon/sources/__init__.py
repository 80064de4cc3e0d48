"""Sources: one module per kind, each pulling samples with its collaborators passed in."""

from __future__ import annotations

from anomon.config import (
    GpuSourceConfig,
    HttpJsonSourceConfig,
    LogsSourceConfig,
    PredictionsSourceConfig,
    PrometheusQuerySourceConfig,
    PrometheusScrapeSourceConfig,
    SourceConfig,
    SqlSourceConfig,
    SystemSourceConfig,
)
from anomon.sources.base import Backfillable, Database, OpenDatabase, PartialCollection, Source
from anomon.sources.gpu import GpuSource, SourceUnavailable, open_gpu_source
from anomon.sources.http_json import HttpJsonSource
from anomon.sources.logs import LogsSource
from anomon.sources.predictions import PredictionsSource
from anomon.sources.prometheus_query import PrometheusQuerySource
from anomon.sources.prometheus_scrape import PrometheusScrapeSource
from anomon.sources.sql import SqlSource
from anomon.sources.system import SystemSource

__all__ = [
    "Backfillable",
    "Database",
    "GpuSource",
    "HttpJsonSource",
    "LogsSource",
    "OpenDatabase",
    "PartialCollection",
    "PredictionsSource",
    "PrometheusQuerySource",
    "PrometheusScrapeSource",
    "Source",
    "SourceUnavailable",
    "SqlSource",
    "SystemSource",
    "build_source",
]


def build_source(config: SourceConfig, *, open_database: OpenDatabase) -> Source:
    """Return the source object for one ``[[sources]]`` entry.

    ``open_database`` connects the ``sql`` and ``predictions`` kinds to their database.
    Raises SourceUnavailable when the kind cannot run on this host (``gpu`` without NVML).
    """
    if isinstance(config, SystemSourceConfig):
        return SystemSource(config)
    if isinstance(config, HttpJsonSourceConfig):
        return HttpJsonSource(config)
    if isinstance(config, PrometheusScrapeSourceConfig):
        return PrometheusScrapeSource(config)
    if isinstance(config, PrometheusQuerySourceConfig):
        return PrometheusQuerySource(config)
    if isinstance(config, SqlSourceConfig):
        return SqlSource(config, open_database=open_database)
    if isinstance(config, PredictionsSourceConfig):
        return PredictionsSource(config, open_database=open_database)
    if isinstance(config, LogsSourceConfig):
        return LogsSource(config)
    if isinstance(config, GpuSourceConfig):
        return open_gpu_source(config)
    raise TypeError(f"unknown source kind: {config!r}")  # pragma: no cover - config validates
