"""Commands that change things: incidents ack|resolve|feedback, silences, notify test."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from anomon import store
from anomon.alerts.routing import coverage_problem, parse_matcher
from anomon.cli.common import load, open_store
from anomon.cli.tables import cell_text, emit, escape_controls
from anomon.errors import UsageError
from anomon.model import DeployRecord, Severity
from anomon.timeutil import format_duration


def incident_ack(args: argparse.Namespace) -> int:
    engine = open_store(args)
    store.acknowledge(engine, args.id, now=datetime.now(UTC))
    engine.dispose()
    print(f"incident {args.id} acknowledged")
    return 0


def incident_resolve(args: argparse.Namespace) -> int:
    config = load(args)
    engine = open_store(args)
    from anomon import service

    try:
        service.resolve_incident(engine, config.alerts, args.id, now=datetime.now(UTC))
    finally:
        engine.dispose()
    print(f"incident {args.id} resolved; it opens again if the series stays anomalous")
    return 0


def incident_feedback(args: argparse.Namespace) -> int:
    engine = open_store(args)
    store.give_feedback(engine, args.id, args.label)
    engine.dispose()
    print(f"incident {args.id}: {args.label}")
    return 0


def notify_test(args: argparse.Namespace) -> int:
    config = load(args)
    from anomon import service

    printed = service.send_test_notice(config.alerts, args.receiver)
    print(f"test notification sent to {args.receiver}")
    if printed:  # a program receiver: what it said
        print(f"{args.receiver} printed:")
        for line in printed.splitlines():
            print(f"  | {line}")
    return 0


def silence_add(args: argparse.Namespace) -> int:
    matchers = [_matcher(text) for text in args.matchers]
    span = timedelta(hours=2) if args.span is None else args.span  # --for 0s is no default
    if span <= timedelta(0):
        raise UsageError(f"--for must be longer than 0s, got: {format_duration(span)}")
    now = datetime.now(UTC)
    engine = open_store(args)
    silence_id = store.add_silence(
        engine,
        matchers,
        starts_at=now,
        ends_at=now + span,
        comment=args.comment,
        created_by=args.by,
        now=now,
    )
    from anomon.service.alerting import routing_labels  # numpy and the detectors: load late

    label_sets = [
        routing_labels(meta, severity)
        for meta in store.every_series_meta(engine)
        for severity in Severity
    ]
    engine.dispose()
    match = {m["name"]: m["value"] for m in matchers if m["op"] == "="}
    match_re = {m["name"]: m["value"] for m in matchers if m["op"] == "=~"}
    print(f"silence {silence_id} until {cell_text(now + span)}")
    # accepted either way (the series may come later), but a typo should not go unseen
    problem = coverage_problem(match, match_re, label_sets)
    if problem is not None:
        print(
            escape_controls(f"warning: silence {silence_id} matches nothing now: {problem}"),
            file=sys.stderr,
        )
    return 0


def _matcher(text: str) -> dict[str, str]:
    try:
        return parse_matcher(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def silence_list(args: argparse.Namespace) -> int:
    engine = open_store(args)
    rows = store.list_silences(engine, now=datetime.now(UTC), expired=args.all)
    engine.dispose()
    emit(
        [
            {
                "id": row.id,
                "starts": row.starts_at,
                "ends": row.ends_at,
                "matchers": " ".join(f"{m['name']}{m['op']}{m['value']}" for m in row.matchers),
                "comment": row.comment,
                "by": row.created_by or "unknown",
            }
            for row in rows
        ],
        args.format,
        columns=("id", "starts", "ends", "matchers", "comment", "by"),
        empty="no silences" if args.all else "no active silences",
    )
    return 0


def silence_expire(args: argparse.Namespace) -> int:
    engine = open_store(args)
    store.expire_silence(engine, args.id, now=datetime.now(UTC))
    engine.dispose()
    print(f"silence {args.id} expired")
    return 0


def deploy(args: argparse.Namespace) -> int:
    if not (args.model or args.entity):
        raise UsageError("name what was deployed: --model, --entity or both")
    now = datetime.now(UTC).replace(microsecond=0)
    at = args.at or now
    if at > now + timedelta(minutes=5):
        raise UsageError(f"--at is in the future: {cell_text(at)}")
    record = DeployRecord(
        at=at, model=args.model, version=args.version, entity=args.entity, note=args.note
    )
    engine = open_store(args)
    new = store.record_deploys(engine, [record], now=now)
    engine.dispose()
    told = "recorded" if new else "already recorded"
    print(escape_controls(f"deploy of {record.describe()} at {cell_text(at)} {told}"))
    return 0
