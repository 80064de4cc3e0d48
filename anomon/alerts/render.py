"""Turn notices into the words every notifier shares: subjects, summaries, numbers, times.

Pure functions of :class:`~anomon.alerts.model.Notice` and
:class:`~anomon.alerts.model.IncidentView`; no I/O. Numbers are shown with four
significant digits, scores (0-100) as whole numbers, unknown or non-finite values as
``n/a``, and times in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from anomon.alerts.model import IncidentView, Notice
from anomon.model import SERIES_ABSENT, SOURCE_DOWN, IncidentStatus, escape_controls

# Worst first; a severity not listed here ranks below all of them.
SEVERITIES = ("critical", "error", "warning", "info")


def finite(number: float | None) -> float | None:
    """Return ``number``, or None when it is unknown, NaN or infinite (JSON has no NaN)."""
    if number is None or not math.isfinite(number):
        return None
    return float(number)


def format_number(number: float | None) -> str:
    """Format a measured value with four significant digits; ``n/a`` when unknown."""
    shown = finite(number)
    return "n/a" if shown is None else f"{shown:.4g}"


def format_score(score: float) -> str:
    """Format a 0-100 score as a whole number."""
    shown = finite(score)
    return "n/a" if shown is None else f"{shown:.0f}"


def format_time(moment: datetime) -> str:
    """Format an aware datetime for people: ``2026-11-22 12:00:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z``: ``2026-11-22T12:00:00Z``."""
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def worst_severity(incidents: Iterable[IncidentView]) -> str:
    """Return the worst severity among ``incidents`` (``critical`` before ``warning``)."""
    found = [incident.severity for incident in incidents]
    if not found:
        return "info"
    return min(found, key=_severity_rank)


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def title(incidents: Sequence[IncidentView]) -> str:
    """Name what a group is about: ``accuracy on churn-model``, ``3 metrics on churn-model``."""
    metrics = sorted({incident.metric for incident in incidents})
    entities = sorted({incident.entity for incident in incidents})
    what = metrics[0] if len(metrics) == 1 else f"{len(metrics)} metrics"
    if len(entities) == 1:
        return f"{what} on {entities[0]}"
    return f"{what} on {len(entities)} entities"


def subject(notice: Notice) -> str:
    """Return the one-line headline: ``[FIRING:2] accuracy on churn-model (critical)``.

    The count is of the incidents in the notice's status (firing ones while any fires);
    a test notice starts with ``[TEST]``.
    """
    status = notice.status
    shown = [i for i in notice.incidents if i.status == status] or list(notice.incidents)
    line = f"[{status.upper()}:{len(shown)}] {title(shown)} ({worst_severity(shown)})"
    return f"[TEST] {line}" if notice.test else line


def summary(incident: IncidentView) -> str:
    """One line on one incident: ``accuracy on churn-model is 0.71, expected 0.93 (down)``;
    for a source that is down, ``source prom is down: no successful collection since …``."""
    if incident.metric == SOURCE_DOWN:
        if incident.status == IncidentStatus.RESOLVED:
            return f"source {incident.entity} is collecting again"
        return (
            f"source {incident.entity} is down: no successful collection since "
            f"{format_time(incident.opened_at)}"
        )
    if incident.metric == SERIES_ABSENT:
        name = absent_series_name(incident)
        if incident.status == IncidentStatus.RESOLVED:
            return f"{name} on {incident.entity} arrives again"
        return (
            f"{name} on {incident.entity} stopped arriving: no sample since "
            f"{format_time(incident.opened_at)}, its source still collects"
        )
    line = f"{lead_metric(incident)} on {incident.entity} is {format_number(incident.value)}"
    if finite(incident.expected) is not None:
        line += f", expected {format_number(incident.expected)}"
    if incident.direction:
        line += f" ({incident.direction})"
    if len(incident.contributors) > 1:
        others = len(incident.contributors) - 1
        line += f", and {others} more series" if others > 1 else ", and 1 more series"
    return line


# labels a series' short name leaves out: what routing adds, and the scrape target
NOT_SHOWN = frozenset(
    ("metric", "entity", "source", "kind", "severity", "series_metric", "series_id", "job",
     "instance")
)  # fmt: skip


def series_name(metric: str, labels: Mapping[str, str]) -> str:
    """``latency_p99{model=churn}``: a series as a message names it."""
    own = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in NOT_SHOWN)
    return metric + ("{" + own + "}" if own else "")


def absent_series_name(incident: IncidentView) -> str:
    """The series a ``series_absent`` incident is about."""
    return series_name(incident.labels.get("series_metric", "?"), incident.labels)


def lead_metric(incident: IncidentView) -> str:
    """The metric a message leads with: the strongest series behind the incident (the
    value shown is its), else the one it was opened for."""
    return incident.contributors[0].metric if incident.contributors else incident.metric


SHOWN_CONTRIBUTORS = 5


def contributors_line(incident: IncidentView) -> str | None:
    """``series: memory{host=a} 85.2 (expected 60, peak 97), cpu 70 (…)``, the first
    :data:`SHOWN_CONTRIBUTORS`; None for an incident of one series."""
    if len(incident.contributors) < 2:
        return None
    shown = []
    for c in incident.contributors[:SHOWN_CONTRIBUTORS]:
        shown.append(
            f"{series_name(c.metric, c.labels)} {format_number(c.value)} "
            f"(expected {format_number(c.expected)}, peak {format_score(c.peak_score)})"
        )
    more = len(incident.contributors) - SHOWN_CONTRIBUTORS
    return "series: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def description(incident: IncidentView) -> str:
    """Several facts on one incident in one line: values, score, severity, times, detectors."""
    if incident.metric in (SOURCE_DOWN, SERIES_ABSENT):  # no value: when it went and came back
        parts = [f"severity {incident.severity}", f"absent since {format_time(incident.opened_at)}"]
        if incident.resolved_at is not None:
            parts.append(f"back since {format_time(incident.resolved_at)}")
        return "; ".join(parts)
    parts = [
        f"value {format_number(incident.value)}",
        f"expected {format_number(incident.expected)}",
        f"peak score {format_score(incident.peak_score)}/100",
        f"severity {incident.severity}",
        f"opened {format_time(incident.opened_at)}",
    ]
    if incident.resolved_at is not None:
        parts.append(f"resolved {format_time(incident.resolved_at)}")
    else:
        parts.append(f"last seen {format_time(incident.last_seen_at)}")
    if incident.detector_scores:
        parts.append(f"detectors {format_detector_scores(incident.detector_scores)}")
    if incident.acknowledged:
        parts.append("acknowledged")
    if (line := contributors_line(incident)) is not None:
        parts.append(line)
    return "; ".join(parts)


def format_detector_scores(scores: Mapping[str, float]) -> str:
    """Format per-detector scores strongest first: ``zscore 91, forest 64``."""
    ranked = sorted(scores.items(), key=lambda item: (-(finite(item[1]) or 0.0), item[0]))
    return ", ".join(f"{name} {format_score(score)}" for name, score in ranked)


def text_body(notice: Notice) -> str:
    """The plain-text message: the subject, then one paragraph per incident."""
    lines = [subject(notice), ""]
    for incident in notice.incidents:
        lines.append(f"{incident.status.upper()} #{incident.id}: {summary(incident)}")
        lines.append(f"  {description(incident)}")
        lines.append(f"  labels: {format_labels(incident.labels)}")
        lines += [f"  {line}" for line in annotation_lines(incident)]
        if incident.url:
            lines.append(f"  details: {incident.url}")
        lines.append("")
    lines.append(f"-- anomon, receiver {notice.receiver}, notice {notice.key}")
    return "\n".join(lines) + "\n"


def annotation_lines(incident: IncidentView) -> list[str]:
    """The incident's configured annotations, one ``name: text`` line each, in the
    order the config gives them (control characters escaped: one line stays one)."""
    return [escape_controls(f"{name}: {text}") for name, text in incident.annotations.items()]


def with_annotations(incident: IncidentView, ours: dict[str, str]) -> dict[str, str]:
    """Alertmanager-style annotations: anomon's own, then the configured ones, which win
    on a name both have (a rule's own ``summary`` is what Alertmanager users expect)."""
    return {**ours, **incident.annotations}


def format_labels(labels: Mapping[str, str]) -> str:
    """Format labels sorted by name: ``entity=churn-model, metric=accuracy``."""
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items())) or "none"
