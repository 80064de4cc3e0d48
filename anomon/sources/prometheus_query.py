"""``kind = "prometheus_query"``: PromQL instant queries against a Prometheus server.

Each configured query (``metric name = "PromQL"``) is evaluated at the collection time
through ``/api/v1/query``; every element of the result vector becomes a series named
after the query, with the element's labels (``__name__`` dropped) and the source's
labels. A scalar result is one series. A query that fails (bad PromQL, an error from
the server) or an element that is not a number is named in the collection's error;
the other queries and elements are still stored. A NaN element (``histogram_quantile``
of a handler without traffic) is no value at that time for that series only, not an
error.

``anomon backfill`` evaluates the same queries through ``/api/v1/query_range`` with the
source's interval as the step, in chunks of at most 10,000 steps (Prometheus refuses
more than 11,000 points per series in one query).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from anomon.config import PrometheusQuerySourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.base import Backfillable, split_range
from anomon.sources.http import Deadline, HttpSource, load_json, number_text, shorten
from anomon.timeutil import from_epoch

# what reading a well-formed JSON answer of the wrong shape raises
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError)


class PrometheusQuerySource(
    HttpSource[PrometheusQuerySourceConfig], Backfillable, config=PrometheusQuerySourceConfig
):
    """Run the configured PromQL queries. ``client`` is passed in for tests."""

    # Prometheus refuses a range query of more than 11,000 points per series.
    max_points_per_query = 10_000

    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """Split ``[since, until)`` into ranges of at most ``max_points_per_query`` steps
        of the source's interval (the range query's step)."""
        step = self._config.interval
        span = step * self.max_points_per_query
        # whole steps since the epoch: a second backfill asks for the same instants
        start = from_epoch(0) + (since - from_epoch(0)) // step * step
        return split_range(start, until, span)

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Evaluate every query at each step of ``[start, end)`` through ``query_range``."""
        samples: list[Sample] = []
        problems: list[str] = []
        for metric, query in self._config.queries.items():
            try:
                found, bad = self._query_range(metric, query, start, end)
                samples += found
                problems += [f"{metric}: {problem}" for problem in bad]
            except SourceError as exc:
                problems.append(f"{metric}: {exc}")
            except _MALFORMED:
                problems.append(f"{metric}: the answer is not a Prometheus query result")
        return self._outcome(samples, problems)

    def _query_range(
        self, metric: str, query: str, start: datetime, end: datetime
    ) -> tuple[list[Sample], list[str]]:
        """The samples of one range query and what was wrong with its other points (a
        NaN point is neither: no value at that time)."""
        step = self._config.interval.total_seconds()
        last = end.timestamp() - step / 2  # the range's end is inclusive; [start, end) here
        if last < start.timestamp():
            return [], []
        reply = self._api(
            "query_range",
            {
                "query": query,
                "start": f"{start.timestamp():.3f}",
                "end": f"{last:.3f}",
                "step": f"{step:g}",
            },
        )
        data = reply["data"]
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise SourceError("expected a matrix result from query_range")
        samples: list[Sample] = []
        problems: list[str] = []
        for item in data.get("result") or []:
            labels = {k: v for k, v in item.get("metric", {}).items() if k != "__name__"}
            found, bad = self._samples(metric, labels, item.get("values", []))
            samples += found
            problems += bad
        return samples, problems

    def collect(self, now: datetime) -> list[Sample]:
        """Evaluate every query at ``now``; raise PartialCollection for the failed ones.

        The source's ``timeout`` bounds all the queries together: those not answered by
        then fail as timed out."""
        deadline = Deadline(self._config.timeout)
        samples: list[Sample] = []
        problems: list[str] = []
        for metric, query in self._config.queries.items():
            try:
                found, bad = self._query(metric, query, now, deadline)
            except SourceError as exc:
                problems.append(f"{metric}: {exc}")
                continue
            samples += found
            problems += [f"{metric}: {problem}" for problem in bad]
        return self._outcome(samples, problems)

    def _query(
        self, metric: str, query: str, now: datetime, deadline: Deadline
    ) -> tuple[list[Sample], list[str]]:
        """The samples of one query's elements, and what was wrong with the others (a
        NaN element is neither: "no value at this time" for that series only, as
        ``histogram_quantile`` gives for a handler without traffic)."""
        params = {"query": query, "time": f"{now.timestamp():.3f}"}
        reply = self._api("query", params, deadline=deadline)
        try:
            points = _points(reply["data"])
        except _MALFORMED:
            raise SourceError("the answer is not a Prometheus query result") from None
        samples: list[Sample] = []
        problems: list[str] = []
        for labels, point in points:
            found, bad = self._samples(metric, labels, [point])
            samples += found
            problems += bad
        return samples, problems

    def _samples(
        self, metric: str, labels: dict[str, str], points: list[Any]
    ) -> tuple[list[Sample], list[str]]:
        """The samples of one series' points; NaN points skipped, bad ones named."""
        samples: list[Sample] = []
        problems: list[str] = []
        for point in points:
            try:
                sample = self._sample(metric, labels, point)
            except SourceError as exc:
                problems.append(str(exc))
            else:
                if sample is not None:
                    samples.append(sample)
        return samples, problems

    def _api(
        self, endpoint: str, params: dict[str, str], *, deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """GET ``/api/v1/<endpoint>``; return the successful answer or raise SourceError."""
        url = f"{self._config.url.rstrip('/')}/api/v1/{endpoint}?" + urlencode(params)
        try:
            reply = load_json(self._get(url, deadline=deadline))
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise SourceError("the answer is not JSON") from None
        if not isinstance(reply, dict) or reply.get("status") != "success":
            error = reply.get("error", "unknown error") if isinstance(reply, dict) else "bad answer"
            raise SourceError(f"query failed: {str(error)[:120]}")
        return reply

    def _sample(self, metric: str, labels: dict[str, str], point: Any) -> Sample | None:
        """The sample of one ``[time, value]`` point; None for a NaN value (no value at
        this time); SourceError for anything else that is not a finite number and time."""
        try:
            ts, value = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError, KeyError):
            raise SourceError(f"not a [time, value] pair: {shorten(str(point))}") from None
        if math.isnan(value):
            return None
        if not math.isfinite(value):
            raise SourceError(f"not a finite number: {number_text(point[1])}")
        if not math.isfinite(ts):
            raise SourceError(f"not a representable time: {number_text(point[0])}")
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
