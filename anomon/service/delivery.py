"""The delivery job: drain the outbox in batches, one message per receiver and group.

Each run: enqueue the repeat notifications that are due, claim up to ``batch_size`` due
notifications (atomically: two workers never hold the same row), group them into
messages (a notification tried before goes again in the message it was first tried in,
so a retry carries the same Idempotency-Key; the others one per receiver and group),
drop those a silence covers (recorded ``silenced``), and send. Receivers are
independent: each gets a worker of its own (up to :data:`RECEIVER_WORKERS` at once)
that sends its messages, fresh ones first, and records their outcomes in its own
transaction as soon as it is done, so a slow or hung receiver (cut off at its
``timeout``, a wall-clock deadline) delays no other. After a send that timed out, a
receiver's remaining messages wait, untried, for the same retry time: one that hangs
costs one deadline per run, not one per message. A transient failure (connection,
timeout, 5xx, 429) is retried with exponential backoff and jitter up to
``max_attempts``, then the row is ``dead`` with its last error; a permanent one
(another 4xx, a refused recipient or login) is ``dead`` at once. A crash between
sending and recording re-sends the same notice with the same idempotency key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from anomon import store
from anomon.alerts.alertmanager import AlertmanagerNotifier
from anomon.alerts.model import IncidentView, Notice, Notifier, Points, latest_deploy
from anomon.alerts.notifiers import build_notifier
from anomon.alerts.render import format_time
from anomon.alerts.routing import Silence, muted_routes, route, silenced
from anomon.config import (
    AlertsConfig,
    CommandReceiverConfig,
    DetectionConfig,
    EmailReceiverConfig,
    WebhookReceiverConfig,
)
from anomon.errors import AnomonError, DeliveryError, UsageError
from anomon.model import (
    DeployRecord,
    Event,
    IncidentRecord,
    IncidentStatus,
    OutboxEntry,
    Severity,
    canonical_labels,
)
from anomon.service.alerting import active_silences, notification_key
from anomon.service.delivery_plan import Message, Send, message_key, plan_delivery
from anomon.service.telemetry import Telemetry
from anomon.timeutil import Clock, to_epoch, utcnow

log = logging.getLogger("anomon.deliver")

RECEIVER_WORKERS = 8  # receivers served at once, each by its own worker
LEASE_MARGIN = timedelta(seconds=30)  # left after a send's deadline to record its outcome
CHART_SPAN = timedelta(hours=6)  # how much of the series an email's chart shows
REPEAT_CHECK = timedelta(minutes=1)  # how often firing incidents are checked for repeats


@dataclass
class Outcomes:
    """What one run of the job did."""

    sent: list[int] = field(default_factory=list)
    output: dict[int, str] = field(default_factory=dict)  # what a program printed, by row
    retry: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    dead: dict[int, str] = field(default_factory=dict)
    silenced: list[int] = field(default_factory=list)
    silenced_incidents: set[int] = field(default_factory=set)
    released: list[int] = field(default_factory=list)  # claimed, not tried: lease ran short
    deferred: dict[int, datetime] = field(default_factory=dict)  # not tried: receiver failing

    def merge(self, other: Outcomes) -> None:
        """Add ``other``'s outcomes to these."""
        self.sent += other.sent
        self.output |= other.output
        self.released += other.released
        self.deferred |= other.deferred
        self.retry |= other.retry
        self.dead |= other.dead
        self.silenced += other.silenced
        self.silenced_incidents |= other.silenced_incidents


def _incident_list(rows: Sequence[store.Claimed]) -> str:
    """``incident 7`` or ``incidents 7, 9`` for a log line."""
    ids = sorted({row.incident_id for row in rows})
    return f"incident{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


@dataclass
class DeliverJob:
    """Send what is due in the outbox. ``notifiers`` maps receiver names to notifiers."""

    engine: store.Engine
    config: AlertsConfig
    notifiers: Mapping[str, Notifier]
    clock: Clock = field(default=utcnow)
    jitter: Callable[[], float] = field(default=random.random)
    telemetry: Telemetry | None = None
    # the overrides whose annotations every notification carries
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    # where people reach the console: every notification links to its incident's page
    external_url: str = ""
    # whether this worker plans repeats and refreshes Alertmanager (several: the leader)
    leads: Callable[[], bool] | None = None
    _repeats_checked: datetime | None = field(default=None, init=False)
    _refreshed: dict[str, datetime] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._charts = {
            r.name for r in self.config.receivers if isinstance(r, EmailReceiverConfig) and r.chart
        }
        # receivers whose messages carry their whole group, as Alertmanager's do
        self._whole_groups = {
            r.name
            for r in self.config.receivers
            if isinstance(r, WebhookReceiverConfig) and r.format == "alertmanager"
        }
        self._members: dict[tuple[str, str], list[IncidentRecord]] = {}
        # programs: each notification alone, never run twice
        self._programs = {
            r.name for r in self.config.receivers if isinstance(r, CommandReceiverConfig)
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
        if self.telemetry is not None:
            self.telemetry.record_delivery()
        if done.retry or done.dead:
            log.warning(
                "delivery: %d sent, %d to retry, %d dead",
                len(done.sent),
                len(done.retry),
                len(done.dead),
            )

    def run_once(self) -> Outcomes:
        """One pass: repeats, claim, send (receivers at once), record. Returns what happened."""
        now = self.clock()
        if self.leads is None or self.leads():  # once, by one worker of several
            self._enqueue_repeats(now)
            self._refresh_alertmanagers(now)
        delivery = self.config.delivery
        lease = self._lease()
        claimed = store.claim_due(self.engine, now=now, limit=delivery.batch_size, lease=lease)
        if not claimed:
            return Outcomes()
        incidents = store.incidents_for_notice(self.engine, [c.incident_id for c in claimed])
        silences = active_silences(self.engine, self.config, now)
        plan = plan_delivery(
            claimed,
            incidents,
            receivers=self.notifiers.keys(),
            silences=silences,
            muted=muted_routes(self.config, now),
            now=now,
            one_by_one=self._programs,
        )
        store.keep_messages(
            self.engine,
            {m.key: [r.id for r in m.rows if r.message_key is None] for m in plan.messages},
        )
        claims = {row.id: row.attempts for row in claimed}
        # what is not sent is recorded at once: a silence's rows wait for no receiver
        done = Outcomes(
            dead=plan.dead,
            silenced=plan.silenced,
            silenced_incidents=plan.silenced_incidents,
        )
        if done.dead or done.silenced:
            self._record(done, claims)
        for row in claimed:  # what someone will never receive: an error, with the reason
            if row.id in plan.dead:
                log.error(
                    "receiver %s: notification of incident %d is dead: %s",
                    row.receiver,
                    row.incident_id,
                    plan.dead[row.id],
                )
        by_receiver: dict[str, list[Send]] = {}
        for send in plan.sends:
            by_receiver.setdefault(send.message.receiver, []).append(send)
        self._members = (
            self._group_members(silences, now) if self._whole_groups & set(by_receiver) else {}
        )
        # stop starting sends at half the claim's lease: a send that starts ends at its
        # deadline, well before the lease does (see _lease); past the lease another
        # worker may claim the same rows; what is left goes back to the queue untouched
        send_by = now + lease / 2

        def serve(receiver: str) -> Outcomes:
            outcome = self._serve(receiver, by_receiver[receiver], incidents, send_by)
            self._record(outcome, claims)  # at once: its outcomes wait for no other receiver
            self._observe(outcome, claimed)
            return outcome

        workers = min(len(by_receiver), RECEIVER_WORKERS)
        if workers <= 1:
            outcomes = [serve(receiver) for receiver in by_receiver]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="anomon-deliver") as pool:
                outcomes = list(pool.map(serve, by_receiver))
        for outcome in outcomes:
            done.merge(outcome)
        return done

    def _lease(self) -> timedelta:
        """The claim's lease: ``claim_timeout``, or more where a receiver's timeout needs
        it, so that a send started before half the lease ends (at worst at its deadline)
        LEASE_MARGIN before the lease does."""
        longest = max((r.timeout for r in self.config.receivers), default=timedelta(0))
        return max(self.config.delivery.claim_timeout, 2 * (longest + LEASE_MARGIN))

    def _serve(
        self,
        receiver: str,
        sends: list[Send],
        incidents: Mapping[int, IncidentRecord],
        send_by: datetime,
    ) -> Outcomes:
        """Send one receiver's messages, fresh ones first, ``concurrency`` at a time.

        After a send that timed out, the messages not yet started are deferred to its
        retry time, untried (their attempt is not counted); past ``send_by`` they are
        released.
        """
        failing: list[datetime] = []

        def one(send: Send) -> Outcomes:
            if failing:
                return Outcomes(deferred={row.id: failing[0] for row in send.live})
            if self.clock() >= send_by:
                return Outcomes(released=[row.id for row in send.live])
            outcome, timed_out = self._deliver(send, incidents)
            if timed_out and outcome.retry and not failing:
                failing.append(min(at for _, at in outcome.retry.values()))
            return outcome

        # fresh messages first: one that keeps failing never holds back the others
        ordered = sorted(sends, key=lambda s: (max(r.attempts for r in s.live), s.live[0].id))
        concurrency = self.config.delivery.concurrency
        if concurrency == 1 or len(ordered) == 1:
            outcomes = [one(message) for message in ordered]
        else:
            with ThreadPoolExecutor(min(concurrency, len(ordered))) as pool:
                outcomes = list(pool.map(one, ordered))
        done = Outcomes()
        for outcome in outcomes:
            done.merge(outcome)
        return done

    def _observe(self, done: Outcomes, claimed: Sequence[store.Claimed]) -> None:
        if self.telemetry is None or not done.sent:
            return
        sent = set(done.sent)
        for row in claimed:
            if row.id in sent:
                latency = (self.clock() - row.created_at).total_seconds()
                self.telemetry.delivery_latency.observe(max(0.0, latency))

    def _deliver(
        self,
        send: Send,
        incidents: Mapping[int, IncidentRecord],
    ) -> tuple[Outcomes, bool]:
        """Send one planned message's notice; return the outcomes of its rows, and
        whether the send timed out."""
        receiver, live = send.message.receiver, send.live
        now = self.clock()
        done = Outcomes()
        notifier = self.notifiers[receiver]  # the plan made the rows of others dead
        notice = self._notice(send.message, live, incidents, now)
        if receiver in self._programs:  # a crash from here on must not run it again
            store.mark_started(self.engine, {row.id: row.attempts for row in live})
        about = _incident_list(live)
        try:
            output = notifier.send(notice)
        except DeliveryError as exc:
            if exc.output is not None:
                done.output |= dict.fromkeys((row.id for row in live), exc.output)
            self._failed(receiver, live, str(exc), exc.permanent, now, done)
            return done, exc.timed_out
        except Exception as exc:  # a notifier bug must not stop the others
            log.debug("receiver %s: send raised", receiver, exc_info=True)
            # the type only: an unexpected error's text may carry what it was given
            error = f"unexpected {type(exc).__name__} from the {receiver} notifier"
            self._failed(receiver, live, error, False, now, done)
        else:
            done.sent += [row.id for row in live]
            if output is not None:
                done.output |= dict.fromkeys((row.id for row in live), output)
            log.info("receiver %s: delivered the %s notice of %s", receiver, notice.event, about)
        return done, False

    def _failed(
        self,
        receiver: str,
        rows: list[store.Claimed],
        error: str,
        permanent: bool,
        now: datetime,
        done: Outcomes,
    ) -> None:
        delivery = self.config.delivery
        # from the failure, not from the claim: a send that timed out took its timeout, and
        # a backoff no longer than that would be due at once
        failed_at = max(now, self.clock())
        retry_at = failed_at + self._backoff(max(row.attempts for row in rows))  # the group
        dead = []
        for row in rows:
            if permanent or row.attempts >= delivery.max_attempts:
                reason = "permanent" if permanent else f"gave up after {row.attempts} attempts"
                done.dead[row.id] = f"{reason}: {error}"
                dead.append(row)
            else:
                done.retry[row.id] = (error, retry_at)
        if dead:  # what someone will never receive: an error, with the reason
            log.error(
                "receiver %s: notification of %s is dead (%s): %s",
                receiver,
                _incident_list(dead),
                done.dead[dead[0].id].split(":", 1)[0],
                error,
            )
        if len(dead) < len(rows):
            log.warning(
                "receiver %s: sending %s failed, retry at %s: %s",
                receiver,
                _incident_list([row for row in rows if row.id in done.retry]),
                format_time(retry_at),
                error,
            )

    def _backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half to all of initial x 2^(attempts-1), capped."""
        delivery = self.config.delivery
        span = min(delivery.backoff_max, delivery.backoff_initial * 2 ** max(0, attempts - 1))
        return timedelta(seconds=span.total_seconds() * (0.5 + 0.5 * self.jitter()))

    def _notice(
        self,
        message: Message,
        rows: list[store.Claimed],
        incidents: Mapping[int, IncidentRecord],
        now: datetime,
    ) -> Notice:
        receiver, group_key = message.receiver, message.group_key
        charts = receiver in self._charts
        shown = sorted({row.incident_id for row in rows})
        events = {row.event for row in rows}
        keys: dict[int, list[str]] = {}
        for row in sorted(rows, key=lambda r: r.key):
            keys.setdefault(row.incident_id, []).append(row.key)
        views = [
            replace(self._view(incidents[i], charts=charts), notification_keys=keys[i])
            for i in shown
        ]
        # an Alertmanager message carries every alert of its group still firing
        views += [
            self._view(data, charts=charts)
            for data in sorted(self._members.get((receiver, group_key), ()), key=lambda d: d.id)
            if data.id not in keys
        ]
        if all(view.status == IncidentStatus.RESOLVED for view in views):
            event = Event.RESOLVED  # a firing and its resolution claimed together: say how it ended
        else:
            event = (
                Event.FIRING
                if Event.FIRING in events
                else Event.REPEAT
                if Event.REPEAT in events
                else Event.RESOLVED
            )
        return Notice(
            receiver=receiver,
            event=event,
            key=message_key(row.key for row in rows),
            group_key=group_key,
            group_labels=dict(message.group_labels),
            incidents=views,
            sent_at=now,
            notification_keys=sorted(row.key for row in rows),
        )

    def _view(self, data: IncidentRecord, *, charts: bool) -> IncidentView:
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
        annotations = self.detection.settings_for(data.metric, data.labels).annotations
        deploy = deploy_before(self.engine, data, self.config.deploy_window)
        return IncidentView.of(
            data,
            points=points,
            annotations=annotations,
            deploy=deploy,
            external_url=self.external_url,
        )

    def _refresh_alertmanagers(self, now: datetime) -> None:
        """Re-send every firing incident to each Alertmanager it routes to, once per that
        receiver's ``resend_every`` (as Prometheus re-sends its firing alerts): state, not
        events, so nothing is queued, and a failed push is retried at the next one."""
        due = [
            notifier
            for notifier in self.notifiers.values()
            if isinstance(notifier, AlertmanagerNotifier)
            and now - self._refreshed.get(notifier.name, datetime.min.replace(tzinfo=now.tzinfo))
            >= notifier.resend_every
        ]
        if not due:
            return
        for notifier in due:
            self._refreshed[notifier.name] = now
        incidents = store.incidents_for_notice(self.engine, store.firing_incident_ids(self.engine))
        silences = active_silences(self.engine, self.config, now)
        for notifier in due:
            views = [
                self._view(data, charts=False)
                for data in incidents.values()
                if data.status == IncidentStatus.FIRING
                and not silenced(data.labels, silences, now)
                and any(d.receiver == notifier.name for d in route(data.labels, self.config))
            ]
            if not views:
                continue
            notice = Notice(
                notifier.name, Event.REPEAT, f"refresh-{to_epoch(now)}", "refresh", {}, views, now
            )
            try:
                notifier.send(notice)
            except DeliveryError as exc:
                log.warning(
                    "receiver %s: re-sending %d firing alert(s) failed: %s",
                    notifier.name,
                    len(views),
                    exc,
                )

    def _group_members(
        self, silences: Sequence[Silence], now: datetime
    ) -> dict[tuple[str, str], list[IncidentRecord]]:
        """The firing, unsilenced incidents of each (receiver, group) of the receivers that
        get whole groups: what an Alertmanager message carries beside its news."""
        members: dict[tuple[str, str], list[IncidentRecord]] = {}
        firing = store.incidents_for_notice(self.engine, store.firing_incident_ids(self.engine))
        for data in firing.values():
            if data.status != IncidentStatus.FIRING or silenced(data.labels, silences, now):
                continue
            for delivery in route(data.labels, self.config):
                if delivery.receiver in self._whole_groups:
                    members.setdefault((delivery.receiver, delivery.group_key), []).append(data)
        return members

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
                    Event.REPEAT,
                    period,
                    f"{delivery.receiver}|{delivery.group_key}",
                )
                due.setdefault(candidate.incident_id, []).append(
                    OutboxEntry(
                        delivery.receiver,
                        delivery.group_key,
                        Event.REPEAT,
                        key,
                        now,
                        route=delivery.route,
                        group_labels=canonical_labels(delivery.group_labels),
                    )
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
            deferred=done.deferred,
            output=done.output,
            now=self.clock(),
        )


def deploy_before(
    engine: store.Engine, incident: IncidentRecord, window: timedelta
) -> DeployRecord | None:
    """The last deploy of ``incident``'s model or entity in the ``window`` before it
    opened, which its notifications and its console page name (None: none; a window
    of 0: never looked for)."""
    if not window:
        return None
    near = store.list_deploys(
        engine,
        since=incident.opened_at - window,
        until=incident.opened_at,
        about=(incident.entity, incident.labels),
    )
    return latest_deploy(near, incident, window)


def send_test_notice(config: AlertsConfig, receiver: str, *, clock: Clock = utcnow) -> str | None:
    """Send one made-up firing incident to ``receiver`` once (no retries, no outbox);
    return what it printed, for a program receiver.

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
        status=IncidentStatus.FIRING,
        severity=Severity.WARNING,
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
        event=Event.FIRING,
        key=f"test-{ts}",
        group_key="test",
        group_labels={},
        incidents=[incident],
        sent_at=now,
        test=True,
    )
    notifier = build_notifier(found)
    try:
        return notifier.send(notice)
    finally:
        notifier.close()
