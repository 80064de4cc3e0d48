"""The text every notifier shares, and the chart emails carry."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from anomon.alerts import render
from anomon.alerts.chart import render_chart
from anomon.alerts.model import IncidentView, Points
from tests.alert_fixtures import OPENED, PNG_MAGIC, incident, notice, points


@pytest.mark.parametrize(
    ("incidents", "expected"),
    [
        ((incident(),), "[FIRING:1] accuracy on churn-model (critical)"),
        (
            (incident(), incident(id=18, metric="latency", severity="warning")),
            "[FIRING:2] 2 metrics on churn-model (critical)",
        ),
        (
            (incident(severity="warning"), incident(id=18, entity="fraud-model")),
            "[FIRING:2] accuracy on 2 entities (critical)",
        ),
        (
            (incident(), incident(id=18, status="resolved", severity="warning")),
            "[FIRING:1] accuracy on churn-model (critical)",
        ),
        (
            (incident(status="resolved", severity="warning"),),
            "[RESOLVED:1] accuracy on churn-model (warning)",
        ),
    ],
)
def test_it_writes_the_subject_from_the_incidents(
    incidents: tuple[IncidentView, ...], expected: str
) -> None:
    assert render.subject(notice(*incidents)) == expected


def test_it_marks_a_test_notice_in_the_subject() -> None:
    assert render.subject(notice(test=True)).startswith("[TEST] [FIRING:1]")


def test_it_ranks_unknown_severities_below_known_ones() -> None:
    found = [incident(severity="page-someone"), incident(severity="warning")]
    assert render.worst_severity(found) == "warning"


@pytest.mark.parametrize(
    ("number", "shown"),
    [(0.712345, "0.7123"), (None, "n/a"), (math.nan, "n/a"), (math.inf, "n/a"), (1e9, "1e+09")],
)
def test_it_formats_numbers_and_hides_non_finite_ones(number: float | None, shown: str) -> None:
    assert render.format_number(number) == shown


def test_it_writes_rfc3339_in_utc_with_a_z() -> None:
    moment = datetime(2026, 11, 22, 13, 0, 5, 250000, tzinfo=UTC).astimezone()
    assert render.rfc3339(moment) == "2026-11-22T13:00:05.250000Z"


def test_it_summarises_an_incident_in_one_line() -> None:
    assert render.summary(incident()) == "accuracy on churn-model is 0.71, expected 0.93 (down)"
    assert render.summary(incident(expected=None, direction=None)) == (
        "accuracy on churn-model is 0.71"
    )


def test_it_describes_scores_times_and_detectors_strongest_first() -> None:
    text = render.description(incident(resolved_at=OPENED + timedelta(hours=1)))
    assert "peak score 87/100" in text
    assert "opened 2026-11-22 11:45:00 UTC" in text
    assert "resolved 2026-11-22 12:45:00 UTC" in text
    assert text.index("zscore 87") < text.index("forest 61")
    assert "\n" not in text


def test_it_lists_every_incident_in_the_text_body() -> None:
    body = render.text_body(notice(incident(), incident(id=18, metric="latency"), key="n-1"))
    assert "FIRING #17: accuracy" in body
    assert "FIRING #18: latency" in body
    assert "notice n-1" in body


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    return width, height


def test_it_draws_a_small_png_of_the_series() -> None:
    png = render_chart(incident(points=points()))
    assert png.startswith(PNG_MAGIC)
    assert _png_size(png) == (640, 240)


def test_it_draws_series_without_expected_values_or_anomalies() -> None:
    bare = Points(ts=[0, 60, 120], values=[1.0, math.nan, 3.0])
    png = render_chart(incident(points=bare, opened_at=datetime(1970, 1, 1, tzinfo=UTC)))
    assert png.startswith(PNG_MAGIC)


def test_it_keeps_dollar_signs_in_metric_names_out_of_math_mode() -> None:
    png = render_chart(incident(metric="cost_$_per_$", points=points(20)))
    assert png.startswith(PNG_MAGIC)


def test_it_refuses_to_chart_an_incident_without_points() -> None:
    with pytest.raises(ValueError, match="incident 17 has no points"):
        render_chart(incident(points=None))


def test_it_refuses_points_with_more_values_than_times() -> None:
    broken = Points(ts=[0, 60], values=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2 times and 3 values"):
        render_chart(incident(points=broken))


def test_it_draws_charts_from_several_threads_at_once() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        pngs = list(pool.map(lambda i: render_chart(incident(id=i, points=points())), range(8)))
    assert all(png.startswith(PNG_MAGIC) for png in pngs)
    assert len(set(pngs)) == 1  # same input, same picture: no state shared between threads


def test_it_imports_matplotlib_only_when_drawing_and_never_pyplot() -> None:
    code = (
        "import sys\n"
        "import anomon.alerts.chart, anomon.alerts.email, anomon.alerts.webhook\n"
        "before = 'matplotlib' in sys.modules\n"
        "from datetime import UTC, datetime\n"
        "from anomon.alerts.model import IncidentView, Points\n"
        "t = datetime(2026, 1, 1, tzinfo=UTC)\n"
        "view = IncidentView(id=1, status='firing', severity='warning', peak_score=50.0,"
        " opened_at=t, last_seen_at=t, metric='m', entity='e',"
        " points=Points([0, 60], [1.0, 2.0]))\n"
        "anomon.alerts.chart.render_chart(view)\n"
        "print(before, 'matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "True", "False"]


def test_an_entity_incident_leads_with_its_strongest_series_and_lists_the_others() -> None:
    from anomon.model import Contributor

    behind = (
        Contributor(2, "memory", {"host": "a"}, 97.2, 85.25, 60.0),
        Contributor(1, "cpu", {"host": "a"}, 88.0, 70.5, 40.0),
    )
    shown = incident(metric="cpu", value=85.25, expected=60.0, contributors=behind)
    assert render.summary(shown).startswith("memory on churn-model is 85.25, expected 60")
    assert render.summary(shown).endswith(", and 1 more series")
    assert (
        "series: memory{host=a} 85.25 (expected 60, peak 97), cpu{host=a} 70.5 "
        "(expected 40, peak 88)" in render.description(shown)
    )
    alone = incident(contributors=behind[:1])
    assert "series:" not in render.description(alone)
    assert "more series" not in render.summary(alone)
