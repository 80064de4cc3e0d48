"""The daemon: the only package that imports APScheduler and joins the others."""

from anomon.service.alerting import resolve_incident
from anomon.service.backfill import BackfillResult, backfill
from anomon.service.daemon import build_scheduler, run
from anomon.service.delivery import send_test_notice

__all__ = [
    "BackfillResult",
    "backfill",
    "build_scheduler",
    "resolve_incident",
    "run",
    "send_test_notice",
]
