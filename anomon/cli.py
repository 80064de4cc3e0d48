"""The ``anomon`` command. The only place errors become messages and exit codes:
2 for usage and config problems, 1 for runtime failures, 0 for success."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from anomon import __version__, store
from anomon.config import DEFAULT_CONFIG_PATH, Config, DetectionConfig, load_config
from anomon.errors import AnomonError, UsageError
from anomon.timeutil import format_duration, parse_duration

CONFIG_ENV = "ANOMON_CONFIG"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except AnomonError as exc:
        bare = exc.exit_code == 2 and not isinstance(exc, UsageError)  # config: PATH: field
        print(str(exc) if bare else f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomon", description="Anomaly detection for ML models in production."
    )
    parser.add_argument("--version", action="version", version=f"anomon {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = _command(commands, "run", "run the daemon until SIGTERM or Ctrl-C", _run)
    run.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade a database that is behind the migrations instead of refusing",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="text lines (default) or one JSON object per line ([daemon] log_format)",
    )

    backfill = _command(
        commands,
        "backfill",
        "pull a source's history into the database (prometheus_query, predictions, sql)",
        _backfill,
    )
    backfill.add_argument("--source", required=True, help="the [[sources]] name")
    backfill.add_argument(
        "--since", required=True, type=_duration, help="how far back, e.g. 7d or 12h"
    )
    backfill.add_argument(
        "--migrate", action="store_true", help="upgrade a database behind the migrations"
    )

    _command(commands, "status", "sources, series, incidents and the outbox at a glance", _status)

    notify = commands.add_parser("notify", help="work with notification receivers")
    notify_commands = notify.add_subparsers(title="notify commands", metavar="COMMAND")
    test = _command(
        notify_commands, "test", "send a test notification to RECEIVER once", _notify_test
    )
    test.add_argument("receiver", help="an [[alerts.receivers]] name")

    plot = _command(
        commands, "plot", "draw a series, its expected values and anomalies to a PNG", _plot
    )
    plot.add_argument("series", help="a series id, or a metric name (with --label to pick)")
    plot.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="a label the series has"
    )
    plot.add_argument("--since", type=_duration, default=timedelta(days=2), help="e.g. 2d")
    plot.add_argument("--out", type=Path, default=None, help="PNG file (default: METRIC.png)")

    incidents = commands.add_parser("incidents", help="list, acknowledge, judge incidents")
    incident_commands = incidents.add_subparsers(title="incidents commands", metavar="COMMAND")
    shown = _command(incident_commands, "list", "firing incidents, newest first", _incidents)
    shown.add_argument("--all", action="store_true", help="resolved ones too (newest 50)")
    ack = _command(
        incident_commands, "ack", "acknowledge an incident: no more repeats", _incident_ack
    )
    ack.add_argument("id", type=int)
    verdict = _command(
        incident_commands, "feedback", "store a verdict on an incident", _incident_feedback
    )
    verdict.add_argument("id", type=int)
    verdict.add_argument("label", choices=store.FEEDBACK)

    silence = commands.add_parser("silence", help="silence incidents by their labels")
    silence_commands = silence.add_subparsers(title="silence commands", metavar="COMMAND")
    add = _command(silence_commands, "add", "silence incidents matching labels", _silence_add)
    add.add_argument(
        "matchers",
        nargs="+",
        metavar="LABEL=VALUE",
        help="label=value (exact) or label=~regex; all must hold",
    )
    add.add_argument("--for", dest="span", type=_duration, default=None, help="e.g. 2h (default)")
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--by", default=os.environ.get("USER", ""), help="who (default: $USER)")
    listing = _command(silence_commands, "list", "list active silences", _silence_list)
    listing.add_argument("--all", action="store_true", help="expired ones too")
    expire = _command(silence_commands, "expire", "end a silence now", _silence_expire)
    expire.add_argument("id", type=int)

    config = commands.add_parser("config", help="work with the config file")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_commands.add_parser("check", help="validate a config file; exit 2 if invalid")
    check.add_argument("path", nargs="?", help="the file (default: --config's default)")
    check.set_defaults(handler=_config_check)

    replay = commands.add_parser(
        "replay",
        help="run the daemon's detection over a CSV file",
        description="Score every row of INPUT (timestamp, then one column per metric) with the "
        "daemon's detectors; write timestamp,score,anomaly and per-detector scores.",
    )
    replay.add_argument("input", type=Path, help="CSV: timestamp, then numeric columns")
    replay.add_argument(
        "--train", type=Path, help="history before INPUT to warm up on (not output)"
    )
    replay.add_argument("--config", "-c", type=Path, help="take [detection] from this config file")
    replay.add_argument("--out", "-o", type=Path, help="output CSV (default: standard output)")
    replay.set_defaults(handler=_replay)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure detection quality on labelled data (NAB layout)",
        description="Replay every file of DATA_DIR listed in the windows JSON and report NAB "
        "scores and event metrics per category and overall.",
    )
    evaluate.add_argument("data_dir", type=Path, help="folder of <category>/<name>.csv files")
    evaluate.add_argument(
        "--labels", type=Path, required=True, help="windows JSON keyed by <category>/<name>.csv"
    )
    evaluate.add_argument(
        "--config", "-c", type=Path, help="take [detection] from this config file"
    )
    evaluate.add_argument("--format", choices=["text", "json"], default="text")
    evaluate.set_defaults(handler=_evaluate)

    db = commands.add_parser("db", help="manage the database schema (Alembic migrations)")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND")
    upgrade = _command(
        db_commands, "upgrade", "migrate the schema up (default: to the newest)", _db_upgrade
    )
    upgrade.add_argument("revision", nargs="?", default="head")
    _command(db_commands, "current", "print the schema revision and the newest one", _db_current)
    _command(
        db_commands,
        "check",
        "compare the database with the models; exit 1 on a difference",
        _db_check,
    )
    downgrade = _command(
        db_commands, "downgrade", "migrate the schema down to REVISION", _db_downgrade
    )
    downgrade.add_argument("revision", help="a revision id, -1 for one step, or base for none")
    return parser


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    command = group.add_parser(name, help=help_text, description=help_text)
    command.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})",
    )
    command.set_defaults(handler=handler)
    return command


def _config_path(given: str | Path | None) -> Path:
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args.config))


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    handler = logging.StreamHandler()
    if (args.log_format or config.daemon.log_format) == "json":
        handler.setFormatter(_JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.daemon.log_level.upper(), handlers=[handler])
    # one line per job run (APScheduler) and per migration step (Alembic) is noise
    for chatty in ("apscheduler", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from anomon import service  # the detectors and sources load slowly: only when needed

    path = _config_path(args.config)
    return service.run(config, migrate=args.migrate, reload=lambda: load_config(path))


class _JsonLines(logging.Formatter):
    """One JSON object per log line: time (UTC, ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _duration(text: str) -> object:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backfill(args: argparse.Namespace) -> int:
    config = _load(args)
    engine = store.open_engine(config.database.url, busy_timeout=config.database.busy_timeout)
    store.ensure_schema(engine, migrate=args.migrate or config.database.migrate_on_start)
    bar = _ProgressBar(f"backfill {args.source}") if sys.stderr.isatty() else None
    from anomon import service

    result = service.backfill(config, engine, args.source, since=args.since, progress=bar)
    if bar is not None:
        bar.finish()
    engine.dispose()
    for failure in result.failures:
        print(f"failed: {failure}", file=sys.stderr)
    print(
        f"backfill {args.source}: {result.chunks} chunk(s), {result.points} new point(s), "
        f"{result.series_created} new series, {len(result.failures)} failed chunk(s)"
    )
    return 1 if result.failures else 0


class _ProgressBar:
    """One self-overwriting line on the terminal: ``label [#####-----] 5/10, N points``."""

    def __init__(self, label: str, width: int = 30) -> None:
        self._label, self._width = label, width

    def __call__(self, done: int, total: int, points: int) -> None:
        filled = self._width * done // max(total, 1)
        bar = "#" * filled + "-" * (self._width - filled)
        sys.stderr.write(f"\r{self._label} [{bar}] {done}/{total} chunks, {points:,} points")
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def _status(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    status = store.read_status(engine)
    engine.dispose()
    print("sources:")
    for source in status.sources:
        state = "ok" if source.last_error is None else f"error: {source.last_error}"
        ok = source.last_ok_at.isoformat(timespec="seconds") if source.last_ok_at else "never"
        print(
            f"  {source.source}: last run {source.last_at:%Y-%m-%d %H:%M:%S}Z, {state} "
            f"(last success {ok})"
        )
    if not status.sources:
        print("  (no collections yet)")
    series = ", ".join(f"{n} {q}" for q, n in sorted(status.series_by_quality.items()))
    print(f"series: {series or 'none'}")
    print(f"open incidents: {status.open_incidents}")
    outbox = ", ".join(f"{n} {state}" for state, n in sorted(status.outbox.items()))
    print(f"notifications: {outbox or 'none'}")
    for dead in status.dead:
        print(
            f"  dead #{dead.id} to {dead.receiver} ({dead.event}, incident {dead.incident_id},"
            f" {dead.attempts} attempt(s)): {dead.error}"
        )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from anomon.alerts.chart import render_series
    from anomon.alerts.model import Points

    labels = dict(_pair(text) for text in args.label)
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    by_id = args.series.isdigit()
    found = store.find_series(
        engine,
        series_id=int(args.series) if by_id else None,
        metric=None if by_id else args.series,
        labels=labels,
    )
    if len(found) != 1:
        engine.dispose()
        shown = "; ".join(f"{r.id} {r.metric}{json.dumps(r.labels)}" for r in found[:10])
        what = f"{len(found)} series match" + (f": {shown}" if found else "")
        raise UsageError(f"{what}; name one by id or add --label K=V")
    (series,) = found
    until = int(datetime.now(UTC).timestamp()) + 1
    since = until - int(args.since.total_seconds())
    around = store.series_around(engine, series.id, since=since, until=until)
    spans = store.incident_spans(engine, series.id, since=since, until=until)
    engine.dispose()
    if not around.ts:
        raise UsageError(
            f"series {series.id} has no points in the last {format_duration(args.since)}"
        )
    points = Points(around.ts, around.values, around.expected, around.anomalies)
    heading = f"{series.metric} {json.dumps(series.labels)} ({series.unit or 'no unit'})"
    out = args.out or Path(f"{series.metric}.png")
    out.write_bytes(render_series(points, heading, spans=spans, width_px=960, height_px=320))
    print(
        f"{out}: {len(around.ts)} points, {len(around.anomalies)} anomalies, "
        f"{len(spans)} incident(s)"
    )
    return 0


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not name or not sep:
        raise UsageError(f"expected K=V, got: {text!r}")
    return name, value


def _incidents(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    rows = store.list_incidents(engine, everything=args.all)
    engine.dispose()
    for row in rows:
        marks = "".join(
            flag for flag, on in (("ack ", row.acknowledged), ("silenced ", row.silenced)) if on
        )
        print(
            f"#{row.id}  {row.status:<8} {row.severity:<8} {row.metric} on {row.entity}  "
            f"peak {row.peak_score:.0f}  opened {row.opened_at:%Y-%m-%d %H:%M}Z  "
            f"{marks}{row.feedback or ''}".rstrip()
        )
    if not rows:
        print("no firing incidents" if not args.all else "no incidents")
    return 0


def _incident_ack(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.acknowledge(engine, args.id, now=datetime.now(UTC))
    engine.dispose()
    print(f"incident {args.id} acknowledged")
    return 0


def _incident_feedback(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.give_feedback(engine, args.id, args.label)
    engine.dispose()
    print(f"incident {args.id}: {args.label}")
    return 0


def _notify_test(args: argparse.Namespace) -> int:
    config = _load(args)
    from anomon import service

    service.send_test_notice(config.alerts, args.receiver)
    print(f"test notification sent to {args.receiver}")
    return 0


def _silence_add(args: argparse.Namespace) -> int:
    matchers = [_matcher(text) for text in args.matchers]
    now = datetime.now(UTC)
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    span = args.span or timedelta(hours=2)
    silence_id = store.add_silence(
        engine,
        matchers,
        starts_at=now,
        ends_at=now + span,
        comment=args.comment,
        created_by=args.by,
        now=now,
    )
    engine.dispose()
    print(f"silence {silence_id} until {(now + span).isoformat(timespec='seconds')}")
    return 0


def _matcher(text: str) -> dict[str, str]:
    name, op, value = text.partition("=~") if "=~" in text else text.partition("=")
    if not name or not op:
        raise UsageError(f"expected LABEL=VALUE or LABEL=~REGEX, got: {text!r}")
    if op == "=~":
        try:
            re.compile(value)
        except re.error as exc:
            raise UsageError(f"{text!r}: not a valid regular expression ({exc})") from None
    return {"name": name, "value": value, "op": op}


def _silence_list(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    rows = store.list_silences(engine, now=datetime.now(UTC), expired=args.all)
    engine.dispose()
    for row in rows:
        matchers = " ".join(f"{m['name']}{m['op']}{m['value']}" for m in row.matchers)
        print(
            f"{row.id}  {row.starts_at:%Y-%m-%d %H:%M}Z..{row.ends_at:%Y-%m-%d %H:%M}Z  "
            f"{matchers}  {row.comment} ({row.created_by or 'unknown'})"
        )
    if not rows:
        print("no active silences")
    return 0


def _silence_expire(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.ensure_schema(engine, migrate=False)
    store.expire_silence(engine, args.id, now=datetime.now(UTC))
    engine.dispose()
    print(f"silence {args.id} expired")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    path = _config_path(args.path)
    config = load_config(path)
    print(
        f"{path}: ok ({len(config.sources)} source(s), "
        f"database {store.redact(config.database.url)})"
    )
    return 0


def _detection(path: Path | None) -> DetectionConfig:
    """The [detection] section of ``path``, or the shipped defaults without one."""
    return load_config(path).detection if path else DetectionConfig()


def _replay(args: argparse.Namespace) -> int:
    config = _detection(args.config)
    from anomon.detect import replay as replaying

    table = replaying.read_table(args.input)
    train = replaying.read_table(args.train) if args.train else None
    scores = replaying.replay(table, config, train=train)
    if args.out:
        with args.out.open("w", encoding="utf-8", newline="") as out:
            replaying.write_scores(table, scores, out)
    else:
        replaying.write_scores(table, scores, sys.stdout)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    config = _detection(args.config)
    from anomon.detect import evaluate as evaluation

    groups = evaluation.evaluate(args.data_dir, evaluation.load_windows(args.labels), config)
    rows = evaluation.report_rows(groups)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    headers = list(rows[0]) if rows else []
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths, strict=True)))
    return 0


def _engine(args: argparse.Namespace) -> store.Engine:
    config = _load(args)
    return store.open_engine(config.database.url, busy_timeout=config.database.busy_timeout)


def _db_upgrade(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.upgrade(engine, args.revision)
    print(f"{store.redact(engine.url)}: at revision {store.current_revision(engine)}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    engine = _engine(args)
    current, head = store.current_revision(engine), store.head_revision()
    state = "up to date" if current == head else ("empty" if current is None else "behind")
    print(f"{store.redact(engine.url)}: revision {current or '(none)'}, newest {head} ({state})")
    return 0


def _db_check(args: argparse.Namespace) -> int:
    engine = _engine(args)
    differences = store.check(engine)
    for line in differences:
        print(line)
    if differences:
        print(f"{store.redact(engine.url)}: schema differs from the models", file=sys.stderr)
        return 1
    print(f"{store.redact(engine.url)}: schema matches the models")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    engine = _engine(args)
    store.downgrade(engine, args.revision)
    print(f"{store.redact(engine.url)}: at revision {store.current_revision(engine) or '(none)'}")
    return 0
