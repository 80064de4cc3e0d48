"""The ``anomon`` command. The only place errors become messages and exit codes:
2 for usage and config problems, 1 for runtime failures, 0 for success.

This module builds the argument parser; each command's handler lives in a module by
what it does: :mod:`.daemon` (run, backfill), :mod:`.views` (what people read),
:mod:`.actions` (what people change), :mod:`.offline` (config, replay, evaluate, db).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from anomon import __version__, store
from anomon.cli import actions, daemon, offline, views
from anomon.cli.common import (
    CONFIG_ENV,
    add_command,
    duration,
    instant,
    limit,
    real_number,
    record_id,
)
from anomon.cli.tables import escape_controls
from anomon.config import DEFAULT_CONFIG_PATH
from anomon.errors import AnomonError, ConfigError, UsageError

TABLE = ("json", "csv")  # the formats of list commands, besides text


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
        print(_error_text(exc), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None:  # not about a file the command was given: unforeseen
            raise
        # --out in a missing folder, --dir that is a file: the path and the reason
        print(escape_controls(f"Error: {exc.filename}: {exc.strerror}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _error_text(exc: AnomonError) -> str:
    """The lines to print for ``exc``; stored names in it cannot forge a line or drive the
    terminal (each problem of a ConfigError is one escaped line)."""
    if isinstance(exc, ConfigError):  # PATH: field: problem, one per line
        return "\n".join(escape_controls(f"{exc.path}: {p}") for p in exc.problems)
    bare = exc.exit_code == 2 and not isinstance(exc, UsageError)
    return escape_controls(str(exc) if bare else f"Error: {exc}")


def _minutes(text: str) -> float:
    try:
        return real_number(text, 1, 60)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomon", description="Anomaly detection for ML models in production."
    )
    parser.add_argument("--version", action="version", version=f"anomon {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = add_command(commands, "run", "run the daemon until SIGTERM or Ctrl-C", daemon.run)
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

    backfill = add_command(
        commands,
        "backfill",
        "pull a source's history into the database (prometheus_query, predictions, sql)",
        daemon.backfill,
    )
    backfill.add_argument("--source", required=True, help="the [[sources]] name")
    backfill.add_argument(
        "--since", required=True, type=duration, help="how far back, e.g. 7d or 12h"
    )
    backfill.add_argument(
        "--migrate", action="store_true", help="upgrade a database behind the migrations"
    )

    show = commands.add_parser(
        "demo",
        help="the whole loop in a few minutes: a simulated model server, injected incidents",
        description="Start a simulated model server and a webhook sink on 127.0.0.1, store "
        "and score a day of history, run the daemon against the server while a memory leak, "
        "an accuracy drop and a latency spike are injected, and print what was found.",
    )
    show.add_argument(
        "--minutes", type=_minutes, default=3.0, help="live time, 1 to 60 (default 3)"
    )
    show.add_argument(
        "--dir", type=Path, default=None, help="working folder (default: a new temporary one)"
    )
    show.set_defaults(handler=daemon.demo)

    add_command(
        commands,
        "status",
        "sources, series, incidents and the outbox at a glance",
        views.status,
        formats=("json",),
    )

    anomalies = add_command(
        commands, "anomalies", "anomalies, newest first", views.anomalies, formats=TABLE
    )
    anomalies.add_argument(
        "--since", type=duration, default=timedelta(days=1), help="how far back (default 1d)"
    )
    anomalies.add_argument("--metric", default=None, help="only this metric")
    anomalies.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="only series with this label"
    )
    anomalies.add_argument(
        "--limit", type=limit, default=100, help="at most this many (default 100)"
    )

    notify = commands.add_parser("notify", help="work with notification receivers")
    notify_commands = notify.add_subparsers(title="notify commands", metavar="COMMAND")
    test = add_command(
        notify_commands, "test", "send a test notification to RECEIVER once", actions.notify_test
    )
    test.add_argument("receiver", help="an [[alerts.receivers]] name")

    plot = add_command(
        commands, "plot", "draw a series, its expected values and anomalies to a PNG", views.plot
    )
    plot.add_argument("series", help="a series id, or a metric name (with --label to pick)")
    plot.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="a label the series has"
    )
    plot.add_argument("--since", type=duration, default=timedelta(days=2), help="e.g. 2d")
    plot.add_argument("--out", type=Path, default=None, help="PNG file (default: METRIC.png)")

    deployed = add_command(
        commands,
        "deploy",
        "record a deploy of a model version (plots, Grafana and notifications show it)",
        actions.deploy,
    )
    deployed.add_argument("--model", default="", help="the model's `model` label")
    deployed.add_argument("--version", required=True, help="the version that went live")
    deployed.add_argument(
        "--entity", default="", help="where (default: the model wherever it runs)"
    )
    deployed.add_argument(
        "--at", type=instant, default=None, help="when: ISO 8601 or a span ago (default: now)"
    )
    deployed.add_argument("--note", default="", help="free text, e.g. a change id")
    workers = add_command(
        commands,
        "workers",
        "the daemons on this database: alive, leader, the sources each collects",
        views.workers,
        formats=TABLE,
    )
    workers.add_argument("--limit", type=int, default=50, help="rows at most (default 50)")
    listed = add_command(commands, "deploys", "deploys, newest first", views.deploys, formats=TABLE)
    listed.add_argument(
        "--since", type=duration, default=timedelta(days=30), help="how far back (default 30d)"
    )

    incidents = commands.add_parser(
        "incidents", help="list, show, acknowledge, resolve and judge incidents"
    )
    incident_commands = incidents.add_subparsers(title="incidents commands", metavar="COMMAND")
    shown = add_command(
        incident_commands,
        "list",
        "firing incidents, newest first",
        views.incidents,
        formats=TABLE,
    )
    shown.add_argument("--all", action="store_true", help="resolved ones too (newest 50)")
    detail = add_command(
        incident_commands,
        "show",
        "one incident: its facts, top anomalies and notifications",
        views.incident_show,
        formats=("json",),
    )
    detail.add_argument("id", type=record_id)
    ack = add_command(
        incident_commands, "ack", "acknowledge an incident: no more repeats", actions.incident_ack
    )
    ack.add_argument("id", type=record_id)
    resolve = add_command(
        incident_commands,
        "resolve",
        "resolve a firing incident now and send its resolved notifications",
        actions.incident_resolve,
    )
    resolve.add_argument("id", type=record_id)
    verdict = add_command(
        incident_commands, "feedback", "store a verdict on an incident", actions.incident_feedback
    )
    verdict.add_argument("id", type=record_id)
    verdict.add_argument("label", choices=store.FEEDBACK)

    silence = commands.add_parser("silence", help="silence incidents by their labels")
    silence_commands = silence.add_subparsers(title="silence commands", metavar="COMMAND")
    add = add_command(
        silence_commands, "add", "silence incidents matching labels", actions.silence_add
    )
    add.add_argument(
        "matchers",
        nargs="+",
        metavar="LABEL=VALUE",
        help="label=value (exact) or label=~regex; all must hold",
    )
    add.add_argument("--for", dest="span", type=duration, default=None, help="e.g. 2h (default)")
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--by", default=_os_user(), help="who (default: the OS user)")
    listing = add_command(
        silence_commands, "list", "list active silences", actions.silence_list, formats=TABLE
    )
    listing.add_argument("--all", action="store_true", help="expired ones too")
    expire = add_command(silence_commands, "expire", "end a silence now", actions.silence_expire)
    expire.add_argument("id", type=record_id)

    config = commands.add_parser("config", help="work with the config file")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_commands.add_parser("check", help="validate a config file; exit 2 if invalid")
    check.add_argument("path", nargs="?", help="the file (default: --config's default)")
    check.set_defaults(handler=offline.config_check)

    replay = commands.add_parser(
        "replay",
        help="run the daemon's detection over a CSV file",
        description="Score every row of INPUT (timestamp, then one column per metric) with the "
        "daemon's detectors; write timestamp,score,anomaly and per-detector scores. With "
        "--series instead, score a stored series' history again as the daemon would now "
        "(its entity, overrides and feedback; nothing written).",
    )
    replay.add_argument("input", type=Path, nargs="?", help="CSV: timestamp, then numeric columns")
    replay.add_argument(
        "--train", type=Path, help="history before INPUT to warm up on (not output)"
    )
    replay.add_argument(
        "--config",
        "-c",
        type=Path,
        help="take [detection] from this config file (with --series: its database too; "
        f"default ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})",
    )
    replay.add_argument("--out", "-o", type=Path, help="output CSV (default: standard output)")
    replay.add_argument(
        "--series",
        help="instead of INPUT, score a stored series' history again (an id, or a metric "
        "name with --label): its entity, overrides and feedback as the daemon has them",
    )
    replay.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="a label the series has"
    )
    replay.add_argument(
        "--since", type=duration, default=timedelta(days=7), help="with --series: e.g. 7d"
    )
    replay.add_argument(
        "--ignore-feedback",
        action="store_true",
        help="with --series: leave out the tolerances learnt from incident feedback",
    )
    replay.set_defaults(handler=offline.replay)

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
    evaluate.set_defaults(handler=offline.evaluate)

    db = commands.add_parser("db", help="manage the database schema (Alembic migrations)")
    db_commands = db.add_subparsers(title="db commands", metavar="COMMAND")
    upgrade = add_command(
        db_commands, "upgrade", "migrate the schema up (default: to the newest)", offline.db_upgrade
    )
    upgrade.add_argument("revision", nargs="?", default="head")
    add_command(
        db_commands, "current", "print the schema revision and the newest one", offline.db_current
    )
    add_command(
        db_commands,
        "check",
        "compare the database with the models; exit 1 on a difference",
        offline.db_check,
    )
    downgrade = add_command(
        db_commands, "downgrade", "migrate the schema down to REVISION", offline.db_downgrade
    )
    downgrade.add_argument("revision", help="a revision id, -1 for one step, or base for none")
    downgrade.add_argument(
        "--yes", action="store_true", help="confirm a downgrade to base (drops every table)"
    )
    return parser


def _os_user() -> str:
    """The OS user's name (``$LOGNAME``, ``$USER``, or the password database), or ""."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no such variables and no entry for this uid (a container)
        return ""
