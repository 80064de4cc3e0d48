"""The system source's arithmetic, on a scripted psutil (the real one: integration tests)."""

from __future__ import annotations

import json
from collections import namedtuple
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from anomon.config import SystemSourceConfig
from anomon.sources import PartialCollection, SystemSource

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class ScriptedPsutil(SimpleNamespace):
    """Counters that advance by hand between collections."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = [CpuTimes(10, 0, 10, 80, 0, 0, 0, 0, 0, 0)] * 2
        self.read = self.write = self.recv = self.sent = 0
        self.clock = 100.0

    def cpu_times(self, percpu: bool = False) -> object:
        if percpu:
            return list(self.cpu)
        return CpuTimes(*(sum(field) for field in zip(*self.cpu, strict=True)))

    def disk_io_counters(self) -> object:
        return SimpleNamespace(read_bytes=self.read, write_bytes=self.write)

    def net_io_counters(self) -> object:
        return SimpleNamespace(bytes_recv=self.recv, bytes_sent=self.sent)

    def virtual_memory(self) -> object:
        return SimpleNamespace(total=1000, available=250, percent=75.0)

    def swap_memory(self) -> object:
        return SimpleNamespace(used=10, percent=1.0)

    def disk_usage(self, mount: str) -> object:
        if mount != "/":
            raise FileNotFoundError(2, "No such file or directory", mount)
        return SimpleNamespace(used=400, percent=40.0)

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)


def source(ps: ScriptedPsutil, **options: object) -> SystemSource:
    config = SystemSourceConfig.model_validate({"name": "sys", "kind": "system", **options})
    return SystemSource(config, ps=ps, monotonic=lambda: ps.clock, hostname="box")  # type: ignore[arg-type]


def values(samples: list) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    return {(s.key.metric, s.key.labels): s.value for s in samples}


def test_the_first_collection_has_levels_but_no_rates() -> None:
    got = values(source(ScriptedPsutil()).collect(NOW))
    host = json.dumps({"host": "box"}, separators=(",", ":"))
    assert got[("system_memory_used_bytes", host)] == 750
    assert got[("system_memory_percent", host)] == 75.0
    assert got[("system_load5", host)] == 0.25
    assert got[("system_disk_percent", '{"host":"box","mount":"/"}')] == 40.0
    assert not [metric for metric, _ in got if "per_second" in metric or "cpu" in metric]


def test_rates_come_from_the_counters_of_the_previous_collection() -> None:
    ps = ScriptedPsutil()
    system = source(ps, per_cpu=True)
    system.collect(NOW)
    ps.clock += 10
    ps.read, ps.write, ps.recv, ps.sent = 1000, 500, 20_000, 0
    # CPU 0: 30 of 40 new seconds busy; CPU 1: idle throughout
    ps.cpu = [CpuTimes(40, 0, 10, 90, 0, 0, 0, 0, 0, 0), CpuTimes(10, 0, 10, 120, 0, 0, 0, 0, 0, 0)]
    got = values(system.collect(NOW))
    assert got[("system_disk_read_bytes_per_second", '{"host":"box"}')] == 100.0
    assert got[("system_disk_write_bytes_per_second", '{"host":"box"}')] == 50.0
    assert got[("system_network_receive_bytes_per_second", '{"host":"box"}')] == 2000.0
    assert got[("system_cpu_percent", '{"cpu":"0","host":"box"}')] == 75.0
    assert got[("system_cpu_percent", '{"cpu":"1","host":"box"}')] == 0.0
    assert got[("system_cpu_percent", '{"host":"box"}')] == 37.5


def test_a_counter_that_went_backwards_gives_no_rate_that_cycle() -> None:
    ps = ScriptedPsutil()
    ps.read = 5000
    system = source(ps)
    system.collect(NOW)
    ps.clock += 10
    ps.read = 10
    got = values(system.collect(NOW))
    assert ("system_disk_read_bytes_per_second", '{"host":"box"}') not in got
    assert got[("system_disk_write_bytes_per_second", '{"host":"box"}')] == 0.0


def test_a_missing_mount_is_a_partial_failure_that_keeps_the_rest() -> None:
    with pytest.raises(
        PartialCollection, match="disk '/data': No such file or directory"
    ) as caught:
        source(ScriptedPsutil(), disks=["/", "/data"]).collect(NOW)
    metrics = {sample.key.metric for sample in caught.value.samples}
    assert {"system_memory_percent", "system_disk_percent"} <= metrics


def test_labels_entity_and_timestamp_come_from_config_and_clock() -> None:
    samples = source(ScriptedPsutil(), labels={"dc": "eu"}, entity="gpu-node-1").collect(NOW)
    assert {s.key.labels for s in samples if s.key.metric == "system_load1"} == {
        '{"dc":"eu","host":"box"}'
    }
    assert {s.info.entity for s in samples} == {"gpu-node-1"}
    assert {s.ts for s in samples} == {int(NOW.timestamp())}
    assert {s.info.kind for s in samples} == {"resource"}
