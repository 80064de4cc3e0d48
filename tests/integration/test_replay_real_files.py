"""`anomon replay` and `anomon evaluate` on real files: a clock that steps back an hour,
duplicate times, uneven steps and gaps. They score what the daemon would (only rows later
than every row before them, each from the rows before it), warn once and never refuse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tests.conftest import run_cli

START = 1_394_323_200  # 2014-03-09 00:00:00 UTC
SPIKE = 1300  # index, in the clean file, of a clear anomaly after the step back


def stamp(epoch: int) -> str:
    return str(np.datetime64(epoch, "s")).replace("T", " ")


def clean_rows() -> list[tuple[int, float]]:
    """1,500 rows at uneven steps (5 and 7 minutes) with a six-hour gap, and a spike."""
    rng = np.random.default_rng(11)
    steps = np.where(np.arange(1500) % 7 == 3, 420, 300)
    steps[900] = 6 * 3600  # a gap
    epochs = START + np.cumsum(steps)
    values = 50 + rng.normal(0, 1, 1500)
    values[SPIKE] += 15
    return [(int(e), float(v)) for e, v in zip(epochs, values, strict=True)]


def dirty_rows(clean: list[tuple[int, float]]) -> tuple[list[tuple[int, float]], list[int]]:
    """The clean rows with an hour stepped back after row 600 (12 rows: 11 earlier than
    the latest time, one equal to it) and a duplicate of row 1000 with another value;
    return them and the indices of the rows the daemon would not score."""
    latest = clean[600][0]
    replayed = [(latest - 3600 + 300 * k, 70.0 + k) for k in range(1, 13)]  # ..., latest
    rows = [*clean[:601], *replayed, *clean[601:1001], (clean[1000][0], 99.0), *clean[1001:]]
    unscored = [*range(601, 613), 1001 + 12]
    return rows, unscored


def write(path: Path, rows: list[tuple[int, float]]) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "value"])
        writer.writerows([stamp(e), f"{v:.4f}"] for e, v in rows)
    return [stamp(e) for e, _ in rows]


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def test_it_replays_a_file_whose_clock_steps_back_as_the_daemon_would(tmp_path: Path) -> None:
    clean = clean_rows()
    dirty, unscored = dirty_rows(clean)
    stamps = write(tmp_path / "metrics.csv", dirty)
    write(tmp_path / "clean.csv", clean)

    result = run_cli("replay", str(tmp_path / "metrics.csv"))
    expected = run_cli("replay", str(tmp_path / "clean.csv"))
    assert result.returncode == expected.returncode == 0, result.stderr
    assert expected.stderr == ""
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'metrics.csv'}: 13 of 1,513 rows not scored, as the daemon would not "
        f"score them: 11 whose time steps back (first at row 603: {stamps[601]!r} after "
        f"{stamps[600]!r}), 2 duplicate time(s) (first at row 614: {stamps[612]!r})"
    ]
    rows, reference = read_rows(result.stdout), read_rows(expected.stdout)
    assert [row["timestamp"] for row in rows] == stamps  # every row, in input order
    skipped = [i for i, row in enumerate(rows) if row["score"] == ""]
    assert skipped == unscored
    assert all(rows[i]["anomaly"] == "0" and rows[i]["zscore_score"] == "" for i in skipped)
    kept = [row for i, row in enumerate(rows) if i not in set(unscored)]
    assert kept == reference  # the scored rows score exactly as the file without the others
    assert reference[SPIKE]["anomaly"] == "1"
    assert all(0 <= float(row["score"]) <= 100 for row in reference)  # gaps, uneven steps


def test_evaluate_scores_a_cleaned_file_as_the_file_without_its_bad_rows(tmp_path: Path) -> None:
    clean = clean_rows()
    dirty, _ = dirty_rows(clean)
    window = [[stamp(clean[SPIKE - 10][0]), stamp(clean[SPIKE + 20][0])]]
    for folder, rows in (("dirty", dirty), ("clean", clean)):
        write(tmp_path / folder / "cat" / "host.csv", rows)
        write(tmp_path / folder / "cat" / "calm.csv", clean[:800])
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"cat/host.csv": window, "cat/calm.csv": []}))

    def evaluate(folder: str) -> tuple[list[dict[str, object]], list[str]]:
        args = ("evaluate", str(tmp_path / folder), "--labels", str(labels), "--format", "json")
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), result.stderr.splitlines()

    (cleaned, notes), (reference, quiet) = evaluate("dirty"), evaluate("clean")
    assert quiet == []
    assert notes == [
        f"{tmp_path / 'dirty' / 'cat' / 'host.csv'}: 13 of 1,513 rows not scored, as the "
        f"daemon would not score them: 11 whose time steps back (first at row 603: "
        f"{stamp(dirty[601][0])!r} after {stamp(dirty[600][0])!r}), 2 duplicate time(s) "
        f"(first at row 614: {stamp(dirty[612][0])!r})"
    ]
    assert cleaned == reference
    assert reference[-1]["detected"] == 1


def test_other_unreadable_files_still_get_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "data" / "cat").mkdir(parents=True)
    bad = tmp_path / "data" / "cat" / "bad.csv"
    bad.write_text("timestamp,value\n2014-03-09 02:55:00,1\n2014-03-09 02:00:00,x\n")
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"cat/bad.csv": []}))
    for args in (
        ("replay", str(bad)),
        ("evaluate", str(tmp_path / "data"), "--labels", str(labels)),
    ):
        result = run_cli(*args)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"{bad}: row 3, column value: expected a number, got: 'x'"
        ]
