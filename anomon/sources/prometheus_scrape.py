"""``kind = "prometheus_scrape"``: an exposition-format endpoint, as Prometheus scrapes it.

Gauges (and untyped metrics) are stored as they are. Counters become per-second rates
(``<name>_per_second``) from the previous scrape, a counter that went down counting as a
reset (its new value is the increase, as Prometheus' ``rate`` does). Histograms become
``<name>_p50`` / ``_p90`` / ``_p99`` (from the buckets' increase since the previous
scrape, interpolated as ``histogram_quantile`` does) and ``<name>_average``; summaries
keep their quantiles and get ``<name>_average``; the ``<name>_created`` gauges client
libraries add beside them are dropped. With ``rates = false`` counters and
histograms are read as totals since the exporter started. Series are kept by metric
name patterns and label values; a NaN value (an empty summary's quantiles) is no value
at this time, silently; infinite and over-long values are skipped and named. Lines of
unwanted metrics are never parsed, and reading stops once more than ``max_series``
series were read (the cardinality guard would refuse the rest anyway).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from fnmatch import fnmatchcase

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_fd_to_metric_families
from prometheus_client.samples import Sample as PromSample

from anomon.config import PrometheusScrapeSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.http import MAX_NUMBER_CHARS, HttpSource, printable
from anomon.timeutil import to_epoch

MAX_BAD_LINES = 20  # unreadable lines set aside per page before the rest is given up

LabelKey = tuple[tuple[str, str], ...]
Totals = dict[tuple[str, LabelKey], float]


class PrometheusScrapeSource(
    HttpSource[PrometheusScrapeSourceConfig], config=PrometheusScrapeSourceConfig
):
    """Scrape one exposition endpoint. ``client`` is passed in for tests."""

    def __init__(
        self, config: PrometheusScrapeSourceConfig, *, client: httpx.Client | None = None
    ) -> None:
        super().__init__(config, client=client)
        self._target = target_labels(config)
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
                try:
                    for name, labels, value in self._series(family, totals, elapsed):
                        if (name, labels) in values:
                            problems.append(f"duplicate series {name}{dict(labels)}")
                        elif math.isnan(value):
                            continue  # no value at this time (an empty summary's quantiles)
                        elif not math.isfinite(value):
                            problems.append(f"{name}{dict(labels)}: not a finite number: {value}")
                        else:
                            values[(name, labels)] = value
                except (ValueError, LookupError, ArithmeticError) as exc:  # a bad `le` label
                    problems.append(f"{family.name}: {str(exc)[:80]}")
        self._previous, self._previous_at = totals, at
        ts = to_epoch(now)
        samples = [
            Sample(SeriesKey.of(name, self._labels(labels)), self._info, ts, value)
            for (name, labels), value in values.items()
        ]
        return self._outcome(samples, problems)

    def _labels(self, exposed: LabelKey) -> dict[str, str]:
        """A series' labels: the exposed ones, the target's (``job``, ``instance``; an
        exposed label of that name kept as ``exported_<name>``, as Prometheus does), then
        the configured ones."""
        found = dict(exposed)
        for name, value in self._target.items():
            if name in found:
                found[f"exported_{name}"] = found.pop(name)
            found[name] = value
        return {**found, **self._config.labels}

    def _parse(self, body: bytes) -> tuple[list[Metric], list[str]]:
        """The families of the wanted metrics and what was wrong with the page; raise
        SourceError when nothing could be read.

        The parser gives up at the first line it cannot read, losing the family it was
        building and every line after it; so that line is set aside and the page parsed
        again without it, up to :data:`MAX_BAD_LINES` times.
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{self._where}: exposition text is not UTF-8") from None
        skipped: dict[int, str] = {}
        while True:
            families: list[Metric] = []
            problems: list[str] = []
            feed = _Feed(self._config, problems, skip=skipped.keys())
            try:
                # the parser only iterates over its argument's lines
                for family in text_fd_to_metric_families(feed.lines(text)):  # type: ignore[arg-type]
                    families.append(family)
                break
            except (ValueError, LookupError, TypeError, ArithmeticError) as exc:
                reason = f"invalid exposition text: {str(exc)[:80]}"
                line = feed.last
                if line is None or line in skipped or len(skipped) >= MAX_BAD_LINES:
                    if not families and not skipped:
                        raise SourceError(f"{self._where}: {printable(reason)}") from None
                    problems.append(reason)
                    break
                skipped[line] = f"line {line + 1}: {reason}"
        return families, [*skipped.values(), *problems]

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
        counter = family.type == "counter" or (
            family.type in ("untyped", "unknown")
            and any(fnmatchcase(family.name, pattern) for pattern in self._config.counters)
        )
        if counter:
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
        _remember(totals, (total_name, labels), value)
        if not self._config.rates:
            yield total_name, labels, float(value)
            return
        increase = self._increase(total_name, labels, value)
        if increase is not None and elapsed:
            yield name, labels, increase / elapsed

    def _increase(self, name: str, labels: LabelKey, value: float) -> float | None:
        """The increase since the last scrape; a counter that went down was reset. None
        without a finite total now and at the last scrape (NaN or ±Inf is no value: it
        is no reset either, and the next increase is counted from the next good total)."""
        before = self._previous.get((name, labels))
        if before is None or not math.isfinite(value):
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
                _remember(totals, (f"{name}_bucket", _key(s.labels)), s.value)
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
                    _remember(totals, (s.name, key), s.value)
                    amount = (
                        s.value if not self._config.rates else self._increase(s.name, key, s.value)
                    )
                    if amount is not None:
                        parts.setdefault(key, {})[part] = float(amount)
        for key, found in parts.items():
            if found.get("count"):
                yield f"{name}_average", key, found["sum"] / found["count"]


def _remember(totals: Totals, key: tuple[str, LabelKey], value: float) -> None:
    """Keep a counter's total for the next scrape's increase, unless it is no number."""
    if math.isfinite(value):
        totals[key] = value


def target_labels(config: PrometheusScrapeSourceConfig) -> dict[str, str]:
    """The labels a scrape adds to every series of its target, as Prometheus does: ``job``
    (the source's name) and ``instance`` (the URL's ``host:port``); none with
    ``target_labels = false``."""
    if not config.target_labels:
        return {}
    url = httpx.URL(config.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return {"job": config.name, "instance": f"{host}:{port}"}


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


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# the sample names a TYPE line lets a family have (as prometheus_client's parser)
_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}
# a histogram has about a dozen buckets for the four series anomon makes of it
_BUCKETS_PER_SERIES = 4


class _Feed:
    """The exposition text, line by line, as the parser should see it.

    Mirrors the parser's idea of which family each sample line belongs to, so that the
    lines of unwanted metrics (by name pattern or ``match_labels``) are never parsed;
    drops a sample line carrying a number no float can hold (named in ``problems``); and
    stops once more than ``max_series`` series were read (histogram buckets count a
    quarter each): a page past the cardinality guard costs no more than the guard allows.
    """

    def __init__(
        self,
        config: PrometheusScrapeSourceConfig,
        problems: list[str],
        skip: Collection[int] = (),
    ) -> None:
        self._config = config
        self._problems = problems
        self._skip = skip
        self.last: int | None = None  # the index of the last line handed to the parser
        self._labels = [_label_pattern(k, v) for k, v in config.match_labels.items()]
        self._family, self._type, self._allowed = "", "untyped", frozenset[str]()
        self._series = self._buckets = 0

    def lines(self, text: str) -> Iterator[str]:
        """Yield the lines to parse, but those in ``skip``; stop (and say so) past the guard."""
        for index, line in enumerate(_split(text)):
            if index in self._skip:
                continue
            self.last = index
            stripped = line.strip()
            if stripped.startswith("#"):
                self._comment(stripped)
                yield line
            elif stripped and self._wanted(stripped):
                if self._series + self._buckets // _BUCKETS_PER_SERIES > self._config.max_series:
                    self._problems.append(
                        f"stopped reading the page after {self._config.max_series} series "
                        f"(max_series={self._config.max_series}): the rest was not read"
                    )
                    return
                yield line

    def _comment(self, line: str) -> None:
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
            return
        name = parts[2]
        if parts[1] == "HELP" and name != self._family:
            self._family, self._type, self._allowed = name, "untyped", frozenset([name])
        elif parts[1] == "TYPE" and len(parts) == 4:
            self._family, self._type = name, parts[3]
            suffixes = _SUFFIXES.get(self._type, ("",))
            self._allowed = frozenset(name + suffix for suffix in suffixes)

    def _wanted(self, line: str) -> bool:
        """Whether to parse this sample line; counts it when so."""
        found = _NAME.match(line)
        if found is None:  # a quoted UTF-8 name: let the parser judge it
            self._series += 1
            return True
        name = found.group()
        family, kind = (self._family, self._type) if name in self._allowed else (name, "untyped")
        if kind == "counter" and family.endswith("_total"):
            family = family[: -len("_total")]
        patterns = self._config.metrics
        if patterns and not any(fnmatchcase(family, pattern) for pattern in patterns):
            return False
        if not all(pattern.search(line) for pattern in self._labels):
            return False
        if not self._numbers_fit(line, found.end()):
            return False
        if name not in self._allowed:  # the parser starts a family of its own
            self._family, self._type, self._allowed = "", "untyped", frozenset()
        if kind == "histogram" and name == f"{family}_bucket":
            self._buckets += 1
        else:
            self._series += 1
        return True

    def _numbers_fit(self, line: str, name_end: int) -> bool:
        """Whether the value and timestamp are short enough to be numbers a float holds
        (the parser turns a 400-digit integer into an int that overflows later)."""
        if len(line) <= MAX_NUMBER_CHARS:
            return True
        tail = line.rpartition("}")[2] if "}" in line else line[name_end:]
        longest = max((len(token) for token in tail.split()), default=0)
        if longest <= MAX_NUMBER_CHARS:
            return True
        self._problems.append(
            f"{line[:name_end][:80]}: not a representable number ({longest} characters)"
        )
        return False


def _split(text: str) -> Iterator[str]:
    """The lines of ``text``, one at a time (StringIO would copy it at 4 bytes a char)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        yield text[start:end]
        start = end


def _label_pattern(name: str, value: str) -> re.Pattern[str]:
    """What a sample line with label ``name`` = ``value`` must contain (as the exposition
    format escapes it); lines without it cannot match."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return re.compile(rf'(?:^|[{{,\s]){re.escape(name)}\s*=\s*"{re.escape(escaped)}"')
