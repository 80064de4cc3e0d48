"""``kind = "http_json"``: numbers picked by path from a JSON stats endpoint.

One GET per collection (timeout from the config, body capped at ``max_bytes``), then
one series per configured field: ``latency.p99`` walks objects, ``metrics[0].value``
lists. A field that is missing, not a number, NaN, infinite or too large for a float
(a 400-digit integer) is skipped and named in the collection's error line; the other
fields are still stored. Errors never show the bearer token, header values or
credentials in the URL.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from anomon.config import HttpJsonSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.http import HttpSource, load_json, number_text
from anomon.timeutil import epoch_seconds, parse_instant, to_epoch

_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]|\[([A-Za-z_][\w-]*)=([^\]]*)\]")


class HttpJsonSource(HttpSource[HttpJsonSourceConfig], config=HttpJsonSourceConfig):
    """Collect the configured fields of one JSON endpoint. ``client`` is passed in for tests."""

    def collect(self, now: datetime) -> list[Sample]:
        """Fetch the endpoint and return one sample per readable field."""
        document = self._fetch()
        ts = self._timestamp(document, now)
        samples, problems = [], []
        for metric, path in self._config.fields.items():
            try:
                value = _number(pick(document, path), path)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            key = SeriesKey.of(metric, self._config.labels)
            samples.append(Sample(key, self._info, ts, value))
        return self._outcome(samples, problems)

    def _fetch(self) -> Any:
        config = self._config
        body = None if config.body is None else json.dumps(config.body).encode()
        try:
            return load_json(self._get(method=config.method, body=body))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise SourceError(f"{self._where}: invalid JSON ({str(exc)[:80]})") from None

    def _timestamp(self, document: Any, now: datetime) -> int:
        if self._config.timestamp is None:
            return to_epoch(now)
        try:
            raw = pick(document, self._config.timestamp)
            if isinstance(raw, str):  # ISO 8601; no zone means UTC
                return parse_instant(raw)
            return epoch_seconds(_number(raw, self._config.timestamp))  # s, ms, µs or ns
        except ValueError as exc:
            raise SourceError(f"{self._where}: timestamp: {exc}") from None
        except OverflowError:  # an ISO time whose zone moves it out of datetime's range
            path = self._config.timestamp
            shown = number_text(raw)
            raise SourceError(
                f"{self._where}: timestamp: {path}: not a representable time: {shown}"
            ) from None


def pick(document: Any, path: str) -> Any:
    """Return the value at ``path`` (``a.b[0].c``, ``[-1].value``,
    ``metrics[name=accuracy].value``); raise ValueError naming what is missing."""
    node = document
    for key, index, field, wanted in _STEP.findall(path):
        if key:
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"{path}: no field {key!r}")
            node = node[key]
        elif field:
            chosen = _select(node, field, wanted)
            if chosen is None:
                raise ValueError(f"{path}: no element with {field}={wanted}")
            node = chosen
        else:
            position = int(index)
            if not isinstance(node, list) or not -len(node) <= position < len(node):
                raise ValueError(f"{path}: no element [{position}]")
            node = node[position]
    return node


def _select(node: Any, field: str, wanted: str) -> Any:
    """The first object of the list ``node`` whose ``field`` reads as ``wanted``: text as
    it is, a number equal to ``wanted`` read as a number (``2`` and ``2.0`` alike), a
    boolean or null as JSON writes it; or None."""
    if not isinstance(node, list):
        return None
    try:
        number: float | None = float(wanted)
    except ValueError:
        number = None
    for item in node:
        if not isinstance(item, dict) or field not in item:
            continue
        value = item[field]
        if isinstance(value, str):
            found = value == wanted
        elif isinstance(value, float | int) and not isinstance(value, bool):
            found = number is not None and value == number
        else:
            found = json.dumps(value) == wanted
        if found:
            return item
    return None


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{path}: not a number: {json.dumps(value)[:40]}")
    try:
        number = float(value)  # from text never overflows: too large is inf
    except ValueError:
        raise ValueError(f"{path}: not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{path}: not a finite number: {number_text(value)}")
    return number
