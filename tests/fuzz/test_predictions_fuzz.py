"""Fuzz the predictions source in file mode: CSV and JSONL prediction logs.

Each example writes its log to a fresh file and collects it with a fresh source (the
tail, ``_parse``, ``epoch_seconds``, ``normalise`` and the window metrics all run), and
reads it again as a backfill (``collect_range``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from anomon.config import PredictionsSourceConfig
from anomon.errors import SourceError
from anomon.sources import PartialCollection, PredictionsSource
from tests.fuzz import (
    BAD_NUMBER_TOKENS,
    LOOKALIKE_TOKENS,
    check_refusal,
    fuzz,
    nasty_text,
    number_tokens,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOUR = 3600
START = int(NOW.timestamp()) - 10 * HOUR  # a window boundary, well inside the lookback
COLUMNS = ["ts", "prediction", "label", "score", "model", "version"]
_names = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predictions")


def write(folder: Path, kind: str, data: bytes) -> Path:
    """A fresh log file holding ``data`` (a new name each time: nothing is tailed twice)."""
    path = folder / f"log{next(_names)}.{kind}"
    path.write_bytes(data)
    return path


def outcome(path: Path, **config: Any) -> Any:
    """Collect ``path`` once: the samples, or the refusal (checked); then backfill it."""
    source = PredictionsSource(
        PredictionsSourceConfig.model_validate(
            {"name": "quality", "kind": "predictions", "path": str(path), **config}
        ),
        clock=lambda: NOW,
    )
    try:
        try:
            got: Any = source.collect(NOW)
        except SourceError as refused:  # PartialCollection included
            check_refusal(refused)
            got = refused
        try:
            source.collect_range(NOW - timedelta(days=1), NOW)
        except SourceError as refused:
            check_refusal(refused)
    finally:
        source.close()
    return got


# ---- logs of any shape


class RawNumber(str):
    """A JSON number token written as is (``1e400``, 5,000 digits)."""


def _json_number(token: str) -> bool:
    try:
        json.loads(token)
    except ValueError:
        return (
            re.fullmatch(r"-?[0-9]+", token) is not None
        )  # past the int conversion limit: still JSON
    return True


cells = st.one_of(
    number_tokens(),
    nasty_text(),
    st.sampled_from(["", "0", "1", "2", "0.5", "true", "null", "2026-11-22T02:00:00Z"]),
    st.integers(START - 2 * HOUR, START + 12 * HOUR).map(str),
)
JSON_NUMBER_TOKENS = [t for t in BAD_NUMBER_TOKENS + LOOKALIKE_TOKENS if _json_number(t)]
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(START - 2 * HOUR, START + 12 * HOUR),
    cells,
    st.sampled_from(JSON_NUMBER_TOKENS).map(RawNumber),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "ts"]), st.integers(), max_size=2),
)
column_names = st.one_of(st.sampled_from(COLUMNS), nasty_text(6))


def json_line(record: dict[str, Any]) -> str:
    parts = [
        f"{json.dumps(k)}:{v if isinstance(v, RawNumber) else json.dumps(v)}"
        for k, v in record.items()
    ]
    return "{" + ",".join(parts) + "}"


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@st.composite
def logs(draw: st.DrawFn) -> tuple[str, bytes]:
    """A CSV or JSONL log: mostly the expected columns, with nasty cells, names and lines."""
    kind = draw(st.sampled_from(["csv", "jsonl"]))
    columns = draw(st.lists(column_names, min_size=1, max_size=8))
    columns = draw(st.sampled_from([COLUMNS, columns, COLUMNS + columns]))
    if kind == "csv":
        rows = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns))))
        ragged = draw(st.lists(st.lists(cells, max_size=9), max_size=2))
        text = csv_text([columns, *rows, *ragged])
    else:
        records = draw(st.lists(st.fixed_dictionaries(dict.fromkeys(columns, json_values))))
        junk = draw(st.lists(st.one_of(nasty_text(), st.sampled_from(["[", "1", "[]"]))))
        text = "\n".join([*map(json_line, records), *junk]) + "\n"
    data = text.encode("utf-8", "surrogatepass")
    spoil = draw(st.sampled_from([b"", b"\xff\n", b"\x00", b"\xef\xbb\xbf", b"\r\n"]))
    return kind, draw(st.sampled_from([data + spoil, spoil + data]))


configs = st.fixed_dictionaries(
    {},
    optional={
        "score": st.just("score"),
        "group_by": st.lists(st.sampled_from(["model", "version", "missing"]), max_size=2),
        "average": st.sampled_from(["binary", "macro", "weighted"]),
        "min_labels": st.integers(1, 3),
        "label_delay": st.sampled_from(["0s", "1h"]),
        "pos_label": st.sampled_from(["1", "x"]),
    },
)


@fuzz(300)
@given(log=logs(), config=configs)
@example(log=("jsonl", b'{"ts": ' + b"9" * 5000 + b', "prediction": 1, "label": 1}\n'), config={})
@example(log=("jsonl", b'{"ts": ' + b"9" * 400 + b', "prediction": 1, "label": 1}\n'), config={})
@example(log=("jsonl", b'{"ts": 1e400, "prediction": 1, "label": 1}\n'), config={})
@example(log=("csv", b"ts,prediction,label\n1e30,1,1\n"), config={})
@example(log=("jsonl", b"[" * 100_000 + b"\n"), config={})
def test_any_log_gives_samples_or_a_named_refusal(
    folder: Path, log: tuple[str, bytes], config: dict[str, Any]
) -> None:
    kind, data = log
    got = outcome(write(folder, kind, data), **{"format": kind, "group_by": [], **config})
    samples = got.samples if isinstance(got, PartialCollection) else got
    if isinstance(samples, list):
        assert all(math.isfinite(s.value) for s in samples)


# ---- bad rows next to good ones: the bad ones are counted, the good ones count as alone


@st.composite
def good_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Labelled binary predictions with scores, in the 3 hours from START."""
    size = draw(st.integers(1, 12))
    return [
        {
            "ts": draw(st.integers(START, START + 3 * HOUR - 1)),
            "prediction": draw(st.sampled_from([0, 1])),
            "label": draw(st.sampled_from([0, 1])),
            "score": draw(st.floats(0, 1)),
            "model": draw(st.sampled_from(["churn", "fraud"])),
        }
        for _ in range(size)
    ]


# a time that is no time, a score that is no probability, no prediction at all
bad_changes = st.one_of(
    st.sampled_from(BAD_NUMBER_TOKENS).map(lambda t: {"ts": t}),
    st.sampled_from(["yesterday", "2026-13-45T00:00:00", "\x00", "1e30", "-1e30"]).map(
        lambda t: {"ts": t}
    ),
    st.sampled_from([*BAD_NUMBER_TOKENS, "2", "-0.5", "1.0000001"]).map(lambda t: {"score": t}),
    st.sampled_from([None, ""]).map(lambda t: {"prediction": t}),
)


def log_bytes(kind: str, rows: list[dict[str, Any]]) -> bytes:
    """Rows as a CSV (all text) or JSONL (numbers as numbers, bad tokens as raw JSON when
    they are JSON numbers, else as strings) log."""
    if kind == "csv":
        table = [[("" if row[c] is None else str(row[c])) for c in COLUMNS[:5]] for row in rows]
        return csv_text([COLUMNS[:5], *table]).encode()
    lines = []
    for row in rows:
        record = {
            k: RawNumber(v) if isinstance(v, str) and v and _json_number(v) else v
            for k, v in row.items()
        }
        lines.append(json_line(record) + "\n")
    return "".join(lines).encode()


CONFIG = {"score": "score", "group_by": ["model"], "min_labels": 1, "label_delay": "0s"}


@fuzz(200)
@given(
    kind=st.sampled_from(["csv", "jsonl"]),
    goods=good_rows(),
    bads=st.lists(st.tuples(st.integers(0, 12), bad_changes), min_size=1, max_size=3),
)
def test_bad_rows_are_counted_and_the_good_ones_kept(
    folder: Path,
    kind: str,
    goods: list[dict[str, Any]],
    bads: list[tuple[int, dict[str, Any]]],
) -> None:
    alone = outcome(write(folder, kind, log_bytes(kind, goods)), format=kind, **CONFIG)
    assert isinstance(alone, list), alone
    rows = list(goods)
    for at, change in bads:
        rows.insert(min(at, len(rows)), {**goods[at % len(goods)], **change})
    got = outcome(write(folder, kind, log_bytes(kind, rows)), format=kind, **CONFIG)
    assert isinstance(got, SourceError), got
    assert "row(s) with" in str(got)
    kept = got.samples if isinstance(got, PartialCollection) else []
    assert sorted(map(_point, kept)) == sorted(map(_point, alone))


def _point(sample: Any) -> tuple[str, str, int, float]:
    return sample.key.metric, sample.key.labels, sample.ts, sample.value


# ---- regressions of what this fuzzing found (fixed in predictions.py)

ROW = '"prediction": 1, "label": 1, "model": "churn"'


@pytest.mark.parametrize(
    "ts",
    ["9" * 5000, "9" * 400, "1e400", "1e30", "-1e30"],
    ids=["5000 digits", "400 digits", "1e400", "1e30", "-1e30"],
)
def test_a_time_no_datetime_can_hold_is_an_unreadable_row(folder: Path, ts: str) -> None:
    good = f'{{"ts": {START + 60}, {ROW}}}\n'
    log = write(folder, "jsonl", (good + f'{{"ts": {ts}, {ROW}}}\n').encode())
    got = outcome(log, format="jsonl", group_by=["model"], min_labels=1, label_delay="0s")
    assert isinstance(got, PartialCollection), got
    assert "1 row(s) with an unreadable ts" in str(got)
    assert {s.key.metric: s.value for s in got.samples}["predictions"] == 1.0


def test_a_csv_time_of_400_digits_is_an_unreadable_row(folder: Path) -> None:
    log = write(folder, "csv", f"ts,prediction,label\n{'9' * 400},1,1\n".encode())
    got = outcome(log, format="csv", group_by=[])
    assert isinstance(got, SourceError)
    assert "1 row(s) with an unreadable ts" in str(got)


def test_a_list_or_object_as_a_value_is_a_skipped_line(folder: Path) -> None:
    lines = f'{{"ts": {START}, {ROW}}}\n{{"ts": {START}, "prediction": [], "label": {{}}}}\n'
    got = outcome(write(folder, "jsonl", lines.encode()), format="jsonl", group_by=["model"])
    assert isinstance(got, SourceError)
    assert "1 line(s) with a list or object as a value" in str(got)


def test_a_log_nested_too_deeply_is_a_skipped_line(folder: Path) -> None:
    got = outcome(write(folder, "jsonl", b"[" * 100_000 + b"\n"), format="jsonl")
    assert isinstance(got, SourceError)
    assert "1 line(s) that are not JSON objects" in str(got)


def test_class_names_in_a_refusal_are_short_and_escaped(folder: Path) -> None:
    # a binary log of mostly other classes (one stray class is skipped, not refused)
    rows = f"ts,prediction,label\n{START},1,1\n{START},a,b\n{START},c,d\n"
    rows += f"{START},{'9' * 400},\x1b[31m\n"
    got = outcome(write(folder, "csv", rows.encode()), format="csv", group_by=[])
    assert isinstance(got, SourceError)
    message = check_refusal(got)
    assert "most of the log's classes" in message and "\\x1b[31m" in message
    assert len(message) < 300
