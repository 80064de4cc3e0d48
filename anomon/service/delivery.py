"""The delivery job: drain the outbox in batches, one message per receiver and group.

Each run: enqueue the repeat notifications that are due, claim up to ``batch_size`` due
notifications (atomically: two workers never hold the same row), group them by
(receiver, group key), drop those a silence covers (recorded ``silenced``), send one
notice per group, and record every outcome in one transaction at the end. A transient
failure (connection, timeout, 5xx, 429) is retried with exponential backoff and jitter
up to ``max_attempts``, then the row is ``dead`` with its last error; a permanent one
(another 4xx, a refused recipient or login) is ``dead`` at once. A crash between
sending and recording re-sends the same notice with the same idempotency key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from anomon import store
from anomon.alerts.model import IncidentView, Notice, Notifier, Points
from anomon.alerts.notifiers import build_notifier
from anomon.alerts.routing import Silence, route, silenced
from anomon.config import AlertsConfig, EmailReceiverConfig
from anomon.errors import AnomonError, DeliveryError, UsageError
from anomon.model import OutboxEntry
from anomon.service.alerting import active_silences, notification_key
from anomon.service.telemetry import Telemetry
from anomon.timeutil import Clock, to_epoch, utcnow

log = logging.getLogger("anomon.deliver")

CHART_SPAN = timedelta(hours=6)  # how much of the series an email's chart shows
REPEAT_CHECK = timedelta(minutes=1)  # how often firing incidents are checked for repeats


@dataclass
class Outcomes:
    """What one run of the job did."""

    sent: list[int] = field(default_factory=list)
    retry: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    dead: dict[int, str] = field(default_factory=dict)
    silenced: list[int] = field(default_factory=list)
    silenced_incidents: set[int] = field(default_factory=set)
    released: list[int] = field(default_factory=list)  # claimed, not tried: lease ran short

    def merge(self, other: Outcomes) -> None:
        """Add ``other``'s outcomes to these."""
        self.sent += other.sent
        self.released += other.released
        self.retry |= other.retry
        self.dead |= other.dead
        self.silenced += other.silenced
        self.silenced_incidents |= other.silenced_incidents


@dataclass
class DeliverJob:
    """Send what is due in the outbox. ``notifiers`` maps receiver names to notifiers."""

    engine: store.Engine
    config: AlertsConfig
    notifiers: Mapping[str, Notifier]
    clock: Clock = field(default=utcnow)
    jitter: Callable[[], float] = field(default=random.random)
    telemetry: Telemetry | None = None
    _repeats_checked: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._charts = {
            r.name for r in self.config.receivers if isinstance(r, EmailReceiverConfig) and r.chart
        }

    def __call__(self) -> None:
        try:
            done = self.run_once()
        except AnomonError as exc:
            log.error("delivery failed: %s", exc)
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("delivery failed unexpectedly")
            return
        if done.retry or done.dead:
            log.warning(
                "delivery: %d sent, %d to retry, %d dead",
                len(done.sent),
                len(done.retry),
                len(done.dead),
            )

    def run_once(self) -> Outcomes:
        """One pass: repeats, claim, send, record. Returns what happened."""
        now = self.clock()
        self._enqueue_repeats(now)
        delivery = self.config.delivery
        claimed = store.claim_due(
            self.engine, now=now, limit=delivery.batch_size, lease=delivery.claim_timeout
        )
        done = Outcomes()
        if not claimed:
            return done
        incidents = store.incidents_for_notice(self.engine, [c.incident_id for c in claimed])
        silences = active_silences(self.engine, self.config, now)

        # stop starting sends well before the claim's lease ends: past it another worker
        # may claim the same rows; what is left goes back to the queue untouched
        stop_at = now + delivery.claim_timeout / 2

        def deliver(group: tuple[tuple[str, str], list[store.Claimed]]) -> Outcomes:
            (receiver, group_key), rows = group
            if self.clock() >= stop_at:
                return Outcomes(released=[row.id for row in rows])
            return self._deliver(receiver, group_key, rows, incidents, silences)

        groups = list(_groups(claimed).items())
        if delivery.concurrency == 1:
            outcomes = [deliver(group) for group in groups]
        else:  # groups are independent messages: several in flight hide slow receivers
            with ThreadPoolExecutor(max_workers=delivery.concurrency) as pool:
                outcomes = list(pool.map(deliver, groups))
        for outcome in outcomes:
            done.merge(outcome)
        self._record(done, {row.id: row.attempts for row in claimed})
        if self.telemetry is not None and done.sent:
            sent = set(done.sent)
            for row in claimed:
                if row.id in sent:
                    latency = (self.clock() - row.created_at).total_seconds()
                    self.telemetry.delivery_latency.observe(max(0.0, latency))
        return done

    def _deliver(
        self,
        receiver: str,
        group_key: str,
        rows: list[store.Claimed],
        incidents: Mapping[int, store.IncidentData],
        silences: Sequence[Silence],
    ) -> Outcomes:
        """Send one group's notice; return the outcomes of its rows."""
        now = self.clock()
        done = Outcomes()
        notifier = self.notifiers.get(receiver)
        if notifier is None:
            for row in rows:
                done.dead[row.id] = f"receiver {receiver!r} is not in the config"
            return done
        live = []
        for row in rows:
            incident = incidents.get(row.incident_id)
            if incident is None or silenced(incident.labels, silences, now):
                done.silenced.append(row.id)
                if incident is not None:
                    done.silenced_incidents.add(incident.id)
            else:
                live.append(row)
        if not live:
            return done
        try:
            notifier.send(self._notice(receiver, group_key, live, incidents, now))
        except DeliveryError as exc:
            self._failed(live, str(exc), exc.permanent, now, done)
        except Exception as exc:  # a notifier bug must not stop the others
            log.debug("receiver %s: send raised", receiver, exc_info=True)
            # the type only: an unexpected error's text may carry what it was given
            error = f"unexpected {type(exc).__name__} from the {receiver} notifier"
            self._failed(live, error, False, now, done)
        else:
            done.sent += [row.id for row in live]
        return done

    def _failed(
        self, rows: list[store.Claimed], error: str, permanent: bool, now: datetime, done: Outcomes
    ) -> None:
        delivery = self.config.delivery
        retry_at = now + self._backoff(max(row.attempts for row in rows))  # the group together
        for row in rows:
            if permanent or row.attempts >= delivery.max_attempts:
                reason = "permanent" if permanent else f"gave up after {row.attempts} attempts"
                done.dead[row.id] = f"{reason}: {error}"
            else:
                done.retry[row.id] = (error, retry_at)

    def _backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half to all of initial x 2^(attempts-1), capped."""
        delivery = self.config.delivery
        span = min(delivery.backoff_max, delivery.backoff_initial * 2 ** max(0, attempts - 1))
        return timedelta(seconds=span.total_seconds() * (0.5 + 0.5 * self.jitter()))

    def _notice(
        self,
        receiver: str,
        group_key: str,
        rows: list[store.Claimed],
        incidents: Mapping[int, store.IncidentData],
        now: datetime,
    ) -> Notice:
        charts = receiver in self._charts
        shown = sorted({row.incident_id for row in rows})
        events = {row.event for row in rows}
        views = [self._view(incidents[i], charts=charts) for i in shown]
        if all(view.status == "resolved" for view in views):
            event = "resolved"  # a firing and its resolution claimed together: say how it ended
        else:
            event = (
                "firing" if "firing" in events else "repeat" if "repeat" in events else "resolved"
            )
        key = hashlib.sha256("|".join(sorted(row.key for row in rows)).encode()).hexdigest()[:40]
        return Notice(
            receiver=receiver,
            event=event,
            key=key,
            group_key=group_key,
            group_labels=group_labels(group_key),
            incidents=views,
            sent_at=now,
            notification_keys=sorted(row.key for row in rows),
        )

    def _view(self, data: store.IncidentData, *, charts: bool) -> IncidentView:
        points = None
        if charts and data.series_id is not None:
            until = to_epoch(data.resolved_at or data.last_seen_at) + 1800
            around = store.series_around(
                self.engine,
                data.series_id,
                since=until - int(CHART_SPAN.total_seconds()),
                until=until,
            )
            points = Points(around.ts, around.values, around.expected, around.anomalies)
        return incident_view(data, points)

    def _enqueue_repeats(self, now: datetime) -> None:
        """Queue a ``repeat`` for each firing, unacknowledged incident whose receiver last
        heard of it ``repeat_interval`` ago (and has nothing queued for it). Looked at
        once per REPEAT_CHECK: repeat intervals are hours, the job runs every seconds."""
        if self._repeats_checked is not None and now - self._repeats_checked < REPEAT_CHECK:
            return
        self._repeats_checked = now
        due: dict[int, list[OutboxEntry]] = {}
        shortest = min(
            [self.config.repeat_interval]
            + [r.repeat_interval for r in self.config.routes if r.repeat_interval is not None]
        )
        for candidate in store.repeat_candidates(self.engine, heard_before=now - shortest):
            for delivery in route(candidate.labels, self.config):
                if delivery.receiver in candidate.pending:
                    continue
                # never heard of it (silenced, or dead while the receiver was down): count
                # from its opening, so it is told once the silence or the outage is over
                last = candidate.last_heard.get(delivery.receiver, candidate.opened_at)
                if now - last < delivery.repeat_interval:
                    continue
                # one key per repeat period: two workers make the same one, and a repeat
                # that died does not block the next period's
                period = int((now - last) / delivery.repeat_interval)
                key = notification_key(
                    candidate.incident_id,
                    to_epoch(last),
                    "repeat",
                    period,
                    f"{delivery.receiver}|{delivery.group_key}",
                )
                due.setdefault(candidate.incident_id, []).append(
                    OutboxEntry(delivery.receiver, delivery.group_key, "repeat", key, now)
                )
        if due:
            store.enqueue_many(self.engine, due, now=now)

    def _record(self, done: Outcomes, claims: Mapping[int, int]) -> None:
        store.record_outcomes(
            self.engine,
            claims=claims,
            released=done.released,
            sent=done.sent,
            retry=done.retry,
            dead=done.dead,
            silenced=done.silenced,
            silenced_incidents=sorted(done.silenced_incidents),
            now=self.clock(),
        )


def _groups(claimed: Sequence[store.Claimed]) -> dict[tuple[str, str], list[store.Claimed]]:
    groups: dict[tuple[str, str], list[store.Claimed]] = {}
    for row in claimed:
        groups.setdefault((row.receiver, row.group_key), []).append(row)
    return groups


def group_labels(group_key: str) -> dict[str, str]:
    """The ``group_by`` labels a group key stands for (``route0:{"entity":"churn"}``)."""
    try:
        labels = json.loads(group_key.split(":", 1)[1])
    except (IndexError, ValueError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def incident_view(data: store.IncidentData, points: Points | None = None) -> IncidentView:
    """The notifier's view of a stored incident."""
    return IncidentView(
        id=data.id,
        metric=data.metric,
        entity=data.entity,
        labels=data.labels,
        status=data.status,
        severity=data.severity,
        peak_score=data.peak_score,
        opened_at=data.opened_at,
        last_seen_at=data.last_seen_at,
        resolved_at=data.resolved_at,
        acknowledged=data.acknowledged,
        value=data.value,
        expected=data.expected,
        direction=data.direction,
        detector_scores=data.detector_scores,
        points=points,
    )


def send_test_notice(config: AlertsConfig, receiver: str, *, clock: Clock = utcnow) -> None:
    """Send one made-up firing incident to ``receiver`` once (no retries, no outbox).

    Raises UsageError for an unknown receiver and DeliveryError if the send fails.
    """
    found = config.receiver_named(receiver)
    if found is None:
        known = ", ".join(r.name for r in config.receivers) or "none"
        raise UsageError(f"no receiver named {receiver!r} in the config (receivers: {known})")
    now = clock()
    ts = to_epoch(now)
    incident = IncidentView(
        id=0,
        metric="anomon_test",
        entity="anomon",
        labels={"metric": "anomon_test", "entity": "anomon", "severity": "warning"},
        status="firing",
        severity="warning",
        peak_score=90.0,
        opened_at=now,
        last_seen_at=now,
        value=1.0,
        expected=0.0,
        direction="up",
        detector_scores={"zscore": 90.0},
        points=Points(
            [ts - 60 * i for i in range(30, -1, -1)], [0.0] * 30 + [1.0], [0.0] * 31, [ts]
        ),
    )
    notice = Notice(
        receiver=receiver,
        event="firing",
        key=f"test-{ts}",
        group_key="test",
        group_labels={},
        incidents=[incident],
        sent_at=now,
        test=True,
    )
    notifier = build_notifier(found)
    try:
        notifier.send(notice)
    finally:
        notifier.close()
