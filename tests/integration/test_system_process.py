"""The system source's process view, on real processes of this machine."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomon.config import SystemSourceConfig
from anomon.sources import PartialCollection, SystemSource

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def values(samples: list) -> dict[str, float]:  # type: ignore[type-arg]
    return {s.key.metric: s.value for s in samples if s.key.metric.startswith("system_process")}


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    binary = tmp_path / "anomonsleep42"  # a name no other process on the machine has
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    process = subprocess.Popen([str(binary), "60"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("find_by", ["pid_file", "process_name"])
def test_it_watches_a_process_and_says_when_it_is_gone(
    sleeper: subprocess.Popen[bytes], tmp_path: Path, find_by: str
) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    option = (
        {"pid_file": str(pid_file)} if find_by == "pid_file" else {"process_name": "anomonsleep42"}
    )
    config = SystemSourceConfig.model_validate({"name": "host", "kind": "system", **option})
    source = SystemSource(config)
    first = values(source.collect(NOW))
    assert first["system_process_up"] == 1.0
    assert first["system_process_rss_bytes"] > 0
    time.sleep(0.2)
    second = values(source.collect(NOW))
    assert 0.0 <= second["system_process_cpu_percent"] < 50.0  # a sleeper barely runs
    sleeper.kill()
    sleeper.wait()
    with pytest.raises(PartialCollection, match="is not running") as caught:
        source.collect(NOW)
    gone = values(caught.value.samples)
    assert gone == {"system_process_up": 0.0}
