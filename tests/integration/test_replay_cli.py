"""`anomon replay` and `anomon evaluate` as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tests.conftest import run_cli


def write_series(
    path: Path, rows: int = 1500, spike_at: int | None = 1200, style: str = "iso"
) -> list[str]:
    rng = np.random.default_rng(3)
    values = 50 + rng.normal(0, 1, rows)
    if spike_at is not None:
        values[spike_at] += 15
    stamps = []
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "value"])
        for i, value in enumerate(values):
            epoch = 1_700_000_000 + 300 * i
            iso = np.datetime_as_string(np.datetime64(epoch, "s"))
            stamp = {"iso": iso.replace("T", " "), "epoch": str(epoch), "zoned": iso + "+00:00"}[
                style
            ]
            stamps.append(stamp)
            writer.writerow([stamp, f"{value:.4f}"])
    return stamps


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def test_replay_writes_one_row_per_input_row_with_timestamps_as_given(tmp_path: Path) -> None:
    for style in ("iso", "epoch", "zoned"):
        stamps = write_series(tmp_path / "in.csv", style=style)
        result = run_cli("replay", str(tmp_path / "in.csv"))
        assert result.returncode == 0, result.stderr
        rows = read_rows(result.stdout)
        assert list(rows[0]) == [
            "timestamp",
            "score",
            "anomaly",
            "zscore_score",
            "seasonal_score",
            "forest_score",
            "limit_score",
            "joint_score",
        ]
        assert [row["timestamp"] for row in rows] == stamps
        scores = np.array([float(row["score"]) for row in rows])
        assert np.all((scores >= 0) & (scores <= 100))
        assert rows[1200]["anomaly"] == "1"
        assert sum(row["anomaly"] == "1" for row in rows) <= 5


def test_replay_is_deterministic_and_warms_up_on_training_data(tmp_path: Path) -> None:
    write_series(tmp_path / "all.csv")
    lines = (tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:1001]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *lines[1001:]]) + "\n")
    first = run_cli("replay", str(tmp_path / "all.csv"), "--out", str(tmp_path / "a.csv"))
    second = run_cli("replay", str(tmp_path / "all.csv"), "--out", str(tmp_path / "b.csv"))
    assert first.returncode == second.returncode == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    warm = run_cli("replay", str(tmp_path / "test.csv"), "--train", str(tmp_path / "train.csv"))
    assert warm.returncode == 0, warm.stderr
    whole = read_rows((tmp_path / "a.csv").read_text())[1000:]
    assert read_rows(warm.stdout) == whole


def test_replay_names_the_row_and_column_of_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n")
    result = run_cli("replay", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{bad}: row 3, column value: expected a number, got: 'abc'"
    bad.write_text("time,value\n1,2\n")
    assert "the first column must be 'timestamp'" in run_cli("replay", str(bad)).stderr
    bad.write_text("timestamp,value\n2024-01-02,1\nyesterday,2\n")  # a time out of order is
    result = run_cli("replay", str(bad))  # scored as the daemon would; a bad time is an error
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{bad}: row 3, column timestamp: expected an ISO 8601 time or epoch seconds, "
        "got: 'yesterday'"
    )
    assert run_cli("replay", str(tmp_path / "missing.csv")).returncode == 2


def test_replay_of_no_scorable_rows_writes_their_rows_unscored(tmp_path: Path) -> None:
    """A header alone, or a file its --train part covers: nothing to score is no crash
    (a ValueError from reshaping no rows before)."""
    header = tmp_path / "header.csv"
    header.write_text("timestamp,a,b\n")
    empty = run_cli("replay", str(header))
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [
        "timestamp,score,anomaly,zscore_score,seasonal_score,forest_score,limit_score,joint_score"
    ]
    both = tmp_path / "both.csv"
    both.write_text("timestamp,a\n2026-01-01T00:00:00Z,1\n2026-01-01T00:01:00Z,2\n")
    covered = run_cli("replay", str(both), "--train", str(both))
    assert covered.returncode == 0, covered.stderr
    assert covered.stdout.splitlines()[1:] == [
        "2026-01-01T00:00:00Z,,0,,,,,",
        "2026-01-01T00:01:00Z,,0,,,,,",
    ]
    assert "2 of 2 rows not scored" in covered.stderr
    # where the scores cannot go: one line naming the path (a traceback before), and an
    # input is never overwritten by its own scores
    nowhere = run_cli("replay", str(both), "--out", str(tmp_path / "no" / "out.csv"))
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip() == (
        f"Error: {tmp_path / 'no' / 'out.csv'}: No such file or directory"
    )
    itself = run_cli("replay", str(both), "--out", str(both))
    assert itself.returncode == 2 and "is an input file: it would be overwritten" in itself.stderr
    assert both.read_text().startswith("timestamp,a\n")


def test_evaluate_reports_nab_scores_and_event_metrics(tmp_path: Path) -> None:
    (tmp_path / "data" / "cat").mkdir(parents=True)
    stamps = write_series(tmp_path / "data" / "cat" / "spiky.csv")
    write_series(tmp_path / "data" / "cat" / "calm.csv", spike_at=None)
    windows = {"cat/spiky.csv": [[stamps[1190], stamps[1230]]], "cat/calm.csv": []}
    (tmp_path / "windows.json").write_text(json.dumps(windows))
    result = run_cli(
        "evaluate",
        str(tmp_path / "data"),
        "--labels",
        str(tmp_path / "windows.json"),
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    overall = json.loads(result.stdout)[-1]
    assert overall["group"] == "overall"
    assert (overall["files"], overall["windows"], overall["detected"]) == (2, 1, 1)
    assert overall["recall"] == 1.0
    assert overall["nab_standard"] > 50
    assert overall["mean_delay_h"] == round(10 * 300 / 3600, 2)  # the spike is 10 rows in
    text = run_cli("evaluate", str(tmp_path / "data"), "--labels", str(tmp_path / "windows.json"))
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split()[:4] == ["group", "files", "windows", "detected"]


def test_evaluate_refuses_windows_it_cannot_score_naming_them(tmp_path: Path) -> None:
    """Windows that overlap (scored 86.5 with nothing detected before), end before they
    start, are no times (a traceback before), or hold no row of their file (dropped without
    a word), and a file listing nothing: each named, exit 2."""
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "f.csv").write_text(
        "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2\n2026-01-01 00:10:00,3\n"
    )
    labels = tmp_path / "labels.json"
    a, b, c = "2026-01-01 00:00:00", "2026-01-01 00:06:00", "2026-01-01 00:05:00"
    cases = {
        "{}": f"{labels}: lists no file",
        json.dumps({"cat/f.csv": [[a, b], [c, "2026-01-01 00:10:00"]]}): (
            f"{labels}: cat/f.csv: windows 1 and 2 overlap"
        ),
        json.dumps({"cat/f.csv": [[b, a], ["bogus", a]]}): (
            f"{labels}: cat/f.csv: window 1 ends before it starts; "
            f"cat/f.csv: window 2: expected two times, got 'bogus', '{a}'"
        ),
        json.dumps({"cat/f.csv": [["2027-01-01", "2027-01-02"]]}): (
            f"{tmp_path / 'cat' / 'f.csv'}: 1 of its 1 windows hold none of its rows "
            f"(its times: {a} to 2026-01-01 00:10:00)"
        ),
    }
    for text, message in cases.items():
        labels.write_text(text)
        result = run_cli("evaluate", str(tmp_path), "--labels", str(labels))
        assert (result.returncode, result.stderr.strip()) == (2, message)


def test_replay_takes_a_file_or_a_stored_series_and_says_which_options_go_with_which(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    config = tmp_path / "anomon.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "a.db"}"\n')
    cases = {
        (): "give either INPUT (a CSV file) or --series (a stored series)",
        (str(data), "--series", "cpu"): "give either INPUT",
        ("--series", "cpu", "--train", str(data)): "--train goes with INPUT, not with --series",
        (str(data), "--ignore-feedback"): "--label and --ignore-feedback go with --series",
    }
    for args, message in cases.items():
        result = run_cli("replay", *args, "-c", str(config))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert run_cli("db", "upgrade", "-c", str(config)).returncode == 0
    missing = run_cli("replay", "--series", "cpu", "-c", str(config))
    assert missing.returncode == 2
    assert "0 series match; name one by id or add --label K=V" in missing.stderr
