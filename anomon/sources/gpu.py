"""``kind = "gpu"``: utilisation, memory, temperature and power of NVIDIA GPUs, via NVML.

For each GPU in ``devices`` (indexes; empty means every GPU NVML reports) a collection
returns ``gpu_utilization_percent``, ``gpu_memory_utilization_percent``,
``gpu_memory_used_bytes``, ``gpu_memory_percent``, ``gpu_temperature_celsius`` and
``gpu_power_watts``, labelled ``gpu`` (the index), ``name`` (the model) and ``host``.

A reading that fails (a GPU that fell off the bus, a driver hiccup) is skipped and named
in a :class:`~anomon.sources.base.PartialCollection`; a configured index this host does
not have is named the same way; when nothing at all could be read the collection raises
:class:`~anomon.errors.SourceError`. A reading the GPU does not support (power on some
boards) is named once, then no longer asked for until the source is opened again, so a
board without a power sensor does not fail every collection. Device handles are cached
and fetched again after any error on their GPU.

NVML comes from the optional ``pynvml`` module (``pip install 'anomon[gpu]'``), imported
and initialised when the source opens, never at import. :func:`open_gpu_source` raises
:class:`SourceUnavailable`, one line, when NVML cannot be used on this host (module
missing, no driver, no GPU), so the daemon can skip the source instead of failing.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Any

from anomon.config import GpuSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import PartialCollection, Source, SourceContext, summarise
from anomon.timeutil import to_epoch

Reading = tuple[str, float, str]  # metric, value, unit


class SourceUnavailable(SourceError):
    """NVML cannot be used on this host; the message is one line saying why.

    Raised by :func:`open_gpu_source` (and by ``collect`` on a source that was never
    opened); the daemon logs it once and skips the source.
    """


def open_gpu_source(
    config: GpuSourceConfig, *, nvml: ModuleType | None = None, hostname: str | None = None
) -> GpuSource:
    """Return a GpuSource with NVML initialised; raise SourceUnavailable if it cannot be."""
    return GpuSource(config, nvml=nvml, hostname=hostname).open()


class GpuSource(Source, config=GpuSourceConfig):
    """Collect per-GPU metrics through NVML. The ``pynvml`` module is passed in for tests."""

    def __init__(
        self,
        config: GpuSourceConfig,
        *,
        nvml: ModuleType | None = None,
        hostname: str | None = None,
    ) -> None:
        super().__init__(config)
        self._config = config
        self._nvml: Any = nvml  # None until opened: pynvml is imported lazily
        host = hostname or socket.gethostname()
        self._labels = {"host": host, **config.labels}
        self._info = SeriesInfo(
            source=config.name, entity=config.entity or host, kind=SeriesKind.RESOURCE
        )
        self._opened = False
        self._devices: dict[int, tuple[Any, dict[str, str]]] = {}  # index: handle, labels
        self._unsupported: set[tuple[int, str]] = set()  # (index, reading) not to ask again

    @classmethod
    def build(cls, config: GpuSourceConfig, context: SourceContext) -> GpuSource:
        """Open NVML; raise SourceUnavailable when it cannot be used here."""
        return open_gpu_source(config)

    def open(self) -> GpuSource:
        """Initialise NVML (once) and return self.

        Raises SourceUnavailable when pynvml is not installed, NVML cannot start (no
        driver, no permission) or it finds no GPU.
        """
        if self._opened:
            return self
        nvml = self._nvml or _import_nvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise SourceUnavailable(f"NVML not available ({exc})") from None
        self._nvml, self._opened = nvml, True
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self.close()
            raise SourceUnavailable(f"NVML not available (cannot count GPUs: {exc})") from None
        if count == 0:
            self.close()
            raise SourceUnavailable("NVML not available (no GPU found)")
        return self

    def close(self) -> None:
        """Shut NVML down if this source initialised it; safe to call twice."""
        if not self._opened:
            return
        self._opened = False
        self._devices.clear()
        self._unsupported.clear()
        # shutting down: a failure here leaves nothing to release or to retry
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def collect(self, now: datetime) -> list[Sample]:
        """Return each configured GPU's readings at ``now`` (an aware UTC datetime).

        Raises PartialCollection naming the readings and devices that failed,
        SourceError when nothing could be read, SourceUnavailable when NVML cannot start.
        """
        self.open()
        ts = to_epoch(now)
        samples: list[Sample] = []
        problems: list[str] = []
        for index in self._indexes(problems):
            for metric, value, unit, labels in self._read_device(index, problems):
                info = SeriesInfo(self._info.source, self._info.entity, self._info.kind, unit)
                samples.append(Sample(SeriesKey.of(metric, labels), info, ts, float(value)))
        return _outcome(samples, problems)

    def _indexes(self, problems: list[str]) -> list[int]:
        """Return the GPU indexes to read; name configured ones this host lacks."""
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError as exc:
            raise SourceError(f"cannot count GPUs: {exc}") from None
        if not self._config.devices:
            return list(range(count))
        wanted = list(dict.fromkeys(self._config.devices))
        for index in wanted:
            if index >= count:
                problems.append(f"gpu {index}: no such device (NVML found {count} GPUs)")
        return [index for index in wanted if index < count]

    def _read_device(
        self, index: int, problems: list[str]
    ) -> list[tuple[str, float, str, dict[str, str]]]:
        """Return (metric, value, unit, labels) of one GPU; name the readings that failed."""
        nvml = self._nvml
        try:
            handle, labels = self._device(index)
        except nvml.NVMLError as exc:
            problems.append(f"gpu {index}: {exc}")
            return []
        out: list[tuple[str, float, str, dict[str, str]]] = []
        for what, read in _READINGS.items():
            if (index, what) in self._unsupported:
                continue
            try:
                out += [(metric, value, unit, labels) for metric, value, unit in read(nvml, handle)]
            except nvml.NVMLError as exc:
                self._devices.pop(index, None)  # the handle may be stale: fetch it again
                problems.append(f"gpu {index} {what}: {exc}")
                if isinstance(exc, nvml.NVMLError_NotSupported):
                    self._unsupported.add((index, what))
                elif isinstance(exc, nvml.NVMLError_GpuIsLost):
                    break  # every other reading of this GPU would say the same
        return out

    def _device(self, index: int) -> tuple[Any, dict[str, str]]:
        """Return the cached handle and labels of GPU ``index``, fetching them if needed."""
        if index not in self._devices:
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(self._nvml.nvmlDeviceGetName(handle))
            self._devices[index] = (handle, {"gpu": str(index), "name": name, **self._labels})
        return self._devices[index]


def _import_nvml() -> ModuleType:
    """Import ``pynvml``; raise SourceUnavailable naming the extra to install."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise SourceUnavailable(
            "NVML not available (pynvml not installed: pip install 'anomon[gpu]')"
        ) from None


def _text(value: bytes | str) -> str:
    """Return an NVML string (bytes in older pynvml, str in newer) as str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _outcome(samples: list[Sample], problems: list[str]) -> list[Sample]:
    """Return ``samples``; with problems, raise (PartialCollection if some were read)."""
    if samples and not problems:
        return samples
    shown = summarise(problems) or "no GPU reading available"
    if not samples:
        raise SourceError(shown)
    raise PartialCollection(shown, samples)


def _utilization(nvml: Any, handle: Any) -> list[Reading]:
    """Return GPU and memory-controller busy percent over the driver's last sample period."""
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    return [
        ("gpu_utilization_percent", rates.gpu, "percent"),
        ("gpu_memory_utilization_percent", rates.memory, "percent"),
    ]


def _memory(nvml: Any, handle: Any) -> list[Reading]:
    """Return framebuffer memory used (bytes) and its share of the total (percent)."""
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    out: list[Reading] = [("gpu_memory_used_bytes", memory.used, "bytes")]
    if memory.total > 0:
        out.append(("gpu_memory_percent", 100.0 * memory.used / memory.total, "percent"))
    return out


def _temperature(nvml: Any, handle: Any) -> list[Reading]:
    """Return the GPU die temperature in degrees Celsius."""
    celsius = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
    return [("gpu_temperature_celsius", celsius, "celsius")]


def _power(nvml: Any, handle: Any) -> list[Reading]:
    """Return the board's power draw in watts (NVML reports milliwatts)."""
    return [("gpu_power_watts", nvml.nvmlDeviceGetPowerUsage(handle) / 1000, "watts")]


_READINGS: dict[str, Callable[[Any, Any], list[Reading]]] = {
    "utilization": _utilization,
    "memory": _memory,
    "temperature": _temperature,
    "power": _power,
}
