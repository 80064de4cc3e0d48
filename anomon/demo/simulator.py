"""A simulated model server: two models' quality, latency, traffic and memory.

Every value is a pure function of (model, metric, time): a daily shape, noise from a
hash of the time (so the same instant always gives the same value, whether it is
served live or written as history), and the injected incidents of a
:class:`Scenario`. :func:`exposition` renders one model's metrics as Prometheus text,
which :mod:`anomon.demo.servers` serves on 127.0.0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DAY = 86_400.0
MODELS = ("churn", "fraud")


@dataclass(frozen=True, slots=True)
class Metric:
    """One simulated metric: its level, daily swing (a fraction), noise and help text."""

    name: str
    level: float
    daily: float
    noise: float
    help: str


METRICS = (
    Metric("model_accuracy", 0.93, 0.004, 0.004, "Accuracy of the last window of labels"),
    Metric("request_latency_p99_ms", 120.0, 0.25, 4.0, "99th percentile serving latency"),
    Metric("requests_per_second", 300.0, 0.40, 8.0, "Requests served per second"),
    Metric("process_memory_mb", 900.0, 0.0, 3.0, "Resident memory of the model server"),
)


@dataclass(frozen=True, slots=True)
class Incident:
    """A fault injected into one model's metric from ``start`` to ``end`` (epoch s;
    infinite: it lasts).

    ``effect``: ``scale`` multiplies the value by ``size``; ``shift`` adds ``size``;
    ``ramp`` adds ``size`` per minute since the start (a leak).
    """

    name: str
    model: str
    metric: str
    start: float
    end: float
    effect: str
    size: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """The incidents of one demo run."""

    incidents: tuple[Incident, ...]

    @classmethod
    def starting(cls, at: float, seconds: float) -> Scenario:
        """The demo's three incidents, timed as fractions of a live run of ``seconds``
        from ``at``: a memory leak, an accuracy drop that lasts, a latency spike that ends."""
        end = math.inf  # lasts past the demo
        leak = Incident(
            "memory leak", "churn", "process_memory_mb", at + 0.15 * seconds, end, "ramp", 12.0
        )
        drop = Incident(
            "accuracy drop", "churn", "model_accuracy", at + 0.30 * seconds, end, "shift", -0.07
        )
        spike = Incident(
            "latency spike", "fraud", "request_latency_p99_ms",
            at + 0.45 * seconds, at + 0.70 * seconds, "scale", 2.5,
        )  # fmt: skip
        return cls((leak, drop, spike))


def values(
    model: str, metric: Metric, times: npt.ArrayLike, scenario: Scenario | None = None
) -> npt.NDArray[np.float64]:
    """The metric's values at ``times`` (epoch seconds), whole arrays at once."""
    ts = np.asarray(times, dtype=np.float64)
    # busiest at 15:00 UTC, quietest at 03:00
    shape = np.sin(2 * np.pi * (ts / DAY - 0.375))
    seed = MODELS.index(model) * 7919 + METRICS.index(metric) * 104_729
    out = metric.level * (1 + metric.daily * shape) + metric.noise * _normal(ts, seed)
    for incident in scenario.incidents if scenario else ():
        if incident.model != model or incident.metric != metric.name:
            continue
        inside = (ts >= incident.start) & (ts < incident.end)
        if incident.effect == "scale":
            out = np.where(inside, out * incident.size, out)
        elif incident.effect == "shift":
            out = np.where(inside, out + incident.size, out)
        else:
            out = np.where(inside, out + incident.size * (ts - incident.start) / 60, out)
    return out


def _normal(ts: npt.NDArray[np.float64], seed: int) -> npt.NDArray[np.float64]:
    """Standard normal noise that depends only on (whole second, seed): splitmix64 of
    each, two uniforms, Box-Muller."""
    base = ts.astype(np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(seed << 32)
    u1 = (_splitmix(base) >> np.uint64(11)).astype(np.float64) / 2.0**53
    u2 = (_splitmix(base + np.uint64(1)) >> np.uint64(11)).astype(np.float64) / 2.0**53
    result: npt.NDArray[np.float64] = np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)
    return result


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def exposition(model: str, at: float, scenario: Scenario | None) -> str:
    """Prometheus text exposition of one model's metrics at ``at``."""
    lines = []
    for metric in METRICS:
        (value,) = values(model, metric, [at], scenario)
        lines += [
            f"# HELP {metric.name} {metric.help}",
            f"# TYPE {metric.name} gauge",
            f'{metric.name}{{model="{model}"}} {value:.6g}',
        ]
    return "\n".join(lines) + "\n"
