"""The fleet: many entities, one pooled forest, one forest call per cycle."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from anomon.config import DetectionConfig
from anomon.detect import Solo
from anomon.detect.calibration import DECADES_SCALE
from anomon.detect.entity import calibrate_forest, forest_calibration
from anomon.detect.fleet import Fleet
from anomon.detect.forest import rarity_cap
from anomon.detect.params import DetectorParams

CONFIG = DetectionConfig.model_validate(
    {"forest": {"min_train": 200, "refit_every": 2000, "n_estimators": 10}}
)
START = 1_700_000_000 - 1_700_000_000 % 86_400


def series(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = START + 60 * np.arange(rows)
    return ts, (100 + rng.normal(0, 1, rows))[:, None]


def test_a_fleet_scores_each_entity_like_a_lone_detector_except_the_shared_forest() -> None:
    fleet = Fleet(CONFIG)
    data = {f"host-{i}": series(i, 600) for i in range(5)}
    for key in data:
        fleet.add(key, ["cpu"])
    got: dict[str, list[np.ndarray]] = {key: [] for key in data}
    for start in range(0, 600, 37):  # cycles of 37 rows
        cycle = {
            key: (ts[start : start + 37], x[start : start + 37]) for key, (ts, x) in data.items()
        }
        for key, scores in fleet.update(cycle).items():
            got[key].append(scores.detectors["zscore"])
    for key, (ts, x) in data.items():
        alone = Solo(["cpu"], CONFIG).update(ts, x)
        assert np.array_equal(np.concatenate(got[key]), alone.detectors["zscore"])
    assert fleet.pool.model is None  # one-metric entities neither use nor teach the forest
    pairs = Fleet(CONFIG)
    for key in data:
        pairs.add(key, ["cpu", "cpu_again"])
    pairs.update({key: (ts, np.column_stack([x, x])) for key, (ts, x) in data.items()})
    assert pairs.pool.model is not None  # 5 x 600 clean rows passed min_train


def _pair(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Two metrics of one model: latency and throughput."""
    ts, first = series(seed, rows)
    return ts, np.column_stack([first[:, 0], series(seed + 100, rows)[1][:, 0]])


def test_the_pooled_forest_flags_a_spike_in_one_entity() -> None:
    fleet = Fleet(CONFIG)
    data = {f"m{i}": _pair(10 + i, 1500) for i in range(4)}
    data["m0"][1][1400, :] += 40  # both metrics at once
    for key in data:
        fleet.add(key, ["latency", "requests"])
    fleet.update({key: (ts[:700], x[:700]) for key, (ts, x) in data.items()})  # fits the pool
    fleet.update({key: (ts[700:1399], x[700:1399]) for key, (ts, x) in data.items()})
    last = fleet.update({key: (ts[1399:], x[1399:]) for key, (ts, x) in data.items()})
    assert last["m0"].anomaly[1]
    assert last["m0"].detectors["forest"][1] > 50
    assert not any(last[key].anomaly.any() for key in ("m1", "m2", "m3"))


def _model_windows(rows: int, partial_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model's hourly quality windows (accuracy on its labelled rows, the labelled
    rows, its predictions, its latency); from ``partial_from`` one window in five comes
    with 5 % of its labels (first reported while its labels were still coming in)."""
    rng = np.random.default_rng(1)
    ts = START + 3600 * np.arange(rows)
    labelled = rng.normal(1000, 20, rows).round()
    partial = (np.arange(rows) >= partial_from) & (rng.random(rows) < 0.2)
    labelled = np.where(partial, (labelled * 0.05).round(), labelled)
    accuracy = rng.binomial(labelled.astype(np.int64), 0.9) / labelled
    predictions = rng.poisson(1200, rows).astype(float)
    latency = rng.normal(50, 2, rows)
    return ts, np.column_stack([accuracy, labelled, predictions, latency]), partial


def test_the_forest_sees_how_rare_each_metric_was_judged_not_its_raw_spread() -> None:
    # a window with 50 labels instead of 1,000: its labelled_rows is 45 spreads off and
    # its accuracy a few (of the 1,000-label windows' spread), but labelled_rows is not
    # judged (a size) and the accuracy is within its sampling error: nothing happened.
    # Fed raw z-scores the forest gave such windows a median of 70 (normal ones 2)
    ts, x, partial = _model_windows(3000, 2500)
    solo = Solo(["accuracy", "labelled_rows", "predictions", "latency_ms"], DetectionConfig())
    scores = solo.update(ts, x)
    forest = scores.detectors["forest"]
    late = np.arange(ts.size) >= 2500
    assert partial.sum() > 50
    assert np.median(forest[partial]) < 10
    assert np.quantile(forest[partial], 0.9) < 50
    assert not scores.anomaly[late].any()


def test_the_forest_claims_no_more_rarity_than_one_in_its_training_rows() -> None:
    # a forest that learnt from n rows can tell a row is unlike all of them, not how
    # much rarer than 1 in n it is: past that, its extrapolated tail is its raw score's
    # ceiling landing wherever the reference's spacing puts it
    history = forest_calibration(DetectorParams(DetectionConfig()))
    packed = np.random.default_rng(2).uniform(0.50, 0.52, 2000)
    calibrate_forest(packed, history, max_decades=np.inf)
    isolated = np.array([0.56])  # far past a tightly packed reference
    assert calibrate_forest(isolated, copy.deepcopy(history), max_decades=np.inf)[0] > 85
    capped = calibrate_forest(isolated, history, max_decades=rarity_cap(4000))[0]
    assert capped == pytest.approx(100 * np.tanh(np.log10(4000) / DECADES_SCALE))
    assert capped < DetectionConfig().threshold
    assert rarity_cap(100) == pytest.approx(2.0) and rarity_cap(0) == 0.0


def test_the_fleet_caps_the_forest_at_the_rows_its_model_learnt_from() -> None:
    # a forest that learnt from 100 rows claims at most 1 in 100 (a score of 50), even
    # for the spike that the same forest taught on more rows scores past 50 (the test
    # above)
    small = CONFIG.model_copy(
        update={"forest": CONFIG.forest.model_copy(update={"train_window": 100})}
    )
    fleet = Fleet(small)
    data = {f"m{i}": _pair(10 + i, 1500) for i in range(4)}
    data["m0"][1][1400, :] += 40
    for key in data:
        fleet.add(key, ["latency", "requests"])
    earlier = fleet.update({key: (ts[:1399], x[:1399]) for key, (ts, x) in data.items()})
    last = fleet.update({key: (ts[1399:], x[1399:]) for key, (ts, x) in data.items()})
    assert fleet.pool.fitted_rows == 100
    ceiling = 100 * np.tanh(2.0 / DECADES_SCALE)
    assert last["m0"].detectors["forest"][1] == pytest.approx(ceiling)
    forest = [s.detectors["forest"] for part in (earlier, last) for s in part.values()]
    assert np.concatenate(forest).max() <= ceiling + 1e-9
    assert last["m0"].anomaly[1]  # the metrics' own detectors still flag the spike


def test_a_one_metric_entity_is_judged_without_the_forest() -> None:
    # its features would be its own z-score again: the forest takes no part there
    fleet = Fleet(CONFIG)
    fleet.add("alone", ["latency"])
    fleet.add("pair", ["latency", "requests"])
    ts, x = _pair(3, 1200)
    scores = fleet.update({"alone": (ts, x[:, :1]), "pair": (ts, x)})
    assert np.isnan(scores["alone"].detectors["forest"]).all()
    assert not np.isnan(scores["pair"].detectors["forest"]).any()
    assert not fleet.entities["alone"].uses("forest") and fleet.entities["pair"].uses("forest")


def test_a_bad_batch_is_refused_before_any_entity_moves() -> None:
    fleet = Fleet(CONFIG)
    for key in ("a", "b"):
        fleet.add(key, ["x"])
    ts, x = series(1, 10)
    fleet.update({"a": (ts[:5], x[:5]), "b": (ts[:5], x[:5])})
    with pytest.raises(ValueError, match="must not go backwards"):
        fleet.update({"a": (ts[5:], x[5:]), "b": (ts[:2], x[:2])})
    assert fleet.update({"a": (ts[5:], x[5:]), "b": (ts[5:], x[5:])})["a"].score.size == 5


@pytest.mark.parametrize("holding", [False, True], ids=["", "episodes held from row 2"])
@pytest.mark.parametrize("sampled", [False, True], ids=["dense reference", "sampled reference"])
def test_the_whole_array_cycle_gives_exactly_the_lone_detectors_numbers(
    sampled: bool, holding: bool
) -> None:
    """One row per entity per cycle takes the fleet's whole-array path; it must agree,
    also where the calibration references keep only every n-th of their older rows, and
    where episodes are held out of them from their second row on."""
    config = DetectionConfig.model_validate(
        {
            "forest": {"enabled": False},
            "limits": [{"metric": "acc*", "min": 0.5}],
            "baseline_window": 100,
            "calibration_window": 200,
            "min_history": 10,
            "damping": 20,
        }
    )
    params = stand_ins(config, sampled=sampled, holding=holding)
    rows = 700
    ts = START + 60 * np.arange(rows)
    rng = np.random.default_rng(5)
    data = {
        "accuracy": rng.normal(0.8, 0.1, (rows, 1)),
        "latency": rng.standard_t(3, (rows, 1)).cumsum(axis=0),
        "cpu": rng.normal(50, 5, (rows, 1)),
        "host": rng.normal(0, 1, (rows, 2)),  # entities of several metrics, with holes
        "node": rng.normal(10, 2, (rows, 3)),
        # a sparse counter: 0 nearly always, judged as counts where its baseline is flat
        "errors": np.where(rng.random((rows, 1)) < 0.01, rng.integers(1, 4, (rows, 1)), 0.0),
    }
    # a gauge that moves in steps and holds each level: rows that hold a level
    steps = np.repeat(rng.integers(2, 6, rows // 50), 50).astype(float)
    data["replicas"] = steps[:, None]
    labels = rng.poisson(120, rows).astype(float)
    # a model's quality windows: accuracy judged on its labelled rows, counts as volumes
    data["model"] = np.column_stack(
        [rng.binomial(labels.astype(int), 0.9) / labels, labels, labels + rng.poisson(30, rows)]
    )
    data["model"][400:420, 0] -= 0.2  # a drop: scored by its sampling error
    # a binary model's F1 and AUC, judged on the effective rows of its positives
    positives = rng.poisson(40, (rows, 2)).astype(float)
    data["binary"] = np.column_stack(
        [rng.normal(0.7, 0.05, rows), rng.normal(0.85, 0.03, rows), positives, labels]
    )
    data["binary"][500:510, :2] -= 0.3
    data["binary"][::11, 3] = np.nan  # no positives count: its F1 and AUC are not scored
    data["cpu"][::50] = np.nan
    data["node"][::7, 1] = np.nan  # a column missing from some rows
    data["model"][::13, 1] = np.nan  # a window without its count: its accuracy is not scored
    fleet = Fleet(params)
    for key, values in data.items():
        fleet.add(key, names_of(key, values))
    reference = fleet.entities["cpu"].only_metric.raw["zscore"]
    assert (reference.stride > 1) is sampled
    got: dict[str, list] = {key: [] for key in data}
    for row in range(rows):
        for key, scores in fleet.update(
            {k: (ts[row : row + 1], v[row : row + 1]) for k, v in data.items()}
        ).items():
            got[key].append(scores)
    assert_like_alone(got, data, ts, params)
    held = sum(m.raw["zscore"].held_rows for d in fleet.entities.values() for m in d._metrics)
    assert held > 0 or not holding  # the held case did hold rows


def stand_ins(config: DetectionConfig, *, sampled: bool, holding: bool) -> DetectorParams:
    """Small stand-ins for the 4,000 dense rows and the sampled rest of a reference, and
    episodes held from their second anomalous row on."""
    reference = {"reference_dense": 50, "reference_sparse": 40, "reference_step": 16}
    return DetectorParams(
        config, **(reference if sampled else {}), **({"holdout_start": 2} if holding else {})
    )


def names_of(key: str, values: np.ndarray) -> list[str]:
    """The metric names of an entity: its key, or one name per column (a model's:
    the predictions source's)."""
    if key == "model":
        return ["accuracy", "labelled_rows", "predictions"]
    if key == "binary":
        return ["f1", "roc_auc", "predicted_positives", "actual_positives", "labelled_rows"]
    return [key] if values.shape[1] == 1 else [f"{key}_{i}" for i in range(values.shape[1])]


def assert_like_alone(
    got: dict[str, list], data: dict[str, np.ndarray], ts: np.ndarray, params: DetectorParams
) -> None:
    """The fleet's scores of each entity, cycle after cycle, are its lone detector's."""
    for key, values in data.items():
        alone = Solo(names_of(key, values), params).update(ts, values)
        for field in ("score", "anomaly", "expected", "metric_scores", "at_once"):
            assert np.array_equal(
                np.concatenate([getattr(s, field) for s in got[key]]),
                getattr(alone, field),
                equal_nan=True,
            ), (key, field)
        for name in ("zscore", "seasonal", "limit"):
            assert np.array_equal(
                np.concatenate([s.detectors[name] for s in got[key]]), alone.detectors[name]
            ), (key, name)


@pytest.mark.parametrize("holding", [False, True], ids=["", "episodes held from row 2"])
@pytest.mark.parametrize("sampled", [False, True], ids=["dense reference", "sampled reference"])
def test_a_cycle_that_fell_behind_takes_the_whole_array_path_row_by_row(
    sampled: bool, holding: bool
) -> None:
    """A daemon that fell behind hands each series several rows: up to LAYERS of them go
    through the whole-array path one layer at a time, more go one entity at a time; the
    numbers are the lone detector's either way, whatever mix of row counts a cycle has."""
    from anomon.detect.fleet import LAYERS

    config = DetectionConfig.model_validate(
        {
            "forest": {"enabled": False},
            "baseline_window": 100,
            "calibration_window": 200,
            "min_history": 10,
            "damping": 20,
        }
    )
    params = stand_ins(config, sampled=sampled, holding=holding)
    rows = 600
    ts = START + 60 * np.arange(rows)
    rng = np.random.default_rng(9)
    data = {  # entities of one to three metrics
        f"latency_{i}": rng.standard_t(3, (rows, 1 + i % 3)).cumsum(axis=0) for i in range(6)
    }
    fleet = Fleet(params)
    for key, values in data.items():
        fleet.add(key, names_of(key, values))
    got: dict[str, list] = {key: [] for key in data}
    cursor = dict.fromkeys(data, 0)
    while any(position < rows for position in cursor.values()):
        cycle = {}
        for i, key in enumerate(data):  # 1 .. LAYERS + 2 rows, different per series
            size = 1 + (i + cursor[key]) % (LAYERS + 2)
            start = cursor[key]
            if start < rows:
                cycle[key] = (ts[start : start + size], data[key][start : start + size])
                cursor[key] = start + size
        for key, scores in fleet.update(cycle).items():
            got[key].append(scores)
    assert_like_alone(got, data, ts, params)
    held = sum(m.raw["zscore"].held_rows for d in fleet.entities.values() for m in d._metrics)
    assert held > 0 or not holding  # the held case did hold rows


def test_the_series_that_drive_an_entity_anomaly_are_named() -> None:
    fleet = Fleet(CONFIG)
    rng = np.random.default_rng(3)
    rows = 900
    ts = START + 60 * np.arange(rows)
    values = 100 + rng.normal(0, 1, (rows, 4))
    values[850, 2] += 30  # one metric far out
    values[870, [0, 1]] += 12  # two at once
    values[880, 3] = np.nan  # a column missing: not a contributor, not a failure
    fleet.add("host", ["cpu", "memory", "disk", "net"])
    found = fleet.update({"host": (ts, values)})["host"]
    drivers = found.contributors(CONFIG.threshold)
    assert drivers.shape == (rows, 4)
    assert found.anomaly[850] and drivers[850].tolist() == [False, False, True, False]
    assert found.anomaly[870] and drivers[870, :2].all() and not drivers[870, 2:].any()
    assert not drivers[~found.anomaly].any()  # normal rows have none
    assert np.isnan(found.metric_scores[880, 3]) and np.isfinite(found.score[880])
