"""The alerting commands as a user runs them: notify test, silence, status."""

from __future__ import annotations

import json
from pathlib import Path

from anomon import store
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from tests.conftest import run_cli, save_samples
from tests.loopback import free_port, receive


def _config(tmp_path: Path, url: str, database: str | None = None) -> Path:
    """A config with two webhook receivers; the store is ``database`` (default: a SQLite file)."""
    path = tmp_path / "anomon.toml"
    database = database or f"sqlite:///{tmp_path / 'anomon.db'}"
    path.write_text(
        f'[database]\nurl = "{database}"\n'
        '[alerts]\nreceiver = "hook"\n'
        f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{url}"\n'
        'secret = "s3cr3t-value"\n'
        f'[[alerts.receivers]]\nname = "down"\nkind = "webhook"\n'
        f'url = "http://user:pw@127.0.0.1:{free_port()}/x?token=abc"\n',
        encoding="utf-8",
    )
    return path


def test_notify_test_sends_one_message_and_reports_a_failure_in_one_line(tmp_path: Path) -> None:
    with receive() as hook:
        config = _config(tmp_path, f"{hook.url}/hook")
        sent = run_cli("notify", "test", "hook", "-c", str(config))
        assert sent.returncode == 0, sent.stderr
        assert "test notification sent to hook" in sent.stdout
        (request,) = hook.requests
        body = json.loads(request.body)
        assert body["test"] is True and body["incidents"][0]["metric"] == "anomon_test"
        assert request.headers["x-anomon-signature"].startswith("sha256=")
    down = run_cli("notify", "test", "down", "-c", str(config))
    assert down.returncode == 1
    assert down.stderr.startswith("Error: ") and down.stderr.count("\n") == 1
    assert "pw" not in down.stderr and "token" not in down.stderr
    unknown = run_cli("notify", "test", "nope", "-c", str(config))
    assert unknown.returncode == 2
    assert "no receiver named 'nope' in the config (receivers: hook, down)" in unknown.stderr


def test_silences_are_added_listed_and_expired(tmp_path: Path, database_url: str) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/hook", database_url)
    added = run_cli(
        "silence",
        "add",
        "entity=churn",
        "metric=~acc.*",
        "--for",
        "1h",
        "--comment",
        "deploy",
        "-c",
        str(config),
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("silence 1 until ")
    listed = run_cli("silence", "list", "-c", str(config))
    assert "entity=churn metric=~acc.*  deploy" in listed.stdout
    assert run_cli("silence", "expire", "1", "-c", str(config)).returncode == 0
    assert "no active silences" in run_cli("silence", "list", "-c", str(config)).stdout
    again = run_cli("silence", "expire", "1", "-c", str(config))
    assert again.returncode == 2 and "no active silence with id 1" in again.stderr
    bad = run_cli("silence", "add", "metric=~acc(", "-c", str(config))
    assert bad.returncode == 2 and "not a valid regular expression" in bad.stderr
    # a silence of no time is refused, not the 2 h default; one past 100 years too
    empty = run_cli("silence", "add", "entity=churn", "--for", "0s", "-c", str(config))
    assert empty.returncode == 2 and "--for must be longer than 0s, got: 0s" in empty.stderr
    endless = run_cli("silence", "add", "entity=churn", "--for", "99999999w", "-c", str(config))
    assert endless.returncode == 2 and "duration too long" in endless.stderr
    assert "no active silences" in run_cli("silence", "list", "-c", str(config)).stdout


def test_a_silence_that_matches_nothing_is_kept_with_a_warning_naming_the_typo(
    tmp_path: Path, database_url: str
) -> None:
    # issue 14, point 12: `entitty=churn-modle` was accepted without a word
    config = _config(tmp_path, "http://127.0.0.1:9/hook", database_url)
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    info = SeriesInfo("model-server", "churn-model", SeriesKind.LATENCY, "ms")
    save_samples(engine, [Sample(SeriesKey.of("latency_p99", {"model": "churn"}), info, 1, 1.0)])
    engine.dispose()

    def add(*matchers: str) -> tuple[str, str]:
        result = run_cli("silence", "add", *matchers, "--by", "ana", "-c", str(config))
        assert result.returncode == 0, result.stderr  # kept: the series may come later
        return result.stdout, result.stderr

    out, err = add("entitty=churn-model")
    assert out.startswith("silence 1 until ")
    assert err == (
        "warning: silence 1 matches nothing now: no series has the label 'entitty' "
        "(did you mean the label 'entity'?)\n"
    )
    _, err = add("entity=churn-modle")
    assert err == (
        "warning: silence 2 matches nothing now: no series has entity='churn-modle' "
        "(did you mean the value 'churn-model'?)\n"
    )
    _, err = add("entity=churn-model", "metric=~acc.*")
    assert err == (
        "warning: silence 3 matches nothing now: no series has all of these labels at once\n"
    )
    out, err = add("entity=churn-model", "severity=critical", "metric=~lat.*")
    assert (out.startswith("silence 4 until "), err) == (True, "")
    listed = run_cli("silence", "list", "-c", str(config)).stdout
    assert " ana" in listed


def test_status_shows_sources_incidents_and_the_outbox(tmp_path: Path, database_url: str) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/hook", database_url)
    result = run_cli("status", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "(no collections yet)" in result.stdout
    assert "open incidents: 0" in result.stdout
    assert "notifications: none" in result.stdout


def test_incidents_are_listed_acknowledged_and_judged(tmp_path: Path, database_url: str) -> None:
    from datetime import UTC, datetime

    from anomon import store
    from anomon.model import IncidentWrite

    config = _config(tmp_path, "http://127.0.0.1:9/hook", database_url)
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    opened = datetime(2026, 11, 22, 11, 45, tzinfo=UTC)
    with engine.begin() as conn:
        store.write_incidents(
            conn,
            [
                IncidentWrite(
                    None, "churn", "accuracy", "{}", "firing", "critical", 97.0, opened, opened
                )
            ],
            now=opened,
        )
    engine.dispose()
    listed = run_cli("incidents", "list", "-c", str(config))
    header, row = listed.stdout.splitlines()
    assert header.split()[:7] == ["id", "status", "severity", "metric", "entity", "peak", "opened"]
    assert row.split()[:7] == ["1", "firing", "critical", "accuracy", "churn", "97", "2026-11-22"]
    assert run_cli("incidents", "ack", "1", "-c", str(config)).returncode == 0
    assert run_cli("incidents", "feedback", "1", "false_alarm", "-c", str(config)).returncode == 0
    again = run_cli("incidents", "list", "--format", "json", "-c", str(config))
    (shown,) = json.loads(again.stdout)
    assert (shown["ack"], shown["feedback"], shown["opened"]) == (
        True,
        "false_alarm",
        "2026-11-22T11:45:00+00:00",
    )
    missing = run_cli("incidents", "ack", "9", "-c", str(config))
    assert missing.returncode == 2 and "no incident with id 9" in missing.stderr
    wrong = run_cli("incidents", "feedback", "1", "meh", "-c", str(config))
    assert wrong.returncode == 2 and "invalid choice: 'meh'" in wrong.stderr


def test_plot_draws_a_series_with_its_anomalies_and_asks_which_when_ambiguous(
    tmp_path: Path, database_url: str
) -> None:
    import time
    from datetime import UTC, datetime

    from anomon import store
    from anomon.model import AnomalyRecord, Sample, SeriesInfo, SeriesKey, SeriesKind

    config = _config(tmp_path, "http://127.0.0.1:9/hook", database_url)
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    now = int(time.time())
    info = SeriesInfo("model-server", "churn", SeriesKind.LATENCY, "ms")
    samples = [
        Sample(SeriesKey.of("latency_p99", {"model": model}), info, now - 60 * i, 100.0 + i)
        for model in ("churn", "fraud")
        for i in range(120)
    ]
    save_samples(engine, samples)
    at = datetime.now(UTC)
    spike = AnomalyRecord(1, now - 600, 300.0, 110.0, 97.0, {"zscore": 97.0}, "up", "critical")
    store.save_detection(
        engine,
        anomalies=[spike],
        scored_until={},
        quality={},
        started_at=at,
        finished_at=at,
        points=0,
        config_hash="h",
        detector_version="v",
    )
    engine.dispose()
    ambiguous = run_cli("plot", "latency_p99", "-c", str(config))
    assert ambiguous.returncode == 2
    assert "2 series match: 1 latency_p99" in ambiguous.stderr and "--label" in ambiguous.stderr
    out = tmp_path / "churn.png"
    drawn = run_cli(
        "plot",
        "latency_p99",
        "--label",
        "model=churn",
        "--since",
        "3h",
        "--out",
        str(out),
        "-c",
        str(config),
    )
    assert drawn.returncode == 0, drawn.stderr
    assert f"{out}: 120 points, 1 anomalies, 0 incident(s)" in drawn.stdout
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
