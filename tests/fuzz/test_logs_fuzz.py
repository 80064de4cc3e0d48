"""Fuzz the logs source: regexes, encodings, and whatever bytes a log file receives.

Each example writes a fresh file, builds a source reading it from its start, collects,
appends more bytes (a partial line, a rotation or a truncation) and collects again.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from anomon.config import LogsSourceConfig
from anomon.errors import SourceError
from anomon.sources import LogsSource, PartialCollection
from tests.fuzz import BAD_NUMBER_TOKENS, check_refusal, fuzz, nasty_text, number_tokens

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_names = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def source(path: Path, patterns: dict[str, Any], **config: Any) -> LogsSource:
    return LogsSource(
        LogsSourceConfig.model_validate(
            {
                "name": "log",
                "kind": "logs",
                "path": str(path),
                "patterns": patterns,
                "from_start": True,
                **config,
            }
        )
    )


def collect(made: LogsSource) -> Any:
    """The samples, or the refusal (checked)."""
    try:
        return made.collect(NOW)
    except SourceError as refused:  # PartialCollection included
        check_refusal(refused)
        return refused


# ---- regexes from pieces that cannot backtrack without end, over bytes of any kind

PIECES = [
    "^", "$", r"\s+", r"\S+", "[a-z]+", r"\d+", r"\w*", ".", ".*?", "(?:x|y)", r"\b", "ERROR",
    "v=", " ", r"\x00", r"\u2028", "é", "[^ ]*", "(?i:error)", r"\.", "a{2,3}",
]  # fmt: skip
VALUE_GROUPS = ["(?P<value>[^ ]+)", r"(?P<value>\S*)", r"(?P<value>[-+.\deE_x]+)", "(?P<value>.*)"]


@st.composite
def regexes(draw: st.DrawFn, *, value: bool) -> str:
    pieces = draw(st.lists(st.sampled_from(PIECES), max_size=4))
    if value:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from(VALUE_GROUPS)))
        if draw(st.booleans()):  # another group before it: findall returns tuples
            pieces.insert(0, "(x)?")
    return "".join(pieces) or "x"


patterns = st.dictionaries(
    st.sampled_from(["p1", "p2", "p3"]),
    st.one_of(
        regexes(value=False),
        st.tuples(regexes(value=True), st.sampled_from(["sum", "mean", "max", "min"])).map(
            lambda t: {"regex": t[0], "aggregate": t[1]}
        ),
    ),
    min_size=1,
)
token_lines = st.lists(
    st.tuples(st.sampled_from(["v=", "ERROR v=", "x", ""]), number_tokens()).map("".join)
)
contents = st.one_of(
    st.binary(max_size=200),
    token_lines.map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(nasty_text()).map(lambda lines: "\r\n".join(lines).encode("utf-8", "surrogatepass")),
)
ENCODINGS = ["utf-8", "latin-1", "ascii", "utf-16-le", "utf-8-sig", "cp1252", "shift_jis"]
ODD_CODECS = ["utf-16", "utf-32", "idna", "punycode", "base64", "zlib", "rot13", "hex"]


def rotate(path: Path, data: bytes) -> None:
    os.replace(path, path.with_suffix(".old"))
    path.write_bytes(data)


def truncate(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


CHANGES: list[Callable[[Path, bytes], None]] = [append, rotate, truncate]


@fuzz(300)
@given(
    patterns=patterns,
    first=contents,
    then=contents,
    change=st.sampled_from(CHANGES),
    encoding=st.sampled_from(ENCODINGS + ODD_CODECS),
    max_bytes=st.sampled_from([1024, 64 * 1024 * 1024]),
)
@example(
    patterns={"p1": "x"},
    first=b"a\n",
    then=b"",
    change=append,
    encoding="base64",
    max_bytes=1024,
)
@example(
    patterns={"p1": "x"},
    first=b"a\n",
    then=b"",
    change=append,
    encoding="utf-16",
    max_bytes=1024,
)
def test_any_bytes_under_any_regex_give_samples_or_a_named_refusal(
    folder: Path,
    patterns: dict[str, Any],
    first: bytes,
    then: bytes,
    change: Callable[[Path, bytes], None],
    encoding: str,
    max_bytes: int,
) -> None:
    path = folder / f"app{next(_names)}.log"
    path.write_bytes(first)
    try:
        made = source(path, patterns, encoding=encoding, max_bytes=max_bytes)
    except SourceError as refused:  # an encoding that is no text encoding
        assert encoding in ODD_CODECS
        check_refusal(refused)
        return
    try:
        for _ in range(2):
            got = collect(made)
            samples = got.samples if isinstance(got, PartialCollection) else got
            if isinstance(samples, list):
                assert {s.key.metric for s in samples} <= set(patterns)
                assert all(math.isfinite(s.value) for s in samples)
            change(path, then)
    finally:
        made.close()


# ---- bad values next to good ones

goods = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
# what float() refuses or makes infinite (every one of them a single \S+ token)
BAD = [token for token in BAD_NUMBER_TOKENS if " " not in token]
AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "mean": lambda values: math.fsum(values) / len(values),
    "max": max,
    "min": min,
}


@fuzz(150)
@given(
    good=st.lists(goods, min_size=1, max_size=12),
    bad=st.lists(st.sampled_from(BAD), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
    aggregate=st.sampled_from(sorted(AGGREGATE)),
)
def test_bad_values_are_named_and_the_good_ones_aggregated(
    folder: Path,
    good: list[float],
    bad: list[str],
    order: Any,
    aggregate: str,
) -> None:
    lines = [f"v={value!r}" for value in good] + [f"v={token}" for token in bad]
    order.shuffle(lines)
    path = folder / f"app{next(_names)}.log"
    path.write_text("\n".join(lines) + "\nunrelated\n")
    made = source(
        path,
        {"value": {"regex": r"v=(?P<value>\S+)", "aggregate": aggregate}, "lines": "^v="},
    )
    try:
        got = collect(made)
    finally:
        made.close()
    assert isinstance(got, PartialCollection), got
    assert f"value: {len(bad)} value(s) not a finite number" in str(got)
    values = {s.key.metric: s.value for s in got.samples}
    assert values == {"value": AGGREGATE[aggregate](good), "lines": float(len(lines))}


# ---- regressions: codecs the config accepts that are no text encodings (fixed in logs.py)


def test_it_refuses_an_encoding_that_is_no_text_encoding(folder: Path) -> None:
    path = folder / "base64.log"
    path.write_bytes(b"a\n")
    with pytest.raises(SourceError, match="'base64' is not a text encoding"):
        source(path, {"p": "a"}, encoding="base64")


def test_it_names_a_codec_that_cannot_replace_what_it_cannot_decode(folder: Path) -> None:
    path = folder / "utf16.log"
    path.write_bytes(b"a\n")
    made = source(path, {"p": "a"}, encoding="utf-16")
    try:
        with pytest.raises(SourceError, match="cannot decode as 'utf-16'"):
            made.collect(NOW)
    finally:
        made.close()
