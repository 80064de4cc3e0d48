from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from anomon.timeutil import (
    format_duration,
    from_epoch,
    parse_duration,
    parse_instant,
    require_aware,
    to_epoch,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15s", timedelta(seconds=15)),
        ("5m", timedelta(minutes=5)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_it_parses_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "15x", "s", "-5s", "5 minutes", "1h-30m", "15S"])
def test_it_rejects_bad_durations_naming_what_arrived(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["36501d", "5215w", "99999999999w", "876001h"])
def test_a_duration_past_a_hundred_years_is_refused(text: str) -> None:
    """Past it, now plus or minus the span is no date (``silence add --for 99999999w``,
    a retention, ``--since``) or a wait overflows (a heartbeat of 999999999d)."""
    with pytest.raises(ValueError, match=r"duration too long \(at most 36500d\)"):
        parse_duration(text)
    assert parse_duration("36500d") == timedelta(days=36_500)


@pytest.mark.parametrize("text", ["15s", "5m", "1h30m", "7d", "1d2h3m4s", "250ms"])
def test_it_formats_durations_it_can_read_back(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_it_converts_epoch_seconds_both_ways() -> None:
    moment = datetime(2026, 11, 22, 6, 30, 15, tzinfo=UTC)
    assert to_epoch(moment) == 1795329015
    assert from_epoch(to_epoch(moment)) == moment
    assert to_epoch(moment.astimezone(timezone(timedelta(hours=5)))) == 1795329015


def test_it_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_epoch(datetime(2026, 1, 1))  # noqa: DTZ001
    assert require_aware(datetime(2026, 1, 1, tzinfo=UTC)).tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1_795_000_000, 1_795_000_000),
        (1_795_000_000.9, 1_795_000_000),
        ("1795000000", 1_795_000_000),
        ("20261122", 20_261_122),  # digits are seconds, never a date
        ("2026-11-22T12:00:00Z", 1_795_348_800),
        ("2026-11-22T13:00:00+01:00", 1_795_348_800),
        ("2026-11-22 12:00:00", 1_795_348_800),  # no zone: UTC
        (datetime(2026, 11, 22, 12, 0), 1_795_348_800),  # noqa: DTZ001 - naive is UTC
        (1_795_348_800_123, 1_795_348_800),  # milliseconds (JavaScript, Java, MLflow)
        ("1795348800123", 1_795_348_800),
        (1_795_348_800_123_456, 1_795_348_800),  # microseconds
        (1_795_348_800_123_456_789, 1_795_348_800),  # nanoseconds (Go, InfluxDB)
        (99_999_999_999, 99_999_999_999),  # seconds up to the year 5138
        (100_000_000_000, 100_000_000),  # then milliseconds: 1973
    ],
)
def test_parse_instant_reads_numbers_datetimes_and_iso_text(raw: object, expected: int) -> None:
    assert parse_instant(raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", float("nan"), None, True, "inf"])
def test_parse_instant_names_what_is_not_a_time(raw: object) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_instant(raw)
