"""Plain data that flows between the packages: samples, series identities, anomalies,
incident changes and outbox entries."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

Labels = Mapping[str, str]


class SeriesKind(StrEnum):
    """What a series measures; the detectors pick their defaults by it."""

    QUALITY = "quality"
    LATENCY = "latency"
    RESOURCE = "resource"
    CUSTOM = "custom"
    HISTOGRAM = "histogram"  # rows per bin of a window: stored for SQL, never scored


class IncidentStatus(StrEnum):
    """Where an incident is: firing until its series are normal again, then resolved
    (a resolved incident can fire again: it is reopened)."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How loud an incident is: critical from a score of 95 on (a one-in-ten-million
    deviation: page someone), else warning."""

    WARNING = "warning"
    CRITICAL = "critical"


class Feedback(StrEnum):
    """People's verdict on an incident (``anomon incidents feedback``)."""

    CONFIRMED = "confirmed"
    FALSE_ALARM = "false_alarm"
    EXPECTED = "expected"


class Event(StrEnum):
    """What a notification tells a receiver about its incident."""

    FIRING = "firing"
    RESOLVED = "resolved"
    REPEAT = "repeat"  # still firing, told again after repeat_interval


class NotificationStatus(StrEnum):
    """Where a notification is in the outbox: pending (due at ``next_attempt_at``),
    sending (claimed by a delivery run), then sent, dead (undeliverable, with its last
    error) or silenced (recorded, not sent)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    SILENCED = "silenced"


def sql_in(column: str, values: type[StrEnum]) -> str:
    """A CHECK constraint's text: ``column`` holds one of the enum's values."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def canonical_labels(labels: Labels) -> str:
    """Return the one JSON text that stands for a label set: keys sorted, no spaces."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of a series: its metric name and canonical label set."""

    metric: str
    labels: str

    @classmethod
    def of(cls, metric: str, labels: Labels) -> SeriesKey:
        """Build the key of ``metric`` with ``labels`` (any order)."""
        return cls(metric, canonical_labels(labels))


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What is stored about a series besides its key."""

    source: str
    entity: str
    kind: SeriesKind = SeriesKind.CUSTOM
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One observed value of one series.

    ``ts`` is whole seconds since the Unix epoch, UTC. ``value`` is finite.
    """

    key: SeriesKey
    info: SeriesInfo
    ts: int
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"sample value must be finite, got: {self.value!r}")


# What a series name and its labels may hold: the same rules on every database, checked
# where samples enter (a bad series is refused by name, the rest of its collection kept).
MAX_METRIC_CHARS = 200
MAX_LABEL_NAME_CHARS = 100
MAX_LABEL_VALUE_CHARS = 1000
MAX_LABELS = 32
MAX_KEY_BYTES = 2400  # metric + canonical labels, UTF-8: inside PostgreSQL's btree row limit
# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), the line and paragraph separators
# and the bidirectional marks, embeddings, overrides and isolates: none is ever part of a
# real name, and each can forge a line, drive a terminal (ESC, OSC) or reorder what a
# reader sees (Trojan Source).
CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Return ``text`` with every control character shown as a visible escape.

    ``\\n``, ``\\r`` and ``\\t`` by name, other C0, DEL and C1 characters as ``\\xHH``,
    line / paragraph separators and bidi controls as ``\\uHHHH``. The result holds no line
    break and nothing a terminal interprets. Backslashes are left alone (they are printable).
    """
    return CONTROLS.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text_problem(text: str, what: str, limit: int) -> str | None:
    if not text:
        return f"empty {what}"
    if len(text) > limit:
        return f"{what} longer than {limit} characters ({len(text)})"
    if CONTROLS.search(text):
        return f"{what} holds a control character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (a lone surrogate)"
    return None


def series_key_problem(key: SeriesKey) -> str | None:
    """Return why ``key`` cannot be stored (one short phrase), or None when it can.

    A metric name is 1 to 200 characters; at most 32 labels, names of 1 to 100 and
    values of up to 1,000 characters; no control, line-separator or bidi character
    anywhere, no lone surrogate; metric and labels together at most 2,400 bytes of
    UTF-8. The limits keep every key inside what both databases index.
    """
    problem = _text_problem(key.metric, "metric name", MAX_METRIC_CHARS)
    if problem:
        return problem
    try:
        labels = json.loads(key.labels)
    except ValueError:
        return "labels are not a JSON object"
    if not isinstance(labels, dict):
        return "labels are not a JSON object"
    if len(labels) > MAX_LABELS:
        return f"more than {MAX_LABELS} labels ({len(labels)})"
    for name, value in labels.items():
        if not isinstance(value, str):
            return f"label {name[:40]!r} is not text"
        problem = _text_problem(name, "label name", MAX_LABEL_NAME_CHARS) or (
            _text_problem(value, f"label {name[:40]!r}", MAX_LABEL_VALUE_CHARS) if value else None
        )
        if problem:
            return problem
    size = len(key.metric.encode("utf-8")) + len(key.labels.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        return f"metric and labels longer than {MAX_KEY_BYTES} bytes ({size})"
    return None


def describe_key(key: SeriesKey, limit: int = 80) -> str:
    """``metric{labels}`` for a message: control characters escaped, cut at ``limit``."""
    text = key.metric if key.labels == "{}" else f"{key.metric}{key.labels}"
    shown = escape_controls(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class SampleWindow:
    """The sample times accepted, in epoch seconds: ``[now - max_age, now + max_ahead]``.

    A time outside it is a source's bug (milliseconds read as seconds, a zero for
    "unknown", a clock years off) and is refused where samples enter; stored, it would
    sit beyond every watermark or outside what a datetime can hold.
    """

    earliest: int
    latest: int

    def problem(self, ts: int) -> str | None:
        """Why ``ts`` is refused, or None."""
        if ts > self.latest:
            in_ms = 1000 * self.earliest <= ts <= 1000 * self.latest
            hint = " (milliseconds instead of seconds?)" if in_ms else ""
            return f"time {ts} is {_span(ts - self.latest)} past the accepted window{hint}"
        if ts < self.earliest:
            return f"time {ts} is {_span(self.earliest - ts)} before the accepted window"
        return None


def _span(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds}s"


def screen_samples(
    samples: Sequence[Sample], window: SampleWindow | None, checked: Container[SeriesKey]
) -> tuple[list[Sample], list[str]]:
    """Split ``samples`` into those that may be stored and one problem line per refused
    series (``metric{labels}: why``), in order of first appearance.

    ``checked`` holds keys already known to be valid (stored before), which skip the
    key rules; ``window`` None accepts any time.
    """
    verdict: dict[SeriesKey, str | None] = {}
    kept: list[Sample] = []
    problems: dict[SeriesKey, str] = {}
    for sample in samples:
        key = sample.key
        if key not in verdict:
            verdict[key] = None if key in checked else series_key_problem(key)
        problem = verdict[key]
        if problem is None and window is not None:
            problem = window.problem(sample.ts)
        if problem is None:
            kept.append(sample)
        elif key not in problems:
            problems[key] = f"{describe_key(key)}: {problem}"
    return kept, list(problems.values())


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """One anomalous point as the store keeps it (see the ``anomalies`` table)."""

    series_id: int
    ts: int
    value: float
    expected: float | None
    score: float
    detector_scores: Mapping[str, float]
    direction: str
    severity: str
    incident: int | None = None  # index into the cycle's IncidentWrite list


@dataclass(frozen=True, slots=True)
class DeployRecord:
    """A deploy: ``model`` at ``version`` went live at ``at`` (on ``entity``; "" for the
    model wherever it runs), or, with no model, a change of the entity itself.
    ``origin`` is ``cli`` (``anomon deploy``) or ``label`` (detection saw a model's
    ``version`` label change)."""

    at: datetime
    model: str
    version: str
    entity: str = ""
    note: str = ""
    origin: str = "cli"
    id: int | None = None

    def describe(self) -> str:
        """``churn v2 on srv-1`` / ``churn v2`` / ``srv-1 release-7``, as people read it."""
        what = " ".join(part for part in (self.model or self.entity, self.version) if part)
        return f"{what} on {self.entity}" if self.model and self.entity else what

    def covers(self, entity: str, labels: Mapping[str, str]) -> bool:
        """Whether this deploy is about an incident of ``entity`` with ``labels``: the
        same model (and entity, when the deploy names one), or, for a deploy of no
        model, the same entity."""
        if not self.model:
            return self.entity == entity
        return self.model == labels.get("model") and self.entity in ("", entity)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification to enqueue: ``event`` about an incident to ``receiver``.

    ``key`` is the idempotency key (stable: the same change gives the same key, so
    writing it twice stores it once). It is sent no sooner than ``not_before``, nor
    sooner than ``group_interval`` after the last notification of its group was sent.
    ``route`` is the path of the route that chose it (what its mute times name) and
    ``group_labels`` the canonical JSON of its group's ``group_by`` labels.
    """

    receiver: str
    group_key: str
    event: Event
    key: str
    not_before: datetime
    group_interval: timedelta = timedelta(0)
    route: str = ""
    group_labels: str = "{}"


@dataclass(frozen=True, slots=True)
class IncidentWrite:
    """A new incident (``incident_id`` None) or a change to a stored one.

    A change is applied only if the stored incident still has ``version`` (one writer
    wins); its ``outbox`` entries are written in the same transaction, and only then.
    """

    series_id: int | None  # None: an incident of no stored series (tests, imports)
    entity: str
    metric: str
    labels: str  # canonical JSON of the routing labels
    status: IncidentStatus
    severity: Severity
    peak_score: float
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    silenced: bool = False
    reopened: bool = False  # fires again: a past acknowledgement no longer holds
    incident_id: int | None = None
    version: int | None = None
    outbox: tuple[OutboxEntry, ...] = field(default=())
    # what people are told in the log: opened, reopened, escalated, resolved (None: a
    # change of no note, such as a later last_seen_at)
    change: str | None = None

    def describe(self) -> str:
        """One log line's worth: ``incident 7 resolved: latency_p99_ms on churn (…)``."""
        which = "incident" if self.incident_id is None else f"incident {self.incident_id}"
        own = {
            key: value
            for key, value in json.loads(self.labels).items()
            if key not in ("metric", "entity", "source", "kind", "severity")
        }
        shown = "{" + ", ".join(f"{k}={v}" for k, v in sorted(own.items())) + "}" if own else ""
        return (
            f"{which} {self.change}: {self.metric}{shown} on {self.entity}, "
            f"{self.severity}, peak score {self.peak_score:.0f}"
            + (", silenced" if self.silenced else "")
            + (
                ", and resolved"
                if self.change == "opened" and self.status == IncidentStatus.RESOLVED
                else ""
            )
        )


@dataclass(frozen=True, slots=True)
class Contributor:
    """A series behind an incident: its anomalies are linked to it. ``value`` and
    ``expected`` are the series' latest (as a message is written), ``peak_score`` its
    strongest anomaly in the incident."""

    series_id: int
    metric: str
    labels: dict[str, str]
    peak_score: float
    value: float | None
    expected: float | None


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident: the one plain type every layer passes around (the store converts an
    ``incidents`` row once, :func:`anomon.store.stored_incident`).

    ``labels`` are the routing labels it was opened with. ``value`` / ``expected`` are
    its leading series' latest value and what was expected of it (None if unknown or
    not read: tracking needs none), ``value_at`` when that value was measured;
    ``direction`` and ``detector_scores`` are its strongest anomaly's; ``contributors``
    the series behind it, strongest first (an entity's incident has several).
    """

    id: int
    status: IncidentStatus
    severity: Severity
    peak_score: float
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    version: int = 1
    silenced: bool = False
    series_id: int | None = None
    metric: str = ""
    entity: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    acknowledged_at: datetime | None = None
    feedback: Feedback | None = None
    value: float | None = None
    expected: float | None = None
    direction: str | None = None
    detector_scores: Mapping[str, float] = field(default_factory=dict)
    value_at: datetime | None = None
    contributors: tuple[Contributor, ...] = ()

    @property
    def acknowledged(self) -> bool:
        """Whether someone acknowledged it (it is no longer repeated)."""
        return self.acknowledged_at is not None


_NOT_LABEL_CHARACTER = re.compile(r"[^A-Za-z0-9_]")


def prometheus_label_name(name: str) -> str:
    """``name`` made a valid Prometheus label name: other characters become ``_`` and a
    leading digit gets a ``_`` before it (``a-b`` -> ``a_b``, ``9z`` -> ``_9z``)."""
    valid = _NOT_LABEL_CHARACTER.sub("_", name)
    return valid if valid and not valid[0].isdigit() else f"_{valid}"


# the metric of an absent-data incident about a source whose collections keep failing
SOURCE_DOWN = "source_down"
# ... and about a series that stopped arriving while its source collects
SERIES_ABSENT = "series_absent"
