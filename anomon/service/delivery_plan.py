"""What a delivery run does with the notifications it claimed, decided without I/O.

:func:`plan_delivery` is the delivery job's counterpart of
:func:`~anomon.service.alerting.plan_incidents`: given the claimed outbox rows, the
incidents they are about, the receivers there are, the silences and the muted routes at
``now``, it groups the rows into messages and says which are sent, which are recorded as
silenced and which are dead. The job then only sends and records (``service.delivery``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from anomon import store
from anomon.alerts.routing import Silence, silenced
from anomon.model import IncidentRecord


@dataclass(frozen=True)
class Message:
    """Claimed notifications that go to one receiver as one notice (one group of one
    route: their ``route`` and ``group_labels`` are the first row's, which all share)."""

    receiver: str
    group_key: str
    rows: list[store.Claimed]

    @property
    def key(self) -> str:
        """The message key of all its notifications (see :func:`message_key`)."""
        return message_key(row.key for row in self.rows)

    @property
    def route(self) -> str:
        """The path of the route that chose its notifications."""
        return self.rows[0].route

    @property
    def group_labels(self) -> Mapping[str, str]:
        """Its group's ``group_by`` labels."""
        return self.rows[0].group_labels


@dataclass(frozen=True)
class Send:
    """A message to send now: ``live`` are its rows that no silence covers."""

    message: Message
    live: list[store.Claimed]


@dataclass
class DeliveryPlan:
    """What to do with a run's claimed rows.

    ``messages`` are all of them grouped (each message's key is kept before anything is
    tried, so a retry sends the same set); ``sends`` the messages with something to
    send; ``silenced`` the rows recorded, not sent (a silence, a muted route, or an
    incident that is gone), ``silenced_incidents`` the incidents a silence covered, and
    ``dead`` the rows that can never be sent, with the reason.
    """

    messages: list[Message] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    silenced: list[int] = field(default_factory=list)
    silenced_incidents: set[int] = field(default_factory=set)
    dead: dict[int, str] = field(default_factory=dict)


def plan_delivery(
    claimed: Sequence[store.Claimed],
    incidents: Mapping[int, IncidentRecord],
    *,
    receivers: Container[str],
    silences: Sequence[Silence],
    muted: Container[str],
    now: datetime,
    one_by_one: Container[str] = (),
) -> DeliveryPlan:
    """Plan a delivery run (pure: no database, no network).

    Rows go into messages (:func:`messages`; a receiver in ``one_by_one``, a program,
    gets each notification alone); a message to a receiver not in ``receivers`` is
    dead, and so is a ``one_by_one`` row that was being run when anomon stopped
    (:data:`~anomon.store.RUN_STARTED`: it may have run, and is never run twice); one
    whose route is in ``muted`` (a mute time interval) is recorded as silenced (the
    receiver hears of a still firing incident at its next repeat); of the rest, a row
    whose incident a silence covers, or whose incident is gone, is silenced and the
    others are sent together.
    """
    plan = DeliveryPlan(messages=messages(claimed, one_by_one=one_by_one))
    for message in plan.messages:
        if message.receiver not in receivers:
            reason = f"receiver {message.receiver!r} is not in the config"
            plan.dead |= dict.fromkeys((row.id for row in message.rows), reason)
            continue
        if message.receiver in one_by_one and message.rows[0].last_error == store.RUN_STARTED:
            plan.dead[message.rows[0].id] = (
                f"not run again: {store.RUN_STARTED}; the program can tell by its "
                f"ANOMON_NOTIFICATION_KEY {message.key}"
            )
            continue
        if message.route in muted:
            plan.silenced += [row.id for row in message.rows]
            continue
        live = []
        for row in message.rows:
            incident = incidents.get(row.incident_id)
            if incident is None or silenced(incident.labels, silences, now):
                plan.silenced.append(row.id)
                if incident is not None:
                    plan.silenced_incidents.add(incident.id)
            else:
                live.append(row)
        if live:
            plan.sends.append(Send(message, live))
    return plan


def messages(claimed: Sequence[store.Claimed], *, one_by_one: Container[str] = ()) -> list[Message]:
    """Group claimed rows into messages: a row tried before goes with the others of the
    message it was first tried in; the rest, one message per receiver and group. A
    receiver in ``one_by_one`` gets every row as a message of its own."""
    sets: dict[tuple[str, str, str | int | None], list[store.Claimed]] = {}
    for row in claimed:
        alone = row.receiver in one_by_one
        key = (row.receiver, row.group_key, row.id if alone else row.message_key)
        sets.setdefault(key, []).append(row)
    return [Message(receiver, group, rows) for (receiver, group, _), rows in sets.items()]


def message_key(notification_keys: Iterable[str]) -> str:
    """The Idempotency-Key of a message: 40 hex digits of SHA-256 over its notifications'
    sorted keys, so the same notifications give the same key however they were claimed."""
    return hashlib.sha256("|".join(sorted(notification_keys)).encode()).hexdigest()[:40]
