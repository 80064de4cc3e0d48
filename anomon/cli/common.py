"""What every command shares: its config file, database, arguments and output formats."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from anomon import store
from anomon.config import DEFAULT_CONFIG_PATH, Config, load_config
from anomon.errors import UsageError
from anomon.timeutil import parse_duration

CONFIG_ENV = "ANOMON_CONFIG"
Handler = Callable[[argparse.Namespace], int]
MAX_ID = 2**63 - 1  # row ids are 64-bit on SQLite and PostgreSQL alike
# Python's int() and float() also take "1_000", " 7 ", "٣" and "nan": numbers typed on the
# command line are plain ASCII digits instead
_WHOLE = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def add_command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Handler,
    *,
    formats: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand with ``--config`` (and ``--format`` when it has ``formats``)."""
    command = group.add_parser(name, help=help_text, description=help_text)
    command.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})",
    )
    if formats:
        command.add_argument(
            "--format", choices=["text", *formats], default="text", help="output format"
        )
    command.set_defaults(handler=handler)
    return command


def config_path(given: str | Path | None) -> Path:
    """The config file: the one given, else $ANOMON_CONFIG, else the default path."""
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load(args: argparse.Namespace) -> Config:
    """The config of ``--config``."""
    return load_config(config_path(args.config))


def engine_of(config: Config) -> store.Engine:
    """The config's database as it is (for the schema commands)."""
    try:
        return store.open_engine(config.database.url, busy_timeout=config.database.busy_timeout)
    except ValueError:  # SQLAlchemy's URL parser lets int() fail on a port; its text may be
        # a misplaced password, so the message names the key only
        raise UsageError("database.url is not a valid SQLAlchemy URL (look at its port)") from None


def open_store(args: argparse.Namespace) -> store.Engine:
    """The config's database, which must be at the newest schema revision."""
    engine = engine_of(load(args))
    store.ensure_schema(engine, migrate=False)
    return engine


def duration(text: str) -> object:
    """An argparse type: ``7d``, ``12h``, ``30m`` to a timedelta."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def instant(text: str) -> object:
    """An argparse type: an ISO 8601 time (``2026-12-07T09:30``, UTC unless it names an
    offset) or a span ago (``30m``: thirty minutes before now)."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-12-07T09:30Z or a span ago such as 30m, "
            f"got: {text!r}"
        ) from None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def whole_number(text: str, low: int, high: int) -> int:
    """Read ``text`` as a whole number from ``low`` to ``high``.

    Only ASCII digits with an optional sign; raises ValueError naming the text otherwise.
    """
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"expected a whole number (digits only), got: {text!r}")
    value = int(text)
    if value < low:
        raise ValueError(f"must be at least {low}, got: {text}")
    if value > high:
        raise ValueError(f"must be at most {high}, got: {text}")
    return value


def real_number(text: str, low: float, high: float) -> float:
    """Read ``text`` as a finite decimal number from ``low`` to ``high``; ValueError if not."""
    if not _REAL.fullmatch(text) or not math.isfinite(value := float(text)):
        raise ValueError(f"expected a number such as 2.5, got: {text!r}")
    if not low <= value <= high:
        raise ValueError(f"must be {low:g} to {high:g}, got: {text}")
    return value


def record_id(text: str) -> int:
    """An argparse type: a row id (an incident, a silence), 1 to 2**63 - 1."""
    try:
        return whole_number(text, 1, MAX_ID)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an id: {exc}") from None


def limit(text: str) -> int:
    """An argparse type: a row count, at least 1."""
    try:
        return whole_number(text, 1, MAX_ID)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def label_pairs(texts: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; UsageError naming a malformed one."""
    pairs = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not name or not sep:
            raise UsageError(f"expected K=V, got: {text!r}")
        pairs[name] = value
    return pairs


def series_id(text: str) -> int | None:
    """The series id ``text`` names (ASCII digits), or None for a metric name.

    Raises UsageError for digits that cannot be an id (0, or past 64 bits).
    """
    if not text.isascii() or not text.isdigit():
        return None
    try:
        return whole_number(text, 1, MAX_ID)
    except ValueError as exc:
        raise UsageError(f"series id {exc}") from None


def one_series(engine: store.Engine, text: str, labels: dict[str, str]) -> store.SeriesRow:
    """The one series ``text`` names: an id, or a metric name whose labels include
    ``labels``; UsageError listing the candidates when it is not exactly one."""
    sid = series_id(text)
    found = store.find_series(
        engine, series_id=sid, metric=None if sid is not None else text, labels=labels
    )
    if len(found) != 1:
        shown = "; ".join(f"{r.id} {r.metric}{json.dumps(r.labels)}" for r in found[:10])
        what = f"{len(found)} series match" + (f": {shown}" if found else "")
        raise UsageError(f"{what}; name one by id or add --label K=V")
    return found[0]
