"""The incident state machine and routing: pure tables of cases."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from anomon.alerts.incidents import track
from anomon.alerts.routing import (
    Silence,
    group_labels_of,
    matches,
    parse_matcher,
    route,
    silenced,
    stored_silence,
)
from anomon.config import AlertsConfig
from anomon.model import IncidentRecord
from anomon.timeutil import from_epoch

T0 = 1_795_000_000
TS = T0 + 60 * np.arange(10)


def _track(latest: IncidentRecord | None, scores: list[float], events: list[tuple[int, str]]):
    return track(latest, TS[: len(scores)], scores, events, threshold=80, critical=95)


def _stored(status: str, *, severity: str = "warning", peak: float = 85) -> IncidentRecord:
    return IncidentRecord(
        id=7,
        status=status,
        severity=severity,
        peak_score=peak,
        opened_at=from_epoch(T0 - 600),
        last_seen_at=from_epoch(T0 - 300),
        resolved_at=from_epoch(T0 - 120) if status == "resolved" else None,
        version=3,
    )


def test_it_opens_an_incident_with_its_peak_and_one_firing_notice() -> None:
    (episode,) = _track(None, [10, 85, 90, 20], [(1, "open")])
    assert episode.incident_id is None and episode.status == "firing"
    assert episode.opened_at == from_epoch(int(TS[1]))
    assert episode.last_seen_at == from_epoch(int(TS[2]))
    assert (episode.peak_score, episode.severity) == (90, "warning")
    assert episode.notices == [("firing", int(TS[1]))]


def test_a_new_incident_that_turns_critical_still_sends_one_notice() -> None:
    (episode,) = _track(None, [85, 97], [(0, "open")])
    assert episode.severity == "critical"
    assert episode.notices == [("firing", int(TS[0]))]


def test_it_resolves_a_stored_incident_under_its_version() -> None:
    (episode,) = _track(_stored("firing"), [10, 10, 10], [(2, "resolve")])
    assert (episode.incident_id, episode.version) == (7, 3)
    assert episode.status == "resolved" and episode.resolved_at == from_epoch(int(TS[2]))
    assert episode.notices == [("resolved", int(TS[2]))]


def test_a_firing_incident_that_turns_critical_is_notified_again() -> None:
    (episode,) = _track(_stored("firing"), [88, 99], [])
    assert (episode.severity, episode.peak_score) == ("critical", 99)
    assert episode.notices == [("firing", int(TS[1]))]


def test_a_higher_peak_of_the_same_severity_updates_without_a_notice() -> None:
    (episode,) = _track(_stored("firing"), [90], [])
    assert episode.peak_score == 90 and episode.notices == []


def test_nothing_new_on_a_quiet_firing_incident_writes_nothing() -> None:
    assert _track(_stored("firing"), [50, float("nan")], []) == []


def test_a_reopen_fires_the_last_resolved_incident_again() -> None:
    (episode,) = _track(_stored("resolved"), [85], [(0, "reopen")])
    assert episode.incident_id == 7 and episode.status == "firing"
    assert episode.resolved_at is None
    assert episode.notices == [("firing", int(TS[0]))]


def test_open_resolve_and_reopen_in_one_cycle_is_one_new_incident() -> None:
    scores = [85, 10, 10, 86, 10]
    events = [(0, "open"), (2, "resolve"), (3, "reopen")]
    (episode,) = _track(None, scores, events)
    assert episode.incident_id is None and episode.status == "firing"
    assert [event for event, _ in episode.notices] == ["firing", "resolved", "firing"]


def test_open_resolve_open_in_one_cycle_is_two_incidents() -> None:
    first, second = _track(None, [85, 10, 86], [(0, "open"), (1, "resolve"), (2, "open")])
    assert first.status == "resolved" and second.status == "firing"


ALERTS = AlertsConfig.model_validate(
    {
        "receiver": "ops",
        "receivers": [
            {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:1/ops"},
            {"name": "pager", "kind": "webhook", "url": "http://127.0.0.1:1/pager"},
            {"name": "ml", "kind": "email", "to": ["ml@example.com"]},
        ],
        "routes": [
            {
                "receiver": "pager",
                "match": {"severity": "critical"},
                "continue": True,
                "group_by": ["metric"],
                "group_wait": "0s",
            },
            {"receiver": "ml", "match_re": {"metric": "accuracy|f1"}, "repeat_interval": "1h"},
        ],
    }
)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"metric": "latency", "severity": "warning"}, ["ops"]),  # the default
        ({"metric": "accuracy", "severity": "warning"}, ["ml"]),
        ({"metric": "accuracy", "severity": "critical"}, ["pager", "ml"]),  # continue
        ({"metric": "f1x", "severity": "warning"}, ["ops"]),  # regex matches whole values
    ],
)
def test_routes_pick_receivers_first_match_unless_continue(
    labels: dict[str, str], receivers: list[str]
) -> None:
    assert [d.receiver for d in route(labels, ALERTS)] == receivers


def test_a_route_sets_its_group_and_timing_and_inherits_the_rest() -> None:
    pager, ml = route({"metric": "accuracy", "severity": "critical", "entity": "churn"}, ALERTS)
    assert pager.group_labels == {"metric": "accuracy"}
    assert pager.group_wait == timedelta(0)
    assert pager.repeat_interval == timedelta(hours=4)  # Alertmanager's default
    assert ml.group_labels == {"entity": "churn"} and ml.repeat_interval == timedelta(hours=1)
    assert pager.group_key != ml.group_key


def test_group_keys_are_alertmanagers_and_survive_reordering_the_routes() -> None:
    labels = {"metric": "accuracy", "severity": "critical", "entity": "churn"}
    pager, ml = route(labels, ALERTS)
    assert pager.group_key == '{}/{severity="critical"}:{metric="accuracy"}'
    assert ml.group_key == '{}/{metric=~"accuracy|f1"}:{entity="churn"}'
    assert group_labels_of(ml.group_key) == {"entity": "churn"}
    first, second = ALERTS.routes
    swapped = [second.model_copy(update={"continue_": True}), first]  # both still match
    reordered = ALERTS.model_copy(update={"routes": swapped})
    assert {d.group_key for d in route(labels, reordered)} == {pager.group_key, ml.group_key}
    (default,) = route({"metric": "latency", "severity": "warning", "entity": "churn"}, ALERTS)
    assert default.group_key == '{}:{entity="churn"}'
    # keys stored before route paths are still read
    assert group_labels_of('route1:{"entity":"churn"}') == {"entity": "churn"}
    # a value with quotes, braces and colons survives the round trip
    odd = {"metric": 'a"b:{c="d"}', "severity": "critical", "entity": "x"}
    assert group_labels_of(route(odd, ALERTS)[0].group_key) == {"metric": 'a"b:{c="d"}'}


def test_silences_cover_matching_labels_inside_their_time_range() -> None:
    noon = datetime(2026, 12, 1, 12, tzinfo=UTC)
    silence = Silence({"entity": "churn"}, {"metric": "acc.*"}, noon, noon + timedelta(hours=1))
    labels = {"entity": "churn", "metric": "accuracy"}
    assert silenced(labels, [silence], noon + timedelta(minutes=5))
    assert not silenced(labels, [silence], noon + timedelta(hours=2))
    assert not silenced({**labels, "entity": "fraud"}, [silence], noon)
    stored = stored_silence(
        [
            {"name": "entity", "value": "churn", "op": "="},
            {"name": "metric", "value": "a.*", "op": "=~"},
        ],
        noon,
        noon + timedelta(hours=1),
    )
    assert stored.match == {"entity": "churn"} and stored.match_re == {"metric": "a.*"}
    assert matches({}, {"entity": ""}, {})  # a missing label is the empty value


def test_a_matcher_splits_at_its_label_names_operator_not_in_its_value() -> None:
    """``query=up{job=~"api"}`` silenced label ``query=up{job`` by a regex before, which
    matched nothing while the silence was shown active."""
    assert parse_matcher('query=up{job=~"api"}') == {
        "name": "query",
        "value": 'up{job=~"api"}',
        "op": "=",
    }
    assert parse_matcher("path=~/a=~b") == {"name": "path", "value": "/a=~b", "op": "=~"}
    for bad in ("bad name=x", "=x", "x", "1abc=x"):
        with pytest.raises(ValueError, match="a label name: letters, digits and _"):
            parse_matcher(bad)


def test_a_regex_that_backtracks_without_end_does_not_match_and_does_not_hang(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A silence's or route's regex runs with a deadline: overlapping repetition on a
    value of 40 characters would hold the interpreter for hours (every thread with it)."""
    noon = datetime(2026, 12, 1, 12, tzinfo=UTC)
    silence = Silence({}, {"mention": "(?:a|a)+(?:b|b)+"}, noon, noon + timedelta(hours=1))
    labels = {"mention": "a" * 40 + "!"}
    began = time.monotonic()
    assert not silenced(labels, [silence], noon)  # told, not silenced: it could not decide
    assert not silenced(labels, [silence], noon)  # decided once: not run again
    assert time.monotonic() - began < 2.0
    (record,) = [r for r in caplog.records if "took longer than" in r.getMessage()]
    assert "'(?:a|a)+(?:b|b)+'" in record.getMessage()
    assert "41 characters" in record.getMessage()
    assert silenced({"mention": "aab"}, [silence], noon)  # a value it decides in time


def test_a_taught_tolerance_zeroes_only_the_deviations_within_it_in_its_direction() -> None:
    import numpy as np

    from anomon.config import SeriesSettings
    from anomon.service.detection import with_effect
    from anomon.store import Tolerance

    own = np.array([[90.0], [95.0], [99.0], [97.0], [85.0]])
    expected = np.full((5, 1), 100.0)
    values = np.array([[150.0], [180.0], [260.0], [60.0], [np.nan]])
    rows = np.ones(5, dtype=bool)
    plain = SeriesSettings(threshold=80.0)
    assert with_effect(own, expected, values, rows, 0, plain).tolist() == own[:, 0].tolist()
    taught = Tolerance(1, up=96.0, down=0.0, incidents=1)
    got = with_effect(own, expected, values, rows, 0, plain, taught)
    # +50 and +80 are within +96: 0; +160 is not; -40 is the other direction: kept
    assert got.tolist() == [0.0, 0.0, 99.0, 97.0, 85.0]
