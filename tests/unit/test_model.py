from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anomon.model import Sample, SeriesInfo, SeriesKey, canonical_labels

label_sets = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6)


@given(label_sets)
def test_canonical_labels_do_not_depend_on_order(labels: dict[str, str]) -> None:
    reversed_order = dict(reversed(list(labels.items())))
    assert canonical_labels(labels) == canonical_labels(reversed_order)
    assert SeriesKey.of("m", labels) == SeriesKey.of("m", reversed_order)


def test_canonical_labels_are_compact_sorted_json() -> None:
    assert canonical_labels({"model": "churn", "host": "a"}) == '{"host":"a","model":"churn"}'
    assert canonical_labels({}) == "{}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_sample_refuses_non_finite_values(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Sample(SeriesKey.of("m", {}), SeriesInfo("s", "e"), 0, value)


def test_backoff_skips_more_runs_after_each_failure_and_stops_at_a_success() -> None:
    from anomon.service.jobs import Backoff

    backoff = Backoff(max_skip=5)
    outcomes = iter([True] * 8 + [False, True])  # the tries: 8 failures, a success, a failure
    runs = []
    for _ in range(60):
        if backoff.should_skip():
            runs.append("-")
            continue
        failed = next(outcomes, None)
        if failed is None:
            break
        backoff.record(failed=failed)
        runs.append("F" if failed else "ok")
    assert "".join(r[0] for r in runs[:8]) == "FF-F---F"  # skips 0, 1, 3, ...
    gaps = "".join("-" if r == "-" else " " for r in runs).split()
    assert max(map(len, gaps)) == 5  # ... at most max_skip
    assert runs[-2:] == ["ok", "F"] and backoff.skip == 0  # after a success: no skip


def test_a_deploy_covers_its_model_or_its_entity_and_the_last_one_before_opening_is_named() -> None:
    from datetime import UTC, datetime, timedelta

    from anomon.alerts.model import deploy_text, latest_deploy
    from anomon.model import DeployRecord, IncidentRecord, IncidentStatus, Severity

    at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    anywhere = DeployRecord(at, "churn", "v2", note="CHG-7")
    there = DeployRecord(at + timedelta(minutes=5), "churn", "v3", entity="srv-1")
    host = DeployRecord(at, "", "release-9", entity="srv-1")
    assert anywhere.covers("srv-2", {"model": "churn"})
    assert not anywhere.covers("srv-2", {"model": "fraud"}) and not anywhere.covers("srv-2", {})
    assert there.covers("srv-1", {"model": "churn"}) and not there.covers(
        "srv-2", {"model": "churn"}
    )
    assert host.covers("srv-1", {}) and not host.covers("srv-2", {"model": "churn"})
    assert [d.describe() for d in (anywhere, there, host)] == [
        "churn v2", "churn v3 on srv-1", "srv-1 release-9"]  # fmt: skip
    incident = IncidentRecord(
        id=1, status=IncidentStatus.FIRING, severity=Severity.WARNING, peak_score=90.0,
        opened_at=at + timedelta(minutes=17), last_seen_at=at + timedelta(minutes=17),
        version=1, entity="srv-1", labels={"model": "churn"},
    )  # fmt: skip
    window = timedelta(hours=1)
    assert latest_deploy([anywhere, there, host], incident, window) == there  # the latest
    assert latest_deploy([anywhere], incident, timedelta(minutes=10)) is None  # too long ago
    later = DeployRecord(at + timedelta(minutes=30), "churn", "v4")
    assert latest_deploy([later], incident, window) is None  # after it opened
    assert deploy_text(anywhere, incident.opened_at) == (
        "churn v2 at 2026-12-07 09:30:00Z, 17 min before it opened (CHG-7)"
    )
