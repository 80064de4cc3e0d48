"""Alarm rules as a table of score sequences and the events they must give."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomon.config import AlarmConfig
from anomon.detect.rules import AlarmState, Event, apply_rules, repeat_damped

NAN = math.nan
# at threshold 80: far past it (opens at once), just past it (abnormal), in between
# (hysteresis), normal
HIGH, PAST, MID, LOW = 97.0, 85.0, 70.0, 10.0

CASES = [
    ("one row far past the threshold opens at once", {}, [LOW, HIGH, LOW], [(1, Event.OPEN)]),
    ("a lone row just past the threshold does not open", {}, [LOW, PAST, LOW, LOW, LOW], []),
    ("two rows past the threshold within three open", {}, [PAST, LOW, PAST], [(2, Event.OPEN)]),
    ("two rows past it but four apart do not", {}, [PAST, LOW, LOW, PAST, LOW], []),
    (
        "open_after = 1 and open_at_once = 100: any abnormal row opens",
        {"open_after": 1, "open_within": 1, "open_at_once": 100},
        [LOW, PAST],
        [(1, Event.OPEN)],
    ),
    (
        "five normal rows resolve",
        {},
        [HIGH, LOW, LOW, LOW, LOW, LOW, LOW],
        [(0, Event.OPEN), (5, Event.RESOLVE)],
    ),
    (
        "rows between the thresholds neither resolve nor count",
        {},
        [HIGH, MID, MID, MID, MID, MID, MID, LOW, LOW],
        [(0, Event.OPEN)],
    ),
    ("missing data never resolves", {}, [HIGH, *[NAN] * 20], [(0, Event.OPEN)]),
    ("missing data is never an anomaly", {}, [NAN, NAN, NAN], []),
    (
        "k of n: three abnormal rows within four",
        {"open_after": 3, "open_within": 4, "open_at_once": 100},
        [HIGH, LOW, HIGH, LOW, LOW, HIGH, HIGH, HIGH],
        [(7, Event.OPEN)],
    ),
    (
        "an abnormal row restarts the normal streak",
        {"resolve_after": 3},
        [HIGH, LOW, LOW, HIGH, LOW, LOW, LOW],
        [(0, Event.OPEN), (6, Event.RESOLVE)],
    ),
    (
        "reopening within the cooldown is the same incident, slower to resolve",
        {"resolve_after": 2, "cooldown": 5},
        [HIGH, LOW, LOW, LOW, HIGH, LOW, LOW, LOW, LOW],
        [(0, Event.OPEN), (2, Event.RESOLVE), (4, Event.REOPEN), (8, Event.RESOLVE)],
    ),
    (
        "opening after the cooldown is a new incident",
        {"resolve_after": 2, "cooldown": 1},
        [HIGH, LOW, LOW, LOW, LOW, HIGH],
        [(0, Event.OPEN), (2, Event.RESOLVE), (5, Event.OPEN)],
    ),
]


@pytest.mark.parametrize(("name", "options", "scores", "events"), CASES, ids=[c[0] for c in CASES])
def test_rules_turn_scores_into_incident_events(
    name: str, options: dict[str, int], scores: list[float], events: list[tuple[int, Event]]
) -> None:
    config = AlarmConfig.model_validate(options)
    assert apply_rules(scores, 80.0, config, AlarmState()) == events


def test_the_state_carries_across_batches() -> None:
    config = AlarmConfig(resolve_after=3)
    scores = [HIGH, LOW, LOW, LOW, HIGH, LOW]
    whole = apply_rules(scores, 80.0, config, AlarmState())
    state, batched, offset = AlarmState(), [], 0
    for size in (1, 2, 2, 1):
        chunk = scores[offset : offset + size]
        batched += [(offset + row, event) for row, event in apply_rules(chunk, 80.0, config, state)]
        offset += size
    assert batched == whole


def test_open_after_cannot_exceed_open_within() -> None:
    with pytest.raises(ValueError, match="open_after must be at most open_within"):
        AlarmConfig(open_after=3, open_within=2)


def test_a_lower_repeat_within_the_span_is_damped() -> None:
    scores = [10.0, 90.0, 10.0, 85.0, 10.0]
    assert repeat_damped(scores, span=5, factor=0.5).tolist() == [10.0, 90.0, 5.0, 42.5, 5.0]


def test_a_higher_peak_is_not_damped_and_the_first_row_never_is() -> None:
    scores = [90.0, 10.0, 95.0, 95.0]
    # a tie does not beat the maximum: the second 95 is a repeat
    assert repeat_damped(scores, span=5, factor=0.5).tolist() == [90.0, 5.0, 95.0, 47.5]


def test_a_repeat_outside_the_span_counts_again() -> None:
    scores = [90.0, 10.0, 10.0, 85.0]
    assert repeat_damped(scores, span=2, factor=0.5).tolist() == [90.0, 5.0, 5.0, 85.0]
    assert repeat_damped(scores, span=3, factor=0.5).tolist() == [90.0, 5.0, 5.0, 42.5]


def test_missing_scores_are_no_maximum_to_beat() -> None:
    scores = [NAN, NAN, 70.0, NAN, 60.0]
    got = repeat_damped(scores, span=2, factor=0.5)
    assert np.array_equal(got, [NAN, NAN, 70.0, NAN, 30.0], equal_nan=True)


def test_span_zero_or_no_rows_changes_nothing() -> None:
    scores = np.array([10.0, 90.0, 10.0, 85.0, NAN])
    assert np.array_equal(repeat_damped(scores, span=0, factor=0.5), scores, equal_nan=True)
    assert repeat_damped([], span=10, factor=0.5).size == 0
    assert np.array_equal(repeat_damped(scores, span=10, factor=1.0), scores, equal_nan=True)


def test_a_severe_row_opens_at_once_only_where_the_caller_allows_it() -> None:
    from anomon.config import AlarmConfig
    from anomon.detect.rules import AlarmState, Event, apply_rules

    config = AlarmConfig()
    scores = [0.0, 100.0, 0.0, 0.0, 100.0, 99.0, 0.0]
    assert apply_rules(scores, 80.0, config, AlarmState()) == [(1, Event.OPEN)]
    allowed = [True, False, True, True, False, False, True]  # False: a flat baseline
    # the lone severe row waits; two of three open as ever
    assert apply_rules(scores, 80.0, config, AlarmState(), at_once=allowed) == [(5, Event.OPEN)]
