"""Fuzz the prometheus_scrape source: the exposition text format, end to end.

One real HTTP server on 127.0.0.1 serves the module; each example changes the page. The
whole ``collect`` runs (the line feed, prometheus_client's parser, rates, histograms),
twice per page so that the second scrape computes rates from the first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from anomon.config import PrometheusScrapeSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample
from anomon.sources import PartialCollection, PrometheusScrapeSource
from tests.fuzz import (
    BAD_NUMBER_TOKENS,
    LOOKALIKE_TOKENS,
    check_named,
    check_refusal,
    fuzz,
    nasty_text,
    number_tokens,
)
from tests.loopback import serve

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class Endpoint:
    """The one server of the module and the page it answers with now."""

    url: str
    client: httpx.Client
    body: bytes = b""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    holder: list[Endpoint] = []
    with serve(lambda path: (200, holder[0].body)) as url, httpx.Client() as client:
        holder.append(Endpoint(f"{url}/metrics", client))
        yield holder[0]


def scraper(endpoint: Endpoint, **config: Any) -> PrometheusScrapeSource:
    return PrometheusScrapeSource(
        PrometheusScrapeSourceConfig.model_validate(
            {"name": "fuzz", "kind": "prometheus_scrape", "url": endpoint.url, **config}
        ),
        client=endpoint.client,
    )


def scrape(
    source: PrometheusScrapeSource,
    endpoint: Endpoint,
    page: bytes,
    at: datetime,
    *,
    printable: bool = True,
) -> Any:
    """Serve ``page`` and scrape it: the samples, or the refusal, checked (free of control
    characters unless ``printable`` is False)."""
    endpoint.body = page
    try:
        return source.collect(at)
    except SourceError as refused:  # PartialCollection included
        (check_refusal if printable else check_named)(refused)
        return refused


# ---- pages of any shape

NAMES = st.one_of(
    st.sampled_from(["up", "req_total", "lat", "lat_bucket", "lat_sum", "lat_count", "a:b"]),
    st.sampled_from(["lat_created", "req_created", "x" * 300, "9bad", "bad-name", ""]),
    nasty_text(12),
)
LABEL_NAMES = st.one_of(st.sampled_from(["le", "quantile", "job", "l", "__name__"]), nasty_text(8))
label_values = st.one_of(
    number_tokens(),
    nasty_text(),
    st.sampled_from(['\\"', "\\\\", "\\n", "\\x", '"', "\\", "+Inf", "x" * 2000]),
)


@st.composite
def sample_lines(draw: st.DrawFn) -> str:
    name = draw(NAMES)
    labels = draw(st.lists(st.tuples(LABEL_NAMES, label_values), max_size=3))
    text = ",".join(f'{k}="{v}"' for k, v in labels)
    braces = draw(st.sampled_from(["{%s}", "{%s,}", "{%s", "%s}", "", "{}"]))
    line = name + (braces % text if "%s" in braces else braces)
    line += draw(st.sampled_from([" ", "\t", "  ", ""])) + draw(number_tokens())
    if draw(st.booleans()):
        line += " " + draw(number_tokens())  # a timestamp
    return line


comment_lines = st.one_of(
    st.tuples(
        NAMES,
        st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", "info", "x"]),
    ).map(lambda t: f"# TYPE {t[0]} {t[1]}"),
    st.tuples(NAMES, nasty_text()).map(lambda t: f"# HELP {t[0]} {t[1]}"),
    st.sampled_from(["#", "# EOF", "# TYPE", "# HELP x", "# TYPE x gauge extra"]),
)
lines = st.one_of(sample_lines(), comment_lines, nasty_text())
configs = st.fixed_dictionaries(
    {},
    optional={
        "metrics": st.lists(st.sampled_from(["up", "lat*", "req*", "*"]), max_size=2),
        "match_labels": st.dictionaries(st.sampled_from(["job", "l"]), nasty_text(5), max_size=1),
        "rates": st.booleans(),
        "max_series": st.integers(1, 20),
    },
)


def page_property(
    endpoint: Endpoint,
    pages: tuple[list[str], list[str]],
    newline: str,
    config: dict[str, Any],
    tail: bytes,
    *,
    printable: bool = True,
) -> None:
    """Two scrapes of a page of any shape give samples or a named refusal."""
    source = scraper(endpoint, **config)
    for lines_, at in zip(pages, (NOW, NOW + timedelta(seconds=15)), strict=True):
        body = newline.join(lines_).encode("utf-8", "surrogatepass") + tail
        got = scrape(source, endpoint, body, at, printable=printable)
        samples = got.samples if isinstance(got, PartialCollection) else got
        if not isinstance(got, SourceError) or isinstance(got, PartialCollection):
            assert all(isinstance(s, Sample) and math.isfinite(s.value) for s in samples)


pages = st.tuples(st.lists(lines, max_size=12), st.lists(lines, max_size=12))
newlines = st.sampled_from(["\n", "\r\n", "\r"])
tails = st.sampled_from([b"", b"\n", b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"])
# the parser's messages and skipped series' names reach the refusal unescaped
CONTROL_IN_REFUSAL = ["\x00", "\x08{} NaN", 'up{\x1f="1"} 1', "# TYPE x gauge extra\x00"]


@fuzz(150)
@given(pages=pages, newline=newlines, config=configs, tail=tails)
@example(pages=([], [CONTROL_IN_REFUSAL[0]]), newline="\n", config={}, tail=b"")
@example(pages=([], [CONTROL_IN_REFUSAL[1]]), newline="\n", config={}, tail=b"")
@example(pages=([], [CONTROL_IN_REFUSAL[2]]), newline="\n", config={}, tail=b"")
@example(pages=([], [CONTROL_IN_REFUSAL[3]]), newline="\n", config={}, tail=b"")
def test_any_page_gives_samples_or_a_named_refusal(
    endpoint: Endpoint,
    pages: tuple[list[str], list[str]],
    newline: str,
    config: dict[str, Any],
    tail: bytes,
) -> None:
    page_property(endpoint, pages, newline, config, tail)


@fuzz(30)
@given(binary=st.binary(max_size=300))
def test_any_bytes_give_samples_or_a_named_refusal(endpoint: Endpoint, binary: bytes) -> None:
    scrape(scraper(endpoint), endpoint, binary, NOW)


# ---- a bad value next to good ones

good_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(10**18), max_value=10**18).map(str),
)
# values the parser reads as numbers a sample cannot hold (or that are too long to read)
# NaN is not bad: it is "no value at this time" (issue 14), tested below on its own
NAN_VALUES = [t for t in BAD_NUMBER_TOKENS if t.lower().lstrip("+-") == "nan"]
BAD_VALUES = [t for t in BAD_NUMBER_TOKENS if t.lower().lstrip("+-") == "inf"]
BAD_VALUES += [t for t in BAD_NUMBER_TOKENS if t.lstrip("-").replace("0", "9")[:2] == "99"]
BAD_VALUES += ["1e400", "-1e400", "1e99999", "1" + "0" * 400 + ".5"]


def page(goods: list[str], bad_line: str, at: int) -> bytes:
    """Good gauges ``g<i>{job="x"} <value>`` with ``bad_line`` inserted at ``at``."""
    lines = [f'# TYPE g{i} gauge\ng{i}{{job="x"}} {value}' for i, value in enumerate(goods)]
    lines.insert(min(at, len(lines)), bad_line)
    return ("\n".join(lines) + "\n").encode()


def expected(goods: list[str]) -> dict[str, float]:
    return {f"g{i}": float(value) for i, value in enumerate(goods)}


@fuzz(100)
@given(
    goods=st.lists(good_numbers, min_size=1, max_size=6),
    bad=st.sampled_from(BAD_VALUES),
    at=st.integers(0, 6),
    typed=st.sampled_from(["", "# TYPE bad gauge\n", "# TYPE bad untyped\n"]),
    timestamp=st.sampled_from(["", " 1700000000000"]),
)
def test_a_bad_value_is_named_and_the_good_ones_are_kept(
    endpoint: Endpoint, goods: list[str], bad: str, at: int, typed: str, timestamp: str
) -> None:
    body = page(goods, f'{typed}bad{{job="x"}} {bad}{timestamp}', at)
    got = scrape(scraper(endpoint), endpoint, body, NOW)
    assert isinstance(got, PartialCollection), got
    assert "bad" in str(got)
    assert {s.key.metric: s.value for s in got.samples} == expected(goods)


@fuzz(50)
@given(
    goods=st.lists(good_numbers, min_size=1, max_size=6),
    nan=st.sampled_from(NAN_VALUES),
    at=st.integers(0, 6),
    typed=st.sampled_from(["", "# TYPE bad gauge\n", "# TYPE bad untyped\n"]),
)
def test_a_nan_value_is_no_value_and_the_scrape_a_success(
    endpoint: Endpoint, goods: list[str], nan: str, at: int, typed: str
) -> None:
    body = page(goods, f'{typed}bad{{job="x"}} {nan}', at)
    got = scrape(scraper(endpoint), endpoint, body, NOW)
    assert not isinstance(got, Exception), got
    assert {s.key.metric: s.value for s in got} == expected(goods)


def _unreadable(token: str) -> bool:
    """Whether the parser refuses ``token`` as a value (float() does, or an underscore)."""
    if "_" in token:
        return True
    try:
        float(token)
    except ValueError:
        return bool(token.strip())
    return False


def _parses(line: str) -> bool:
    """Whether prometheus_client reads ``line`` (then it is not malformed)."""
    try:
        list(text_string_to_metric_families(line + "\n"))
    except ValueError:
        return False
    return True


# a sample line the parser cannot read at all: a value or timestamp that is not a number,
# broken braces or quotes
MALFORMED = [
    *(f'bad{{job="x"}} {t}' for t in [*BAD_NUMBER_TOKENS, *LOOKALIKE_TOKENS] if _unreadable(t)),
    'bad{job="x"} 1 notatime',
    'bad{job="x" 1',
    'bad{job="x} 1',
    "bad{job=x} 1",
    "bad{=} 1",
    "bad",
    "{} 1",
]
MALFORMED = [line for line in MALFORMED if not _parses(line)]


def malformed_property(
    endpoint: Endpoint, goods: list[str], bad: str, at: int, *, all_kept: bool = True
) -> None:
    """Good gauges around one line the parser cannot read: the page is refused by name,
    and the series kept are good ones with their exact values (all of them, unless
    ``all_kept`` is False)."""
    got = scrape(scraper(endpoint), endpoint, page(goods, bad, at), NOW)
    assert isinstance(got, SourceError), got
    kept = {s.key.metric: s.value for s in getattr(got, "samples", [])}
    if all_kept:
        assert kept == expected(goods)
    assert kept.items() <= expected(goods).items()


@fuzz(60)
@given(
    goods=st.lists(good_numbers, min_size=1, max_size=4),
    bad=st.sampled_from(MALFORMED),
    at=st.integers(0, 4),
)
@example(goods=["1"], bad='bad{job="x"} 0x10', at=1)
def test_a_malformed_line_is_named_and_the_good_ones_are_kept(
    endpoint: Endpoint, goods: list[str], bad: str, at: int
) -> None:
    malformed_property(endpoint, goods, bad, at)
