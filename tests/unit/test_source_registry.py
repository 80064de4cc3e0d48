"""The one plug-in point for source kinds: config models and source classes by kind."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import pytest

from anomon import store
from anomon.config import SOURCE_MODELS, Config, SourceBase, source_kind
from anomon.model import Sample
from anomon.sources import (
    Backfillable,
    HttpJsonSource,
    LogsSource,
    MlflowSource,
    PredictionsSource,
    PrometheusQuerySource,
    PrometheusScrapeSource,
    Source,
    SqlSource,
    SystemSource,
    TensorboardSource,
    build_source,
    unbuilt_kinds,
)


def test_every_kind_the_config_accepts_has_a_source_that_builds_it() -> None:
    assert unbuilt_kinds() == []
    assert set(SOURCE_MODELS) == {
        "system",
        "http_json",
        "prometheus_scrape",
        "prometheus_query",
        "mlflow",
        "sql",
        "predictions",
        "logs",
        "tensorboard",
        "gpu",
    }


def test_build_source_builds_the_class_registered_for_each_kind(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    config = Config.model_validate(
        {
            "sources": [
                {"name": "host", "kind": "system"},
                {"name": "model", "kind": "http_json", "url": "http://127.0.0.1:1/s",
                 "fields": {"p99": "latency.p99"}},
                {"name": "node", "kind": "prometheus_scrape", "url": "http://127.0.0.1:1/m"},
                {"name": "prom", "kind": "prometheus_query", "url": "http://127.0.0.1:1",
                 "queries": {"up": "up"}},
                {"name": "db", "kind": "sql", "url": f"sqlite:///{tmp_path / 'x.db'}",
                 "query": "select 'm' as metric, 1 as value"},
                {"name": "quality", "kind": "predictions", "path": str(tmp_path / "p.csv")},
                {"name": "app", "kind": "logs", "path": str(log), "patterns": {"e": "ERROR"}},
                {"name": "training", "kind": "tensorboard", "logdir": str(tmp_path)},
                {"name": "runs", "kind": "mlflow", "url": "http://127.0.0.1:1"},
            ]
        }
    )  # fmt: skip
    built = [build_source(s, open_database=store.open_database) for s in config.sources]
    try:
        assert [type(source) for source in built] == [
            SystemSource,
            HttpJsonSource,
            PrometheusScrapeSource,
            PrometheusQuerySource,
            SqlSource,
            PredictionsSource,
            LogsSource,
            TensorboardSource,
            MlflowSource,
        ]
        assert [source.name for source in built] == [s.name for s in config.sources]
        # what the service asks of every source, without getattr
        assert [source.replaces_samples for source in built] == [False] * 5 + [True] + [False] * 3
        assert [isinstance(source, Backfillable) for source in built] == [
            False, False, False, True, True, True, False, False, True
        ]  # fmt: skip
    finally:
        for source in built:
            source.close()


def test_a_kind_registered_twice_is_refused() -> None:
    class Again(SourceBase):
        kind: Literal["system"]

    with pytest.raises(TypeError, match="'system' is registered twice"):
        source_kind(Again)
    assert SOURCE_MODELS["system"] is not Again


def test_a_second_source_class_for_one_config_model_is_refused() -> None:
    with pytest.raises(TypeError, match="SystemSourceConfig is built by SystemSource already"):

        class Another(Source, config=type(SOURCE_MODELS["system"].model_construct())):
            def collect(self, now: datetime) -> list[Sample]:
                return []


def test_a_source_that_holds_nothing_closes_without_an_override() -> None:
    class Quiet(Source):  # an intermediate class: not registered
        def collect(self, now: datetime) -> list[Sample]:
            return []

    config = SOURCE_MODELS["system"].model_validate({"name": "q", "kind": "system"})
    quiet = Quiet(config)
    quiet.close()
    assert quiet.name == "q" and quiet.replaces_samples is False
