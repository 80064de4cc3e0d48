"""Time helpers: UTC clocks, epoch seconds and human durations (``15s``, ``5m``, ``7d``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# ASCII digits only: \d would also take Arabic-Indic and other Unicode digits, which float()
# reads as numbers
# a hundred years: any time now or a span ago stays a date (9999 at most), and every wait
# a timeout makes stays within what threads, sockets and timers take
LONGEST_DURATION = timedelta(days=36_500)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (the production clock)."""
    return datetime.now(UTC)


def require_aware(moment: datetime, what: str = "timestamp") -> datetime:
    """Return ``moment`` converted to UTC; raise ValueError if it has no time zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive: {moment.isoformat()}")
    return moment.astimezone(UTC)


def to_epoch(moment: datetime) -> int:
    """Return whole seconds since the Unix epoch (rounded down) for an aware datetime."""
    aware = require_aware(moment)
    return (aware - _EPOCH) // timedelta(seconds=1)


def from_epoch(seconds: int) -> datetime:
    """Return the aware UTC datetime of ``seconds`` since the Unix epoch."""
    return _EPOCH + timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """Parse ``500ms``, ``15s``, ``5m``, ``1h30m``, ``7d`` or ``2w`` into a timedelta.

    Raises ValueError naming what was expected and what arrived.
    """
    compact = text.strip().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"expected a duration such as 15s, 5m, 1h30m or 7d (units ms, s, m, h, d, w), "
            f"got: {text!r}"
        )
    try:
        found = sum(
            (float(number) * _UNITS[unit] for number, unit in _PART.findall(compact)),
            timedelta(),
        )
    except OverflowError:  # past timedelta's 999999999 days
        found = LONGEST_DURATION * 2
    if found > LONGEST_DURATION:
        raise ValueError(f"duration too long (at most {LONGEST_DURATION.days}d), got: {text!r}")
    return found


def format_duration(span: timedelta) -> str:
    """Format a timedelta the way :func:`parse_duration` reads it (``1h30m``, ``15s``)."""
    ms = span // timedelta(milliseconds=1)
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS[unit] // timedelta(milliseconds=1)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# An epoch number in milliseconds, microseconds or nanoseconds is told apart by its size:
# 10**11 seconds is the year 5138, but 10**11 milliseconds is 1973 (and so on).
_EPOCH_UNITS = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))


def epoch_seconds(number: float) -> int:
    """Whole epoch seconds of an epoch ``number`` in s, ms, µs or ns (told apart by size:
    any of them from 1973 to 5138), so a JavaScript or Java millisecond time is not
    stored as the year 58,900."""
    size = abs(number)
    for floor, per_second in _EPOCH_UNITS:
        if size >= floor:
            return int(number / per_second // 1)
    return int(number // 1)


def parse_instant(raw: object) -> int:
    """Return epoch seconds of ``raw``: an epoch number (seconds, or ms / µs / ns, see
    :func:`epoch_seconds`), a datetime or ISO 8601 text.

    A datetime or text without a zone is taken as UTC. Raises ValueError naming ``raw``.
    """
    if isinstance(raw, datetime):
        return to_epoch(raw if raw.tzinfo else raw.replace(tzinfo=UTC))
    if isinstance(raw, str):
        try:
            return parse_instant(float(raw))  # digits are epoch seconds, never a date
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time (epoch seconds or ISO 8601): {raw[:40]!r}") from None
        return parse_instant(moment)
    if isinstance(raw, bool):
        raise ValueError(f"not a time (epoch seconds or ISO 8601): {raw!r}")
    if not isinstance(raw, int | float):
        try:  # Decimal and numpy numbers
            raw = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"not a time (epoch seconds or ISO 8601): {raw!r}") from None
    if not math.isfinite(raw):
        raise ValueError(f"not a time (epoch seconds or ISO 8601): {raw!r}")
    return epoch_seconds(raw)
