"""``kind = "tensorboard"``: the scalars of TensorBoard event files under a log folder.

Every file under ``logdir`` whose name holds ``tfevents`` is followed (at most
``max_files``; sub-folders are runs): each collection reads the records appended since
the last one (at most ``max_bytes`` in all; the rest waits), and each scalar whose tag
matches ``tags`` becomes a sample of the series named by its tag (characters a metric
name cannot have become ``_``, and such a series keeps the original as a ``tag`` label),
labelled with its ``run`` (the file's folder relative to ``logdir``, ``.`` at the top),
stamped with the event's wall time. A run's events within one second are one point: the
last step's value. Files are read from their start, so after a restart the points
already stored are skipped as duplicates; a file that shrank or was replaced is read
again from its start. A record still being written waits for the next collection; a
damaged one is skipped and named in the collection's error line (see :mod:`.tfevents`).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from anomon.config import TensorboardSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.sources.base import PartialCollection, Source, metric_name_of
from anomon.sources.tfevents import FOOTER, HEADER, Scalar, scalars, split_records

HEAD = 64  # first bytes compared to tell a file from a new one in its place


@dataclass
class _Followed:
    """Where reading one event file stands: its inode and first bytes (a new file in
    its place may get the same inode back; its first record, the file version with
    the time it was created, tells them apart) and the offset read up to."""

    inode: int
    head: bytes
    offset: int = 0


@dataclass
class _Found:
    """One collection's scalars and problems."""

    points: dict[tuple[str, str], dict[int, tuple[int, float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class TensorboardSource(Source, config=TensorboardSourceConfig):
    """Follow the event files under one log folder."""

    def __init__(self, config: TensorboardSourceConfig) -> None:
        super().__init__(config)
        self._config = config
        self._root = Path(config.logdir)
        self._info = SeriesInfo(
            source=config.name, entity=config.entity or config.name, kind=SeriesKind.CUSTOM
        )
        self._files: dict[Path, _Followed] = {}

    def collect(self, now: datetime) -> list[Sample]:
        """Return the scalars appended since the last collection.

        Raises SourceError when ``logdir`` is missing; PartialCollection when some
        records were damaged or some files could not be read (the rest is returned).
        """
        if not self._root.is_dir():
            raise SourceError(f"{self._config.logdir}: no such folder")
        found = _Found()
        budget = self._config.max_bytes
        files = self._event_files(found)
        for path in files:
            if budget <= 0:
                break
            budget -= self._read(path, budget, found)
        self._files = {path: state for path, state in self._files.items() if path in files}
        samples = self._samples(found)
        if found.problems:
            shown = "; ".join(found.problems[:3])
            more = f" (and {len(found.problems) - 3} more)" if len(found.problems) > 3 else ""
            raise PartialCollection(f"{self._config.logdir}: {shown}{more}", samples)
        return samples

    def _event_files(self, found: _Found) -> list[Path]:
        """The event files under the log folder in path order (a run's files are named by
        the time they were opened), at most max_files."""
        files: list[Path] = []
        for folder, _, names in os.walk(self._root):
            files += [Path(folder) / n for n in names if "tfevents" in n]
        files.sort()
        if len(files) > self._config.max_files:
            found.problems.append(
                f"{len(files)} event files, more than max_files ({self._config.max_files}): "
                "the last ones by path are not read"
            )
            files = files[: self._config.max_files]
        return files

    def _read(self, path: Path, budget: int, found: _Found) -> int:
        """Read what was appended to one file (at most ``budget`` bytes); return how many
        bytes were read."""
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                head = handle.read(HEAD)
                state = self._files.get(path)
                if (
                    state is None
                    or state.inode != stat.st_ino
                    or stat.st_size < state.offset
                    or head[: len(state.head)] != state.head
                ):  # new, replaced or truncated: from the start
                    state = _Followed(stat.st_ino, head)
                    self._files[path] = state
                elif len(state.head) < HEAD:
                    state.head = head
                handle.seek(state.offset)
                data = handle.read(budget)
        except OSError as exc:
            found.problems.append(f"{self._relative(path)}: cannot read ({exc.strerror or exc})")
            return 0
        records = split_records(data, base=state.offset)
        state.offset += records.consumed
        if not records.consumed and len(data) == budget:
            state.offset += _oversized(data, stat.st_size - state.offset)
        for at in records.damaged:
            found.problems.append(f"{self._relative(path)}: a damaged record at byte {at}, skipped")
        run = self._relative(path.parent)
        for record in records.data:
            try:
                found_here = scalars(record)
            except ValueError as exc:
                found.problems.append(f"{self._relative(path)}: an unreadable event ({exc})")
                continue
            for scalar in found_here:
                if self._wanted(scalar):
                    self._keep(found, run, scalar)
        return len(data)

    def _wanted(self, scalar: Scalar) -> bool:
        return any(fnmatch.fnmatchcase(scalar.tag, pattern) for pattern in self._config.tags)

    @staticmethod
    def _keep(found: _Found, run: str, scalar: Scalar) -> None:
        """Keep the scalar unless a later step of its series has the same second."""
        if not (scalar.wall_time == scalar.wall_time and abs(scalar.value) < float("inf")):
            return  # NaN time, or a value that is no finite number: no value
        second = int(scalar.wall_time)
        points = found.points.setdefault((run, scalar.tag), {})
        kept = points.get(second)
        if kept is None or scalar.step >= kept[0]:
            points[second] = (scalar.step, scalar.value)

    def _samples(self, found: _Found) -> list[Sample]:
        samples = []
        for (run, tag), points in found.points.items():
            metric = metric_name_of(tag)
            labels = {"run": run, **self._config.labels}
            if metric != tag:
                labels["tag"] = tag
            key = SeriesKey.of(metric, labels)
            samples += [
                Sample(key, self._info, second, value)
                for second, (_, value) in sorted(points.items())
            ]
        return samples

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self._root))
        except ValueError:
            return str(path)


def _oversized(data: bytes, left: int) -> int:
    """The size of a record that starts ``data`` and is larger than a whole read (an
    image, never a scalar), to step over; 0 if it is not one or not all written yet."""
    if len(data) < HEADER:
        return 0
    whole = HEADER + int.from_bytes(data[:8], "little") + FOOTER
    return whole if len(data) < whole <= left else 0
