"""``kind = "logs"``: the lines appended to one log file that match named regexes.

Each collection reads what was appended since the previous one, at most ``max_bytes``
(the rest waits for the next collection). The first collection starts at the end of the
file and counts nothing already there, unless ``from_start``. The file is followed like
``tail -F``: when the path names a new file (rotation), the old one is read to its end
first and the new one from its start; when the file is shorter than the position read
(truncation) or was rewritten in place, reading starts again at 0 (:mod:`.tail`). A
missing file fails the collection with ``<path>: no such file`` and is tried again next
cycle; a file that appears later is new,
so it is read from its start. A last line without its newline waits for it; a file that
ends there (rotated away or truncated) ends that line.

Per pattern: ``count`` gives the number of new lines that match (a line counts once;
0 when none does) at every collection. ``sum``, ``mean``, ``max`` and ``min`` aggregate
``float(match["value"])`` over every match in the new lines, and give no sample when
nothing matched; a value that is not a finite number is skipped and named in the
collection's error line. Bytes are decoded with ``encoding`` (undecodable bytes become
U+FFFD; an ``encoding`` that is no text encoding, such as ``base64``, is refused, and
a codec that cannot replace, such as ``utf-16`` without a byte order mark, fails the
collection by name); lines end at ``\\n`` and a ``\\r`` before it is dropped. A regex should match
within one line: counts test each line alone, but values are searched in the whole chunk
at once (for speed), so ``\\s`` or ``[^x]`` could reach across a newline there.
"""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter

import regex

from anomon.config import LogsSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import PartialCollection, Source
from anomon.sources.tail import FileTail
from anomon.timeutil import format_duration, to_epoch

_AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "mean": lambda values: math.fsum(values) / len(values),
    "max": max,
    "min": min,
}


class LogsSource(Source, config=LogsSourceConfig):
    """Count and aggregate regex matches in the lines appended to one log file."""

    def __init__(self, config: LogsSourceConfig) -> None:
        super().__init__(config)
        self._config = config
        self._labels = {"file": config.path, **config.labels}
        self._info = SeriesInfo(
            source=config.name, entity=config.entity or config.name, kind=SeriesKind.CUSTOM
        )
        # values are searched in the whole chunk, where ^ and $ must still mean a line's ends
        self._patterns = {
            name: (regex.compile(pattern.regex, regex.MULTILINE), pattern.aggregate)
            for name, pattern in config.patterns.items()
        }
        self._tail = _Lines(
            config.path,
            encoding=config.encoding,
            max_bytes=config.max_bytes,
            from_start=config.from_start,
        )

    def collect(self, now: datetime) -> list[Sample]:
        """Return one sample per pattern for the lines appended since the last collection.

        Raises SourceError when the file is missing or unreadable; PartialCollection when
        some values were not finite numbers, or when the file vanished after its last
        lines were read (those are still counted).
        """
        try:
            text, found = self._tail.read()
        except OSError as exc:
            raise SourceError(f"{self._config.path}: cannot read ({exc.strerror or exc})") from None
        except UnicodeError as exc:  # a codec that refuses errors="replace" (utf-16, idna)
            reason = repr(str(exc)[:80])[1:-1]
            raise SourceError(
                f"{self._config.path}: cannot decode as {self._config.encoding!r} ({reason})"
            ) from None
        if not found and not text:
            raise SourceError(f"{self._config.path}: no such file")
        samples, problems = self._measure(text, to_epoch(now))
        if not found:
            problems.insert(0, "no such file")
        if problems:
            raise PartialCollection(f"{self._config.path}: {'; '.join(problems)}", samples)
        return samples

    def close(self) -> None:
        """Close the log file."""
        self._tail.close()

    def _measure(self, text: str, ts: int) -> tuple[list[Sample], list[str]]:
        """Return the samples of every pattern over ``text`` and the problems met."""
        lines = text.split("\n")
        lines.pop()  # text ends with a newline, so the last piece is empty
        samples: list[Sample] = []
        problems: list[str] = []
        # a pattern that backtracks without end (`(x+x+)+y` on a long line) must not hang
        # the collection: each pattern has an equal share of the source's timeout
        share = self._config.timeout / max(len(self._patterns), 1)
        for name, (pattern, aggregate) in self._patterns.items():
            deadline = time.monotonic() + share.total_seconds()
            try:
                if aggregate == "count":
                    value: float | None = float(_count(pattern, lines, deadline))
                else:
                    value = _aggregate(name, pattern, aggregate, text, problems, deadline)
            except TimeoutError:
                problems.append(
                    f"{name}: matching took longer than its share of the timeout "
                    f"({format_duration(share)}): skipped"
                )
                continue
            if value is not None:
                key = SeriesKey.of(name, self._labels)
                samples.append(Sample(key, self._info, ts, value))
        return samples, problems


def _left(deadline: float) -> float:
    """Seconds until ``deadline``; raise TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _count(pattern: regex.Pattern[str], lines: list[str], deadline: float) -> int:
    """How many of ``lines`` ``pattern`` finds something in, before ``deadline``."""
    return sum(1 for line in lines if pattern.search(line, timeout=_left(deadline)))


def _aggregate(
    name: str,
    pattern: regex.Pattern[str],
    aggregate: str,
    text: str,
    problems: list[str],
    deadline: float,
) -> float | None:
    """Return ``aggregate`` of the values ``pattern`` captures in ``text``, None if none.

    Values that are not finite numbers are left out and described in ``problems``.
    """
    numbers, bad = _numbers(_captured(pattern, text, deadline))
    if bad:
        problems.append(f"{name}: {len(bad)} value(s) not a finite number, first: {bad[0][:40]!r}")
    if not numbers:
        return None
    try:
        value = _AGGREGATES[aggregate](numbers)
    except OverflowError:  # fsum of huge values: a Sample must be finite
        problems.append(f"{name}: {aggregate} is not a finite number")
        return None
    return value


def _captured(pattern: regex.Pattern[str], text: str, deadline: float) -> list[str]:
    """Return the text of group ``value`` in every match of ``pattern`` in ``text``.

    findall keeps the loop in C; a group that took no part in a match gives "".
    Raises TimeoutError past ``deadline``.
    """
    found = pattern.findall(text, timeout=_left(deadline))
    if pattern.groups == 1:
        return found
    return list(map(itemgetter(pattern.groupindex["value"] - 1), found))


def _numbers(captured: list[str]) -> tuple[list[float], list[str]]:
    """Split captured texts into finite numbers and the texts that are not."""
    try:  # the common case, every value good, stays in C
        numbers = list(map(float, captured))
        if all(map(math.isfinite, numbers)):
            return numbers, []
    except ValueError:
        pass
    good: list[float] = []
    bad: list[str] = []
    for text in captured:
        number = _finite(text)
        if number is None:
            bad.append(text)
        else:
            good.append(number)
    return good, bad


def _finite(text: str) -> float | None:
    """Return ``text`` as a finite float, or None if it is not one."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class _Lines:
    """Decode the bytes a :class:`FileTail` reads into complete lines."""

    def __init__(self, path: str, *, encoding: str, max_bytes: int, from_start: bool) -> None:
        self._max_bytes = max_bytes
        try:
            codec = codecs.lookup(encoding)
        except LookupError:
            raise SourceError(f"{path}: unknown encoding {encoding!r}") from None
        # base64, zlib, rot13 ... decode bytes to bytes (or refuse errors="replace")
        if not codec._is_text_encoding:
            raise SourceError(f"{path}: {encoding!r} is not a text encoding")
        self._decoder = codec.incrementaldecoder(errors="replace")
        self._tail = FileTail(path, max_bytes=max_bytes, from_start=from_start)
        self._pending = ""  # the start of a line whose newline has not been read yet

    def read(self) -> tuple[str, bool]:
        """Return the new complete lines (each ending in a newline) and whether the path exists.

        Reads at most ``max_bytes`` bytes in all. Raises OSError when the file cannot be read.
        """
        found = self._tail.read()
        parts = []
        for piece in found.pieces:
            if piece.restart:  # truncated or a new file: a line left open ends there
                parts.append(self._end_line())
            parts.append(self._lines(piece.data))
            if piece.ends_file:
                parts.append(self._end_line())
        return "".join(parts).replace("\r\n", "\n"), found.exists

    def close(self) -> None:
        """Close the file being read, if any."""
        self._tail.close()

    def _lines(self, data: bytes) -> str:
        """Decode ``data`` after what is pending; return its complete lines, keep the rest."""
        text = self._pending + self._decoder.decode(data)
        cut = text.rfind("\n") + 1
        if len(text) - cut > self._max_bytes:  # a line that never ends: cut it, bound memory
            self._pending = ""
            return text + "\n"
        self._pending = text[cut:]
        return text[:cut]

    def _end_line(self) -> str:
        """Return the pending text as a complete line ("" if none) and reset the decoder."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._decoder.reset()
        self._pending = ""
        return rest + "\n" if rest else ""
