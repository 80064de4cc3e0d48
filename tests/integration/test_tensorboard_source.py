"""``kind = "tensorboard"`` on event files written by tensorboardX (an independent
writer): scalars of every run, appended events, records still being written, damaged
records, tensors as TF2 writes scalars, and what is not a scalar."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.proto.tensor_pb2 import TensorProto

from anomon.config import TensorboardSourceConfig
from anomon.errors import SourceError
from anomon.sources import PartialCollection, TensorboardSource
from anomon.sources.tfevents import crc32c

T0 = 1_765_000_000
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _source(logdir: Path, **more: object) -> TensorboardSource:
    config = TensorboardSourceConfig.model_validate(
        {"name": "training", "kind": "tensorboard", "logdir": str(logdir), **more}
    )
    return TensorboardSource(config)


def _points(samples: list) -> dict[tuple[str, str], list[tuple[int, float]]]:
    found: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for s in samples:
        found.setdefault((s.key.metric, s.key.labels), []).append((s.ts, round(s.value, 6)))
    return found


def test_crc32c_is_castagnolis() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_every_runs_scalars_become_series_and_appended_events_are_read_once(
    tmp_path: Path,
) -> None:
    with (
        SummaryWriter(str(tmp_path / "exp-1")) as first,
        SummaryWriter(str(tmp_path / "sweep" / "lr-0.1")) as nested,
    ):
        for step in range(3):
            first.add_scalar("loss/train", 1.0 / (step + 1), step, walltime=T0 + 60 * step)
            first.add_scalar("accuracy", 0.5 + 0.1 * step, step, walltime=T0 + 60 * step)
            nested.add_scalar("loss/train", 2.0, step, walltime=T0 + 60 * step)
        first.add_histogram("weights", [0.1, 0.2, 0.3], 0, walltime=T0)  # not a scalar
        first.add_scalar("accuracy", 0.9, 3, walltime=T0 + 180)
    # the writer's last event is appended later: the file as it was before it
    path = _one_file(tmp_path / "exp-1")
    whole = path.read_bytes()
    last = _record_offsets(whole)[-1]
    path.write_bytes(whole[:last])
    source = _source(tmp_path)
    points = _points(source.collect(NOW))
    assert points == {
        ("loss_train", '{"run":"exp-1","tag":"loss/train"}'): [
            (T0, 1.0), (T0 + 60, 0.5), (T0 + 120, 0.333333)],
        ("accuracy", '{"run":"exp-1"}'): [(T0, 0.5), (T0 + 60, 0.6), (T0 + 120, 0.7)],
        ("loss_train", '{"run":"sweep/lr-0.1","tag":"loss/train"}'): [
            (T0, 2.0), (T0 + 60, 2.0), (T0 + 120, 2.0)],
    }  # fmt: skip
    assert source.collect(NOW) == []  # nothing new
    with path.open("ab") as out:
        out.write(whole[last:])
    assert _points(source.collect(NOW)) == {("accuracy", '{"run":"exp-1"}'): [(T0 + 180, 0.9)]}
    only = _source(tmp_path, tags=["acc*"])  # a new reader: from the start, its tags only
    assert set(_points(only.collect(NOW))) == {("accuracy", '{"run":"exp-1"}')}


def test_steps_within_one_second_are_one_point_the_last_steps_value(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "fast")) as board:
        for step in range(10):
            board.add_scalar("loss", float(step), step, walltime=T0 + step / 10)
    assert _points(_source(tmp_path).collect(NOW)) == {("loss", '{"run":"fast"}'): [(T0, 9.0)]}


def test_a_scalar_tensor_as_tf2_writes_it_is_read(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "tf2")) as board:
        for step, value in enumerate((0.25, 0.5)):
            tensor = TensorProto(dtype=1, float_val=[value])  # DT_FLOAT, no dimensions
            summary = Summary(value=[Summary.Value(tag="eval_acc", tensor=tensor)])
            board.file_writer.add_summary(summary, step, walltime=T0 + step)
        matrix = TensorProto(dtype=1, float_val=[1.0, 2.0])
        matrix.tensor_shape.dim.add(size=2)  # a vector: not a scalar
        board.file_writer.add_summary(
            Summary(value=[Summary.Value(tag="vec", tensor=matrix)]), 2, walltime=T0 + 2
        )
    assert _points(_source(tmp_path).collect(NOW)) == {
        ("eval_acc", '{"run":"tf2"}'): [(T0, 0.25), (T0 + 1, 0.5)]
    }


def _one_file(folder: Path) -> Path:
    (path,) = [p for p in folder.rglob("*") if "tfevents" in p.name]
    return path


def test_a_record_still_being_written_waits_and_a_damaged_one_is_skipped_and_named(
    tmp_path: Path,
) -> None:
    with SummaryWriter(str(tmp_path / "w")) as board:
        for step in range(3):
            board.add_scalar("loss", float(step), step, walltime=T0 + 60 * step)
    path = _one_file(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])  # the last record is cut short: still being written
    source = _source(tmp_path)
    assert [s.value for s in source.collect(NOW)] == [0.0, 1.0]
    with path.open("ab") as out:
        out.write(whole[-10:])  # the writer finishes it
    assert [s.value for s in source.collect(NOW)] == [2.0]
    # a byte of the second record's data flipped on disk: that record alone is lost
    damaged = bytearray(whole)
    records = _record_offsets(whole)
    damaged[records[2] + 14] ^= 0xFF
    path.write_bytes(bytes(damaged[: len(whole) - 1]))  # shorter: read again from the start
    with pytest.raises(PartialCollection) as caught:
        _source(tmp_path).collect(NOW)
    assert f"w/{path.name}: a damaged record at byte {records[2]}, skipped" in str(caught.value)
    assert [s.value for s in caught.value.samples] == [0.0]  # the third record is cut short


def _record_offsets(data: bytes) -> list[int]:
    """Where each record of an event file starts (the first is the file version)."""
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        at += 12 + int.from_bytes(data[at : at + 8], "little") + 4
    return offsets


def test_a_missing_folder_is_a_failed_collection_and_a_replaced_file_is_read_again(
    tmp_path: Path,
) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        _source(tmp_path / "nowhere").collect(NOW)
    with SummaryWriter(str(tmp_path / "r")) as board:
        board.add_scalar("loss", 1.0, 0, walltime=T0)
    source = _source(tmp_path)
    assert len(source.collect(NOW)) == 1
    path = _one_file(tmp_path)
    path.unlink()
    with SummaryWriter(str(tmp_path / "r")) as board:
        board.add_scalar("loss", 3.0, 0, walltime=T0 + 60)
    assert [s.value for s in source.collect(NOW)] == [3.0]  # a new file, from its start


def test_an_image_larger_than_a_read_is_stepped_over(tmp_path: Path) -> None:
    import numpy as np

    with SummaryWriter(str(tmp_path / "img")) as board:
        noise = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
        board.add_image("sample", noise, 0, walltime=T0)  # ~200 KB of PNG
        board.add_scalar("loss", 1.0, 1, walltime=T0 + 60)
    source = _source(tmp_path, max_bytes=64 * 1024)
    found = []
    for _ in range(8):  # a read at a time: the image is skipped, the scalar comes after
        found += source.collect(NOW)
    assert [(s.key.metric, s.value) for s in found] == [("loss", 1.0)]
