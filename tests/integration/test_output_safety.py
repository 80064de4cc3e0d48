"""Issue 11, points 3, 8, 9 and 17 as an attacker plays them against the real CLI and daemon:
no secret in any log line or message, no forged line or raw terminal control in any text
output, no live formula in CSV, one-line errors for numbers that do not fit."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomon import store
from anomon.model import AnomalyRecord, IncidentWrite, Sample, SeriesInfo, SeriesKey, SeriesKind
from tests.conftest import run_cli, save_samples
from tests.integration.test_daemon import reap, start_daemon
from tests.loopback import serve

FORGED = "\n2026-01-01 00:00:00,000 CRITICAL anomon.daemon: FAKE LOG LINE"
TERMINAL = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil"
HOSTILE = "ent" + FORGED + TERMINAL
RAW_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORMULAS = ('=HYPERLINK("http://evil")', "=cmd|' /C calc'!A0", "+1+1", "@SUM(A1)", "-2+3")


def _config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "anomon.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


def _hostile_database(database_url: str) -> None:
    """Store, through the store's own functions, what a hostile peer can put there: an
    entity and an error text with a forged log line and terminal controls, incidents whose
    metric, entity and labels are formulas or carry line breaks, and an anomaly of them."""
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    now = datetime.now(UTC)
    seconds = int(now.timestamp())
    info = SeriesInfo("scrape", HOSTILE, SeriesKind.LATENCY, "ms")
    samples = [Sample(SeriesKey.of("latency", {}), info, seconds - 60 * i, 1.0) for i in range(3)]
    save_samples(engine, samples)
    store.save_collection(
        engine,
        store.SeriesRegistry(),
        source="scrape",
        started_at=now,
        finished_at=now,
        samples=[],
        error="server said: " + HOSTILE,
    )
    labels = json.dumps({"team": "a" + FORGED + TERMINAL})
    writes = [
        IncidentWrite(1, HOSTILE, "latency" + FORGED, labels, "firing", "critical", 97.0, now, now)
    ] + [
        IncidentWrite(None, formula, formula, "{}", "firing", "warning", 90.0, now, now)
        for formula in FORMULAS
    ]
    with engine.begin() as conn:
        store.write_incidents(conn, writes, now=now)
    spike = AnomalyRecord(1, seconds - 60, 9.0, 1.0, 97.0, {"zscore": 97.0}, "up", "critical")
    store.save_detection(
        engine,
        anomalies=[spike],
        scored_until={},
        quality={},
        started_at=now,
        finished_at=now,
        points=0,
        config_hash="h",
        detector_version="v",
    )
    engine.dispose()


def _assert_safe_text(output: str, lines: int) -> None:
    """No raw control character, no forged record, and exactly ``lines`` lines."""
    assert not RAW_CONTROLS.search(output), repr(output)
    assert not any(line.startswith("2026-01-01") for line in output.splitlines())
    assert len(output.splitlines()) == lines, output
    assert "\\n2026-01-01 00:00:00,000 CRITICAL" in output and "\\x1b]0;pwned\\x07" in output


def test_text_outputs_escape_hostile_names_and_errors(tmp_path: Path, database_url: str) -> None:
    _hostile_database(database_url)
    config = str(_config(tmp_path, database_url))
    status = run_cli("status", "-c", config)
    assert status.returncode == 0, status.stderr
    # sources:, the source, series:, open incidents:, notifications:
    _assert_safe_text(status.stdout, 6)  # the daemon line, then the five parts
    assert "\\u202eevil" in status.stdout and "\\x9b31m" in status.stdout
    listed = run_cli("incidents", "list", "-c", config)
    assert listed.returncode == 0, listed.stderr
    _assert_safe_text(listed.stdout, 1 + 1 + len(FORMULAS))  # a header and one row each
    anomalies = run_cli("anomalies", "-c", config)
    assert anomalies.returncode == 0, anomalies.stderr
    _assert_safe_text(anomalies.stdout, 2)
    shown = run_cli("incidents", "show", "1", "-c", config)
    assert shown.returncode == 0, shown.stderr
    assert not RAW_CONTROLS.search(shown.stdout), repr(shown.stdout)
    assert not any(line.startswith("2026-01-01") for line in shown.stdout.splitlines())
    assert "  labels:       team=a\\n2026-01-01 00:00:00,000 CRITICAL" in shown.stdout


def test_csv_neutralises_formulas_and_json_keeps_exact_values(
    tmp_path: Path, database_url: str
) -> None:
    _hostile_database(database_url)
    config = str(_config(tmp_path, database_url))
    listed = run_cli("incidents", "list", "--format", "csv", "-c", config)
    assert listed.returncode == 0, listed.stderr
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    by_metric = {row["metric"]: row for row in rows}
    for formula in FORMULAS:
        assert by_metric["'" + formula]["entity"] == "'" + formula
    assert by_metric["latency" + FORGED]["peak"] == "97.0"  # numbers stay numbers
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
    exact = json.loads(run_cli("incidents", "list", "--format", "json", "-c", config).stdout)
    assert {row["metric"] for row in exact} == {"latency" + FORGED, *FORMULAS}


def test_ids_and_numbers_out_of_range_are_one_line_usage_errors(
    tmp_path: Path, database_url: str
) -> None:
    _hostile_database(database_url)
    config = str(_config(tmp_path, database_url))
    huge = "999999999999999999999"
    for args in (
        ("plot", huge),
        ("incidents", "show", huge),
        ("incidents", "ack", "1_0"),
        ("silence", "expire", "\u0663"),
        ("anomalies", "--limit", huge),
        ("anomalies", "--limit", " 5"),
        ("anomalies", "--since", "99999999999w"),
    ):
        result = run_cli(*args, "-c", config)
        assert result.returncode == 2, (args, result.stderr)
        last = result.stderr.splitlines()[-1]  # argparse: usage lines, then the error
        assert "Traceback" not in result.stderr and re.search(r"(E|: e)rror: ", last), last
    plotted = run_cli("plot", huge, "-c", config)
    assert plotted.stderr == f"Error: series id must be at most {2**63 - 1}, got: {huge}\n"


def test_a_database_url_with_a_text_port_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "anomon.toml"
    config.write_text('[database]\nurl = "postgresql://u:DBPASS@host:abc/db"\n', encoding="utf-8")
    path = str(config)
    for args in (("status", "-c", path), ("config", "check", path), ("db", "current", "-c", path)):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"{config}: database.url: expected a port 1 to 65535 after the host, "
            "got: text that is not a number\n"
        )


def test_config_check_never_echoes_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "anomon.toml"
    config.write_text(
        "[[sources]]\nname = 'a'\nkind = 'http_json'\nfields = {x = 'x'}\n"
        "url = 'ftp://user:SRC-S3CR3T@host/x?token=QTOKEN'\nbearer_token = 123456789\n"
        "[[alerts.receivers]]\nname = 'slack'\nkind = 'webhook'\n"
        "url = 'hooks.slack.com/services/T000/B000/SLACKPATHTOKEN'\n"
        "secret = ['HMACSECRET']\nheaders = {'Authorization: Bearer HDRTOKEN' = 'v'}\n"
        "[[alerts.receivers]]\nname = 'mail'\nkind = 'email'\nto = ['a@b']\n"
        "password = {x = 'MAILPASS'}\n",
        encoding="utf-8",
    )
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2
    for secret in (
        "S3CR3T",
        "QTOKEN",
        "123456789",
        "SLACKPATHTOKEN",
        "HMAC",
        "HDRTOKEN",
        "MAILPASS",
    ):
        assert secret not in result.stderr, result.stderr
    assert "sources[0].url: expected an http:// or https:// URL, got: ftp://***@host/…?***" in (
        result.stderr
    )
    assert "alerts.receivers[0].headers: not a valid HTTP header name: 'Authorization'…" in (
        result.stderr
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_daemon_log_at_debug_never_holds_url_credentials(
    tmp_path: Path, log_format: str
) -> None:
    """Attack 3 and 8 on a real daemon: every collection is logged at debug level by the
    HTTP client (httpx logs the full URL at INFO), and a scraped label forges a record."""
    hits: list[str] = []
    hostile = (
        b'# TYPE up gauge\nup{team="a\\n2026-01-01 00:00:00,000 CRITICAL anomon.daemon: '
        b'FAKE LOG LINE\x1b]0;pwned\x07"} 1\n'
    )

    def respond(path: str) -> tuple[int, bytes]:
        hits.append(path)
        return (200, hostile) if path.startswith("/metrics") else (200, b'{"a": {"v": 1}}')

    with serve(respond) as endpoint:
        authority = endpoint.replace("http://", "http://u:URLPASS@")
        config = (
            '[database]\nurl = "{url}"\n'
            f'[daemon]\nlog_level = "debug"\nlog_format = "{log_format}"\n'
            "metrics = false\n"
            "[web]\nenabled = false\n"
            '[[sources]]\nname = "stats"\nkind = "http_json"\ninterval = "1s"\n'
            f'url = "{authority}/stats?token=QTOKEN"\nfields = {{v = "a.v"}}\n'
            'bearer_token = "BEARERTOKEN"\n'
            '[[sources]]\nname = "scrape"\nkind = "prometheus_scrape"\ninterval = "1s"\n'
            f'url = "{authority}/metrics?token=QTOKEN"\n'
        )
        daemon = start_daemon(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", config)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and daemon.poll() is None:
                if sum(h.startswith("/stats") for h in hits) >= 2 and len(hits) >= 4:
                    break
                time.sleep(0.2)
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
        finally:
            reap(daemon)
    assert sum(h.startswith("/stats") for h in hits) >= 2, stderr
    assert "/stats?token=QTOKEN" in hits  # the server got the real URL ...
    for secret in ("URLPASS", "QTOKEN", "BEARERTOKEN"):  # ... the log never did
        assert secret not in stderr, stderr
    assert not RAW_CONTROLS.search(stderr), repr(stderr)
    lines = stderr.splitlines()
    if log_format == "json":
        records = [json.loads(line) for line in lines]
        assert "debug" in {record["level"] for record in records}
    else:  # every line is a record of its own or an indented traceback line
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", ln) or
                   ln.startswith("    ") for ln in lines), stderr  # fmt: skip
        assert any(" DEBUG " in line for line in lines)
