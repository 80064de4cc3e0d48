"""From a detection cycle's scores to incident writes with their notifications.

Joins the packages: the alarm rules (detect) turn each alarm unit's undamped scores
into open / reopen / resolve events, the incident state machine (alerts) turns those and
the unit's latest stored incident (store) into episodes, routing (alerts) decides who
hears of each change, and the result is a list of :class:`~anomon.model.IncidentWrite`
that the store writes in the detection cycle's own transaction.

An alarm unit is an entity — every source's series about one entity, model and version
(:class:`Members`: its series, keyed by the first of them, which its incidents are
stored under) — or a series alone. One event of an
entity is one incident however many of its series go wrong: it opens with the routing
labels of the series that led the entity's score then, and the anomalies of every
series of the entity in its span are linked to it (its contributing series).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from anomon import store
from anomon.alerts.incidents import Episode, track
from anomon.alerts.routing import Silence, config_silences, route, silenced, stored_silence
from anomon.config import AlarmConfig, AlertsConfig, DetectionConfig, SeriesSettings
from anomon.detect.rules import CRITICAL_SCORE, AlarmState, apply_rules
from anomon.errors import UsageError
from anomon.model import (
    AnomalyRecord,
    Event,
    IncidentRecord,
    IncidentStatus,
    IncidentWrite,
    OutboxEntry,
    Severity,
    canonical_labels,
)
from anomon.timeutil import to_epoch

RESOLVE_TRIES = 3  # a busy incident changes every detection cycle


@dataclass
class Alarms:
    """The alarm rules' state of every series, kept between cycles, and each series'
    rules (``[detection.alarm]`` and the threshold, as its overrides set them)."""

    detection: DetectionConfig
    alerts: AlertsConfig
    states: dict[int, AlarmState] = field(default_factory=dict)
    rules: dict[int, tuple[float, AlarmConfig]] = field(default_factory=dict)

    def configure(self, series_id: int, settings: SeriesSettings) -> None:
        """Give a series the threshold and alarm rules its overrides set."""
        alarm = self.detection.alarm
        changes = {
            name: value
            for name in ("open_after", "resolve_after")
            if (value := getattr(settings, name)) is not None
        }
        if changes:
            # an override's open_after may exceed the default window: the window widens
            within = max(alarm.open_within, changes.get("open_after", 0))
            alarm = alarm.model_copy(update={**changes, "open_within": within})
        self.rules[series_id] = (settings.threshold, alarm)

    def rules_of(self, series_id: int) -> tuple[float, AlarmConfig]:
        """The threshold and alarm rules of a series (the defaults unless configured)."""
        return self.rules.get(series_id, (self.detection.threshold, self.detection.alarm))

    def warm(
        self,
        series_id: int,
        combined: np.ndarray,
        *,
        firing: bool,
        at_once: np.ndarray | None = None,
    ) -> None:
        """Rebuild a series' rule state from rows scored before; ``firing`` is the store's
        word on whether it has a firing incident (it wins over the replay)."""
        state = self.states.setdefault(series_id, AlarmState())
        threshold, alarm = self.rules_of(series_id)
        # the rules remember only this far back: replaying more costs time, not accuracy
        # (a restart of 10,000 series would otherwise step 40 million rows in Python)
        memory = alarm.open_within + alarm.cooldown + 4 * alarm.resolve_after
        once = None if at_once is None else at_once[-memory:]
        apply_rules(combined[-memory:], threshold, alarm, state, at_once=once)
        state.firing = firing
        state.normal_streak = 0

    def forget(self, series_id: int) -> None:
        """Drop an alarm unit's rules and state (its series are gone)."""
        self.states.pop(series_id, None)
        self.rules.pop(series_id, None)

    def forget_firing(self, series_id: int) -> None:
        """The rules say firing but the store has no firing incident (a person resolved
        it): start over, so abnormal rows go on to open a new incident, not nothing."""
        state = self.states[series_id]
        state.firing, state.normal_streak, state.since_resolve = False, 0, None
        state.recent.clear()  # a new incident needs open_after fresh abnormal rows
        state.reopenings = 0

    def events(
        self, series_id: int, combined: np.ndarray, at_once: np.ndarray | None = None
    ) -> tuple[bool, list[tuple[int, str]]]:
        """Advance the rules over new rows (``at_once``: where one severe row may open);
        return (was firing before, events)."""
        state = self.states.setdefault(series_id, AlarmState())
        before = state.firing
        found = apply_rules(combined, *self.rules_of(series_id), state, at_once=at_once)
        return before, [(row, str(event)) for row, event in found]


@dataclass(frozen=True)
class Members:
    """The series of an entity, an alarm unit keyed by the first of them, and per row of
    its cycle the series that led its score there (the largest) and whether one severe
    row may open an incident there (not when that series' baseline is flat)."""

    ids: Sequence[int]
    leads: np.ndarray
    at_once: np.ndarray | None = None


def plan_incidents(
    engine: store.Engine,
    alarms: Alarms,
    cycle: Mapping[int, tuple[np.ndarray, np.ndarray]],
    anomalies: list[AnomalyRecord],
    *,
    now: datetime,
    members: Mapping[int, Members] | None = None,
) -> tuple[list[IncidentWrite], list[AnomalyRecord]]:
    """Return the incident writes of a cycle and the anomalies linked to them.

    ``cycle`` maps each alarm unit to (times, undamped scores) of its new rows; a unit
    is the entity of ``members`` it keys, else the series of that id alone.
    """
    group = members or {}
    tracked: dict[int, list[tuple[int, str]]] = {}
    for key, (_, combined) in cycle.items():
        at_once = group[key].at_once if key in group else None
        was_firing, events = alarms.events(key, combined, at_once)
        if events or was_firing:
            tracked[key] = events
    if not tracked:
        return [], anomalies
    ids = {key: list(group[key].ids) if key in group else [key] for key in tracked}
    unit_of = {sid: key for key, found in ids.items() for sid in found}
    stored, meta = store.incident_context(engine, list(unit_of))
    writes: list[IncidentWrite] = []
    spans: dict[int, list[tuple[int, int, int]]] = {}  # unit -> (from, to, write index)
    every_silence = active_silences(engine, alarms.alerts, now)
    for key, events in tracked.items():
        ts, combined = cycle[key]
        latest = unit_latest(stored, ids[key])
        episodes = track(
            latest,
            ts,
            combined,
            events,
            threshold=alarms.rules_of(key)[0],
            critical=CRITICAL_SCORE,
        )
        for episode in episodes:
            spans.setdefault(key, []).append(_span(episode, len(writes)))
            if episode.incident_id is None:  # labelled by the series that led at the open
                lead = _lead(group.get(key), ts, episode, key)
                write = incident_write(key, meta[lead], episode, alarms.alerts, every_silence, now)
            else:
                assert latest is not None
                write = stored_incident_write(latest, episode, alarms.alerts, every_silence, now)
            writes.append(replace(write, change=_change(episode, latest)))
        firing = any(e.status == IncidentStatus.FIRING for e in episodes) or (
            latest is not None and latest.status == IncidentStatus.FIRING
        )
        if alarms.states[key].firing and not firing:
            alarms.forget_firing(key)
    linked = [_link(a, spans.get(unit_of.get(a.series_id, a.series_id), ())) for a in anomalies]
    return writes, linked


def unit_latest(
    stored: Mapping[int, IncidentRecord], series_ids: Sequence[int]
) -> IncidentRecord | None:
    """The incident an alarm unit goes on with: the newest firing one of its series (an
    incident opened before the series were one entity is finished, not left firing),
    else the newest."""
    found = [stored[sid] for sid in series_ids if sid in stored]
    firing = [incident for incident in found if incident.status == IncidentStatus.FIRING]
    return max(firing or found, key=lambda incident: incident.id, default=None)


def _lead(members: Members | None, ts: np.ndarray, episode: Episode, key: int) -> int:
    """The series that led the unit's score at the row where ``episode`` opened."""
    if members is None:
        return key
    rows = np.flatnonzero(ts == to_epoch(episode.opened_at))
    return int(members.leads[rows[0]]) if rows.size else key


def _change(episode: Episode, previous: IncidentRecord | None) -> str | None:
    """What an episode does to its incident, as people say it (None: nothing of note)."""
    if episode.incident_id is None:
        return "opened"
    if episode.reopened:
        return "reopened"
    if previous is None:
        return None
    if episode.status == IncidentStatus.RESOLVED and previous.status == IncidentStatus.FIRING:
        return "resolved"
    if episode.status == IncidentStatus.FIRING and episode.severity != previous.severity:
        return "escalated"  # a severity follows the peak score, which only rises
    return None


def active_silences(engine: store.Engine, config: AlertsConfig, now: datetime) -> list[Silence]:
    """The silences of the config file and of the database not over at ``now``."""
    stored = [stored_silence(*row) for row in store.stored_silences(engine, now=now)]
    return [*config_silences(config), *stored]


def routing_labels(meta: store.SeriesMeta, severity: Severity) -> dict[str, str]:
    """The labels routes and silences match: the series' own plus what anomon knows."""
    return {
        **meta.labels,
        "metric": meta.metric,
        "entity": meta.entity,
        "source": meta.source,
        "kind": meta.kind,
        "severity": severity,
    }


def incident_write(
    sid: int | None,
    meta: store.SeriesMeta,
    episode: Episode,
    config: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
    *,
    identity: str | None = None,
) -> IncidentWrite:
    """The write of one episode of the incident of ``meta`` (series ``sid``; None for an
    incident of no series, whose notification keys then use ``identity``), with the
    notifications its routing labels get unless a silence covers them now."""
    labels = routing_labels(meta, episode.severity)
    key = identity if identity is not None else sid or 0
    return episode_write(sid, meta.entity, meta.metric, labels, key, episode, config, silences, now)


def stored_incident_write(
    stored: IncidentRecord,
    episode: Episode,
    config: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> IncidentWrite:
    """The write of one episode of a stored incident: routed by the labels it was opened
    with (whichever series of its entity goes on), at the severity it has now."""
    labels = {**stored.labels, "severity": episode.severity}
    return episode_write(
        stored.series_id,
        stored.entity,
        stored.metric,
        labels,
        stored.series_id or 0,
        episode,
        config,
        silences,
        now,
    )


def episode_write(
    sid: int | None,
    entity: str,
    metric: str,
    labels: dict[str, str],
    identity: int | str,
    episode: Episode,
    config: AlertsConfig,
    silences: Sequence[Silence],
    now: datetime,
) -> IncidentWrite:
    """The write of ``episode`` of an incident routed by ``labels`` (its severity
    included), with the notifications they get unless a silence covers them now;
    ``identity`` keeps the notification keys of different incidents apart."""
    quiet = silenced(labels, silences, now)  # as of this change: silences end
    told = not quiet and config.enabled
    outbox = tuple(outbox_entries(identity, episode, labels, config, now)) if told else ()
    return IncidentWrite(
        series_id=sid,
        entity=entity,
        metric=metric,
        labels=canonical_labels(labels),
        status=episode.status,
        severity=episode.severity,
        peak_score=episode.peak_score,
        opened_at=episode.opened_at,
        last_seen_at=episode.last_seen_at,
        resolved_at=episode.resolved_at,
        silenced=quiet,
        reopened=episode.reopened,
        incident_id=episode.incident_id,
        version=episode.version,
        outbox=outbox,
    )


def outbox_entries(
    identity: int | str,
    episode: Episode,
    labels: dict[str, str],
    config: AlertsConfig,
    now: datetime,
) -> list[OutboxEntry]:
    """The notifications of an episode's notices to every receiver its labels route to;
    ``identity`` (a series id, or a name such as ``source_down:<source>``) keeps the keys
    of different incidents apart."""
    entries = []
    opened = to_epoch(episode.opened_at)
    for delivery in route(labels, config):
        # a new incident waits group_wait; all of one cycle's notices of an incident share
        # the first one's time, so an incident that came and went in one cycle goes out
        # as one message (resolved), never resolved first and firing after
        wait = delivery.group_wait if episode.incident_id is None else timedelta(0)
        for event, at in episode.notices:
            if event == Event.RESOLVED and not delivery.send_resolved:
                continue
            key = notification_key(
                identity, opened, event, at, f"{delivery.receiver}|{delivery.group_key}"
            )
            entries.append(
                OutboxEntry(
                    receiver=delivery.receiver,
                    group_key=delivery.group_key,
                    event=event,
                    key=key,
                    not_before=now + wait,
                    group_interval=delivery.group_interval,
                    route=delivery.route,
                    group_labels=canonical_labels(delivery.group_labels),
                )
            )
    return entries


def resolve_incident(
    engine: store.Engine, config: AlertsConfig, incident_id: int, *, now: datetime
) -> store.IncidentDetail:
    """Resolve a firing incident by hand and queue its ``resolved`` notifications for
    the receivers its labels (with its severity now) route to: none if it is silenced
    or alerting is off. Returns the incident as it was. Raises UsageError if it is not
    firing, or if the detection job changed it at every one of a few tries."""
    for _ in range(RESOLVE_TRIES):
        incident = store.incident_detail(engine, incident_id, anomaly_limit=0)
        if incident.status != IncidentStatus.FIRING:
            raise UsageError(f"incident {incident_id} is {incident.status}, not firing")
        entries: list[OutboxEntry] = []
        if config.enabled and not incident.silenced:
            episode = Episode(
                incident_id=incident.id,
                version=incident.version,
                opened_at=incident.opened_at,
                last_seen_at=incident.last_seen_at,
                peak_score=incident.peak_score,
                severity=incident.severity,
                notices=[(Event.RESOLVED, to_epoch(now))],
            )
            # the stored labels are those of the opening; the routes match today's severity
            labels = {**incident.labels, "severity": incident.severity}
            entries = outbox_entries(incident.series_id or 0, episode, labels, config, now)
        if store.resolve_by_hand(
            engine, incident_id, version=incident.version, outbox=entries, now=now
        ):
            return incident
    raise UsageError(f"incident {incident_id} kept changing: try again")


def notification_key(series_id: int | str, opened: int, event: str, at: int, receiver: str) -> str:
    """The idempotency key of one notification: the same change gives the same key."""
    text = json.dumps([series_id, opened, event, at, receiver])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _span(episode: Episode, index: int) -> tuple[int, int, int]:
    end = episode.resolved_at
    return to_epoch(episode.opened_at), to_epoch(end) if end else 2**62, index


def _link(anomaly: AnomalyRecord, spans: Sequence[tuple[int, int, int]]) -> AnomalyRecord:
    """The anomaly with its incident (the write whose span holds its time), if any."""
    for start, end, index in spans:
        if start <= anomaly.ts <= end:
            return replace(anomaly, incident=index)
    return anomaly
