"""Recurring maintenance windows (issue 14, point 12): ``[[alerts.time_intervals]]`` as
Alertmanager's ``time_intervals``, named by a silence or a route's ``mute_time_intervals``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomon.alerts.routing import config_silences, muted_routes, route_path, silenced
from anomon.config import AlertsConfig, TimeIntervalConfig, load_config
from anomon.errors import ConfigError

NIGHTS = TimeIntervalConfig.model_validate(
    {
        "name": "nights",
        "weekdays": ["monday:friday"],
        "times": [{"start": "02:00", "end": "04:00"}],
        "time_zone": "Europe/Berlin",
    }
)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2026, 12, 7, 1, 30, tzinfo=UTC), True),  # Monday 02:30 in Berlin (UTC+1)
        (datetime(2026, 12, 7, 0, 59, tzinfo=UTC), False),  # 01:59 there
        (datetime(2026, 12, 7, 3, 0, tzinfo=UTC), False),  # 04:00 there: the end is excluded
        (datetime(2026, 12, 5, 1, 30, tzinfo=UTC), False),  # a Saturday
        (datetime(2026, 7, 6, 0, 30, tzinfo=UTC), True),  # summer time: UTC+2, 02:30 there
    ],
)
def test_an_interval_holds_on_its_weekdays_and_times_in_its_zone(
    moment: datetime, inside: bool
) -> None:
    assert NIGHTS.contains(moment) is inside


def test_a_weekday_range_may_wrap_and_no_times_is_the_whole_day() -> None:
    weekend = TimeIntervalConfig.model_validate({"name": "w", "weekdays": ["saturday:monday"]})
    assert weekend.contains(datetime(2026, 12, 7, 23, 59, tzinfo=UTC))  # Monday
    assert not weekend.contains(datetime(2026, 12, 8, 0, 0, tzinfo=UTC))  # Tuesday


def test_bad_intervals_and_unknown_names_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "anomon.toml"
    path.write_text(
        '[[alerts.time_intervals]]\nname = "x"\nweekdays = ["funday"]\ntime_zone = "Mars/Base"\n'
        'times = [{ start = "05:00", end = "04:00" }]\n'
        '[[alerts.silences]]\nmatch = { entity = "a" }\ntime_intervals = ["nightz"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    problems = [p.split(": ", 1)[0] for p in caught.value.problems]
    assert problems == [
        "alerts",
        "alerts.time_intervals[0].time_zone",
        "alerts.time_intervals[0].times[0]",
        "alerts.time_intervals[0].weekdays[0]",
    ], caught.value.problems
    assert "unknown time interval 'nightz' (time intervals: x)" in caught.value.problems[0]


ALERTS = AlertsConfig.model_validate(
    {
        "receiver": "ops",
        "receivers": [{"name": "ops", "kind": "email", "to": ["a@b"]}],
        "time_intervals": [NIGHTS.model_dump()],
        "silences": [{"match": {"entity": "batch"}, "time_intervals": ["nights"]}],
        "routes": [
            {"receiver": "ops", "match": {"kind": "quality"}, "mute_time_intervals": ["nights"]}
        ],
    }
)


def test_a_silence_with_an_interval_is_a_maintenance_window() -> None:
    silences = config_silences(ALERTS)
    labels = {"entity": "batch", "metric": "cpu"}
    assert silenced(labels, silences, datetime(2026, 12, 7, 1, 30, tzinfo=UTC))
    assert not silenced(labels, silences, datetime(2026, 12, 7, 12, 0, tzinfo=UTC))


def test_a_route_is_muted_only_within_its_intervals() -> None:
    path = route_path(ALERTS.routes[0])
    assert muted_routes(ALERTS, datetime(2026, 12, 7, 1, 30, tzinfo=UTC)) == {path}
    assert muted_routes(ALERTS, datetime(2026, 12, 7, 12, 0, tzinfo=UTC)) == set()
