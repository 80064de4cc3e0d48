"""Commands that run the service: ``run``, ``backfill`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

from anomon import store
from anomon.cli.common import config_path, engine_of, load
from anomon.config import Config, load_config


def run(args: argparse.Namespace) -> int:
    config = load(args)

    def apply_logging(settings: Config) -> None:  # at start and after each reload
        configure_logging(settings.daemon.log_level, args.log_format or settings.daemon.log_format)

    apply_logging(config)
    from anomon import service  # the detectors and sources load slowly: only when needed

    path = config_path(args.config)
    return service.run(
        config, migrate=args.migrate, reload=lambda: load_config(path), reloaded=apply_logging
    )


def configure_logging(level: str, log_format: str) -> None:
    """Log to standard error: text lines, or one JSON object per line."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # one line per job run (APScheduler) and per migration step (Alembic) is noise
    for chatty in ("apscheduler", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class JsonLines(logging.Formatter):
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


def backfill(args: argparse.Namespace) -> int:
    config = load(args)
    engine = engine_of(config)
    store.ensure_schema(engine, migrate=args.migrate or config.database.migrate_on_start)
    bar = ProgressBar(f"backfill {args.source}") if sys.stderr.isatty() else None
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


class ProgressBar:
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


def demo(args: argparse.Namespace) -> int:
    from anomon.demo import run_demo

    return run_demo(args.minutes, args.dir)
