"""The GPU source on a fake NVML module (the real pynvml: tests/integration/test_gpu_nvml.py)."""

# The fake mirrors pynvml's camelCase function names.
# ruff: noqa: N802

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType, SimpleNamespace

import pytest

from anomon.config import GpuSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKind
from anomon.sources.base import PartialCollection
from anomon.sources.gpu import GpuSource, SourceUnavailable, open_gpu_source
from anomon.timeutil import to_epoch

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class FakeNvmlError(Exception):
    """pynvml's errors print as the NVML reason, e.g. ``Not Supported``."""

    reason = "Unknown Error"

    def __str__(self) -> str:
        return self.reason


class FakeNotSupported(FakeNvmlError):
    reason = "Not Supported"


class FakeGpuIsLost(FakeNvmlError):
    reason = "GPU is lost"


class FakeDriverNotLoaded(FakeNvmlError):
    reason = "Driver Not Loaded"


@dataclass
class FakeGpu:
    """One GPU's readings; ``failures`` maps a reading to the error it raises."""

    name: bytes | str = "NVIDIA H200"
    busy: int = 40
    memory_busy: int = 10
    used: int = 256
    total: int = 1024
    celsius: int = 55
    milliwatts: int = 123_500
    failures: dict[str, FakeNvmlError] = field(default_factory=dict)

    def read(self, what: str, value: object) -> object:
        if what in self.failures:
            raise self.failures[what]
        return value


class FakeNvml(ModuleType):
    """The part of pynvml the source uses, over a list of fake GPUs."""

    NVMLError = FakeNvmlError
    NVMLError_NotSupported = FakeNotSupported
    NVMLError_GpuIsLost = FakeGpuIsLost
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, *gpus: FakeGpu, init_error: FakeNvmlError | None = None) -> None:
        super().__init__("pynvml")
        self.gpus = list(gpus)
        self.init_error = init_error
        self.initialised = 0
        self.handle_fetches = 0
        self.asked: list[str] = []

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self.handle_fetches += 1
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes | str:
        return gpu.name

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> object:
        self.asked.append("utilization")
        return gpu.read("utilization", SimpleNamespace(gpu=gpu.busy, memory=gpu.memory_busy))

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> object:
        self.asked.append("memory")
        return gpu.read("memory", SimpleNamespace(used=gpu.used, total=gpu.total))

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> object:
        self.asked.append("temperature")
        return gpu.read("temperature", gpu.celsius if sensor == 0 else -1)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> object:
        self.asked.append("power")
        return gpu.read("power", gpu.milliwatts)


def config(**options: object) -> GpuSourceConfig:
    return GpuSourceConfig.model_validate({"name": "gpus", "kind": "gpu", **options})


def source(nvml: FakeNvml, **options: object) -> GpuSource:
    return GpuSource(config(**options), nvml=nvml, hostname="box")


def values(samples: list[Sample]) -> dict[tuple[str, str], float]:
    return {(s.key.metric, s.key.labels): s.value for s in samples}


def labels(gpu: int, name: str = "NVIDIA H200", **extra: str) -> str:
    found = {"gpu": str(gpu), "name": name, "host": "box", **extra}
    return json.dumps(dict(sorted(found.items())), separators=(",", ":"))


def test_it_reads_every_metric_of_every_gpu_when_no_devices_are_configured() -> None:
    nvml = FakeNvml(FakeGpu(), FakeGpu(name="NVIDIA L4", busy=0, used=0))
    got = values(source(nvml).collect(NOW))
    assert got == {
        ("gpu_utilization_percent", labels(0)): 40.0,
        ("gpu_memory_utilization_percent", labels(0)): 10.0,
        ("gpu_memory_used_bytes", labels(0)): 256.0,
        ("gpu_memory_percent", labels(0)): 25.0,
        ("gpu_temperature_celsius", labels(0)): 55.0,
        ("gpu_power_watts", labels(0)): 123.5,
        ("gpu_utilization_percent", labels(1, "NVIDIA L4")): 0.0,
        ("gpu_memory_utilization_percent", labels(1, "NVIDIA L4")): 10.0,
        ("gpu_memory_used_bytes", labels(1, "NVIDIA L4")): 0.0,
        ("gpu_memory_percent", labels(1, "NVIDIA L4")): 0.0,
        ("gpu_temperature_celsius", labels(1, "NVIDIA L4")): 55.0,
        ("gpu_power_watts", labels(1, "NVIDIA L4")): 123.5,
    }


def test_it_stamps_samples_with_the_time_source_host_and_unit() -> None:
    samples = source(FakeNvml(FakeGpu())).collect(NOW)
    assert {s.ts for s in samples} == {to_epoch(NOW)}
    assert {(s.info.source, s.info.entity, s.info.kind) for s in samples} == {
        ("gpus", "box", SeriesKind.RESOURCE)
    }
    units = {s.key.metric: s.info.unit for s in samples}
    assert units["gpu_power_watts"] == "watts"
    assert units["gpu_memory_used_bytes"] == "bytes"
    assert units["gpu_temperature_celsius"] == "celsius"
    assert units["gpu_utilization_percent"] == "percent"


def test_it_adds_the_configured_labels_and_entity() -> None:
    samples = source(FakeNvml(FakeGpu()), labels={"rack": "r1"}, entity="trainer").collect(NOW)
    assert {s.key.labels for s in samples} == {labels(0, rack="r1")}
    assert {s.info.entity for s in samples} == {"trainer"}


def test_it_decodes_a_name_that_nvml_returns_as_bytes() -> None:
    samples = source(FakeNvml(FakeGpu(name=b"Tesla T4"))).collect(NOW)
    assert {json.loads(s.key.labels)["name"] for s in samples} == {"Tesla T4"}


def test_it_reads_only_the_configured_devices() -> None:
    nvml = FakeNvml(FakeGpu(), FakeGpu(), FakeGpu())
    samples = source(nvml, devices=[2, 0, 2]).collect(NOW)
    assert sorted({json.loads(s.key.labels)["gpu"] for s in samples}) == ["0", "2"]
    assert len(samples) == 12  # the repeated index is read once


def test_it_names_a_configured_device_this_host_does_not_have() -> None:
    with pytest.raises(PartialCollection) as caught:
        source(FakeNvml(FakeGpu()), devices=[0, 3]).collect(NOW)
    assert str(caught.value) == "gpu 3: no such device (NVML found 1 GPUs)"
    assert {json.loads(s.key.labels)["gpu"] for s in caught.value.samples} == {"0"}


def test_it_raises_source_error_when_only_missing_devices_are_configured() -> None:
    with pytest.raises(SourceError, match=r"^gpu 5: no such device") as caught:
        source(FakeNvml(FakeGpu()), devices=[5]).collect(NOW)
    assert not isinstance(caught.value, PartialCollection)


def test_it_skips_a_failed_reading_and_names_it() -> None:
    nvml = FakeNvml(FakeGpu(failures={"temperature": FakeNvmlError()}), FakeGpu())
    with pytest.raises(PartialCollection) as caught:
        source(nvml).collect(NOW)
    assert str(caught.value) == "gpu 0 temperature: Unknown Error"
    metrics = [(s.key.metric, json.loads(s.key.labels)["gpu"]) for s in caught.value.samples]
    assert ("gpu_temperature_celsius", "0") not in metrics
    assert ("gpu_temperature_celsius", "1") in metrics
    assert ("gpu_power_watts", "0") in metrics


def test_it_names_an_unsupported_reading_once_then_stops_asking_for_it() -> None:
    nvml = FakeNvml(FakeGpu(failures={"power": FakeNotSupported()}))
    gpus = source(nvml)
    with pytest.raises(PartialCollection, match=r"^gpu 0 power: Not Supported$"):
        gpus.collect(NOW)
    nvml.asked.clear()
    second = gpus.collect(NOW)
    assert "power" not in nvml.asked
    assert len(second) == 5


def test_it_asks_for_an_unsupported_reading_again_after_reopening() -> None:
    nvml = FakeNvml(FakeGpu(failures={"power": FakeNotSupported()}))
    gpus = source(nvml)
    with pytest.raises(PartialCollection):
        gpus.collect(NOW)
    gpus.close()
    with pytest.raises(PartialCollection, match="power: Not Supported"):
        gpus.collect(NOW)


def test_it_stops_reading_a_lost_gpu_and_keeps_the_others() -> None:
    nvml = FakeNvml(FakeGpu(failures={"utilization": FakeGpuIsLost()}), FakeGpu())
    with pytest.raises(PartialCollection) as caught:
        source(nvml).collect(NOW)
    assert str(caught.value) == "gpu 0 utilization: GPU is lost"
    assert {json.loads(s.key.labels)["gpu"] for s in caught.value.samples} == {"1"}


def test_it_raises_source_error_when_no_reading_succeeds() -> None:
    broken = FakeGpu()
    broken.failures = {what: FakeNvmlError() for what in ("utilization", "memory", "temperature")}
    broken.failures["power"] = FakeNotSupported()
    with pytest.raises(SourceError) as caught:
        source(FakeNvml(broken)).collect(NOW)
    assert not isinstance(caught.value, PartialCollection)
    assert str(caught.value) == (
        "gpu 0 utilization: Unknown Error; gpu 0 memory: Unknown Error; "
        "gpu 0 temperature: Unknown Error; gpu 0 power: Not Supported"
    )


def test_it_raises_source_error_when_a_lost_gpu_was_the_only_one() -> None:
    nvml = FakeNvml(FakeGpu(failures={"utilization": FakeGpuIsLost()}))
    with pytest.raises(SourceError, match=r"^gpu 0 utilization: GPU is lost$") as caught:
        source(nvml).collect(NOW)
    assert not isinstance(caught.value, PartialCollection)
    assert nvml.asked == ["utilization"]


def test_it_shortens_a_long_list_of_problems() -> None:
    nvml = FakeNvml(*(FakeGpu(failures={"power": FakeNvmlError()}) for _ in range(7)))
    with pytest.raises(PartialCollection) as caught:
        source(nvml).collect(NOW)
    assert str(caught.value).count("power: Unknown Error") == 5
    assert str(caught.value).endswith(" (and 2 more)")


def test_it_caches_device_handles_between_collections() -> None:
    nvml = FakeNvml(FakeGpu(), FakeGpu())
    gpus = source(nvml)
    gpus.collect(NOW)
    gpus.collect(NOW)
    assert nvml.handle_fetches == 2


def test_it_fetches_a_handle_again_after_an_error_on_its_gpu() -> None:
    flaky = FakeGpu(failures={"memory": FakeNvmlError()})
    nvml = FakeNvml(flaky, FakeGpu())
    gpus = source(nvml)
    with pytest.raises(PartialCollection):
        gpus.collect(NOW)
    flaky.failures.clear()
    assert len(gpus.collect(NOW)) == 12
    assert nvml.handle_fetches == 3  # both at first, then the flaky one again


def test_it_opens_nvml_on_the_first_collection_and_shuts_it_down_on_close() -> None:
    nvml = FakeNvml(FakeGpu())
    gpus = source(nvml)
    assert nvml.initialised == 0
    gpus.collect(NOW)
    gpus.collect(NOW)
    assert nvml.initialised == 1
    gpus.close()
    gpus.close()
    assert nvml.initialised == 0


def test_it_does_not_shut_down_nvml_it_never_initialised() -> None:
    nvml = FakeNvml(FakeGpu())
    source(nvml).close()
    assert nvml.initialised == 0


def test_it_returns_an_initialised_source_from_open_gpu_source() -> None:
    nvml = FakeNvml(FakeGpu())
    gpus = open_gpu_source(config(), nvml=nvml, hostname="box")
    assert gpus.name == "gpus"
    assert nvml.initialised == 1


def test_it_raises_unavailable_when_pynvml_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(SourceUnavailable) as caught:
        open_gpu_source(config(), hostname="box")
    assert str(caught.value) == (
        "NVML not available (pynvml not installed: pip install 'anomon[gpu]')"
    )


def test_it_raises_unavailable_when_nvml_cannot_start() -> None:
    nvml = FakeNvml(FakeGpu(), init_error=FakeDriverNotLoaded())
    with pytest.raises(SourceUnavailable, match=r"^NVML not available \(Driver Not Loaded\)$"):
        open_gpu_source(config(), nvml=nvml)


def test_it_raises_unavailable_and_shuts_down_when_there_is_no_gpu() -> None:
    nvml = FakeNvml()
    with pytest.raises(SourceUnavailable, match=r"^NVML not available \(no GPU found\)$"):
        open_gpu_source(config(), nvml=nvml)
    assert nvml.initialised == 0


def test_it_signals_unavailable_as_a_source_error_from_collect() -> None:
    nvml = FakeNvml(FakeGpu(), init_error=FakeDriverNotLoaded())
    with pytest.raises(SourceError, match="Driver Not Loaded") as caught:
        source(nvml).collect(NOW)
    assert isinstance(caught.value, SourceUnavailable)
