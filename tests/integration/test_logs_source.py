"""The logs source on real files: appends, rotation, truncation and partial lines."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomon.config import LogsSourceConfig, parse_config
from anomon.errors import ConfigError, SourceError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import PartialCollection
from anomon.sources.logs import LogsSource

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PATTERNS = {"errors": "ERROR", "slow": {"regex": r"took=(?P<value>\S+)", "aggregate": "max"}}

Make = Callable[..., LogsSource]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "app.log"


@pytest.fixture
def make(log: Path) -> Iterator[Make]:
    """Build logs sources on ``log`` (PATTERNS unless given); close them afterwards."""
    built: list[LogsSource] = []

    def build(**keys: object) -> LogsSource:
        config = LogsSourceConfig.model_validate(
            {"kind": "logs", "name": "app", "path": str(log), "patterns": PATTERNS, **keys}
        )
        built.append(LogsSource(config))
        return built[-1]

    yield build
    for source in built:
        source.close()


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as handle:
        handle.write(data)


def values(samples: list[Sample]) -> dict[str, float]:
    return {sample.key.metric: sample.value for sample in samples}


def test_it_starts_at_the_end_of_an_existing_file(log: Path, make: Make) -> None:
    append(log, "ERROR old\nERROR old took=9\n")
    source = make()
    assert values(source.collect(NOW)) == {"errors": 0.0}
    append(log, "ERROR new took=2\n")
    assert values(source.collect(NOW)) == {"errors": 1.0, "slow": 2.0}


def test_it_reads_an_existing_file_from_its_start_when_asked(log: Path, make: Make) -> None:
    append(log, "ERROR one\ninfo\nERROR two\n")
    assert values(make(from_start=True).collect(NOW)) == {"errors": 2.0}


def test_a_pattern_that_backtracks_without_end_is_cut_off_at_the_timeout(
    log: Path, make: Make
) -> None:
    # Python's re would run `(x+x+)+y` on a line of 5,000 x for longer than the universe
    append(log, "x" * 5000 + "\nERROR one\n")
    source = make(
        from_start=True,
        timeout="1s",
        patterns={"stuck": "(x+x+)+y", "errors": "ERROR"},
    )
    started = time.monotonic()
    with pytest.raises(PartialCollection) as caught:
        source.collect(NOW)
    assert time.monotonic() - started < 5  # one timeout, not forever
    assert "stuck: matching took longer than its share of the timeout (500ms): skipped" in str(
        caught.value
    )
    assert values(caught.value.samples) == {"errors": 1.0}  # the other patterns still count


def test_it_counts_a_line_that_matches_twice_once(log: Path, make: Make) -> None:
    log.touch()
    source = make()
    source.collect(NOW)
    append(log, "ERROR ERROR ERROR\nfine\nERROR\n")
    assert values(source.collect(NOW))["errors"] == 2.0


def test_it_emits_a_zero_count_when_no_new_line_matches(log: Path, make: Make) -> None:
    log.touch()
    source = make()
    source.collect(NOW)
    append(log, "all good\n")
    assert values(source.collect(NOW)) == {"errors": 0.0}
    assert values(source.collect(NOW)) == {"errors": 0.0}


def test_it_labels_samples_with_the_file_and_the_configured_labels(log: Path, make: Make) -> None:
    log.touch()
    source = make(from_start=True, labels={"team": "ml"}, entity="model-a")
    (sample,) = source.collect(NOW)
    assert source.name == "app"
    assert sample.key == SeriesKey.of("errors", {"file": str(log), "team": "ml"})
    assert sample.info == SeriesInfo(source="app", entity="model-a", kind=SeriesKind.CUSTOM)
    assert sample.ts == int(NOW.timestamp())


def test_it_keeps_a_partial_line_until_its_newline_arrives(log: Path, make: Make) -> None:
    source = make(from_start=True)
    append(log, "ERROR first\nERR")
    assert values(source.collect(NOW))["errors"] == 1.0
    append(log, "OR second, took=")
    assert values(source.collect(NOW)) == {"errors": 0.0}
    append(log, "4.5\n")
    assert values(source.collect(NOW)) == {"errors": 1.0, "slow": 4.5}


def test_it_joins_a_character_split_across_two_writes(log: Path, make: Make) -> None:
    source = make(from_start=True, patterns={"cafe": "café"})
    encoded = "café\n".encode()
    append(log, encoded[:4])  # the first byte of the two-byte é
    assert values(source.collect(NOW)) == {"cafe": 0.0}
    append(log, encoded[4:])
    assert values(source.collect(NOW)) == {"cafe": 1.0}


def test_it_decodes_with_the_configured_encoding(log: Path, make: Make) -> None:
    source = make(from_start=True, encoding="latin-1", patterns={"cafe": "café$"})
    append(log, "café\r\n".encode("latin-1"))
    assert values(source.collect(NOW)) == {"cafe": 1.0}


def test_it_replaces_bytes_that_do_not_decode(log: Path, make: Make) -> None:
    source = make(from_start=True, patterns={"replaced": "\ufffd", "errors": "ERROR"})
    append(log, b"ERROR \xff\xfe\n")
    assert values(source.collect(NOW)) == {"replaced": 1.0, "errors": 1.0}


def test_it_finishes_a_rotated_file_before_reading_the_new_one(log: Path, make: Make) -> None:
    source = make()
    append(log, "ERROR old\n")
    source.collect(NOW)
    append(log, "ERROR late\nERROR unfinished")
    os.rename(log, log.with_suffix(".log.1"))
    append(log, "ERROR new took=1\n")
    # the unfinished line ends with its file; the new file is read from its start
    assert values(source.collect(NOW)) == {"errors": 3.0, "slow": 1.0}
    append(log, "ERROR newer\n")
    assert values(source.collect(NOW)) == {"errors": 1.0}


def test_it_counts_the_last_lines_of_a_file_rotated_away(log: Path, make: Make) -> None:
    source = make()
    log.touch()
    source.collect(NOW)
    append(log, "ERROR last words\n")
    os.rename(log, log.with_suffix(".log.1"))
    with pytest.raises(PartialCollection, match=r"app\.log: no such file") as caught:
        source.collect(NOW)
    assert values(caught.value.samples) == {"errors": 1.0}


def test_it_reads_a_truncated_file_again_from_its_start(log: Path, make: Make) -> None:
    append(log, "ERROR " + "x" * 100 + "\n")
    source = make()
    source.collect(NOW)
    log.write_text("ERROR after truncation\n", encoding="utf-8")
    assert values(source.collect(NOW)) == {"errors": 1.0}


def test_it_reports_a_missing_file_then_reads_it_from_its_start(log: Path, make: Make) -> None:
    source = make()
    with pytest.raises(SourceError) as caught:
        source.collect(NOW)
    assert str(caught.value) == f"{log}: no such file"
    assert not isinstance(caught.value, PartialCollection)
    append(log, "ERROR born\nERROR too\n")
    assert values(source.collect(NOW)) == {"errors": 2.0}


def test_it_reports_a_path_it_cannot_read(tmp_path: Path, make: Make) -> None:
    source = make(path=str(tmp_path))
    with pytest.raises(SourceError, match=r"cannot read \(Is a directory\)"):
        source.collect(NOW)


def test_it_reads_at_most_max_bytes_per_collection(log: Path, make: Make) -> None:
    source = make(from_start=True, max_bytes=1024)
    line = "ERROR " + "x" * 93 + "\n"  # 100 bytes
    append(log, line * 15)
    assert values(source.collect(NOW))["errors"] == 10.0  # 1024 bytes: ten whole lines
    assert values(source.collect(NOW))["errors"] == 5.0
    assert values(source.collect(NOW))["errors"] == 0.0


def test_it_spreads_a_rotated_file_over_collections_within_max_bytes(log: Path, make: Make) -> None:
    source = make(max_bytes=1024)
    log.touch()
    source.collect(NOW)
    append(log, ("ERROR " + "x" * 93 + "\n") * 12)
    os.rename(log, log.with_suffix(".log.1"))
    append(log, "ERROR new\n")
    assert values(source.collect(NOW))["errors"] == 10.0
    assert values(source.collect(NOW))["errors"] == 3.0  # two old lines, then the new file


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [("sum", 7.5), ("mean", 2.5), ("max", 4.0), ("min", 0.5)],
)
def test_it_aggregates_every_captured_value(
    log: Path, make: Make, aggregate: str, expected: float
) -> None:
    patterns = {"took": {"regex": r"took=(?P<value>[\d.]+)", "aggregate": aggregate}}
    source = make(from_start=True, patterns=patterns)
    append(log, "a took=3\nb took=0.5 took=4\nnothing\n")
    assert values(source.collect(NOW)) == {"took": expected}


def test_it_gives_no_value_sample_when_nothing_matches(log: Path, make: Make) -> None:
    source = make(from_start=True)
    append(log, "ERROR without timing\n")
    assert values(source.collect(NOW)) == {"errors": 1.0}


def test_it_skips_and_names_a_value_that_is_not_a_finite_number(log: Path, make: Make) -> None:
    source = make(from_start=True)
    append(log, "took=2\ntook=abc\ntook=inf\ntook=3\n")
    with pytest.raises(PartialCollection) as caught:
        source.collect(NOW)
    assert str(caught.value) == f"{log}: slow: 2 value(s) not a finite number, first: 'abc'"
    assert values(caught.value.samples) == {"errors": 0.0, "slow": 3.0}


def test_it_reports_a_sum_that_overflows(log: Path, make: Make) -> None:
    patterns = {"total": {"regex": r"n=(?P<value>\S+)", "aggregate": "sum"}}
    source = make(from_start=True, patterns=patterns)
    append(log, "n=1e308\nn=1e308\n")
    with pytest.raises(PartialCollection, match="total: sum is not a finite number") as caught:
        source.collect(NOW)
    assert caught.value.samples == []


def test_the_config_rejects_an_unknown_encoding(log: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\[0\]\.encoding: unknown text encoding"):
        parse_config(
            {
                "sources": [
                    {
                        "kind": "logs",
                        "name": "a",
                        "path": str(log),
                        "patterns": PATTERNS,
                        "encoding": "klingon",
                    }
                ]
            }
        )


def test_it_cuts_a_line_longer_than_max_bytes(log: Path, make: Make) -> None:
    source = make(from_start=True, max_bytes=1024)
    append(log, "ERROR " + "x" * 3000)  # never ends: memory must stay bounded
    assert values(source.collect(NOW))["errors"] == 0.0
    assert values(source.collect(NOW))["errors"] == 1.0


def test_it_reads_the_value_group_among_other_groups(log: Path, make: Make) -> None:
    patterns = {"took": {"regex": r"(GET|POST) (\S+) took=(?P<value>\d+)", "aggregate": "sum"}}
    source = make(from_start=True, patterns=patterns)
    append(log, "GET /a took=3\nPOST /b took=4\n")
    assert values(source.collect(NOW)) == {"took": 7.0}


def test_it_names_a_value_group_that_matched_nothing(log: Path, make: Make) -> None:
    patterns = {"took": {"regex": r"took=(?P<value>\d+)?", "aggregate": "min"}}
    source = make(from_start=True, patterns=patterns)
    append(log, "took=\ntook=5\n")
    with pytest.raises(PartialCollection, match="took: 1 value") as caught:
        source.collect(NOW)
    assert values(caught.value.samples) == {"took": 5.0}
