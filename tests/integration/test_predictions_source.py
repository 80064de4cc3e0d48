"""The predictions source on real prediction logs: JSONL and CSV files, SQLite and
PostgreSQL tables, with labels that arrive late."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn import metrics
from sqlalchemy import text

from anomon import store
from anomon.config import PredictionsSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources import PartialCollection, PredictionsSource
from anomon.timeutil import to_epoch

HOUR = 3600
START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())  # a window boundary
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


_opened: list[PredictionsSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _source(**extra: Any) -> PredictionsSource:
    config = PredictionsSourceConfig.model_validate(
        {"name": "quality", "kind": "predictions", "min_labels": 10, **extra}
    )
    source = PredictionsSource(config, open_database=store.open_database, clock=lambda: NOW)
    _opened.append(source)
    return source


def _log(
    seed: int, hours: int, per_hour: int, models: tuple[str, ...] = ("churn",)
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        for hour in range(hours):
            for i in range(per_hour):
                truth = int(rng.integers(0, 2))
                score = float(np.clip(truth * 0.5 + rng.random() * 0.6, 0.01, 0.99))
                rows.append(
                    {
                        "ts": START + hour * HOUR + i * (HOUR // per_hour),
                        "model": model,
                        "version": "v3",
                        "prediction": int(score > 0.5),
                        "label": truth,
                        "score": round(score, 4),
                    }
                )
    return rows


def _by_key(samples: list[Sample]) -> dict[tuple[str, str, int], float]:
    return {(s.key.metric, json.loads(s.key.labels)["model"], s.ts): s.value for s in samples}


def _quality(samples: list[Sample]) -> list[Sample]:
    """The samples but the histograms (those come for every window that is over)."""
    return [s for s in samples if s.info.kind != "histogram"]


def _write_jsonl(path: Path, rows: list[dict[str, Any]], mode: str = "w") -> None:
    with path.open(mode, encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)


def test_it_computes_each_windows_quality_like_sklearn(tmp_path: Path) -> None:
    rows = _log(seed=1, hours=3, per_hour=60, models=("churn", "fraud"))
    path = tmp_path / "predictions.jsonl"
    _write_jsonl(path, rows)
    samples = _source(path=str(path), score="score").collect(NOW)
    got = _by_key(samples)
    window = [
        r for r in rows if r["model"] == "fraud" and START + HOUR <= r["ts"] < START + 2 * HOUR
    ]
    y = [r["label"] for r in window]
    p = [r["prediction"] for r in window]
    s = [r["score"] for r in window]
    at = ("fraud", START + HOUR)
    assert got[("accuracy", *at)] == pytest.approx(metrics.accuracy_score(y, p))
    assert got[("precision", *at)] == pytest.approx(metrics.precision_score(y, p, zero_division=0))
    assert got[("recall", *at)] == pytest.approx(metrics.recall_score(y, p))
    assert got[("f1", *at)] == pytest.approx(metrics.f1_score(y, p))
    assert got[("log_loss", *at)] == pytest.approx(metrics.log_loss(y, s))
    assert got[("roc_auc", *at)] == pytest.approx(metrics.roc_auc_score(y, s))
    assert got[("predictions", *at)] == 60
    assert got[("labelled_rows", *at)] == 60
    positives = [r for r in window if r["label"] == 1]
    assert got[("actual_positives", *at)] == len(positives)  # what recall is measured on
    assert got[("predicted_positives", *at)] == sum(p)  # and precision
    before_labels = ("estimated_", "estimation", "drift_", "mean_confidence", "low_margin")
    histograms = [s for s in samples if s.info.kind == "histogram"]
    samples = [s for s in samples if s.info.kind != "histogram"]
    # every window is older than label_delay: how its labels arrived (all of them)
    assert got[("label_coverage", *at)] == 1.0
    assert got[("settled_predictions", *at)] == 60
    arrival = [s for s in samples if s.key.metric in ("label_coverage", "settled_predictions")]
    assert len(arrival) == 2 * 3 * 2
    samples = [s for s in samples if s not in arrival]
    realised = [s for s in samples if not s.key.metric.startswith(before_labels)]
    assert len(realised) == 2 * 3 * 10  # two models, three windows, ten metrics
    # and, against its own settled windows: four estimates, the gap and six drift numbers
    assert len(samples) - len(realised) == 2 * 3 * 11
    # and each window's rows per score bin (10) and per predicted class (2)
    assert len(histograms) == 2 * 3 * 12
    one = samples[0]
    assert set(json.loads(one.key.labels)) == {"model", "version"}
    assert one.info.kind == "quality"


def test_it_waits_for_labels_then_recomputes_a_window_when_more_arrive(tmp_path: Path) -> None:
    db = tmp_path / "mlops.db"
    rows = _log(seed=2, hours=1, per_hour=40)
    now = START + 2 * HOUR  # the window is over but younger than label_delay
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE predictions (ts INTEGER, model TEXT, version TEXT, "
            "prediction INTEGER, label INTEGER, score REAL)"
        )
        conn.executemany(
            "INSERT INTO predictions VALUES (:ts, :model, :version, :prediction, NULL, :score)",
            rows,
        )
    source = _source(
        url=f"sqlite:///{db}",
        query="SELECT * FROM predictions WHERE ts >= :since AND ts < :until",
        min_labels=20,
    )
    at = datetime.fromtimestamp(now, UTC)
    assert _quality(source.collect(at)) == []  # no labels yet, and not old enough anyway

    def label(first: int) -> None:
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "UPDATE predictions SET label = ? WHERE ts = ?",
                [(r["label"], r["ts"]) for r in rows[:first]],
            )

    label(25)
    early = _by_key(source.collect(at))
    assert early[("labelled_rows", "churn", START)] == 25
    label(40)
    late = _by_key(source.collect(at))
    assert late[("labelled_rows", "churn", START)] == 40
    # younger than label_delay: how its labels arrived is not known yet
    assert not [key for key in late if key[0] in ("label_coverage", "settled_predictions")]
    truth = [r["label"] for r in rows]
    assert late[("accuracy", "churn", START)] == pytest.approx(
        metrics.accuracy_score(truth, [r["prediction"] for r in rows])
    )

    # stored through the store, the recomputed window replaces its samples
    engine = store.open_engine(f"sqlite:///{tmp_path / 'anomon.db'}")
    store.upgrade(engine)
    registry = store.SeriesRegistry()
    for collected in (source.collect(at), source.collect(at)):
        store.save_collection(
            engine,
            registry,
            source="quality",
            started_at=at,
            finished_at=at,
            samples=collected,
            replace=True,
        )
    label(40)
    with engine.connect() as conn:
        stored = (
            conn.exec_driver_sql(
                "SELECT value FROM samples JOIN series ON series.id = series_id "
                "WHERE metric = 'labelled_rows'"
            )
            .scalars()
            .all()
        )
    assert stored == [40.0]
    engine.dispose()


def test_it_reports_a_window_older_than_label_delay_with_the_labels_it_has(
    tmp_path: Path,
) -> None:
    rows = _log(seed=3, hours=1, per_hour=30)
    for row in rows[5:]:
        row["label"] = None
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    young = datetime.fromtimestamp(START + 3 * HOUR, UTC)
    assert _quality(_source(path=str(path)).collect(young)) == []  # 5 labels < min_labels
    old = datetime.fromtimestamp(START + 26 * HOUR, UTC)
    got = _by_key(_source(path=str(path)).collect(old))
    assert got[("labelled_rows", "churn", START)] == 5
    assert got[("predictions", "churn", START)] == 30


def test_a_bad_csv_line_or_an_endless_line_costs_itself_alone(tmp_path: Path) -> None:
    """One CSV line with a field too many, or a byte that is no UTF-8, threw the whole
    read away (and the tail had moved past its good lines); a line that never ends grew
    in memory without bound (30 MB a collection). Each now costs only itself, named."""
    path = tmp_path / "predictions.csv"
    header = "ts,model,version,prediction,label\n"
    good = [f"{START + i},churn,v1,1,{i % 2}\n" for i in range(30)]
    good[7] = f"{START + 7},churn,v1,1,1,extra\n"
    raw = (header + "".join(good)).encode()
    raw = raw.replace(f"{START + 12},churn".encode(), f"{START + 12},ch\xe9rn".encode("latin-1"))
    path.write_bytes(raw)
    source = _source(path=str(path), min_labels=5)
    with pytest.raises(
        PartialCollection, match=r"1 line\(s\) with a wrong number of fields"
    ) as got:
        source.collect(NOW)
    counts = _by_key(got.value.samples)
    assert counts[("predictions", "churn", START)] == 28  # all but the two bad lines
    source.saved()
    endless = tmp_path / "endless.jsonl"
    rows = _log(seed=3, hours=1, per_hour=20)
    _write_jsonl(endless, rows[:10])
    tail = _source(path=str(endless), min_labels=5)
    tail.collect(NOW)
    tail.saved()
    with endless.open("ab") as out:  # a writer that never ends its line: 3 MiB of it
        out.write(b'{"ts": ' + b" " * (3 * 2**20))
    with pytest.raises(SourceError, match=r"1 line\(s\) longer than 1 MiB skipped"):
        tail.collect(NOW)  # dropped once past 1 MiB, named; the rest of it goes too
    with endless.open("a", encoding="utf-8") as out:
        out.write("}\n" + "".join(json.dumps(row) + "\n" for row in rows[10:]))
    assert _by_key(tail.collect(NOW))[("predictions", "churn", START)] == 20


def test_it_tails_a_growing_csv_across_partial_lines_rotation_and_truncation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "predictions.csv"
    header = "ts,model,version,prediction,label\n"

    def lines(hour: int, n: int) -> str:
        return "".join(f"{START + hour * HOUR + i},churn,v1,1,{i % 2}\n" for i in range(n))

    path.write_text(header + lines(0, 20) + lines(1, 10)[:-3], encoding="utf-8")
    source = _source(path=str(path), min_labels=5)
    at = datetime.fromtimestamp(START + 5 * HOUR, UTC)
    got = _by_key(source.collect(at))
    assert got[("predictions", "churn", START)] == 20
    assert got[("predictions", "churn", START + HOUR)] == 9  # the partial line waits
    with path.open("a", encoding="utf-8") as out:
        out.write(lines(1, 10)[-3:] + lines(2, 4))
    got = _by_key(source.collect(at))
    assert got[("predictions", "churn", START + HOUR)] == 10
    assert got[("accuracy", "churn", START)] == 0.5

    os.rename(path, tmp_path / "predictions.csv.1")  # rotated: the new file has a header
    path.write_text(header + lines(3, 6), encoding="utf-8")
    got = _by_key(source.collect(at))
    assert got[("predictions", "churn", START)] == 20  # kept from the old file
    assert got[("predictions", "churn", START + 3 * HOUR)] == 6

    path.write_text(header + lines(4, 7), encoding="utf-8")  # truncated and rewritten
    got = _by_key(source.collect(at))
    assert {ts for _, _, ts in got} == {START + 4 * HOUR}  # the old rows are gone
    assert got[("predictions", "churn", START + 4 * HOUR)] == 7


def test_it_skips_and_counts_rows_it_cannot_read(tmp_path: Path) -> None:
    rows = _log(seed=4, hours=1, per_hour=20)
    rows[0]["ts"] = "yesterday-ish"
    rows[1]["score"] = 1.7
    rows[2]["prediction"] = None
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(PartialCollection) as caught:
        _source(path=str(path), score="score").collect(NOW)
    message = str(caught.value)
    assert "1 row(s) with an unreadable ts" in message
    assert "1 row(s) with a score that is not a number in [0, 1]" in message
    assert "1 row(s) with no prediction" in message
    got = _by_key(caught.value.samples)
    assert got[("predictions", "churn", START)] == 17


def test_a_stray_class_in_a_binary_log_is_skipped_not_a_third_class(tmp_path: Path) -> None:
    """One row predicting 2 (or a label "n/a") among a binary model's rows is skipped and
    named; it stopped every later collection before (a third class: binary refused)."""
    rows = _log(seed=6, hours=2, per_hour=30)
    rows[5]["prediction"] = 2
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows[:40])
    source = _source(path=str(path), score="score")
    with pytest.raises(
        PartialCollection, match=r"1 row\(s\) with a class outside \[0, 1\]"
    ) as first:
        source.collect(NOW)
    window = [r for r in rows[:30] if r is not rows[5]]
    got = _by_key(first.value.samples)
    assert got[("accuracy", "churn", START)] == pytest.approx(
        metrics.accuracy_score([r["label"] for r in window], [r["prediction"] for r in window])
    )
    source.saved()
    later = rows[40:]
    later[0]["label"] = "n/a"
    _write_jsonl(path, later, mode="a")
    with pytest.raises(PartialCollection, match=r"1 row\(s\) with a class outside") as second:
        source.collect(NOW + timedelta(minutes=1))
    window = [r for r in rows[30:] if r is not later[0]]
    got = _by_key(second.value.samples)
    assert got[("labelled_rows", "churn", START + HOUR)] == len(window)
    assert got[("accuracy", "churn", START + HOUR)] == pytest.approx(
        metrics.accuracy_score([r["label"] for r in window], [r["prediction"] for r in window])
    )


def test_it_explains_missing_columns_and_too_many_classes_for_binary(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, [{"ts": START, "prediction": "cat", "label": "dog"}])
    with pytest.raises(
        SourceError, match="no column 'model', 'version'; found: label, ts, prediction"
    ):
        _source(path=str(path)).collect(NOW)
    _write_jsonl(
        path, [{"ts": START + i, "prediction": c, "label": c} for i, c in enumerate("abc")]
    )
    with pytest.raises(SourceError, match="set average = 'macro' or 'weighted'"):
        _source(path=str(path), group_by=[]).collect(NOW)
    missing = _source(path=str(tmp_path / "none.jsonl"))
    with pytest.raises(SourceError, match=r"none\.jsonl: no such file"):
        missing.collect(NOW)


def test_it_scores_multiclass_logs_with_class_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    classes = ["cat", "dog", "eel"]
    rows = []
    for i in range(90):
        truth = int(rng.integers(0, 3))
        raw = rng.random(3) + np.eye(3)[truth]
        p = raw / raw.sum()
        rows.append(
            {
                "ts": START + i,
                "prediction": classes[int(np.argmax(p))],
                "label": classes[truth],
                **{f"p_{c}": float(p[k]) for k, c in enumerate(classes)},
            }
        )
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    source = _source(
        path=str(path),
        group_by=[],
        average="macro",
        class_scores={c: f"p_{c}" for c in classes},
    )
    got = {s.key.metric: s.value for s in source.collect(NOW)}
    y = [r["label"] for r in rows]
    p = [r["prediction"] for r in rows]
    proba = [[r[f"p_{c}"] for c in classes] for r in rows]
    assert got["f1"] == pytest.approx(metrics.f1_score(y, p, average="macro"))
    assert got["log_loss"] == pytest.approx(metrics.log_loss(y, proba, labels=classes))
    assert got["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    )


def test_it_backfills_past_windows_in_chunks(tmp_path: Path) -> None:
    rows = _log(seed=6, hours=30, per_hour=12)
    db = tmp_path / "mlops.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE p (ts INTEGER, model TEXT, version TEXT, "
            "prediction INTEGER, label INTEGER)"
        )
        conn.executemany("INSERT INTO p VALUES (:ts, :model, :version, :prediction, :label)", rows)
    source = _source(
        url=f"sqlite:///{db}",
        query="SELECT * FROM p WHERE ts >= :since AND ts < :until",
        lookback="2h",
    )
    since = datetime.fromtimestamp(START + 5, UTC)
    chunks = source.backfill_chunks(since, NOW)
    assert chunks[0][0] == datetime.fromtimestamp(START, UTC)  # aligned to a window
    assert all(b - a <= timedelta(days=1) for a, b in chunks)
    samples = [s for a, b in chunks for s in source.collect_range(a, b)]
    windows = {
        s.ts
        for s in samples
        if s.key == SeriesKey.of("accuracy", {"model": "churn", "version": "v3"})
    }
    assert windows == {START + h * HOUR for h in range(30)}


@pytest.mark.postgres
def test_it_reads_a_postgresql_prediction_table(postgres_schema_url: str) -> None:
    import psycopg

    rows = _log(seed=7, hours=2, per_hour=15)
    libpq = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE predictions (at timestamptz, model text, version text, "
            "prediction boolean, label boolean)"
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO predictions VALUES (to_timestamp(%s), %s, %s, %s, %s)",
                [
                    (r["ts"], r["model"], r["version"], bool(r["prediction"]), bool(r["label"]))
                    for r in rows
                ],
            )
    source = _source(
        url=postgres_schema_url,
        query="SELECT * FROM predictions WHERE at >= to_timestamp(:since)",
        timestamp="at",
    )
    got = _by_key(source.collect(NOW))
    first = rows[:15]
    assert got[("recall", "churn", START)] == pytest.approx(
        metrics.recall_score([r["label"] for r in first], [r["prediction"] for r in first])
    )
    source.close()


def test_labels_written_into_their_rows_in_place_are_read(tmp_path: Path) -> None:
    # late labels written into their rows, in place: the file's first bytes stay the
    # same and it grows, but the rows already read changed
    path = tmp_path / "predictions.csv"
    header = "ts,model,version,prediction,label\n"
    rows = [f"{START + i * 60},churn,v1,1," for i in range(30)]
    early = [row + str(i % 2) for i, row in enumerate(rows[:20])]
    path.write_text(header + "\n".join(early + rows[20:]) + "\n", encoding="utf-8")
    assert len(header + "\n".join(early)) > 256  # past the tail's start fingerprint
    source = _source(path=str(path), min_labels=5)
    at = datetime.fromtimestamp(START + 5 * HOUR, UTC)
    assert _by_key(source.collect(at))[("labelled_rows", "churn", START)] == 20
    labelled = [row + str(i % 2) for i, row in enumerate(rows)]
    with path.open("r+", encoding="utf-8") as out:
        out.write(header + "\n".join(labelled) + "\n")
    got = _by_key(source.collect(at))  # no unreadable row: a clean collection
    assert got[("predictions", "churn", START)] == 30  # each row once
    assert got[("labelled_rows", "churn", START)] == 30
    assert got[("accuracy", "churn", START)] == 0.5


def test_labels_written_to_a_copy_renamed_over_the_log_count_each_row_once(
    tmp_path: Path,
) -> None:
    # the other way to fill in late labels: a new file, renamed over the old one
    path = tmp_path / "predictions.csv"
    header = "ts,model,version,prediction,label\n"
    rows = [f"{START + i * 60},churn,v1,1," for i in range(30)]
    early = [row + str(i % 2) for i, row in enumerate(rows[:20])]
    path.write_text(header + "\n".join(early + rows[20:]) + "\n", encoding="utf-8")
    source = _source(path=str(path), min_labels=5)
    at = datetime.fromtimestamp(START + 5 * HOUR, UTC)
    assert _by_key(source.collect(at))[("predictions", "churn", START)] == 30
    copy = tmp_path / "predictions.csv.tmp"
    copy.write_text(header + "\n".join(r + str(i % 2) for i, r in enumerate(rows)) + "\n")
    os.replace(copy, path)
    got = _by_key(source.collect(at))
    assert got[("predictions", "churn", START)] == 30  # each row once (was 60)
    assert got[("labelled_rows", "churn", START)] == 30


def test_a_regression_log_gives_each_windows_errors_with_late_targets(tmp_path: Path) -> None:
    """task = "regression": MAE, RMSE, MAPE, R² and bias per window, from the labelled
    rows only (a target not known yet is empty); an unreadable prediction is counted."""
    rng = np.random.default_rng(7)
    rows = []
    for hour in range(2):
        for i in range(50):
            target = float(rng.normal(200, 30))
            rows.append(
                {
                    "ts": START + hour * HOUR + i * 60,
                    "model": "eta",
                    "version": "v1",
                    "prediction": round(target + float(rng.normal(5, 10)), 3),
                    "label": None if i >= 40 else round(target, 3),  # late targets
                }
            )
    rows[3]["prediction"] = "n/a"
    path = tmp_path / "eta.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(PartialCollection) as caught:
        _source(path=str(path), task="regression").collect(NOW)
    assert "1 row(s) with a prediction that is not a number" in str(caught.value)
    got = {(s.key.metric, s.ts): s.value for s in caught.value.samples}  # model eta, two windows
    window = [r for r in rows[:50] if r["label"] is not None and r["prediction"] != "n/a"]
    y = [r["label"] for r in window]
    p = [r["prediction"] for r in window]
    assert got[("mae", START)] == pytest.approx(metrics.mean_absolute_error(y, p))
    assert got[("rmse", START)] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, p)))
    assert got[("mape", START)] == pytest.approx(metrics.mean_absolute_percentage_error(y, p))
    assert got[("r2", START)] == pytest.approx(metrics.r2_score(y, p))
    assert got[("bias", START)] == pytest.approx(float(np.mean(np.subtract(p, y))))
    assert (got[("predictions", START)], got[("labelled_rows", START)]) == (49, 39)
    assert ("accuracy", START) not in got
    with pytest.raises(ValidationError, match="score and class_scores are for classification"):
        _source(path=str(path), task="regression", score="label")


def test_labels_from_a_file_of_their_own_are_joined_by_id(tmp_path: Path) -> None:
    """labels_path: the predictions carry an id and no label; the labels arrive later in
    a file of their own (id, label), in any order, a corrected label after the first;
    each window's metrics count every labelled prediction once."""
    rows = _log(seed=11, hours=2, per_hour=30)
    predictions = [{**r, "prediction_id": f"p{i}"} for i, r in enumerate(rows)]
    for row in predictions:
        del row["label"]
    path, labels = tmp_path / "predictions.jsonl", tmp_path / "labels.csv"
    _write_jsonl(path, predictions)
    labels.write_text("prediction_id,label\n", encoding="utf-8")
    source = _source(path=str(path), id="prediction_id", labels_path=str(labels))
    got = _by_key(source.collect(NOW))
    assert ("accuracy", "churn", START) not in got  # no labels yet: not ready
    # the labels of the first hour, newest first, one of them wrong and then corrected
    first = rows[:30]
    lines = [f"p{i},{1 - first[i]['label'] if i == 3 else first[i]['label']}" for i in range(30)]
    with labels.open("a", encoding="utf-8") as out:
        out.write("\n".join(reversed(lines)) + "\n")
        out.write(f"p3,{first[3]['label']}\n")  # the correction: the latest wins
        out.write("p999,1\n")  # a label of a prediction never seen: ignored
    got = _by_key(source.collect(NOW))
    y, p = [r["label"] for r in first], [r["prediction"] for r in first]
    assert got[("accuracy", "churn", START)] == pytest.approx(metrics.accuracy_score(y, p))
    assert got[("labelled_rows", "churn", START)] == 30
    assert got[("predictions", "churn", START)] == 30
    assert ("accuracy", "churn", START + HOUR) not in got  # its labels have not come
    # the next collection reads no new lines and still knows every label
    again = _by_key(source.collect(NOW))
    assert again[("accuracy", "churn", START)] == got[("accuracy", "churn", START)]


def test_a_labels_feed_needs_an_id_and_its_own_kind_of_log(tmp_path: Path) -> None:
    for extra, said in (
        ({"path": "p.jsonl", "labels_path": "l.csv"}, "a labels feed needs id"),
        ({"path": "p.jsonl", "id": "pid", "labels_query": "SELECT 1"}, "labels_query goes"),
    ):
        with pytest.raises(ValidationError, match=said):
            _source(**extra)


@pytest.mark.postgres
def test_labels_from_a_postgresql_table_of_their_own_are_joined_by_id(
    postgres_schema_url: str,
) -> None:
    import psycopg

    rows = _log(seed=12, hours=1, per_hour=20)
    libpq = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE served (id bigint, at timestamptz, model text, version text, "
            "prediction int)"
        )
        conn.execute("CREATE TABLE outcomes (id bigint, label int, at timestamptz)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO served VALUES (%s, to_timestamp(%s), %s, %s, %s)",
                [
                    (i, r["ts"], r["model"], r["version"], r["prediction"])
                    for i, r in enumerate(rows)
                ],
            )
            cursor.executemany(  # 15 of the 20 are labelled, in another order
                "INSERT INTO outcomes VALUES (%s, %s, now())",
                [(i, rows[i]["label"]) for i in reversed(range(15))],
            )
    source = _source(
        url=postgres_schema_url,
        query="SELECT * FROM served WHERE at >= to_timestamp(:since)",
        id="id",
        labels_query="SELECT id, label FROM outcomes",
        timestamp="at",
    )
    got = _by_key(source.collect(NOW))
    y = [r["label"] for r in rows[:15]]
    p = [r["prediction"] for r in rows[:15]]
    assert got[("accuracy", "churn", START)] == pytest.approx(metrics.accuracy_score(y, p))
    assert (got[("labelled_rows", "churn", START)], got[("predictions", "churn", START)]) == (
        15,
        20,
    )
    source.close()


def test_performance_is_estimated_before_labels_within_a_tolerance(tmp_path: Path) -> None:
    """CBPE: a calibrated binary model's scores, calibrated on the windows whose labels
    are in (older than label_delay), estimate accuracy, precision, recall and F1 of the
    windows with no label yet — also of one where the scores shifted towards 0.5 and
    the model got worse; once labels land, the gap is a series of its own."""
    rng = np.random.default_rng(21)
    reference_hours, recent_hours, per_hour = 36, 6, 600
    rows, hidden = [], {}
    recent_start = int(NOW.timestamp()) - recent_hours * HOUR
    for hour in range(reference_hours + recent_hours):
        at = (
            START + hour * HOUR
            if hour < reference_hours
            else recent_start + (hour - reference_hours) * HOUR
        )
        shifted = hour == reference_hours + recent_hours - 1  # the last window: harder cases
        score = rng.beta(2, 2, per_hour) if shifted else rng.beta(0.5, 0.5, per_hour)
        truth = (rng.random(per_hour) < score).astype(int)  # calibrated: P(y=1 | s) = s
        labelled = hour < reference_hours
        for i in range(per_hour):
            rows.append(
                {
                    "ts": at + i * (HOUR // per_hour),
                    "model": "churn",
                    "version": "v3",
                    "prediction": int(score[i] > 0.5),
                    "label": int(truth[i]) if labelled else None,
                    "score": round(float(score[i]), 4),
                }
            )
        hidden[at] = (truth, (score > 0.5).astype(int))
    path = tmp_path / "predictions.jsonl"
    _write_jsonl(path, rows)
    got = _by_key(_source(path=str(path), score="score", min_labels=100).collect(NOW))
    for at in range(recent_start, recent_start + recent_hours * HOUR, HOUR):
        y, p = hidden[at]
        assert ("accuracy", "churn", at) not in got  # no labels: no realised metrics
        for name, realised, tolerance in (
            ("accuracy", metrics.accuracy_score(y, p), 0.03),
            ("precision", metrics.precision_score(y, p), 0.05),
            ("recall", metrics.recall_score(y, p), 0.05),
            ("f1", metrics.f1_score(y, p), 0.05),
        ):
            assert got[(f"estimated_{name}", "churn", at)] == pytest.approx(realised, abs=tolerance)
    last = recent_start + (recent_hours - 1) * HOUR
    assert (
        got[("estimated_accuracy", "churn", last)]
        < got[("estimated_accuracy", "churn", START)] - 0.1
    )
    # the scores of the last window moved towards 0.5: its drift is far above the others'
    assert got[("drift_js", "churn", last)] > got[("drift_js", "churn", recent_start)] + 0.1
    assert got[("low_margin_share", "churn", last)] > 2 * got[("low_margin_share", "churn", START)]
    gaps = [value for (name, _, _), value in got.items() if name == "estimation_gap"]
    assert len(gaps) == reference_hours and max(abs(g) for g in gaps) < 0.05


def test_ids_are_joined_as_text_the_latest_label_winning() -> None:
    from anomon.sources.predictions import join_labels

    predictions = pd.DataFrame({"pid": [1, 2, "3", 4], "prediction": [1, 0, 1, 0]})
    labels = pd.DataFrame({"pid": [None, 2, 3.0, 1, "1"], "label": [1, 1, 0, 1, 0]})
    joined, kept = join_labels(predictions, labels, "pid", "label")
    assert joined["label"].tolist() == [0, 1, 0, None]  # "1" after 1; 3.0 is "3"
    assert kept["pid"].tolist() == [2, 3.0, 1, "1"]  # a label without an id is dropped


def test_a_tailed_log_returns_a_window_again_only_when_it_changes_once_stored(
    tmp_path: Path,
) -> None:
    """A file log's collection returns the windows that changed since the last stored
    one: new rows, late labels, a window that closed; what was not stored comes again."""
    rows = _log(seed=21, hours=3, per_hour=30, models=("churn", "fraud"))
    predictions = [{**r, "prediction_id": f"p{i}"} for i, r in enumerate(rows)]
    late = {row["prediction_id"]: row.pop("label") for row in predictions[30:60]}  # churn h1
    path, labels = tmp_path / "p.jsonl", tmp_path / "labels.csv"
    _write_jsonl(path, predictions)
    labels.write_text("prediction_id,label\n", encoding="utf-8")
    source = _source(path=str(path), id="prediction_id", labels_path=str(labels), score="score")
    at = datetime.fromtimestamp(START + 3 * HOUR + 60, UTC)
    first = _by_key(source.collect(at))
    assert {ts for (_, _, ts) in first} == {START, START + HOUR, START + 2 * HOUR}
    assert ("accuracy", "churn", START + HOUR) not in first  # its labels are late
    assert first == _by_key(source.collect(at))  # not stored: all of it again
    source.saved()
    assert source.collect(at) == []  # stored, and nothing changed

    with labels.open("a", encoding="utf-8") as out:
        out.writelines(f"{name},{label}\n" for name, label in late.items())
    got = _by_key(source.collect(at))
    assert {(model, ts) for (_, model, ts) in got} == {
        ("churn", START + HOUR),
        ("fraud", START + HOUR),
    }  # the window of the late labels (of every group) and no other
    hour = [r for r in rows if START + HOUR <= r["ts"] < START + 2 * HOUR]
    churn = [r for r in hour if r["model"] == "churn"]
    expected = metrics.accuracy_score([r["label"] for r in churn], [r["prediction"] for r in churn])
    assert got[("accuracy", "churn", START + HOUR)] == pytest.approx(expected)
    assert got[("labelled_rows", "churn", START + HOUR)] == 30
    source.saved()

    fourth = [{**r, "ts": r["ts"] + 3 * HOUR, "prediction_id": f"q{i}"} for i, r in enumerate(rows)]
    _write_jsonl(path, [r for r in fourth if r["ts"] < START + 4 * HOUR], mode="a")
    assert source.collect(at) == []  # the new hour is still open
    later = datetime.fromtimestamp(START + 4 * HOUR + 60, UTC)
    got = _by_key(source.collect(later))
    assert {ts for (_, _, ts) in got} == {START + 3 * HOUR}  # it closed in between
    assert got[("predictions", "fraud", START + 3 * HOUR)] == 30


def test_a_collection_that_could_not_be_stored_is_returned_by_the_next_one(
    tmp_path: Path,
) -> None:
    """Through the collection job: a store that refuses the write loses no window; the
    next run stores every one of them."""
    from anomon.service.jobs import CollectJob

    path = tmp_path / "p.jsonl"
    _write_jsonl(path, _log(seed=22, hours=2, per_hour=30))
    engine = store.open_engine(f"sqlite:///{tmp_path / 'anomon.db'}")
    store.upgrade(engine)
    at = datetime.fromtimestamp(START + 2 * HOUR + 60, UTC)
    source = _source(path=str(path))
    job = CollectJob(source, engine, store.SeriesRegistry(), clock=lambda: at)

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one())

    with engine.begin() as conn:  # the table is gone: every write fails
        conn.exec_driver_sql("ALTER TABLE samples RENAME TO samples_away")
    job()
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE samples_away RENAME TO samples")
    assert stored() == 0
    job()
    assert stored() == len(_source(path=str(path)).collect(at)) > 0
    assert source.collect(at) == []  # stored: nothing is returned again
    engine.dispose()


def test_a_log_replaced_by_a_copy_keeps_the_labels_of_its_feed(tmp_path: Path) -> None:
    """Predictions rewritten to a copy renamed over the log (with one more row): each
    row counts once and the labels already read from the feed still apply."""
    rows = _log(seed=23, hours=1, per_hour=30)
    predictions = [{**r, "prediction_id": f"p{i}"} for i, r in enumerate(rows)]
    for row in predictions:
        del row["label"]
    path, labels = tmp_path / "p.jsonl", tmp_path / "labels.csv"
    _write_jsonl(path, predictions[:29])
    labels.write_text(
        "prediction_id,label\n" + "".join(f"p{i},{r['label']}\n" for i, r in enumerate(rows)),
        encoding="utf-8",
    )
    source = _source(path=str(path), id="prediction_id", labels_path=str(labels))
    assert _by_key(source.collect(NOW))[("labelled_rows", "churn", START)] == 29
    source.saved()
    copy = tmp_path / "p.jsonl.tmp"
    _write_jsonl(copy, predictions)
    os.replace(copy, path)
    got = _by_key(source.collect(NOW))
    assert got[("predictions", "churn", START)] == 30
    assert got[("labelled_rows", "churn", START)] == 30  # the feed's labels, kept
    y, p = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert got[("accuracy", "churn", START)] == pytest.approx(metrics.accuracy_score(y, p))


def test_each_windows_histograms_are_stored_and_compared_in_plain_sql(
    tmp_path: Path, engine: store.Engine
) -> None:
    """Rows per score bin and per predicted class of every window, stored as samples of
    kind histogram (never scored); two windows compared with SQL alone, on SQLite and
    PostgreSQL: the PSI of their score histograms, as numpy computes it."""
    rows = _log(seed=24, hours=2, per_hour=200)
    for row in rows[200:]:  # the second hour's scores crowd towards 0.5
        row["score"] = round(0.5 + (row["score"] - 0.5) * 0.3, 4)
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    samples = _source(path=str(path), score="score").collect(NOW)
    store.save_collection(
        engine, store.SeriesRegistry(), source="quality", started_at=NOW, finished_at=NOW,
        samples=samples, replace=True,
    )  # fmt: skip
    labels = "series.labels::json->>'bin'" if engine.dialect.name == "postgresql" else (
        "json_extract(series.labels, '$.bin')"
    )  # fmt: skip
    query = f"""
        SELECT {labels} AS bin, a.value AS first, b.value AS second
        FROM series
        JOIN samples a ON a.series_id = series.id AND a.ts = :first
        JOIN samples b ON b.series_id = series.id AND b.ts = :second
        WHERE series.metric = 'score_bin_rows' ORDER BY bin"""
    with engine.connect() as conn:
        table = conn.exec_driver_sql(
            query.replace(":first", str(START)).replace(":second", str(START + HOUR))
        ).all()
        kinds = conn.exec_driver_sql(
            "SELECT DISTINCT kind FROM series "
            "WHERE metric IN ('score_bin_rows', 'predicted_class_rows')"
        ).all()
    assert [bin for bin, _, _ in table] == [f"{b / 10:.1f}-{(b + 1) / 10:.1f}" for b in range(10)]
    for hour, column in ((0, 1), (1, 2)):
        scores = [r["score"] for r in rows[200 * hour : 200 * (hour + 1)]]
        expected, _ = np.histogram(scores, bins=np.linspace(0, 1, 11))
        assert [row[column] for row in table] == expected.tolist()
    a = np.array([r[1] for r in table]) / 200
    b = np.array([r[2] for r in table]) / 200
    a, b = np.maximum(a, 1e-4), np.maximum(b, 1e-4)
    psi = float(((b - a) * np.log(b / a)).sum())
    assert psi > 1.0  # far apart: the scores of the second hour crowd towards 0.5
    assert {kind for (kind,) in kinds} == {"histogram"}
    scored = store.series_to_score(engine)
    assert "score_bin_rows" not in {s.metric for s in scored}
    assert "predicted_class_rows" not in {s.metric for s in scored}
    assert "accuracy" in {s.metric for s in scored}
    # nor counted by `anomon status` (no quality to show): only the scored series are
    assert sum(store.read_status(engine).series_by_quality.values()) == len(scored)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_a_multiclass_models_performance_is_estimated_before_labels(
    tmp_path: Path, average: str
) -> None:
    """CBPE for class_scores: each class's score (logged overconfident) calibrated
    one-vs-rest on the settled labelled windows; the estimates of windows without labels
    within a tolerance of the realised (sklearn's) values, also for a window where the
    model got unsure -- which its drift numbers show too."""
    rng = np.random.default_rng(25)
    classes = ["cat", "dog", "eel"]
    reference_hours, recent_hours, per_hour = 30, 4, 900
    recent_start = int(NOW.timestamp()) - recent_hours * HOUR
    rows, hidden = [], {}
    for hour in range(reference_hours + recent_hours):
        recent = hour >= reference_hours
        at = recent_start + (hour - reference_hours) * HOUR if recent else START + hour * HOUR
        unsure = hour == reference_hours + recent_hours - 1
        p = rng.dirichlet([1.5, 1.5, 1.5] if unsure else [0.3, 0.3, 0.3], per_hour)
        truth = np.array([rng.choice(3, p=row) for row in p])
        predicted = p.argmax(axis=1)
        logged = p**2 / (p**2).sum(axis=1, keepdims=True)  # overconfident: calibration needed
        for i in range(per_hour):
            rows.append(
                {
                    "ts": at + i * (HOUR // per_hour),
                    "prediction": classes[predicted[i]],
                    "label": None if recent else classes[truth[i]],
                    **{f"p_{c}": round(float(logged[i, k]), 4) for k, c in enumerate(classes)},
                }
            )
        hidden[at] = ([classes[t] for t in truth], [classes[q] for q in predicted])
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    source = _source(
        path=str(path),
        group_by=[],
        average=average,
        class_scores={c: f"p_{c}" for c in classes},
        min_labels=100,
    )
    got = {(s.key.metric, s.ts): s.value for s in source.collect(NOW)}
    for at in range(recent_start, recent_start + recent_hours * HOUR, HOUR):
        y, p = hidden[at]
        assert ("accuracy", at) not in got
        for name, realised, tolerance in (
            ("accuracy", metrics.accuracy_score(y, p), 0.03),
            ("precision", metrics.precision_score(y, p, average=average), 0.05),
            ("recall", metrics.recall_score(y, p, average=average), 0.05),
            ("f1", metrics.f1_score(y, p, average=average), 0.05),
        ):
            assert got[(f"estimated_{name}", at)] == pytest.approx(realised, abs=tolerance), name
    last = recent_start + (recent_hours - 1) * HOUR
    assert got[("estimated_accuracy", last)] < got[("estimated_accuracy", recent_start)] - 0.1
    gaps = [value for (name, _), value in got.items() if name == "estimation_gap"]
    assert len(gaps) == reference_hours and max(abs(g) for g in gaps) < 0.05
    # and its drift, on the top class's probability: the unsure window stands out
    for name in ("drift_psi", "drift_js", "drift_wasserstein", "low_margin_share"):
        ordinary = max(got[(name, at)] for at in range(recent_start, last, HOUR))
        assert got[(name, last)] > 2 * ordinary, name
    assert got[("mean_confidence", last)] < got[("mean_confidence", recent_start)] - 0.1


def test_a_bad_line_beside_good_ones_is_a_partial_collection_not_a_failure(
    tmp_path: Path,
) -> None:
    """A tailed log's new lines, one of them garbage, in a window still open: nothing
    to return yet, but the good rows were read: a partial collection the job does not
    count as a failure (no backoff), the garbage named in its error."""
    from anomon.service.jobs import CollectJob

    path = tmp_path / "p.jsonl"
    _write_jsonl(path, _log(seed=26, hours=1, per_hour=30))
    engine = store.open_engine(f"sqlite:///{tmp_path / 'anomon.db'}")
    store.upgrade(engine)
    at = datetime.fromtimestamp(START + HOUR + 60, UTC)
    source = _source(path=str(path))
    job = CollectJob(source, engine, store.SeriesRegistry(), clock=lambda: at, max_skip=5)
    job()  # the first hour's windows
    later = _log(seed=27, hours=1, per_hour=30)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps({**r, "ts": r["ts"] + HOUR}) + "\n" for r in later[:10])
        out.write("not json at all\n")
    with pytest.raises(PartialCollection, match="1 line") as caught:
        source.collect(at)  # the second hour is still open: no window changed
    assert caught.value.samples == []
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps({**r, "ts": r["ts"] + HOUR}) + "\n" for r in later[10:20])
        out.write("{also not json\n")
    job()
    assert job.backoff.failures == 0  # read, though nothing to store
    run = store.last_collections(engine, "quality", 1)[0]
    assert run.error is not None and "not JSON" in run.error and run.points == 0
    engine.dispose()


def _drifting_log(hours: int, per_hour: int) -> list[dict[str, Any]]:
    """A binary model whose scores move slowly towards 0.5 hour after hour (its inputs
    drift a little every hour), labelled as it goes."""
    rng = np.random.default_rng(31)
    rows = []
    for hour in range(hours):
        spread = 0.45 * (1.0 - 0.8 * hour / hours)  # how far scores stay from 0.5
        for i in range(per_hour):
            truth = int(rng.integers(0, 2))
            score = float(np.clip(0.5 + (1 if truth else -1) * spread + rng.normal(0, 0.1), 0, 1))
            rows.append(
                {
                    "ts": START + hour * HOUR + i * (HOUR // per_hour),
                    "model": "churn",
                    "version": "v3",
                    "prediction": int(score > 0.5),
                    "label": truth,
                    "score": round(score, 4),
                }
            )
    return rows


@pytest.mark.parametrize(
    "log",
    ["file", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def test_a_fixed_reference_period_sees_a_slow_drift_the_moving_one_does_not(
    tmp_path: Path, log: str, request: pytest.FixtureRequest
) -> None:
    """Against the latest settled windows a slow drift is never far from its reference;
    against a fixed reference period (the first ten hours, older than lookback and
    kept for it) the last windows have drifted far. A file log is tailed collection
    after collection, so the period's rows leave lookback on the way; a table (SQLite,
    PostgreSQL) is read with the period until the period is settled and older than
    lookback, then only its lookback (the period's rows kept)."""
    rows = _drifting_log(hours=60, per_hour=200)
    path = tmp_path / "p.jsonl"
    table = log != "file"
    url = (
        str(request.getfixturevalue("postgres_schema_url"))
        if log == "postgresql"
        else f"sqlite:///{tmp_path / 'p.db'}"
    )
    if table:
        engine = store.open_engine(url)
        pd.DataFrame(rows).to_sql("predictions", engine, index=False)
        engine.dispose()
    else:
        _write_jsonl(path, [])
    reading = (
        {"url": url, "query": "SELECT * FROM predictions WHERE ts >= :since"}
        if table
        else {"path": str(path)}
    )
    common = {**reading, "score": "score", "label_delay": "2h", "lookback": "12h"}
    fixed = _source(
        **common,
        reference_since=datetime.fromtimestamp(START, UTC),
        reference_until=datetime.fromtimestamp(START + 10 * HOUR, UTC),
    )
    moving = _source(**common)
    last = START + 58 * HOUR
    got: dict[str, dict[tuple[str, int], float]] = {"fixed": {}, "moving": {}}
    for hour in range(1, 61):  # a collection an hour, the log growing as it goes
        if not table:
            _write_jsonl(
                path, [r for r in rows if (hour - 1) * HOUR <= r["ts"] - START < hour * HOUR], "a"
            )
        at = datetime.fromtimestamp(START + hour * HOUR, UTC)
        for name, source in (("fixed", fixed), ("moving", moving)):
            got[name] |= {(s.key.metric, s.ts): s.value for s in source.collect(at)}
            source.saved()
    assert got["moving"][("drift_js", last)] < 0.3  # measured: 0.23
    assert got["fixed"][("drift_js", last)] > 3 * got["moving"][("drift_js", last)]
    assert got["fixed"][("drift_psi", last)] > 1.0
    # calibrated on the period: the estimate of the last window from the early scores
    assert ("estimated_accuracy", last) in got["fixed"]
    if table:  # a settled period before lookback was read once and kept: the table's
        # period rows gone, the next collection measures against the same reference
        engine = store.open_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text("DELETE FROM predictions WHERE ts < :end"), {"end": START + 10 * HOUR}
            )
        engine.dispose()
        again = fixed.collect(datetime.fromtimestamp(START + 60 * HOUR + 60, UTC))
        found = {(s.key.metric, s.ts): s.value for s in again}
        assert found[("drift_js", last)] == got["fixed"][("drift_js", last)]
        assert found[("estimated_accuracy", last)] == got["fixed"][("estimated_accuracy", last)]


@pytest.mark.parametrize(
    ("period", "message"),
    [
        ({"reference_since": "2026-11-01T00:00:00Z"}, "set both reference_since and"),
        (
            {"reference_since": "2026-11-01T00:00:00", "reference_until": "2026-11-02T00:00:00"},
            "reference times need a zone",
        ),
        (
            {"reference_since": "2026-11-02T00:00:00Z", "reference_until": "2026-11-01T00:00:00Z"},
            "reference_since must be before reference_until",
        ),
    ],
)
def test_a_reference_period_is_checked(period: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _source(path="p.jsonl", **period)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_table_read_by_what_changed_gives_the_windows_a_whole_read_gives(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """A query with ``:changed_since`` reads only the rows inserted or labelled since
    the last collection (less a few minutes' overlap): its rows are kept coded, a
    changed row (its label set late) relabels the row kept, and each collection returns
    the windows that changed, with the values a whole read of the table gives."""
    url = (
        str(request.getfixturevalue("postgres_schema_url"))
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'p.db'}"
    )
    rows = [
        {**r, "pid": f"p{i}", "changed_at": r["ts"]}
        for i, r in enumerate(_log(seed=41, hours=6, per_hour=60))
    ]
    late = [r for r in rows if START + 3 * HOUR <= r["ts"] < START + 4 * HOUR]
    truth = {r["pid"]: r["label"] for r in late}
    engine = store.open_engine(url)
    frame = pd.DataFrame(rows[: 5 * 60])  # hours 0-4; hour 3's labels not in yet
    frame.loc[frame["pid"].isin(list(truth)), "label"] = None
    frame.to_sql("predictions", engine, index=False)
    common = {"url": url, "id": "pid", "score": "score", "label_delay": "1d", "lookback": "12h"}
    changed = _source(
        **common,
        query="SELECT * FROM predictions WHERE ts >= :since AND changed_at >= :changed_since",
    )
    whole = _source(**common, query="SELECT * FROM predictions WHERE ts >= :since")
    assert changed._config.incremental and not whole._config.incremental
    first = datetime.fromtimestamp(START + 5 * HOUR, UTC)
    got = _by_key(_quality(changed.collect(first)))
    changed.saved()
    assert got == _by_key(_quality(whole.collect(first)))
    assert {ts for _, _, ts in got} == {START + h * HOUR for h in range(5) if h != 3}  # 3: < 10

    # hour 3's labels land, hour 5 is logged; one label is committed late (its changed
    # time two minutes before the last collection: within the overlap)
    later = datetime.fromtimestamp(START + 6 * HOUR, UTC)
    with engine.begin() as conn:
        for pid, label in truth.items():
            at = to_epoch(first) - 120 if pid == next(iter(truth)) else START + 5 * HOUR + 60
            conn.execute(
                text("UPDATE predictions SET label = :label, changed_at = :at WHERE pid = :pid"),
                {"label": label, "at": at, "pid": pid},
            )
    pd.DataFrame(rows[5 * 60 :]).to_sql("predictions", engine, index=False, if_exists="append")
    engine.dispose()
    news = _by_key(_quality(changed.collect(later)))
    everything = _by_key(_quality(whole.collect(later)))
    assert {ts for _, _, ts in news} == {START + 3 * HOUR, START + 5 * HOUR}  # what changed
    assert news == {key: value for key, value in everything.items() if key in news}
    assert news[("labelled_rows", "churn", START + 3 * HOUR)] == len(truth)  # each once
    assert news[("predictions", "churn", START + 3 * HOUR)] == len(late)


def test_changed_since_needs_an_id_and_a_query_that_uses_it() -> None:
    base = {"name": "q", "kind": "predictions", "url": "sqlite://"}
    cases = [
        ({"query": "SELECT * FROM p WHERE changed_at >= :changed_since"}, "needs id"),
        (
            {"query": "SELECT * FROM p", "id": "pid",
             "labels_query": "SELECT * FROM l WHERE at >= :changed_since"},
            "labels_query may use :changed_since only if query does too",
        ),
    ]  # fmt: skip
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message):
            PredictionsSourceConfig.model_validate({**base, **extra})
    cast = {**base, "query": "SELECT x::changed_since FROM p"}  # a cast, not a parameter
    assert not PredictionsSourceConfig.model_validate(cast).incremental


@pytest.mark.parametrize(
    "log",
    ["file", "sqlite", "changed", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def test_a_reference_period_before_lookback_is_reported_until_stored_once(
    tmp_path: Path, log: str, request: pytest.FixtureRequest
) -> None:
    """Detection's baselines of the quality series start from a configured reference
    period: its windows come with the first collection (as a backfill of the period
    would give them), again until a collection with them is stored, then never."""
    logged = _log(seed=43, hours=40, per_hour=30)
    rows = [{**r, "pid": f"p{i}", "changed_at": r["ts"]} for i, r in enumerate(logged)]
    if log == "file":
        path = tmp_path / "p.jsonl"
        _write_jsonl(path, rows)
        reading: dict[str, Any] = {"path": str(path)}
    else:
        url = (
            str(request.getfixturevalue("postgres_schema_url"))
            if log == "postgresql"
            else f"sqlite:///{tmp_path / 'p.db'}"
        )
        engine = store.open_engine(url)
        pd.DataFrame(rows).to_sql("predictions", engine, index=False)
        engine.dispose()
        changed = " AND changed_at >= :changed_since" if log == "changed" else ""
        reading = {"url": url, "id": "pid",
                   "query": f"SELECT * FROM predictions WHERE ts >= :since{changed}"}  # fmt: skip
    source = _source(
        **reading,
        lookback="12h",
        label_delay="1h",
        reference_since=datetime.fromtimestamp(START, UTC),
        reference_until=datetime.fromtimestamp(START + 10 * HOUR, UTC),
    )
    at = datetime.fromtimestamp(START + 40 * HOUR, UTC)
    hours = sorted({(s.ts - START) // HOUR for s in source.collect(at)})
    assert hours == [*range(10), *range(28, 40)]
    again = sorted({(s.ts - START) // HOUR for s in source.collect(at)})  # not stored yet
    assert again[:10] == list(range(10))
    source.saved()
    later = {(s.ts - START) // HOUR for s in source.collect(at + timedelta(hours=1))}
    assert later and min(later) >= 28  # the period's windows are not sent again


def test_a_table_read_by_what_changed_skips_and_names_rows_without_an_id(
    tmp_path: Path,
) -> None:
    """Read again (changed, or within the overlap), a row without an id could not be
    told from a new one and would count twice: it is skipped and named every time."""
    rows = [{**r, "pid": f"p{i}", "changed_at": r["ts"]} for i, r in enumerate(_log(44, 2, 30))]
    rows[5]["pid"] = None
    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = store.open_engine(url)
    pd.DataFrame(rows).to_sql("predictions", engine, index=False)
    source = _source(
        url=url,
        id="pid",
        query="SELECT * FROM predictions WHERE ts >= :since AND changed_at >= :changed_since",
    )
    at = START + 2 * HOUR
    with pytest.raises(PartialCollection, match="1 row\\(s\\) without 'pid' skipped") as got:
        source.collect(datetime.fromtimestamp(at, UTC))
    counts = _by_key(got.value.samples)
    assert counts[("predictions", "churn", START)] == 29
    assert counts[("predictions", "churn", START + HOUR)] == 30
    source.saved()
    with engine.begin() as conn:  # the row without an id and another of its hour change
        changed = "UPDATE predictions SET changed_at = :at WHERE pid IS NULL OR pid = 'p7'"
        conn.execute(text(changed), {"at": at + 30})
        conn.execute(text("UPDATE predictions SET label = 1 - label WHERE pid = 'p7'"))
    engine.dispose()
    with pytest.raises(PartialCollection, match="1 row\\(s\\) without 'pid' skipped") as got:
        source.collect(datetime.fromtimestamp(at + 60, UTC))
    assert _by_key(got.value.samples)[("predictions", "churn", START)] == 29  # not 30
