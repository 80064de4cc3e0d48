"""``kind = "prometheus_query"``: PromQL instant queries against a Prometheus server.

Each configured query (``metric name = "PromQL"``) is evaluated at the collection time
through ``/api/v1/query``; every element of the result vector becomes a series named
after the query, with the element's labels (``__name__`` dropped) and the source's
labels. A scalar result is one series. A query that fails (bad PromQL, an error from
the server, a non-numeric value) is named in the collection's error; the other
queries are still stored.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from anomon.config import PrometheusQuerySourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.http import HttpSource


class PrometheusQuerySource(HttpSource[PrometheusQuerySourceConfig]):
    """Run the configured PromQL queries. ``client`` is passed in for tests."""

    def collect(self, now: datetime) -> list[Sample]:
        """Evaluate every query at ``now``; raise PartialCollection for the failed ones."""
        samples: list[Sample] = []
        problems: list[str] = []
        for metric, query in self._config.queries.items():
            try:
                samples += self._query(metric, query, now)
            except SourceError as exc:
                problems.append(f"{metric}: {exc}")
        return self._outcome(samples, problems)

    def _query(self, metric: str, query: str, now: datetime) -> list[Sample]:
        config = self._config
        url = f"{config.url.rstrip('/')}/api/v1/query?" + urlencode(
            {"query": query, "time": f"{now.timestamp():.3f}"}
        )
        try:
            reply = json.loads(self._get(url))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SourceError("the answer is not JSON") from None
        if not isinstance(reply, dict) or reply.get("status") != "success":
            error = reply.get("error", "unknown error") if isinstance(reply, dict) else "bad answer"
            raise SourceError(f"query failed: {str(error)[:120]}")
        return [self._sample(metric, labels, point) for labels, point in _points(reply["data"])]

    def _sample(self, metric: str, labels: dict[str, str], point: Any) -> Sample:
        try:
            ts, value = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            raise SourceError(f"not a [time, value] pair: {str(point)[:40]}") from None
        if not math.isfinite(value):
            raise SourceError(f"not a finite number: {point[1]}")
        key = SeriesKey.of(metric, {**labels, **self._config.labels})
        return Sample(key, self._info, int(ts), value)


def _points(data: Any) -> list[tuple[dict[str, str], Any]]:
    """(labels, [time, value]) of an instant query's result (vector or scalar)."""
    if not isinstance(data, dict):
        raise SourceError("the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [({}, result)]
    if kind != "vector" or not isinstance(result, list):
        raise SourceError(f"expected a vector or scalar result, got: {kind}")
    return [
        ({k: v for k, v in item.get("metric", {}).items() if k != "__name__"}, item.get("value"))
        for item in result
    ]
