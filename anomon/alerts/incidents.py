"""The incident state machine: alarm-rule events of one series become incident changes.

Pure: given the series' latest stored incident and one detection cycle's rows (times,
undamped scores and the alarm rules' events), :func:`track` returns the *episodes* of
the cycle — each an incident opened, reopened, updated or resolved — with the
notifications each change causes, in order:

* ``open``: a new incident, firing, notified ``firing``;
* ``reopen`` (the rules' flap damping): the series' last resolved incident fires again,
  the same incident, notified ``firing``;
* while firing, the peak score and last-seen time follow the abnormal rows; a severity
  that rises (warning to critical) is notified ``firing`` again; a peak alone is not;
* ``resolve``: notified ``resolved``.

A row with no score never changes anything (the rules skip it), so a gap in the data
never resolves an incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from anomon.model import Event, IncidentRecord, IncidentStatus, Severity
from anomon.timeutil import from_epoch

SEVERITIES = tuple(Severity)


@dataclass
class Episode:
    """One incident's changes in a cycle. ``incident_id`` None: opened in this cycle.

    ``notices`` lists ``(event, epoch seconds)`` in order: ``firing`` or ``resolved``.
    """

    incident_id: int | None
    version: int | None
    opened_at: datetime
    last_seen_at: datetime
    peak_score: float
    severity: Severity
    status: IncidentStatus = IncidentStatus.FIRING
    resolved_at: datetime | None = None
    silenced: bool = False
    notices: list[tuple[Event, int]] = field(default_factory=list)
    changed: bool = True
    reopened: bool = False


def severity_of(score: float, critical: float) -> Severity:
    """``critical`` at or above ``critical``, else ``warning``."""
    return Severity.CRITICAL if score >= critical else Severity.WARNING


def track(
    latest: IncidentRecord | None,
    ts: npt.ArrayLike,
    combined: npt.ArrayLike,
    events: Sequence[tuple[int, str]],
    *,
    threshold: float,
    critical: float,
) -> list[Episode]:
    """Return the episodes of one series over one cycle's rows.

    ``events`` are the alarm rules' ``(row, "open" | "reopen" | "resolve")``; ``combined``
    the undamped 0-100 scores (NaN allowed). Episodes that change nothing are left out.
    """
    times = np.asarray(ts, dtype=np.int64)
    scores = np.asarray(combined, dtype=np.float64)
    episodes: list[Episode] = []
    current = _from_stored(latest) if latest and latest.status == IncidentStatus.FIRING else None
    if current is not None:
        episodes.append(current)
    resolved = _from_stored(latest) if latest and latest.status == IncidentStatus.RESOLVED else None
    start = 0
    for row, event in [*events, (times.size, "")]:
        if current is not None:
            _follow(current, times[start:row], scores[start:row], threshold, critical)
        if event == "resolve" and current is not None:
            _resolve(current, int(times[row]))
            resolved, current = current, None
        elif event in ("open", "reopen") and current is None:
            current = _open(event, resolved, episodes, int(times[row]))
            if current is not resolved:
                episodes.append(current)
        start = row
    return [episode for episode in episodes if episode.changed]


def _from_stored(stored: IncidentRecord) -> Episode:
    return Episode(
        incident_id=stored.id,
        version=stored.version,
        opened_at=stored.opened_at,
        last_seen_at=stored.last_seen_at,
        peak_score=stored.peak_score,
        severity=stored.severity,
        status=stored.status,
        resolved_at=stored.resolved_at,
        silenced=stored.silenced,
        changed=False,
    )


def _open(event: str, resolved: Episode | None, episodes: list[Episode], at: int) -> Episode:
    """Start firing: the last resolved incident again (``reopen``), else a new one."""
    moment = from_epoch(at)
    if event == "reopen" and resolved is not None:
        if resolved not in episodes:
            episodes.append(resolved)
        resolved.status, resolved.resolved_at, resolved.changed = IncidentStatus.FIRING, None, True
        resolved.reopened = True
        resolved.last_seen_at = max(resolved.last_seen_at, moment)
        resolved.notices.append((Event.FIRING, at))
        return resolved
    return Episode(
        incident_id=None,
        version=None,
        opened_at=moment,
        last_seen_at=moment,
        peak_score=0.0,
        severity=Severity.WARNING,
        notices=[(Event.FIRING, at)],
    )


def _follow(
    episode: Episode,
    times: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    threshold: float,
    critical: float,
) -> None:
    """Raise the peak and last-seen time from the firing rows; notify a rising severity."""
    abnormal = np.flatnonzero(scores >= threshold)
    if abnormal.size == 0:
        return
    peak = float(np.nanmax(scores[abnormal]))
    episode.last_seen_at = max(episode.last_seen_at, from_epoch(int(times[abnormal[-1]])))
    episode.changed = True
    if peak <= episode.peak_score:
        return
    episode.peak_score = peak
    severity = severity_of(peak, critical)
    if SEVERITIES.index(severity) > SEVERITIES.index(episode.severity):
        episode.severity = severity
        fresh = episode.incident_id is None and len(episode.notices) == 1
        if not fresh:  # a new incident's first notice is not sent yet: it says critical
            episode.notices.append((Event.FIRING, int(times[abnormal[-1]])))


def _resolve(episode: Episode, at: int) -> None:
    episode.status, episode.resolved_at, episode.changed = (
        IncidentStatus.RESOLVED,
        from_epoch(at),
        True,
    )
    episode.notices.append((Event.RESOLVED, at))
