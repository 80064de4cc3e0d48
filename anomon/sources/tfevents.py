"""TensorBoard event files, read without TensorFlow: TFRecord framing and the few
protobuf fields a scalar needs.

An event file (``events.out.tfevents.<time>.<host>...``) is a sequence of records::

    uint64 length | uint32 masked CRC-32C of length | data | uint32 masked CRC-32C of data

(little-endian), each ``data`` an ``Event`` message: ``wall_time`` (1, double), ``step``
(2, int64) and ``summary`` (5) with repeated ``value`` (1): ``tag`` (1) and either
``simple_value`` (2, float: tensorboardX, ``torch.utils.tensorboard``, TF1) or a
``tensor`` (8: TF2's ``tf.summary.scalar``) holding one float, double or integer. Other
values (images, histograms, text) are skipped. Both checksums are verified, so a record
still being written is told from a damaged one: the first is incomplete (wait for the
rest), the second is complete with a wrong checksum (skipped, and said so).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = 12  # length (8) and its checksum (4)
FOOTER = 4  # the data's checksum

_CASTAGNOLI = 0x82F63B78  # CRC-32C, reflected


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord uses it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotated right by 15 bits, plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Records:
    """What :func:`split_records` found: the complete records' data, how many bytes they
    took (where the next read starts), and the offsets of damaged records skipped."""

    data: list[bytes]
    consumed: int
    damaged: list[int]


def split_records(buffer: bytes, *, base: int = 0) -> Records:
    """Split ``buffer`` (bytes of an event file from a record boundary at file offset
    ``base``) into whole records; a record cut off at the end is left for later.

    A record whose data checksum is wrong is skipped (its offset in ``damaged``); one
    whose length checksum is wrong cannot be framed, so the rest of ``buffer`` is
    skipped from there (it is named too, and ``consumed`` goes past it).
    """
    found: list[bytes] = []
    damaged: list[int] = []
    at = 0
    size = len(buffer)
    while size - at >= HEADER:
        header = buffer[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (check,) = struct.unpack("<I", buffer[at + 8 : at + 12])
        if check != masked_crc(header):
            damaged.append(base + at)
            return Records(found, size, damaged)
        end = at + HEADER + length + FOOTER
        if end > size:
            break  # still being written
        data = buffer[at + HEADER : at + HEADER + length]
        (check,) = struct.unpack("<I", buffer[end - FOOTER : end])
        if check == masked_crc(data):
            found.append(data)
        else:
            damaged.append(base + at)
        at = end
    return Records(found, at, damaged)


@dataclass(frozen=True, slots=True)
class Scalar:
    """One scalar of an event: its tag, the event's wall time (epoch seconds) and step."""

    tag: str
    wall_time: float
    step: int
    value: float


def scalars(event: bytes) -> list[Scalar]:
    """The scalars in one ``Event`` message (none for events of other kinds).

    Raises ValueError for bytes that are no protobuf message.
    """
    wall_time, step = 0.0, 0
    values: list[tuple[str, float]] = []
    for number, wire, value in _fields(event):
        if number == 1 and wire == 1:
            (wall_time,) = struct.unpack("<d", value)
        elif number == 2 and wire == 0:
            step = _signed(int.from_bytes(value, "little"))
        elif number == 5 and wire == 2:
            values += _summary_values(value)
    return [Scalar(tag, wall_time, step, number) for tag, number in values]


def _summary_values(summary: bytes) -> list[tuple[str, float]]:
    found = []
    for number, wire, value in _fields(summary):
        if number == 1 and wire == 2:
            scalar = _value(value)
            if scalar is not None:
                found.append(scalar)
    return found


def _value(message: bytes) -> tuple[str, float] | None:
    """``Summary.Value``: (tag, number) for a simple value or a scalar tensor."""
    tag: str | None = None
    number: float | None = None
    for field, wire, value in _fields(message):
        if field == 1 and wire == 2:
            tag = value.decode("utf-8", "replace")
        elif field == 2 and wire == 5:
            (number,) = struct.unpack("<f", value)
        elif field == 8 and wire == 2:
            number = _tensor_scalar(value)
    if tag is None or number is None:
        return None
    return tag, number


# TensorProto: dtype (1), tensor_content (4), float_val (5), double_val (6), int_val (7),
# int64_val (10); DataType: DT_FLOAT 1, DT_DOUBLE 2, DT_INT32 3, DT_INT64 9
_CONTENT = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}


def _tensor_scalar(tensor: bytes) -> float | None:
    """The one number of a scalar ``TensorProto`` (None for anything else)."""
    dtype = 0
    numbers: list[float] = []
    content = b""
    shaped = False
    for field, wire, value in _fields(tensor):
        if field == 1 and wire == 0:
            dtype = int.from_bytes(value, "little")
        elif field == 2 and wire == 2:
            shaped = any(True for _ in _fields(value))  # a dimension: not a scalar
        elif field == 4 and wire == 2:
            content = value
        elif field == 5:
            numbers += _packed(value, wire, "<f", 5)
        elif field == 6:
            numbers += _packed(value, wire, "<d", 1)
        elif field in (7, 10):
            numbers += [_signed(v) for v in _varints(value, wire)]
    if shaped:
        return None
    if content and dtype in _CONTENT:
        layout = _CONTENT[dtype]
        if len(content) == struct.calcsize(layout):
            return float(struct.unpack(layout, content)[0])
        return None
    return float(numbers[0]) if len(numbers) == 1 else None


def _packed(value: bytes, wire: int, layout: str, single_wire: int) -> list[float]:
    if wire == single_wire:
        return [struct.unpack(layout, value)[0]]
    if wire != 2:
        return []
    width = struct.calcsize(layout)
    count = len(value) // width
    return list(struct.unpack(f"<{count}{layout[1]}", value[: count * width]))


def _varints(value: bytes, wire: int) -> list[int]:
    if wire == 0:
        return [int.from_bytes(value, "little")]
    if wire != 2:
        return []
    found, at = [], 0
    while at < len(value):
        number, at = _varint(value, at)
        found.append(number)
    return found


def _signed(number: int) -> int:
    """A varint's int64 (two's complement over 64 bits)."""
    return number - (1 << 64) if number >= 1 << 63 else number


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = number = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a varint runs past the message")
        byte = data[at]
        number |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return number, at
        shift += 7


def _fields(message: bytes) -> list[tuple[int, int, bytes]]:
    """The (field number, wire type, raw value) of each field of a protobuf message; a
    varint's raw value is its number as 8 little-endian bytes."""
    found = []
    at = 0
    size = len(message)
    while at < size:
        key, at = _varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(message, at)
            found.append((number, wire, value.to_bytes(8, "little")))
            continue
        if wire == 1:
            width = 8
        elif wire == 5:
            width = 4
        elif wire == 2:
            width, at = _varint(message, at)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if at + width > size:
            raise ValueError("a field runs past the message")
        found.append((number, wire, message[at : at + width]))
        at += width
    return found
