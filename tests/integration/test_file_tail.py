"""The file tail shared by the logs and predictions sources, on real files."""

from __future__ import annotations

import os
from pathlib import Path

from anomon.sources.tail import FINGERPRINT, FileTail, Piece


def _data(tail: FileTail) -> bytes:
    return b"".join(piece.data for piece in tail.read().pieces)


def test_it_returns_what_was_appended_since_the_last_read(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    tail = FileTail(str(path))
    assert tail.read().pieces == [Piece(b"one\n", restart=True)]
    with path.open("ab") as out:
        out.write(b"two\nthr")
    assert tail.read().pieces == [Piece(b"two\nthr")]
    assert tail.read().pieces == []  # nothing new, nothing said
    tail.close()


def test_from_the_end_it_skips_only_the_file_found_at_the_first_read(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"old\n")
    tail = FileTail(str(path), from_start=False)
    assert _data(tail) == b""
    os.rename(path, tmp_path / "a.log.1")
    path.write_bytes(b"new\n")
    found = tail.read()
    assert found.pieces == [Piece(b"", ends_file=True), Piece(b"new\n", restart=True)]
    tail.close()


def test_a_rotated_file_is_finished_within_the_budget_before_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    tail = FileTail(str(path), max_bytes=4)
    tail.read()
    with path.open("ab") as out:
        out.write(b"abcdef")
    os.rename(path, tmp_path / "a.log.1")
    path.write_bytes(b"xy")
    assert tail.read().pieces == [Piece(b"abcd")]  # the budget is spent on the old file
    assert tail.read().pieces == [Piece(b"ef", ends_file=True), Piece(b"xy", restart=True)]
    tail.close()


def test_a_missing_file_is_said_and_read_from_its_start_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tail = FileTail(str(path), from_start=False)
    assert tail.read().exists is False
    path.write_bytes(b"first\n")
    found = tail.read()
    assert found.exists and found.pieces == [Piece(b"first\n", restart=True)]
    tail.close()


def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"a long first line\n")
    tail = FileTail(str(path))
    tail.read()
    path.write_bytes(b"short\n")
    assert tail.read().pieces == [Piece(b"short\n", restart=True, rewritten=True)]
    tail.close()


def test_a_copytruncate_that_grew_past_the_position_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"line 1\n")
    tail = FileTail(str(path))
    tail.read()
    path.write_bytes(b"LINE A\nline B that is longer\n")  # same inode, longer than before
    assert tail.read().pieces == [
        Piece(b"LINE A\nline B that is longer\n", restart=True, rewritten=True)
    ]
    tail.close()


def test_a_row_rewritten_in_place_past_the_fingerprint_is_noticed(tmp_path: Path) -> None:
    # a prediction log whose late labels are written into their rows: the first bytes
    # stay the same, the file grows, and the bytes before the position move
    header = b"ts,prediction,label\n" + b"".join(b"%d,1,1\n" % i for i in range(100))
    path = tmp_path / "p.csv"
    path.write_bytes(header + b"1000,1,\n1001,0,\n")
    assert len(header) > FINGERPRINT
    tail = FileTail(str(path))
    tail.read()
    with path.open("r+b") as out:  # in place, not a new file
        out.write(header + b"1000,1,1\n1001,0,0\n")
    found = tail.read()
    assert found.pieces == [Piece(path.read_bytes(), restart=True, rewritten=True)]
    tail.close()


def test_a_copy_renamed_over_the_path_is_read_on_from_the_same_position(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    first = b"".join(b"line %d\n" % i for i in range(60))  # past the start fingerprint
    path.write_bytes(first)
    tail = FileTail(str(path))
    tail.read()
    copy = tmp_path / "a.log.tmp"
    copy.write_bytes(first + b"line 60\n")
    os.replace(copy, path)  # rewritten to a temporary file and renamed: the same log
    assert tail.read().pieces == [Piece(b"line 60\n")]  # nothing read twice
    tail.close()


def test_a_copy_that_changed_what_was_read_is_read_again_as_a_rewrite(tmp_path: Path) -> None:
    # late labels filled into a copy renamed over the log: its first bytes (the early,
    # labelled rows) are the same, the rows read before changed
    path = tmp_path / "p.csv"
    header = b"ts,prediction,label\n" + b"".join(b"%d,1,1\n" % i for i in range(50))
    rows = [b"%d,1,\n" % i for i in range(50, 80)]
    path.write_bytes(header + b"".join(rows))
    tail = FileTail(str(path))
    tail.read()
    labelled = header + b"".join(row[:-1] + b"1\n" for row in rows)
    copy = tmp_path / "p.csv.tmp"
    copy.write_bytes(labelled)
    os.replace(copy, path)
    try:
        assert tail.read().pieces == [Piece(labelled, restart=True, rewritten=True)]
    finally:
        tail.close()
