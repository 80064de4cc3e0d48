"""The `anomon` command as a user runs it: a subprocess, real files, real servers."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from anomon import __version__, store
from tests.conftest import ROOT, run_cli


def config_file(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "anomon.toml"
    path.write_text(f'[database]\nurl = "{url}"\n{extra}', encoding="utf-8")
    return path


SYSTEM_SOURCE = '[[sources]]\nname = "system"\nkind = "system"\ninterval = "1s"\n'


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_it_prints_its_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"anomon {__version__}")


def test_config_check_accepts_the_shipped_configs() -> None:
    for name in ("anomon.toml", "anomon.example.toml"):
        result = run_cli("config", "check", f"config/{name}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"config/{name}: ok")


def test_config_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[sources]]\nname = "a"\nkind = "system"\ninterval = "soon"\n'
        '[[sources]]\nname = "b"\nkind = "system"\nevery = "5s"\n'
    )
    result = run_cli("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: sources[0].interval: expected a duration such as 15s, 5m, 1h30m or 7d "
        "(units ms, s, m, h, d, w), got: 'soon'",
        f"{path}: sources[1].every: unknown key; expected one of: name, interval, timeout, labels, "
        "entity, enabled, max_series, kind, per_cpu, disks, disk_io, network, load, process_name, "
        "pid_file",
    ]


def test_config_check_reports_cross_field_problems_in_the_same_round(tmp_path: Path) -> None:
    # issue 14, point 8: unknown receiver, duplicate source, a misspelt kind hiding its
    # source's other keys, text for a number and for a switch: all in one run
    path = tmp_path / "bad.toml"
    path.write_text(
        '[detection]\nthreshold = "80"\ndirection = "sideways"\n'
        '[[sources]]\nname = "host"\nkind = "sytem"\ninterval = "15x"\n'
        '[[sources]]\nname = "host"\nkind = "system"\nper_cpu = "yes"\n'
        '[alerts]\nreceiver = "nobody"\n'
        '[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    )
    result = run_cli("config", "check", str(path))
    assert result.returncode == 2
    assert sorted(line.removeprefix(f"{path}: ") for line in result.stderr.splitlines()) == [
        "alerts: unknown receiver 'nobody' (receivers: hook)",
        "detection.direction: expected 'up', 'down', 'both' or 'auto', got: 'sideways'",
        "detection.threshold: expected a number such as 0.5, got the text '80' "
        "(write numbers without quotes)",
        "sources[0].interval: expected a duration such as 15s, 5m, 1h30m or 7d "
        "(units ms, s, m, h, d, w), got: '15x'",
        "sources[0].kind: expected one of 'system', 'http_json', 'prometheus_scrape', "
        "'prometheus_query', 'mlflow', 'sql', 'predictions', 'logs', 'tensorboard', 'gpu', "
        "got: 'sytem' "
        "(did you mean 'system'?)",
        "sources[1].name: duplicate source name 'host' (first used by sources[0])",
        "sources[1].per_cpu: expected true or false, got: 'yes'",
    ]


def test_config_check_warns_when_no_notification_can_be_sent(tmp_path: Path) -> None:
    hook = '[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    path = tmp_path / "quiet.toml"
    path.write_text(SYSTEM_SOURCE + hook)
    result = run_cli("config", "check", str(path))
    assert result.returncode == 0, result.stderr  # valid: a warning, not an error
    assert result.stderr.splitlines() == [
        f"{path}: warning: alerts: 1 receiver(s) (hook) but no [alerts] receiver and no "
        "[[alerts.routes]]: no notification will be sent (set receiver = 'hook' under [alerts])"
    ]
    path.write_text('[alerts]\nreceiver = "hook"\n' + SYSTEM_SOURCE + hook)
    result = run_cli("config", "check", str(path))
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("command", [("run",), ("db", "upgrade"), ("db", "current")])
def test_a_malformed_config_stops_every_command_with_exit_2(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[database\n")
    result = run_cli(*command, "--config", str(path))
    assert result.returncode == 2
    assert one_error_line(result).startswith(f"{path}: invalid TOML: ")


def test_db_commands_upgrade_report_check_and_downgrade(tmp_path: Path, database_url: str) -> None:
    config = str(config_file(tmp_path, database_url))
    url = store.redact(store.open_engine(database_url).url)  # as the commands name it
    head = store.head_revision()
    assert (
        f"revision (none), newest {head} (empty)" in run_cli("db", "current", "-c", config).stdout
    )
    assert run_cli("db", "upgrade", "-c", config).stdout.strip() == f"{url}: at revision {head}"
    assert "(up to date)" in run_cli("db", "current", "-c", config).stdout
    checked = run_cli("db", "check", "-c", config)
    assert (checked.returncode, checked.stdout.strip()) == (0, f"{url}: schema matches the models")
    refused = run_cli("db", "downgrade", "base", "-c", config)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    assert "(up to date)" in run_cli("db", "current", "-c", config).stdout  # nothing dropped
    # as many steps down as there are revisions reach base too: refused all the same
    steps = len(list((Path(__file__).parents[2] / "migrations" / "versions").glob("*_*.py")))
    refused = run_cli("db", "downgrade", f"-{steps}", "-c", config)
    assert refused.returncode == 2, refused.stdout
    assert f"db downgrade -{steps} goes down to base and drops every" in refused.stderr
    assert "(up to date)" in run_cli("db", "current", "-c", config).stdout
    one_down = run_cli("db", "downgrade", f"-{steps - 1}", "-c", config)  # to the first
    assert one_down.stdout.strip() == f"{url}: at revision 0001", one_down.stderr
    refused = run_cli("db", "downgrade", "-1", "-c", config)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    assert (
        run_cli("db", "downgrade", "base", "--yes", "-c", config).stdout.strip()
        == f"{url}: at revision (none)"
    )


def test_the_database_url_can_come_from_the_environment(tmp_path: Path) -> None:
    config = str(config_file(tmp_path, "sqlite:///ignored.db"))
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    result = run_cli("db", "upgrade", "-c", config, env={"ANOMON_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env.db").exists() and not (tmp_path / "ignored.db").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_one_line_exit_1_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://anomon:hunter2@127.0.0.1:{_closed_port()}/anomon"
    result = run_cli("run", "-c", str(config_file(tmp_path, url)))
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("Error: ") and "127.0.0.1" in line
    assert "refused" in line.lower()
    assert "hunter2" not in result.stderr + result.stdout


def test_a_missing_database_folder_is_one_line_exit_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'a.db'}"
    result = run_cli("run", "-c", str(config_file(tmp_path, url)))
    assert result.returncode == 1
    assert "does not exist" in one_error_line(result)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (who ignores file modes)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_database_file_is_one_line_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    config = str(config_file(tmp_path, f"sqlite:///{db}", SYSTEM_SOURCE))
    assert run_cli("db", "upgrade", "-c", config).returncode == 0
    for leftover in tmp_path.glob("ro.db-*"):
        leftover.unlink()
    with read_only(db):
        result = run_cli("run", "-c", config, timeout=30)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("Error: ") and "read-only" in line


def test_no_command_prints_usage_and_exits_2() -> None:
    result = run_cli(cwd=ROOT)
    assert result.returncode == 2
    assert "usage: anomon" in result.stderr
