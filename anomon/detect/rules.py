"""Alarm rules: when a run of abnormal rows becomes an incident, and when it ends.

Kept apart from the detectors (Merlion's lesson): detectors say how unusual each row
is; these rules turn that into open / resolve events, like Prometheus' ``for:`` with
hysteresis. A row is *abnormal* when its undamped score reaches the threshold and
*normal* when it is below ``resolve_ratio`` x threshold; rows in between, and rows with
no score (NaN, missing data), change nothing -- a gap never resolves an incident.

* open after ``open_after`` abnormal rows within the last ``open_within`` rows, or at once
  on a row scoring ``open_at_once`` or more (a lone row just past the threshold is the
  rarity the threshold allows, about 1 in 10,000 rows; two of three, or one far past it,
  is an event — the demo's normal day: 3 incidents with one row, none with these rules) —
  but not at once on a row the caller says may not (``at_once``,
  :attr:`~anomon.detect.entity.Scores.at_once`): a series whose baseline has no spread,
  such as an error counter that is 0 nearly always, scores any change far past the
  threshold, and one error is not an incident; two in three rows are; and a spike of a
  size the series has shown before (within its detectors' references) is not one by
  itself either, however rare its calibration calls it;
* resolve after ``resolve_after`` consecutive normal rows;
* flap damping: an incident that reopens within ``cooldown`` rows of resolving is the
  same incident, reopened, and each reopening doubles the normal rows it needs to resolve.

:func:`repeat_damped` is the same idea for a whole replayed file, as ``anomon evaluate``
counts alerts (NAB's rules reward the first detection of an event and charge every
later one outside it): a score counts fully only when it beats the previous ``damping``
rows' maximum.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from anomon.config import AlarmConfig
from anomon.detect.rolling import trailing_max

CRITICAL_SCORE = 95.0  # p below about 1e-7: an anomaly of this score is critical (page someone)


class Event(StrEnum):
    """What happened to the incident at a row."""

    OPEN = "open"
    REOPEN = "reopen"
    RESOLVE = "resolve"


@dataclass
class AlarmState:
    """The rules' memory of one series or entity between batches."""

    firing: bool = False
    recent: deque[bool] = field(default_factory=deque)
    normal_streak: int = 0
    since_resolve: int | None = None
    reopenings: int = 0


def apply_rules(
    scores: npt.ArrayLike,
    threshold: float,
    config: AlarmConfig,
    state: AlarmState,
    *,
    at_once: npt.ArrayLike | None = None,
) -> list[tuple[int, Event]]:
    """Advance ``state`` over ``scores`` (undamped, 0-100, NaN allowed); return the events.

    Each event is ``(row index within scores, Event)``. ``at_once`` (a flag per row,
    default all true) says on which rows one score past ``open_at_once`` may open. A
    state machine stepped row by row: the daemon feeds it only each cycle's new rows,
    so the loop stays short.
    """
    values = np.asarray(scores, dtype=np.float64)
    abnormal = values >= threshold
    severe = abnormal & (values >= config.open_at_once)
    if at_once is not None:
        severe &= np.asarray(at_once, dtype=bool)
    normal = values < config.resolve_ratio * threshold  # NaN is neither
    events: list[tuple[int, Event]] = []
    for row in range(values.size):
        event = _step(state, bool(abnormal[row]), bool(normal[row]), config, bool(severe[row]))
        if event is not None:
            events.append((row, event))
    return events


def _step(
    state: AlarmState, abnormal: bool, normal: bool, config: AlarmConfig, severe: bool = False
) -> Event | None:
    if abnormal or normal:
        state.recent.append(abnormal)
        while len(state.recent) > config.open_within:
            state.recent.popleft()
    if state.since_resolve is not None:
        state.since_resolve += 1
    if state.firing:
        if normal:
            state.normal_streak += 1
        elif abnormal:
            state.normal_streak = 0
        if state.normal_streak >= config.resolve_after * 2**state.reopenings:
            state.firing, state.normal_streak, state.since_resolve = False, 0, 0
            return Event.RESOLVE
        return None
    if not severe and sum(state.recent) < config.open_after:
        return None
    state.firing, state.normal_streak = True, 0
    if state.since_resolve is not None and state.since_resolve <= config.cooldown:
        state.reopenings += 1
        return Event.REOPEN
    state.reopenings = 0
    return Event.OPEN


def repeat_damped(scores: npt.ArrayLike, *, span: int, factor: float) -> npt.NDArray[np.float64]:
    """Scores as alerts: a score that does not beat the maximum of the previous ``span``
    rows is multiplied by ``factor`` (``span = 0``: unchanged), so one episode alerts
    once. The detectors' own scores are never damped; this is for counting alerts."""
    values = np.asarray(scores, dtype=np.float64)
    if span == 0 or values.size == 0:
        return values
    recent = trailing_max(np.empty(0), values, window=span)
    beaten = np.isnan(recent) | (values > recent)
    return np.where(beaten, values, values * factor)
