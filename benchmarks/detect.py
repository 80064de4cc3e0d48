"""Detection benchmark: replay throughput and a steady daemon-style cycle.

Prints readable figures, then one JSON line with ``replay_points_per_s`` (one long
series), ``replay_entity_points_per_s`` (a 19-metric entity, points = rows x metrics),
``cycle_10k_seconds`` (10,000 warmed-up series, one new point each),
``entity_cycle_10k_seconds`` (the same 10,000 series as 1,000 entities of 10 metrics, one
new row each: the daemon's entity path) and ``peak_rss_mb``.

    python benchmarks/detect.py [--rows 1000000] [--series 10000] [--history 10000]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time

import numpy as np

from anomon.config import DetectionConfig
from anomon.detect import Solo
from anomon.detect.fleet import Fleet

START = 1_700_000_000 - 1_700_000_000 % 86_400


def synthetic(rows: int, metrics: int, seed: int, step: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Noisy daily patterns with a few spikes: ``(ts, values (rows, metrics))``."""
    rng = np.random.default_rng(seed)
    ts = START + step * np.arange(rows, dtype=np.int64)
    phase = 2 * np.pi * (ts % 86_400) / 86_400
    level = rng.uniform(10, 1000, metrics)
    noise = rng.normal(0, 0.05, (rows, metrics))
    values = level * (1 + 0.3 * np.sin(phase)[:, None] + noise)
    spikes = rng.integers(0, rows, max(1, rows // 5000))
    values[spikes] *= 3
    return ts, values


def replay_rate(rows: int, metrics: int, config: DetectionConfig, repeats: int = 3) -> float:
    """Points per second of the fastest of ``repeats`` replays (as ``timeit`` advises: the
    slower runs measure the machine's other work; here they vary by ±20%)."""
    ts, values = synthetic(rows, metrics, seed=metrics)
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        Solo([f"m{i}" for i in range(metrics)], config).update(ts, values)
        took.append(time.perf_counter() - start)
    return rows * metrics / min(took)


def cycle_seconds(
    series: int, history: int, config: DetectionConfig, cycles: int = 10, metrics: int = 1
) -> tuple[float, float, float]:
    """Time daemon cycles: ``series`` warmed-up series in entities of ``metrics``, one new
    row each per cycle.

    Returns the mean and the slowest cycle (a cycle that starts new baseline blocks
    recomputes them), and the set-up time.

    One entity is warmed up on ``history`` rows through a fleet (which also fits the
    pooled forest); the fleet then holds ``series`` copies of it, so the state measured is
    the real state of a series with that history.
    """
    ts, values = synthetic(history + cycles, metrics, seed=7)
    warm_start = time.perf_counter()
    warm = Fleet(config)
    warm.add("template", [f"value_{i}" for i in range(metrics)])
    warm.update({"template": (ts[:history], values[:history])})
    fleet = Fleet(config)
    fleet.pool, fleet.forest_history = warm.pool, warm.forest_history
    template = warm.entities["template"]
    entities = series // metrics
    for key in range(entities):
        fleet.entities[key] = copy.deepcopy(template)
    warmed = time.perf_counter() - warm_start
    took = []
    for row in range(history, history + cycles):
        cycle = dict.fromkeys(range(entities), (ts[row : row + 1], values[row : row + 1]))
        start = time.perf_counter()
        fleet.update(cycle)
        took.append(time.perf_counter() - start)
    return float(np.mean(took)), max(took), warmed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=10_000)
    args = parser.parse_args()
    config = DetectionConfig()
    # the cycle first, so that peak RSS is the fleet's, not a long replay's
    cycle, slowest, warm = cycle_seconds(args.series, args.history, config)
    print(
        f"steady cycle, {args.series:,} series x 1 new point: mean {cycle:.2f} s, slowest "
        f"{slowest:.2f} s of 10 (target < 2 s; {args.history:,} rows of history each, "
        f"set up in {warm:.0f} s)"
    )
    grouped, grouped_slowest, _ = cycle_seconds(args.series, args.history, config, metrics=10)
    print(
        f"steady cycle, the same as {args.series // 10:,} entities x 10 metrics x 1 new row: "
        f"mean {grouped:.2f} s, slowest {grouped_slowest:.2f} s of 10 (target < 2 s)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS with the fleet: {rss:,.0f} MB  (target < 1,024 MB)")
    one = replay_rate(args.rows, 1, config)
    print(
        f"replay, one series of {args.rows:,} rows: {one:>12,.0f} points/s, fastest of 3 "
        "(target >= 200,000)"
    )
    entity = replay_rate(args.entity_rows, 19, config)
    print(f"replay, 19-metric entity, {args.entity_rows:,} rows: {entity:>12,.0f} points/s")
    print(
        json.dumps(
            {
                "replay_points_per_s": round(one),
                "replay_entity_points_per_s": round(entity),
                "cycle_10k_seconds": round(cycle, 3),
                "entity_cycle_10k_seconds": round(grouped, 3),
                "peak_rss_mb": round(rss),
            }
        )
    )


if __name__ == "__main__":
    main()
