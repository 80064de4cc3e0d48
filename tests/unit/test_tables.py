"""The list commands' output formats: text tables, strict JSON, CSV."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from anomon.cli.tables import as_json, emit, text_table


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_has_no_nan_and_iso_times() -> None:
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    value = {"score": float("nan"), "scores": {"forest": float("inf")}, "at": at, "n": [1.5]}
    assert _strict(as_json(value)) == {
        "score": None,
        "scores": {"forest": None},
        "at": "2026-12-01T09:30:00+00:00",
        "n": [1.5],
    }


def test_csv_of_no_rows_is_its_header_and_text_says_so() -> None:
    out = io.StringIO()
    emit([], "csv", columns=("id", "metric"), empty="nothing", out=out)
    assert out.getvalue() == "id,metric\n"
    out = io.StringIO()
    emit([], "text", columns=("id", "metric"), empty="nothing", out=out)
    assert out.getvalue() == "nothing\n"
    out = io.StringIO()
    emit([], "json", columns=("id",), empty="nothing", out=out)
    assert out.getvalue() == "[]\n"


def test_text_tables_align_numbers_right_and_show_nothing_as_a_dash() -> None:
    rows = [
        {"id": 7, "metric": "latency", "expected": None, "ack": True},
        {"id": 12, "metric": "accuracy", "expected": 0.9312345, "ack": False},
    ]
    assert text_table(rows).splitlines() == [
        "id  metric    expected  ack",
        " 7  latency          -  yes",
        "12  accuracy    0.9312  no",
    ]
