"""Fuzz the config: TOML of any shape, and nasty durations, numbers, URLs, label names
and regexes in an otherwise valid file, through ``load_config`` and ``parse_config``."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from anomon.config import Config, load_config, parse_config
from anomon.errors import ConfigError
from tests.fuzz import fuzz, nasty_text, number_tokens

_names = itertools.count()
BASE: dict[str, Any] = {
    "database": {"url": "sqlite:///anomon.db"},
    "daemon": {"metrics_max_series": 1000},
    "detection": {"threshold": 80.0, "alarm": {"resolve_ratio": 0.75}},
    "sources": [
        {
            "name": "api",
            "kind": "http_json",
            "url": "http://127.0.0.1:8080/stats",
            "fields": {"p99": "latency.p99"},
            "labels": {"team": "ml"},
        },
        {"name": "scrape", "kind": "prometheus_scrape", "url": "http://127.0.0.1:9100/metrics"},
        {"name": "log", "kind": "logs", "path": "/var/log/app.log", "patterns": {"errors": "E"}},
        {"name": "preds", "kind": "predictions", "path": "/var/log/predictions.csv"},
    ],
    "alerts": {"receivers": [{"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:1/h"}]},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


def load(folder: Path, data: bytes, environ: dict[str, str] | None = None) -> Config | ConfigError:
    """Load ``data`` as a config file: the Config, or the ConfigError (checked)."""
    path = folder / f"anomon{next(_names)}.toml"
    path.write_bytes(data)
    try:
        return load_config(path, environ=environ or {})
    except ConfigError as refused:
        check_problems(refused)
        return refused


def check_problems(error: ConfigError) -> None:
    """A ConfigError lists at least one problem, each a non-empty text."""
    assert error.problems, error
    assert all(isinstance(p, str) and p.strip() for p in error.problems), error.problems


def check_one_line(error: ConfigError) -> None:
    """Each problem is one line (the CLI prints one per line: a key must not forge one)."""
    assert all("\n" not in p and "\r" not in p for p in error.problems), error.problems


# ---- TOML of any shape


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (tables inline); lone surrogates make invalid TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> bytes:
    text = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items())
    return text.encode("utf-8", "surrogatepass")


KEYS = st.one_of(
    st.sampled_from(
        ["database", "daemon", "detection", "alerts", "sources", "url", "name", "kind",
         "interval", "timeout", "labels", "fields", "receivers", "http_json", "logs"]
    ),
    nasty_text(10),
)  # fmt: skip
leaves = st.one_of(
    st.none().map(lambda _: ""),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    nasty_text(),
    number_tokens(),
    st.sampled_from(["http_json", "logs", "predictions", "15s", "0s", "-1s", "1_000s"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)


@fuzz(300)
@given(data=st.dictionaries(KEYS, trees, max_size=6))
def test_toml_of_any_shape_gives_a_config_or_a_config_error(
    folder: Path, data: dict[str, Any]
) -> None:
    load(folder, toml_document(data))


@fuzz(60)
@given(
    text=st.one_of(
        st.binary(max_size=200), nasty_text(200).map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_any_bytes_give_a_config_or_a_config_error(folder: Path, text: bytes) -> None:
    load(folder, text)


@fuzz(150)
@given(data=st.dictionaries(KEYS, trees, max_size=6))
@example(data={"daemon": {"a\nb": 1}})
def test_every_problem_is_one_line(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError as refused:
        check_problems(refused)
        check_one_line(refused)


# ---- one nasty value in a valid config: refused by its path, or accepted

DURATIONS = [
    ("sources", 0, "interval"),
    ("sources", 1, "timeout"),
    ("database", "busy_timeout"),
    ("alerts", "group_wait"),
    ("alerts", "delivery", "interval"),
]
NUMBERS = [
    ("daemon", "metrics_max_series"),
    ("sources", 0, "max_series"),
    ("detection", "threshold"),
    ("detection", "alarm", "resolve_ratio"),
    ("sources", 1, "quantiles"),
]
URLS = [("database", "url"), ("sources", 0, "url"), ("alerts", "receivers", 0, "url")]
TEXTS = [
    ("sources", 2, "patterns", "errors"),
    ("sources", 0, "fields", "p99"),
    ("sources", 0, "name"),
]
PATHS = DURATIONS + NUMBERS + URLS + TEXTS + [("sources", 0, "labels")]

duration_texts = st.one_of(
    st.sampled_from(
        ["1_000s", "0x10s", "1e400s", "nans", "infs", "\u0661\u0665s", "-5s", "5", "", " ",
         "5 mins", "5s\x00", "9" * 400 + "d", "9" * 5000 + "s", "0s", "0.0001ms", "1.5h30m", "5S"]
    ),
    st.tuples(number_tokens(), st.sampled_from(["ms", "s", "m", "h", "d", "w", ""])).map("".join),
)  # fmt: skip
url_texts = st.one_of(
    st.sampled_from(
        ["http://[::1", "http://h:99999/x", "http://h:port/x", "http://u:p@h:0/", "http://",
         "ftp://u:p@h/", "sqlite://", "postgresql://u@h:abc/db", "http://\x00/", "http://h/\u202e",
         "http://h:1_000/", "http://h:0x10/", "http://" + "h" * 5000]
    ),
    st.tuples(st.sampled_from(["http://", "postgresql://", "sqlite:///"]), nasty_text()).map(
        "".join
    ),
)  # fmt: skip
values = st.one_of(
    duration_texts,
    url_texts,
    number_tokens(),
    nasty_text(),
    st.floats(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.lists(st.one_of(st.floats(), number_tokens()), max_size=3),
    st.dictionaries(nasty_text(8), st.one_of(nasty_text(), st.integers()), max_size=2),
    st.sampled_from(["[a-", "(?P<value>", "(?i)x(?i)", "x{99999999999}", "\\"]),
)


def with_value(path: tuple[Any, ...], value: Any, data: dict[str, Any] | None = None) -> Any:
    """A copy of ``data`` (default: BASE) with ``value`` at ``path`` (tables made as needed)."""
    data = copy.deepcopy(BASE if data is None else data)
    node: Any = data
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return data


def dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def named(error: ConfigError, paths: list[tuple[Any, ...]]) -> None:
    """Every problem starts with one of ``paths`` (a good value next to it is not blamed)."""
    prefixes = tuple(dotted(path) for path in paths)
    assert all(problem.startswith(prefixes) for problem in error.problems), error.problems


def test_the_base_config_is_valid() -> None:
    assert [s.name for s in parse_config(BASE).sources] == ["api", "scrape", "log", "preds"]


@fuzz(400)
@given(path=st.sampled_from(PATHS), value=values, key=st.booleans())
def test_a_nasty_value_is_refused_by_its_path_or_accepted(
    path: tuple[Any, ...], value: Any, key: bool
) -> None:
    if path[-1] == "labels" or (key and isinstance(value, str) and path in TEXTS[:2]):
        value = {value if isinstance(value, str) else "x": "v"}  # a nasty name
        path = path if path[-1] == "labels" else path[:-1]
    try:
        parse_config(with_value(path, value))
    except ConfigError as refused:
        check_problems(refused)
        named(refused, [path])


# values each field must refuse
BAD = {
    ("sources", 0, "interval"): "1_000s",
    ("database", "busy_timeout"): "1e400s",
    ("alerts", "group_wait"): "\u0661\u0665s",
    ("daemon", "metrics_max_series"): "1_000",
    ("sources", 0, "max_series"): "0x10",
    ("detection", "threshold"): math.nan,
    ("detection", "alarm", "resolve_ratio"): "1e400",
    ("database", "url"): "postgresql://u@h:abc/db",
    ("sources", 0, "url"): "http://h:99999/x",
    ("alerts", "receivers", 0, "url"): "ftp://u:p@h/",
    ("sources", 2, "patterns", "errors"): "[a-",
    ("sources", 0, "labels"): {"9 bad": "v"},
}


def bad_pair_property(paths: list[tuple[Any, ...]]) -> None:
    """Two bad values: each is named, and nothing else is."""
    data = with_value(paths[1], BAD[paths[1]], with_value(paths[0], BAD[paths[0]]))
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    named(caught.value, paths)
    for path in paths:
        assert any(p.startswith(dotted(path)) for p in caught.value.problems), (path, caught.value)


bad_pairs = st.lists(st.sampled_from(sorted(BAD, key=str)), min_size=2, max_size=2, unique=True)


@fuzz(60)
@given(paths=bad_pairs)
@example(paths=[("detection", "threshold"), ("detection", "alarm", "resolve_ratio")])
def test_every_bad_value_is_named_and_only_those(paths: list[tuple[Any, ...]]) -> None:
    bad_pair_property(paths)


PLAIN_WHOLE = re.compile(r"[+-]?[0-9]+")


@fuzz(150)
@given(token=number_tokens())
@example(token="1_000")
def test_a_number_from_the_environment_is_plain_digits_or_refused(folder: Path, token: str) -> None:
    document = b'[[sources]]\nname = "s"\nkind = "system"\nmax_series = "${N}"\n'
    got = load(folder, document, {"N": token})
    if isinstance(got, ConfigError):
        named(got, [("sources", 0, "max_series")])
        return
    assert PLAIN_WHOLE.fullmatch(token), f"{token!r} read as {got.sources[0].max_series}"
    assert got.sources[0].max_series == int(token)
