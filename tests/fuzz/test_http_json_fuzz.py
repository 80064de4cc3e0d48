"""Fuzz the http_json source: JSON bodies, field paths and values, timestamps.

One real HTTP server on 127.0.0.1 serves the module; each example changes the body it
answers with. The whole ``collect`` runs: fetch, ``load_json``, ``pick``, the number
and timestamp checks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from anomon.config import HttpJsonSourceConfig
from anomon.errors import SourceError
from anomon.sources import HttpJsonSource, PartialCollection
from tests.fuzz import BAD_NUMBER_TOKENS, check_refusal, fuzz, nasty_text, number_tokens
from tests.loopback import serve

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class Endpoint:
    """The one server of the module and the body it answers with now."""

    url: str
    client: httpx.Client
    body: bytes = b"{}"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    holder: list[Endpoint] = []
    with serve(lambda path: (200, holder[0].body)) as url, httpx.Client() as client:
        holder.append(Endpoint(f"{url}/stats", client))
        yield holder[0]


def collect(endpoint: Endpoint, body: bytes, **config: Any) -> list[Any]:
    """Serve ``body`` and collect it with a source configured by ``config``."""
    endpoint.body = body
    source = HttpJsonSource(
        HttpJsonSourceConfig.model_validate(
            {"name": "fuzz", "kind": "http_json", "url": endpoint.url, "timeout": "5s", **config}
        ),
        client=endpoint.client,
    )
    return source.collect(NOW)


# ---- JSON text, built by hand: huge number tokens and duplicate keys json.dumps cannot make


@dataclass(frozen=True)
class Raw:
    """JSON text inserted as is (a number token)."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as a list of pairs: keys may repeat."""

    pairs: tuple[tuple[str, Any], ...]


def to_json(node: Any) -> str:
    """JSON text of ``node`` (Raw tokens as they are, Obj pairs in order, repeats kept)."""
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in node.pairs) + "}"
    if isinstance(node, list):
        return "[" + ",".join(to_json(item) for item in node) + "]"
    return json.dumps(node)  # NaN and Infinity as JS tokens; lone surrogates as \ud800


KEYS = st.sampled_from(["a", "b", "t", "v", "x_1", "xé", ""])
PATHS = st.sampled_from(
    ["a", "b", "v", "a.b", "a.v", "b[0]", "b[1]", "a[0].v", "b[0].a", "x_1.v", "xé", "t", "a.b.v"]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(),
    nasty_text(),
    number_tokens().map(Raw),
    number_tokens(),  # the same, as JSON strings
)
documents = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(KEYS, inner), max_size=5).map(lambda pairs: Obj(tuple(pairs))),
    ),
    max_leaves=20,
)


def mangle(text: str, data: st.DataObject) -> bytes:
    """Encode ``text``; sometimes cut it, add invalid UTF-8, a BOM or odd whitespace."""
    body = text.encode("utf-8", "surrogatepass")
    how = data.draw(st.sampled_from(["as is", "cut", "bad utf-8", "bom", "spaces", "nul"]))
    if how == "cut":
        return body[: data.draw(st.integers(0, len(body)))]
    if how == "bad utf-8":
        at = data.draw(st.integers(0, len(body)))
        return (
            body[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
        )
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "spaces":
        return b"\n\t\r " + body + b" \x0b\x0c"
    if how == "nul":
        return body + b"\x00"
    return body


@fuzz(300)
@given(
    document=documents,
    fields=st.dictionaries(st.sampled_from(["m1", "m2", "m3", "m4"]), PATHS, min_size=1),
    timestamp=st.one_of(st.none(), PATHS),
    data=st.data(),
)
def test_any_body_gives_samples_or_a_named_refusal(
    endpoint: Endpoint,
    document: Any,
    fields: dict[str, str],
    timestamp: str | None,
    data: st.DataObject,
) -> None:
    body = mangle(to_json(document), data)
    try:
        samples = collect(endpoint, body, fields=fields, timestamp=timestamp)
    except PartialCollection as partial:
        check_refusal(partial)
        samples = partial.samples
    except SourceError as refused:
        check_refusal(refused)
        return
    assert {s.key.metric for s in samples} <= set(fields)
    assert all(math.isfinite(s.value) and isinstance(s.ts, int) for s in samples)


@fuzz(30)
@given(binary=st.binary(max_size=300))
def test_any_bytes_give_samples_or_a_named_refusal(endpoint: Endpoint, binary: bytes) -> None:
    try:
        collect(endpoint, binary, fields={"m": "a"})
    except SourceError as refused:  # PartialCollection included
        check_refusal(refused)


# ---- a bad value next to good ones: the bad one is named, the good ones are kept exactly


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:  # 5,000 digits: the int conversion limit, a JSON number still
        return re.fullmatch(r"-?[0-9]+", text) is not None
    return True


good_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(10**18), max_value=10**18).map(str),
)
bad_values = st.one_of(
    st.sampled_from([t for t in BAD_NUMBER_TOKENS if _is_json(t)]).map(Raw),
    st.sampled_from(BAD_NUMBER_TOKENS).map(json.dumps),  # as strings
    st.sampled_from(["null", "true", "false", "[]", "{}", "[1]", '{"a":1}', '""', '"\\u0000"']),
    st.just('"\\ud800"'),
    st.integers(1, 50).map(lambda depth: "[" * depth + "1" + "]" * depth),
    nasty_text().filter(lambda t: not _is_finite(t)).map(json.dumps),
).map(lambda v: v if isinstance(v, Raw) else Raw(v))


def _is_finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@fuzz(200)
@given(
    goods=st.lists(good_numbers, min_size=1, max_size=6),
    bad=bad_values,
    at=st.integers(min_value=0, max_value=6),
    nested=st.booleans(),
    quoted=st.booleans(),
)
def test_a_bad_value_is_named_and_the_good_ones_are_kept(
    endpoint: Endpoint, goods: list[str], bad: Raw, at: int, nested: bool, quoted: bool
) -> None:
    pairs: list[tuple[str, Any]] = [
        (f"g{i}", Raw(json.dumps(text) if quoted else text)) for i, text in enumerate(goods)
    ]
    pairs.insert(min(at, len(pairs)), ("bad", bad))
    document: Any = Obj(tuple(pairs))
    prefix = ""
    if nested:
        document, prefix = Obj((("x", [Obj((("y", document),))]),)), "x[0].y."
    fields = {f"g{i}": f"{prefix}g{i}" for i in range(len(goods))} | {"bad": f"{prefix}bad"}
    with pytest.raises(PartialCollection) as caught:
        collect(endpoint, to_json(document).encode(), fields=fields)
    message = check_refusal(caught.value)
    assert f"{prefix}bad:" in message
    got = {s.key.metric: s.value for s in caught.value.samples}
    assert got == {f"g{i}": float(text) for i, text in enumerate(goods)}


@fuzz(20)
@given(value=st.sampled_from(["1", "2.5"]), bad=st.sampled_from(["NaN", "1e400", "9" * 5000]))
def test_a_repeated_key_counts_its_last_value(endpoint: Endpoint, value: str, bad: str) -> None:
    body = f'{{"a":{bad},"a":{value},"b":{value},"b":{bad}}}'.encode()
    with pytest.raises(PartialCollection) as caught:
        collect(endpoint, body, fields={"a": "a", "b": "b"})
    assert "b:" in check_refusal(caught.value)
    assert [(s.key.metric, s.value) for s in caught.value.samples] == [("a", float(value))]


# ---- the timestamp field

timestamps = st.one_of(
    number_tokens().map(Raw),
    number_tokens().map(json.dumps).map(Raw),
    st.datetimes(timezones=st.timezones()).map(lambda d: Raw(json.dumps(d.isoformat()))),
    st.datetimes().map(lambda d: Raw(json.dumps(d.isoformat() + "Z"))),
    nasty_text().map(json.dumps).map(Raw),
    st.sampled_from(["null", "true", "[]", "{}"]).map(Raw),
)
# datetime.fromisoformat reads these, and converting them to UTC leaves datetime's range
EDGE_OF_TIME = Raw('"9999-12-31T23:59:59-01:00"')


def timestamp_property(endpoint: Endpoint, stamp: Raw) -> None:
    """A timestamp of any shape gives samples stamped with a whole number, or a refusal
    of the whole collection naming the timestamp."""
    body = f'{{"v": 1.5, "t": {stamp.text}}}'.encode("utf-8", "surrogatepass")
    try:
        samples = collect(endpoint, body, fields={"v": "v"}, timestamp="t")
    except SourceError as refused:
        message = check_refusal(refused)
        assert "timestamp" in message or "invalid JSON" in message, message
        return
    assert [(s.value, type(s.ts)) for s in samples] == [(1.5, int)]


@fuzz(200)
@given(stamp=timestamps)
@example(stamp=EDGE_OF_TIME)
def test_any_timestamp_gives_whole_seconds_or_a_named_refusal(
    endpoint: Endpoint, stamp: Raw
) -> None:
    timestamp_property(endpoint, stamp)
