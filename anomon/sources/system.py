"""``kind = "system"``: this host's CPU, memory, swap, disks, network and load, via psutil.

Rates (CPU busy %, disk and network bytes per second) are computed from the counters
of the previous collection, so the first collection after start has none of them. A
counter that went backwards (a reset, a removed device) yields no rate that cycle.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from anomon.config import SystemSourceConfig
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import PartialCollection, Source
from anomon.timeutil import to_epoch


@dataclass(frozen=True, slots=True)
class _Counters:
    """Cumulative counters read at one moment (monotonic seconds)."""

    at: float
    cpu: list[tuple[float, float]]  # (idle, total) seconds: overall, then per CPU if asked
    disk: tuple[int, int] | None  # bytes read, written
    net: tuple[int, int] | None  # bytes received, sent


class SystemSource(Source, config=SystemSourceConfig):
    """Collect host resource metrics. ``psutil`` and the clock are passed in for tests."""

    def __init__(
        self,
        config: SystemSourceConfig,
        *,
        ps: ModuleType = psutil,
        monotonic: Callable[[], float] = time.monotonic,
        hostname: str | None = None,
    ) -> None:
        super().__init__(config)
        self._config = config
        self._ps = ps
        self._monotonic = monotonic
        host = hostname or socket.gethostname()
        self._labels = {"host": host, **config.labels}
        self._info = SeriesInfo(
            source=config.name, entity=config.entity or host, kind=SeriesKind.RESOURCE
        )
        self._previous: _Counters | None = None
        self._process: tuple[int, float, float] | None = None  # pid, cpu seconds, monotonic

    def collect(self, now: datetime) -> list[Sample]:
        """Return this host's metrics at ``now``; raise PartialCollection if a part failed."""
        ts = to_epoch(now)
        out: list[Sample] = []
        problems: list[str] = []

        def add(metric: str, value: float, unit: str, **labels: str) -> None:
            key = SeriesKey.of(metric, {**self._labels, **labels})
            info = SeriesInfo(self._info.source, self._info.entity, self._info.kind, unit)
            out.append(Sample(key, info, ts, float(value)))

        counters = self._read_counters()
        self._add_rates(add, counters)
        self._previous = counters
        self._add_memory(add)
        self._add_disks(add, problems)
        self._add_process(add, problems)
        if self._config.load:
            for minutes, value in zip((1, 5, 15), self._ps.getloadavg(), strict=True):
                add(f"system_load{minutes}", value, "")
        if problems:
            raise PartialCollection("; ".join(problems), out)
        return out

    def _read_counters(self) -> _Counters:
        cpu = [_idle_total(self._ps.cpu_times())]
        if self._config.per_cpu:
            cpu += [_idle_total(times) for times in self._ps.cpu_times(percpu=True)]
        disk = self._ps.disk_io_counters() if self._config.disk_io else None
        net = self._ps.net_io_counters() if self._config.network else None
        return _Counters(
            at=self._monotonic(),
            cpu=cpu,
            disk=(disk.read_bytes, disk.write_bytes) if disk else None,
            net=(net.bytes_recv, net.bytes_sent) if net else None,
        )

    def _add_rates(self, add: Callable[..., None], now: _Counters) -> None:
        before = self._previous
        if before is None or now.at <= before.at:
            return
        for index, (old, new) in enumerate(zip(before.cpu, now.cpu, strict=False)):
            busy = _busy_percent(old, new)
            if busy is not None:
                labels = {"cpu": str(index - 1)} if index else {}  # entry 0 is all CPUs
                add("system_cpu_percent", busy, "percent", **labels)
        elapsed = now.at - before.at
        pairs = (
            (
                before.disk,
                now.disk,
                ("system_disk_read_bytes_per_second", "system_disk_write_bytes_per_second"),
            ),
            (
                before.net,
                now.net,
                (
                    "system_network_receive_bytes_per_second",
                    "system_network_transmit_bytes_per_second",
                ),
            ),
        )
        for old_pair, new_pair, names in pairs:
            if old_pair is None or new_pair is None:
                continue
            for name, old_value, new_value in zip(names, old_pair, new_pair, strict=True):
                if new_value >= old_value:
                    add(name, (new_value - old_value) / elapsed, "bytes/s")

    def _add_memory(self, add: Callable[..., None]) -> None:
        memory = self._ps.virtual_memory()
        add("system_memory_used_bytes", memory.total - memory.available, "bytes")
        add("system_memory_percent", memory.percent, "percent")
        swap = self._ps.swap_memory()
        add("system_swap_used_bytes", swap.used, "bytes")
        add("system_swap_percent", swap.percent, "percent")

    def _add_disks(self, add: Callable[..., None], problems: list[str]) -> None:
        for mount in self._config.disks:
            try:
                usage = self._ps.disk_usage(mount)
            except OSError as exc:
                problems.append(f"disk {mount!r}: {exc.strerror or exc}")
                continue
            add("system_disk_used_bytes", usage.used, "bytes", mount=mount)
            add("system_disk_percent", usage.percent, "percent", mount=mount)

    def _add_process(self, add: Callable[..., None], problems: list[str]) -> None:
        """The watched process (the model server): up, CPU percent and resident memory.

        A process that is gone scores ``system_process_up`` 0 and names itself in the
        collection's error; its CPU rate restarts when it comes back.
        """
        config = self._config
        if config.process_name is None and config.pid_file is None:
            return
        watched = config.process_name or config.pid_file or ""
        process = self._find_process()
        if process is None:
            self._process = None
            add("system_process_up", 0.0, "", process=watched)
            problems.append(f"process {watched!r} is not running")
            return
        try:
            with process.oneshot():
                times, memory = process.cpu_times(), process.memory_info()
        except (self._ps.NoSuchProcess, self._ps.AccessDenied) as exc:
            self._process = None
            add("system_process_up", 0.0, "", process=watched)
            problems.append(f"process {watched!r}: {type(exc).__name__}")
            return
        now, cpu = self._monotonic(), times.user + times.system
        add("system_process_up", 1.0, "", process=watched)
        add("system_process_rss_bytes", memory.rss, "bytes", process=watched)
        if self._process is not None and self._process[0] == process.pid and now > self._process[2]:
            busy = 100.0 * (cpu - self._process[1]) / (now - self._process[2])
            add("system_process_cpu_percent", max(busy, 0.0), "percent", process=watched)
        self._process = (process.pid, cpu, now)

    def _find_process(self) -> Any:
        """The process named by the pid file, else the first whose name matches."""
        config = self._config
        if config.pid_file is not None:
            try:
                pid = int(Path(config.pid_file).read_text(encoding="utf-8").split()[0])
                return self._ps.Process(pid)
            except (OSError, ValueError, IndexError, self._ps.NoSuchProcess):
                return None
        for process in self._ps.process_iter(["name"]):
            if process.info.get("name") == config.process_name:
                return process
        return None


def _idle_total(times: Any) -> tuple[float, float]:
    """Return (idle incl. iowait, total) CPU seconds from a psutil cpu_times tuple."""
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user/nice on Linux; leave it out of the total
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return idle, total


def _busy_percent(old: tuple[float, float], new: tuple[float, float]) -> float | None:
    """Return the busy share of CPU time between two readings, or None if no time passed."""
    idle, total = new[0] - old[0], new[1] - old[1]
    if total <= 0 or idle < 0:
        return None
    return min(100.0, max(0.0, 100.0 * (1.0 - idle / total)))
