"""The GPU source against the real pynvml and driver; skipped where there is no GPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType

import pytest

from anomon.config import GpuSourceConfig
from anomon.model import Sample
from anomon.sources.base import PartialCollection
from anomon.sources.gpu import GpuSource, SourceUnavailable, open_gpu_source

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
NO_PYNVML = "pynvml not installed (pip install 'anomon[gpu]')"


@pytest.fixture(scope="module")
def pynvml() -> ModuleType:
    """The real pynvml module, or skip."""
    module: ModuleType = pytest.importorskip("pynvml", reason=NO_PYNVML)
    return module


@pytest.fixture(scope="module")
def gpu_count(pynvml: ModuleType) -> Iterator[int]:
    """The number of GPUs NVML sees, NVML held open meanwhile; skip where it cannot start."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML cannot start here (no driver or no GPU): {exc}")
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        if count == 0:
            pytest.skip("NVML started but found no GPU")
        yield count
    finally:
        pynvml.nvmlShutdown()


def config(**options: object) -> GpuSourceConfig:
    return GpuSourceConfig.model_validate({"name": "gpus", "kind": "gpu", **options})


def collect(source: GpuSource) -> list[Sample]:
    """Return a collection's samples, partial or not (power is unsupported on some boards)."""
    try:
        return source.collect(NOW)
    except PartialCollection as exc:
        problems, samples = str(exc), exc.samples
    assert "no such device" not in problems
    return samples


def test_it_reads_every_gpu_through_the_real_nvml(gpu_count: int) -> None:
    source = open_gpu_source(config(), hostname="box")
    try:
        samples = collect(source)
    finally:
        source.close()
    by_metric: dict[str, list[float]] = {}
    for sample in samples:
        by_metric.setdefault(sample.key.metric, []).append(sample.value)
    assert {json.loads(s.key.labels)["gpu"] for s in samples} == {str(i) for i in range(gpu_count)}
    assert all(json.loads(s.key.labels)["name"] for s in samples)
    assert all(0 <= v <= 100 for v in by_metric["gpu_utilization_percent"])
    assert all(0 <= v <= 100 for v in by_metric["gpu_memory_percent"])
    assert all(v >= 0 for v in by_metric["gpu_memory_used_bytes"])
    assert all(0 < v < 130 for v in by_metric["gpu_temperature_celsius"])
    assert all(0 <= v < 5000 for v in by_metric.get("gpu_power_watts", []))


def test_it_names_a_device_index_this_host_lacks(gpu_count: int) -> None:
    source = open_gpu_source(config(devices=[0, gpu_count]))
    try:
        with pytest.raises(PartialCollection) as caught:
            source.collect(NOW)
    finally:
        source.close()
    assert f"gpu {gpu_count}: no such device (NVML found {gpu_count} GPUs)" in str(caught.value)
    assert {json.loads(s.key.labels)["gpu"] for s in caught.value.samples} == {"0"}


def test_it_collects_again_after_close(gpu_count: int) -> None:
    source = open_gpu_source(config(devices=[0]))
    collect(source)
    source.close()
    try:
        again = collect(source)
    finally:
        source.close()
    assert "gpu_memory_used_bytes" in {s.key.metric for s in again}


def test_it_reports_nvml_unavailable_where_it_cannot_start(pynvml: ModuleType) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        reason = str(exc)
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML starts on this host; the unavailable path is covered by unit tests")
    with pytest.raises(SourceUnavailable) as caught:
        open_gpu_source(config())
    assert str(caught.value) == f"NVML not available ({reason})"
