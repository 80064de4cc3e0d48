"""Commands that read: ``status``, ``anomalies``, ``incidents list|show``, ``plot``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from anomon import store
from anomon.alerts.render import format_number
from anomon.cli.common import label_pairs, load, one_series, open_store
from anomon.cli.tables import as_json, cell_text, emit, escape_controls, text_table
from anomon.errors import UsageError
from anomon.model import SeriesKey, describe_key
from anomon.timeutil import format_duration, from_epoch, to_epoch

# the columns of the list commands, in their order
ANOMALY = ("at", "metric", "labels", "entity", "value", "expected", "score", "severity",
           "direction", "incident")  # fmt: skip
INCIDENT = ("id", "status", "severity", "metric", "entity", "peak", "opened", "resolved", "ack",
            "silenced", "feedback")  # fmt: skip


def status(args: argparse.Namespace) -> int:
    engine = open_store(args)
    found = store.read_status(engine)
    daemons = store.read_workers(engine, now=datetime.now(UTC))
    taught = store.taught_series(engine)
    engine.dispose()
    if args.format == "json":
        daemon = [dataclasses.asdict(d) for d in daemons]
        learnt = [dataclasses.asdict(t) for t in taught]
        print(as_json({"daemon": daemon, **dataclasses.asdict(found), "feedback": learnt}))
        return 0
    running = [daemon for daemon in daemons if daemon.alive]
    lines = [_daemon_line(running or daemons)]
    lines.append("sources:")
    for source in found.sources:
        state = "ok" if source.last_error is None else f"error: {source.last_error}"
        lines.append(
            f"  {source.source}: last run {cell_text(source.last_at)}, {state} "
            f"(last success {cell_text(source.last_ok_at) if source.last_ok_at else 'never'})"
        )
    if not found.sources:
        lines.append("  (no collections yet)")
    series = ", ".join(f"{n} {q}" for q, n in sorted(found.series_by_quality.items()))
    lines.append(f"series: {series or 'none'}")
    learning = found.series_by_quality.get("learning", 0)
    for row in found.learning:
        until = f"about {cell_text(row.until)}" if row.until else "unknown"
        name = describe_key(SeriesKey(row.metric, row.labels), limit=120)
        lines.append(f"  learning until {until}: {name} on {row.entity}")
    if learning > len(found.learning):
        lines.append(f"  ... and {learning - len(found.learning)} more learning")
    lines.append(f"open incidents: {found.open_incidents}")
    if taught:  # what verdicts of false_alarm / expected changed in detection
        lines.append("learnt from feedback (deviations within these score 0):")
    for tolerance in taught:
        lines.append(
            f"  {tolerance.metric} on {tolerance.entity} (series {tolerance.series_id}): up to "
            f"+{format_number(tolerance.up)} / -{format_number(tolerance.down)}, from "
            f"{tolerance.incidents} incident(s)"
        )
    outbox = ", ".join(f"{n} {state}" for state, n in sorted(found.outbox.items()))
    lines.append(f"notifications: {outbox or 'none'}")
    if found.outbox.get("pending") and not running:
        lines.append("  (pending ones are sent by the daemon, and none is running: `anomon run`)")
    for dead in found.dead:
        lines.append(
            f"  dead #{dead.id} to {dead.receiver} ({dead.event}, incident {dead.incident_id},"
            f" {dead.attempts} attempt(s)): {dead.error}"
        )
    # error texts come from remote peers and may quote hostile names: one escaped line each
    print("\n".join(escape_controls(line) for line in lines))
    return 0


def _daemon_line(daemons: list[store.WorkerStatus]) -> str:
    """``daemon: running since …`` (each running one), or when the last one was seen."""
    if not daemons:
        return "daemon: not running (never started on this database)"
    if not daemons[0].alive:
        last = daemons[0]
        how = (
            f"stopped at {cell_text(last.stopped_at)}"
            if last.stopped_at
            else (f"last seen {cell_text(last.heartbeat_at)}, it did not stop cleanly")
        )
        return f"daemon: not running ({how}; pid {last.pid} on {last.host})"
    shown = "; ".join(
        f"since {cell_text(d.started_at)} (pid {d.pid} on {d.host}, anomon {d.version})"
        for d in daemons
    )
    return f"daemon: running {shown}"


def anomalies(args: argparse.Namespace) -> int:
    since = int(datetime.now(UTC).timestamp() - args.since.total_seconds())
    engine = open_store(args)
    rows = store.list_anomalies(
        engine, since=since, metric=args.metric, labels=label_pairs(args.label), limit=args.limit
    )
    engine.dispose()
    emit(
        [_anomaly(row) for row in rows],
        args.format,
        columns=ANOMALY,
        empty=f"no anomalies in the last {format_duration(args.since)}",
    )
    return 0


def _anomaly(row: store.AnomalyRow) -> dict[str, object]:
    return {
        "at": from_epoch(row.ts),
        "metric": row.metric,
        "labels": row.labels,
        "entity": row.entity,
        "value": row.value,
        "expected": row.expected,
        "score": round(row.score, 1),
        "severity": row.severity,
        "direction": row.direction,
        "incident": row.incident_id,
    }


def incidents(args: argparse.Namespace) -> int:
    engine = open_store(args)
    rows = store.list_incidents(engine, everything=args.all)
    engine.dispose()
    emit(
        [
            {
                "id": row.id,
                "status": row.status,
                "severity": row.severity,
                "metric": row.metric,
                "entity": row.entity,
                "peak": round(row.peak_score, 1),
                "opened": row.opened_at,
                "resolved": row.resolved_at,
                "ack": row.acknowledged,
                "silenced": row.silenced,
                "feedback": row.feedback,
            }
            for row in rows
        ],
        args.format,
        columns=INCIDENT,
        empty="no incidents" if args.all else "no firing incidents",
    )
    return 0


def incident_show(args: argparse.Namespace) -> int:
    engine = open_store(args)
    found = store.incident_detail(engine, args.id)
    engine.dispose()
    if args.format == "json":  # anomalies in the shape `anomon anomalies` gives them
        shown = dataclasses.asdict(found) | {"acknowledged": found.acknowledged}
        shown["anomalies"] = [_anomaly(a) for a in found.anomalies]
        print(as_json(shown))
        return 0
    labels = ", ".join(f"{k}={v}" for k, v in sorted(found.labels.items()))
    facts = [
        ("status", found.status + (" (silenced)" if found.silenced else "")),
        ("severity", found.severity),
        ("metric", f"{found.metric} on {found.entity} (series {found.series_id})"),
        ("labels", labels or "-"),
        ("peak score", f"{found.peak_score:.1f}"),
        ("opened", cell_text(found.opened_at)),
        ("last seen", cell_text(found.last_seen_at)),
        ("resolved", cell_text(found.resolved_at)),
        ("acknowledged", cell_text(found.acknowledged_at)),
        ("feedback", found.feedback or "-"),
        ("anomalies", str(found.anomaly_count)),
    ]
    print(f"incident #{found.id}")
    for name, value in facts:
        print(f"  {name + ':':<14}{escape_controls(value)}")
    if found.contributors:
        print(f"\ncontributing series ({len(found.contributors)}), strongest first:")
        rows = [
            {
                "series": c.series_id,
                "metric": c.metric,
                "labels": ", ".join(f"{k}={v}" for k, v in sorted(c.labels.items())),
                "peak": round(c.peak_score, 1),
                "value": c.value,
                "expected": c.expected,
            }
            for c in found.contributors
        ]
        sys.stdout.write(_indent(text_table(rows)))
    if found.anomalies:
        print(f"\ntop {len(found.anomalies)} anomalies by score:")
        sys.stdout.write(_indent(text_table([_anomaly(a) for a in found.anomalies])))
    print("\nnotifications:" if found.notifications else "\nnotifications: none")
    if found.notifications:
        rows = [dataclasses.asdict(n) for n in found.notifications]
        for row in rows:
            del row["output"]  # a program's output: printed below the table, not in a cell
        sys.stdout.write(_indent(text_table(rows)))
    for n in found.notifications:
        if n.output:
            print(f"\noutput of notification {n.id} ({n.receiver}):")
            for line in n.output.splitlines():
                print(f"  | {escape_controls(line)}")
    return 0


def _indent(table: str) -> str:
    return "".join(f"  {line}\n" for line in table.splitlines())


def _file_name(metric: str) -> str:
    """``metric`` as a file name in the current folder: no path, no control characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric).lstrip(".") or "series"


def plot(args: argparse.Namespace) -> int:
    from anomon.alerts.chart import render_series
    from anomon.alerts.model import Points

    engine = open_store(args)
    try:
        series = one_series(engine, args.series, label_pairs(args.label))
    except UsageError:
        engine.dispose()
        raise
    until = int(datetime.now(UTC).timestamp()) + 1
    since = until - int(args.since.total_seconds())
    around = store.series_around(engine, series.id, since=since, until=until)
    spans = store.incident_spans(engine, series.id, since=since, until=until)
    marked = store.list_deploys(
        engine,
        since=from_epoch(since),
        until=from_epoch(until),
        about=(series.entity, series.labels),
    )
    deploys = [(to_epoch(d.at), d.version) for d in marked]
    engine.dispose()
    if not around.ts:
        raise UsageError(
            f"series {series.id} has no points in the last {format_duration(args.since)}"
        )
    points = Points(around.ts, around.values, around.expected, around.anomalies)
    heading = f"{series.metric} {json.dumps(series.labels)} ({series.unit or 'no unit'})"
    out = args.out or Path(f"{_file_name(series.metric)}.png")
    out.write_bytes(
        render_series(points, heading, spans=spans, deploys=deploys, width_px=960, height_px=320)
    )
    print(
        f"{out}: {len(around.ts)} points, {len(around.anomalies)} anomalies, "
        f"{len(spans)} incident(s), {len(deploys)} deploy(s)"
    )
    return 0


def deploys(args: argparse.Namespace) -> int:
    engine = open_store(args)
    rows = store.list_deploys(engine, since=datetime.now(UTC) - args.since)
    engine.dispose()
    emit(
        [
            {
                "id": row.id,
                "at": row.at,
                "model": row.model,
                "version": row.version,
                "entity": row.entity,
                "origin": row.origin,
                "note": row.note,
            }
            for row in reversed(rows)
        ],
        args.format,
        columns=("id", "at", "model", "version", "entity", "origin", "note"),
        empty=f"no deploys in the last {format_duration(args.since)}",
    )
    return 0


def workers(args: argparse.Namespace) -> int:
    """The daemons registered on this database: the live ones (lease not run out) and
    the share each runs, then those seen last."""
    from anomon.service.membership import LEADER, LEASE_BEATS, owner, source_key

    config = load(args)
    engine = open_store(args)
    now = datetime.now(UTC)
    lease = config.daemon.heartbeat * LEASE_BEATS
    rows = store.list_workers(engine, now=now, alive_for=lease, limit=args.limit)
    engine.dispose()
    alive = sorted(row.id for row in rows if row.alive)
    names = [source.name for source in config.sources if source.enabled]

    def share(worker: int) -> str:
        if worker not in alive:
            return ""
        mine = sum(owner(source_key(name), alive) == worker for name in names)
        return f"{mine}/{len(names)}"

    emit(
        [
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "started": row.started_at,
                "heartbeat": row.heartbeat_at,
                "state": "alive" if row.alive else ("stopped" if row.stopped_at else "gone"),
                "leader": bool(alive) and row.alive and owner(LEADER, alive) == row.id,
                "sources": share(row.id),
            }
            for row in rows
        ],
        args.format,
        columns=(
            "id", "host", "pid", "version", "started", "heartbeat", "state", "leader", "sources",
        ),
        empty="no worker has registered on this database",
    )  # fmt: skip
    return 0
