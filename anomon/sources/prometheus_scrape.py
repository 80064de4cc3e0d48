"""``kind = "prometheus_scrape"``: an exposition-format endpoint, as Prometheus scrapes it.

Gauges (and untyped metrics) are stored as they are. Counters become per-second rates
(``<name>_per_second``) from the previous scrape, a counter that went down counting as a
reset (its new value is the increase, as Prometheus' ``rate`` does). Histograms become
``<name>_p50`` / ``_p90`` / ``_p99`` (from the buckets' increase since the previous
scrape, interpolated as ``histogram_quantile`` does) and ``<name>_average``; summaries
keep their quantiles and get ``<name>_average``; the ``<name>_created`` gauges client
libraries add beside them are dropped. With ``rates = false`` counters and
histograms are read as totals since the exporter started. Series are kept by metric
name patterns and label values; NaN and infinite values are skipped and named.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from fnmatch import fnmatchcase

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from anomon.config import PrometheusScrapeSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.http import HttpSource
from anomon.timeutil import to_epoch

LabelKey = tuple[tuple[str, str], ...]
Totals = dict[tuple[str, LabelKey], float]


class PrometheusScrapeSource(HttpSource[PrometheusScrapeSourceConfig]):
    """Scrape one exposition endpoint. ``client`` is passed in for tests."""

    def __init__(
        self, config: PrometheusScrapeSourceConfig, *, client: httpx.Client | None = None
    ) -> None:
        super().__init__(config, client=client)
        self._previous: dict[tuple[str, LabelKey], float] = {}  # totals of the last scrape
        self._previous_at: float | None = None

    def collect(self, now: datetime) -> list[Sample]:
        """Scrape and return the kept series; raise PartialCollection for skipped ones
        (SourceError when nothing could be read)."""
        families, problems = self._parse(self._get())
        at = now.timestamp()
        elapsed = at - self._previous_at if self._previous_at is not None else None
        totals: dict[tuple[str, LabelKey], float] = {}
        values: dict[tuple[str, LabelKey], float] = {}
        # client libraries expose a counter's start time as a `<name>_created` gauge: noise
        cumulative = {f.name for f in families if f.type in ("counter", "histogram", "summary")}
        for family in families:
            if family.name.endswith("_created") and family.name[: -len("_created")] in cumulative:
                continue
            if self._wanted(family.name):
                for name, labels, value in self._series(family, totals, elapsed):
                    if (name, labels) in values:
                        problems.append(f"duplicate series {name}{dict(labels)}")
                    elif not math.isfinite(value):
                        problems.append(f"{name}{dict(labels)}: not a finite number: {value}")
                    else:
                        values[(name, labels)] = value
        self._previous, self._previous_at = totals, at
        ts = to_epoch(now)
        samples = [
            Sample(
                SeriesKey.of(name, {**dict(labels), **self._config.labels}), self._info, ts, value
            )
            for (name, labels), value in values.items()
        ]
        return self._outcome(samples, problems)

    def _parse(self, body: bytes) -> tuple[list[Metric], list[str]]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{self._where}: exposition text is not UTF-8") from None
        families: list[Metric] = []
        try:
            for family in text_string_to_metric_families(text):
                families.append(family)
        except (ValueError, IndexError, TypeError) as exc:
            reason = f"invalid exposition text: {str(exc)[:80]}"
            if not families:
                raise SourceError(f"{self._where}: {reason}") from None
            return families, [reason]
        return families, []

    def _wanted(self, name: str) -> bool:
        patterns = self._config.metrics
        return not patterns or any(fnmatchcase(name, pattern) for pattern in patterns)

    def _matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self._config.match_labels.items())

    def _series(
        self, family: Metric, totals: dict[tuple[str, LabelKey], float], elapsed: float | None
    ) -> Iterator[tuple[str, LabelKey, float]]:
        """Yield (metric, labels, value) for one family; remember its totals in ``totals``."""
        samples = [s for s in family.samples if self._matches(s.labels)]
        if family.type == "counter":
            for s in samples:
                if s.name.endswith("_created"):
                    continue
                yield from self._rate(
                    f"{family.name}_per_second", s.name, _key(s.labels), s.value, totals, elapsed
                )
        elif family.type == "histogram":
            yield from self._histogram(family.name, samples, totals, elapsed)
        elif family.type == "summary":
            for s in samples:
                if s.name == family.name:  # the quantiles
                    yield family.name, _key(s.labels), float(s.value)
            yield from self._average(family.name, samples, totals, elapsed)
        else:  # gauge, untyped, unknown, info, stateset
            for s in samples:
                yield s.name, _key(s.labels), float(s.value)

    def _rate(
        self,
        name: str,
        total_name: str,
        labels: LabelKey,
        value: float,
        totals: dict[tuple[str, LabelKey], float],
        elapsed: float | None,
    ) -> Iterator[tuple[str, LabelKey, float]]:
        totals[(total_name, labels)] = value
        if not self._config.rates:
            yield total_name, labels, float(value)
            return
        increase = self._increase(total_name, labels, value)
        if increase is not None and elapsed:
            yield name, labels, increase / elapsed

    def _increase(self, name: str, labels: LabelKey, value: float) -> float | None:
        """The increase since the last scrape; a counter that went down was reset."""
        before = self._previous.get((name, labels))
        if before is None:
            return None
        return value - before if value >= before else value

    def _histogram(
        self, name: str, samples: list[PromSample], totals: Totals, elapsed: float | None
    ) -> Iterator[tuple[str, LabelKey, float]]:
        buckets: dict[LabelKey, list[tuple[float, float]]] = {}
        for s in samples:
            if s.name == f"{name}_bucket":
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                key, bound = _key(labels), float(s.labels["le"])
                totals[(f"{name}_bucket", _key(s.labels))] = s.value
                count = (
                    s.value
                    if not self._config.rates
                    else self._increase(f"{name}_bucket", _key(s.labels), s.value)
                )
                if count is not None:
                    buckets.setdefault(key, []).append((bound, float(count)))
        for key, counts in buckets.items():
            for q in self._config.quantiles:
                value = bucket_quantile(q, sorted(counts))
                if value is not None:
                    yield f"{name}_p{round(q * 100):d}", key, value
        yield from self._average(name, samples, totals, elapsed)

    def _average(
        self, name: str, samples: list[PromSample], totals: Totals, elapsed: float | None
    ) -> Iterator[tuple[str, LabelKey, float]]:
        parts: dict[LabelKey, dict[str, float]] = {}
        for s in samples:
            for part in ("sum", "count"):
                if s.name == f"{name}_{part}":
                    key = _key(s.labels)
                    totals[(s.name, key)] = s.value
                    amount = (
                        s.value if not self._config.rates else self._increase(s.name, key, s.value)
                    )
                    if amount is not None:
                        parts.setdefault(key, {})[part] = float(amount)
        for key, found in parts.items():
            if found.get("count"):
                yield f"{name}_average", key, found["sum"] / found["count"]


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Estimate quantile ``q`` from cumulative ``(upper bound, count)`` buckets, sorted.

    Linear interpolation inside the bucket that holds the rank, as Prometheus'
    ``histogram_quantile``; None without observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))
