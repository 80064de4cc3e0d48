"""Sources: one module per kind, each pulling samples with its collaborators passed in.

A kind is a config model registered with :func:`anomon.config.source_kind` and a
:class:`Source` subclass naming it (``class SqlSource(Source, config=SqlSourceConfig)``);
importing this package imports every kind, so :func:`build_source` knows them all.
"""

from __future__ import annotations

from anomon.sources.base import (
    Backfillable,
    Database,
    OpenDatabase,
    PartialCollection,
    Source,
    SourceContext,
    build_source,
    unbuilt_kinds,
)
from anomon.sources.gpu import GpuSource, SourceUnavailable, open_gpu_source
from anomon.sources.http_json import HttpJsonSource
from anomon.sources.logs import LogsSource
from anomon.sources.mlflow import MlflowSource
from anomon.sources.predictions import PredictionsSource
from anomon.sources.prometheus_query import PrometheusQuerySource
from anomon.sources.prometheus_scrape import PrometheusScrapeSource
from anomon.sources.sql import SqlSource
from anomon.sources.system import SystemSource
from anomon.sources.tensorboard import TensorboardSource

__all__ = [
    "Backfillable",
    "Database",
    "GpuSource",
    "HttpJsonSource",
    "LogsSource",
    "MlflowSource",
    "OpenDatabase",
    "PartialCollection",
    "PredictionsSource",
    "PrometheusQuerySource",
    "PrometheusScrapeSource",
    "Source",
    "SourceContext",
    "SourceUnavailable",
    "SqlSource",
    "SystemSource",
    "TensorboardSource",
    "build_source",
    "open_gpu_source",
    "unbuilt_kinds",
]
