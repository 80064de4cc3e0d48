"""Follow one growing file like ``tail -F``: the bytes appended since the last read.

Shared by the ``logs`` and ``predictions`` kinds, which assemble lines from the bytes
(one decodes text first, the other parses CSV / JSONL). What the tail does:

- **Rotation**: when the path names another file (renamed away, deleted, replaced), the
  file in hand is read to its end first (within the byte budget, over several reads if
  need be), then the new one from its start.
- **Replaced by a copy** (a file rewritten to a temporary one and renamed over the
  path): when the new file starts with the same bytes as the one in hand, it is the same
  log — read on from the same position if the bytes before it are the same too (nothing
  counted twice), else from its start as a rewrite.
- **Truncation and rewriting in place**: when the file in hand is shorter than the
  position read, or the bytes at its start or just before the position changed (a
  ``copytruncate`` that already grew past the old position, a row edited in place), it
  is read again from its start and the piece says so (``rewritten``).
- **First read**: the file found there is read from its start, or from its end with
  ``from_start = False`` (a log whose history must not be counted); a file that appears
  later is new, so it is always read from its start.
- **Bounded**: at most ``max_bytes`` per read in all; the rest waits for the next read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

FINGERPRINT = 256  # bytes compared at the start and before the position to notice a rewrite


@dataclass(frozen=True)
class Piece:
    """Bytes read from one file at one go.

    ``restart``: the bytes start a file from its beginning — a new file (rotation, a file
    that appeared), or the same one read again (``rewritten``: truncated or rewritten in
    place); whatever was kept from before (a partial line, a header, rows) is over.
    ``ends_file``: the file was rotated away and these are its last bytes.
    """

    data: bytes
    restart: bool = False
    rewritten: bool = False
    ends_file: bool = False


@dataclass(frozen=True)
class TailRead:
    """What one read found: the pieces, oldest first, and whether the path exists now."""

    pieces: list[Piece]
    exists: bool


class FileTail:
    """The bytes appended to the file at ``path``, across rotation and rewrites."""

    def __init__(self, path: str, *, max_bytes: int | None = None, from_start: bool = True) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._skip_existing = not from_start  # only for the file there at the first read
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of self._file
        self._start = b""  # the file's first bytes when opened
        self._before = b""  # the bytes just before the position
        self._regular = True  # a regular file, not a FIFO or a device

    def read(self) -> TailRead:
        """Return what was appended since the last read.

        Raises OSError when the file exists but cannot be read.
        """
        identity = self._stat()
        budget = self._max_bytes if self._max_bytes is not None else -1
        pieces: list[Piece] = []
        replaced = False
        if self._file is not None and identity is not None and identity != self._identity:
            replaced = self._follow_copy()
        if self._file is not None and identity != self._identity:
            data = self._take(budget)  # the rotated-away file: finish it first
            budget = budget - len(data) if budget >= 0 else -1
            done = budget != 0  # a short read: that was its end
            pieces.append(Piece(data, ends_file=done))
            if done:
                self.close()
        restart = False
        if self._file is None and identity is not None:
            restart = self._open()
        if self._file is not None and identity == self._identity and budget != 0:
            rewritten = replaced or self._rewritten()
            if rewritten:
                self._file.seek(0)
                self._start, self._before = b"", b""
            pieces.append(Piece(self._take(budget), restart or rewritten, rewritten))
        self._skip_existing = False
        kept = [piece for piece in pieces if piece.data or piece.restart or piece.ends_file]
        return TailRead(kept, exists=identity is not None)

    def close(self) -> None:
        """Close the file being read, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._identity = None

    def _stat(self) -> tuple[int, int] | None:
        """Return the (device, inode) the path names now, None if there is no such file."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def _open(self) -> bool:
        """Open the path, at its end if it is the file found at the first read; return
        whether it is read from its start."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open across reads
        except FileNotFoundError:
            return False  # removed since the stat: missing this time
        status = os.fstat(handle.fileno())
        self._regular = stat.S_ISREG(status.st_mode)  # a FIFO has no position to compare
        if self._skip_existing and self._regular:
            handle.seek(0, os.SEEK_END)
        self._file, self._identity = handle, (status.st_dev, status.st_ino)
        self._start, self._before = b"", b""
        self._remember()
        return not self._skip_existing

    def _follow_copy(self) -> bool:
        """If the path now names a copy of the file in hand (the same first bytes), take
        it instead: at the same position when the bytes before it match (return False),
        else at its start as a rewrite (return True). Not a copy: change nothing."""
        assert self._file is not None
        if not (self._regular and self._start):
            return False
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open across reads
        except FileNotFoundError:
            return False
        fd, position = handle.fileno(), self._file.tell()
        if os.pread(fd, len(self._start), 0) != self._start:
            handle.close()  # another file: a rotation
            return False
        status = os.fstat(fd)
        same = status.st_size >= position and (
            os.pread(fd, len(self._before), position - len(self._before)) == self._before
        )
        handle.seek(position if same else 0)
        self.close()
        self._file, self._identity = handle, (status.st_dev, status.st_ino)
        if not same:
            self._start, self._before = b"", b""
        return not same

    def _rewritten(self) -> bool:
        """Whether the file in hand was truncated or rewritten in place."""
        assert self._file is not None
        if not self._regular:
            return False
        fd, position = self._file.fileno(), self._file.tell()
        if os.fstat(fd).st_size < position:
            return True
        if os.pread(fd, len(self._start), 0) != self._start:
            return True
        return os.pread(fd, len(self._before), position - len(self._before)) != self._before

    def _take(self, budget: int) -> bytes:
        """Read up to ``budget`` bytes (all when negative) and remember the last ones."""
        assert self._file is not None
        data = self._file.read(budget)
        if data:
            self._remember()
        return data

    def _remember(self) -> None:
        """Keep the bytes read at the start and just before the position, to compare."""
        assert self._file is not None
        if not self._regular:
            return
        fd, position = self._file.fileno(), self._file.tell()
        if len(self._start) < FINGERPRINT:
            self._start = os.pread(fd, min(position, FINGERPRINT), 0)
        size = min(position, FINGERPRINT)
        self._before = os.pread(fd, size, position - size)
