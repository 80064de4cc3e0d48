"""Commands that need no daemon: ``config check``, ``replay``, ``evaluate``, ``db``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from anomon import store
from anomon.cli.common import (
    config_path,
    engine_of,
    label_pairs,
    load,
    one_series,
)
from anomon.cli.tables import escape_controls, text_table
from anomon.config import DetectionConfig, config_warnings, load_config
from anomon.errors import UsageError, summarise
from anomon.timeutil import format_duration, from_epoch


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
    if (args.input is None) == (args.series is None):
        raise UsageError("replay: give either INPUT (a CSV file) or --series (a stored series)")
    if args.series is not None:
        if args.train is not None:
            raise UsageError("replay: --train goes with INPUT, not with --series")
        return _replay_stored(args)
    if args.label or args.ignore_feedback:
        raise UsageError("replay: --label and --ignore-feedback go with --series")
    config = _detection(args.config)
    from anomon.detect import replay as replaying

    if args.out is not None and args.out.resolve() in {
        Path(given).resolve() for given in (args.input, args.train) if given
    }:
        raise UsageError(f"replay: --out {args.out} is an input file: it would be overwritten")
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


def _replay_stored(args: argparse.Namespace) -> int:
    """``replay --series``: a stored series' history scored again (nothing written)."""
    import numpy as np
    import pandas as pd

    from anomon.service.rescore import rescore

    config = load(args)
    until = int(datetime.now(UTC).timestamp()) + 1
    since = until - int(args.since.total_seconds())
    engine = engine_of(config)
    try:
        store.ensure_schema(engine, migrate=False)
        series = one_series(engine, args.series, label_pairs(args.label))
        found = rescore(
            engine,
            config.detection,
            series.id,
            since=since,
            until=until,
            feedback=not args.ignore_feedback,
        )
    finally:
        engine.dispose()
    frame = pd.DataFrame(
        {
            "timestamp": [from_epoch(int(ts)).isoformat() for ts in found.ts.tolist()],
            "value": found.value,
            "expected": np.round(found.expected, 6),
            "score": np.round(found.score, 4),
            "anomaly": found.anomaly.astype(np.int64),
            "entity_score": np.round(found.entity_score, 4),
        }
    )
    text = frame.to_csv(index=False, lineterminator="\n")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    taught = found.tolerance
    if args.ignore_feedback:
        learnt = "feedback ignored"
    elif taught is not None:
        learnt = (
            f"feedback tolerance up {taught.up:g}, down {taught.down:g} (from "
            f"{taught.incidents} incident(s)) applied"
        )
    else:
        learnt = "no feedback tolerance"
    names = summarise([f"{s.id} {s.metric}" for s in found.members], 5)
    _warn(
        f"series {series.id} {series.metric}: {found.ts.size:,} rows in the last "
        f"{format_duration(args.since)} scored again with its entity ({names}); "
        f"{int(found.anomaly.sum()):,} anomalous; {learnt}"
    )
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
    engine = engine_of(load(args))
    # a relative step (-1 from the first revision, -12 from the newest) reaches base too
    if store.downgrade_target(engine, args.revision) is None and not args.yes:
        what = "base" if args.revision == "base" else f"{args.revision} goes down to base and"
        raise UsageError(
            f"db downgrade {what} drops every anomon table and the data in it: add --yes to do it"
        )
    store.downgrade(engine, args.revision)
    print(f"{store.redact(engine.url)}: at revision {store.current_revision(engine) or '(none)'}")
    return 0
