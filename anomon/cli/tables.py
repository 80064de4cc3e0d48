"""Rows to standard output as an aligned text table, JSON or CSV.

Every list command prints through :func:`emit`, so ``--format json`` and ``--format csv``
give the same columns as the table, with full values (times in ISO 8601, UTC).

Stored names, labels and error texts come from scraped sources, so nothing stored reaches a
terminal raw: text output passes through :func:`escape_controls`, JSON escapes every
non-ASCII character, and CSV text cells that a spreadsheet would run as a formula are
neutralised by :func:`_csv_text` (OWASP's rule).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TextIO

from anomon.model import CONTROLS, escape_controls

__all__ = ["CONTROLS", "Row", "as_json", "cell_text", "emit", "escape_controls", "text_table"]

Row = Mapping[str, object]

# OWASP CSV injection: a text cell starting with one of these is a formula to a spreadsheet
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def emit(
    rows: Sequence[Row],
    fmt: str,
    *,
    columns: Sequence[str],
    empty: str,
    out: TextIO | None = None,
) -> None:
    """Print ``rows`` (each with exactly ``columns``) as ``fmt``: text, json or csv.

    ``empty`` is the line a text table prints when there are no rows; JSON prints ``[]``
    and CSV only its header.
    """
    stream = out or sys.stdout
    if fmt == "json":
        stream.write(as_json([dict(r) for r in rows]) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    elif rows:
        stream.write(text_table(rows))
    else:
        stream.write(empty + "\n")


def text_table(rows: Sequence[Row]) -> str:
    """A header and one line per row, columns aligned; numbers to the right."""
    headers = list(rows[0])
    cells = [[cell_text(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    numeric = [_is_numeric([row[h] for row in rows]) for h in headers]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(c) for c in cells)]) + "\n"


def _is_numeric(column: list[object]) -> bool:
    present = [v for v in column if v is not None]
    return bool(present) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in present
    )


def cell_text(value: object) -> str:
    """A value as a person reads it: minutes, rounded scores, ``-`` for nothing.

    Text is passed through :func:`escape_controls`: a cell is always one printable line.
    """
    return escape_controls(_plain_text(value))


def _plain_text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def _csv_cell(value: object) -> object:
    """A CSV cell: times in ISO 8601, label maps as JSON, text made formula-safe.

    Numbers stay numbers (a negative number is written as ``-1.5``, which no spreadsheet
    runs); only text cells are neutralised, so a label value ``"-5"`` reads ``'-5``.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return _csv_text(json.dumps(value, sort_keys=True))
    if isinstance(value, str):
        return _csv_text(value)
    return value


def _csv_text(text: str) -> str:
    """Prefix a text cell that a spreadsheet would read as a formula with ``'`` (OWASP).

    A carriage return is written as ``\\r``: with ``\\n`` line ends Python's CSV writer
    leaves a cell holding one unquoted, and spreadsheets would split the row there.
    """
    text = "'" + text if text.startswith(_FORMULA_START) else text
    return text.replace("\r", "\\r")


def as_json(value: object) -> str:
    """``value`` as indented JSON, datetimes in ISO 8601, NaN and infinities as null
    (JSON has none; strict parsers such as jq refuse them)."""
    return json.dumps(_finite(value), indent=2, default=_iso, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
