"""What every command shares: its config file, database, arguments and output formats."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from anomon import store
from anomon.config import DEFAULT_CONFIG_PATH, Config, load_config
from anomon.errors import UsageError
from anomon.timeutil import parse_duration

CONFIG_ENV = "ANOMON_CONFIG"
Handler = Callable[[argparse.Namespace], int]


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
    return store.open_engine(config.database.url, busy_timeout=config.database.busy_timeout)


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


def label_pairs(texts: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; UsageError naming a malformed one."""
    pairs = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not name or not sep:
            raise UsageError(f"expected K=V, got: {text!r}")
        pairs[name] = value
    return pairs
