"""The config file: frozen pydantic models, loading, ``${ENV}`` interpolation and validation.

One TOML file configures anomon. :func:`load_config` reads it, substitutes ``${VAR}``
from the environment, applies ``ANOMON_DATABASE_URL``, validates everything strictly
(unknown keys are errors) and raises :class:`~anomon.errors.ConfigError` listing every
problem as ``<field path>: <what was expected, what was found>``. The defaults live here
and are mirrored, key by key, in ``config/anomon.example.toml``.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import re
import shutil
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from anomon.errors import ConfigError
from anomon.model import CONTROLS, SampleWindow, escape_controls
from anomon.timeutil import format_duration, parse_duration, to_epoch

DATABASE_URL_ENV = "ANOMON_DATABASE_URL"
DEFAULT_CONFIG_PATH = Path("config/anomon.toml")


def _duration(value: object) -> object:
    """Read a duration string (``15s``); leave timedeltas as they are; refuse the rest."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration such as 15s, 5m or 7d (a string), got: {value!r}")


def _positive(span: timedelta) -> timedelta:
    if span <= timedelta(0):
        raise ValueError(f"must be positive, got: {format_duration(span)}")
    return span


def _at_least_one_second(span: timedelta) -> timedelta:
    # samples are stored per whole second; a faster interval would collide with itself
    if span < timedelta(seconds=1):
        raise ValueError(f"must be at least 1s, got: {format_duration(span)}")
    return span


Duration = Annotated[timedelta, BeforeValidator(_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _one_line(text: str) -> str:
    # it names series and goes into every message: an email subject, a Slack line
    if CONTROLS.search(text):
        raise ValueError(
            f"must hold no control, line-break or bidi character, got: '{escape_controls(text)}'"
        )
    return text


LabelValue = Annotated[str, AfterValidator(_one_line)]


class Section(BaseModel):
    """Base of every config model: immutable, unknown keys rejected, numbers strict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        # pydantic would read the text "80" as 80, "yes" or 1 as true and "1_000" as 1000.
        # A number or a switch is written bare in TOML; only a ${ENV} value may be text.
        # A refused value is swapped for a _Refused, which the field's own validation then
        # rejects under its own path, so every other problem is still reported.
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in checked:
                checked[key] = _plain_scalar(checked[key], field.annotation)
        return checked


class _Refused:
    """A value the strict scalar rule refused, standing in its place (see _explain)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return "<refused>"


class _FromEnv(str):
    """Text that came (at least partly) from a ``${VAR}`` reference: the environment only
    holds text, so such a value may stand for a number or a switch."""

    __slots__ = ()


# numbers given as text (from ${ENV}) are plain ASCII decimals, as TOML writes them
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+")
_REAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_SWITCH_TEXT = {"true": True, "false": False}


def _plain_scalar(value: object, annotation: Any) -> object:
    """Return ``value``, or a :class:`_Refused` in its place when it does not suit a
    numeric or boolean ``annotation`` strictly.

    A number or a switch must be a TOML number or boolean of that kind (``threshold =
    "80"``, ``per_cpu = "yes"``, ``per_cpu = 1`` and ``max_series = true`` are refused);
    text from ``${VAR}`` may stand for one when it is a plain decimal (not ``"1_000"``,
    ``" 7"``, ``"0x10"``, ``"nan"``) or ``true`` / ``false``. Non-finite floats are
    refused. Lists are checked item by item; other annotations pass.
    """
    kind = _scalar_kind(annotation)
    item = _list_item(annotation)
    if kind is None and item is not None and isinstance(value, list):
        return [_plain_scalar(each, item) for each in value]
    if kind is None:
        return value
    if kind is bool:
        return _plain_switch(value)
    what = "a whole number such as 1000" if kind is int else "a number such as 0.5"
    if isinstance(value, _FromEnv):
        if not (_WHOLE_TEXT if kind is int else _REAL_TEXT).fullmatch(value):
            return _Refused(f"expected {what} (plain digits), got: {value!r}")
    elif isinstance(value, str):
        return _Refused(f"expected {what}, got the text {value!r} (write numbers without quotes)")
    elif isinstance(value, bool):
        return _Refused(f"expected {what}, got: {str(value).lower()}")
    elif isinstance(value, float) and not math.isfinite(value):
        return _Refused(f"expected a finite number, got: {value!r}")
    return value


def _plain_switch(value: object) -> object:
    """A boolean field's value: a TOML boolean, or ``true`` / ``false`` from ``${VAR}``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, _FromEnv) and value.strip().lower() in _SWITCH_TEXT:
        return _SWITCH_TEXT[value.strip().lower()]
    shown = repr(value) if isinstance(value, str) else str(value)
    return _Refused(f"expected true or false, got: {shown}")


def _scalar_kind(annotation: Any) -> type | None:
    """``int``, ``float`` or ``bool`` when ``annotation`` is one (optionally None, or
    Annotated)."""
    if get_origin(annotation) is Annotated:
        return _scalar_kind(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = {_scalar_kind(a) for a in get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    return annotation if annotation in (int, float, bool) else None


def _list_item(annotation: Any) -> Any:
    """The item annotation of ``list[X]`` (through Annotated), else None."""
    if get_origin(annotation) is Annotated:
        return _list_item(get_args(annotation)[0])
    return get_args(annotation)[0] if get_origin(annotation) is list else None


_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/?#]*@)?(?P<host>[^\s/?#]*)"
    r"(?P<path>[^\s?#]*)(?P<query>\?[^\s#]*)?(?P<fragment>#\S*)?"
)


def safe_url(url: str, *, keep_path: bool = True) -> str:
    """Return ``url`` fit for a message or a log line: credentials and query as ``***``.

    ``user:pass@`` becomes ``***@`` and ``?token=...`` becomes ``?***``; with
    ``keep_path=False`` the path goes too (``/…``: a Slack webhook's path is its secret).
    Text that does not start with ``scheme://`` comes back as ``(not a URL)``.
    """
    parts = _URL.match(url)
    if parts is None:
        return "(not a URL)"
    path = parts["path"] if keep_path or parts["path"] in ("", "/") else "/…"
    return (
        parts["scheme"]
        + ("***@" if parts["user"] else "")
        + parts["host"]
        + path
        + ("?***" if parts["query"] or parts["fragment"] else "")
    )


def _port_problem(url: str) -> str | None:
    """Say what is wrong with the port of ``scheme://[user@]host[:port]/...``, if anything."""
    authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    _, at, host = authority.partition("@")  # at the first @, as SQLAlchemy splits it
    host = host if at else authority
    _, colon, port = (host.partition("]")[2] if host.startswith("[") else host).partition(":")
    if not colon or not port or (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
        return None
    # "http://user:password/x" puts the password where the port goes: show digits only
    shown = repr(port[:12]) if re.fullmatch(r"[0-9]+", port) else "text that is not a number"
    return f"expected a port 1 to 65535 after the host, got: {shown}"


class DatabaseConfig(Section):
    """``[database]``: where anomon keeps its data."""

    url: str = "sqlite:///anomon.db"
    busy_timeout: PositiveDuration = timedelta(seconds=5)
    migrate_on_start: bool = False
    # PostgreSQL: the longest one statement of the daemon may run (a lock held elsewhere)
    statement_timeout: PositiveDuration = timedelta(minutes=5)

    @field_validator("url")
    @classmethod
    def _known_dialect(cls, url: str) -> str:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        dialect = scheme.split("+", 1)[0]
        if dialect not in ("sqlite", "postgresql"):
            shown = f"one starting with: {scheme!r}" if scheme else "text without a scheme"
            raise ValueError(
                f"expected a SQLAlchemy URL starting with sqlite:/// or postgresql://, got {shown}"
            )
        if problem := _port_problem(url):
            raise ValueError(problem)
        if dialect == "sqlite":
            path, _, query = url.split("://", 1)[1].partition("?")
            # each connection of the daemon would have a database of its own, lost at exit
            if path in ("", "/", "/:memory:") or "mode=memory" in query:
                raise ValueError(
                    "expected the path of a SQLite file, got an in-memory database: "
                    "each connection would see a database of its own, and it is lost at exit"
                )
        return url


def _listen(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or _port_problem(f"tcp://{address}") or not port:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got: {address!r}")
    return address


def _external_url(url: str) -> str:
    return _http_url(url).rstrip("/") if url else url


class DaemonConfig(Section):
    """``[daemon]``: how the long-running process behaves."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout: PositiveDuration = timedelta(seconds=30)
    metrics: bool = True
    metrics_listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"
    metrics_max_series: Annotated[int, Field(ge=0)] = 1000
    # /healthz: a part is stale after health_intervals of its intervals plus health_grace
    health_intervals: Annotated[int, Field(ge=1)] = 3
    health_grace: PositiveDuration = timedelta(minutes=1)
    # collections run one thread per source, at most this many at once
    collection_workers: Annotated[int, Field(ge=1, le=256)] = 16
    # how often this daemon renews its row in the workers table: its lease; with
    # several daemons on one PostgreSQL, one that misses 4 heartbeats is gone and the
    # others take its share
    heartbeat: Annotated[PositiveDuration, AfterValidator(_at_least_one_second)] = timedelta(
        seconds=15
    )
    # where people reach this anomon (http[s]://host[:port][/path]); notifications link
    # to it (Alertmanager's externalURL); empty: no links
    external_url: Annotated[str, AfterValidator(_external_url)] = ""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _web_listen(address: str) -> str:
    return address if address == "auto" else _listen(address)


class WebConfig(Section):
    """``[web]``: the console the daemon serves (incidents, series, sources)."""

    enabled: bool = True
    # HOST:PORT; "auto": beside /metrics, on its host and the next port (127.0.0.1:9465)
    listen: Annotated[str, AfterValidator(_web_listen)] = "auto"
    # who may look: off loopback one of them is required. Give them from the environment
    # ("${ANOMON_WEB_PASSWORD}"); the console keeps only a salted hash of each.
    username: Annotated[str, Field(min_length=1, pattern=r"^[^:\s]+$")] = "anomon"
    password: str | None = None  # HTTP basic authentication, as username
    token: str | None = None  # "Authorization: Bearer <token>", for scripts
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50
    # true: no acknowledge / resolve / feedback / silence forms, and every POST refused
    read_only: bool = False

    def address(self, daemon: DaemonConfig) -> str:
        """The HOST:PORT it serves on (``auto`` resolved against ``[daemon]``)."""
        if self.listen != "auto":
            return self.listen
        host, _, port = daemon.metrics_listen.rpartition(":")
        return f"{host}:{int(port) + 1}" if daemon.metrics else "127.0.0.1:9465"

    @model_validator(mode="after")
    def _authenticated_off_loopback(self) -> WebConfig:
        host = self.listen.rpartition(":")[0]
        open_to_others = self.enabled and self.listen != "auto" and host not in LOOPBACK_HOSTS
        if open_to_others and not (self.password or self.token):
            raise ValueError(
                f"listen {self.listen} is reachable from other hosts: set password or "
                'token (from the environment, e.g. "${ANOMON_WEB_PASSWORD}"), or listen '
                "on 127.0.0.1"
            )
        return self


class SamplesConfig(Section):
    """``[samples]``: which sample times are accepted where samples enter (collections
    and backfills); a sample outside the window is refused and named in the run's error."""

    max_age: PositiveDuration = timedelta(days=400)
    max_ahead: PositiveDuration = timedelta(minutes=10)

    def window(self, now: datetime, *, reach_back: timedelta = timedelta(0)) -> SampleWindow:
        """The accepted window around ``now``; ``reach_back`` widens it into the past (a
        backfill of a longer range)."""
        seconds = to_epoch(now)
        age = max(self.max_age, reach_back)
        return SampleWindow(
            seconds - int(age.total_seconds()), seconds + int(self.max_ahead.total_seconds())
        )


class RetentionConfig(Section):
    """``[retention]``: how long stored rows are kept (deleted in batches, hourly)."""

    enabled: bool = True
    interval: PositiveDuration = timedelta(hours=1)
    samples: PositiveDuration = timedelta(days=90)
    runs: PositiveDuration = timedelta(days=30)
    anomalies: PositiveDuration = timedelta(days=365)
    incidents: PositiveDuration = timedelta(days=365)
    batch_size: Annotated[int, Field(ge=100)] = 50_000


Direction = Literal["up", "down", "both"]
Season = Literal["daily", "weekly"]


class ForestConfig(Section):
    """``[detection.forest]``: the IsolationForest over window features."""

    enabled: bool = True
    n_estimators: Annotated[int, Field(ge=1, le=1000)] = 25
    max_samples: Annotated[int, Field(ge=16)] = 256
    train_window: Annotated[int, Field(ge=100)] = 4000
    min_train: Annotated[int, Field(ge=50)] = 1000
    refit_every: Annotated[int, Field(ge=50)] = 50000
    random_state: int = 0


class AlarmConfig(Section):
    """``[detection.alarm]``: when abnormal rows open an incident and normal rows resolve it."""

    open_after: Annotated[int, Field(ge=1)] = 2
    open_within: Annotated[int, Field(ge=1)] = 3
    # one row scoring this much opens at once, whatever open_after says (off: 100 and
    # open_after = 1 to open on any abnormal row)
    open_at_once: Annotated[float, Field(gt=0, le=100)] = 95.0
    resolve_after: Annotated[int, Field(ge=1)] = 5
    resolve_ratio: Annotated[float, Field(gt=0, le=1)] = 0.75
    cooldown: Annotated[int, Field(ge=0)] = 20

    @model_validator(mode="after")
    def _reachable(self) -> AlarmConfig:
        if self.open_after > self.open_within:
            raise ValueError(
                "open_after must be at most open_within, got: "
                f"{self.open_after} > {self.open_within}"
            )
        return self


class Limit(Section):
    """``[[detection.limits]]``: a fixed bound people already know for a metric."""

    metric: Annotated[str, Field(min_length=1)]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError(f"limit for {self.metric!r} needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"limit for {self.metric!r}: min {self.min} is above max {self.max}")
        return self


AnnotationName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]


SETTINGS = (
    "threshold",
    "direction",
    "min_effect_abs",
    "min_effect_rel",
    "open_after",
    "resolve_after",
    "absent",
)


class Override(Section):
    """``[[detection.overrides]]``: settings for the series it matches, by metric name
    pattern (shell-style) and exact label values. For each setting, the first override
    that matches and sets it wins; an annotation likewise, name by name."""

    metric: Annotated[str, Field(min_length=1)] = "*"
    labels: dict[LabelName, str] = Field(default_factory=dict)
    # the score (0-100) this series' anomalies need; its detectors are calibrated alike
    threshold: Annotated[float, Field(ge=0, le=100)] | None = None
    direction: Literal["up", "down", "both"] | None = None
    # an anomaly must move the value at least this far from what was expected
    min_effect_abs: Annotated[float, Field(ge=0)] | None = None
    min_effect_rel: Annotated[float, Field(ge=0)] | None = None
    open_after: Annotated[int, Field(ge=1)] | None = None
    resolve_after: Annotated[int, Field(ge=1)] | None = None
    # false: the series may stop arriving without a series_absent incident (a
    # per-handler latency with no traffic, a label value that comes and goes)
    absent: bool | None = None
    # free text carried by every notification: summary, description, runbook_url, ...
    annotations: dict[AnnotationName, Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=dict
    )

    def matches(self, metric: str, labels: Mapping[str, str]) -> bool:
        """Whether this override is for the series ``metric`` with ``labels``."""
        if not fnmatchcase(metric, self.metric):
            return False
        return all(labels.get(name) == value for name, value in self.labels.items())


@dataclasses.dataclass(frozen=True)
class SeriesSettings:
    """What the overrides set for one series (None: the ``[detection]`` default)."""

    threshold: float
    direction: Literal["up", "down", "both"] | None = None
    min_effect_abs: float = 0.0
    min_effect_rel: float = 0.0
    open_after: int | None = None
    resolve_after: int | None = None
    absent: bool = True
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


class AbsentConfig(Section):
    """``[detection.absent]``: absent data is an event of its own."""

    enabled: bool = True
    # a source whose collections fail this long (and at least 3 of its intervals) is down
    source_down_after: PositiveDuration = timedelta(minutes=5)
    # a series with no sample this long (and 3 of its source's intervals) while its source
    # collects is absent; "0s": not watched
    series_absent_after: Duration = timedelta(minutes=10)
    # a series with no sample this long before its source's latest is gone for good: its
    # series_absent incident resolves and detection lets it go (it comes back when its
    # samples do); "0s": never
    series_retire_after: Duration = timedelta(days=1)

    @model_validator(mode="after")
    def _retired_after_absent(self) -> AbsentConfig:
        retire, absent = self.series_retire_after, self.series_absent_after
        if retire and retire <= absent:
            raise ValueError(
                'series_retire_after must be longer than series_absent_after (or "0s": '
                f"never), got: {format_duration(retire)} <= {format_duration(absent)}"
            )
        return self


class DetectionConfig(Section):
    """``[detection]``: how every series is scored (one configuration for all series)."""

    enabled: bool = True
    interval: PositiveDuration = timedelta(minutes=1)
    warmup_rows: Annotated[int, Field(ge=0)] = 4000
    baseline_window: Annotated[int, Field(ge=10)] = 2000
    min_history: Annotated[int, Field(ge=5)] = 50
    seasonality: list[Season] = Field(default_factory=lambda: list[Season](["daily"]))
    seasonal_periods: Annotated[int, Field(ge=1, le=12)] = 3
    calibration_window: Annotated[int, Field(ge=50)] = 40000
    min_deviation_abs: Annotated[float, Field(ge=0)] = 0.0
    min_deviation_rel: Annotated[float, Field(ge=0)] = 0.0
    # one Literal, not a union with Direction: an error then lists all four choices once
    direction: Literal["up", "down", "both", "auto"] = "auto"
    ensemble: Literal["max", "mean"] = "max"
    threshold: Annotated[float, Field(gt=0, le=100)] = 80.0
    damping: Annotated[int, Field(ge=0)] = 100
    damping_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    forest: ForestConfig = Field(default_factory=ForestConfig)
    alarm: AlarmConfig = Field(default_factory=AlarmConfig)
    absent: AbsentConfig = Field(default_factory=AbsentConfig)
    limits: list[Limit] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)

    def settings_for(self, metric: str, labels: Mapping[str, str]) -> SeriesSettings:
        """The settings of one series: each from the first override that matches it and
        sets it, else the default; annotations merged name by name the same way."""
        found: dict[str, Any] = {}
        annotations: dict[str, str] = {}
        for override in self.overrides:
            if not override.matches(metric, labels):
                continue
            for name in SETTINGS:
                value = getattr(override, name)
                if value is not None and name not in found:
                    found[name] = value
            for name, text in override.annotations.items():
                annotations.setdefault(name, text)
        found.setdefault("threshold", self.threshold)
        return SeriesSettings(**found, annotations=annotations)

    def limit_for(self, metric: str) -> Limit | None:
        """Return the first limit whose ``metric`` pattern (shell-style) matches ``metric``."""
        return next((limit for limit in self.limits if fnmatchcase(metric, limit.metric)), None)


class SourceBase(Section):
    """Keys every source shares."""

    if TYPE_CHECKING:  # each kind's model declares its own Literal
        kind: str

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    interval: Annotated[PositiveDuration, AfterValidator(_at_least_one_second)] = timedelta(
        seconds=15
    )
    timeout: PositiveDuration = timedelta(seconds=10)
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict)
    entity: LabelValue | None = None
    enabled: bool = True
    max_series: Annotated[int, Field(ge=1)] = 10_000

    def may_go_quiet(self) -> frozenset[str] | None:
        """The metrics of this source that may stop arriving while it collects (the
        absent-data watch leaves them be): none by default, as a kind that stamps every
        series at every collection; None for all of them (rows that carry their own
        times, where a quiet hour is no absence)."""
        return frozenset()


SOURCE_MODELS: dict[str, type[SourceBase]] = {}
"""The config model of every source kind, by its ``kind`` name (filled by :func:`source_kind`)."""

SourceModel = TypeVar("SourceModel", bound=SourceBase)


def source_kind(model: type[SourceModel]) -> type[SourceModel]:
    """Register a source config model under its ``kind`` literal.

    The ``[[sources]]`` union (:data:`SourceConfig`) is built from the registered
    models; the source class that collects for a kind names its model in
    :class:`anomon.sources.Source`. Raises TypeError on a kind registered twice.
    """
    (kind,) = get_args(model.model_fields["kind"].annotation)
    if kind in SOURCE_MODELS:
        raise TypeError(f"source kind {kind!r} is registered twice")
    SOURCE_MODELS[kind] = model
    return model


@source_kind
class SystemSourceConfig(SourceBase):
    """``kind = "system"``: this host's CPU, memory, swap, disks, network and load (psutil)."""

    kind: Literal["system"]
    per_cpu: bool = False
    disks: list[str] = Field(default_factory=lambda: ["/"])
    disk_io: bool = True
    network: bool = True
    load: bool = True
    process_name: str | None = None
    pid_file: str | None = None


def _headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        bad = re.search(r"[^!#$%&'*+.^_`|~0-9A-Za-z-]", name)
        if bad or not name:  # shown up to its first bad character: a whole header given
            # as a name ("Authorization: Bearer x") must not print its token
            raise ValueError(
                f"not a valid HTTP header name: {name[: bad.start() if bad else 0]!r}…"
            )
        if "\r" in value or "\n" in value:
            raise ValueError(f"the value of header {name!r} contains a line break")
    return headers


HeaderMap = Annotated[dict[str, str], AfterValidator(_headers)]


def _http_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(
            f"expected an http:// or https:// URL, got: {safe_url(url, keep_path=False)}"
        )
    if problem := _port_problem(url):
        raise ValueError(problem)
    return url


def _field_path(path: str) -> str:
    if not FIELD_PATH.fullmatch(path):
        raise ValueError(
            "expected a field path such as latency.p99, metrics[0].value, [-1].value or "
            f"metrics[name=accuracy].value, got: {path!r}"
        )
    return path


# a step is a key, an index ([0], [-1]: from the end) or a selection ([name=accuracy]:
# the first object of a list whose field `name` is "accuracy"); a path may start with an
# index or a selection (a top-level array)
_PATH_INDEX = r"\[(?:-?\d+|[A-Za-z_][\w-]*=[^\]]*)\]"
_PATH_KEY = r"[A-Za-z_][\w-]*"
FIELD_PATH = re.compile(
    rf"(?:{_PATH_KEY}|{_PATH_INDEX})(?:{_PATH_INDEX})*(?:\.{_PATH_KEY}(?:{_PATH_INDEX})*)*"
)
FieldPath = Annotated[str, AfterValidator(_field_path)]
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class HttpSourceBase(SourceBase):
    """Keys every source that pulls over HTTP shares."""

    url: Annotated[str, AfterValidator(_http_url)]
    headers: HeaderMap = Field(default_factory=dict)
    bearer_token: str | None = None
    series_kind: Literal["quality", "latency", "resource", "custom"] = "custom"
    max_bytes: Annotated[int, Field(ge=1024)] = 1_000_000


@source_kind
class HttpJsonSourceConfig(HttpSourceBase):
    """``kind = "http_json"``: numbers picked from a JSON stats endpoint (a model server)."""

    kind: Literal["http_json"]
    fields: Annotated[dict[MetricName, FieldPath], Field(min_length=1)]
    timestamp: FieldPath | None = None
    # APIs that answer a POST (MLflow's metrics search): the JSON body it sends
    method: Literal["GET", "POST"] = "GET"
    body: dict[str, Any] | list[Any] | None = None

    @model_validator(mode="after")
    def _body_with_post(self) -> HttpJsonSourceConfig:
        if self.body is not None and self.method != "POST":
            raise ValueError('a body is sent only with method = "POST"')
        return self


@source_kind
class PrometheusScrapeSourceConfig(HttpSourceBase):
    """``kind = "prometheus_scrape"``: an exposition-format endpoint (``/metrics``)."""

    kind: Literal["prometheus_scrape"]
    metrics: list[str] = Field(default_factory=list)
    match_labels: dict[LabelName, str] = Field(default_factory=dict)
    rates: bool = True
    # job (the source's name) and instance (the URL's host:port) on every series, as
    # Prometheus adds them; an exposed job / instance label becomes exported_job / …
    target_labels: bool = True
    # untyped metrics (node_netstat_*, /federate output) to read as counters: name patterns
    counters: list[str] = Field(default_factory=list)
    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.9, 0.99]
    )
    max_bytes: Annotated[int, Field(ge=1024)] = 20_000_000


@source_kind
class PrometheusQuerySourceConfig(HttpSourceBase):
    """``kind = "prometheus_query"``: PromQL instant queries against a Prometheus server."""

    kind: Literal["prometheus_query"]
    queries: Annotated[dict[MetricName, Annotated[str, Field(min_length=1)]], Field(min_length=1)]


@source_kind
class MlflowSourceConfig(HttpSourceBase):
    """``kind = "mlflow"``: metric histories of MLflow runs through its REST API."""

    kind: Literal["mlflow"]
    experiments: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    filter: str = ""  # MLflow's run filter: "attributes.status = 'FINISHED'", "params.lr = '0.1'"
    metrics: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["*"]
    )
    time: Literal["timestamp", "step"] = "timestamp"
    max_runs: Annotated[int, Field(ge=1, le=50_000)] = 1000
    registered_models: bool = True
    interval: Annotated[PositiveDuration, AfterValidator(_at_least_one_second)] = timedelta(
        minutes=1
    )
    series_kind: Literal["quality", "latency", "resource", "custom"] = "quality"
    max_bytes: Annotated[int, Field(ge=1024)] = 20_000_000

    def may_go_quiet(self) -> frozenset[str] | None:
        """Runs log at their own times: a run that finished is no absence."""
        return None


def _sqlalchemy_url(url: str) -> str:
    if not re.match(r"^[A-Za-z][A-Za-z0-9+]*://", url):
        raise ValueError(
            "expected a SQLAlchemy URL such as sqlite:///logs.db or "
            f"postgresql://user@host/db, got: {safe_url(url, keep_path=False)}"
        )
    if problem := _port_problem(url):
        raise ValueError(problem)
    return url


SqlalchemyUrl = Annotated[str, AfterValidator(_sqlalchemy_url)]
ColumnName = Annotated[str, Field(min_length=1)]


@source_kind
class SqlSourceConfig(SourceBase):
    """``kind = "sql"``: any query returning rows of (metric, value[, ts][, labels...])."""

    kind: Literal["sql"]
    url: SqlalchemyUrl
    query: Annotated[str, Field(min_length=1)]
    series_kind: Literal["quality", "latency", "resource", "custom"] = "custom"

    def may_go_quiet(self) -> frozenset[str] | None:
        """All: its rows carry their own times."""
        return None


# a predictions query's bind parameter for "rows inserted or changed since" (not a
# PostgreSQL cast such as x::changed_since)
CHANGED_SINCE = re.compile(r"(?<!:):changed_since\b")


@source_kind
class PredictionsSourceConfig(SourceBase):
    """``kind = "predictions"``: model quality per window from labelled prediction logs."""

    kind: Literal["predictions"]
    # classification: classes and scores; regression: a number predicted, the target
    # (the `label` column) a number too
    task: Literal["classification", "regression"] = "classification"
    url: SqlalchemyUrl | None = None
    query: Annotated[str, Field(min_length=1)] | None = None
    path: Annotated[str, Field(min_length=1)] | None = None
    format: Literal["auto", "csv", "jsonl"] = "auto"
    timestamp: ColumnName = "ts"
    prediction: ColumnName = "prediction"
    label: ColumnName = "label"
    # labels from a feed of their own, joined to the predictions by this id column:
    # labels_path (a CSV / JSONL file that grows, beside path) or labels_query (beside url)
    id: ColumnName | None = None
    labels_path: Annotated[str, Field(min_length=1)] | None = None
    labels_query: Annotated[str, Field(min_length=1)] | None = None
    score: ColumnName | None = None
    class_scores: dict[str, ColumnName] = Field(default_factory=dict)
    group_by: list[ColumnName] = Field(default_factory=lambda: ["model", "version"])
    average: Literal["binary", "macro", "weighted"] = "binary"
    pos_label: str = "1"
    window: Annotated[PositiveDuration, AfterValidator(_at_least_one_second)] = timedelta(hours=1)
    min_labels: Annotated[int, Field(ge=1)] = 100
    label_delay: Duration = timedelta(days=1)
    lookback: PositiveDuration = timedelta(days=7)
    interval: Annotated[PositiveDuration, AfterValidator(_at_least_one_second)] = timedelta(
        minutes=5
    )
    # a fixed reference for the estimates and drift (NannyML's reference period): the
    # rows logged in [reference_since, reference_until), kept however old they get;
    # default: the latest settled windows (older than label_delay), a reference that moves
    reference_since: datetime | None = None
    reference_until: datetime | None = None

    def may_go_quiet(self) -> frozenset[str] | None:
        """All: a window is reported when its labels are in, not at every collection."""
        return None

    @property
    def incremental(self) -> bool:
        """Whether the table's ``query`` reads only what changed (it uses
        ``:changed_since``): its rows are kept coded between collections, as a file's."""
        return self.query is not None and CHANGED_SINCE.search(self.query) is not None

    @property
    def reference_period(self) -> tuple[int, int] | None:
        """The fixed reference period, epoch seconds ``[since, until)``; None: none."""
        if self.reference_since is None or self.reference_until is None:
            return None
        return (
            int(self.reference_since.timestamp()),
            int(self.reference_until.timestamp()),
        )

    @model_validator(mode="after")
    def _one_input(self) -> PredictionsSourceConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("set either path (a CSV / JSONL file) or url and query, not both")
        if self.url is not None and self.query is None:
            raise ValueError("url needs a query selecting the prediction log's rows")
        if self.path is not None and self.query is not None:
            raise ValueError("query goes with url, not with path")
        if self.score and self.class_scores:
            raise ValueError("set score (binary) or class_scores (multiclass), not both")
        if self.labels_path is not None and self.path is None:
            raise ValueError("labels_path goes with path (a file of predictions)")
        if self.labels_query is not None and self.url is None:
            raise ValueError("labels_query goes with url and query")
        if (self.labels_path or self.labels_query) and self.id is None:
            raise ValueError("a labels feed needs id, the column both feeds have")
        if self.incremental and self.id is None:
            raise ValueError(
                "a query that uses :changed_since needs id, the column that tells a "
                "changed row (its label set) from a new one"
            )
        if self.labels_query and CHANGED_SINCE.search(self.labels_query) and not self.incremental:
            raise ValueError("labels_query may use :changed_since only if query does too")
        if self.task == "regression" and (self.score or self.class_scores):
            raise ValueError("score and class_scores are for classification, not regression")
        if self.lookback < self.window:
            raise ValueError("lookback must be at least one window")
        since, until = self.reference_since, self.reference_until
        if (since is None) != (until is None):
            raise ValueError("set both reference_since and reference_until, or neither")
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"reference times need a zone (e.g. Z), got: {moment.isoformat()}")
        if since is not None and until is not None and since >= until:
            raise ValueError("reference_since must be before reference_until")
        return self


def _compiling(engine: Any) -> Callable[[str], str]:
    """A validator: the pattern must compile with ``engine`` (``re`` or ``regex``)."""

    def check(pattern: str) -> str:
        try:
            engine.compile(pattern)
        except engine.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}): {pattern!r}") from None
        return pattern

    return check


# label matchers run on short values with Python's re; log patterns run on whole files
# with the `regex` engine, whose matching can be given a deadline
Regex = Annotated[str, Field(min_length=1), AfterValidator(_compiling(re))]
LogRegex = Annotated[str, Field(min_length=1), AfterValidator(_compiling(regex))]


class LogPattern(Section):
    """One ``[sources.patterns.NAME]`` of a logs source: a regex and what to make of it."""

    regex: LogRegex
    aggregate: Literal["count", "sum", "mean", "max", "min"] = "count"

    @model_validator(mode="after")
    def _value_group(self) -> LogPattern:
        if self.aggregate != "count" and "value" not in regex.compile(self.regex).groupindex:
            raise ValueError(
                f"aggregate {self.aggregate!r} needs a named group (?P<value>...) in "
                f"the regex, got: {self.regex!r}"
            )
        return self


def _encoding(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(
            f"unknown text encoding, expected e.g. utf-8 or latin-1, got: {name!r}"
        ) from None
    return name


def _log_pattern(value: object) -> object:
    return {"regex": value} if isinstance(value, str) else value


@source_kind
class LogsSourceConfig(SourceBase):
    """``kind = "logs"``: lines of a log file matching named regexes, per interval."""

    kind: Literal["logs"]
    path: Annotated[str, Field(min_length=1)]
    patterns: Annotated[
        dict[MetricName, Annotated[LogPattern, BeforeValidator(_log_pattern)]],
        Field(min_length=1),
    ]
    from_start: bool = False
    encoding: Annotated[str, AfterValidator(_encoding)] = "utf-8"
    max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024

    def may_go_quiet(self) -> frozenset[str] | None:
        """The patterns that aggregate values: silent when nothing matched."""
        return frozenset(n for n, p in self.patterns.items() if p.aggregate != "count")


@source_kind
class TensorboardSourceConfig(SourceBase):
    """``kind = "tensorboard"``: scalars from the TensorBoard event files under a folder."""

    kind: Literal["tensorboard"]
    logdir: Annotated[str, Field(min_length=1)]
    tags: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["*"]
    )
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024
    max_files: Annotated[int, Field(ge=1)] = 1000

    def may_go_quiet(self) -> frozenset[str] | None:
        """Events carry their own times: a run that stops logging is no absence."""
        return None


@source_kind
class GpuSourceConfig(SourceBase):
    """``kind = "gpu"``: utilisation, memory, temperature and power per GPU (NVML)."""

    kind: Literal["gpu"]
    devices: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


if TYPE_CHECKING:  # every registered model; code narrows with isinstance
    SourceConfig = SourceBase
else:
    SourceConfig = Annotated[
        Union[tuple(SOURCE_MODELS.values())],  # noqa: UP007 - a union built at run time
        Field(discriminator="kind"),
    ]


ReceiverName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


WebhookFormat = Literal["anomon", "alertmanager", "slack"]


class WebhookReceiverConfig(Section):
    """``kind = "webhook"``: an HTTP POST of each notification (anomon, Alertmanager, Slack)."""

    name: ReceiverName
    kind: Literal["webhook"]
    url: Annotated[str, AfterValidator(_http_url)]
    format: WebhookFormat = "anomon"
    secret: str | None = None
    headers: HeaderMap = Field(default_factory=dict)
    timeout: PositiveDuration = timedelta(seconds=10)


class EmailReceiverConfig(Section):
    """``kind = "email"``: one message per notification group over SMTP."""

    name: ReceiverName
    kind: Literal["email"]
    to: Annotated[list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]], Field(min_length=1)]
    sender: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] = "anomon@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = None
    timeout: PositiveDuration = timedelta(seconds=10)
    chart: bool = True


class AlertmanagerReceiverConfig(Section):
    """``kind = "alertmanager"``: push incidents to Alertmanager's API as Prometheus does
    (``POST <url>/api/v2/alerts``), re-sent every ``resend_every`` while they fire."""

    name: ReceiverName
    kind: Literal["alertmanager"]
    url: Annotated[str, AfterValidator(_http_url)]  # Alertmanager's base URL
    headers: HeaderMap = Field(default_factory=dict)
    timeout: PositiveDuration = timedelta(seconds=10)
    resend_every: PositiveDuration = timedelta(minutes=1)


def _runnable(argv: list[str]) -> list[str]:
    """A program and its arguments: the program must be found (an absolute path, or a
    name on ``PATH``) and executable now, so a typo fails at start, not at the first
    incident."""
    program = argv[0]
    if not program.strip():
        raise ValueError("the program (the first item) must not be empty")
    if os.sep in program and not os.path.isabs(program):
        raise ValueError(
            f"the program {program!r} must be an absolute path or a name on PATH (the "
            "daemon's working directory is not the config's)"
        )
    if shutil.which(program) is None:
        where = "" if os.sep in program else " on PATH"
        raise ValueError(f"no executable program {program!r} found{where}")
    return argv


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class CommandReceiverConfig(Section):
    """``kind = "command"``: run a program once per notification (no shell): the
    notification as anomon's JSON on its stdin, its output kept in the outbox row. A
    retraining pipeline or a rollback starts from here."""

    name: ReceiverName
    kind: Literal["command"]
    command: Annotated[list[str], Field(min_length=1), AfterValidator(_runnable)]
    timeout: PositiveDuration = timedelta(minutes=5)
    # environment variables passed on from anomon's own (the rest are not: anomon's
    # secrets stay with anomon); PATH, HOME, LANG and LC_ALL always are
    inherit_env: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(default_factory=list)
    working_dir: Path | None = None


AnyReceiverConfig = (
    WebhookReceiverConfig | EmailReceiverConfig | AlertmanagerReceiverConfig | CommandReceiverConfig
)
ReceiverConfig = Annotated[AnyReceiverConfig, Field(discriminator="kind")]


class GroupTiming(Section):
    """Alertmanager's grouping knobs, with its defaults."""

    group_by: list[str] = Field(default_factory=lambda: ["entity"])
    group_wait: Duration = timedelta(seconds=30)
    group_interval: PositiveDuration = timedelta(minutes=5)
    repeat_interval: PositiveDuration = timedelta(hours=4)
    send_resolved: bool = True


class RouteConfig(Section):
    """``[[alerts.routes]]``: incidents whose labels match go to ``receiver``.

    ``match`` compares label values exactly, ``match_re`` with a regular expression
    matched against the whole value. The labels are the series' own plus ``metric``,
    ``entity``, ``source``, ``kind`` and ``severity``. Unset timing keys take the
    ``[alerts]`` defaults.
    """

    receiver: ReceiverName
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, Regex] = Field(default_factory=dict)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None
    send_resolved: bool | None = None
    # no notifications through this route within these [[alerts.time_intervals]]
    mute_time_intervals: list[ReceiverName] = Field(default_factory=list)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


def _weekdays(spec: str) -> str:
    # "saturday" or an inclusive range "monday:friday", as Alertmanager writes them
    names = spec.lower().split(":")
    if len(names) > 2 or any(name not in WEEKDAYS for name in names):
        raise ValueError(f"expected a weekday or a range such as monday:friday, got: {spec!r}")
    return spec.lower()


def _clock(text: str) -> str:
    if not _CLOCK.fullmatch(text):
        raise ValueError(f"expected a time of day HH:MM (00:00 to 24:00), got: {text!r}")
    return text


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected a time zone such as UTC or Europe/Berlin, got: {name!r}"
        ) from None
    return name


class TimeRange(Section):
    """A span of each chosen day, ``start`` inclusive, ``end`` exclusive."""

    start: Annotated[str, AfterValidator(_clock)]
    end: Annotated[str, AfterValidator(_clock)]

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError(f"end must be after start, got: {self.start} to {self.end}")
        return self


class TimeIntervalConfig(Section):
    """``[[alerts.time_intervals]]``: recurring times, as Alertmanager's ``time_intervals``
    (a route's ``mute_time_intervals`` or a silence's ``time_intervals`` name them).

    In ``time_zone``, on ``weekdays`` (names or ranges; none: every day) and within
    ``times`` (none: all day).
    """

    name: ReceiverName
    weekdays: list[Annotated[str, AfterValidator(_weekdays)]] = Field(default_factory=list)
    times: list[TimeRange] = Field(default_factory=list)
    time_zone: Annotated[str, AfterValidator(_zone)] = "UTC"

    def contains(self, at: datetime) -> bool:
        """Whether ``at`` (an aware time) falls in this interval."""
        local = at.astimezone(ZoneInfo(self.time_zone))
        if self.weekdays and not any(_on(spec, local.weekday()) for spec in self.weekdays):
            return False
        clock = local.strftime("%H:%M")
        return not self.times or any(t.start <= clock < t.end for t in self.times)


def _on(spec: str, weekday: int) -> bool:
    first, _, last = spec.partition(":")
    low, high = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    return low <= weekday <= high if low <= high else weekday >= low or weekday <= high


class SilenceConfig(Section):
    """``[[alerts.silences]]``: incidents matching these labels are recorded, not notified."""

    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, Regex] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    # recurring: only within these [[alerts.time_intervals]] (a maintenance window)
    time_intervals: list[ReceiverName] = Field(default_factory=list)
    comment: str = ""

    @model_validator(mode="after")
    def _something_to_match(self) -> SilenceConfig:
        if not self.match and not self.match_re:
            raise ValueError("a silence needs match or match_re (it would silence everything)")
        for moment in (self.starts_at, self.ends_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"silence times need a zone (e.g. Z), got: {moment.isoformat()}")
        return self


class DeliveryConfig(Section):
    """``[alerts.delivery]``: how the outbox is drained."""

    interval: PositiveDuration = timedelta(seconds=5)
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    max_attempts: Annotated[int, Field(ge=1)] = 24
    backoff_initial: PositiveDuration = timedelta(seconds=10)
    backoff_max: PositiveDuration = timedelta(minutes=30)
    claim_timeout: PositiveDuration = timedelta(minutes=5)


class AlertsConfig(GroupTiming):
    """``[alerts]``: receivers, routes (first match wins unless ``continue``), silences.

    Incidents no route matches go to ``receiver`` (none: they are recorded only).
    """

    enabled: bool = True
    receiver: ReceiverName | None = None
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    silences: list[SilenceConfig] = Field(default_factory=list)
    time_intervals: list[TimeIntervalConfig] = Field(default_factory=list)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    # an incident that opens this soon after a deploy of its model (or entity) names it
    deploy_window: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _known_receivers(self) -> AlertsConfig:
        wanted = [self.receiver] if self.receiver else []
        wanted += [route.receiver for route in self.routes]
        problems = receiver_problems([receiver.name for receiver in self.receivers], wanted)
        named = [n for r in self.routes for n in r.mute_time_intervals]
        named += [n for s in self.silences for n in s.time_intervals]
        problems += interval_problems([i.name for i in self.time_intervals], named)
        if problems:
            raise ValueError(problems[0])  # parse_config reports the rest (cross_field_problems)
        return self

    def time_interval(self, name: str) -> TimeIntervalConfig:
        """The time interval called ``name`` (validated to exist)."""
        return next(i for i in self.time_intervals if i.name == name)

    def receiver_named(self, name: str) -> AnyReceiverConfig | None:
        """Return the receiver called ``name``, or None."""
        return next((r for r in self.receivers if r.name == name), None)


class Config(Section):
    """The whole config file."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    sources: list[SourceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_source_names(self) -> Config:
        duplicates = duplicate_source_names([source.name for source in self.sources])
        if duplicates:
            raise ValueError(duplicates[0])  # parse_config reports the rest
        return self

    @model_validator(mode="after")
    def _console_authenticated_beside_metrics(self) -> Config:
        web = self.web
        if web.enabled and self.daemon.metrics:
            metrics = self.daemon.metrics_listen
            if web.listen == "auto" and metrics.endswith(":65535"):
                raise ValueError(
                    "web.listen: beside metrics_listen it would be port 65536, which is no "
                    "port: set web.listen"
                )
            if web.listen == metrics:
                raise ValueError(
                    f"web.listen: {metrics} is daemon.metrics_listen already: give the "
                    "console a port of its own"
                )
        host = web.address(self.daemon).rpartition(":")[0]
        open_to_others = web.enabled and web.listen == "auto" and host not in LOOPBACK_HOSTS
        if open_to_others and not (web.password or web.token):
            raise ValueError(
                f"web.listen: beside metrics_listen it would be {web.address(self.daemon)}, "
                "reachable from other hosts: set web.password or web.token, or web.listen"
            )
        return self


def receiver_problems(names: list[str], wanted: list[str]) -> list[str]:
    """What is wrong with the receivers called ``names`` when ``[alerts] receiver`` and the
    routes name ``wanted``: duplicate names, then unknown receivers."""
    return _name_problems("receiver", names, wanted)


def interval_problems(names: list[str], wanted: list[str]) -> list[str]:
    """Duplicate time interval names, then names that routes or silences use in vain."""
    return _name_problems("time interval", names, wanted)


def _name_problems(what: str, names: list[str], wanted: list[str]) -> list[str]:
    problems = []
    if len(set(names)) < len(names):
        problems.append(f"{what} names must be unique, got: {names}")
    unknown = sorted({name for name in wanted if name not in names})
    if unknown:
        problems.append(
            f"unknown {what} {', '.join(map(repr, unknown))} "
            f"({what}s: {', '.join(names) or 'none'})"
        )
    return problems


def duplicate_source_names(names: list[str]) -> list[str]:
    """One problem per source whose name an earlier source already has."""
    seen: dict[str, int] = {}
    problems = []
    for index, name in enumerate(names):
        if name in seen:
            problems.append(
                f"sources[{index}].name: duplicate source name {name!r} "
                f"(first used by sources[{seen[name]}])"
            )
        else:
            seen[name] = index
    return problems


def cross_field_problems(data: Mapping[str, Any]) -> list[str]:
    """The checks that span several fields, run on the raw mapping.

    pydantic runs a model's cross-field validators only once all its fields are valid,
    which would report a config's problems one round at a time; these read whatever
    names are there, so every problem is reported at once (the model validators say
    the same words, and :func:`parse_config` says each once).
    """
    problems: list[str] = []
    sources = data.get("sources")
    if isinstance(sources, list):
        names = [entry.get("name") for entry in sources if isinstance(entry, dict)]
        problems += duplicate_source_names([name for name in names if isinstance(name, str)])
    alerts = data.get("alerts")
    if isinstance(alerts, dict):
        entries = [alerts.get("receivers"), alerts.get("routes")]
        receivers, routes = (entry if isinstance(entry, list) else [] for entry in entries)
        names = [r.get("name") for r in receivers if isinstance(r, dict)]
        wanted = [alerts.get("receiver")]
        wanted += [route.get("receiver") for route in routes if isinstance(route, dict)]
        problems += [
            f"alerts: {problem}"
            for problem in receiver_problems(
                [name for name in names if isinstance(name, str)],
                [name for name in wanted if isinstance(name, str) and name],
            )
        ]
        intervals, silences = (
            entry if isinstance(entry, list) else []
            for entry in (alerts.get("time_intervals"), alerts.get("silences"))
        )
        defined = [i.get("name") for i in intervals if isinstance(i, dict)]
        used = [
            name
            for entry in [*routes, *silences]
            if isinstance(entry, dict)
            for key in ("mute_time_intervals", "time_intervals")
            if isinstance(entry.get(key), list)
            for name in entry[key]
        ]
        problems += [
            f"alerts: {problem}"
            for problem in interval_problems(
                [name for name in defined if isinstance(name, str)],
                [name for name in used if isinstance(name, str)],
            )
        ]
    return problems


def _untagged_sources(data: Mapping[str, Any]) -> list[str]:
    """The problems of the keys every source has, in sources whose ``kind`` is unknown or
    missing (pydantic stops at the kind, which would hide an ``interval = "15x"``)."""
    sources = data.get("sources")
    if not isinstance(sources, list):
        return []
    problems: list[str] = []
    for index, entry in enumerate(sources):
        if not isinstance(entry, dict) or entry.get("kind") in SOURCE_MODELS:
            continue
        common = {key: value for key, value in entry.items() if key in SourceBase.model_fields}
        try:
            SourceBase.model_validate(common)
        except ValidationError as exc:
            for error in exc.errors():
                error["loc"] = ("sources", index, *error["loc"])
                problems.append(_describe(error))
    return problems


def config_warnings(config: Config) -> list[str]:
    """What is valid but surely not meant: ``config check`` and ``anomon run`` say it."""
    alerts = config.alerts
    if not (alerts.enabled and alerts.receivers):
        return []
    used = {alerts.receiver} | {route.receiver for route in alerts.routes}
    if used == {None}:
        names = ", ".join(receiver.name for receiver in alerts.receivers)
        return [
            f"alerts: {len(alerts.receivers)} receiver(s) ({names}) but no [alerts] receiver "
            f"and no [[alerts.routes]]: no notification will be sent (set receiver = "
            f"{alerts.receivers[0].name!r} under [alerts])"
        ]
    return [
        f"alerts.receivers[{index}]: {receiver.name!r} is not [alerts] receiver and no route "
        "names it: it will get no notification"
        for index, receiver in enumerate(alerts.receivers)
        if receiver.name not in used
    ]


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values and
    ``ANOMON_DATABASE_URL``. Raises ConfigError listing every problem found.
    """
    env = os.environ if environ is None else environ
    unset: list[str] = []  # variables not set: said with every other problem, not alone
    data: dict[str, Any] = _interpolate(_read_toml(Path(path)), env, (), unset)
    if env.get(DATABASE_URL_ENV):
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"]["url"] = env[DATABASE_URL_ENV]
    try:
        config = parse_config(data, source=str(path))
    except ConfigError as exc:
        told = f"database.url (from ${DATABASE_URL_ENV}):"
        problems = [
            # the URL is the environment's, not the file's: say so
            told + p[len("database.url:") :]
            if env.get(DATABASE_URL_ENV) and p.startswith("database.url:")
            else p
            for p in exc.problems
        ]
        # a field whose variable is unset is named for that alone (its "" is no value)
        missing = {problem.partition(": ")[0] for problem in unset}
        problems = [p for p in problems if p.partition(": ")[0] not in missing]
        raise ConfigError(exc.path, _in_file_order([*unset, *problems], data)) from None
    if unset:
        raise ConfigError(str(path), unset)
    return config


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping; raise ConfigError naming ``source``."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        found = [_describe(error) for error in exc.errors()]
        found += _untagged_sources(data) + cross_field_problems(data)
        # one refused value may fail several branches of a union, and a cross-field check
        # runs twice when the rest is valid: say each once, in the file's order
        raise ConfigError(source, _in_file_order(dict.fromkeys(found), data)) from None


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[:]+)")


def _in_file_order(problems: Iterable[str], data: Mapping[str, Any]) -> list[str]:
    """Sort problems by the section they name, as the file has them (TOML tables keep
    their order), then by their path (list items by number): a source's problems together."""
    sections = {str(key): index for index, key in enumerate(data)}

    def key(problem: str) -> tuple[int, list[tuple[int, str]]]:
        path = problem.split(": ", 1)[0]
        parts = [(int(n), "") if n else (-1, name) for n, name in _PATH_PART.findall(path)]
        first = parts[0][1] if parts else ""
        return sections.get(first, len(sections)), parts

    return sorted(problems, key=key)


def interpolate(
    data: Mapping[str, Any], environ: Mapping[str, str], *, source: str = "<config>"
) -> dict[str, Any]:
    """Return ``data`` with every ``${VAR}`` replaced from ``environ`` (``$$`` is a dollar).

    Text that came from a reference may stand for a number or a switch (``"${PORT}"``);
    text written in the file may not. Raises ConfigError naming every unset variable.
    """
    problems: list[str] = []
    result: dict[str, Any] = _interpolate(dict(data), environ, (), problems)
    if problems:
        raise ConfigError(source, problems)
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"invalid TOML: {exc}"]) from None


_ENV_REF = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(
    node: Any, env: Mapping[str, str], loc: tuple[Any, ...], problems: list[str]
) -> Any:
    """Return ``node`` with ``${VAR}`` replaced in every string; ``$$`` is a literal ``$``."""
    if isinstance(node, dict):
        return {key: _interpolate(value, env, (*loc, key), problems) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, env, (*loc, i), problems) for i, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if not _ENV_NAME.fullmatch(name):
            problems.append(f"{_dotted(loc)}: invalid environment reference ${{{name}}}")
        elif name not in env:
            problems.append(f"{_dotted(loc)}: environment variable {name} is not set")
        return env.get(name, "")

    result = _ENV_REF.sub(substitute, node)
    # only a real ${VAR} makes text from the environment ("$$" is a literal dollar)
    return _FromEnv(result) if "${" in node.replace("$$", "") else result


def _dotted(loc: tuple[Any, ...]) -> str:
    """Render a location as ``sources[1].interval`` (a key's control characters escaped:
    a problem is one line)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return escape_controls(text) or "(top level)"


# keys whose values may carry a credential: a message never shows their value, and shows a
# URL without its credentials, query or path
_SECRET_KEY = re.compile(r"pass|secret|token|auth|cookie|header|url|dsn|credential|_key|key_")


def _describe(error: ErrorDetails) -> str:
    """Turn one pydantic error into ``<field path>: <expected, found>``, without secrets."""
    text, value = _explain(error), error["input"]
    if not any(isinstance(part, str) and _SECRET_KEY.search(part.lower()) for part in error["loc"]):
        return text
    if not isinstance(value, str) and text.endswith(f", got: {value!r}"):  # a number, a table
        text = (
            text.removesuffix(f"{value!r}") + f"a value of type {type(value).__name__} (not shown)"
        )
    return _without_secrets(text, value)


def _without_secrets(text: str, value: object) -> str:
    """Return ``text`` with every string inside ``value`` (keys too) replaced by a safe
    rendering: a URL without credentials, query or path, anything else as ``***``."""
    found: list[str] = []
    _strings(value, found)
    for secret in sorted(set(found), key=len, reverse=True):
        shown = repr(safe_url(secret, keep_path=False)) if "://" in secret else "'***'"
        text = text.replace(repr(secret), shown)
        if len(secret) >= 4:  # short ones could be any word of the message
            text = text.replace(secret, shown)
    return text


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _strings(value: object, found: list[str]) -> None:
    """Collect every string in ``value``: itself, or the keys and values it holds (a key
    that is a plain name, such as a header name, is kept: it names what is wrong)."""
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and _PLAIN_NAME.fullmatch(key)):
                _strings(key, found)
            _strings(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, found)


def _explain(error: ErrorDetails) -> str:
    """Turn one pydantic error into ``<field path>: <expected, found>``."""
    loc, model = _strip_tags(tuple(error["loc"]))
    kind, message = error["type"], error["msg"]
    if isinstance(error["input"], _Refused):
        return f"{_dotted(loc)}: {error['input'].reason}"
    if loc and loc[-1] == "[key]":  # pydantic's marker for a bad mapping key
        loc, message = loc[:-1], message.replace("String should", "key should", 1)
    if kind == "missing":
        return f"{_dotted(loc)}: required, but missing"
    if kind == "extra_forbidden":
        return f"{_dotted(loc)}: unknown key{_suggestion(str(loc[-1]), model)}"
    if kind == "union_tag_invalid":
        tags = TAGGED_LISTS.get(str(loc[-2])) if len(loc) >= 2 else None
        known = list(tags or SOURCE_MODELS)
        found = error["input"]["kind"]
        close = difflib.get_close_matches(str(found), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if tags is RECEIVER_MODELS and found == "slack":
            hint = f' (a {found} receiver is kind = "webhook" with format = "{found}")'
        expected = ", ".join(repr(tag) for tag in known)
        return f"{_dotted((*loc, 'kind'))}: expected one of {expected}, got: {found!r}{hint}"
    if kind == "union_tag_not_found":
        return f"{_dotted((*loc, 'kind'))}: required, but missing"
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        if message.startswith("sources["):  # model-level check that names its own field
            return message
        if message.startswith("."):  # model-level check naming a field of its model
            return _dotted(loc) + message
        return f"{_dotted(loc)}: {message}"
    message = message.replace("Input should be", "expected", 1).replace("should", "expected to", 1)
    message = message.removeprefix("String ")
    return f"{_dotted(loc)}: {message}, got: {error['input']!r}"


RECEIVER_MODELS: dict[str, type[BaseModel]] = {
    "webhook": WebhookReceiverConfig,
    "email": EmailReceiverConfig,
    "alertmanager": AlertmanagerReceiverConfig,
    "command": CommandReceiverConfig,
}
# lists of tagged unions: pydantic names the tag in error paths, people do not
TAGGED_LISTS: dict[str, Mapping[str, type[BaseModel]]] = {
    "sources": SOURCE_MODELS,
    "receivers": RECEIVER_MODELS,
}


def _strip_tags(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None]:
    """Drop the discriminator tags pydantic puts in error paths.

    Returns the clean path and the model that owns its last key (for "did you mean" hints).
    """
    clean: list[Any] = []
    owner: type[BaseModel] | None = Config
    model: type[BaseModel] | None = Config
    previous: Any = None
    for part in loc:
        tags = TAGGED_LISTS.get(clean[-2]) if len(clean) >= 2 else None
        # the tag comes right after the list index (once: a field named like its kind,
        # the command receiver's `command`, is a field)
        if tags is not None and isinstance(previous, int) and part in tags:
            model, previous = tags[part], part
            continue
        previous = part
        clean.append(part)
        if isinstance(part, str):
            owner, model = model, _submodel(model, part)
    return tuple(clean), owner


def _submodel(model: type[BaseModel] | None, field: str) -> type[BaseModel] | None:
    """Return the model type of ``model.field``, or None when it is not a model."""
    info = model.model_fields.get(field) if model else None
    annotation = info.annotation if info else None
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _suggestion(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; expected one of: {', '.join(model.model_fields)}"
