"""The command receiver (issue 15, point 8): a real program run per notification, on real
databases — the retraining hook. What it is given (stdin JSON, a clean environment), what
is kept (its output in the row), failures retried, a hung program and its children
killed, and a notification whose run was cut short by a crash never run again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from anomon import store
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig, SamplesConfig, load_config
from anomon.errors import ConfigError
from anomon.service.delivery import DeliverJob
from anomon.service.detection import DetectJob
from anomon.store.schema import Notification
from tests.conftest import run_cli
from tests.integration.test_alerting import DETECTION, START, Clock, collect, incidents

# the program: records what it was given, prints, and exits as told by its argv
PROGRAM = textwrap.dedent(
    """
    import json, os, sys, time, subprocess
    out, mode = sys.argv[1], sys.argv[2]
    body = json.load(sys.stdin)
    env = {k: v for k, v in os.environ.items() if k.startswith(("ANOMON_", "PASSED", "SECRET"))}
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"body": body, "env": env}) + "\\n")
    print("retraining", body["incidents"][0]["metric"], "for", body["event"], flush=True)
    if mode == "fail":
        print("no GPU left", file=sys.stderr)
        sys.exit(3)
    if mode == "detach":  # a child in a session of its own, holding the output open
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
            start_new_session=True)
        open(out + ".pid", "w").write(str(child.pid))
        time.sleep(60)
    if mode == "hang":
        # a child that would leave a mark if it outlived the timeout
        subprocess.Popen([sys.executable, "-c",
            f"import time; time.sleep(3); open({out!r} + '.child', 'w').write('alive')"])
        time.sleep(60)
    """
)


def command_alerts(tmp_path: Path, mode: str, **receiver: Any) -> tuple[AlertsConfig, Path]:
    script = tmp_path / "retrain.py"
    script.write_text(PROGRAM, encoding="utf-8")
    out = tmp_path / "runs.jsonl"
    config = AlertsConfig.model_validate(
        {
            "receiver": "retrain",
            "receivers": [
                {
                    "name": "retrain",
                    "kind": "command",
                    "command": [sys.executable, str(script), str(out), mode],
                    "inherit_env": ["PASSED_ON"],
                    **receiver,
                }
            ],
            "group_wait": "0s",
            "delivery": {"backoff_initial": "10s", "max_attempts": 2},
        }
    )
    return config, out


def runs(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def rows(engine: store.Engine) -> list[Notification]:
    with Session(engine) as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def open_incident(engine: store.Engine, config: AlertsConfig, clock: Clock) -> None:
    """The latency shift of the alerting tests, detected: one firing incident."""
    ahead = SamplesConfig(max_ahead=timedelta(hours=2))
    collect(engine, 0, 1005)
    DetectJob(engine, DETECTION, clock=clock, alerts=config, samples=ahead)()


def test_an_incident_runs_the_program_once_with_its_json_and_a_clean_environment(
    engine: store.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_DB_PASSWORD", "hunter2")  # anomon's: never handed on
    monkeypatch.setenv("PASSED_ON", "mlflow://here")
    config, out = command_alerts(tmp_path, "ok")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    (incident,) = incidents(engine)
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    deliver.run_once()
    deliver.run_once()  # nothing left: never run twice
    (run,) = runs(out)
    assert run["body"]["event"] == "firing"
    assert [i["id"] for i in run["body"]["incidents"]] == [incident.id]
    assert run["env"] == {
        "PASSED_ON": "mlflow://here",
        "ANOMON_RECEIVER": "retrain",
        "ANOMON_EVENT": "firing",
        "ANOMON_INCIDENT_ID": str(incident.id),
        "ANOMON_METRIC": "latency_p99",
        "ANOMON_ENTITY": "churn",
        "ANOMON_NOTIFICATION_KEY": run["body"]["key"],
    }
    (row,) = rows(engine)
    assert row.status == "sent" and row.last_error is None
    assert row.output == "retraining latency_p99 for firing\n"


def test_a_failing_program_is_retried_with_its_exit_status_then_dead(
    engine: store.Engine, tmp_path: Path
) -> None:
    config, out = command_alerts(tmp_path, "fail")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    deliver = DeliverJob(engine, config, build_notifiers(config), clock=clock)
    deliver.run_once()
    (row,) = rows(engine)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error.endswith("exited with status 3: no GPU left")
    assert row.output == "retraining latency_p99 for firing\nno GPU left\n"
    clock.advance(minutes=1)  # past the backoff: the second and last attempt
    deliver.run_once()
    (row,) = rows(engine)
    assert row.status == "dead" and row.last_error.startswith("gave up after 2 attempts")
    assert len(runs(out)) == 2


def test_a_program_past_its_timeout_is_killed_with_what_it_started(
    engine: store.Engine, tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":  # seconds of waiting, the same on any database
        pytest.skip("a program's process handling does not depend on the database")
    config, out = command_alerts(tmp_path, "hang", timeout="1s")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    started = time.monotonic()
    DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    assert time.monotonic() - started < 20
    (row,) = rows(engine)
    assert row.status == "pending" and "ran past its timeout of 1 s" in row.last_error
    time.sleep(4)  # the child would have written its mark by now
    assert not Path(f"{out}.child").exists()


def test_a_run_cut_short_by_a_crash_is_not_run_again(engine: store.Engine, tmp_path: Path) -> None:
    config, out = command_alerts(tmp_path, "ok")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    # a daemon claimed it and started the program, then died before recording anything
    (claimed,) = store.claim_due(engine, now=clock.now, limit=10, lease=timedelta(minutes=1))
    store.mark_started(engine, {claimed.id: claimed.attempts})
    clock.advance(minutes=2)  # its lease ran out: the next daemon claims it again
    DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    assert runs(out) == []
    (row,) = rows(engine)
    assert row.status == "dead" and row.last_error.startswith("not run again: started;")


@pytest.mark.parametrize(
    ("program", "said"),
    [
        ("/nowhere/retrain.sh", "no executable program '/nowhere/retrain.sh' found"),
        ("no-such-retrainer", "no executable program 'no-such-retrainer' found on PATH"),
        ("./retrain.sh", "the program './retrain.sh' must be an absolute path or a name on"),
    ],
)
def test_a_program_that_cannot_be_run_is_a_config_error_naming_the_field(
    tmp_path: Path, program: str, said: str
) -> None:
    (tmp_path / "retrain.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    (tmp_path / "retrain.sh").chmod(0o755)
    path = tmp_path / "anomon.toml"
    path.write_text(
        '[alerts]\nreceiver = "retrain"\n'
        '[[alerts.receivers]]\nname = "retrain"\nkind = "command"\n'
        f'command = ["{program}", "--model", "churn"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"alerts.receivers[0].command: {said}" in str(caught.value).replace("\n", " ")


def test_a_program_whose_detached_child_holds_its_output_does_not_hold_the_delivery(
    engine: store.Engine, tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":  # seconds of waiting, the same on any database
        pytest.skip("a program's process handling does not depend on the database")
    config, out = command_alerts(tmp_path, "detach", timeout="1s")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    started = time.monotonic()
    try:
        DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
        assert time.monotonic() - started < 20  # the timeout, then a few seconds at most
        (row,) = rows(engine)
        assert row.status == "pending" and "ran past its timeout" in row.last_error
    finally:  # the detached child is out of the kill's reach: the test ends it
        pid = Path(f"{out}.pid")
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGKILL)


def test_what_the_program_printed_is_shown_by_incidents_show_and_notify_test(
    engine: store.Engine, tmp_path: Path
) -> None:
    config, out = command_alerts(tmp_path, "ok")
    clock = Clock(datetime.fromtimestamp(START + 60 * 1005, UTC))
    open_incident(engine, config, clock)
    (incident,) = incidents(engine)
    DeliverJob(engine, config, build_notifiers(config), clock=clock).run_once()
    script = tmp_path / "retrain.py"
    path = tmp_path / "anomon.toml"
    url = engine.url.render_as_string(hide_password=False)
    path.write_text(
        f'[database]\nurl = "{url}"\n[alerts]\nreceiver = "retrain"\n'
        '[[alerts.receivers]]\nname = "retrain"\nkind = "command"\n'
        f"command = {json.dumps([sys.executable, str(script), str(out), 'ok'])}\n",
        encoding="utf-8",
    )
    shown = run_cli("incidents", "show", str(incident.id), "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "  | retraining latency_p99 for firing" in shown.stdout
    tested = run_cli("notify", "test", "retrain", "-c", str(path))
    assert tested.returncode == 0, tested.stderr
    assert "retrain printed:\n  | retraining anomon_test for firing" in tested.stdout
