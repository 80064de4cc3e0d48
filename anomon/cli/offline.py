"""Commands that need no daemon: ``config check``, ``replay``, ``evaluate``, ``db``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anomon import store
from anomon.cli.common import config_path, engine_of, load
from anomon.cli.tables import escape_controls, text_table
from anomon.config import DetectionConfig, config_warnings, load_config
from anomon.errors import UsageError


def config_check(args: argparse.Namespace) -> int:
    path = config_path(args.path)
    config = load_config(path)
    print(
        f"{path}: ok ({len(config.sources)} source(s), "
        f"database {store.redact(config.database.url)})"
    )
    for warning in config_warnings(config):  # valid, but surely not meant
        _warn(f"{path}: warning: {warning}")
    return 0


def _detection(path: Path | None) -> DetectionConfig:
    """The [detection] section of ``path``, or the shipped defaults without one."""
    return load_config(path).detection if path else DetectionConfig()


def replay(args: argparse.Namespace) -> int:
    config = _detection(args.config)
    from anomon.detect import replay as replaying

    table = replaying.read_table(args.input)
    train = replaying.read_table(args.train) if args.train else None
    if train is not None:
        _warn(replaying.time_order(train).describe(args.train, train.labels))
    _warn(
        replaying.time_order(table, replaying.last_time(train)).describe(args.input, table.labels)
    )
    scores = replaying.replay(table, config, train=train)
    if args.out:
        with args.out.open("w", encoding="utf-8", newline="") as out:
            replaying.write_scores(table, scores, out)
    else:
        replaying.write_scores(table, scores, sys.stdout)
    return 0


def _warn(line: str | None) -> None:
    """Print a warning line (if any) on stderr, its controls escaped."""
    if line:
        print(escape_controls(line), file=sys.stderr)


def evaluate(args: argparse.Namespace) -> int:
    config = _detection(args.config)
    from anomon.detect import evaluate as evaluation

    groups = evaluation.evaluate(args.data_dir, evaluation.load_windows(args.labels), config)
    for result in groups[-1].files if groups else []:  # the last group holds every file
        _warn(result.cleaned)
    rows = evaluation.report_rows(groups)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif rows:
        sys.stdout.write(text_table(rows))
    return 0


def db_upgrade(args: argparse.Namespace) -> int:
    engine = engine_of(load(args))
    store.upgrade(engine, args.revision)
    print(f"{store.redact(engine.url)}: at revision {store.current_revision(engine)}")
    return 0


def db_current(args: argparse.Namespace) -> int:
    engine = engine_of(load(args))
    current, head = store.current_revision(engine), store.head_revision()
    state = "up to date" if current == head else ("empty" if current is None else "behind")
    print(f"{store.redact(engine.url)}: revision {current or '(none)'}, newest {head} ({state})")
    return 0


def db_check(args: argparse.Namespace) -> int:
    engine = engine_of(load(args))
    differences = store.check(engine)
    for line in differences:
        print(line)
    if differences:
        print(f"{store.redact(engine.url)}: schema differs from the models", file=sys.stderr)
        return 1
    print(f"{store.redact(engine.url)}: schema matches the models")
    return 0


def db_downgrade(args: argparse.Namespace) -> int:
    if args.revision == "base" and not args.yes:
        raise UsageError(
            "db downgrade base drops every anomon table and the data in it: add --yes to do it"
        )
    engine = engine_of(load(args))
    store.downgrade(engine, args.revision)
    print(f"{store.redact(engine.url)}: at revision {store.current_revision(engine) or '(none)'}")
    return 0
