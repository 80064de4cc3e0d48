"""Shared alert test data: the incidents, notices and chart points the notifier tests send.

Provides the times ``OPENED`` (when the incident opened) and ``NOW`` (when its notice
goes out: the notifiers' clock), ``PNG_MAGIC`` (how a PNG file begins), and factories:

- ``incident(**changes)``: incident 17, accuracy of churn-model firing at 0.71 where
  0.93 was expected, with the full routing label set (``LABELS``) and two detector
  scores, the weaker first; no points unless given (``points=points()``).
- ``notice(*incidents, receiver=..., key=..., sent_at=..., test=False)``: a firing
  notice for the churn-model group, of ``incident()`` when given no incidents.
- ``points(size=60)``: a series around the incident with five anomalous points at
  three quarters of its length, for charts.
- ``delivery_error(send_target, notice)``: the DeliveryError that sending ``notice``
  (default ``notice()``) through a notifier raises.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anomon.alerts.model import IncidentView, Notice, Notifier, Points
from anomon.errors import DeliveryError

OPENED = datetime(2026, 11, 22, 11, 45, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 11, 50, 7, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = {
    "metric": "accuracy",
    "entity": "churn-model",
    "source": "predictions",
    "kind": "model",
    "severity": "critical",
}


def incident(**changes: Any) -> IncidentView:
    """Incident 17 as a notification shows it, with ``changes`` replaced."""
    base = IncidentView(
        id=17,
        metric="accuracy",
        entity="churn-model",
        labels=dict(LABELS),
        status="firing",
        severity="critical",
        peak_score=87.4,
        opened_at=OPENED,
        last_seen_at=OPENED + timedelta(minutes=4),
        value=0.71,
        expected=0.93,
        direction="down",
        detector_scores={"forest": 61.0, "zscore": 87.4},
    )
    return replace(base, **changes)


def notice(
    *incidents: IncidentView,
    receiver: str = "ml-team",
    key: str = "n-5f2c",
    sent_at: datetime = NOW,
    test: bool = False,
) -> Notice:
    """A firing notice about ``incidents`` (``incident()`` when none are given)."""
    return Notice(
        receiver=receiver,
        event="firing",
        key=key,
        group_key='{}:{entity="churn-model"}',
        group_labels={"entity": "churn-model"},
        incidents=incidents or (incident(),),
        sent_at=sent_at,
        test=test,
    )


def points(size: int = 60) -> Points:
    """``size`` minutes of a series ending after ``OPENED``, five of them anomalous."""
    start = int(OPENED.timestamp()) - 45 * 60
    ts = [start + 60 * i for i in range(size)]
    values = [0.93 + 0.01 * math.sin(i) for i in range(size)]
    odd = range(size * 3 // 4, size * 3 // 4 + 5)
    for i in odd:
        values[i] = 0.71
    return Points(ts=ts, values=values, expected=[0.93] * size, anomalies=[ts[i] for i in odd])


def delivery_error(send_target: Notifier, what: Notice | None = None) -> DeliveryError:
    """The DeliveryError ``send_target`` raises sending ``what`` (default ``notice()``)."""
    with pytest.raises(DeliveryError) as caught:
        send_target.send(what or notice())
    return caught.value
