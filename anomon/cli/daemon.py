"""Commands that run the service: ``run``, ``backfill`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import UTC, datetime
from types import TracebackType

from anomon import store
from anomon.cli.common import config_path, engine_of, load
from anomon.cli.tables import CONTROLS, escape_controls
from anomon.config import Config, load_config, safe_url

# Third-party loggers held at WARNING whatever the configured level: httpx logs every request
# URL at INFO (with user:password@ and ?token=...), httpcore and urllib3 headers at DEBUG,
# SQLAlchemy SQL parameters; the others are noise. anomon logs what matters about them itself.
QUIET = ("alembic", "apscheduler", "h11", "h2", "hpack", "httpcore", "httpx", "matplotlib",
         "PIL", "psycopg", "sqlalchemy", "urllib3")  # fmt: skip
# a URL in a log line: its userinfo may hold anything but whitespace, / ? and #
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/?#]*@)?[^\s'\"<>]*")
# an Authorization value: a Bearer token, or Basic with base64 (so "Basic check" stays)
_AUTH_IN_TEXT = re.compile(
    r"\b(Bearer) [A-Za-z0-9._~+/-]+=*|\b(Basic) (?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2,3}=*)?\b"
)
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def run(args: argparse.Namespace) -> int:
    config = load(args)

    def apply_logging(settings: Config) -> None:  # at start and after each reload
        configure_logging(settings.daemon.log_level, args.log_format or settings.daemon.log_format)

    apply_logging(config)
    from anomon import service  # the detectors and sources load slowly: only when needed
    from anomon.web import start_console

    path = config_path(args.config)
    return service.run(
        config,
        migrate=args.migrate,
        reload=lambda: load_config(path),
        reloaded=apply_logging,
        console=start_console,
    )


def configure_logging(level: str, log_format: str) -> None:
    """Log to standard error: text lines, or one JSON object per line.

    Whatever the level, the :data:`QUIET` loggers give only warnings and errors, and every
    line has URL credentials, query strings and Authorization tokens replaced by ``***``.
    """
    handler = logging.StreamHandler()
    handler.addFilter(QuietThirdParty())
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def redact_secrets(text: str) -> str:
    """Return ``text`` with each URL's ``user:pass@`` and ``?query`` and each ``Bearer`` or
    ``Basic`` credential shown as ``***`` (a second line of defence behind :data:`QUIET`)."""
    text = _URL_IN_TEXT.sub(lambda found: safe_url(found.group(0)), text)
    return _AUTH_IN_TEXT.sub(lambda found: f"{found.group(1) or found.group(2)} ***", text)


class QuietThirdParty(logging.Filter):
    """Drop records below WARNING from the :data:`QUIET` loggers, even if one was lowered.

    SQLAlchemy's pool logs a traceback at ERROR when a connection it takes back cannot
    be reset because the database went away (a PostgreSQL restart): the connection is
    simply replaced, and anomon's own error for the work that failed says what happened.
    That record becomes one WARNING line, without the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = any(record.name == n or record.name.startswith(n + ".") for n in QUIET)
        if record.name.startswith("sqlalchemy.pool") and record.exc_info:
            error = record.exc_info[1]
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            record.msg, record.args = (
                "a database connection was lost and is replaced: %s",
                (reason,),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record.levelno >= logging.WARNING or not quiet


class TextLines(logging.Formatter):
    """``time LEVEL logger: message``, one line per record whatever the message holds.

    The message is redacted and its control characters escaped, so a scraped name with a
    line break cannot forge a record; a traceback follows on lines indented by four spaces.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return escape_controls(redact_secrets(super().formatMessage(record)))

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    """Each line of a traceback redacted, escaped and indented: never a record of its own."""
    return "\n".join("    " + escape_controls(redact_secrets(line)) for line in text.split("\n"))


class JsonLines(logging.Formatter):
    """One JSON object per log line: time (UTC, ISO 8601), level, logger, message.

    Message and exception are redacted like text lines; JSON escapes C0 controls itself,
    and DEL, C1, line separators and bidi controls are written as ``\\uXXXX`` too.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_secrets(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = redact_secrets(self.formatException(record.exc_info))
        text = json.dumps(line, ensure_ascii=False)
        return CONTROLS.sub(lambda found: f"\\u{ord(found.group(0)):04x}", text)


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
    for failure in result.failures:  # the text a remote server sent: one escaped line
        print(escape_controls(f"failed: {failure}"), file=sys.stderr)
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
