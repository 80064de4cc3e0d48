"""The README's example SQL runs on a real anomon database and answers its question."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from anomon import store
from anomon.model import IncidentWrite, Sample, SeriesInfo, SeriesKey, SeriesKind
from tests.conftest import ROOT


def readme_queries() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    return [query.strip() for query in block.split(";") if query.strip()]


def test_the_readme_example_queries_answer_their_questions(tmp_path: Path) -> None:
    path = tmp_path / "anomon.db"
    engine = store.open_engine(f"sqlite:///{path}")
    store.upgrade(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    info = SeriesInfo("system", "my-host", SeriesKind.RESOURCE, "percent")
    cpu = SeriesKey.of("system_cpu_percent", {"host": "my-host"})
    core = SeriesKey.of("system_cpu_percent", {"host": "my-host", "cpu": "0"})
    samples = [
        Sample(key, info, int((now - timedelta(minutes=m)).timestamp()), float(m))
        for key in (cpu, core)
        for m in range(5, 120, 10)  # none on the one-hour boundary
    ]
    registry = store.SeriesRegistry()
    store.save_collection(
        engine, registry, source="system", started_at=now, finished_at=now, samples=samples
    )
    store.save_collection(
        engine,
        registry,
        source="gpu",
        started_at=now,
        finished_at=now,
        samples=[],
        error="NVML not found",
    )

    with engine.begin() as conn:  # one firing and one resolved incident, one anomaly
        opened = datetime(2026, 11, 22, 11, 45, tzinfo=UTC)
        writes = [
            IncidentWrite(
                1,
                "my-host",
                "system_cpu_percent",
                "{}",
                status,
                "critical",
                peak,
                opened,
                opened,
                outbox=(),
            )
            for status, peak in (("firing", 97.0), ("resolved", 99.0))
        ]
        first, _ = store.write_incidents(conn, writes, now=now)
        conn.exec_driver_sql(
            "INSERT INTO anomalies (series_id, ts, value, score, detector_scores, direction, "
            "severity, incident_id, config_hash, detector_version, detected_at) VALUES "
            f"(1, 5, 1.0, 97.0, '{{}}', 'up', 'critical', {first}, 'h', 'v', '2026-11-22')"
        )
    engine.dispose()

    latest, per_minute, failing, incidents = readme_queries()
    with sqlite3.connect(path) as db:
        assert [(row[0], row[4]) for row in db.execute(latest)] == [
            ("system_cpu_percent", 5.0),
            ("system_cpu_percent", 5.0),
        ]
        rows = db.execute(per_minute).fetchall()
        assert [value for _, value in rows] == [55.0, 45.0, 35.0, 25.0, 15.0, 5.0]
        assert [(row[0], row[2]) for row in db.execute(failing)] == [("gpu", "NVML not found")]
        assert [(row[1], row[4], row[6]) for row in db.execute(incidents)] == [
            ("system_cpu_percent", 97.0, 1)
        ]


def test_the_systemd_unit_is_valid_and_runs_anomon(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import pytest

    unit = (ROOT / "config" / "systemd" / "anomon.service").read_text(encoding="utf-8")
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert exec_start.split("=", 1)[1].split()[1:] == ["run", "--config", "/etc/anomon/anomon.toml"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "anomon.service"  # verify wants the binary to exist
    copy.write_text(unit.replace("/opt/anomon/bin/anomon", "/bin/true"), encoding="utf-8")
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and "anomon.service" not in checked.stderr, checked.stderr
