"""A source's ``timeout`` bounds a whole collection of every kind (issue 11, point 4): a
collection that hangs where no socket timeout reaches (a log path that is a FIFO nobody
writes) is recorded as timed out, never run twice at once, and resumes when it returns."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from anomon import store
from anomon.config import LogsSourceConfig
from anomon.service.jobs import CollectJob
from anomon.sources import LogsSource


def test_a_hung_logs_collection_is_cut_at_its_deadline_and_not_run_twice(
    tmp_path: Path, engine: store.Engine
) -> None:
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    config = LogsSourceConfig.model_validate(
        {
            "kind": "logs",
            "name": "app",
            "path": str(fifo),
            "patterns": {"errors": "ERROR"},
            "from_start": True,
            "timeout": "1s",
        }
    )
    source = LogsSource(config)
    job = CollectJob(source, engine, store.SeriesRegistry(), deadline=config.timeout)
    try:
        began = time.monotonic()
        job()  # open() of a FIFO with no writer blocks: only the deadline ends it
        took = time.monotonic() - began
        assert 1.0 <= took < 3.0
        job()  # the abandoned collection still hangs: not called again
        skipped, timed_out = (r.error or "" for r in store.last_collections(engine, "app"))
        assert timed_out == "timed out after 1s (collection abandoned)"
        assert skipped.startswith("skipped: the collection started ")
        assert skipped.endswith(" ago has not returned yet")
        assert job.backoff.failures == 2
        # a writer comes: the hung open() returns, its result is thrown away
        release = threading.Thread(target=lambda: fifo.write_text("ERROR one\n"), daemon=True)
        release.start()
        release.join(5)
        deadline = time.monotonic() + 5
        while job._straggler is not None and job._straggler.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fifo.unlink()  # the operator points the path back at a real file
        fifo.write_text("ERROR two\nINFO fine\n")
        job.backoff.skip = 0
        job()  # the source is free again: a normal collection, no error
        latest = store.last_collections(engine, "app")[0]
        assert (latest.error, latest.points) == (None, 1)
        assert job.deadline == timedelta(seconds=1)
    finally:
        source.close()
