"""Issue 11, points 3, 8, 9 and 17 against the real parsers and formatters: escaping,
CSV formula neutralisation, log redaction, secret-free config messages, strict numbers."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from typing import Any

import pytest

from anomon.cli.common import real_number, whole_number
from anomon.cli.daemon import JsonLines, QuietThirdParty, TextLines, redact_secrets
from anomon.cli.tables import emit, escape_controls, text_table
from anomon.config import interpolate, parse_config, safe_url
from anomon.errors import ConfigError, StoreError
from anomon.store import redact
from anomon.timeutil import parse_duration

FORGED = "x\n2026-01-01 00:00:00,000 CRITICAL anomon.daemon: FAKE LOG LINE"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b]0;title\x07\x1b[2J", "\\x1b]0;title\\x07\\x1b[2J"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),  # NUL, DEL, NEL and the one-byte CSI
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
        ("\u202eevil\u202c \u2066x\u2069 \u200f", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200f"),
        ("café 日本 C:\\path", "café 日本 C:\\path"),  # printable text, backslashes untouched
    ],
)
def test_escape_controls_shows_every_control_character_visibly(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def test_a_text_table_row_stays_one_line_whatever_its_cells_hold() -> None:
    rows = [{"metric": FORGED, "labels": {"team": "a\nb\x1b[31m"}, "value": 1.5}]
    lines = text_table(rows).splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("x\\n2026-01-01 00:00:00,000 CRITICAL") and "\x1b" not in lines[1]
    assert "team=a\\nb\\x1b[31m" in lines[1]


def test_csv_neutralises_text_formulas_but_keeps_numbers() -> None:
    formulas = ['=HYPERLINK("http://evil")', "=cmd|' /C calc'!A0", "+1", "-1+2", "@SUM(A1)"]
    rows: list[dict[str, object]] = [{"metric": f, "value": -1.5, "n": -3} for f in formulas]
    rows += [{"metric": "\tx", "value": 0.0, "n": 0}, {"metric": "\rx", "value": 1e-9, "n": 1}]
    rows.append({"metric": "plain-name", "value": float("-inf"), "n": -2})
    out = io.StringIO()
    emit(rows, "csv", columns=("metric", "value", "n"), empty="-", out=out)
    read = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["metric"] for r in read] == ["'" + f for f in formulas] + [
        "'\tx",
        "'\\rx",  # a carriage return would split the row: shown as \r
        "plain-name",
    ]
    assert [r["value"] for r in read] == ["-1.5"] * 5 + ["0.0", "1e-09", "-inf"]
    assert [r["n"] for r in read] == ["-3"] * 5 + ["0", "1", "-2"]


def test_csv_neutralises_a_label_map_and_escapes_nothing_else() -> None:
    out = io.StringIO()
    emit([{"labels": {"a": "b\nc"}}], "csv", columns=("labels",), empty="-", out=out)
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert json.loads(row["labels"]) == {"a": "b\nc"}  # exact data, quoted by the writer


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("anomon.collect", logging.WARNING, __file__, 1, message, args, info)


def _raised(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def test_text_log_lines_cannot_be_forged_and_hold_no_url_credential() -> None:
    url = "http://u:URLPASS@127.0.0.1:9/x?token=QTOKEN"
    record = _record(
        "source %s failed: %s", "stats", FORGED, exc=_raised(f"GET {url}{FORGED}\x1b]0;t\x07")
    )
    text = TextLines().format(record)
    first, *rest = text.split("\n")
    assert "FAKE LOG LINE" in first and "URLPASS" not in text and "QTOKEN" not in text
    assert all(line.startswith("    ") for line in rest) and len(rest) >= 3
    assert "\x1b" not in text and "    ValueError: GET http://***@127.0.0.1:9/x?***" in rest
    assert "    2026-01-01 00:00:00,000 CRITICAL anomon.daemon: FAKE LOG LINE\\x1b]0;t\\x07" in rest


def test_json_log_lines_are_redacted_and_terminal_safe() -> None:
    record = _record(
        "posting to %s with Bearer abc.DEF-123 \u2028\x9b\u202e",
        "https://user:pw@hooks.example/services/T/B/X?sig=1",
        exc=_raised("at http://a:SECRETPW@h/p"),
    )
    line = JsonLines().format(record)
    assert "\n" not in line and "\u2028" not in line and "\x9b" not in line
    assert "\u202e" not in line and "\\u202e" in line
    parsed = json.loads(line)
    assert parsed["message"] == (
        "posting to https://***@hooks.example/services/T/B/X?*** with Bearer *** \u2028\x9b\u202e"
    )
    assert "SECRETPW" not in parsed["exception"] and "http://***@h/p" in parsed["exception"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ('GET http://u:p@h:1/x?token=T "HTTP/1.1 200"', 'GET http://***@h:1/x?*** "HTTP/1.1 200"'),
        ("url 'postgresql://u:p@h/db?sslmode=require'", "url 'postgresql://***@h/db?***'"),
        ("http://h/path#frag and ftp://x@y", "http://h/path?*** and ftp://***@y"),
        ("Authorization: Basic dTpw", "Authorization: Basic ***"),
        ("a Basic check, no URL", "a Basic check, no URL"),
        ("header Bearer eyJ.abc-_~+/= end", "header Bearer *** end"),
    ],
)
def test_redact_secrets_hides_userinfo_queries_and_credentials(raw: str, shown: str) -> None:
    assert redact_secrets(raw) == shown


def test_third_party_records_below_warning_are_dropped_whatever_their_level() -> None:
    quiet = QuietThirdParty()
    for name in ("httpx", "httpcore.http11", "urllib3.connectionpool", "sqlalchemy.engine"):
        logging.getLogger(name)
        info = logging.LogRecord(name, logging.INFO, __file__, 1, "HTTP Request: GET", (), None)
        warn = logging.LogRecord(name, logging.WARNING, __file__, 1, "retrying", (), None)
        assert not quiet.filter(info) and quiet.filter(warn)
    mine = logging.LogRecord("anomon.httpxish", logging.DEBUG, __file__, 1, "m", (), None)
    assert quiet.filter(mine)


def test_a_connection_lost_under_the_pool_is_one_warning_line_without_a_traceback() -> None:
    try:
        raise OSError("server closed the connection unexpectedly\n\tThis probably means")
    except OSError:
        record = logging.LogRecord(
            "sqlalchemy.pool.impl.QueuePool", logging.ERROR, __file__, 1,
            "Exception during reset or similar", (), sys.exc_info(),
        )  # fmt: skip
    assert QuietThirdParty().filter(record)
    line = TextLines().format(record)
    assert "Traceback" not in line and "\n" not in line
    assert line.endswith(
        "WARNING sqlalchemy.pool.impl.QueuePool: a database connection was lost and is "
        "replaced: server closed the connection unexpectedly"
    )


def test_configure_logging_holds_http_loggers_at_warning_at_debug_level() -> None:
    import subprocess

    code = (
        "import logging\n"
        "from anomon.cli.daemon import configure_logging\n"
        "configure_logging('debug', 'text')\n"
        "logging.getLogger('httpx').info('HTTP Request: GET http://u:URLPASS@h/?t=QTOKEN')\n"
        "logging.getLogger('httpcore').debug('send_request_headers (b\"Authorization\", b\"X\")')\n"
        "logging.getLogger('anomon.collect').debug('shown http://u:URLPASS@h/?t=QTOKEN')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    (line,) = done.stderr.splitlines()
    assert line.endswith(" DEBUG anomon.collect: shown http://***@h/?***")


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("ftp://user:SRC-S3CR3T@host/", False, "ftp://***@host/"),
        ("https://hooks.slack.com/services/T0/B0/SECRET", False, "https://hooks.slack.com/…"),
        ("https://hooks.slack.com/services/T0/B0/SECRET", True, "https://hooks.slack.com/services/T0/B0/SECRET"),
        ("http://u:p@[::1]:80/x?t=1#f", True, "http://***@[::1]:80/x?***"),
        ("hooks.slack.com/services/T0/B0/SECRET", False, "(not a URL)"),
    ],
)  # fmt: skip
def test_safe_url_shows_no_credentials(url: str, keep_path: bool, shown: str) -> None:
    assert safe_url(url, keep_path=keep_path) == shown


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    return str(raised.value)


@pytest.mark.parametrize(
    ("data", "secret"),
    [
        ({"database": {"url": "user:DBPASS@host/db"}}, "DBPASS"),
        ({"database": {"url": "postgresql://u@h:DBPASS/db"}}, "DBPASS"),
        ({"sources": [{"kind": "sql", "name": "s", "query": "q", "url": "u:SQLPW@h"}]}, "SQLPW"),
        ({"sources": [{"kind": "http_json", "name": "j", "fields": {"a": "a"},
                       "url": "ftp://user:SRC-S3CR3T@host/"}]}, "SRC-S3CR3T"),
        ({"sources": [{"kind": "http_json", "name": "j", "fields": {"a": "a"},
                       "url": "http://h/", "bearer_token": 98765432}]}, "98765432"),
        ({"sources": [{"kind": "http_json", "name": "j", "fields": {"a": "a"}, "url": "http://h/",
                       "headers": {"X-Key: SEKRIT": "v"}}]}, "SEKRIT"),
        ({"sources": [{"kind": "http_json", "name": "j", "fields": {"a": "a"}, "url": "http://h/",
                       "headers": "Authorization: Bearer SEKRIT"}]}, "SEKRIT"),
        ({"alerts": {"receivers": [{"kind": "webhook", "name": "w",
                                    "url": "hooks.slack.com/services/T/B/SLACKTOKEN"}]}},
         "SLACKTOKEN"),
        ({"alerts": {"receivers": [{"kind": "webhook", "name": "w", "url": "http://h/",
                                    "secret": ["HMACKEY"]}]}}, "HMACKEY"),
        ({"alerts": {"receivers": [{"kind": "email", "name": "e", "to": ["a@b"],
                                    "password": {"p": "MAILPW"}}]}}, "MAILPW"),
    ],
)  # fmt: skip
def test_config_errors_never_echo_a_secret(data: dict[str, Any], secret: str) -> None:
    problems = _problems(data)
    assert secret not in problems and ": " in problems, problems


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"detection": {"warmup_rows": "1_000"}},
         "detection.warmup_rows: expected a whole number such as 1000 (plain digits), "
         "got: '1_000'"),
        ({"detection": {"min_history": " 60 "}}, "detection.min_history: expected a whole number"),
        ({"detection": {"threshold": "8_0.5"}}, "detection.threshold: expected a number such as"),
        ({"detection": {"threshold": "nan"}}, "detection.threshold: expected a number such as"),
        ({"detection": {"threshold": float("inf")}},
         "detection.threshold: expected a finite number, got: inf"),
        ({"detection": {"limits": [{"metric": "m", "max": float("nan")}]}},
         "detection.limits[0].max: expected a finite number, got: nan"),
        ({"sources": [{"kind": "gpu", "name": "g", "devices": [0, "\u0663"]}]},
         "sources[0].devices[1]: expected a whole number"),
        ({"alerts": {"receivers": [{"kind": "email", "name": "e", "to": ["a@b"],
                                    "smtp_port": "0x19"}]}},
         "alerts.receivers[0].smtp_port: expected a whole number"),
        ({"detection": {"interval": "\u0661\u0665s"}}, "detection.interval: expected a duration"),
        ({"detection": {"interval": "99999999999w"}},
         "detection.interval: duration too long (at most 36500d)"),
        ({"daemon": {"heartbeat": "36501d"}}, "daemon.heartbeat: duration too long"),
        ({"daemon": {"metrics_listen": "127.0.0.1:\u0669\u0664\u0666\u0664"}},
         "daemon.metrics_listen: expected HOST"),
        ({"database": {"url": "postgresql://u@host:abc/db"}},
         "database.url: expected a port 1 to 65535 after the host, got: text that is not a number"),
        ({"database": {"url": "postgresql://u@host:5_432/db"}}, "database.url: expected a port"),
        ({"database": {"url": "postgresql://u@host:70000/db"}},
         "database.url: expected a port 1 to 65535 after the host, got: '70000'"),
    ],
)  # fmt: skip
def test_numbers_in_the_config_are_read_strictly(data: dict[str, Any], problem: str) -> None:
    assert problem in _problems(_from_env(data))


def _from_env(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every text value given through ``${VAR}``, as a config file that
    takes its values from the environment (the only text a number may come from)."""
    environ: dict[str, str] = {}

    def refer(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: refer(value) for key, value in node.items()}
        if isinstance(node, list):
            return [refer(value) for value in node]
        if isinstance(node, str):
            name = f"V{len(environ)}"
            environ[name] = node
            return "${" + name + "}"
        return node

    return interpolate(refer(data), environ)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"detection": {"threshold": "80"}},
         "detection.threshold: expected a number such as 0.5, got the text '80' "
         "(write numbers without quotes)"),
        ({"sources": [{"kind": "system", "name": "s", "per_cpu": "yes"}]},
         "sources[0].per_cpu: expected true or false, got: 'yes'"),
        ({"sources": [{"kind": "system", "name": "s", "per_cpu": 1}]},
         "sources[0].per_cpu: expected true or false, got: 1"),
        ({"sources": [{"kind": "system", "name": "s", "max_series": True}]},
         "sources[0].max_series: expected a whole number such as 1000, got: true"),
    ],
)  # fmt: skip
def test_numbers_and_switches_written_in_the_file_are_not_text(
    data: dict[str, Any], problem: str
) -> None:
    assert problem in _problems(data)


def test_a_switch_from_the_environment_is_true_or_false() -> None:
    on = parse_config(_from_env({"sources": [{"kind": "system", "name": "s", "per_cpu": "true"}]}))
    assert on.sources[0].per_cpu is True  # type: ignore[union-attr]
    assert "per_cpu: expected true or false, got: 'yes'" in _problems(
        _from_env({"sources": [{"kind": "system", "name": "s", "per_cpu": "yes"}]})
    )


def test_plain_numbers_as_text_still_work_for_env_interpolation() -> None:
    config = parse_config(
        _from_env(
            {
                "detection": {"warmup_rows": "1000", "threshold": "9e1", "min_deviation_abs": ".5"},
                "database": {"url": "postgresql://u@[::1]:5432/db"},
                "sources": [{"kind": "gpu", "name": "g", "devices": ["0", 1]}],
            }
        )
    )
    assert (config.detection.warmup_rows, config.detection.threshold) == (1000, 90.0)
    assert config.detection.min_deviation_abs == 0.5
    assert config.sources[0].devices == [0, 1]  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["1_0", " 5", "\u0663", "+", "", "0x1", "1.0", "1e3"])
def test_command_line_whole_numbers_are_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="expected a whole number"):
        whole_number(text, 1, 10)


@pytest.mark.parametrize("text", ["1_0", "nan", "inf", "\u0663", " 2", "2,5"])
def test_command_line_numbers_are_plain_decimals(text: str) -> None:
    with pytest.raises(ValueError, match="expected a number"):
        real_number(text, 1, 60)


def test_ranges_of_command_line_numbers_are_named() -> None:
    assert whole_number("7", 1, 10) == 7 and real_number("2.5", 1, 60) == 2.5
    with pytest.raises(ValueError, match="must be at most 10, got: 11"):
        whole_number("11", 1, 10)
    with pytest.raises(ValueError, match="must be at least 1, got: 0"):
        whole_number("0", 1, 10)


def test_durations_take_ascii_digits_only() -> None:
    assert parse_duration("1h30m").total_seconds() == 5400
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("\u0661\u0665s")


def test_a_database_url_is_shown_without_its_passwords_or_not_at_all() -> None:
    """The store names a database by its URL: no password before the host nor in the
    query (libpq's ?password=), and a URL it cannot parse is refused in one line without
    one (a port that is no number raised a bare ValueError before)."""
    shown = redact("postgresql://u:pw1@h:5/db?password=pw2&sslmode=require&token=pw3")
    assert shown == "postgresql://u:***@h:5/db?password=***&sslmode=require&token=***"
    with pytest.raises(StoreError, match=r"^not a valid database URL: '\[::1/db'$"):
        redact("postgresql://u:pw1@[::1/db")
